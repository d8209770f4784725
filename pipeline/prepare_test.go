package pipeline

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/regiond/regiond/checkpoint"
	"github.com/regiond/regiond/source"
)

// prepSource logs the calls a run makes to it, and whether Read found
// what Prepare kept.
type prepSource struct {
	mu   sync.Mutex
	log  []string
	kept bool
}

func (s *prepSource) note(e string) {
	s.mu.Lock()
	s.log = append(s.log, e)
	s.mu.Unlock()
}

func (s *prepSource) Prepare(context.Context) error {
	time.Sleep(20 * time.Millisecond) // so that a run that does not wait for it is caught
	s.mu.Lock()
	s.kept = true
	s.mu.Unlock()
	s.note("prepared")
	return nil
}

func (s *prepSource) Discard() {
	s.mu.Lock()
	kept := s.kept
	s.kept = false
	s.mu.Unlock()
	if kept {
		s.note("discarded")
	}
}

func (s *prepSource) CurrentPosition(context.Context) (checkpoint.Position, error) {
	s.note("current position")
	return checkpoint.LSN(16), nil
}
func (s *prepSource) ParsePosition(p string) (checkpoint.Position, error) {
	return checkpoint.ParseLSN(p)
}
func (s *prepSource) Read(_ context.Context, from checkpoint.Position, _ chan<- source.Txn) error {
	s.mu.Lock()
	kept := s.kept
	s.kept = false
	s.mu.Unlock()
	if kept {
		s.note("read prepared from " + from.String())
	} else {
		s.note("read afresh from " + from.String())
	}
	return errStop
}
func (s *prepSource) Ack(context.Context, checkpoint.Position) error { return nil }

// leaseSink has a stored position (or none) and a lease that is free or,
// after one wait, taken with the position 0/20.
type leaseSink struct {
	drainSink
	stored string
	wait   bool
}

func (s leaseSink) Open(context.Context) (string, error) { return s.stored, nil }
func (s leaseSink) Lead(_ context.Context, waiting func()) (*Lease, error) {
	if s.wait {
		waiting()
	}
	return &Lease{Position: "0/20", Epoch: 1, Lost: make(chan struct{}), Release: func() {}}, nil
}

func TestPrepare(t *testing.T) {
	for _, tc := range []struct {
		name string
		sink Sink
		want []string
	}{
		{"no lease", drainSink{}, []string{"prepared", "read prepared from 0/10"}},
		{"lease", leaseSink{stored: "0/10"}, []string{"prepared", "read prepared from 0/20"}},
		{"first start", leaseSink{}, []string{"prepared", "current position", "read prepared from 0/20"}},
		{"standby", leaseSink{stored: "0/10", wait: true}, []string{"prepared", "discarded", "read afresh from 0/20"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			src := &prepSource{}
			p := &Pipeline{Name: "a->b", Source: src, Sink: tc.sink, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))}
			if err := p.runOnce(context.Background(), make(chan struct{}, 1)); !errors.Is(err, errStop) {
				t.Fatalf("runOnce: %v, want %v", err, errStop)
			}
			if !slices.Equal(src.log, tc.want) {
				t.Errorf("calls %q, want %q", src.log, tc.want)
			}
		})
	}
}

// A run that ends before reading discards what Prepare kept.
func TestPrepareDiscarded(t *testing.T) {
	src := &prepSource{}
	p := &Pipeline{Name: "a->b", Source: src, Sink: badSink{}, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))}
	if err := p.runOnce(context.Background(), make(chan struct{}, 1)); err == nil {
		t.Fatal("runOnce: no error")
	}
	if want := []string{"prepared", "discarded"}; !slices.Equal(src.log, want) {
		t.Errorf("calls %q, want %q", src.log, want)
	}
}

// badSink cannot open its target.
type badSink struct{ drainSink }

func (badSink) Open(context.Context) (string, error) { return "", errors.New("target down") }
