package pipeline

import (
	"testing"
	"time"

	"github.com/regiond/regiond/checkpoint"
)

func TestCommitLog(t *testing.T) {
	var l commitLog
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	for i := 1; i <= 5; i++ {
		l.add(checkpoint.LSN(i*100), t0.Add(time.Duration(i)*time.Second))
	}
	if at, ok := l.reached(checkpoint.LSN(300)); !ok || !at.Equal(t0.Add(3*time.Second)) {
		t.Fatalf("reached 300: %v, %v; want the third commit time", at, ok)
	}
	if len(l.pending) != 2 {
		t.Fatalf("%d transactions pending after reaching the third of five, want 2", len(l.pending))
	}
	if _, ok := l.reached(checkpoint.LSN(250)); ok {
		t.Fatal("reached a position never added")
	}
	if at, ok := l.reached(checkpoint.LSN(500)); !ok || !at.Equal(t0.Add(5*time.Second)) || len(l.pending) != 0 {
		t.Fatalf("reached 500: %v, %v, %d pending; want the fifth commit time, none pending", at, ok, len(l.pending))
	}
}
