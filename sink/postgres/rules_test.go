package postgres

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"math"
	"strings"
	"testing"
	"time"

	"github.com/regiond/regiond/conflict"
	"github.com/regiond/regiond/internal/conflicttest"
	"github.com/regiond/regiond/internal/pgconn"
	"github.com/regiond/regiond/pipeline"
	"github.com/regiond/regiond/sink/batch"
	"github.com/regiond/regiond/source"
)

const profilesDDL = "CREATE TABLE profiles (id bigint PRIMARY KEY, name text NOT NULL, region text NOT NULL, v bigint NOT NULL)"

var profiles = &source.Table{Name: "profiles", Columns: columns("id", "name", "region", "v"), PK: []int{0}}

func prow(id int64, name, region string, v int64) source.Row {
	return source.Row{id, name, region, v}
}

// lwwRules puts profiles (version v) and types (version i) under
// last_writer_wins, for the pipeline east->west (or west's local one).
func lwwRules(local bool) *batch.Rules {
	r := &batch.Rules{
		Tables: map[string]batch.Rule{
			"profiles": {Name: "last_writer_wins", VersionColumn: "v"},
			"types":    {Name: "last_writer_wins", VersionColumn: "i"},
			"uniq":     {Name: "last_writer_wins", VersionColumn: "v"},
		},
		Pipeline: pipelineName, Origin: "east", Target: "west",
	}
	if local {
		r.Pipeline, r.Origin, r.Local = "west->west", "west", true
	}
	return r
}

func (e *env) lwwApplier(t *testing.T, local bool, tables ...string) *Applier {
	t.Helper()
	if len(tables) == 0 {
		tables = []string{"profiles"}
	}
	return e.applier(t, Config{Tables: tables, Rules: lwwRules(local), LockTimeout: 5 * time.Second})
}

func withTxn(c source.Change, id string) source.Change {
	c.TxnID = id
	return c
}

// tombstones lists regiond_tombstones as "table pk version origin".
func (e *env) tombstones(t *testing.T) []string {
	t.Helper()
	rows, err := e.conn.Query(t.Context(), "SELECT table_name || ' ' || pk || ' ' || version || ' ' || origin FROM regiond_tombstones ORDER BY table_name, pk")
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var s string
		if err := rows.Scan(&s); err != nil {
			t.Fatal(err)
		}
		out = append(out, s)
	}
	return out
}

type conflictRow struct {
	Pipeline, Table, PK, Rule, Winner, Loser string
	Kept, Lost                               *string
	Reason, Position                         string
}

