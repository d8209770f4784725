package mysql

import (
	"log/slog"
	"testing"

	"github.com/regiond/regiond/source"
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

// beginWriter opens a writer of a on its own connection and begins a
// target transaction, rolled back (unless committed) and closed when the
// test ends.
func beginWriter(t *testing.T, a *Applier) *writer {
	t.Helper()
	conn, err := a.db.Conn(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	w := &writer{a: a, conn: conn, cols: map[*source.Table][]targetColumn{}}
	t.Cleanup(func() {
		w.Rollback()
		conn.Close()
	})
	if err := w.Begin(t.Context(), nil); err != nil {
		t.Fatal(err)
	}
	return w
}
