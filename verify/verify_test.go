package verify

import (
	"context"
	"database/sql"
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5/stdlib"

	"github.com/regiond/regiond/config"
	"github.com/regiond/regiond/internal/testenv"
	pgsink "github.com/regiond/regiond/sink/postgres"
	"github.com/regiond/regiond/snapshot"
)

// The canonical table has only types whose values have a common text in
// SQL on both engines; the rows table adds floats and JSON, which do not.
const (
	canonMySQL = "CREATE TABLE canon (id BIGINT NOT NULL PRIMARY KEY, i16 SMALLINT, i32 INT, u32 INT UNSIGNED, u64 BIGINT UNSIGNED," +
		" dec1 DECIMAL(20,6), c CHAR(8), vc VARCHAR(200), tx TEXT, en ENUM('red','green','blue'), st SET('a','b','c')," +
		" bin VARBINARY(40), dt DATE, dtm DATETIME(6), ts TIMESTAMP(6) NULL DEFAULT NULL, tm TIME(6), yr YEAR, bt BIT(10), flag TINYINT(1))" +
		" DEFAULT CHARSET=utf8mb4"
	canonPostgres = "CREATE TABLE canon (id bigint PRIMARY KEY, i16 smallint, i32 integer, u32 bigint, u64 numeric(20,0)," +
		" dec1 numeric(20,6), c char(8), vc varchar(200), tx text, en text, st text," +
		" bin bytea, dt date, dtm timestamp(6), ts timestamptz(6), tm time(6), yr smallint, bt bit(10), flag boolean)"
	rowsMySQL    = "CREATE TABLE rowsonly (id BIGINT NOT NULL PRIMARY KEY, f FLOAT, d DOUBLE, js JSON, vc VARCHAR(20))"
	rowsPostgres = "CREATE TABLE rowsonly (id bigint PRIMARY KEY, f real, d double precision, js jsonb, vc varchar(20))"
	// Composite key with text whose order differs between the engines'
	// collations (MariaDB's default is case-insensitive).
	ckeyMySQL    = "CREATE TABLE ckey (a INT NOT NULL, b VARCHAR(10) NOT NULL, v INT, PRIMARY KEY (a, b))"
	ckeyPostgres = "CREATE TABLE ckey (a integer, b varchar(10), v integer, PRIMARY KEY (a, b))"
)

// canonValues returns a row of canon in MySQL literal syntax; some values
// NULL.
func canonValues(rng *rand.Rand, id int) string {
	maybe := func(s string) string {
		if rng.IntN(8) == 0 {
			return "NULL"
		}
		return s
	}
	enums := []string{"red", "green", "blue"}
	sets := []string{"", "a", "b,c", "a,b,c"}
	v := []string{
		fmt.Sprint(id),
		maybe(fmt.Sprint(rng.IntN(65536) - 32768)),
		maybe(fmt.Sprint(rng.Int32())),
		maybe(fmt.Sprint(rng.Uint32())),
		maybe(fmt.Sprint(rng.Uint64())),
		maybe(fmt.Sprintf("%d.%06d", rng.IntN(1e9)-5e8, rng.IntN(1e6))),
		maybe(fmt.Sprintf("'c%d'", rng.IntN(1000))),
		maybe(fmt.Sprintf("'vc é %d ü'", rng.IntN(1e6))),
		maybe(fmt.Sprintf("'tx %s'", strings.Repeat("x", rng.IntN(50)))),
		maybe("'" + enums[rng.IntN(3)] + "'"),
		maybe("'" + sets[rng.IntN(4)] + "'"),
		maybe(fmt.Sprintf("X'%08x00ff'", rng.Uint32())),
		maybe(fmt.Sprintf("'20%02d-%02d-%02d'", rng.IntN(99), 1+rng.IntN(12), 1+rng.IntN(28))),
		maybe(fmt.Sprintf("'2024-%02d-%02d %02d:%02d:%02d.%06d'", 1+rng.IntN(12), 1+rng.IntN(28), rng.IntN(24), rng.IntN(60), rng.IntN(60), rng.IntN(1e6))),
		maybe(fmt.Sprintf("'2023-%02d-%02d %02d:%02d:%02d.%03d'", 1+rng.IntN(12), 1+rng.IntN(28), rng.IntN(24), rng.IntN(60), rng.IntN(60), rng.IntN(1e3))),
		maybe(fmt.Sprintf("'%02d:%02d:%02d.%06d'", rng.IntN(24), rng.IntN(60), rng.IntN(60), rng.IntN(1e6))),
		maybe(fmt.Sprint(1901 + rng.IntN(200))),
		maybe(fmt.Sprintf("b'%b'", rng.IntN(1024))),
		maybe(fmt.Sprint(rng.IntN(2))),
	}
	return "(" + strings.Join(v, ", ") + ")"
}

