package mysql

import (
	"fmt"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/regiond/regiond/internal/dbtest"
	"github.com/regiond/regiond/internal/testenv"
	"github.com/regiond/regiond/sink/batch"
	"github.com/regiond/regiond/source"
)

// readRowsOnly hides the writer's ReadDiffering: batch.CheckRemote then
// reads and compares every row itself.
type readRowsOnly struct{ batch.RemoteTarget }

// TestReadDifferingDecidesAsReadRows: the apply_remote check through the
// writer's ReadDiffering records exactly the conflicts it records through
// ReadRows, for rows of every type: before images equal to the stored row,
// differing in each one column, for keys with no row, and inserts over
// present rows. For a table of the kinds it compares as text, it leaves
// out the rows equal to their images.
func TestReadDifferingDecidesAsReadRows(t *testing.T) {
	srv := testenv.MariaDB(t, 1)
	db := dbtest.Open(t, srv)
	dbtest.Exec(t, db, "DROP TABLE IF EXISTS typed, plain, regiond_checkpoints", "CREATE TABLE typed"+typesTable,
		"CREATE TABLE plain (id BIGINT NOT NULL PRIMARY KEY, k INT NOT NULL, u INT UNSIGNED, c VARCHAR(120) NOT NULL, pad CHAR(60) NOT NULL,"+
			" b VARBINARY(20), dec1 DECIMAL(10,2), ts DATETIME(6) NULL, dt DATE, js JSON)")
	ctx := t.Context()
	a := loadApplier(t, srv, "east->west", []string{"typed", "plain"}, true)
	typed := typesSourceTable("typed")
	rows := typesRows()
	if err := applyInserts(ctx, a, typed, rows); err != nil {
		t.Fatal(err)
	}
	plain := &source.Table{Name: "plain", PK: []int{0}}
	for _, c := range []string{"id", "k", "u", "c", "pad", "b", "dec1", "ts", "dt", "js"} {
		plain.Columns = append(plain.Columns, source.Column{Name: c})
	}
	plainRows := []source.Row{
		{int64(1), int64(-7), uint64(7), "héllo 😀", "pad", []byte{0, 1}, source.Decimal("12.50"), source.DateTime("2024-01-02 03:04:05.000006"), source.Date("2024-01-02"), `{"a": 1}`}, // MariaDB's JSON is LONGTEXT
		{int64(2), int64(0), nil, "", "", nil, nil, nil, nil, nil},
	}
	if err := applyInserts(ctx, a, plain, plainRows); err != nil {
		t.Fatal(err)
	}

	w, err := a.newWriter(ctx, "")
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	rules := a.cfg.Rules
	// check returns the conflicts of changes through both ways, as text.
	check := func(t *testing.T, changes []source.Change) (filtered, all []string) {
		t.Helper()
		for _, rt := range []batch.RemoteTarget{w, readRowsOnly{w}} {
			if err := w.Begin(ctx, nil); err != nil {
				t.Fatal(err)
			}
			cs, err := batch.CheckRemote(ctx, rt, rules, changes)
			w.Rollback()
			if err != nil {
				t.Fatal(err)
			}
			var out []string
			for _, c := range cs {
				out = append(out, fmt.Sprintf("%s %s: %s", c.Table.Name, source.KeyJSON(c.Table, c.Key), c.Reason))
			}
			if filtered == nil {
				filtered, out = out, nil
				if filtered == nil {
					filtered = []string{}
				}
				continue
			}
			all = out
		}
		if all == nil {
			all = []string{}
		}
		return filtered, all
	}
	update := func(tbl *source.Table, before source.Row) source.Change {
		return source.Change{Table: tbl, Op: source.Update, Before: before, After: before, TxnID: "0-1-9"}
	}
	for _, x := range []struct {
		tbl  *source.Table
		rows []source.Row
	}{{typed, rows}, {plain, plainRows}} {
		// Equal images, keys with no row, inserts over the rows.
		var changes []source.Change
		for _, r := range x.rows {
			changes = append(changes, update(x.tbl, r))
		}
		missing := append(source.Row{int64(99)}, x.rows[0][1:]...)
		changes = append(changes, update(x.tbl, missing),
			source.Change{Table: x.tbl, Op: source.Delete, Before: append(source.Row{int64(98)}, x.rows[0][1:]...), TxnID: "0-1-9"})
		got, want := check(t, changes)
		if diff := cmp.Diff(want, got); diff != "" {
			t.Errorf("%s, equal images: conflicts (-ReadRows +ReadDiffering):\n%s", x.tbl.Name, diff)
		}
		if x.tbl == plain && len(want) != 2 {
			t.Errorf("%s, equal images: %d conflicts %q; want the 2 missing keys", x.tbl.Name, len(want), want)
		}
		var inserts []source.Change
		for i, r := range x.rows {
			other := append(source.Row{}, x.rows[(i+1)%len(x.rows)]...)
			other[0] = r[0]
			after := r
			if i%2 == 1 {
				after = other
			}
			inserts = append(inserts, source.Change{Table: x.tbl, Op: source.Insert, After: after, TxnID: "0-1-9"})
		}
		inserts = append(inserts, source.Change{Table: x.tbl, Op: source.Insert, After: missing, TxnID: "0-1-9"})
		got, want = check(t, inserts)
		if diff := cmp.Diff(want, got); diff != "" {
			t.Errorf("%s, inserts: conflicts (-ReadRows +ReadDiffering):\n%s", x.tbl.Name, diff)
		}
		// Images differing in one column, for each column.
		for j := 1; j < len(x.tbl.Columns); j++ {
			changes = changes[:0]
			for i, r := range x.rows {
				before := append(source.Row{}, r...)
				before[j] = x.rows[(i+1)%len(x.rows)][j]
				if before[j] == nil {
					before[j] = x.rows[0][j]
				}
				if r[j] == nil && before[j] == nil {
					before[j] = int64(1)
				}
				changes = append(changes, update(x.tbl, before))
			}
			got, want := check(t, changes)
			if diff := cmp.Diff(want, got); diff != "" {
				t.Errorf("%s, column %s differs: conflicts (-ReadRows +ReadDiffering):\n%s", x.tbl.Name, x.tbl.Columns[j].Name, diff)
			}
		}
	}

	// The plain table's equal rows are left out, unconverted.
	if err := w.Begin(ctx, nil); err != nil {
		t.Fatal(err)
	}
	defer w.Rollback()
	idx, found, _, err := w.ReadDiffering(ctx, plain, plainRows, plainRows, make([]bool, len(plainRows)))
	if err != nil {
		t.Fatal(err)
	}
	if len(idx) != 0 || len(found) != 0 {
		t.Errorf("ReadDiffering of rows equal to their images returned %v %v; want none", idx, found)
	}
}
