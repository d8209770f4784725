package postgres

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/jackc/pgx/v5"

	"github.com/regiond/regiond/checkpoint"
	"github.com/regiond/regiond/internal/dbtest"
	"github.com/regiond/regiond/internal/pgconn"
	"github.com/regiond/regiond/internal/testenv"
	"github.com/regiond/regiond/pipeline"
	"github.com/regiond/regiond/source"
)

const pipelineName = "east->west"

// typesDDL has a column of every type the canonical values map to.
const typesDDL = `CREATE TABLE types (
	id bigint PRIMARY KEY,
	i bigint,
	u numeric(20,0),
	b boolean,
	f4 real,
	f8 double precision,
	dec numeric(12,4),
	s text,
	bin bytea,
	d date,
	dt timestamp(6),
	ts timestamptz(6),
	tm time(6),
	j jsonb,
	bits bit(12),
	flag boolean,
	n text
)`

var typesTable = &source.Table{
	Name: "types",
	Columns: columns("id", "i", "u", "b", "f4", "f8", "dec", "s", "bin", "d", "dt", "ts", "tm", "j", "bits",
		"flag", "n"),
	PK: []int{0},
}

func columns(names ...string) []source.Column {
	cols := make([]source.Column, len(names))
	for i, n := range names {
		cols[i] = source.Column{Name: n}
	}
	return cols
}

// typesRow returns a row of typesTable: id, then vals by column name; the
// other columns are NULL.
func typesRow(id int64, vals map[string]any) source.Row {
	row := make(source.Row, len(typesTable.Columns))
	row[0] = id
	for name, v := range vals {
		i := columnIndex(typesTable, name)
		if i < 0 {
			panic("no column " + name)
		}
		row[i] = v
	}
	return row
}

func columnIndex(t *source.Table, name string) int {
	for i, c := range t.Columns {
		if c.Name == name {
			return i
		}
	}
	return -1
}

// full has a value of every canonical type.
var full = map[string]any{
	"i":    int64(math.MinInt64),
	"u":    uint64(math.MaxUint64),
	"b":    true,
	"f4":   float32(3.14),
	"f8":   2.718281828459045,
	"dec":  source.Decimal("-12.3400"),
	"s":    "héllo 👋 'single' \"double\" \\back",
	"bin":  []byte{0, 1, 0, 0xff},
	"d":    source.Date("2024-02-29"),
	"dt":   source.DateTime("2024-02-29 13:14:15.123456"),
	"ts":   source.Timestamp("2024-02-29 13:14:15.654321"),
	"tm":   source.Time("23:59:59.999999"),
	"j":    source.JSON(`{"b": null, "a": [1, 2.5, "x"]}`),
	"bits": source.Bits("000000000101"),
	"flag": int64(1), // a MySQL TINYINT(1)
	"n":    nil,
}

// fullText is full as the server prints it.
const fullText = `1|-9223372036854775808|18446744073709551615|true|3.14|2.718281828459045|-12.3400|héllo 👋 'single' "double" \back|\x000100ff|2024-02-29|2024-02-29 13:14:15.123456|2024-02-29 13:14:15.654321+00|23:59:59.999999|{"a": [1, 2.5, "x"], "b": null}|000000000101|true|\N`

func ins(t *source.Table, row source.Row) source.Change {
	return source.Change{Table: t, Op: source.Insert, After: row}
}

func upd(t *source.Table, before, after source.Row) source.Change {
	return source.Change{Table: t, Op: source.Update, Before: before, After: after}
}

func del(t *source.Table, row source.Row) source.Change {
	return source.Change{Table: t, Op: source.Delete, Before: row}
}

func txn(end uint64, changes ...source.Change) source.Txn {
	return source.Txn{Changes: changes, End: checkpoint.LSN(end), Origin: "east"}
}

// env is a private server with the types table and an applier into it.
type env struct {
	srv  *testenv.Server
	conn *pgx.Conn // the test's own connection
	logs *dbtest.Buffer
}

func newEnv(t *testing.T, ddl ...string) *env {
	t.Helper()
	srv := testenv.Postgres(t)
	ctx := t.Context()
	conn, err := pgconn.Connect(ctx, srv.URL("app"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close(context.Background()) })
	e := &env{srv: srv, conn: conn, logs: &dbtest.Buffer{}}
	e.exec(t, append([]string{typesDDL}, ddl...)...)
	return e
}

