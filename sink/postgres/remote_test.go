package postgres

import (
	"context"
	"fmt"
	"reflect"
	"testing"
	"time"

	"github.com/regiond/regiond/sink/batch"
	"github.com/regiond/regiond/source"
)

// readRowsOnly hides the target's RemoteFilter: CheckRemote then reads and
// compares every row in Go, as before the filter.
type readRowsOnly struct{ t *target }

func (r readRowsOnly) ReadRows(ctx context.Context, st *source.Table, keys []source.Row) ([]source.Row, func(int, any) any, error) {
	return r.t.ReadRows(ctx, st, keys)
}

func (r readRowsOnly) Record(ctx context.Context, cs []batch.Conflict) error {
	return r.t.Record(ctx, cs)
}

// TestReadDifferingFindsWhatReadRowsFinds: for apply_remote changes over
// every mapped type (rows as written, rows that differ in one column,
// missing rows, inserts over present and missing keys, key-only before
// images), the check with the target comparing (ReadDiffering) records
// exactly the conflicts of the check that reads every row, and returns no
// row for the changes whose image is what the target holds.
func TestReadDifferingFindsWhatReadRowsFinds(t *testing.T) {
	e := newEnv(t)
	rules := &batch.Rules{Pipeline: pipelineName, Origin: "east", Target: "west"}
	a := e.applier(t, Config{Tables: []string{"types"}, Rules: rules, LockTimeout: 5 * time.Second})
	stored := []source.Row{
		typesRow(1, full),
		typesRow(2, map[string]any{"i": int64(0), "s": "", "bin": []byte{}, "j": source.JSON(`[]`), "flag": false}),
		typesRow(3, map[string]any{"i": int64(1)}), // NULLs everywhere else
	}
	var txns []source.Txn
	for i, r := range stored {
		txns = append(txns, txn(uint64(10*(i+1)), ins(typesTable, r)))
	}
	mustApply(t, a, txns...)

	changed := func(r source.Row, col string, v any) source.Row {
		out := append(source.Row(nil), r...)
		for i, c := range typesTable.Columns {
			if c.Name == col {
				out[i] = v
			}
		}
		return out
	}
	keyOnly := &source.Table{Name: typesTable.Name, Columns: typesTable.Columns, PK: typesTable.PK, KeyOnlyBefore: true}
	after := changed(stored[0], "s", "new")
	changes := []source.Change{
		upd(typesTable, stored[0], after),                             // as stored: no conflict
		upd(typesTable, changed(stored[1], "s", "other"), stored[1]),  // differs in s
		upd(typesTable, changed(stored[2], "i", int64(5)), stored[2]), // differs in i (NULL elsewhere)
		del(typesTable, typesRow(9, map[string]any{"i": int64(1)})),   // missing row
		ins(typesTable, typesRow(10, full)),                           // missing key: fine
		ins(typesTable, changed(stored[1], "flag", true)),             // present key, other value
	}
	keyOnlyChanges := []source.Change{
		upd(keyOnly, typesRow(1, nil), after), // present: fine
		del(keyOnly, typesRow(11, nil)),       // missing
	}
	for i := range changes {
		changes[i].TxnID = fmt.Sprint(i)
	}

	check := func(filter bool, cs []source.Change) []string {
		t.Helper()
		ctx := t.Context()
		conn, err := a.connect(ctx)
		if err != nil {
			t.Fatal(err)
		}
		defer closeConn(conn)
		tg := &target{a: a, conn: conn, tables: map[string]*pgTable{}, plans: map[*source.Table]*plan{}, reads: map[*pgTable]*ruleInfo{}}
		if err := tg.Begin(ctx, nil); err != nil {
			t.Fatal(err)
		}
		defer tg.Rollback()
		var rt batch.RemoteTarget = readRowsOnly{tg}
		if filter {
			rt = tg
		}
		got, err := batch.CheckRemote(ctx, rt, rules, cs)
		if err != nil {
			t.Fatal(err)
		}
		var out []string
		for _, c := range got {
			out = append(out, fmt.Sprintf("%s %s: %s", source.KeyJSON(c.Table, c.Key), c.Position, c.Reason))
		}
		return out
	}
	for _, cs := range [][]source.Change{changes, keyOnlyChanges} {
		want, got := check(false, cs), check(true, cs)
		if len(want) == 0 {
			t.Fatal("the check without the filter found no conflict: the test is broken")
		}
		if !reflect.DeepEqual(got, want) {
			t.Errorf("with the target comparing:\n%q\nreading every row:\n%q", got, want)
		}
	}

	// Rows that hold what the images say do not come back.
	ctx := t.Context()
	conn, err := a.connect(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer closeConn(conn)
	tg := &target{a: a, conn: conn, tables: map[string]*pgTable{}, plans: map[*source.Table]*plan{}, reads: map[*pgTable]*ruleInfo{}}
	if err := tg.Begin(ctx, nil); err != nil {
		t.Fatal(err)
	}
	defer tg.Rollback()
	idx, _, _, err := tg.ReadDiffering(ctx, typesTable, stored, stored, []bool{false, true, false})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("rows returned for unchanged images: %v", idx)
	if len(idx) == len(stored) {
		t.Errorf("every row came back for images equal to the stored rows: %v", idx)
	}
}
