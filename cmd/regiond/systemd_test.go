package main

import (
	"context"
	"log/slog"
	"testing"
	"time"

	"github.com/regiond/regiond/checkpoint"
	"github.com/regiond/regiond/pipeline"
	"github.com/regiond/regiond/source"
)

// memSource delivers n empty transactions, then waits.
type memSource struct{ n int }

func (s memSource) CurrentPosition(context.Context) (checkpoint.Position, error) {
	return checkpoint.LSN(1), nil
}
func (s memSource) ParsePosition(p string) (checkpoint.Position, error) {
	return checkpoint.ParseLSN(p)
}
func (s memSource) Ack(context.Context, checkpoint.Position) error { return nil }
func (s memSource) Read(ctx context.Context, from checkpoint.Position, out chan<- source.Txn) error {
	for i := range s.n {
		select {
		case out <- source.Txn{End: checkpoint.LSN(100 + i)}:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	<-ctx.Done()
	return ctx.Err()
}

// memSink applies by taking transactions off the channel, or, when stuck,
// takes nothing (a target that hangs).
type memSink struct{ stuck bool }

func (s memSink) Open(context.Context) (string, error)               { return "0/1", nil }
func (s memSink) Init(_ context.Context, pos string) (string, error) { return pos, nil }
func (s memSink) Apply(ctx context.Context, in <-chan source.Txn, durable func(checkpoint.Position, bool)) error {
	if s.stuck {
		<-ctx.Done()
		return ctx.Err()
	}
	for {
		select {
		case t := <-in:
			pipeline.Progress(ctx).Add(1)
			durable(t.End, false)
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// TestNotifierStuck: a streaming pipeline whose sink takes nothing while
// transactions wait is stuck once a watchdog interval passes without
// progress; an idle one that keeps up is not, nor is one with no work.
func TestNotifierStuck(t *testing.T) {
	logger := slog.New(slog.DiscardHandler)
	mk := func(name string, src memSource, sink memSink) *pipeline.Pipeline {
		return &pipeline.Pipeline{Name: name, Source: src, Sink: sink, Logger: logger}
	}
	set := []*pipeline.Pipeline{
		mk("a->stuck", memSource{n: 10}, memSink{stuck: true}),
		mk("b->busy", memSource{n: 10}, memSink{}),
		mk("c->idle", memSource{}, memSink{}),
	}
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	for _, p := range set {
		go p.Run(ctx)
	}
	n := &notifier{set: set, logger: logger, watchdog: 500 * time.Millisecond, progress: map[string]progressMark{}}
	deadline := time.Now().Add(30 * time.Second)
	for {
		summary, up := n.summary()
		if up {
			if summary != "3/3 pipelines streaming" {
				t.Fatalf("summary %q", summary)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("pipelines not streaming: %s", summary)
		}
		time.Sleep(100 * time.Millisecond)
	}
	now := time.Now()
	if got := n.stuck(now); len(got) != 0 {
		t.Fatalf("stuck at the first look: %v", got)
	}
	got := n.stuck(now.Add(time.Second))
	if len(got) != 1 || got[0] != "a->stuck" {
		t.Fatalf("stuck after a watchdog interval = %v, want [a->stuck]", got)
	}
}