func (e *env) exec(t *testing.T, stmts ...string) {
	t.Helper()
	for _, q := range stmts {
		if _, err := e.conn.Exec(t.Context(), q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
}

// applier returns an opened applier for the types table (and tables),
// starting at position 0/1.
func (e *env) applier(t *testing.T, cfg Config) *Applier {
	t.Helper()
	cfg.Pipeline, cfg.Source, cfg.Target = pipelineName, "east", "west"
	cfg.DSN = e.srv.URL("app")
	if cfg.Tables == nil {
		cfg.Tables = []string{"types"}
	}
	a, err := New(cfg, slog.New(slog.NewTextHandler(e.logs, &slog.HandlerOptions{Level: slog.LevelDebug})))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { a.Close() })
	ctx := t.Context()
	if _, err := a.Open(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := a.Init(ctx, checkpoint.LSN(1).String()); err != nil {
		t.Fatal(err)
	}
	return a
}

type durableCall struct {
	Pos    string
	Stored bool
}

// apply runs Apply over txns, all ready before it starts (so that they
// form as few batches as BatchChanges allows), until they are consumed.
func apply(ctx context.Context, a *Applier, txns ...source.Txn) ([]durableCall, error) {
	in := make(chan source.Txn, len(txns))
	for _, t := range txns {
		in <- t
	}
	close(in)
	var calls []durableCall
	err := a.Apply(ctx, in, func(pos checkpoint.Position, stored bool) {
		calls = append(calls, durableCall{pos.String(), stored})
	})
	return calls, err
}

func mustApply(t *testing.T, a *Applier, txns ...source.Txn) []durableCall {
	t.Helper()
	calls, err := apply(t.Context(), a, txns...)
	if err != nil {
		t.Fatalf("Apply: %v", err)
	}
	return calls
}

// dump returns the rows of table ordered by its first column, one line
// each: every column as text, separated by |, NULL as \N.
func (e *env) dump(t *testing.T, table string) []string {
	t.Helper()
	var cols []string
	rows, err := e.conn.Query(t.Context(), `SELECT attname FROM pg_attribute WHERE attrelid = $1::regclass AND attnum > 0 AND NOT attisdropped ORDER BY attnum`, table)
	if err != nil {
		t.Fatal(err)
	}
	for rows.Next() {
		var c string
		if err := rows.Scan(&c); err != nil {
			t.Fatal(err)
		}
		cols = append(cols, pgconn.Ident(c))
	}
	rows.Close()
	text := make([]string, len(cols))
	for i, c := range cols {
		text[i] = "COALESCE(" + c + "::text, '\\N')"
	}
	q := "SELECT concat_ws('|', " + strings.Join(text, ", ") + ") FROM " + pgconn.Ident(table) + " ORDER BY " + cols[0]
	rows, err = e.conn.Query(t.Context(), q)
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
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

// reset empties the tables and drops regiond_checkpoints.
func (e *env) reset(t *testing.T, tables ...string) {
	t.Helper()
	for _, tb := range tables {
		e.exec(t, "TRUNCATE "+pgconn.Ident(tb))
	}
	e.exec(t, "DROP TABLE IF EXISTS regiond_checkpoints")
}

// checkpointRow returns the pipeline's stored position, seq and the row
// version's xmin.
func (e *env) checkpointRow(t *testing.T) (pos string, seq int64, xmin string) {
	t.Helper()
	err := e.conn.QueryRow(t.Context(), "SELECT position, seq, xmin::text FROM regiond_checkpoints WHERE pipeline = $1", pipelineName).
		Scan(&pos, &seq, &xmin)
	if err != nil {
		t.Fatal(err)
	}
	return pos, seq, xmin
}

func wantRows(t *testing.T, got, want []string) {
	t.Helper()
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("rows (-want +got):\n%s", diff)
	}
}

// stream is a history over every type: inserts, updates (one changing the
// key), deletes, several tables' worth of segments, in 6 transactions.
func stream() []source.Txn {
	r1 := typesRow(1, full)
	r2 := typesRow(2, map[string]any{
		"bin": []byte{}, "s": "", "f4": float32(-0.5), "f8": math.Inf(1), "b": false,
		"bits": source.Bits("101"), "flag": int64(0), "dec": source.Decimal("0"), "u": uint64(0),
		"tm": source.Time("00:00:00"), "j": source.JSON(`[]`),
	})
	r3 := typesRow(3, map[string]any{"s": "gone soon"})
	r4 := typesRow(4, map[string]any{"s": "before"})
	r4b := typesRow(4, map[string]any{"s": "after", "i": int64(7)})
	r5 := typesRow(5, map[string]any{"s": "moves"})
	r6 := typesRow(6, map[string]any{"s": "moves"})
	return []source.Txn{
		txn(100, ins(typesTable, r1), ins(typesTable, r3)),
		txn(200, ins(typesTable, r2), ins(typesTable, r4), ins(typesTable, r5)),
		txn(300, del(typesTable, r3)),
		txn(400, upd(typesTable, r4, r4b), upd(typesTable, r5, r6)),
		txn(500, ins(typesTable, r3), upd(typesTable, r4b, r4b)),
		txn(600, del(typesTable, r3)),
	}
}

var streamRows = []string{
	fullText,
	`2|\N|0|false|-0.5|Infinity|0.0000||\x|\N|\N|\N|00:00:00|[]|000000000101|false|\N`,
	`4|7|\N|\N|\N|\N|\N|after|\N|\N|\N|\N|\N|\N|\N|\N|\N`,
	`6|\N|\N|\N|\N|\N|\N|moves|\N|\N|\N|\N|\N|\N|\N|\N|\N`,
}

func TestApplyEveryTypeIdempotentAndResumable(t *testing.T) {
	e := newEnv(t)
	for _, tc := range []struct{ batchChanges, fastRows int }{{1, -1}, {3, -1}, {8192, -1}, {3, 1}, {8192, 1}} {
		// copy=1: every insert the log says is absent goes by COPY.
		t.Run(fmt.Sprintf("batch=%d/copy=%d", tc.batchChanges, tc.fastRows), func(t *testing.T) {
			e.reset(t, "types")
			a := e.applier(t, Config{BatchChanges: tc.batchChanges, StatementRows: 2, FastRows: tc.fastRows})
			mustApply(t, a, stream()...)
			wantRows(t, e.dump(t, "types"), streamRows)
			if pos, _, _ := e.checkpointRow(t); pos != checkpoint.LSN(600).String() {
				t.Errorf("checkpoint = %s, want %s", pos, checkpoint.LSN(600))
			}

			// The same stream again: the same rows.
			calls := mustApply(t, a, stream()...)
			wantRows(t, e.dump(t, "types"), streamRows)
			if last := calls[len(calls)-1]; last != (durableCall{checkpoint.LSN(600).String(), true}) {
				t.Errorf("last durable call = %v, want 0/258 stored", last)
			}

			// Resume from an older position: a suffix replayed.
			for i := 1; i < len(stream()); i++ {
				mustApply(t, a, stream()[i:]...)
				wantRows(t, e.dump(t, "types"), streamRows)
			}
			if pos, _, _ := e.checkpointRow(t); pos != checkpoint.LSN(600).String() {
				t.Errorf("checkpoint = %s, want %s", pos, checkpoint.LSN(600))
			}
		})
	}
}

func TestApplyDurableCalls(t *testing.T) {
	e := newEnv(t)
	a := e.applier(t, Config{BatchChanges: 2})
	r := func(id int64) source.Row { return typesRow(id, nil) }
	calls := mustApply(t, a,
		txn(10, ins(typesTable, r(1))),
		txn(20, ins(typesTable, r(2))), // batch full: 10, 20 in one commit
		txn(30),                        // skipped
		txn(40, ins(typesTable, r(3))),
	)
	want := []durableCall{{"0/14", true}, {"0/28", true}}
	if diff := cmp.Diff(want, calls); diff != "" {
		t.Errorf("durable calls (-want +got):\n%s", diff)
	}
}

func TestSkippedTransactionsWriteNothing(t *testing.T) {
	e := newEnv(t)
	a := e.applier(t, Config{})
	pos0, seq0, xmin0 := e.checkpointRow(t)
	calls := mustApply(t, a, txn(10), txn(20), txn(30))
	if len(calls) == 0 || calls[len(calls)-1] != (durableCall{"0/1E", false}) {
		t.Errorf("durable calls = %v, want the last to be 0/1E not stored", calls)
	}
	for _, c := range calls {
		if c.Stored {
			t.Errorf("durable(%s, stored) for skipped transactions", c.Pos)
		}
	}
	pos, seq, xmin := e.checkpointRow(t)
	if pos != pos0 || seq != seq0 || xmin != xmin0 {
		t.Errorf("checkpoint row changed: (%s, %d, xmin %s) -> (%s, %d, xmin %s)", pos0, seq0, xmin0, pos, seq, xmin)
	}
}

func TestMarkerWriteComesFirst(t *testing.T) {
	// The marker is the first write of every applied transaction: its
	// sequence number moves with every commit, and the position with it.
	e := newEnv(t)
	a := e.applier(t, Config{})
	_, seq0, _ := e.checkpointRow(t)
	mustApply(t, a, txn(10, ins(typesTable, typesRow(1, nil))))
	pos, seq, _ := e.checkpointRow(t)
	if seq != seq0+1 || pos != "0/A" {
		t.Errorf("checkpoint after one commit: seq %d (want %d), position %s (want 0/A)", seq, seq0+1, pos)
	}
	var rowXmin, cpXmin string
	if err := e.conn.QueryRow(t.Context(), "SELECT (SELECT xmin::text FROM types WHERE id = 1), (SELECT xmin::text FROM regiond_checkpoints WHERE pipeline = $1)", pipelineName).Scan(&rowXmin, &cpXmin); err != nil {
		t.Fatal(err)
	}
	if rowXmin != cpXmin {
		t.Errorf("row written by transaction %s, checkpoint by %s: want one transaction", rowXmin, cpXmin)
	}

	// A deleted checkpoint row stops the pipeline.
	e.exec(t, "DELETE FROM regiond_checkpoints")
	_, err := apply(t.Context(), a, txn(20, ins(typesTable, typesRow(2, nil))))
	if !pipeline.IsPermanent(err) || !strings.Contains(err.Error(), "checkpoint row missing") {
		t.Errorf("Apply without a checkpoint row: %v, want a permanent error", err)
	}
	if got := e.dump(t, "types"); len(got) != 1 {
		t.Errorf("rows = %d, want 1", len(got))
	}
}

func TestChunkedTransactionCommitsAtomically(t *testing.T) {
	e := newEnv(t)
	a := e.applier(t, Config{BatchChanges: 2})
	chunks := []source.Txn{
		{Changes: []source.Change{ins(typesTable, typesRow(1, nil)), ins(typesTable, typesRow(2, nil))}, More: true},
		{Changes: []source.Change{ins(typesTable, typesRow(3, nil)), ins(typesTable, typesRow(4, nil))}, More: true},
		{Changes: []source.Change{ins(typesTable, typesRow(5, nil)), del(typesTable, typesRow(1, nil))}, End: checkpoint.LSN(50)},
	}

	// Two chunks, then the context ends.
	ctx, cancel := context.WithCancel(t.Context())
	in := make(chan source.Txn)
	done := make(chan error, 1)
	go func() {
		done <- a.Apply(ctx, in, func(checkpoint.Position, bool) { t.Error("durable called for an incomplete transaction") })
	}()
	for _, c := range chunks[:2] {
		select {
		case in <- c:
		case err := <-done:
			t.Fatalf("Apply returned early: %v", err)
		}
	}
	// Wait until the applier holds an open transaction that wrote both chunks.
	waitFor(t, func() bool {
		var n int
		err := e.conn.QueryRow(t.Context(), `SELECT count(*) FROM pg_locks l JOIN pg_stat_activity s USING (pid)
			WHERE s.application_name = 'regiond' AND l.locktype = 'transactionid' AND s.state = 'idle in transaction'`).Scan(&n)
		return err == nil && n > 0
	})
	if got := e.dump(t, "types"); len(got) != 0 {
		t.Errorf("rows of an incomplete transaction are visible: %v", got)
	}
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Errorf("Apply after cancel: %v, want context.Canceled", err)
	}
	if got := e.dump(t, "types"); len(got) != 0 {
		t.Errorf("rows of an abandoned transaction are visible: %v", got)
	}
	if pos, _, _ := e.checkpointRow(t); pos != "0/1" {
		t.Errorf("checkpoint = %s, want 0/1", pos)
	}

	// The whole transaction, again: all of it, with its end position.
	calls := mustApply(t, a, chunks...)
	wantRows(t, e.dump(t, "types"), []string{
		`2|\N|\N|\N|\N|\N|\N|\N|\N|\N|\N|\N|\N|\N|\N|\N|\N`,
		`3|\N|\N|\N|\N|\N|\N|\N|\N|\N|\N|\N|\N|\N|\N|\N|\N`,
		`4|\N|\N|\N|\N|\N|\N|\N|\N|\N|\N|\N|\N|\N|\N|\N|\N`,
		`5|\N|\N|\N|\N|\N|\N|\N|\N|\N|\N|\N|\N|\N|\N|\N|\N`,
	})
	if diff := cmp.Diff([]durableCall{{"0/32", true}}, calls); diff != "" {
		t.Errorf("durable calls (-want +got):\n%s", diff)
	}
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("timed out waiting")
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestTriggersDoNotFire(t *testing.T) {
	e := newEnv(t,
		"CREATE TABLE audit (id bigserial PRIMARY KEY, what text)",
		`CREATE FUNCTION audit_types() RETURNS trigger LANGUAGE plpgsql AS $$
		 BEGIN INSERT INTO audit (what) VALUES (TG_OP); RETURN NEW; END $$`,
		"CREATE TRIGGER types_audit AFTER INSERT OR UPDATE OR DELETE ON types FOR EACH ROW EXECUTE FUNCTION audit_types()",
		"CREATE TABLE child (id bigint PRIMARY KEY, parent bigint NOT NULL REFERENCES types (id))",
	)
	child := &source.Table{Name: "child", Columns: columns("id", "parent"), PK: []int{0}}
	a := e.applier(t, Config{Tables: []string{"types", "audit", "child"}})
	mustApply(t, a,
		// The child arrives before its parent: the FK trigger does not fire
		// either (in the source region the order was valid).
		txn(10, ins(child, source.Row{int64(1), int64(7)}), ins(typesTable, typesRow(7, nil))),
		txn(20, upd(typesTable, typesRow(7, nil), typesRow(7, map[string]any{"s": "x"}))),
	)
	if got := e.dump(t, "audit"); len(got) != 0 {
		t.Errorf("the trigger fired for replicated rows: %v", got)
	}
	if got := e.dump(t, "child"); len(got) != 1 {
		t.Errorf("child rows = %v", got)
	}
	// A local write still fires it.
	e.exec(t, "UPDATE types SET s = 'local' WHERE id = 7")
	if got := e.dump(t, "audit"); len(got) != 1 {
		t.Errorf("local write: audit = %v, want one row", got)
	}
}

func TestSessionReplicationRoleNeedsPrivilege(t *testing.T) {
	e := newEnv(t, "CREATE ROLE app LOGIN", "GRANT ALL ON ALL TABLES IN SCHEMA public TO app", "GRANT CREATE ON SCHEMA public TO app")
	e.exec(t, "CREATE TABLE regiond_checkpoints (pipeline text PRIMARY KEY, kind text NOT NULL DEFAULT 'pipeline', source_region text NOT NULL DEFAULT '', position text NOT NULL, seq bigint NOT NULL DEFAULT 0, epoch bigint NOT NULL DEFAULT 0, updated_at timestamptz NOT NULL)",
		"GRANT ALL ON regiond_checkpoints TO app")
	dsn := strings.Replace(e.srv.URL("app"), "postgres://postgres@", "postgres://app@", 1)
	a, err := New(Config{Pipeline: pipelineName, Source: "east", Target: "west", DSN: dsn, Tables: []string{"types"}}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := a.Open(t.Context()); err != nil {
		t.Fatal(err)
	}
	_, err = apply(t.Context(), a, txn(10, ins(typesTable, typesRow(1, nil))))
	if !pipeline.IsPermanent(err) || !strings.Contains(err.Error(), "GRANT SET ON PARAMETER session_replication_role TO app") {
		t.Fatalf("Apply as a plain user: %v, want a permanent error saying what to grant", err)
	}
	e.exec(t, "GRANT SET ON PARAMETER session_replication_role TO app")
	if _, err := a.Init(t.Context(), "0/1"); err != nil {
		t.Fatal(err)
	}
	if _, err := apply(t.Context(), a, txn(10, ins(typesTable, typesRow(1, nil)))); err != nil {
		t.Fatalf("Apply after the grant: %v", err)
	}
}

func TestOpenChecksTables(t *testing.T) {
	e := newEnv(t, "CREATE TABLE nokey (a int)")
	for _, tc := range []struct {
		tables []string
		want   string
	}{
		{[]string{"types", "missing"}, "table missing does not exist in schema public"},
		{[]string{"nokey"}, "table nokey has no primary key"},
	} {
		a, err := New(Config{Pipeline: pipelineName, Target: "west", DSN: e.srv.URL("app"), Tables: tc.tables}, slog.New(slog.DiscardHandler))
		if err != nil {
			t.Fatal(err)
		}
		_, err = a.Open(t.Context())
		if !pipeline.IsPermanent(err) || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), "region west") {
			t.Errorf("Open with %v: %v, want a permanent error containing %q", tc.tables, err, tc.want)
		}
	}
	var exists bool
	if err := e.conn.QueryRow(t.Context(), "SELECT to_regclass('regiond_checkpoints') IS NOT NULL").Scan(&exists); err != nil {
		t.Fatal(err)
	}
	if exists {
		t.Error("Open created regiond_checkpoints although the tables are not fit")
	}
}

func TestMissingColumnIsPermanent(t *testing.T) {
	e := newEnv(t)
	a := e.applier(t, Config{})
	wide := &source.Table{Name: "types", Columns: columns("id", "s", "extra"), PK: []int{0}}
	_, err := apply(t.Context(), a, txn(10, ins(wide, source.Row{int64(1), "x", "y"})))
	if !pipeline.IsPermanent(err) || !strings.Contains(err.Error(), "table types has no column extra") {
		t.Fatalf("Apply with an unknown column: %v", err)
	}
	// Added in the target: it flows.
	e.exec(t, "ALTER TABLE types ADD COLUMN extra text")
	mustApply(t, a, txn(10, ins(wide, source.Row{int64(1), "x", "y"})))
	var got string
	if err := e.conn.QueryRow(t.Context(), "SELECT extra FROM types WHERE id = 1").Scan(&got); err != nil || got != "y" {
		t.Errorf("extra = %q, %v", got, err)
	}
}

func TestColumnNamesMatchIgnoringCase(t *testing.T) {
	e := newEnv(t)
	a := e.applier(t, Config{})
	mysqlish := &source.Table{Name: "types", Columns: columns("ID", "S"), PK: []int{0}}
	mustApply(t, a, txn(10, ins(mysqlish, source.Row{int64(1), "x"})))
	wantRows(t, e.dump(t, "types"), []string{`1|\N|\N|\N|\N|\N|\N|x|\N|\N|\N|\N|\N|\N|\N|\N|\N`})
}

func TestUnchangedColumnsAreLeftAlone(t *testing.T) {
	e := newEnv(t)
	a := e.applier(t, Config{})
	big := strings.Repeat("toast ", 1000)
	r1 := typesRow(1, map[string]any{"s": big, "i": int64(1)})
	mustApply(t, a, txn(10, ins(typesTable, r1)))
	unchanged := func(id, i int64) source.Row {
		return typesRow(id, map[string]any{"s": source.Unchanged, "i": i})
	}
	mustApply(t, a,
		txn(20, upd(typesTable, typesRow(1, nil), unchanged(1, 2))),
		// Row 2 does not exist: it is not inserted (its s is unknown).
		txn(30, upd(typesTable, typesRow(2, nil), unchanged(2, 2))),
		// Collapsed with an earlier image of the same key in one batch: the
		// unchanged value is the earlier one.
		txn(40, ins(typesTable, typesRow(3, map[string]any{"s": "three", "i": int64(1)}))),
		txn(50, upd(typesTable, typesRow(3, nil), unchanged(3, 3))),
	)
	var s1, s3 string
	var i1, i3 int64
	if err := e.conn.QueryRow(t.Context(), "SELECT (SELECT s FROM types WHERE id = 1), (SELECT i FROM types WHERE id = 1), (SELECT s FROM types WHERE id = 3), (SELECT i FROM types WHERE id = 3)").
		Scan(&s1, &i1, &s3, &i3); err != nil {
		t.Fatal(err)
	}
	if s1 != big || i1 != 2 || s3 != "three" || i3 != 3 {
		t.Errorf("rows 1 and 3: s=%.10q… i=%d, s=%q i=%d; want the toast, 2, three, 3", s1, i1, s3, i3)
	}
	if got := len(e.dump(t, "types")); got != 2 {
		t.Errorf("%d rows, want 2", got)
	}
	if !strings.Contains(e.logs.String(), "missing=1") {
		t.Errorf("no warning about the missing row in the log:\n%s", e.logs)
	}
}

func TestRejectedValueNamesRowAndColumn(t *testing.T) {
	e := newEnv(t, "CREATE TABLE narrow (id bigint PRIMARY KEY, i bigint, d date, tm time, v varchar(3))")
	narrow := &source.Table{Name: "narrow", Columns: columns("id", "i", "d", "tm", "v"), PK: []int{0}}
	nrow := func(id int64, col string, v any) source.Row {
		r := source.Row{id, nil, nil, nil, nil}
		r[columnIndex(narrow, col)] = v
		return r
	}
	for _, tc := range []struct {
		name   string
		change source.Change
		want   []string
	}{
		{"nul in text", ins(typesTable, typesRow(12, map[string]any{"s": "a\x00b"})),
			[]string{"table types row {id=12}", "column s (text)", `"a\x00b"`, "NUL"}},
		{"unsigned into bigint", ins(narrow, nrow(12, "i", uint64(math.MaxUint64))),
			[]string{"table narrow row {id=12}", "column i (bigint)", "18446744073709551615", "numeric(20,0)"}},
		{"zero date", ins(narrow, nrow(12, "d", source.Date("0000-00-00"))),
			[]string{"table narrow row {id=12}", "column d (date)", "0000-00-00", "no zero date"}},
		{"negative time", ins(narrow, nrow(12, "tm", source.Time("-838:59:59"))),
			[]string{"table narrow row {id=12}", "column tm (time without time zone)", "-838:59:59", "interval"}},
		{"too long", upd(narrow, nrow(12, "v", "abc"), nrow(12, "v", "abcd")),
			[]string{"update of table narrow row {id=12}", "column v (character varying(3))", `"abcd"`, "too long"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e.reset(t, "types", "narrow")
			a := e.applier(t, Config{Tables: []string{"types", "narrow"}})
			calls, err := apply(t.Context(), a,
				txn(10, ins(typesTable, typesRow(10, nil))),
				txn(20, ins(narrow, nrow(11, "v", "ok"))),
				txn(30, ins(typesTable, typesRow(13, nil)), tc.change),
				txn(40, ins(typesTable, typesRow(14, nil))),
			)
			if !pipeline.IsPermanent(err) {
				t.Fatalf("Apply: %v, want a permanent error", err)
			}
			t.Logf("error: %v", err)
			for _, w := range append([]string{"region west", "ending at 0/1E"}, tc.want...) {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not contain %q", err, w)
				}
			}
			// The transactions before the bad one are committed.
			wantRows(t, e.dump(t, "types"), []string{`10|\N|\N|\N|\N|\N|\N|\N|\N|\N|\N|\N|\N|\N|\N|\N|\N`})
			wantRows(t, e.dump(t, "narrow"), []string{`11|\N|\N|\N|ok`})
			if pos, _, _ := e.checkpointRow(t); pos != "0/14" {
				t.Errorf("checkpoint = %s, want 0/14", pos)
			}
			if diff := cmp.Diff([]durableCall{{"0/A", true}, {"0/14", true}}, calls); diff != "" {
				t.Errorf("durable calls (-want +got):\n%s", diff)
			}
		})
	}
}

