package e2e

import (
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/regiond/regiond/checkpoint"
	"github.com/regiond/regiond/internal/dbtest"
	"github.com/regiond/regiond/internal/kafkatest"
	"github.com/regiond/regiond/internal/testenv"
)

// TestKafkaBackfillResumes: `backfill --to kafka` killed by SIGKILL part
// way through continues where it stopped when it is run again: every row
// gets its "r" event, under the first run's txid, and no more than the
// chunk in flight at the kill is published twice.
func TestKafkaBackfillResumes(t *testing.T) {
	kafkatest.RequireKcat(t)
	broker := kafkatest.Start(t)
	m1 := &region{name: "m1", srv: testenv.MariaDB(t, 1)}
	m1.db = dbtest.Open(t, m1.srv)
	dbtest.Exec(t, m1.db, kevDDL["mysql"]...)
	const rows, chunk = 3000, 10
	for lo := 1; lo <= rows; lo += 500 {
		var vals []string
		for id := lo; id < lo+500; id++ {
			vals = append(vals, fmt.Sprintf("(%d, 1)", id))
		}
		dbtest.Exec(t, m1.db, "INSERT INTO kev (id, v) VALUES "+strings.Join(vals, ", "))
	}
	state := t.TempDir()
	cfg := writeConfig(t, []*region{m1}, []string{"kev"}, fmt.Sprintf("state_dir: %s\nkafka:\n  brokers: [%s]\n  topic_prefix: e2e\n  partitions: 3\n", state, broker))
	d := newDaemon(t, "run", "--config", cfg)
	d.start()
	waitFiles(t, filepath.Join(state, "position-*kafka*.json"), 1)

	args := []string{"backfill", "--config", cfg, "--from", "m1", "--to", "kafka", "--chunk-size", fmt.Sprint(chunk)}
	first := exec.Command(regiondBinary(t), args...)
	if err := first.Start(); err != nil {
		t.Fatal(err)
	}
	// Kill it at a random moment after its progress file shows published
	// chunks.
	progress := filepath.Join(state, "backfill-m1-%3Ekafka.json")
	deadline := time.Now().Add(time.Minute)
	for {
		if _, err := os.Stat(progress); err == nil {
			break
		}
		if time.Now().After(deadline) {
			first.Process.Kill()
			t.Fatalf("no %s after a minute of backfill", progress)
		}
		time.Sleep(time.Millisecond)
	}
	time.Sleep(time.Duration(rand.IntN(300)) * time.Millisecond)
	first.Process.Signal(syscall.SIGKILL)
	first.Wait()
	b, err := os.ReadFile(progress)
	if err != nil {
		t.Fatalf("progress after the kill: %v", err)
	}
	var p checkpoint.KafkaBackfill
	if err := json.Unmarshal(b, &p); err != nil {
		t.Fatalf("%s: %v\n%s", progress, err, b)
	}
	if p.Published >= rows {
		t.Fatalf("the first run published all %d rows before it was killed: make the table larger", p.Published)
	}
	t.Logf("killed after %d rows published (txid %s)", p.Published, p.TxID)

	out, err := exec.Command(regiondBinary(t), args...).CombinedOutput()
	if err != nil {
		t.Fatalf("backfill again: %v\n%s", err, out)
	}
	t.Logf("%s", strings.TrimSpace(string(out)))
	if !strings.Contains(string(out), fmt.Sprintf("continuing after %d rows", p.Published)) {
		t.Errorf("the second run does not say it continues after %d rows:\n%s", p.Published, out)
	}
	if _, err := os.Stat(progress); !os.IsNotExist(err) {
		t.Errorf("%s still there after a complete run (stat: %v): the next backfill would not start afresh", progress, err)
	}

	// Every row has an "r" event, under one txid; at most one chunk twice.
	deadline = time.Now().Add(time.Minute)
	for {
		byKey, n := readKev(t, broker)
		missing, snaps := 0, 0
		for id := 1; id <= rows; id++ {
			evs := byKey[fmt.Sprintf(`{"id":%d}`, id)]
			if len(evs) == 0 {
				missing++
			}
			for _, ev := range evs {
				if ev.tombstone || ev.env.Op != "r" || ev.env.Source.TxID != p.TxID {
					t.Fatalf("key %d: event %+v, want only op r under txid %s", id, ev.env, p.TxID)
				}
				snaps++
			}
		}
		if missing == 0 {
			if snaps > rows+chunk {
				t.Errorf("%d snapshot events for %d rows: more than one chunk (%d) published twice; the second run did not continue", snaps, rows, chunk)
			}
			t.Logf("%d rows, %d snapshot events (%d records in the topic)", rows, snaps, n)
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d rows have no snapshot event after a minute", missing, rows)
		}
		time.Sleep(500 * time.Millisecond)
	}
}
