package postgres_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"math/rand/v2"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/jackc/pgx/v5"

	"github.com/regiond/regiond/checkpoint"
	"github.com/regiond/regiond/internal/pgconn"
	"github.com/regiond/regiond/internal/testenv"
	"github.com/regiond/regiond/pipeline"
	"github.com/regiond/regiond/source"
	"github.com/regiond/regiond/source/postgres"
)

// waitFor bounds every wait for the server in these tests.
const waitFor = 30 * time.Second

// logBuffer collects log output so tests can assert on warnings.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(p)
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.String()
}

func newLogger(t *testing.T) (*slog.Logger, *logBuffer) {
	lb := &logBuffer{}
	var w io.Writer = lb
	if testing.Verbose() {
		w = io.MultiWriter(lb, testWriter{t})
	}
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: slog.LevelDebug})), lb
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// startServer starts a private PostgreSQL 15 and connects to its "app"
// database with regiond's session settings.
func startServer(t *testing.T) (*testenv.Server, *pgx.Conn) {
	t.Helper()
	srv := testenv.Postgres(t)
	db, err := pgconn.Connect(t.Context(), srv.URL("app"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close(context.Background()) })
	return srv, db
}

func exec(t *testing.T, db *pgx.Conn, stmts ...string) {
	t.Helper()
	for _, q := range stmts {
		if _, err := db.Exec(t.Context(), q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
}

func newReader(t *testing.T, srv *testenv.Server, slot string, logger *slog.Logger, tables ...string) *postgres.Reader {
	t.Helper()
	set := map[string]bool{}
	for _, tb := range tables {
		set[tb] = true
	}
	return newReaderCfg(t, postgres.Config{
		Region: "east", DSN: srv.URL("app"), Slot: slot, Tables: set,
		ChunkChanges: 3000, StatusInterval: 200 * time.Millisecond,
	}, logger)
}

func newReaderCfg(t *testing.T, cfg postgres.Config, logger *slog.Logger) *postgres.Reader {
	t.Helper()
	r, err := postgres.New(cfg, logger)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	return r
}

// reading is a Read running in a goroutine.
type reading struct {
	ch      chan source.Txn
	done    chan struct{}
	err     error // set when done is closed
	cancel  context.CancelFunc
	stopped bool
}

func startRead(t *testing.T, r *postgres.Reader, from checkpoint.Position, buffer int) *reading {
	t.Helper()
	ctx, cancel := context.WithCancel(t.Context())
	rd := &reading{ch: make(chan source.Txn, buffer), done: make(chan struct{}), cancel: cancel}
	go func() {
		defer close(rd.done)
		rd.err = r.Read(ctx, from, rd.ch)
	}()
	t.Cleanup(func() { rd.stop(t) })
	return rd
}

// stop ends the Read and waits for it to return.
func (rd *reading) stop(t *testing.T) {
	t.Helper()
	if rd.stopped {
		return
	}
	rd.stopped = true
	rd.cancel()
	select {
	case <-rd.done:
		if !errors.Is(rd.err, context.Canceled) {
			t.Errorf("Read returned %v, want context.Canceled", rd.err)
		}
	case <-time.After(waitFor):
		t.Errorf("Read did not return after cancel")
	}
}

// failed reports whether Read returned.
func (rd *reading) failed() bool {
	select {
	case <-rd.done:
		return true
	default:
		return false
	}
}

// next returns the next Txn (or chunk), failing the test after waitFor.
func (rd *reading) next(t *testing.T) source.Txn {
	t.Helper()
	select {
	case txn := <-rd.ch:
		return txn
	case <-rd.done:
		select {
		case txn := <-rd.ch:
			return txn
		default:
		}
		t.Fatalf("Read returned: %v", rd.err)
	case <-time.After(waitFor):
		t.Fatalf("no transaction within %v", waitFor)
	}
	return source.Txn{}
}

// txn returns the chunks of the next whole source transaction.
func (rd *reading) txn(t *testing.T) []source.Txn {
	t.Helper()
	var chunks []source.Txn
	for {
		c := rd.next(t)
		chunks = append(chunks, c)
		if !c.More {
			if c.End == nil {
				t.Fatalf("last chunk without End: %+v", c)
			}
			return chunks
		}
		if c.End != nil {
			t.Fatalf("chunk with More has End %v", c.End)
		}
	}
}

// quiet asserts that no transaction arrives for d.
func (rd *reading) quiet(t *testing.T, d time.Duration) {
	t.Helper()
	select {
	case txn := <-rd.ch:
		t.Fatalf("unexpected transaction: %s", describe(txn.Changes))
	case <-time.After(d):
	}
}

// change is a Change with its table by name, for comparisons.
type change struct {
	Table  string
	Op     source.Op
	Before source.Row
	After  source.Row
}

func flatten(cs []source.Change) []change {
	if len(cs) == 0 {
		return nil
	}
	out := make([]change, len(cs))
	for i, c := range cs {
		out[i] = change{Table: c.Table.Name, Op: c.Op, Before: c.Before, After: c.After}
	}
	return out
}

func describe(cs []source.Change) string {
	var b strings.Builder
	for _, c := range flatten(cs) {
		fmt.Fprintf(&b, "%s %s before=%v after=%v\n", c.Op, c.Table, c.Before, c.After)
	}
	return b.String()
}

var cmpOpts = cmp.Options{
	cmp.Comparer(func(a, b source.Row) bool {
		if len(a) != len(b) || (a == nil) != (b == nil) {
			return false
		}
		for i := range a {
			if !cmp.Equal(a[i], b[i], cmp.Comparer(func(x, y []byte) bool { return bytes.Equal(x, y) && (x == nil) == (y == nil) })) {
				// Unchanged is an unexported empty struct: compare by identity.
				if a[i] != source.Unchanged || b[i] != source.Unchanged {
					return false
				}
			}
		}
		return true
	}),
}

func slotLSN(t *testing.T, db *pgx.Conn, slot string) checkpoint.LSN {
	t.Helper()
	var s *string
	err := db.QueryRow(t.Context(), "SELECT confirmed_flush_lsn::text FROM pg_replication_slots WHERE slot_name = $1", slot).Scan(&s)
	if err != nil {
		t.Fatalf("read slot %s: %v", slot, err)
	}
	if s == nil {
		t.Fatalf("slot %s has no confirmed_flush_lsn", slot)
	}
	lsn, err := checkpoint.ParseLSN(*s)
	if err != nil {
		t.Fatal(err)
	}
	return lsn
}

// incompressible returns n hex characters that pglz cannot shrink, so a
// value of them is stored out of line (TOASTed).
func incompressible(n int) string {
	rng := rand.New(rand.NewPCG(1, 2))
	const hex = "0123456789abcdef"
	b := make([]byte, n)
	for i := range b {
		b[i] = hex[rng.IntN(16)]
	}
	return string(b)
}

const schema = `
CREATE TYPE mood AS ENUM ('sad', 'ok', 'happy');
CREATE DOMAIN posint AS int4 CHECK (VALUE > 0);
CREATE TABLE alltypes (
	id bigint PRIMARY KEY,
	i2 smallint, i4 integer, i8 bigint,
	num numeric(20,6), numf numeric,
	r real, dp double precision,
	b boolean,
	t text, vc varchar(20), c char(5),
	by bytea,
	d date, ts timestamp(6), ts3 timestamp(3), tstz timestamptz(6), tm time,
	js json, jb jsonb,
	bt bit(12), vb varbit,
	u uuid, m mood, arr int[], iv interval, ip inet, pos posint,
	big text
);
ALTER TABLE alltypes ALTER COLUMN big SET STORAGE EXTERNAL;
CREATE TABLE fullrow (id int PRIMARY KEY, v text, big text);
ALTER TABLE fullrow ALTER COLUMN big SET STORAGE EXTERNAL;
ALTER TABLE fullrow REPLICA IDENTITY FULL;
CREATE TABLE pairs (a int, b int, v text, PRIMARY KEY (b, a));
CREATE TABLE other (id int PRIMARY KEY, v text);
`

// nulls returns a row of n columns, all NULL, with the given values set.
func nulls(n int, set map[int]any) source.Row {
	row := make(source.Row, n)
	for i, v := range set {
		row[i] = v
	}
	return row
}

const allCols = 29 // columns of alltypes

func TestReadChanges(t *testing.T) {
	t.Parallel()
	srv, db := startServer(t)
	exec(t, db, schema)
	logger, logs := newLogger(t)
	r := newReader(t, srv, "regiond_east_west", logger, "alltypes", "fullrow", "pairs")

	pos, err := r.CurrentPosition(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := pos.(checkpoint.LSN); !ok {
		t.Fatalf("CurrentPosition returned %T, want checkpoint.LSN", pos)
	}
	// A small buffer: the 10,000-row transaction must flow through it.
	rd := startRead(t, r, pos, 2)

	big := incompressible(8000)
	row1 := source.Row{
		int64(1), int64(-32768), int64(-2147483648), int64(9223372036854775807),
		source.Decimal("-12345678901234.123456"), source.Decimal("3.14159265358979323846264338327950288"),
		float32(0.1), float64(0.1),
		true,
		"it's \"q\" \\ ünï 😀", "varchar", "ab   ",
		[]byte{0, 1, 2, 0, 255},
		source.Date("2024-02-29"), source.DateTime("2024-02-29 12:34:56.123456"), source.DateTime("2024-02-29 12:34:56.100"),
		source.Timestamp("2024-02-29 10:34:56.500000"), source.Time("23:59:59.999999"),
		source.JSON(`{"b": 1, "a": [1, 2]}`), source.JSON(`{"a": [1, 2], "b": 1}`),
		source.Bits("101010101010"), source.Bits("101"),
		"a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11", "happy", "{1,2,3}", "1 day 02:03:04", "192.168.0.1/24", int64(7),
		"small",
	}
	row2 := nulls(allCols, map[int]any{
		0: int64(2), 3: int64(-9223372036854775808), 5: source.Decimal("0"),
		6: float32(math.Inf(1)), 7: math.Inf(-1), 8: false, 9: "", 12: []byte{},
		14: source.DateTime("0001-01-01 00:00:00.000000"), 16: source.Timestamp("9999-12-31 23:59:59.999999"),
		17: source.Time("00:00:00"),
	})
	row3 := nulls(allCols, map[int]any{0: int64(3), 28: big})
	row3upd := nulls(allCols, map[int]any{0: int64(3), 2: int64(5), 28: source.Unchanged})
	row2moved := append(source.Row{int64(10)}, row2[1:]...)
	key := func(id int64) source.Row { return nulls(allCols, map[int]any{0: id}) }

	steps := []struct {
		name string
		sql  []string // one transaction
		args []any    // for a single statement
		want []change
	}{
		{
			name: "insert every type",
			sql: []string{`INSERT INTO alltypes VALUES (1, -32768, -2147483648, 9223372036854775807,
				'-12345678901234.123456', '3.14159265358979323846264338327950288', 0.1, 0.1, true,
				'it''s "q" \ ünï 😀', 'varchar', 'ab', '\x00010200ff',
				'2024-02-29', '2024-02-29 12:34:56.123456', '2024-02-29 12:34:56.1', '2024-02-29 12:34:56.5+02', '23:59:59.999999',
				'{"b": 1, "a": [1, 2]}', '{"b": 1, "a": [1, 2]}', B'101010101010', B'101',
				'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', 'happy', '{1,2,3}', '1 day 02:03:04', '192.168.0.1/24', 7, 'small')`},
			want: []change{{Table: "alltypes", Op: source.Insert, After: row1}},
		},
		{
			name: "insert NULLs, empty values, infinities, extremes",
			sql: []string{`INSERT INTO alltypes (id, i8, numf, r, dp, b, t, by, ts, tstz, tm)
				VALUES (2, -9223372036854775808, 0, 'Infinity', '-Infinity', false, '', '', '0001-01-01', '9999-12-31 23:59:59.999999+00', '00:00')`},
			want: []change{{Table: "alltypes", Op: source.Insert, After: row2}},
		},
		{
			name: "insert a TOASTed value",
			sql:  []string{`INSERT INTO alltypes (id, big) VALUES (3, $1)`},
			args: []any{big},
			want: []change{{Table: "alltypes", Op: source.Insert, After: row3}},
		},
		{
			name: "update leaving the TOASTed value unchanged (replica identity default)",
			sql:  []string{`UPDATE alltypes SET i4 = 5 WHERE id = 3`},
			want: []change{{Table: "alltypes", Op: source.Update, Before: key(3), After: row3upd}},
		},
		{
			name: "key-changing update",
			sql:  []string{`UPDATE alltypes SET id = 10 WHERE id = 2`},
			want: []change{{Table: "alltypes", Op: source.Update, Before: key(2), After: row2moved}},
		},
		{
			name: "delete (replica identity default: key only)",
			sql:  []string{`DELETE FROM alltypes WHERE id = 10`},
			want: []change{{Table: "alltypes", Op: source.Delete, Before: key(10)}},
		},
		{
			name: "replica identity full: insert, update with unchanged TOAST, delete",
			sql: []string{
				`INSERT INTO fullrow VALUES (1, 'a', '` + big + `')`,
				`UPDATE fullrow SET v = 'b' WHERE id = 1`,
				`DELETE FROM fullrow WHERE id = 1`,
			},
			want: []change{
				{Table: "fullrow", Op: source.Insert, After: source.Row{int64(1), "a", big}},
				{Table: "fullrow", Op: source.Update, Before: source.Row{int64(1), "a", big}, After: source.Row{int64(1), "b", big}},
				{Table: "fullrow", Op: source.Delete, Before: source.Row{int64(1), "b", big}},
			},
		},
		{
			name: "composite key in key order, key change",
			sql: []string{
				`INSERT INTO pairs VALUES (1, 2, 'x')`,
				`UPDATE pairs SET a = 5 WHERE a = 1`,
				`UPDATE pairs SET v = 'y' WHERE a = 5`,
			},
			want: []change{
				{Table: "pairs", Op: source.Insert, After: source.Row{int64(1), int64(2), "x"}},
				{Table: "pairs", Op: source.Update, Before: source.Row{int64(1), int64(2), nil}, After: source.Row{int64(5), int64(2), "x"}},
				{Table: "pairs", Op: source.Update, Before: source.Row{int64(5), int64(2), nil}, After: source.Row{int64(5), int64(2), "y"}},
			},
		},
		{
			name: "tables not configured are dropped",
			sql: []string{
				`INSERT INTO other VALUES (1, 'o')`,
				`INSERT INTO pairs VALUES (3, 4, NULL)`,
				`UPDATE other SET v = 'p'`,
			},
			want: []change{{Table: "pairs", Op: source.Insert, After: source.Row{int64(3), int64(4), nil}}},
		},
		{
			name: "regiond's own transaction: first change on regiond_checkpoints",
			sql:  []string{`INSERT INTO regiond_checkpoints (pipeline, position, updated_at) VALUES ('west->east', '0/0', now())`},
			want: nil,
		},
		{
			name: "regiond's own transaction: marker update, then rows",
			sql: []string{
				`UPDATE regiond_checkpoints SET seq = seq + 1, position = '0/1'`,
				`INSERT INTO pairs VALUES (7, 8, 'z')`,
				`INSERT INTO alltypes (id) VALUES (7)`,
			},
			want: nil,
		},
		{
			name: "a marker write that is not first does not mark",
			sql: []string{
				`INSERT INTO pairs VALUES (9, 9, 'w')`,
				`UPDATE regiond_checkpoints SET seq = seq + 1`,
			},
			want: []change{{Table: "pairs", Op: source.Insert, After: source.Row{int64(9), int64(9), "w"}}},
		},
	}
	var last checkpoint.LSN
	for _, st := range steps {
		t.Run(st.name, func(t *testing.T) {
			if st.args != nil {
				if _, err := db.Exec(t.Context(), st.sql[0], st.args...); err != nil {
					t.Fatal(err)
				}
			} else {
				exec(t, db, "BEGIN; "+strings.Join(st.sql, "; ")+"; COMMIT")
			}
			chunks := rd.txn(t)
			if len(chunks) != 1 {
				t.Fatalf("got %d chunks, want 1", len(chunks))
			}
			txn := chunks[0]
			if diff := cmp.Diff(st.want, flatten(txn.Changes), cmpOpts); diff != "" {
				t.Errorf("changes (-want +got):\n%s\ngot:\n%s", diff, describe(txn.Changes))
			}
			end := txn.End.(checkpoint.LSN)
			if end <= last {
				t.Errorf("End %v not after the previous %v", end, last)
			}
			last = end
			if txn.Origin != "east" {
				t.Errorf("Origin = %q, want east", txn.Origin)
			}
			if txn.Commit.Location() != time.UTC || time.Since(txn.Commit) > time.Minute || time.Since(txn.Commit) < -time.Minute {
				t.Errorf("Commit = %v, want about now in UTC", txn.Commit)
			}
		})
	}

	t.Run("tables", func(t *testing.T) {
		exec(t, db, `INSERT INTO pairs VALUES (11, 11, NULL)`, `INSERT INTO pairs VALUES (12, 12, NULL)`)
		a, b := rd.txn(t)[0], rd.txn(t)[0]
		tp := a.Changes[0].Table
		if b.Changes[0].Table != tp {
			t.Errorf("a new *source.Table for an unchanged relation")
		}
		want := &source.Table{Name: "pairs", Columns: []source.Column{{Name: "a"}, {Name: "b"}, {Name: "v"}}, PK: []int{1, 0}, KeyOnlyBefore: true} // REPLICA IDENTITY DEFAULT
		if diff := cmp.Diff(want, tp); diff != "" {
			t.Errorf("table (-want +got):\n%s", diff)
		}
		exec(t, db, `ALTER TABLE pairs ADD COLUMN w int`, `INSERT INTO pairs VALUES (13, 13, NULL, 1)`)
		c := rd.txn(t)[0]
		if c.Changes[0].Table == tp || len(c.Changes[0].Table.Columns) != 4 {
			t.Errorf("after ALTER TABLE: table %+v, want a new definition with 4 columns", c.Changes[0].Table)
		}
	})

	t.Run("large transaction in chunks", func(t *testing.T) {
		exec(t, db, `INSERT INTO pairs (a, b) SELECT g, g FROM generate_series(100, 10099) g`)
		chunks := rd.txn(t)
		if len(chunks) != 4 {
			t.Fatalf("got %d chunks, want 4 (3000+3000+3000+1000)", len(chunks))
		}
		next := int64(100)
		for i, c := range chunks {
			wantN := 3000
			if i == 3 {
				wantN = 1000
			}
			if len(c.Changes) != wantN {
				t.Errorf("chunk %d: %d changes, want %d", i, len(c.Changes), wantN)
			}
			if c.More != (i < 3) {
				t.Errorf("chunk %d: More = %v", i, c.More)
			}
			if !c.Commit.Equal(chunks[3].Commit) || c.Origin != "east" {
				t.Errorf("chunk %d: Commit %v Origin %q, want those of the last chunk", i, c.Commit, c.Origin)
			}
			for _, ch := range c.Changes {
				if ch.Op != source.Insert || ch.After[0] != next {
					t.Fatalf("chunk %d: change %s %v, want insert of a=%d", i, ch.Op, ch.After, next)
				}
				next++
			}
		}
	})

	t.Run("truncate is reported, not replicated", func(t *testing.T) {
		exec(t, db, `TRUNCATE pairs`)
		txn := rd.txn(t)[0]
		if len(txn.Changes) != 0 {
			t.Errorf("TRUNCATE produced changes: %s", describe(txn.Changes))
		}
		if l := logs.String(); !strings.Contains(l, "TRUNCATE is not replicated") || !strings.Contains(l, "table=pairs") {
			t.Errorf("no warning naming the table; log:\n%s", l)
		}
	})

	t.Run("resume drops what the checkpoint covers", func(t *testing.T) {
		exec(t, db, `INSERT INTO pairs VALUES (20, 20, 'a')`)
		first := rd.txn(t)[0]
		exec(t, db, `INSERT INTO pairs VALUES (21, 21, 'b')`)
		second := rd.txn(t)[0]
		rd.stop(t)
		// Nothing was acked: the server resends from the slot's start,
		// and the reader drops everything up to the checkpoint.
		rd2 := startRead(t, r, first.End, 2)
		got := rd2.txn(t)[0]
		if got.End != second.End || len(got.Changes) != 1 || got.Changes[0].After[2] != "b" {
			t.Fatalf("resumed with %v %s, want the transaction after the checkpoint (%v)", got.End, describe(got.Changes), second.End)
		}
		rd2.quiet(t, 500*time.Millisecond)
	})
}

// TestTimestamptzText checks the assumption the Timestamp conversion rests
// on: the replication connection's TimeZone is UTC.
func TestTimestamptzText(t *testing.T) {
	t.Parallel()
	srv, _ := startServer(t)
	repl, err := pgconn.ConnectReplication(t.Context(), srv.URL("app"))
	if err != nil {
		t.Fatal(err)
	}
	defer repl.Close(context.Background())
	res, err := repl.Exec(t.Context(), "SELECT '2024-02-29 12:34:56.5+02'::timestamptz::text, current_setting('TimeZone')").ReadAll()
	if err != nil {
		t.Fatal(err)
	}
	got := string(res[0].Rows[0][0]) + " " + string(res[0].Rows[0][1])
	if want := "2024-02-29 10:34:56.5+00 UTC"; got != want {
		t.Errorf("timestamptz text on the replication connection = %q, want %q", got, want)
	}
}

func TestAck(t *testing.T) {
	t.Parallel()
	srv, db := startServer(t)
	exec(t, db, `CREATE TABLE items (id int PRIMARY KEY, v text)`, `CREATE TABLE other (id int PRIMARY KEY)`)
	logger, _ := newLogger(t)
	r := newReader(t, srv, "regiond_east_west", logger, "items")
	pos, err := r.CurrentPosition(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if got := slotLSN(t, db, "regiond_east_west"); got != pos.(checkpoint.LSN) {
		t.Fatalf("new slot at %v, CurrentPosition %v", got, pos)
	}
	rd := startRead(t, r, pos, 16)
	exec(t, db, `INSERT INTO items VALUES (1, 'a')`)
	t1 := rd.txn(t)[0]
	exec(t, db, `INSERT INTO items VALUES (2, 'b')`)
	t2 := rd.txn(t)[0]

	// Received but not acked: the slot does not pass either transaction
	// (it may move over WAL before them while nothing was pending).
	time.Sleep(time.Second)
	if got := slotLSN(t, db, "regiond_east_west"); got >= t1.End.(checkpoint.LSN) {
		t.Fatalf("slot moved to %v with nothing acked (start %v, received up to %v)", got, pos, t2.End)
	}

	if err := r.Ack(t.Context(), t1.End); err != nil {
		t.Fatal(err)
	}
	waitSlot(t, db, "regiond_east_west", func(l checkpoint.LSN) bool { return l == t1.End.(checkpoint.LSN) })
	// It stays at the acked position, not the received one, while t2 is
	// pending in the sink.
	time.Sleep(time.Second)
	if got := slotLSN(t, db, "regiond_east_west"); got != t1.End.(checkpoint.LSN) {
		t.Fatalf("slot at %v, want the acked %v (received up to %v)", got, t1.End, t2.End)
	}

	if err := r.Ack(t.Context(), t2.End); err != nil {
		t.Fatal(err)
	}
	waitSlot(t, db, "regiond_east_west", func(l checkpoint.LSN) bool { return l >= t2.End.(checkpoint.LSN) })

	// With everything acked, WAL of other tables does not hold the slot.
	exec(t, db, `INSERT INTO other SELECT generate_series(1, 1000)`)
	var walNow string
	if err := db.QueryRow(t.Context(), "SELECT pg_current_wal_lsn()::text").Scan(&walNow); err != nil {
		t.Fatal(err)
	}
	target, _ := checkpoint.ParseLSN(walNow)
	waitSlot(t, db, "regiond_east_west", func(l checkpoint.LSN) bool { return l >= target })
}

func waitSlot(t *testing.T, db *pgx.Conn, slot string, ok func(checkpoint.LSN) bool) {
	t.Helper()
	deadline := time.Now().Add(waitFor)
	for {
		l := slotLSN(t, db, slot)
		if ok(l) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("slot %s stays at %v", slot, l)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestStatusWhileSinkBlocked checks that the connection survives a sink that
// takes longer than wal_sender_timeout: standby status updates go on while
// Read waits to send, at a third of wal_sender_timeout when StatusInterval
// is longer.
func TestStatusWhileSinkBlocked(t *testing.T) {
	t.Parallel()
	srv, db := startServer(t)
	exec(t, db, `CREATE TABLE items (id int PRIMARY KEY)`,
		`ALTER SYSTEM SET wal_sender_timeout = '2s'`, `SELECT pg_reload_conf()`)
	logger, _ := newLogger(t)
	r := newReaderCfg(t, postgres.Config{
		Region: "east", DSN: srv.URL("app"), Slot: "regiond_east_west",
		Tables: map[string]bool{"items": true}, StatusInterval: time.Minute,
	}, logger)
	pos, err := r.CurrentPosition(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	rd := startRead(t, r, pos, 1)
	for i := range 5 {
		exec(t, db, fmt.Sprintf(`INSERT INTO items VALUES (%d)`, i))
	}
	// The channel holds one; Read is blocked sending the next.
	time.Sleep(5 * time.Second)
	for i := range 5 {
		txn := rd.txn(t)[0]
		if got := txn.Changes[0].After[0]; got != int64(i) {
			t.Fatalf("txn %d: id %v", i, got)
		}
	}
	// The stream is still alive: a new transaction arrives.
	exec(t, db, `INSERT INTO items VALUES (5)`)
	if txn := rd.txn(t)[0]; txn.Changes[0].After[0] != int64(5) {
		t.Fatalf("after the slow sink: %s, want the insert of id 5", describe(txn.Changes))
	}
	if rd.failed() {
		t.Fatalf("Read failed while the sink was slow: %v", rd.err)
	}
}

func TestPositionLost(t *testing.T) {
	t.Parallel()
	srv, db := startServer(t)
	exec(t, db, `CREATE TABLE items (id int PRIMARY KEY, v text)`)
	logger, _ := newLogger(t)

	t.Run("slot dropped", func(t *testing.T) {
		r := newReader(t, srv, "dropped", logger, "items")
		pos, err := r.CurrentPosition(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		exec(t, db, `SELECT pg_drop_replication_slot('dropped')`)
		err = r.Read(t.Context(), pos, make(chan source.Txn, 1))
		if !errors.Is(err, checkpoint.ErrPositionLost) || !pipeline.IsPermanent(err) {
			t.Fatalf("Read after the slot was dropped: %v, want ErrPositionLost", err)
		}
		t.Logf("error: %v", err)
		// The slot is not re-created behind the checkpoint.
		var n int
		if err := db.QueryRow(t.Context(), "SELECT count(*) FROM pg_replication_slots WHERE slot_name = 'dropped'").Scan(&n); err != nil || n != 0 {
			t.Fatalf("slots named dropped: %d (%v), want 0", n, err)
		}
	})

	t.Run("slot dropped after Prepare", func(t *testing.T) {
		// Prepare runs before the position is known: the slot's checks
		// against it stay in Read.
		r := newReader(t, srv, "dropped_prepared", logger, "items")
		pos, err := r.CurrentPosition(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		if err := r.Prepare(t.Context()); err != nil {
			t.Fatal(err)
		}
		exec(t, db, `SELECT pg_drop_replication_slot('dropped_prepared')`)
		err = r.Read(t.Context(), pos, make(chan source.Txn, 1))
		if !errors.Is(err, checkpoint.ErrPositionLost) || !pipeline.IsPermanent(err) {
			t.Fatalf("Read after Prepare and the slot was dropped: %v, want ErrPositionLost", err)
		}
		r.Discard() // nothing left to release
	})

	t.Run("checkpoint ahead of the server", func(t *testing.T) {
		r := newReader(t, srv, "ahead", logger, "items")
		pos, err := r.CurrentPosition(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		err = r.Read(t.Context(), pos.(checkpoint.LSN)+1<<40, make(chan source.Txn, 1))
		if !errors.Is(err, checkpoint.ErrPositionLost) {
			t.Fatalf("Read from a position the server never reached: %v, want ErrPositionLost", err)
		}
		t.Logf("error: %v", err)
	})

	t.Run("slot invalidated", func(t *testing.T) {
		r := newReader(t, srv, "invalidated", logger, "items")
		pos, err := r.CurrentPosition(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		exec(t, db, `ALTER SYSTEM SET max_slot_wal_keep_size = '1MB'`, `SELECT pg_reload_conf()`)
		t.Cleanup(func() {
			db.Exec(context.Background(), `ALTER SYSTEM RESET max_slot_wal_keep_size`)
			db.Exec(context.Background(), `SELECT pg_reload_conf()`)
		})
		deadline := time.Now().Add(waitFor)
		for {
			var status string
			if err := db.QueryRow(t.Context(), "SELECT wal_status FROM pg_replication_slots WHERE slot_name = 'invalidated'").Scan(&status); err != nil {
				t.Fatal(err)
			}
			if status == "lost" {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("slot not invalidated (wal_status %s)", status)
			}
			exec(t, db, `INSERT INTO items SELECT g, repeat('x', 100) FROM generate_series(1, 20000) g`,
				`DELETE FROM items`, `SELECT pg_switch_wal()`, `CHECKPOINT`)
		}
		err = r.Read(t.Context(), pos, make(chan source.Txn, 1))
		if !errors.Is(err, checkpoint.ErrPositionLost) {
			t.Fatalf("Read from an invalidated slot: %v, want ErrPositionLost", err)
		}
		t.Logf("error: %v", err)
		if !strings.Contains(err.Error(), "backfill") {
			t.Errorf("error does not say a backfill is needed: %v", err)
		}
	})
}

func TestCurrentPositionReusesSlot(t *testing.T) {
	t.Parallel()
	srv, db := startServer(t)
	exec(t, db, `CREATE TABLE items (id int PRIMARY KEY)`)
	logger, _ := newLogger(t)
	r := newReader(t, srv, "regiond_east_west", logger, "items")
	p1, err := r.CurrentPosition(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	exec(t, db, `INSERT INTO items VALUES (1)`)
	p2, err := r.CurrentPosition(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if p1 != p2 {
		t.Errorf("second CurrentPosition = %v, want the existing slot's %v", p2, p1)
	}
	// Reading from there delivers the insert made in between.
	rd := startRead(t, r, p2, 4)
	if txn := rd.txn(t)[0]; len(txn.Changes) != 1 || txn.Changes[0].After[0] != int64(1) {
		t.Errorf("got %s, want the insert of id 1", describe(txn.Changes))
	}
	if got, err := r.ParsePosition(p2.String()); err != nil || got != p2 {
		t.Errorf("ParsePosition(%q) = %v, %v", p2.String(), got, err)
	}
}

func TestPublication(t *testing.T) {
	t.Parallel()
	srv, db := startServer(t)
	exec(t, db, `CREATE TABLE items (id int PRIMARY KEY)`, `CREATE TABLE other (id int PRIMARY KEY)`,
		`CREATE TABLE more (id int PRIMARY KEY)`,
		`CREATE PUBLICATION regiond FOR TABLE other, items WHERE (id > 5) WITH (publish = 'insert')`)
	logger, _ := newLogger(t)
	r := newReader(t, srv, "regiond_east_west", logger, "items", "more")
	if _, err := r.CurrentPosition(t.Context()); err != nil {
		t.Fatal(err)
	}
	rows, err := db.Query(t.Context(), `SELECT tablename::text || coalesce(' WHERE ' || rowfilter, '') FROM pg_publication_tables WHERE pubname = 'regiond' ORDER BY 1`)
	if err != nil {
		t.Fatal(err)
	}
	got, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]string{"items", "more", "regiond_checkpoints"}, got); diff != "" {
		t.Errorf("publication tables (-want +got):\n%s", diff)
	}
	var upd, del bool
	if err := db.QueryRow(t.Context(), "SELECT pubupdate, pubdelete FROM pg_publication WHERE pubname = 'regiond'").Scan(&upd, &del); err != nil || !upd || !del {
		t.Errorf("publication publishes update %v delete %v (%v), want both", upd, del, err)
	}
	// A second reader of the region (another pipeline) changes nothing.
	r2 := newReader(t, srv, "regiond_east_north", logger, "items", "more")
	if _, err := r2.CurrentPosition(t.Context()); err != nil {
		t.Fatal(err)
	}
}

// TestAllTablesPublication: a publication FOR ALL TABLES is accepted as it
// is; changes of tables that are not configured are dropped, and a
// transaction left with none still arrives, empty, for its position.
func TestAllTablesPublication(t *testing.T) {
	t.Parallel()
	srv, db := startServer(t)
	exec(t, db, `CREATE TABLE items (id int PRIMARY KEY)`, `CREATE TABLE other (id int PRIMARY KEY)`,
		`CREATE PUBLICATION regiond FOR ALL TABLES`)
	logger, _ := newLogger(t)
	r := newReader(t, srv, "regiond_east_west", logger, "items")
	pos, err := r.CurrentPosition(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	rd := startRead(t, r, pos, 4)
	exec(t, db, `INSERT INTO other VALUES (1)`)
	if txn := rd.txn(t)[0]; len(txn.Changes) != 0 || txn.End == nil {
		t.Errorf("transaction on other only: %s (End %v), want no changes with an End", describe(txn.Changes), txn.End)
	}
	exec(t, db, `BEGIN; INSERT INTO other VALUES (2); INSERT INTO items VALUES (2); COMMIT`)
	want := []change{{Table: "items", Op: source.Insert, After: source.Row{int64(2)}}}
	if diff := cmp.Diff(want, flatten(rd.txn(t)[0].Changes), cmpOpts); diff != "" {
		t.Errorf("changes (-want +got):\n%s", diff)
	}
	var all bool
	if err := db.QueryRow(t.Context(), "SELECT puballtables FROM pg_publication WHERE pubname = 'regiond'").Scan(&all); err != nil || !all {
		t.Errorf("publication altered: puballtables %v (%v)", all, err)
	}
}

func TestPreflight(t *testing.T) {
	t.Parallel()
	srv, db := startServer(t)
	exec(t, db,
		`CREATE TABLE good (id int PRIMARY KEY)`,
		`CREATE TABLE nopk (id int, v text)`,
		`CREATE TABLE nothing (id int PRIMARY KEY)`, `ALTER TABLE nothing REPLICA IDENTITY NOTHING`,
		`CREATE TABLE byindex (id int PRIMARY KEY, u int NOT NULL UNIQUE)`, `ALTER TABLE byindex REPLICA IDENTITY USING INDEX byindex_u_key`,
		`CREATE TABLE fullid (id int PRIMARY KEY)`, `ALTER TABLE fullid REPLICA IDENTITY FULL`,
		`CREATE VIEW aview AS SELECT 1 AS id`,
	)
	logger, _ := newLogger(t)
	tests := []struct {
		table string
		want  []string // in the message; "" means no error
	}{
		{"good", nil},
		{"fullid", nil},
		{"nopk", []string{"region east", `"public"."nopk" has no primary key`, "ADD PRIMARY KEY"}},
		{"missing", []string{"region east", `"public"."missing" does not exist`}},
		{"nothing", []string{"region east", "REPLICA IDENTITY NOTHING", `ALTER TABLE "public"."nothing" REPLICA IDENTITY FULL`}},
		{"byindex", []string{"REPLICA IDENTITY USING INDEX", `ALTER TABLE "public"."byindex" REPLICA IDENTITY FULL`}},
		{"aview", []string{"is not a table"}},
	}
	for _, tc := range tests {
		t.Run(tc.table, func(t *testing.T) {
			r := newReader(t, srv, "slot_"+tc.table, logger, tc.table)
			if err := r.Preflight(t.Context()); (err == nil) != (tc.want == nil) {
				t.Errorf("Preflight: %v", err)
			}
			_, err := r.CurrentPosition(t.Context())
			if tc.want == nil {
				if err != nil {
					t.Fatalf("CurrentPosition: %v", err)
				}
				return
			}
			if err == nil || !pipeline.IsPermanent(err) {
				t.Fatalf("CurrentPosition: %v, want a permanent error", err)
			}
			t.Logf("error: %v", err)
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not contain %q", err, w)
				}
			}
			// Read runs the same checks, before anything else.
			err = r.Read(t.Context(), checkpoint.LSN(1), make(chan source.Txn, 1))
			if err == nil || !pipeline.IsPermanent(err) || !strings.Contains(err.Error(), tc.want[len(tc.want)-1]) {
				t.Errorf("Read: %v, want the preflight error", err)
			}
			// Nothing was created.
			var n int
			if err := db.QueryRow(t.Context(), "SELECT count(*) FROM pg_replication_slots WHERE slot_name = $1", "slot_"+tc.table).Scan(&n); err != nil || n != 0 {
				t.Errorf("slot created after a failed preflight (%d, %v)", n, err)
			}
		})
	}

	t.Run("wal_level", func(t *testing.T) {
		srv, db := startServer(t)
		exec(t, db, `CREATE TABLE good (id int PRIMARY KEY)`, `ALTER SYSTEM SET wal_level = replica`)
		db.Close(t.Context())
		if err := srv.Stop(); err != nil {
			t.Fatal(err)
		}
		if err := srv.Restart(t.Context()); err != nil {
			t.Fatal(err)
		}
		r := newReader(t, srv, "slot_wal", logger, "good")
		_, err := r.CurrentPosition(t.Context())
		if err == nil || !pipeline.IsPermanent(err) || !strings.Contains(err.Error(), "ALTER SYSTEM SET wal_level = logical") {
			t.Fatalf("CurrentPosition on wal_level=replica: %v, want a permanent error with the fix", err)
		}
		t.Logf("error: %v", err)
		db2, err := pgconn.Connect(t.Context(), srv.URL("app"))
		if err != nil {
			t.Fatal(err)
		}
		defer db2.Close(context.Background())
		var pubs int
		if err := db2.QueryRow(t.Context(), "SELECT count(*) FROM pg_publication").Scan(&pubs); err != nil || pubs != 0 {
			t.Errorf("%d publications (%v) after a failed preflight, want 0", pubs, err)
		}
	})
}

// TestUnrepresentable checks that values no canonical form holds stop the
// pipeline with an error naming table, key and column.
func TestUnrepresentable(t *testing.T) {
	t.Parallel()
	srv, db := startServer(t)
	exec(t, db, `CREATE TABLE odd (id int PRIMARY KEY, n numeric, ts timestamp, tstz timestamptz, d date)`)
	logger, _ := newLogger(t)
	tests := []struct {
		name, insert, column string
	}{
		{"nan_numeric", `INSERT INTO odd (id, n) VALUES (1, 'NaN')`, "column n"},
		{"infinite_timestamp", `INSERT INTO odd (id, ts) VALUES (2, 'infinity')`, "column ts"},
		{"infinite_timestamptz", `INSERT INTO odd (id, tstz) VALUES (3, '-infinity')`, "column tstz"},
		{"bc_date", `INSERT INTO odd (id, d) VALUES (4, '0044-03-15 BC')`, "column d"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := newReader(t, srv, tc.name, logger, "odd")
			pos, err := r.CurrentPosition(t.Context())
			if err != nil {
				t.Fatal(err)
			}
			exec(t, db, tc.insert)
			ctx, cancel := context.WithTimeout(t.Context(), waitFor)
			defer cancel()
			err = r.Read(ctx, pos, make(chan source.Txn, 1))
			if !pipeline.IsPermanent(err) {
				t.Fatalf("Read: %v, want a permanent error", err)
			}
			t.Logf("error: %v", err)
			for _, w := range []string{"region east", "table odd", "{id=", tc.column, "not representable"} {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not contain %q", err, w)
				}
			}
		})
	}
}