func TestLockConflictsAreRetried(t *testing.T) {
	e := newEnv(t)
	ctx := t.Context()
	other, err := pgconn.Connect(ctx, e.srv.URL("app"))
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close(context.Background())
	third, err := pgconn.Connect(ctx, e.srv.URL("app"))
	if err != nil {
		t.Fatal(err)
	}
	defer third.Close(context.Background())

	t.Run("lock timeout", func(t *testing.T) {
		e.reset(t, "types")
		e.exec(t, "INSERT INTO types (id, s) VALUES (1, 'local')")
		a := e.applier(t, Config{LockTimeout: 100 * time.Millisecond})
		tx, err := other.Begin(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := tx.Exec(ctx, "SELECT * FROM types WHERE id = 1 FOR UPDATE"); err != nil {
			t.Fatal(err)
		}
		time.AfterFunc(time.Second, func() { tx.Rollback(context.Background()) })
		start := time.Now()
		mustApply(t, a, txn(10, upd(typesTable, typesRow(1, nil), typesRow(1, map[string]any{"s": "remote"}))))
		if time.Since(start) < time.Second {
			t.Errorf("applied in %v while the row was locked for 1 s", time.Since(start))
		}
		wantRows(t, e.dump(t, "types"), []string{`1|\N|\N|\N|\N|\N|\N|remote|\N|\N|\N|\N|\N|\N|\N|\N|\N`})
		if !strings.Contains(e.logs.String(), "SQLSTATE 55P03") {
			t.Errorf("no lock timeout retry logged:\n%s", e.logs)
		}
	})

	t.Run("deadlock", func(t *testing.T) {
		e.reset(t, "types")
		e.exec(t, "INSERT INTO types (id, s) VALUES (1, 'local'), (2, 'local')")
		// A backend looks for a deadlock once, deadlock_timeout after it
		// began to wait. The applier's must look after the other
		// transaction waits too (on a busy machine this test's polling
		// took more than the default 1 s), and the other's must not look
		// first: 3 s for the applier's sessions, a minute for the other.
		e.exec(t, "ALTER DATABASE app SET deadlock_timeout = '3s'")
		defer e.exec(t, "ALTER DATABASE app RESET deadlock_timeout")
		a := e.applier(t, Config{LockTimeout: 20 * time.Second})
		tx, err := other.Begin(ctx)
		if err != nil {
			t.Fatal(err)
		}
		defer tx.Rollback(context.Background())
		if _, err := tx.Exec(ctx, "SET LOCAL deadlock_timeout = '60s'"); err != nil {
			t.Fatal(err)
		}
		if _, err := tx.Exec(ctx, "UPDATE types SET s = 'other' WHERE id = 2"); err != nil {
			t.Fatal(err)
		}
		// The applier locks row 1, then waits for row 2; the other
		// transaction then waits for row 1: a deadlock, which the applier's
		// backend detects, and so ends its own transaction.
		done := make(chan error, 1)
		go func() {
			_, err := apply(ctx, a, txn(10,
				upd(typesTable, typesRow(1, nil), typesRow(1, map[string]any{"s": "remote"})),
				upd(typesTable, typesRow(2, nil), typesRow(2, map[string]any{"s": "remote"}))))
			done <- err
		}()
		waitFor(t, func() bool {
			var n int
			err := third.QueryRow(ctx, `SELECT count(*) FROM pg_stat_activity WHERE application_name = 'regiond' AND wait_event_type = 'Lock'`).Scan(&n)
			return err == nil && n > 0
		})
		if _, err := tx.Exec(ctx, "UPDATE types SET s = 'other' WHERE id = 1"); err != nil {
			t.Fatalf("the other transaction lost the deadlock: %v", err)
		}
		if err := tx.Commit(ctx); err != nil {
			t.Fatal(err)
		}
		if err := <-done; err != nil {
			t.Fatalf("Apply: %v", err)
		}
		wantRows(t, e.dump(t, "types"), []string{
			`1|\N|\N|\N|\N|\N|\N|remote|\N|\N|\N|\N|\N|\N|\N|\N|\N`,
			`2|\N|\N|\N|\N|\N|\N|remote|\N|\N|\N|\N|\N|\N|\N|\N|\N`,
		})
		if !strings.Contains(e.logs.String(), "SQLSTATE 40P01") {
			t.Errorf("no deadlock retry logged:\n%s", e.logs)
		}
	})
}

func TestCompositeKeyAndKeyChange(t *testing.T) {
	e := newEnv(t, "CREATE TABLE pair (a text, b bigint, v text, PRIMARY KEY (b, a))")
	pair := &source.Table{Name: "pair", Columns: columns("a", "b", "v"), PK: []int{1, 0}}
	a := e.applier(t, Config{Tables: []string{"pair"}})
	mustApply(t, a,
		txn(10, ins(pair, source.Row{"x", int64(1), "one"}), ins(pair, source.Row{"y", int64(1), "two"})),
		txn(20, upd(pair, source.Row{"x", int64(1), "one"}, source.Row{"x", int64(2), "one moved"})),
		txn(30, del(pair, source.Row{"y", int64(1), "two"}), ins(pair, source.Row{"y", int64(1), "again"})),
	)
	wantRows(t, e.dump(t, "pair"), []string{`x|2|one moved`, `y|1|again`})
}
