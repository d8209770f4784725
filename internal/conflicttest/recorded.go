// Package conflicttest holds checks shared by the sink engines' tests.
package conflicttest

import (
	"testing"
	"time"

	"github.com/regiond/regiond/sink/batch"
	"github.com/regiond/regiond/source"
)

// CheckRecorded checks a target's batch.RuleTarget.Recorded, given as
// recorded, against c, a conflict the target holds committed (detected
// within the last hour): it must be found by pipeline, table, key, rule and
// source transaction, detected since the time given, and nothing else.
// otherKey is a key of c's table that has no record.
func CheckRecorded(t *testing.T, recorded func(batch.Conflict, time.Time) (bool, error), c batch.Conflict, otherKey source.Row) {
	t.Helper()
	other := func(f func(*batch.Conflict)) batch.Conflict { x := c; f(&x); return x }
	past, future := time.Now().Add(-time.Hour), time.Now().Add(time.Hour)
	for _, tc := range []struct {
		what  string
		c     batch.Conflict
		since time.Time
		want  bool
	}{
		{"the same conflict", c, past, true},
		{"detected before since", c, future, false},
		{"another source transaction", other(func(x *batch.Conflict) { x.Position += "-other" }), past, false},
		{"another key", other(func(x *batch.Conflict) { x.Key = otherKey }), past, false},
		{"another pipeline", other(func(x *batch.Conflict) { x.Pipeline += "-other" }), past, false},
		{"another rule", other(func(x *batch.Conflict) { x.Rule += "-other" }), past, false},
	} {
		got, err := recorded(tc.c, tc.since)
		if err != nil {
			t.Fatalf("%s: %v", tc.what, err)
		}
		if got != tc.want {
			t.Errorf("%s: Recorded = %v, want %v", tc.what, got, tc.want)
		}
	}
}
