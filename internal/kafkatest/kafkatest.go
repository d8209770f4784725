// Package kafkatest starts an in-process Kafka-protocol broker (franz-go's
// kfake) for tests, and reads topics back with Debian's kcat, a client that
// shares no code with regiond.
package kafkatest

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"
)

// Start starts a one-broker cluster on a free TCP port of 127.0.0.1 and
// returns its address; it stops when the test ends. Topics are not created
// automatically: regiond creates its own.
func Start(t testing.TB) string {
	t.Helper()
	c, err := kfake.NewCluster(kfake.NumBrokers(1))
	if err != nil {
		t.Fatalf("start kfake broker: %v", err)
	}
	t.Cleanup(c.Close)
	return c.ListenAddrs()[0]
}

// Record is one message as kcat printed it.
type Record struct {
	Partition int
	Offset    int64
	Key       string // "" for a null key
	Value     []byte // nil for a null value (a tombstone)
}

// Envelope is the part of regiond's event value the tests look at.
type Envelope struct {
	Before map[string]any `json:"before"`
	After  map[string]any `json:"after"`
	Source struct {
		Region string `json:"region"`
		Engine string `json:"engine"`
		DB     string `json:"db"`
		Table  string `json:"table"`
		Pos    string `json:"pos"`
		TsMs   int64  `json:"ts_ms"`
		TxID   string `json:"txid"`
	} `json:"source"`
	Op   string `json:"op"`
	TsMs int64  `json:"ts_ms"`
}

// Decode parses the record's value; it fails the test on a tombstone or
// invalid JSON.
func (r Record) Decode(t testing.TB) Envelope {
	t.Helper()
	var e Envelope
	if r.Value == nil {
		t.Fatalf("partition %d offset %d: decode a tombstone", r.Partition, r.Offset)
	}
	dec := json.NewDecoder(bytes.NewReader(r.Value))
	dec.UseNumber()
	if err := dec.Decode(&e); err != nil {
		t.Fatalf("partition %d offset %d: value is not an envelope: %v\n%s", r.Partition, r.Offset, err, r.Value)
	}
	return e
}

// RequireKcat fails the test with how to install kcat when it is missing.
func RequireKcat(t testing.TB) string {
	t.Helper()
	path, err := exec.LookPath("kcat")
	if err != nil {
		t.Fatal("kcat is not installed: apt-get install -y kcat (the tests read topics back with it as an independent client)")
	}
	return path
}

// ReadTopic consumes every message of topic from the beginning with kcat
// and returns them in partition order, each partition in offset order.
func ReadTopic(t testing.TB, broker, topic string) []Record {
	t.Helper()
	kcat := RequireKcat(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	// -Z prints null keys and values as NULL; a value is JSON (never NULL
	// as text) and JSON text holds no raw tab or newline.
	cmd := exec.CommandContext(ctx, kcat, "-b", broker, "-C", "-t", topic, "-o", "beginning", "-e", "-q", "-Z",
		"-f", `%p\t%o\t%k\t%s\n`)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("kcat -C -t %s: %v\n%s", topic, err, stderr.Bytes())
	}
	recs, err := parse(out)
	if err != nil {
		t.Fatalf("kcat output of %s: %v", topic, err)
	}
	return recs
}

func parse(out []byte) ([]Record, error) {
	var recs []Record
	sc := bufio.NewScanner(bytes.NewReader(out))
	sc.Buffer(make([]byte, 1<<20), 64<<20)
	for sc.Scan() {
		line := sc.Text()
		if line == "" {
			continue
		}
		f := strings.SplitN(line, "\t", 4)
		if len(f) != 4 {
			return nil, fmt.Errorf("line %q: want partition, offset, key, value", line)
		}
		p, err := strconv.Atoi(f[0])
		if err != nil {
			return nil, fmt.Errorf("line %q: partition: %v", line, err)
		}
		o, err := strconv.ParseInt(f[1], 10, 64)
		if err != nil {
			return nil, fmt.Errorf("line %q: offset: %v", line, err)
		}
		r := Record{Partition: p, Offset: o}
		if f[2] != "NULL" {
			r.Key = f[2]
		}
		if f[3] != "NULL" {
			r.Value = []byte(f[3])
		}
		recs = append(recs, r)
	}
	return recs, sc.Err()
}
