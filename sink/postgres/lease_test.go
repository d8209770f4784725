package postgres

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/regiond/regiond/internal/pgconn"
	"github.com/regiond/regiond/pipeline"
)

// TestLeaseFencesEarlierHolder: two appliers of one pipeline (two regiond
// processes). The second waits while the first holds the lease; once it
// takes over, the first cannot commit anything more; a session that holds
// the checkpoint row in an open transaction (a leader paused mid-batch) is
// ended by the next taker instead of stalling it.
func TestLeaseFencesEarlierHolder(t *testing.T) {
	e := newEnv(t)
	a := e.applier(t, Config{})
	b := e.applier(t, Config{})
	ctx := t.Context()

	la, err := a.Lead(ctx, func() { t.Error("a waited for a free lease") })
	if err != nil {
		t.Fatal(err)
	}
	if la.Epoch != 1 || la.Position != "0/1" {
		t.Fatalf("a's lease: epoch %d position %s, want 1 and 0/1", la.Epoch, la.Position)
	}
	mustApply(t, a, txn(10, ins(typesTable, typesRow(1, nil))))

	waited := make(chan struct{})
	got := make(chan *pipeline.Lease, 1)
	go func() {
		lb, err := b.Lead(ctx, func() { close(waited) })
		if err != nil {
			t.Error(err)
		}
		got <- lb
	}()
	select {
	case <-waited:
	case <-time.After(30 * time.Second):
		t.Fatal("b did not wait while a held the lease")
	}
	select {
	case <-got:
		t.Fatal("b took the lease while a held it")
	case <-time.After(1500 * time.Millisecond):
	}
	la.Release()
	var lb *pipeline.Lease
	select {
	case lb = <-got:
	case <-time.After(30 * time.Second):
		t.Fatal("b did not take the lease after a released it")
	}
	if lb.Epoch != 2 || lb.Position != "0/A" {
		t.Fatalf("b's lease: epoch %d position %s, want 2 and 0/A", lb.Epoch, lb.Position)
	}

	// a still believes it leads: its next batch must not commit.
	_, err = apply(ctx, a, txn(20, ins(typesTable, typesRow(2, nil))))
	if !errors.Is(err, pipeline.ErrFenced) {
		t.Fatalf("a's apply after b took over: %v, want ErrFenced", err)
	}
	wantRows(t, e.dump(t, "types"), []string{`1|\N|\N|\N|\N|\N|\N|\N|\N|\N|\N|\N|\N|\N|\N|\N|\N`})
	mustApply(t, b, txn(20, ins(typesTable, typesRow(2, nil))))
	if pos, _, _ := e.checkpointRow(t); pos != "0/14" {
		t.Fatalf("checkpoint %s after b's batch, want 0/14", pos)
	}

	// b "pauses" mid-batch: a session holds the row in an open
	// transaction. a, taking over, ends that session.
	lb.Release()
	holder, err := pgconn.Connect(ctx, e.srv.URL("app"))
	if err != nil {
		t.Fatal(err)
	}
	defer holder.Close(context.Background())
	tx, err := holder.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Exec(ctx, "UPDATE regiond_checkpoints SET seq = seq + 1 WHERE pipeline = $1", pipelineName); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	la2, err := a.Lead(ctx, func() {})
	if err != nil {
		t.Fatal(err)
	}
	defer la2.Release()
	if la2.Epoch != 3 {
		t.Fatalf("a's second lease: epoch %d, want 3", la2.Epoch)
	}
	if err := tx.Commit(ctx); err == nil {
		t.Fatal("the paused holder's transaction committed after the takeover")
	}
	t.Logf("took over from a paused holder in %v", time.Since(start).Round(time.Millisecond))
	mustApply(t, a, txn(30, ins(typesTable, typesRow(3, nil))))
}
