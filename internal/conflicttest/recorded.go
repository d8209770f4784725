// Package conflicttest holds checks shared by the sink engines' tests.
package conflicttest

import (
	"testing"
	"time"

	"github.com/regiond/regiond/sink/batch"
	"github.com/regiond/regiond/source"
)

// Recorded is a target's batch.RuleTarget.Recorded.
type Recorded func(pipeline, rule, position string, since time.Time) (map[string]bool, error)

// CheckRecorded checks recorded against c, a conflict the target holds
// committed (detected within the last hour): c's table and key must be
// found under its pipeline, rule and source transaction, detected since the
// time given, and under nothing else; otherKey, a key of c's table without
// a record, never.
func CheckRecorded(t *testing.T, recorded Recorded, c batch.Conflict, otherKey source.Row) {
	t.Helper()
	key := batch.RecordKey(c.Table.Name, source.KeyJSON(c.Table, c.Key))
	other := batch.RecordKey(c.Table.Name, source.KeyJSON(c.Table, otherKey))
	past, future := time.Now().Add(-time.Hour), time.Now().Add(time.Hour)
	for _, tc := range []struct {
		what                     string
		pipeline, rule, position string
		since                    time.Time
		want                     bool
	}{
		{"the same source transaction", c.Pipeline, c.Rule, c.Position, past, true},
		{"detected before since", c.Pipeline, c.Rule, c.Position, future, false},
		{"another source transaction", c.Pipeline, c.Rule, c.Position + "-other", past, false},
		{"another pipeline", c.Pipeline + "-other", c.Rule, c.Position, past, false},
		{"another rule", c.Pipeline, c.Rule + "-other", c.Position, past, false},
	} {
		got, err := recorded(tc.pipeline, tc.rule, tc.position, tc.since)
		if err != nil {
			t.Fatalf("%s: %v", tc.what, err)
		}
		if got[key] != tc.want {
			t.Errorf("%s: Recorded holds %q: %v, want %v (got %v)", tc.what, key, got[key], tc.want, got)
		}
		if got[other] {
			t.Errorf("%s: Recorded holds %q, which has no record", tc.what, other)
		}
	}
}