// copyRows copies table from a to b as a pipeline would: read as canonical
// rows, written with the PostgreSQL applier's statements.
func copyRows(t *testing.T, ctx context.Context, from, to *snapshot.DB, table string) {
	t.Helper()
	src, err := from.Table(ctx, table)
	if err != nil {
		t.Fatal(err)
	}
	rows, err := src.Read(ctx, from.SQL, snapshot.Range{}, false)
	if err != nil {
		t.Fatal(err)
	}
	conn, err := to.SQL.Conn(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	var stmts *pgsink.RowStatements
	if err := conn.Raw(func(dc any) error {
		var err error
		stmts, err = pgsink.LoadRowStatements(ctx, dc.(*stdlib.Conn).Conn(), "p", "public", src.Def)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	q, args := stmts.Upsert(rows)
	if _, err := conn.ExecContext(ctx, q, args...); err != nil {
		t.Fatal(err)
	}
}

// openDB opens a region's database for the test.
func openDB(t *testing.T, r config.Region) *sql.DB {
	t.Helper()
	db, err := snapshot.Open(r)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db.SQL
}

func exec(t *testing.T, db *sql.DB, stmts ...string) {
	t.Helper()
	for _, q := range stmts {
		if _, err := db.Exec(q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
}

// TestCrossEngineChecksums: rows copied from MariaDB to PostgreSQL through
// the applier's type mapping checksum alike in SQL on both engines (no
// differing chunk), and a value changed in any one column is found in that
// column and nowhere else, with both methods.
func TestCrossEngineChecksums(t *testing.T) {
	ctx := context.Background()
	m := testenv.MariaDB(t, 1)
	p := testenv.Postgres(t)
	cfg := &config.Config{
		Regions: []config.Region{
			{Name: "m", Engine: config.EngineMySQL, DSN: m.URL("app")},
			{Name: "p", Engine: config.EnginePostgres, DSN: p.URL("app")},
		},
		Tables: map[string]config.Table{"canon": {}, "rowsonly": {}, "ckey": {}},
	}
	mdb, err := snapshot.Open(cfg.Regions[0])
	if err != nil {
		t.Fatal(err)
	}
	defer mdb.Close()
	pdb, err := snapshot.Open(cfg.Regions[1])
	if err != nil {
		t.Fatal(err)
	}
	defer pdb.Close()
	exec(t, mdb.SQL, canonMySQL, rowsMySQL, ckeyMySQL)
	exec(t, pdb.SQL, canonPostgres, rowsPostgres, ckeyPostgres)
	rng := rand.New(rand.NewPCG(1, 2))
	const n = 1000
	var vals []string
	for id := 1; id <= n; id++ {
		vals = append(vals, canonValues(rng, id))
	}
	exec(t, mdb.SQL, "INSERT INTO canon VALUES "+strings.Join(vals, ", "))
	vals = vals[:0]
	for id := 1; id <= n; id++ {
		vals = append(vals, fmt.Sprintf("(%d, %g, %g, '{\"b\": [1, 2.5], \"a\": \"x%d\"}', 'v%d')", id, rng.Float32()*1e6, rng.NormFloat64()*1e12, id, id))
	}
	exec(t, mdb.SQL, "INSERT INTO rowsonly VALUES "+strings.Join(vals, ", "))
	vals = vals[:0]
	for i := range n {
		vals = append(vals, fmt.Sprintf("(%d, '%c%d', %d)", i%7, "aBcDeF"[i%6], i, i))
	}
	exec(t, mdb.SQL, "INSERT INTO ckey VALUES "+strings.Join(vals, ", "))
	copyRows(t, ctx, mdb, pdb, "ckey")
	copyRows(t, ctx, mdb, pdb, "canon")
	copyRows(t, ctx, mdb, pdb, "rowsonly")

	opts := Options{Config: cfg, ChunkRows: 100}
	rep, err := Run(ctx, opts)
	if err != nil {
		t.Fatal(err)
	}
	methods := map[string]string{"canon": methodCanonical, "rowsonly": methodRows, "ckey": methodCanonical}
	for _, tr := range rep.Tables {
		if tr.Method != methods[tr.Table] {
			t.Errorf("table %s: method %q, want %q", tr.Table, tr.Method, methods[tr.Table])
		}
		if tr.RowsCompared != n {
			t.Errorf("table %s: %d rows compared, want %d", tr.Table, tr.RowsCompared, n)
		}
		if len(tr.Differences) > 0 {
			t.Errorf("table %s: %d rows compared, %d differences, first %.600s", tr.Table, tr.RowsCompared, len(tr.Differences), describe(tr.Differences[0]))
		}
		if tr.Table == "canon" && tr.ChunksDiffering != 0 {
			t.Errorf("table %s: %d of %d chunks checksum differently for the same rows", tr.Table, tr.ChunksDiffering, tr.Chunks)
		}
	}

	// One change per column, each in its own row, in PostgreSQL.
	changes := map[string]string{
		"i16": "i16 = coalesce(i16, 0) + 1", "i32": "i32 = coalesce(i32, 0) + 1", "u32": "u32 = coalesce(u32, 0) + 1",
		"u64": "u64 = coalesce(u64, 0) + 1", "dec1": "dec1 = coalesce(dec1, 0) + 0.000001", "c": "c = 'zz'",
		"vc": "vc = coalesce(vc, '') || '!'", "tx": "tx = NULL", "en": "en = 'purple'", "st": "st = 'a,c'",
		"bin": "bin = '\\x00'", "dt": "dt = '1999-12-31'", "dtm": "dtm = coalesce(dtm, '2000-01-01') + interval '1 microsecond'",
		"ts": "ts = coalesce(ts, '2000-01-01') + interval '1 millisecond'", "tm": "tm = '23:59:59.5'", "yr": "yr = 1900",
		"bt": "bt = B'1111111111'", "flag": "flag = NOT coalesce(flag, false)",
	}
	want := map[string]string{}
	id := 10
	for col, set := range changes {
		id++
		exec(t, pdb.SQL, fmt.Sprintf("UPDATE canon SET %s WHERE id = %d", set, id))
		want[fmt.Sprintf(`{"id":%d}`, id)] = col
	}
	exec(t, pdb.SQL, "UPDATE rowsonly SET f = f * 2 WHERE id = 3", "UPDATE rowsonly SET js = '{\"a\": 1}' WHERE id = 4", "DELETE FROM rowsonly WHERE id = 5")
	exec(t, mdb.SQL, "DELETE FROM canon WHERE id = 7", "INSERT INTO canon (id) VALUES (5000)")
	exec(t, pdb.SQL, "UPDATE ckey SET v = -1 WHERE a = 3 AND b = 'D3'", "DELETE FROM ckey WHERE a = 1 AND b = 'B1'", "INSERT INTO ckey VALUES (9, 'zz', 0)")
	for _, rows := range []bool{false, true} {
		opts.CompareRows = rows
		rep, err := Run(ctx, opts)
		if err != nil {
			t.Fatal(err)
		}
		for _, tr := range rep.Tables {
			got := map[string]string{}
			for _, d := range tr.Differences {
				got[d.Key] = strings.Join(d.Columns, ",")
				if len(d.Missing) > 0 {
					got[d.Key] = "missing in " + strings.Join(d.Missing, ",")
				}
			}
			w := want
			switch tr.Table {
			case "ckey":
				w = map[string]string{`{"a":3,"b":"D3"}`: "v", `{"a":1,"b":"B1"}`: "missing in p", `{"a":9,"b":"zz"}`: "missing in m"}
			case "rowsonly":
				w = map[string]string{`{"id":3}`: "f", `{"id":4}`: "js", `{"id":5}`: "missing in p"}
			default:
				w[`{"id":7}`] = "missing in m"
				w[`{"id":5000}`] = "missing in p"
			}
			for k, col := range w {
				if got[k] != col {
					t.Errorf("compare rows %v: table %s key %s: differs in %q, want %q", rows, tr.Table, k, got[k], col)
				}
			}
			if len(got) != len(w) {
				t.Errorf("compare rows %v: table %s: %d differences, want %d: first %.600s", rows, tr.Table, len(got), len(w), describe(tr.Differences[0]))
			}
		}
	}
}
