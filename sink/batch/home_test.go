package batch

import (
	"context"
	"log/slog"
	"testing"
	"time"

	"github.com/regiond/regiond/checkpoint"
	"github.com/regiond/regiond/source"
)

// homeTarget is an in-memory region for a local pipeline's reverts: rows
// by id, writes buffered until commit. failCommits makes that many commits
// of a transaction that wrote a row fail with a lock timeout.
type homeTarget struct {
	rows        map[int64]source.Row
	tx          map[int64]source.Row // writes of the open transaction (nil row: deleted)
	wrote       bool
	failCommits int
	records     []Conflict // committed
	txRecords   []Conflict // of the open transaction
}

func (h *homeTarget) Begin(context.Context, checkpoint.Position) error {
	h.tx, h.wrote, h.txRecords = map[int64]source.Row{}, false, nil
	return nil
}
func (h *homeTarget) Exec(context.Context, []source.Change) error { return nil }
func (h *homeTarget) Commit(context.Context, checkpoint.Position) error {
	if h.wrote && h.failCommits > 0 {
		h.failCommits--
		return errInjected
	}
	for id, r := range h.tx {
		if r == nil {
			delete(h.rows, id)
		} else {
			h.rows[id] = r
		}
	}
	h.tx = nil
	h.records, h.txRecords = append(h.records, h.txRecords...), nil
	return nil
}
func (h *homeTarget) Rollback() { h.tx, h.txRecords = nil, nil }
func (h *homeTarget) Classify(err error) Class {
	if err == errInjected {
		return Lock
	}
	return Transient
}
func (h *homeTarget) Explain(context.Context, source.Change, error) string { return "" }

func (h *homeTarget) Lock(_ context.Context, _ *source.Table, keys []source.Row) ([]Current, error) {
	out := make([]Current, len(keys))
	for i, k := range keys {
		id := k[0].(int64)
		r, ok := h.tx[id]
		if !ok {
			r = h.rows[id]
		}
		out[i].Row = r
	}
	return out, nil
}

func (h *homeTarget) Write(_ context.Context, _ *source.Table, r *Resolved) error {
	h.wrote = true
	for _, row := range r.Delete {
		h.tx[row[0].(int64)] = nil
	}
	for _, rows := range [][]source.Row{r.Insert, r.Update} {
		for _, row := range rows {
			h.tx[row[0].(int64)] = row
		}
	}
	return nil
}

func (h *homeTarget) Record(_ context.Context, cs []Conflict) error {
	h.txRecords = append(h.txRecords, cs...)
	return nil
}

func (h *homeTarget) Recorded(_ context.Context, pipeline, rule, position string, _ time.Time) (map[string]bool, error) {
	out := map[string]bool{}
	for _, r := range h.records {
		if r.Pipeline == pipeline && r.Rule == rule && r.Position == position {
			out[RecordKey(r.Table.Name, source.KeyJSON(r.Table, r.Key))] = true
		}
	}
	return out, nil
}

