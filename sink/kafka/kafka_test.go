package kafka

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"strconv"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/regiond/regiond/checkpoint"
	"github.com/regiond/regiond/config"
	"github.com/regiond/regiond/internal/kafkatest"
	"github.com/regiond/regiond/source"
)

var items = &source.Table{
	Name: "items",
	Columns: []source.Column{
		{Name: "id"}, {Name: "amount"}, {Name: "data"}, {Name: "at"}, {Name: "seen"}, {Name: "note"},
	},
	PK: []int{0},
}

func TestKeySameAcrossEngines(t *testing.T) {
	tb := &source.Table{Columns: []source.Column{{Name: "id"}, {Name: "price"}, {Name: "day"}}, PK: []int{0, 1, 2}}
	tests := []struct {
		name      string
		mysql, pg source.Row // the same key as each engine's reader gives it
		want      string
	}{
		{"unsigned and signed", source.Row{uint64(7), source.Decimal("1.50"), source.Date("2024-01-02")},
			source.Row{int64(7), source.Decimal("1.5000"), source.Date("2024-01-02")}, `{"id":7,"price":"1.5","day":"2024-01-02"}`},
		{"big unsigned", source.Row{uint64(1) << 60, source.Decimal("-0.00"), source.Date("2024-01-02")},
			source.Row{int64(1) << 60, source.Decimal("0"), source.Date("2024-01-02")}, `{"id":1152921504606846976,"price":"0","day":"2024-01-02"}`},
		{"leading zeros", source.Row{int64(-3), source.Decimal("-012.340"), source.Date("2024-01-02")},
			source.Row{int64(-3), source.Decimal("-12.34"), source.Date("2024-01-02")}, `{"id":-3,"price":"-12.34","day":"2024-01-02"}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m, p := string(Key(tb, tt.mysql)), string(Key(tb, tt.pg))
			if m != tt.want || p != tt.want {
				t.Errorf("Key: mysql %s, postgres %s, want %s", m, p, tt.want)
			}
		})
	}
	// Text keys, binary keys and times keep their mapping.
	tb2 := &source.Table{Columns: []source.Column{{Name: "k"}, {Name: "b"}, {Name: "at"}}, PK: []int{0, 1, 2}}
	got := string(Key(tb2, source.Row{"a\"b\tc", []byte{0xff, 0}, source.Timestamp("2024-01-02 03:04:05.5")}))
	want := `{"k":"a\"b\tc","b":"/wA=","at":"2024-01-02T03:04:05.500000Z"}`
	if got != want {
		t.Errorf("Key = %s, want %s", got, want)
	}
	var v any
	if err := json.Unmarshal([]byte(got), &v); err != nil {
		t.Errorf("key is not JSON: %v", err)
	}
}

// event is what the test checks of one published message.
type event struct {
	Key, Op, Pos, TxID string
	Before, After      map[string]any
	Tombstone          bool
}

// TestApplyPublishes runs the sink against a real broker (kfake) and reads
// the topic back with kcat.
func TestApplyPublishes(t *testing.T) {
	broker := kafkatest.Start(t)
	s, state := newTestSink(t, Config{Kafka: config.Kafka{Brokers: []string{broker}, TopicPrefix: "rt", Partitions: 3, Tombstones: true}})
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	if pos, err := s.Open(ctx); err != nil || pos != "" {
		t.Fatalf("Open = %q, %v; want no position", pos, err)
	}
	if pos, err := s.Init(ctx, "0/10"); err != nil || pos != "0/10" {
		t.Fatalf("Init = %q, %v", pos, err)
	}
	if pos, err := s.Init(ctx, "0/20"); err != nil || pos != "0/10" {
		t.Fatalf("second Init = %q, %v; want the first position kept", pos, err)
	}
	if pos, err := s.Open(ctx); err != nil || pos != "0/10" {
		t.Fatalf("Open after Init = %q, %v", pos, err)
	}

	row := func(id int64, note string) source.Row {
		return source.Row{id, source.Decimal("12.30"), []byte{0, 1, 2}, source.DateTime("2024-01-02 03:04:05.5"), source.Timestamp("2024-01-02 03:04:05"), note}
	}
	commit := time.Date(2024, 5, 6, 7, 8, 9, 0, time.UTC)
	txns := []source.Txn{
		{Changes: []source.Change{
			{Table: items, Op: source.Insert, After: row(1, "one"), TxnID: "0-1-5"},
			{Table: items, Op: source.Insert, After: row(2, "two"), TxnID: "0-1-5"},
		}, End: checkpoint.LSN(100), Commit: commit},
		// One source transaction in two chunks.
		{Changes: []source.Change{
			{Table: items, Op: source.Update, Before: row(1, "one"), After: row(1, "uno"), TxnID: "0-1-6"},
		}, More: true, Commit: commit},
		{Changes: []source.Change{
			{Table: items, Op: source.Delete, Before: row(2, "two"), TxnID: "0-1-6"},
			{Table: items, Op: source.Update, Before: row(1, "uno"), After: row(3, "uno"), TxnID: "0-1-6"}, // key change
		}, End: checkpoint.LSN(200), Commit: commit},
		// A skipped transaction (regiond's own) still moves the position.
		{End: checkpoint.LSN(300), Commit: commit},
	}
	in := make(chan source.Txn, len(txns))
	for _, tx := range txns {
		in <- tx
	}
	close(in)
	var durable []string
	if err := s.Apply(ctx, in, func(pos checkpoint.Position, stored bool) {
		if !stored {
			t.Errorf("durable(%s) with stored unset", pos)
		}
		durable = append(durable, pos.String())
	}); err != nil {
		t.Fatalf("Apply: %v", err)
	}
	if len(durable) == 0 || durable[len(durable)-1] != "0/12C" {
		t.Errorf("durable positions %v, want them to end at 0/12C", durable)
	}
	if rec, ok, err := state.LoadPublished("east->kafka"); err != nil || !ok || rec.Position != "0/12C" {
		t.Errorf("state_dir position = %+v, %v, %v; want 0/12C", rec, ok, err)
	}

	recs := kafkatest.ReadTopic(t, broker, "rt.items")
	partOf := map[string]int{}
	byKey := map[string][]event{}
	for _, r := range recs {
		if p, ok := partOf[r.Key]; ok && p != r.Partition {
			t.Errorf("key %s in partitions %d and %d", r.Key, p, r.Partition)
		}
		partOf[r.Key] = r.Partition
		if r.Value == nil {
			byKey[r.Key] = append(byKey[r.Key], event{Key: r.Key, Tombstone: true})
			continue
		}
		e := r.Decode(t)
		if e.Source.Region != "east" || e.Source.Engine != "mysql" || e.Source.DB != "app" || e.Source.Table != "items" || e.Source.TsMs != commit.UnixMilli() {
			t.Errorf("source block %+v", e.Source)
		}
		if e.TsMs < commit.UnixMilli() {
			t.Errorf("ts_ms %d before the commit", e.TsMs)
		}
		byKey[r.Key] = append(byKey[r.Key], event{Key: r.Key, Op: e.Op, Pos: e.Source.Pos, TxID: e.Source.TxID, Before: e.Before, After: e.After})
	}
	img := func(id int, note string) map[string]any {
		return map[string]any{"id": json.Number(itoa(id)), "amount": "12.30", "data": "AAEC", "at": "2024-01-02T03:04:05.500000", "seen": "2024-01-02T03:04:05.000000Z", "note": note}
	}
	want := map[string][]event{
		`{"id":1}`: {
			{Key: `{"id":1}`, Op: "c", Pos: "0-1-5#0", TxID: "0-1-5", After: img(1, "one")},
			{Key: `{"id":1}`, Op: "u", Pos: "0-1-6#0", TxID: "0-1-6", Before: img(1, "one"), After: img(1, "uno")},
			{Key: `{"id":1}`, Op: "d", Pos: "0-1-6#2", TxID: "0-1-6", Before: img(1, "uno")},
			{Key: `{"id":1}`, Tombstone: true},
		},
		`{"id":2}`: {
			{Key: `{"id":2}`, Op: "c", Pos: "0-1-5#1", TxID: "0-1-5", After: img(2, "two")},
			{Key: `{"id":2}`, Op: "d", Pos: "0-1-6#1", TxID: "0-1-6", Before: img(2, "two")},
			{Key: `{"id":2}`, Tombstone: true},
		},
		`{"id":3}`: {
			{Key: `{"id":3}`, Op: "c", Pos: "0-1-6#3", TxID: "0-1-6", After: img(3, "uno")},
		},
	}
	if diff := cmp.Diff(want, byKey); diff != "" {
		t.Errorf("events per key (-want +got):\n%s", diff)
	}
}

func itoa(i int) string { return string(rune('0' + i)) }

// TestManyBatchesIntact publishes enough events to fill many batches and
// reuse the encoder's buffers many times over, and reads them all back:
// each event must carry its own row, whatever was encoded after it.
func TestManyBatchesIntact(t *testing.T) {
	broker := kafkatest.Start(t)
	s, _ := newTestSink(t, Config{Kafka: config.Kafka{Brokers: []string{broker}, TopicPrefix: "many", Partitions: 3}, BatchMessages: 700})
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if _, err := s.Open(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Init(ctx, "0/10"); err != nil {
		t.Fatal(err)
	}
	const rows, perTxn = 30_000, 7
	note := func(id int) string { return fmt.Sprintf("%0900d", id) } // about 1 KB per event: 120 buffers
	in := make(chan source.Txn, 16)
	go func() {
		defer close(in)
		for first := 0; first < rows; first += perTxn {
			var tx source.Txn
			for id := first; id < min(first+perTxn, rows); id++ {
				tx.Changes = append(tx.Changes, source.Change{Table: items, Op: source.Insert, TxnID: fmt.Sprintf("0-1-%d", first),
					After: source.Row{int64(id), source.Decimal("1"), []byte{1}, nil, nil, note(id)}})
			}
			tx.End, tx.Commit = checkpoint.LSN(uint64(1000+first)), time.Now()
			in <- tx
		}
	}()
	if err := s.Apply(ctx, in, func(checkpoint.Position, bool) {}); err != nil {
		t.Fatalf("Apply: %v", err)
	}
	recs := kafkatest.ReadTopic(t, broker, "many.items")
	if len(recs) != rows {
		t.Fatalf("%d events, want %d", len(recs), rows)
	}
	seen := make([]bool, rows)
	for _, r := range recs {
		e := r.Decode(t)
		id, err := strconv.Atoi(string(e.After["id"].(json.Number)))
		if err != nil || id < 0 || id >= rows || seen[id] {
			t.Fatalf("event with key %s: id %v (%v) out of range or seen twice", r.Key, e.After["id"], err)
		}
		seen[id] = true
		if r.Key != fmt.Sprintf(`{"id":%d}`, id) || e.After["note"] != note(id) || e.Source.Pos != fmt.Sprintf("0-1-%d#%d", id/perTxn*perTxn, id%perTxn) {
			t.Fatalf("event of row %d: key %s, pos %s, note %.20v…: not its own", id, r.Key, e.Source.Pos, e.After["note"])
		}
	}
}

// newTestSink returns a sink of pipeline east->kafka for table items of a
// MySQL region, with cfg's Kafka block and batch size, its state_dir in a
// temporary directory, closed when the test ends; it requires kcat.
func newTestSink(t *testing.T, cfg Config) (*Sink, *checkpoint.FileStore) {
	t.Helper()
	kafkatest.RequireKcat(t)
	state, err := checkpoint.NewFileStore(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	cfg.Pipeline, cfg.Origin, cfg.Tables, cfg.State = "east->kafka", Origin{Region: "east", Engine: "mysql", DB: "app"}, []string{"items"}, state
	s, err := New(cfg, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s, state
}
