package mysql

import (
	"fmt"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/regiond/regiond/checkpoint"
	"github.com/regiond/regiond/internal/conflicttest"
	"github.com/regiond/regiond/internal/dbtest"
	"github.com/regiond/regiond/internal/testenv"
	"github.com/regiond/regiond/sink/batch"
	"github.com/regiond/regiond/source"
)

const pipelineName = "east->west"

var notes = &source.Table{
	Name:    "notes",
	Columns: []source.Column{{Name: "id"}, {Name: "body"}, {Name: "code"}},
	PK:      []int{0},
}

func note(id int64, body string) source.Row { return source.Row{id, body, []byte("ab")} }

// pos is a test position: the applier stores its text.
type pos string

func (p pos) String() string { return string(p) }

// TestInsertsOverPresentRowsAreRecorded: the rows the log says are absent
// go in as plain INSERTs; when one of them meets a present row, among new
// rows of the same statement, the row is overwritten, the conflict is
// recorded exactly as the locking read and comparison of every row
// (batch.CheckRemote) records it, and the statement's other rows are
// written all the same. Rows re-inserted after a delete in the same batch
// and rows inserted equal to what the target holds record nothing.
func TestInsertsOverPresentRowsAreRecorded(t *testing.T) {
	srv := testenv.MariaDB(t, 1)
	db := dbtest.Open(t, srv)
	dbtest.Exec(t, db,
		"CREATE TABLE notes (id BIGINT NOT NULL PRIMARY KEY, body VARCHAR(64) NOT NULL, code BINARY(4) NOT NULL)",
		// Present before the batch: 5 differs from its insert, 7 equals it,
		// 11 is deleted and inserted again, 20 is updated as the source saw it.
		"INSERT INTO notes VALUES (5, 'west', 'ab'), (7, 'same', 'ab'), (11, 'old', 'ab'), (20, 'before', 'ab')")
	rules := &batch.Rules{Pipeline: pipelineName, Origin: "east", Target: "west"}
	a := openApplier(t, Config{
		Pipeline: pipelineName, Source: "east", Target: "west", Conn: dbtest.Params(srv),
		Tables: []string{"notes"}, Rules: rules,
		StatementRows: 4, // several statements: the duplicate is in the second one
	}, "0-1-1")
	ctx := t.Context()

	ins := func(r source.Row) source.Change { return source.Change{Table: notes, Op: source.Insert, After: r} }
	var first, second []source.Change
	for id := int64(1); id <= 4; id++ {
		first = append(first, ins(note(id, "new")))
	}
	first = append(first, ins(note(5, "east")), ins(note(6, "new")), ins(note(7, "same")), ins(note(8, "new")))
	second = append(second,
		source.Change{Table: notes, Op: source.Delete, Before: note(11, "old")},
		ins(note(11, "again")),
		source.Change{Table: notes, Op: source.Update, Before: note(20, "before"), After: note(20, "after")},
		source.Change{Table: notes, Op: source.Delete, Before: note(30, "gone")}, // missing: recorded
		ins(note(9, "new")))
	for i := range first {
		first[i].TxnID = "0-1-2"
	}
	for i := range second {
		second[i].TxnID = "0-1-3"
	}

	// What the locking read of every row and the comparison in Go find.
	want := func() []string {
		w := beginWriter(t, a)
		defer w.Rollback() // its locks would hold up the applier below
		cs, err := batch.CheckRemote(ctx, w, rules, append(append([]source.Change(nil), first...), second...))
		if err != nil {
			t.Fatal(err)
		}
		var out []string
		for _, c := range cs {
			out = append(out, fmt.Sprintf("%s %s %s", source.KeyJSON(notes, c.Key), c.Position, c.Reason))
		}
		sort.Strings(out)
		return out
	}()
	if len(want) != 2 || !strings.Contains(strings.Join(want, "\n"), "insert from east met a row") {
		t.Fatalf("the check of every row finds %q; want the insert of 5 and the delete of 30: the test is broken", want)
	}

	in := make(chan source.Txn, 2)
	in <- source.Txn{Changes: first, End: pos("0-1-2"), Origin: "east"}
	in <- source.Txn{Changes: second, End: pos("0-1-3"), Origin: "east"}
	close(in)
	var stored []string
	if err := a.Apply(ctx, in, func(p checkpoint.Position, _ bool) { stored = append(stored, p.String()) }); err != nil {
		t.Fatalf("Apply: %v", err)
	}
	if diff := cmp.Diff([]string{"0-1-3"}, stored); diff != "" {
		t.Errorf("positions stored (-want +got):\n%s", diff)
	}

	var got []string
	rows, err := db.Query("SELECT pk, source_position, reason, COALESCE(kept_image, ''), COALESCE(lost_image, '') FROM regiond_conflicts WHERE rule = 'apply_remote'")
	if err != nil {
		t.Fatal(err)
	}
	for rows.Next() {
		var pk, p, reason, kept, lost string
		if err := rows.Scan(&pk, &p, &reason, &kept, &lost); err != nil {
			t.Fatal(err)
		}
		got = append(got, fmt.Sprintf("%s %s %s", pk, p, reason))
		if pk == "[5]" && (!strings.Contains(kept, `"body":"east"`) || !strings.Contains(lost, `"body":"west"`)) {
			t.Errorf("conflict on [5] keeps %s and loses %s; want east's row kept and west's lost", kept, lost)
		}
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	rows.Close()
	sort.Strings(got)
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("conflicts recorded (-as the check of every row finds them +got):\n%s", diff)
	}

	dump, err := dbtest.Dump(ctx, db, "notes")
	if err != nil {
		t.Fatal(err)
	}
	var wantRows []string
	for _, r := range []struct {
		id   int
		body string
	}{{1, "new"}, {2, "new"}, {3, "new"}, {4, "new"}, {5, "east"}, {6, "new"}, {7, "same"}, {8, "new"}, {9, "new"}, {11, "again"}, {20, "after"}} {
		wantRows = append(wantRows, fmt.Sprintf(`"%d"|%q|"ab\x00\x00"`, r.id, r.body))
	}
	if diff := cmp.Diff(wantRows, dump); diff != "" {
		t.Errorf("target rows (-want +got):\n%s", diff)
	}
}

