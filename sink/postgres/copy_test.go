package postgres

import (
	"fmt"
	"math"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/regiond/regiond/sink/batch"
	"github.com/regiond/regiond/source"
)

// TestPlanCopies: only rows whose key the changes show absent are COPYed
// (first change an insert, or previous change a delete), only rows whose
// key's first change is an update with a key-only before image are
// UPDATEd, and only the keys whose first change is among them leave the
// up-front check.
func TestPlanCopies(t *testing.T) {
	// Keys of one int64 column are indexed by value, others by their
	// bytes: both ways.
	for _, name := range []string{"int64", "text"} {
		t.Run(name, func(t *testing.T) {
			testPlanCopies(t, func(id int64) any {
				if name == "text" {
					return fmt.Sprint(id)
				}
				return id
			})
		})
	}
}

func testPlanCopies(t *testing.T, id func(int64) any) {
	r := func(n int64, s string) source.Row {
		row := typesRow(n, map[string]any{"s": s})
		row[0] = id(n)
		return row
	}
	keyOnly := &source.Table{Name: "k", Columns: typesTable.Columns, PK: typesTable.PK, KeyOnlyBefore: true}
	changes := []source.Change{
		ins(typesTable, r(1, "a")),            // first change an insert: COPY, checked on fallback
		upd(typesTable, r(2, "a"), r(2, "b")), // an update with a whole before image: upsert
		ins(typesTable, r(3, "a")),
		upd(typesTable, r(3, "a"), r(3, "b")), // collapsed with the insert: COPY of r(3, "b")
		del(typesTable, r(4, "a")),            // step 1 (delete)
		ins(typesTable, r(4, "b")),            // step 2: after a delete: COPY, no check
		ins(typesTable, r(5, "a")),            // first change an insert
		upd(typesTable, r(2, "b"), r(2, "c")), // written before: upsert
		upd(typesTable, r(6, "a"), r(7, "a")), // step 3 deletes 6, step 4 upserts 7 (first change an update)
		upd(keyOnly, r(20, ""), r(20, "b")),   // step 5: key-only before image: UPDATE, checked on fallback
		ins(keyOnly, r(21, "a")),
	}
	steps := batch.Plan(nil, changes)
	describe := func(fast map[int]*fastRows) []string {
		var out []string
		for i, st := range steps {
			f := fast[i]
			if f == nil {
				out = append(out, fmt.Sprintf("step %d: none", i))
				continue
			}
			list := func(rows []source.Row, checks []int32) string {
				var rs, cs []string
				for n, row := range rows {
					rs = append(rs, fmt.Sprintf("%v=%s", row[0], row[7]))
					if i := checks[n]; i >= 0 {
						c := changes[i]
						key := c.Before
						if c.Op == source.Insert {
							key = c.After
						}
						cs = append(cs, fmt.Sprint(key[0]))
					}
				}
				return fmt.Sprintf("%v check %v", rs, cs)
			}
			var rest []string
			for _, row := range f.rest {
				rest = append(rest, fmt.Sprint(row[0]))
			}
			out = append(out, fmt.Sprintf("step %d (delete %v): copy %s, update %s, rest %v", i, st.Segment.Delete,
				list(f.absent, f.absentChecks), list(f.present, f.presentChecks), rest))
		}
		return out
	}
	fast, keys := planCopies(nil, nil, changes, steps, 1, 10)
	want := []string{
		"step 0 (delete false): copy [1=a 3=b] check [1 3], update [] check [], rest [2]",
		"step 1: none",
		"step 2 (delete false): copy [4=b 5=a] check [5], update [] check [], rest [2]",
		"step 3: none",
		"step 4: none",
		"step 5 (delete false): copy [21=a] check [21], update [20=b] check [20], rest []",
	}
	if diff := cmp.Diff(want, describe(fast)); diff != "" {
		t.Errorf("planned fast paths (-want +got):\n%s", diff)
	}
	left := func(keys *keyStates) []string {
		var out []string
		for _, c := range withoutKeys(changes, keys) {
			key := c.Before
			if c.Op == source.Insert {
				key = c.After
			}
			out = append(out, fmt.Sprintf("%s %s %v", c.Op, c.Table.Name, key[0]))
		}
		return out
	}
	wantLeft := []string{"update types 2", "delete types 4", "insert types 4", "update types 2", "update types 6"}
	if diff := cmp.Diff(wantLeft, left(keys)); diff != "" {
		t.Errorf("changes left for the up-front check (-want +got):\n%s", diff)
	}

	// Below minRows nothing takes a fast path and everything is checked.
	// (keys reused, as a target reuses its own from batch to batch)
	fast, keys = planCopies(keys, nil, changes, steps, 3, 10)
	if len(fast) != 0 || len(withoutKeys(changes, keys)) != len(changes) {
		t.Errorf("minRows 3: planned %v, kept %d of %d changes", describe(fast), len(withoutKeys(changes, keys)), len(changes))
	}
	// No COPY left in the transaction: only the UPDATE.
	fast, keys = planCopies(keys, nil, changes, steps, 1, 0)
	want = []string{"step 0: none", "step 1: none", "step 2: none", "step 3: none", "step 4: none",
		"step 5 (delete false): copy [] check [], update [20=b] check [20], rest [21]"}
	if diff := cmp.Diff(want, describe(fast)); diff != "" {
		t.Errorf("max 0: planned fast paths (-want +got):\n%s", diff)
	}
	if got := left(keys); len(got) != len(changes)-1 {
		t.Errorf("max 0: changes left for the up-front check: %v, want all but the UPDATEd one", got)
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
	a := e.applier(t, Config{Rules: rules, FastRows: 1, LockTimeout: 5 * time.Second})
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

// TestUpdateFastPathMissingRow: updates whose before images carry only the
// key go by an UPDATE without the locking read; the one whose row is
// missing in the target is recorded as a conflict and inserted, the others
// are updated and not recorded.
func TestUpdateFastPathMissingRow(t *testing.T) {
	e := newEnv(t)
	rules := &batch.Rules{Pipeline: pipelineName, Origin: "east", Target: "west"}
	a := e.applier(t, Config{Rules: rules, FastRows: 1, LockTimeout: 5 * time.Second})
	e.exec(t, `INSERT INTO types (id, s) VALUES (1, 'old'), (3, 'old')`)
	keyOnly := &source.Table{Name: typesTable.Name, Columns: typesTable.Columns, PK: typesTable.PK, KeyOnlyBefore: true}
	key := func(id int64) source.Row { return typesRow(id, nil) }
	t1 := txn(100,
		upd(keyOnly, key(1), typesRow(1, map[string]any{"s": "new"})),
		upd(keyOnly, key(2), typesRow(2, map[string]any{"s": "new"})), // missing
		upd(keyOnly, key(3), typesRow(3, map[string]any{"s": "new", "i": int64(7)})),
		upd(keyOnly, key(1), typesRow(1, map[string]any{"s": "newer"})),
	)
	for i := range t1.Changes {
		t1.Changes[i].TxnID = "t1"
	}
	mustApply(t, a, t1)
	wantRows(t, e.dump(t, "types"), []string{
		`1|\N|\N|\N|\N|\N|\N|newer|\N|\N|\N|\N|\N|\N|\N|\N|\N`,
		`2|\N|\N|\N|\N|\N|\N|new|\N|\N|\N|\N|\N|\N|\N|\N|\N`,
		`3|7|\N|\N|\N|\N|\N|new|\N|\N|\N|\N|\N|\N|\N|\N|\N`,
	})
	var got []string
	rows, err := e.conn.Query(t.Context(), `SELECT pk, source_position, reason FROM regiond_conflicts ORDER BY id`)
	if err != nil {
		t.Fatal(err)
	}
	for rows.Next() {
		var pk, pos, reason string
		if err := rows.Scan(&pk, &pos, &reason); err != nil {
			t.Fatal(err)
		}
		got = append(got, pk+" "+pos+": "+reason)
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	want := []string{"[2] t1: update from east found no row in west"}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("conflicts (-want +got):\n%s", diff)
	}
}

// TestUpdateFastPathKeysOutOfOrder: the fast path's UPDATE gets its rows
// sorted by key (sortByKey); the rows it did not find are still the right
// ones, and their conflicts are recorded in the source's order.
func TestUpdateFastPathKeysOutOfOrder(t *testing.T) {
	e := newEnv(t)
	rules := &batch.Rules{Pipeline: pipelineName, Origin: "east", Target: "west"}
	a := e.applier(t, Config{Rules: rules, FastRows: 1, LockTimeout: 5 * time.Second})
	e.exec(t, `INSERT INTO types (id, s) VALUES (1, 'old'), (3, 'old'), (5, 'old')`)
	keyOnly := &source.Table{Name: typesTable.Name, Columns: typesTable.Columns, PK: typesTable.PK, KeyOnlyBefore: true}
	key := func(id int64) source.Row { return typesRow(id, nil) }
	t1 := txn(100,
		upd(keyOnly, key(5), typesRow(5, map[string]any{"s": "new5"})),
		upd(keyOnly, key(1), typesRow(1, map[string]any{"s": "new1"})),
		upd(keyOnly, key(4), typesRow(4, map[string]any{"s": "new4"})), // missing
		upd(keyOnly, key(2), typesRow(2, map[string]any{"s": "new2"})), // missing
		upd(keyOnly, key(3), typesRow(3, map[string]any{"s": "new3"})),
	)
	for i := range t1.Changes {
		t1.Changes[i].TxnID = "t1"
	}
	mustApply(t, a, t1)
	wantRows(t, e.dump(t, "types"), []string{
		`1|\N|\N|\N|\N|\N|\N|new1|\N|\N|\N|\N|\N|\N|\N|\N|\N`,
		`2|\N|\N|\N|\N|\N|\N|new2|\N|\N|\N|\N|\N|\N|\N|\N|\N`,
		`3|\N|\N|\N|\N|\N|\N|new3|\N|\N|\N|\N|\N|\N|\N|\N|\N`,
		`4|\N|\N|\N|\N|\N|\N|new4|\N|\N|\N|\N|\N|\N|\N|\N|\N`,
		`5|\N|\N|\N|\N|\N|\N|new5|\N|\N|\N|\N|\N|\N|\N|\N|\N`,
	})
	var got []string
	rows, err := e.conn.Query(t.Context(), `SELECT pk FROM regiond_conflicts ORDER BY id`)
	if err != nil {
		t.Fatal(err)
	}
	for rows.Next() {
		var pk string
		if err := rows.Scan(&pk); err != nil {
			t.Fatal(err)
		}
		got = append(got, pk)
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]string{"[4]", "[2]"}, got); diff != "" {
		t.Errorf("conflicts (-want +got):\n%s", diff)
	}
}

// BenchmarkPlanInserts: what Exec does before it writes a batch of 8192
// inserts of new rows (the bench's inserts part): the segments, the fast
// path's planning and the keys left to check.
func BenchmarkPlanInserts(b *testing.B) {
	table := &source.Table{Name: "bench", Columns: make([]source.Column, 6), PK: []int{0}, KeyOnlyBefore: true}
	changes := make([]source.Change, 8192)
	for i := range changes {
		changes[i] = source.Change{Table: table, Op: source.Insert, After: source.Row{int64(1000 + i), int64(i), "c", "pad", nil, source.DateTime("2026-11-27 14:00:00.123456")}}
	}
	b.ReportAllocs()
	var ks keyStates // reused, as a target does
	for range b.N {
		steps := batch.Plan(nil, changes)
		fast, keys := planCopies(&ks, nil, changes, steps, 32, copySavepoints)
		if len(withoutKeys(changes, keys)) != 0 || len(fast) != 1 {
			b.Fatal("not every row by COPY")
		}
	}
}

// TestBinaryCopyMatchesText: the insert fast path's binary COPY stores
// what its text COPY stores, over every type with a binary form and their
// edge values (type modifiers, rounding, a domain); values without a
// certain binary form make the COPY go as text.
func TestBinaryCopyMatchesText(t *testing.T) {
	e := newEnv(t, `CREATE DOMAIN small_pos AS integer CHECK (VALUE > 0)`,
		`CREATE TABLE bin (id bigint PRIMARY KEY, i2 smallint, i4 integer, i8 bigint, s text, vc varchar(10), ch char(5),
			b boolean, f4 real, f8 double precision, by bytea, d date, dt timestamp(6), dt0 timestamp(0), dt3 timestamp(3),
			ts timestamptz(6), dom small_pos)`)
	table := &source.Table{Name: "bin", Columns: columns("id", "i2", "i4", "i8", "s", "vc", "ch", "b", "f4", "f8", "by", "d", "dt", "dt0", "dt3", "ts", "dom"), PK: []int{0}}
	rows := []source.Row{
		{int64(1), nil, nil, nil, nil, nil, nil, nil, nil, nil, nil, nil, nil, nil, nil, nil, nil},
		{int64(2), int64(-32768), int64(math.MaxInt32), int64(math.MinInt64), "tab\there\\ \\N \n", "héllo wörl", "ab",
			true, float32(0.1), math.Copysign(0, -1), []byte{0, 1, 255}, source.Date("0001-01-01"),
			source.DateTime("1999-12-31 23:59:59.999999"), source.DateTime("2024-02-29 12:34:56.5"),
			source.DateTime("2024-02-29 12:34:56.123456"), source.Timestamp("9999-12-31 23:59:59.999999"), int64(5)},
		{int64(3), int64(32767), int64(math.MinInt32), uint64(42), int64(-7), "", "abcde",
			false, float32(-1e-40), math.Inf(1), "xyz", source.Date("2000-02-29"),
			source.DateTime("1970-01-01 00:00:00"), source.DateTime("1999-12-31 23:59:59.5"),
			source.DateTime("2000-01-01 00:00:00.0005"), source.Timestamp("2000-01-01 00:00:00.000001"), int64(math.MaxInt32)},
		{int64(4), nil, int64(0), int64(math.MaxInt64), "ünïcødé", "x", "a  ", true, float32(math.Inf(-1)), 1e308, []byte{},
			source.Date("1600-03-01"), source.DateTime("1900-02-28 23:00:00.1"), nil, nil, source.Timestamp("1969-07-20 20:17:40"), int64(1)},
	}
	// Each of these has no certain binary form: its COPY goes as text.
	textOnly := []source.Row{
		{int64(10), nil, nil, nil, nil, nil, nil, nil, nil, math.NaN(), nil, nil, nil, nil, nil, nil, nil},
		{int64(11), nil, nil, source.Decimal("12"), nil, nil, nil, nil, nil, nil, nil, nil, nil, nil, nil, nil, nil},
		{int64(12), nil, nil, nil, nil, nil, nil, nil, nil, nil, nil, nil, source.DateTime("2024-01-01 24:00:00"), nil, nil, nil, nil},
		{int64(13), nil, nil, nil, nil, nil, nil, nil, nil, nil, nil, nil, nil, nil, nil, source.DateTime("2024-01-01 10:00:00"), nil},
		{int64(14), nil, nil, nil, nil, nil, nil, true, nil, nil, nil, nil, nil, nil, nil, nil, nil}, // bool into integer
	}
	textOnly[4][2], textOnly[4][7] = true, nil
	changes := func(rows []source.Row) []source.Change {
		var out []source.Change
		for _, r := range rows {
			out = append(out, ins(table, r))
		}
		return out
	}
	var dumps [2][]string
	for n, textCopy := range []bool{true, false} {
		e.reset(t, "bin")
		a := e.applier(t, Config{Tables: []string{"bin"}, FastRows: 1, TextCopy: textCopy})
		mustApply(t, a, txn(100, changes(rows)...))
		for i, r := range textOnly {
			mustApply(t, a, txn(uint64(200+i), ins(table, r)))
		}
		dumps[n] = e.dump(t, "bin")
		wantBinary := int64(1)
		if textCopy {
			wantBinary = 0
		}
		if c, b := a.copies.Load(), a.binaryCopies.Load(); c != int64(1+len(textOnly)) || b != wantBinary {
			t.Errorf("TextCopy %v: %d COPYs, %d binary; want %d, %d", textCopy, c, b, 1+len(textOnly), wantBinary)
		}
	}
	if diff := cmp.Diff(dumps[0], dumps[1]); diff != "" {
		t.Errorf("binary COPY stored other rows than text COPY (-text +binary):\n%s", diff)
	}
	if len(dumps[0]) != len(rows)+len(textOnly) {
		t.Errorf("%d rows, want %d", len(dumps[0]), len(rows)+len(textOnly))
	}
	t.Logf("rows:\n%s", strings.Join(dumps[1], "\n"))
}

func TestParseDateTime(t *testing.T) {
	for _, s := range []string{"0001-01-01 00:00:00", "1969-12-31 23:59:59.999999", "2000-01-01 00:00:00", "2024-02-29 12:34:56.5", "9999-12-31 23:59:59.123"} {
		want, err := time.Parse("2006-01-02 15:04:05.999999", s)
		if err != nil {
			t.Fatal(err)
		}
		got, ok := parseDateTime(s)
		if wantUS := want.UnixMicro() - time.Date(2000, 1, 1, 0, 0, 0, 0, time.UTC).UnixMicro(); !ok || got != wantUS {
			t.Errorf("parseDateTime(%q) = %d, %v; want %d", s, got, ok, wantUS)
		}
	}
	for _, s := range []string{"0000-00-00 00:00:00", "2023-02-29 00:00:00", "2024-01-01 24:00:00", "2024-01-01 00:00:60", "2024-01-01 00:00:00.1234567", "10000-01-01 00:00:00", "2024-01-01 00:00:00.", "2024-1-01 00:00:00"} {
		if _, ok := parseDateTime(s); ok {
			t.Errorf("parseDateTime(%q) ok, want not", s)
		}
	}
}