// TestRevertSurvivesRetry: region b wrote row 17, homed in c, twice in a
// row (c-1 → b-1 → b-2). Its local pipeline meets the first write when the
// row is already b-2, so the revert waits for the chain's next write; the
// second write's batch restores c-1, but its commit hits a lock timeout and
// is retried. The retry must restore c-1 again, not b-1: the chain the
// failed attempt consumed is part of what it rolls back.
func TestRevertSurvivesRetry(t *testing.T) {
	tb := &source.Table{Name: "ledger", Columns: []source.Column{{Name: "id"}, {Name: "home"}, {Name: "note"}}, PK: []int{0}}
	row := func(note string) source.Row { return source.Row{int64(17), "c", note} }
	h := &homeTarget{rows: map[int64]source.Row{17: row("b-2")}, failCommits: 1}
	// The second write comes once the first one's batch has committed, so
	// that they are two batches.
	in, first := make(chan source.Txn), make(chan struct{})
	go func() {
		defer close(in)
		in <- source.Txn{Changes: []source.Change{{Table: tb, Op: source.Update, Before: row("c-1"), After: row("b-1"), TxnID: "b1"}}, End: intPos(1)}
		<-first
		in <- source.Txn{Changes: []source.Change{{Table: tb, Op: source.Update, Before: row("b-1"), After: row("b-2"), TxnID: "b2"}}, End: intPos(2)}
	}()
	durable := func(p checkpoint.Position, _ bool) {
		if p.String() == "1" {
			close(first)
		}
	}
	cfg := Config{Region: "b", Pipeline: "b->b", BatchChanges: 1, LockRetries: 3, Logger: slog.New(slog.DiscardHandler),
		Rules: &Rules{Tables: map[string]Rule{"ledger": {Name: "home_region", HomeColumn: "home"}}, Pipeline: "b->b", Origin: "b", Target: "b", Local: true}}
	if err := Run(context.Background(), cfg, h, in, durable); err != nil {
		t.Fatal(err)
	}
	if h.failCommits != 0 {
		t.Fatal("the revert's commit was never failed: the test did not test the retry")
	}
	if got := h.rows[17][2]; got != "c-1" {
		t.Errorf("row 17 note %q after the revert, want c-1 (the row before b's writes)", got)
	}
	if len(h.records) != 2 {
		t.Errorf("%d conflicts recorded, want 2 (one per violating write)", len(h.records))
	}
}

// TestHomeReplayRecordsOnce: a local pipeline that reads violating
// transactions again after a restart (its stored position was held before
// them) does not record them a second time, but records one it had not
// seen, and one committed after it started even when an identical record
// exists (it cannot be a replay).
func TestHomeReplayRecordsOnce(t *testing.T) {
	tb := &source.Table{Name: "ledger", Columns: []source.Column{{Name: "id"}, {Name: "home"}, {Name: "note"}}, PK: []int{0}}
	row := func(id int64, note string) source.Row { return source.Row{id, "c", note} }
	past := time.Now().Add(-10 * time.Minute)
	txn := func(id int64, txid string, end int, commit time.Time) source.Txn {
		return source.Txn{Changes: []source.Change{{Table: tb, Op: source.Update, Before: row(id, "c-1"), After: row(id, "b-1"), TxnID: txid}},
			End: intPos(end), Commit: commit}
	}
	h := &homeTarget{rows: map[int64]source.Row{1: row(1, "b-1"), 2: row(2, "b-1"), 3: row(3, "b-1")}}
	run := func(txns ...source.Txn) {
		t.Helper()
		in := make(chan source.Txn, len(txns))
		for _, x := range txns {
			in <- x
		}
		close(in)
		cfg := Config{Region: "b", Pipeline: "b->b", BatchChanges: 1, LockRetries: 3, Logger: slog.New(slog.DiscardHandler),
			Rules: &Rules{Tables: map[string]Rule{"ledger": {Name: "home_region", HomeColumn: "home"}}, Pipeline: "b->b", Origin: "b", Target: "b", Local: true}}
		if err := Run(context.Background(), cfg, h, in, func(checkpoint.Position, bool) {}); err != nil {
			t.Fatal(err)
		}
	}
	run(txn(1, "t1", 1, past))
	run(txn(1, "t1", 1, past), txn(2, "t2", 2, past))
	if len(h.records) != 2 {
		t.Fatalf("%d conflicts recorded after the replay, want 2 (t1 once, t2)", len(h.records))
	}
	// A transaction committed after the run started is new, whatever the
	// target holds (here a record with the same identity, planted).
	h.records = append(h.records, Conflict{Pipeline: "b->b", Table: tb, Key: row(3, ""), Rule: "home_region", Position: "t3"})
	run(txn(3, "t3", 3, time.Now().Add(2*replayMargin)))
	if len(h.records) != 4 {
		t.Errorf("%d conflicts recorded, want 4 (t3 recorded although a record like it exists)", len(h.records))
	}
	for id := int64(1); id <= 3; id++ {
		if got := h.rows[id][2]; got != "c-1" {
			t.Errorf("row %d note %q, want c-1 (reverted)", id, got)
		}
	}
}
