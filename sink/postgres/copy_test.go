package postgres

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/regiond/regiond/sink/batch"
	"github.com/regiond/regiond/source"
)

// TestPlanCopies: only rows whose key the changes show absent are COPYed
// (first change an insert, or previous change a delete), and only the keys
// whose first change is a COPYed insert leave the up-front check.
func TestPlanCopies(t *testing.T) {
	r := func(id int64, s string) source.Row { return typesRow(id, map[string]any{"s": s}) }
	changes := []source.Change{
		ins(typesTable, r(1, "a")),            // first change an insert: COPY, checked on fallback
		upd(typesTable, r(2, "a"), r(2, "b")), // an update: upsert
		ins(typesTable, r(3, "a")),
		upd(typesTable, r(3, "a"), r(3, "b")), // collapsed with the insert: COPY of r(3, "b")
		del(typesTable, r(4, "a")),            // segment 2 (delete)
		ins(typesTable, r(4, "b")),            // segment 3: after a delete: COPY, no check
		ins(typesTable, r(5, "a")),            // first change an insert
		upd(typesTable, r(2, "b"), r(2, "c")), // written before: upsert
		upd(typesTable, r(6, "a"), r(7, "a")), // segment 4 deletes 6, segment 5 upserts 7 (first change an update)
	}
	steps := batch.Plan(nil, changes)
	fast, keys := planCopies(nil, changes, steps, 1, 10)
	var got []string
	for i, st := range steps {
		f := fast[i]
		if f == nil {
			got = append(got, fmt.Sprintf("step %d: none", i))
			continue
		}
		var copied, checked, rest []string
		for n, row := range f.rows {
			copied = append(copied, fmt.Sprintf("%d=%s", row[0], row[7]))
			if f.checks[n].Table != nil {
				checked = append(checked, fmt.Sprint(f.checks[n].After[0]))
			}
		}
		for _, row := range f.rest {
			rest = append(rest, fmt.Sprint(row[0]))
		}
		got = append(got, fmt.Sprintf("step %d (delete %v): copy %v, check %v, rest %v", i, st.Segment.Delete, copied, checked, rest))
	}
	want := []string{
		"step 0 (delete false): copy [1=a 3=b], check [1 3], rest [2]",
		"step 1: none",
		"step 2 (delete false): copy [4=b 5=a], check [5], rest [2]",
		"step 3: none",
		"step 4: none",
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("planned copies (-want +got):\n%s", diff)
	}
	var left []string
	for _, c := range withoutKeys(changes, keys) {
		key := c.Before
		if c.Op == source.Insert {
			key = c.After
		}
		left = append(left, fmt.Sprintf("%s %v", c.Op, key[0]))
	}
	wantLeft := []string{"update 2", "delete 4", "insert 4", "update 2", "update 6"}
	if diff := cmp.Diff(wantLeft, left); diff != "" {
		t.Errorf("changes left for the up-front check (-want +got):\n%s", diff)
	}

	// Below minRows, or past max, nothing is COPYed and everything is checked.
	for _, c := range []struct{ min, max int }{{3, 10}, {1, 0}} {
		fast, keys := planCopies(nil, changes, steps, c.min, c.max)
		if len(fast) != 0 || len(withoutKeys(changes, keys)) != len(changes) {
			t.Errorf("min %d, max %d: planned %d copies, kept %d of %d changes", c.min, c.max, len(fast), len(withoutKeys(changes, keys)), len(changes))
		}
	}
}

// TestInsertFastPathMeetsRow: a batch of inserts whose keys the log says
// are absent, one of which meets a different row in the target and one an
// equal row. The COPY fails, the rows take the checked path: the differing
// row is recorded as a conflict and overwritten, the equal one is not
// recorded, the new rows are written. A key deleted earlier in the batch
// and inserted again goes by COPY, unchecked.
func TestInsertFastPathMeetsRow(t *testing.T) {
	e := newEnv(t)
	rules := &batch.Rules{Pipeline: pipelineName, Origin: "east", Target: "west"}
	a := e.applier(t, Config{Rules: rules, CopyRows: 1, LockTimeout: 5 * time.Second})
	// What the target region wrote itself.
	e.exec(t, `INSERT INTO types (id, s) VALUES (2, 'west'), (4, 'same')`)

	tricky := "tab\there\nnew line\r\\N \\. back\\slash"
	t1 := txn(100,
		ins(typesTable, typesRow(1, map[string]any{"s": tricky})),
		ins(typesTable, typesRow(2, map[string]any{"s": "east"})),
		ins(typesTable, typesRow(3, full)),
		ins(typesTable, typesRow(4, map[string]any{"s": "same"})),
	)
	t2 := txn(200,
		del(typesTable, typesRow(3, full)),
		ins(typesTable, typesRow(3, map[string]any{"s": "again"})),
	)
	for i := range t1.Changes {
		t1.Changes[i].TxnID = "t1"
	}
	mustApply(t, a, t1, t2)

	wantRows(t, e.dump(t, "types"), []string{
		`1|\N|\N|\N|\N|\N|\N|` + tricky + `|\N|\N|\N|\N|\N|\N|\N|\N|\N`,
		`2|\N|\N|\N|\N|\N|\N|east|\N|\N|\N|\N|\N|\N|\N|\N|\N`,
		`3|\N|\N|\N|\N|\N|\N|again|\N|\N|\N|\N|\N|\N|\N|\N|\N`,
		`4|\N|\N|\N|\N|\N|\N|same|\N|\N|\N|\N|\N|\N|\N|\N|\N`,
	})
	rows, err := e.conn.Query(t.Context(), `SELECT pk, reason, kept_image, lost_image, source_position FROM regiond_conflicts ORDER BY id`)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for rows.Next() {
		var pk, reason, kept, lost, pos string
		if err := rows.Scan(&pk, &reason, &kept, &lost, &pos); err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(kept, `"s":"east"`) || !strings.Contains(lost, `"s":"west"`) {
			t.Errorf("conflict on %s keeps %s and loses %s; want east's row kept, west's lost", pk, kept, lost)
		}
		got = append(got, pk+" "+pos+": "+reason)
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	want := []string{"[2] t1: insert from east met a row in west that differs in column s; it was overwritten"}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("conflicts (-want +got):\n%s", diff)
	}
	if c, f := a.copies.Load(), a.copyFallbacks.Load(); c != 2 || f != 1 {
		t.Errorf("%d COPYs, %d fell back; want 2 (t1's inserts, t2's insert after the delete), 1 (t1's)", c, f)
	}

	// New keys only: COPYed, nothing recorded.
	mustApply(t, a, txn(300, ins(typesTable, typesRow(5, nil)), ins(typesTable, typesRow(6, nil))))
	if c, f := a.copies.Load(), a.copyFallbacks.Load(); c != 3 || f != 1 {
		t.Errorf("after new keys: %d COPYs, %d fell back; want 3, 1", c, f)
	}
	var n int
	if err := e.conn.QueryRow(t.Context(), `SELECT count(*) FROM types WHERE id IN (5, 6)`).Scan(&n); err != nil || n != 2 {
		t.Errorf("new keys: %d rows (%v), want 2", n, err)
	}
}
