package pipeline

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"testing"

	"github.com/regiond/regiond/checkpoint"
	"github.com/regiond/regiond/source"
)

var errStop = errors.New("stop")

// capSource records the capacity of the queue it is given and stops.
type capSource struct{ got int }

func (s *capSource) CurrentPosition(context.Context) (checkpoint.Position, error) {
	return checkpoint.LSN(16), nil
}
func (s *capSource) ParsePosition(p string) (checkpoint.Position, error) {
	return checkpoint.ParseLSN(p)
}
func (s *capSource) Read(_ context.Context, _ checkpoint.Position, out chan<- source.Txn) error {
	s.got = cap(out)
	return errStop
}
func (s *capSource) Ack(context.Context, checkpoint.Position) error { return nil }

// depthSource also says how deep its queue should be.
type depthSource struct {
	capSource
	depth int
}

func (s *depthSource) QueueDepth() int { return s.depth }

// drainSink applies nothing.
type drainSink struct{}

func (drainSink) Open(context.Context) (string, error) { return "0/10", nil }
func (drainSink) Init(_ context.Context, pos string) (string, error) {
	return pos, nil
}
func (drainSink) Apply(ctx context.Context, in <-chan source.Txn, _ func(checkpoint.Position, bool)) error {
	for range in {
	}
	return ctx.Err()
}

func TestQueueDepth(t *testing.T) {
	plain := &capSource{}
	deep := &depthSource{depth: 7}
	deepButSet := &depthSource{depth: 7}
	for _, tc := range []struct {
		name   string
		src    source.Source
		got    *int
		buffer int
		want   int
	}{
		{"default", plain, &plain.got, 0, 1024},
		{"source's depth", deep, &deep.got, 0, 7},
		{"Buffer wins", deepButSet, &deepButSet.got, 5, 5},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := &Pipeline{Name: "a->b", Source: tc.src, Sink: drainSink{}, Logger: slog.New(slog.NewTextHandler(io.Discard, nil)), Buffer: tc.buffer}
			if err := p.runOnce(context.Background(), make(chan struct{}, 1)); !errors.Is(err, errStop) {
				t.Fatalf("runOnce: %v, want %v", err, errStop)
			}
			if *tc.got != tc.want {
				t.Errorf("queue capacity %d, want %d", *tc.got, tc.want)
			}
		})
	}
}
