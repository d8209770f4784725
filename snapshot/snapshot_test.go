package snapshot

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/regiond/regiond/config"
	"github.com/regiond/regiond/internal/dbtest"
	"github.com/regiond/regiond/internal/testenv"
	"github.com/regiond/regiond/source"
)

func openMariaDB(t *testing.T) *DB {
	t.Helper()
	s := testenv.MariaDB(t, 1)
	db, err := Open(config.Region{Name: "east", Engine: config.EngineMySQL, DSN: fmt.Sprintf("mysql://root@127.0.0.1:%d/app", s.Port)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

func openPostgres(t *testing.T) *DB {
	t.Helper()
	s := testenv.Postgres(t)
	db, err := Open(config.Region{Name: "west", Engine: config.EnginePostgres, DSN: s.URL("app")})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

func exec(t *testing.T, db *DB, stmts ...string) {
	t.Helper()
	for _, q := range stmts {
		if _, err := db.SQL.Exec(q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
}

// readAll reads every range of tb and checks that the ranges partition the
// rows: each row once, in key order.
func readAll(t *testing.T, tb *Table, n int) ([]Range, []source.Row) {
	t.Helper()
	ctx := context.Background()
	ranges, err := tb.Bounds(ctx, tb.db.SQL, n)
	if err != nil {
		t.Fatal(err)
	}
	var all []source.Row
	for i, r := range ranges {
		rows, err := tb.Read(ctx, tb.db.SQL, r, i%2 == 0)
		if err != nil {
			t.Fatal(err)
		}
		if i < len(ranges)-1 && len(rows) != n {
			t.Errorf("range %d holds %d rows, want %d", i, len(rows), n)
		}
		all = append(all, rows...)
	}
	whole, err := tb.Read(ctx, tb.db.SQL, Range{}, false)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(whole, all); diff != "" {
		t.Fatalf("chunks differ from one read of the whole table (-whole +chunks):\n%s", diff)
	}
	return ranges, all
}

func TestMariaDBCanonicalRowsAndChunks(t *testing.T) {
	db := openMariaDB(t)
	exec(t, db, `CREATE TABLE t (
		a INT NOT NULL, b VARCHAR(10) NOT NULL,
		u BIGINT UNSIGNED, d DECIMAL(10,3), f FLOAT, g DOUBLE, s TEXT, bin VARBINARY(8),
		dt DATETIME(6), ts TIMESTAMP(6) NULL, dd DATE, tm TIME(3), e ENUM('x','y'), st SET('p','q'), bits BIT(5), j JSON, y YEAR,
		PRIMARY KEY (a, b))`)
	var vals []string
	for a := 1; a <= 7; a++ {
		for _, b := range []string{"k", "ä", ""} {
			vals = append(vals, fmt.Sprintf("(%d, '%s', 18446744073709551615, -1.500, 0.1, 0.1, '', 0x00ff, '2024-02-29 13:14:15.5', '2024-01-01 00:00:00.000001', '2024-02-29', '-838:59:59', 'y', 'p,q', b'00101', '{\"k\": [1, 2]}', 2024)", a, b))
		}
	}
	exec(t, db, "INSERT INTO t VALUES "+strings.Join(vals, ","),
		"INSERT INTO t (a, b) VALUES (8, 'z')")
	tb, err := db.Table(context.Background(), "t")
	if err != nil {
		t.Fatal(err)
	}
	if got, want := tb.KeyNames(), []string{"a", "b"}; !cmp.Equal(got, want) {
		t.Fatalf("key %v, want %v", got, want)
	}
	ranges, rows := readAll(t, tb, 4)
	if len(rows) != 22 || len(ranges) != 6 {
		t.Fatalf("%d rows in %d ranges, want 22 in 6", len(rows), len(ranges))
	}
	if got, want := ranges[len(ranges)-1].Hi, (Key{int64(8), "z"}); !cmp.Equal(got, want) {
		t.Errorf("last bound %v, want %v", got, want)
	}
	want := source.Row{int64(1), "", uint64(18446744073709551615), source.Decimal("-1.500"), float32(0.1), 0.1, "", []byte{0, 0xff},
		source.DateTime("2024-02-29 13:14:15.500000"), source.Timestamp("2024-01-01 00:00:00.000001"), source.Date("2024-02-29"),
		source.Time("-838:59:59.000"), "y", "p,q", source.Bits("00101"), `{"k": [1, 2]}`, int64(2024)} // MariaDB JSON is LONGTEXT
	if diff := cmp.Diff(want, rows[0]); diff != "" {
		t.Errorf("first row (-want +got):\n%s", diff)
	}
	last := rows[len(rows)-1]
	if last[0] != int64(8) || last[1] != "z" || last[2] != nil || last[6] != nil {
		t.Errorf("last row %v: want key (8, z) and NULLs", last)
	}
}

func TestPostgresCanonicalRowsAndChunks(t *testing.T) {
	db := openPostgres(t)
	exec(t, db, `CREATE TABLE t (id bigint PRIMARY KEY, b boolean, n numeric(20,0), r real, s text, bin bytea,
		ts timestamptz(6), dt timestamp(3), j jsonb, bits bit(3), u uuid, c char(4))`,
		`INSERT INTO t SELECT g, g % 2 = 0, 18446744073709551615, 0.1, CASE WHEN g = 3 THEN '' ELSE 'x' || g END, '\x00ff',
			'2024-01-01 10:00:00+02', '2024-02-29 13:14:15.5', '{"b": 1, "a": [true]}', B'101', 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', 'ab'
			FROM generate_series(1, 1000) g`,
		"INSERT INTO t (id) VALUES (1000000)")
	tb, err := db.Table(context.Background(), "t")
	if err != nil {
		t.Fatal(err)
	}
	ranges, rows := readAll(t, tb, 100)
	if len(rows) != 1001 || len(ranges) != 11 {
		t.Fatalf("%d rows in %d ranges, want 1001 in 11", len(rows), len(ranges))
	}
	want := source.Row{int64(3), false, source.Decimal("18446744073709551615"), float32(0.1), "", []byte{0, 0xff},
		source.Timestamp("2024-01-01 08:00:00.000000"), source.DateTime("2024-02-29 13:14:15.500"), source.JSON(`{"a": [true], "b": 1}`),
		source.Bits("101"), "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11", "ab  "}
	if diff := cmp.Diff(want, rows[2]); diff != "" {
		t.Errorf("row 3 (-want +got):\n%s", diff)
	}
	if last := rows[len(rows)-1]; last[0] != int64(1000000) || last[4] != nil {
		t.Errorf("last row %v: want id 1000000 and NULLs", last)
	}
	// Ranges read again after changes: a key inside a range is found there.
	exec(t, db, "INSERT INTO t (id) VALUES (1001)", "UPDATE t SET id = 5000 WHERE id = 1000")
	got, err := tb.Read(context.Background(), db.SQL, ranges[len(ranges)-1], true)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 3 || got[2][0] != int64(1000000) {
		t.Errorf("last range after an insert holds %d rows, want 3 ending at 1000000", len(got))
	}
}

func TestCrossEngineReadsAgree(t *testing.T) {
	// The same rows written through both engines read as the same canonical
	// values where the type mapping says they are equal.
	my, pg := openMariaDB(t), openPostgres(t)
	exec(t, my, "CREATE TABLE t (id INT PRIMARY KEY, d DECIMAL(8,2), s VARCHAR(20), bin BLOB, dt DATETIME(6))",
		`INSERT INTO t VALUES (1, 12.50, 'héllo', 0x0102, '2024-05-06 07:08:09.123456'), (2, NULL, '', '', NULL)`)
	exec(t, pg, "CREATE TABLE t (id integer PRIMARY KEY, d numeric(8,2), s varchar(20), bin bytea, dt timestamp(6))",
		`INSERT INTO t VALUES (1, 12.50, 'héllo', '\x0102', '2024-05-06 07:08:09.123456'), (2, NULL, '', '', NULL)`)
	read := func(db *DB) []source.Row {
		tb, err := db.Table(context.Background(), "t")
		if err != nil {
			t.Fatal(err)
		}
		rows, err := tb.Read(context.Background(), db.SQL, Range{}, false)
		if err != nil {
			t.Fatal(err)
		}
		return rows
	}
	if diff := cmp.Diff(read(my), read(pg)); diff != "" {
		t.Errorf("MariaDB (-) and PostgreSQL (+) read differently:\n%s", diff)
	}
	dbtest.WaitEqualCanonical(t, 0, "t",
		dbtest.Region{Name: "east", Engine: "mysql", DB: my.SQL}, dbtest.Region{Name: "west", Engine: "postgres", DB: pg.SQL})
}

func TestMissingTableAndEmptyTable(t *testing.T) {
	db := openMariaDB(t)
	exec(t, db, "CREATE TABLE empty (id INT PRIMARY KEY)", "CREATE TABLE nokey (id INT)")
	ctx := context.Background()
	for _, name := range []string{"absent", "nokey"} {
		if _, err := db.Table(ctx, name); !errors.Is(err, ErrNoTable) || !strings.Contains(err.Error(), name) {
			t.Errorf("table %s: err %v, want ErrNoTable naming it", name, err)
		}
	}
	tb, err := db.Table(ctx, "empty")
	if err != nil {
		t.Fatal(err)
	}
	if r, err := tb.Bounds(ctx, db.SQL, 10); err != nil || len(r) != 0 {
		t.Errorf("empty table: ranges %v, err %v; want none", r, err)
	}
}
