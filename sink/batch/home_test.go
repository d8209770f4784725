package batch

import (
	"context"
	"log/slog"
	"testing"

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
	conflicts   int
}

func (h *homeTarget) Begin(context.Context, checkpoint.Position) error {
	h.tx, h.wrote = map[int64]source.Row{}, false
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
	return nil
}
func (h *homeTarget) Rollback() { h.tx = nil }
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
	h.conflicts += len(cs)
	return nil
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
		in <- source.Txn{Changes: []source.Change{{Table: tb, Op: source.Update, Before: row("c-1"), After: row("b-1")}}, End: intPos(1)}
		<-first
		in <- source.Txn{Changes: []source.Change{{Table: tb, Op: source.Update, Before: row("b-1"), After: row("b-2")}}, End: intPos(2)}
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
	if h.conflicts < 2 {
		t.Errorf("%d conflicts recorded, want at least 2", h.conflicts)
	}
}