// TestRecordedFindsTheSameConflict: see conflicttest.CheckRecorded.
func TestRecordedFindsTheSameConflict(t *testing.T) {
	srv := testenv.MariaDB(t, 1)
	db := dbtest.Open(t, srv)
	dbtest.Exec(t, db, "CREATE TABLE notes (id BIGINT NOT NULL PRIMARY KEY, body VARCHAR(64) NOT NULL, code BINARY(4) NOT NULL)")
	a := openApplier(t, Config{
		Pipeline: pipelineName, Source: "east", Target: "west", Conn: dbtest.Params(srv),
		Tables: []string{"notes"}, Rules: &batch.Rules{Pipeline: pipelineName, Origin: "east", Target: "west"},
	}, "0-1-1")
	ctx := t.Context()
	c := batch.Conflict{Pipeline: pipelineName, Table: notes, Key: note(1, ""), Rule: "home_region", Winner: "west", Loser: "east",
		Lost: note(1, "lost"), Reason: "test", Position: "0-1-10"}
	w := beginWriter(t, a)
	if err := w.Record(ctx, []batch.Conflict{c}); err != nil {
		t.Fatal(err)
	}
	if err := w.Commit(ctx, pos("0-1-10")); err != nil {
		t.Fatal(err)
	}
	w = beginWriter(t, a)
	conflicttest.CheckRecorded(t, func(p, r, pos string, since time.Time) (map[string]bool, error) {
		return w.Recorded(ctx, p, r, pos, since)
	}, c, note(2, ""))
}