func (e *env) conflicts(t *testing.T) []conflictRow {
	t.Helper()
	rows, err := e.conn.Query(t.Context(), `SELECT pipeline, table_name, pk, rule, winner_region, loser_region, kept_image, lost_image, reason, source_position
		FROM regiond_conflicts ORDER BY id`)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var out []conflictRow
	for rows.Next() {
		var c conflictRow
		if err := rows.Scan(&c.Pipeline, &c.Table, &c.PK, &c.Rule, &c.Winner, &c.Loser, &c.Kept, &c.Lost, &c.Reason, &c.Position); err != nil {
			t.Fatal(err)
		}
		out = append(out, c)
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

// sameJSON compares JSON texts by value.
func sameJSON(t *testing.T, what string, got *string, want string) {
	t.Helper()
	if got == nil {
		t.Errorf("%s is NULL, want %s", what, want)
		return
	}
	var g, w any
	if err := json.Unmarshal([]byte(*got), &g); err != nil {
		t.Errorf("%s %q: %v", what, *got, err)
		return
	}
	if err := json.Unmarshal([]byte(want), &w); err != nil {
		t.Fatal(err)
	}
	gb, _ := json.Marshal(g)
	wb, _ := json.Marshal(w)
	if string(gb) != string(wb) {
		t.Errorf("%s = %s, want %s", what, *got, want)
	}
}

func TestOpenCreatesRegiondTables(t *testing.T) {
	e := newEnv(t, profilesDDL)
	e.lwwApplier(t, false)
	var n int
	if err := e.conn.QueryRow(t.Context(), `SELECT count(*) FROM pg_indexes WHERE tablename IN ('regiond_tombstones', 'regiond_conflicts')`).Scan(&n); err != nil {
		t.Fatal(err)
	}
	// Two primary keys, deleted_at, detected_at, (table_name, detected_at).
	if n != 5 {
		t.Errorf("%d indexes on regiond_tombstones and regiond_conflicts, want 5", n)
	}
	// A second Open asks, and creates nothing.
	var before int64
	if err := e.conn.QueryRow(t.Context(), "SELECT count(*) FROM pg_class").Scan(&before); err != nil {
		t.Fatal(err)
	}
	e.lwwApplier(t, false)
	var after int64
	if err := e.conn.QueryRow(t.Context(), "SELECT count(*) FROM pg_class").Scan(&after); err != nil {
		t.Fatal(err)
	}
	if after != before {
		t.Errorf("the second Open changed the catalog: %d relations, then %d", before, after)
	}
}

func TestLastWriterWinsNewerWinsOlderIsRecorded(t *testing.T) {
	e := newEnv(t, profilesDDL)
	a := e.lwwApplier(t, false)
	e.exec(t, "INSERT INTO profiles VALUES (1, 'local', 'west', 5)")

	// Older than the target's row: discarded, recorded with both images.
	mustApply(t, a, txn(10, withTxn(ins(profiles, prow(1, "remote old", "east", 3)), "east:10")))
	wantRows(t, e.dump(t, "profiles"), []string{"1|local|west|5"})
	cs := e.conflicts(t)
	if len(cs) != 1 {
		t.Fatalf("conflicts = %+v, want 1", cs)
	}
	c := cs[0]
	if c.Pipeline != pipelineName || c.Table != "profiles" || c.PK != "[1]" || c.Rule != "last_writer_wins" ||
		c.Winner != "west" || c.Loser != "east" || c.Position != "east:10" || !strings.Contains(c.Reason, "3") {
		t.Errorf("conflict = %+v", c)
	}
	sameJSON(t, "kept_image", c.Kept, `{"id":1,"name":"local","region":"west","v":5}`)
	sameJSON(t, "lost_image", c.Lost, `{"id":1,"name":"remote old","region":"east","v":3}`)

	// Newer: applied, over an update and an insert of a new key.
	mustApply(t, a, txn(20,
		upd(profiles, prow(1, "remote old", "east", 3), prow(1, "remote new", "east", 7)),
		ins(profiles, prow(2, "fresh", "east", 1))))
	wantRows(t, e.dump(t, "profiles"), []string{"1|remote new|east|7", "2|fresh|east|1"})
	if n := len(e.conflicts(t)); n != 1 {
		t.Errorf("%d conflicts, want still 1", n)
	}

	// Several versions of a key in one batch: decided one after the other.
	mustApply(t, a, txn(30,
		upd(profiles, prow(2, "fresh", "east", 1), prow(2, "v4", "east", 4)),
		upd(profiles, prow(2, "v4", "east", 4), prow(2, "v2", "east", 2)),
		upd(profiles, prow(2, "v4", "east", 4), prow(2, "v6", "east", 6))))
	wantRows(t, e.dump(t, "profiles"), []string{"1|remote new|east|7", "2|v6|east|6"})
	if n := len(e.conflicts(t)); n != 2 {
		t.Errorf("%d conflicts, want 2", n)
	}
}

func TestLastWriterWinsTieBrokenByRowHash(t *testing.T) {
	e := newEnv(t, profilesDDL)
	a := e.lwwApplier(t, false)
	x, y := prow(1, "from east", "east", 10), prow(1, "from west", "west", 10)
	win, lose := x, y
	if conflict.RowHash(profiles, y).Compare(conflict.RowHash(profiles, x)) > 0 {
		win, lose = y, x
	}
	want := []string{dumpProfile(win)}
	for _, order := range [][2]source.Row{{x, y}, {y, x}} {
		e.exec(t, "TRUNCATE profiles, regiond_conflicts")
		mustApply(t, a, txn(10, ins(profiles, order[0])), txn(20, upd(profiles, order[0], order[1])))
		wantRows(t, e.dump(t, "profiles"), want)
		// The second write is recorded when it loses; when it wins, it
		// replaces the first (which had won against nothing).
		cs := e.conflicts(t)
		if dumpProfile(order[1]) == dumpProfile(lose) {
			if len(cs) != 1 {
				t.Fatalf("conflicts = %+v, want 1", cs)
			}
			sameJSON(t, "lost_image", cs[0].Lost, string(source.RowJSON(profiles, lose)))
			sameJSON(t, "kept_image", cs[0].Kept, string(source.RowJSON(profiles, win)))
		} else if len(cs) != 0 {
			t.Fatalf("conflicts = %+v, want none", cs)
		}
	}
}

func dumpProfile(r source.Row) string {
	s := make([]string, len(r))
	for i, v := range r {
		s[i], _ = source.Text(v)
	}
	return strings.Join(s, "|")
}

func TestLastWriterWinsTombstones(t *testing.T) {
	e := newEnv(t, profilesDDL)
	a := e.lwwApplier(t, false)
	r1, r2 := prow(1, "one", "east", 1), prow(1, "two", "east", 2)
	mustApply(t, a, txn(10, ins(profiles, r1)), txn(20, upd(profiles, r1, r2)), txn(30, del(profiles, r2)))
	wantRows(t, e.dump(t, "profiles"), nil)
	wantRows(t, e.tombstones(t), []string{"profiles [1] i:2 east"})

	// An older write arriving late does not bring the row back.
	mustApply(t, a, txn(40, withTxn(upd(profiles, r1, prow(1, "late", "east", 1)), "late")))
	wantRows(t, e.dump(t, "profiles"), nil)
	cs := e.conflicts(t)
	if len(cs) != 1 || cs[0].Kept != nil || cs[0].Position != "late" {
		t.Fatalf("conflicts = %+v, want the late write, kept NULL", cs)
	}
	// At the delete's own version, an update loses to the delete only when
	// its image hashes lower; a newer one wins and drops the tombstone.
	mustApply(t, a, txn(50, ins(profiles, prow(1, "back", "east", 3))))
	wantRows(t, e.dump(t, "profiles"), []string{"1|back|east|3"})
	wantRows(t, e.tombstones(t), nil)

	// A delete of a key the target does not hold still leaves a tombstone.
	mustApply(t, a, txn(60, del(profiles, prow(2, "elsewhere", "east", 9))))
	wantRows(t, e.tombstones(t), []string{"profiles [2] i:9 east"})
	mustApply(t, a, txn(70, ins(profiles, prow(2, "older", "east", 8))))
	wantRows(t, e.dump(t, "profiles"), []string{"1|back|east|3"})

	// A delete's before image must carry the version.
	_, err := apply(t.Context(), a, txn(80, del(profiles, source.Row{int64(1), nil, nil, nil})))
	if err == nil || !pipeline.IsPermanent(err) || !strings.Contains(err.Error(), "REPLICA IDENTITY FULL") {
		t.Errorf("delete without version: %v, want a permanent error naming REPLICA IDENTITY FULL", err)
	}
}

func TestLastWriterWinsLocalPipelineWritesTombstones(t *testing.T) {
	e := newEnv(t, profilesDDL)
	local := e.lwwApplier(t, true)
	remote := e.lwwApplier(t, false)
	// West deleted its row at version 4 itself; its local pipeline reads
	// the delete from west's log and leaves the tombstone. Its other
	// changes are applied already and are not touched.
	e.exec(t, "INSERT INTO profiles VALUES (2, 'mine', 'west', 1)")
	mustApply(t, local, txn(10,
		ins(profiles, prow(2, "mine", "west", 1)),
		upd(profiles, prow(2, "mine", "west", 1), prow(2, "changed", "west", 2)),
		del(profiles, prow(1, "gone", "west", 4))))
	wantRows(t, e.tombstones(t), []string{"profiles [1] i:4 west"})
	wantRows(t, e.dump(t, "profiles"), []string{"2|mine|west|1"})
	if n := len(e.conflicts(t)); n != 0 {
		t.Errorf("local pipeline recorded %d conflicts", n)
	}
	// East's older update of the deleted row arrives: no resurrection.
	mustApply(t, remote, txn(20, upd(profiles, prow(1, "x", "east", 2), prow(1, "y", "east", 3))))
	wantRows(t, e.dump(t, "profiles"), []string{"2|mine|west|1"})
}

// lwwStream is a history of inserts, updates, deletes and re-inserts of
// last_writer_wins rows, in increasing versions per key.
func lwwStream() []source.Txn {
	return []source.Txn{
		txn(10, ins(profiles, prow(1, "a", "east", 1)), ins(profiles, prow(2, "b", "east", 1)), ins(profiles, prow(3, "c", "east", 1))),
		txn(20, upd(profiles, prow(1, "a", "east", 1), prow(1, "a2", "east", 2)), del(profiles, prow(2, "b", "east", 1))),
		txn(30, del(profiles, prow(3, "c", "east", 1)), ins(profiles, prow(3, "c again", "east", 5))),
		txn(40, upd(profiles, prow(1, "a2", "east", 2), prow(4, "a moved", "east", 3))),
	}
}

func TestLastWriterWinsReplayIsNoOp(t *testing.T) {
	e := newEnv(t, profilesDDL)
	a := e.lwwApplier(t, false)
	for _, bc := range []int{1, 8192} {
		e.exec(t, "TRUNCATE profiles, regiond_tombstones, regiond_conflicts")
		a.cfg.BatchChanges = bc
		mustApply(t, a, lwwStream()...)
		wantRows(t, e.dump(t, "profiles"), []string{"3|c again|east|5", "4|a moved|east|3"})
		wantRows(t, e.tombstones(t), []string{"profiles [1] i:2 east", "profiles [2] i:1 east"})
		if cs := e.conflicts(t); len(cs) != 0 {
			t.Fatalf("conflicts in a history without concurrent writes: %+v", cs)
		}
		state := func() []string {
			var out []string
			for _, q := range []string{
				"SELECT id::text || ' ' || xmin::text FROM profiles ORDER BY id",
				"SELECT pk || ' ' || xmin::text FROM regiond_tombstones ORDER BY pk",
			} {
				rows, err := e.conn.Query(t.Context(), q)
				if err != nil {
					t.Fatal(err)
				}
				for rows.Next() {
					var s string
					if err := rows.Scan(&s); err != nil {
						t.Fatal(err)
					}
					out = append(out, s)
				}
				rows.Close()
			}
			return out
		}
		before := state()
		// The last transaction again, then the whole stream: nothing is
		// written (the same rows versions, by xmin); changes superseded
		// since lose again to the newer state (and are recorded again: a
		// pipeline never replays a committed transaction, whose records
		// commit with its checkpoint).
		mustApply(t, a, lwwStream()[3:]...)
		wantRows(t, state(), before)
		if cs := e.conflicts(t); len(cs) != 0 {
			t.Errorf("replaying the last transaction recorded conflicts: %+v", cs)
		}
		mustApply(t, a, lwwStream()...)
		wantRows(t, state(), before)
		wantRows(t, e.tombstones(t), []string{"profiles [1] i:2 east", "profiles [2] i:1 east"})
	}
}

// lockRows runs the applier's locking read of keys in a transaction that is
// rolled back.
func lockRows(t *testing.T, a *Applier, st *source.Table, keys ...source.Row) []batch.Current {
	t.Helper()
	ctx := t.Context()
	conn, err := a.connect(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer closeConn(conn)
	if err := a.setupSession(ctx, conn); err != nil {
		t.Fatal(err)
	}
	tg := &target{a: a, conn: conn, tables: map[string]*pgTable{}, plans: map[*source.Table]*plan{}, reads: map[*pgTable]*ruleInfo{}}
	if err := tg.Begin(ctx, nil); err != nil {
		t.Fatal(err)
	}
	defer tg.Rollback()
	cur, err := tg.Lock(ctx, st, keys)
	if err != nil {
		t.Fatalf("Lock: %v", err)
	}
	return cur
}

func TestLockReadHashesAsTheWrittenImage(t *testing.T) {
	e := newEnv(t, `CREATE DOMAIN stamp AS timestamp(6)`, `CREATE DOMAIN stamp2 AS stamp`,
		`CREATE TABLE dom (id integer PRIMARY KEY, v bigint, at stamp2, c character(6), small smallint, num numeric)`)
	a := e.lwwApplier(t, false, "types", "dom")
	rows := []source.Row{
		typesRow(1, full),
		typesRow(2, map[string]any{
			"i": int64(0), "u": source.Decimal("0"), "b": false, "f4": float32(-0.5), "f8": math.Inf(1),
			"dec": source.Decimal("1.5"), "s": "", "bin": []byte{}, "d": source.Date("0001-01-01"),
			"dt": source.DateTime("2024-01-01 00:00:00"), "ts": source.Timestamp("1999-12-31 23:59:59.5"),
			"tm": source.Time("00:00:00"), "j": source.JSON(`[]`), "bits": source.Bits("111111111111"), "flag": false,
		}),
		typesRow(3, map[string]any{
			"i": int64(math.MaxInt64), "u": source.Decimal("18446744073709551615"), "b": true, "f4": float32(math.MaxFloat32),
			"f8": -1.0 / 3, "dec": source.Decimal("-99999999.9999"), "s": "😀\ttab\nnewline", "bin": []byte("bin\x00ary"),
			"d": source.Date("9999-12-31"), "dt": source.DateTime("9999-12-31 23:59:59.999999"),
			"ts": source.Timestamp("2038-01-19 03:14:07.000001"), "tm": source.Time("12:34:56.7"),
			"j": source.JSON(`{"z": {"y": [true, null, 1.5]}, "a": "é"}`), "bits": source.Bits("000000000101"), "flag": int64(0),
		}),
		typesRow(4, map[string]any{"i": int64(1)}), // NULLs everywhere else
	}
	dom := &source.Table{Name: "dom", Columns: columns("id", "v", "at", "c", "small", "num"), PK: []int{0}}
	domRow := source.Row{int64(7), int64(1), source.DateTime("2024-05-06 07:08:09.1"), "ab    ", int64(-3), source.Decimal("10.50")}

	var txns []source.Txn
	for i, r := range rows {
		txns = append(txns, txn(uint64(10*(i+1)), ins(typesTable, r)))
	}
	txns = append(txns, txn(100, ins(dom, domRow)))
	mustApply(t, a, txns...)

	check := func(st *source.Table, written []source.Row) {
		t.Helper()
		keys := make([]source.Row, len(written))
		copy(keys, written)
		cur := lockRows(t, a, st, keys...)
		for i, w := range written {
			got := cur[i].Row
			if got == nil {
				t.Errorf("%s row %s: not found", st.Name, st.FormatKey(w))
				continue
			}
			if conflict.RowHash(st, got) == conflict.RowHash(st, w) {
				continue
			}
			for c := range st.Columns {
				gs, gok := conflict.Normalize(got[c])
				ws, wok := conflict.Normalize(w[c])
				if gs != ws || gok != wok {
					t.Errorf("%s row %s column %s: read back %#v (%q), written %#v (%q)", st.Name, st.FormatKey(w), st.Columns[c].Name, got[c], gs, w[c], ws)
				}
			}
		}
	}
	check(typesTable, rows)
	check(dom, []source.Row{domRow})

	// Values come back as the log reader makes them: a domain over a
	// domain over timestamp(6) as a DateTime (unpadded: the reader pads
	// only columns of the built-in types that declare a precision),
	// character(n) padded (a cast to text would trim it).
	cur := lockRows(t, a, dom, domRow)
	if got := cur[0].Row; got[2] != source.DateTime("2024-05-06 07:08:09.1") || got[3] != "ab    " {
		t.Errorf("dom row read back as %#v", got)
	}
	if cur := lockRows(t, a, typesTable, typesRow(1, nil), typesRow(99, nil)); cur[1].Row != nil || cur[0].Row == nil {
		t.Errorf("Lock of a present and an absent key: %+v", cur)
	}

	// So the same image again is the same state: nothing is written,
	// nothing recorded.
	var xmin string
	if err := e.conn.QueryRow(t.Context(), "SELECT string_agg(xmin::text, ',' ORDER BY id) FROM types").Scan(&xmin); err != nil {
		t.Fatal(err)
	}
	mustApply(t, a, txns...)
	var again string
	if err := e.conn.QueryRow(t.Context(), "SELECT string_agg(xmin::text, ',' ORDER BY id) FROM types").Scan(&again); err != nil {
		t.Fatal(err)
	}
	if again != xmin {
		t.Errorf("re-applying the same images rewrote rows (xmin %s, then %s)", xmin, again)
	}
	if cs := e.conflicts(t); len(cs) != 0 {
		t.Errorf("re-applying the same images recorded conflicts: %+v", cs)
	}
}

func TestGuardedInsertRetriesWhenARowAppears(t *testing.T) {
	e := newEnv(t, profilesDDL)
	a := e.lwwApplier(t, false)
	ctx := t.Context()
	other, err := pgconn.Connect(ctx, e.srv.URL("app"))
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close(context.Background())
	watch, err := pgconn.Connect(ctx, e.srv.URL("app"))
	if err != nil {
		t.Fatal(err)
	}
	defer watch.Close(context.Background())

	// A local transaction inserts key 1, not yet committed: the applier's
	// locking read sees no row, its INSERT waits for the local one, which
	// then commits: a unique violation, the batch is retried and finds the
	// (newer) local row.
	tx, err := other.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback(context.Background())
	if _, err := tx.Exec(ctx, "INSERT INTO profiles VALUES (1, 'local', 'west', 5)"); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() {
		_, err := apply(ctx, a, txn(10, ins(profiles, prow(1, "remote", "east", 3))))
		done <- err
	}()
	waitFor(t, func() bool {
		var n int
		err := watch.QueryRow(ctx, `SELECT count(*) FROM pg_stat_activity WHERE application_name = 'regiond' AND wait_event_type = 'Lock'`).Scan(&n)
		return err == nil && n > 0
	})
	if err := tx.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Fatalf("Apply: %v", err)
	}
	wantRows(t, e.dump(t, "profiles"), []string{"1|local|west|5"})
	if cs := e.conflicts(t); len(cs) != 1 || cs[0].Loser != "east" {
		t.Errorf("conflicts = %+v, want the remote insert discarded", cs)
	}
	if !strings.Contains(e.logs.String(), errInsertRace.Error()) {
		t.Errorf("no retry after the insert race logged:\n%s", e.logs)
	}
}

func TestUniqueViolationOfAnotherKeyIsRejected(t *testing.T) {
	e := newEnv(t, "CREATE TABLE uniq (id bigint PRIMARY KEY, name text UNIQUE, v bigint NOT NULL)")
	a := e.lwwApplier(t, false, "uniq")
	uniq := &source.Table{Name: "uniq", Columns: columns("id", "name", "v"), PK: []int{0}}
	e.exec(t, "INSERT INTO uniq VALUES (1, 'a', 1), (2, 'b', 1)")
	for name, c := range map[string]source.Change{
		"guarded insert": ins(uniq, source.Row{int64(3), "a", int64(1)}),
		"update":         upd(uniq, source.Row{int64(2), "b", int64(1)}, source.Row{int64(2), "a", int64(2)}),
	} {
		start := time.Now()
		_, err := apply(t.Context(), a, txn(10, c))
		var pe interface{ SQLState() string }
		if err == nil || !pipeline.IsPermanent(err) || !errors.As(err, &pe) || pe.SQLState() != "23505" || errors.Is(err, errInsertRace) {
			t.Errorf("%s colliding on another unique key: %v, want a permanent unique violation", name, err)
		}
		if d := time.Since(start); d > 5*time.Second {
			t.Errorf("%s: rejected after %v: retried as a lock conflict?", name, d)
		}
	}
}

func TestClassifyInsertRace(t *testing.T) {
	a, err := New(Config{DSN: "postgres://x@localhost/db"}, slog.Default())
	if err != nil {
		t.Fatal(err)
	}
	tg := &target{a: a}
	if c := tg.Classify(errors.Join(errInsertRace, errors.New("dup"))); c != batch.Lock {
		t.Errorf("Classify(insert race) = %v, want Lock", c)
	}
}

// TestRecordedFindsTheSameConflict: see conflicttest.CheckRecorded.
func TestRecordedFindsTheSameConflict(t *testing.T) {
	e := newEnv(t, profilesDDL)
	a := e.lwwApplier(t, false)
	e.exec(t, "INSERT INTO profiles VALUES (1, 'local', 'west', 5)")
	mustApply(t, a, txn(10, withTxn(ins(profiles, prow(1, "remote old", "east", 3)), "east:10")))
	if n := len(e.conflicts(t)); n != 1 {
		t.Fatalf("%d conflicts, want 1", n)
	}
	ctx := t.Context()
	tg, err := a.newTarget(ctx, "")
	if err != nil {
		t.Fatal(err)
	}
	defer tg.Close()
	if err := tg.Begin(ctx, nil); err != nil {
		t.Fatal(err)
	}
	defer tg.Rollback()
	c := batch.Conflict{Pipeline: pipelineName, Table: profiles, Key: prow(1, "", "", 0), Rule: "last_writer_wins", Position: "east:10"}
	conflicttest.CheckRecorded(t, func(p, r, pos string, since time.Time) (map[string]bool, error) {
		return tg.Recorded(ctx, p, r, pos, since)
	}, c, prow(2, "", "", 0))
}
