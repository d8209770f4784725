package mysql

import (
	"log/slog"
	"testing"
)

// openApplier creates, opens and initialises (at position start) an
// applier of cfg for a test, closed when the test ends.
func openApplier(t *testing.T, cfg Config, start string) *Applier {
	t.Helper()
	a, err := New(cfg, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { a.Close() })
	if _, err := a.Open(t.Context()); err != nil {
		t.Fatal(err)
	}
	if _, err := a.Init(t.Context(), start); err != nil {
		t.Fatal(err)
	}
	return a
}
