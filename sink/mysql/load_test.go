package mysql

import (
	"context"
	"database/sql"
	"fmt"
	"math"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/regiond/regiond/checkpoint"
	"github.com/regiond/regiond/internal/dbtest"
	"github.com/regiond/regiond/internal/testenv"
	"github.com/regiond/regiond/sink/batch"
	"github.com/regiond/regiond/source"
)

// typesTable has a column of every common type (as e2e's items table).
const typesTable = " (" +
	"id BIGINT NOT NULL PRIMARY KEY," +
	"i8 TINYINT, u8 TINYINT UNSIGNED, i16 SMALLINT, u16 SMALLINT UNSIGNED, i24 MEDIUMINT, u24 MEDIUMINT UNSIGNED," +
	"i32 INT, u32 INT UNSIGNED, i64 BIGINT, u64 BIGINT UNSIGNED," +
	"dec1 DECIMAL(30,10), f FLOAT, d DOUBLE," +
	"c CHAR(8), vc VARCHAR(200), tx TEXT, lat VARCHAR(40) CHARACTER SET latin1," +
	"bin BINARY(4), vbin VARBINARY(300), bl BLOB," +
	"dt DATE, dtm0 DATETIME, dtm3 DATETIME(3), dtm6 DATETIME(6), ts0 TIMESTAMP NULL DEFAULT NULL, ts6 TIMESTAMP(6) NULL DEFAULT NULL," +
	"tm TIME(2), yr YEAR, js JSON, en ENUM('red','green','blue'), st SET('a','b','c','d'), bt BIT(10), flag TINYINT(1)" +
	") DEFAULT CHARSET=utf8mb4"

var typesColumns = []string{"id", "i8", "u8", "i16", "u16", "i24", "u24", "i32", "u32", "i64", "u64",
	"dec1", "f", "d", "c", "vc", "tx", "lat", "bin", "vbin", "bl",
	"dt", "dtm0", "dtm3", "dtm6", "ts0", "ts6", "tm", "yr", "js", "en", "st", "bt", "flag"}

func typesSourceTable(name string) *source.Table {
	t := &source.Table{Name: name, PK: []int{0}}
	for _, c := range typesColumns {
		t.Columns = append(t.Columns, source.Column{Name: c})
	}
	return t
}

// typesRows are canonical rows (as the binlog reader produces them) with
// every value the load form must escape or convert: NULLs, every byte
// value, tabs, newlines, backslashes and "\N" in text, 4-byte UTF-8, text
// for a latin1 column, zero dates, extreme numbers, JSON, BIT.
func typesRows() []source.Row {
	every := make([]byte, 256)
	for i := range every {
		every[i] = byte(i)
	}
	nasty := "a\tb\nc\\d\\N\r\x00e 😀 \"'`,;"
	rows := []source.Row{
		{int64(1), int64(-5), uint64(200), int64(-300), uint64(60000), int64(-8000000), uint64(16000000),
			int64(-2000000000), uint64(4000000000), int64(-9000000000000000000), uint64(18000000000000000000),
			source.Decimal("-12345678901234567890.0123456789"), float32(3.25), float64(-1.5e-300),
			"abc", "hello, world", "some text", "caf\u00e9 na\u00efve",
			[]byte("ab\x00\xff"), []byte{0, 1, 2, 0xfe}, []byte("blob"),
			source.Date("2024-02-29"), source.DateTime("2024-02-29 23:59:59"), source.DateTime("2024-02-29 23:59:59.123"),
			source.DateTime("2024-02-29 23:59:59.123456"), source.Timestamp("2038-01-19 03:14:07"), source.Timestamp("1970-01-01 00:00:01.000001"),
			source.Time("-838:59:59.00"), int64(2155), source.JSON(`{"a": [1, 2.5, null, "x\ty"], "b": {"c": "\u00e9"}}`),
			"blue", "a,c,d", source.Bits("1010000101"), int64(1)},
		make(source.Row, len(typesColumns)), // NULL in every column but the key
		{int64(3), int64(math.MinInt8), uint64(math.MaxUint8), int64(math.MinInt16), uint64(math.MaxUint16), int64(-1 << 23), uint64(1<<24 - 1),
			int64(math.MinInt32), uint64(math.MaxUint32), int64(math.MinInt64), uint64(math.MaxUint64),
			source.Decimal("99999999999999999999.9999999999"), float32(math.MaxFloat32), float64(math.SmallestNonzeroFloat64),
			"", nasty, nasty + strings.Repeat("\\\t\n", 100), "\\N",
			[]byte{'\t', '\n', '\\', 0}, append([]byte{0xf0, 0x9f, '\\', '\t', 0xe0, '\n', 0xc3}, every[:200]...), every,
			source.Date("0000-00-00"), source.DateTime("0000-00-00 00:00:00"), source.DateTime("1000-01-01 00:00:00.000"),
			source.DateTime("9999-12-31 23:59:59.999999"), source.Timestamp("1970-01-01 00:00:01"), source.Timestamp("2038-01-19 03:14:07.999999"),
			source.Time("838:59:59.99"), int64(1901), source.JSON(`"\\N"`),
			"green", "", source.Bits("0000000000"), int64(0)},
		{int64(4), int64(0), uint64(0), int64(0), uint64(0), int64(0), uint64(0), int64(0), uint64(0), int64(0), uint64(0),
			source.Decimal("0.0000000001"), float32(-0.1), float64(1) / 3,
			"\\", "N", "\\\\N", "",
			[]byte{}, []byte{}, []byte{},
			source.Date("1000-01-01"), source.DateTime("1000-01-01 00:00:00"), source.DateTime("2000-01-01 00:00:00.5"),
			source.DateTime("2000-01-01 00:00:00.000001"), nil, nil,
			source.Time("00:00:00"), int64(0), source.JSON(`[]`),
			"red", "b", source.Bits("1111111111"), int64(-1)},
	}
	rows[1][0] = int64(2)
	// Values of other kinds than the column's: an integer in a BIT, a
	// YEAR, a text column; binary data in a BIT column; text in numbers.
	r5 := make(source.Row, len(typesColumns))
	r5[0], r5[32], r5[28], r5[15], r5[13], r5[9] = int64(5), int64(645), uint64(0), int64(-42), "2.5e3", source.Decimal("77")
	// Full columns of multi-byte characters: a length is counted in
	// characters, not bytes, also when the stream is read as binary.
	r5[14], r5[16] = strings.Repeat("\u00e9", 8), strings.Repeat("\U0001F600", 200)
	r6 := make(source.Row, len(typesColumns))
	r6[0], r6[32], r6[28], r6[16] = int64(6), []byte{2, 1}, int64(69), uint64(math.MaxUint64)
	r6[15] = strings.Repeat("\U0001F600", 200)
	return append(rows, r5, r6)
}

// loadApplier opens an applier on srv for tables, with LOAD DATA unless
// noLoad.
func loadApplier(t *testing.T, srv *testenv.Server, name string, tables []string, noLoad bool) *Applier {
	t.Helper()
	return openApplier(t, Config{
		Pipeline: name, Source: "east", Target: "west", Conn: dbtest.Params(srv), Tables: tables,
		Rules:      &batch.Rules{Pipeline: name, Origin: "east", Target: "west"},
		NoLoadData: noLoad, Lanes: 1,
	}, "0-1-1")
}

// applyInserts applies rows as one source transaction of inserts.
func applyInserts(ctx context.Context, a *Applier, tbl *source.Table, rows []source.Row) error {
	in := make(chan source.Txn, 1)
	txn := source.Txn{End: pos("0-1-2"), Origin: "east"}
	for _, r := range rows {
		txn.Changes = append(txn.Changes, source.Change{Table: tbl, Op: source.Insert, After: r, TxnID: "0-1-2"})
	}
	in <- txn
	close(in)
	return a.Apply(ctx, in, func(checkpoint.Position, bool) {})
}

func checksum(t *testing.T, db *sql.DB, table string) int64 {
	t.Helper()
	var name string
	var sum int64
	if err := db.QueryRow("CHECKSUM TABLE "+quote(table)).Scan(&name, &sum); err != nil {
		t.Fatal(err)
	}
	return sum
}

func dump(t *testing.T, db *sql.DB, table string) []string {
	t.Helper()
	d, err := dbtest.Dump(t.Context(), db, table)
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// TestLoadWritesWhatInsertWrites: rows of every type, loaded with LOAD
// DATA, are stored exactly as the INSERT path stores them (same dump, same
// checksum of the stored rows), and the load did write them all.
//
// It runs twice: with a latin1 column, where the stream is read as utf8mb4
// and converted, and with utf8mb4 columns only, where it is read as binary.
func TestLoadWritesWhatInsertWrites(t *testing.T) {
	srv := testenv.MariaDB(t, 1)
	for _, tc := range []struct{ name, def, charset string }{
		{"latin1", typesTable, "utf8mb4"},
		{"utf8mb4", strings.Replace(typesTable, " CHARACTER SET latin1", "", 1), "binary"},
	} {
		t.Run(tc.name, func(t *testing.T) { testLoadWritesWhatInsertWrites(t, srv, tc.def, tc.charset) })
	}
}

func testLoadWritesWhatInsertWrites(t *testing.T, srv *testenv.Server, def, charset string) {
	db := dbtest.Open(t, srv)
	dbtest.Exec(t, db, "DROP TABLE IF EXISTS loaded, inserted, regiond_checkpoints", "CREATE TABLE loaded"+def, "CREATE TABLE inserted"+def)
	ctx := t.Context()

	la := loadApplier(t, srv, "east->west", []string{"loaded"}, false)
	if err := applyInserts(ctx, la, typesSourceTable("loaded"), typesRows()); err != nil {
		t.Fatalf("Apply with LOAD DATA: %v", err)
	}
	ia := loadApplier(t, srv, "east->west2", []string{"inserted"}, true)
	if err := applyInserts(ctx, ia, typesSourceTable("inserted"), typesRows()); err != nil {
		t.Fatalf("Apply with INSERT: %v", err)
	}
	if q := la.lastLoad.Load(); q == nil || !strings.Contains(*q, "CHARACTER SET "+charset+" ") {
		t.Errorf("last load %v; want one read as %s", q, charset)
	}
	if n, r := la.loaded.Load(), la.refused.Load(); n != int64(len(typesRows())) || r != 0 {
		t.Errorf("LOAD DATA wrote %d rows (%d loads refused); want all %d, none refused", n, r, len(typesRows()))
	}
	// A float in a text column has no load form: the rows from it on are
	// written with INSERTs.
	more := func() []source.Row {
		rows := make([]source.Row, 3)
		for i := range rows {
			rows[i] = make(source.Row, len(typesColumns))
			rows[i][0] = int64(10 + i)
		}
		rows[1][15] = float64(0.1)
		return rows
	}
	for _, x := range []struct {
		a   *Applier
		tbl string
	}{{la, "loaded"}, {ia, "inserted"}} {
		in := make(chan source.Txn, 1)
		txn := source.Txn{End: pos("0-1-3"), Origin: "east"}
		tbl := typesSourceTable(x.tbl)
		for _, r := range more() {
			txn.Changes = append(txn.Changes, source.Change{Table: tbl, Op: source.Insert, After: r, TxnID: "0-1-3"})
		}
		in <- txn
		close(in)
		if err := x.a.Apply(ctx, in, func(checkpoint.Position, bool) {}); err != nil {
			t.Fatalf("Apply to %s: %v", x.tbl, err)
		}
	}
	if n := la.loaded.Load(); n != int64(len(typesRows())+1) {
		t.Errorf("LOAD DATA wrote %d rows; want %d (the row before the float)", n, len(typesRows())+1)
	}
	if n := ia.loaded.Load(); n != 0 {
		t.Errorf("the applier without LOAD DATA loaded %d rows", n)
	}
	if diff := cmp.Diff(dump(t, db, "inserted"), dump(t, db, "loaded")); diff != "" {
		t.Errorf("rows (-INSERT +LOAD DATA):\n%s", diff)
	}
	if a, b := checksum(t, db, "inserted"), checksum(t, db, "loaded"); a != b {
		t.Errorf("CHECKSUM TABLE: INSERT %d, LOAD DATA %d", a, b)
	}
	var n int
	if err := db.QueryRow("SELECT COUNT(*) FROM loaded").Scan(&n); err != nil || n != len(typesRows())+3 {
		t.Errorf("loaded holds %d rows (%v); want %d", n, err, len(typesRows())+3)
	}
}

// TestLoadMeetsPresentKey: LOAD DATA LOCAL skips a row whose key is
// present (it runs as LOAD DATA IGNORE); the applier sees it, and the batch
// is written as the INSERT path writes it: the present row is overwritten
// and the conflict recorded, the other rows are written once.
func TestLoadMeetsPresentKey(t *testing.T) {
	srv := testenv.MariaDB(t, 1)
	db := dbtest.Open(t, srv)
	dbtest.Exec(t, db, "CREATE TABLE loaded"+typesTable, "INSERT INTO loaded (id, vc) VALUES (3, 'west')")
	ctx := t.Context()

	a := loadApplier(t, srv, "east->west", []string{"loaded"}, false)
	if err := applyInserts(ctx, a, typesSourceTable("loaded"), typesRows()); err != nil {
		t.Fatalf("Apply: %v", err)
	}
	if r := a.refused.Load(); r != 1 {
		t.Errorf("%d loads refused; want 1 (the one that met key 3)", r)
	}
	var pk, lost string
	if err := db.QueryRow("SELECT pk, lost_image FROM regiond_conflicts").Scan(&pk, &lost); err != nil {
		t.Fatalf("conflict record: %v", err)
	}
	if pk != "[3]" || !strings.Contains(lost, `"vc":"west"`) {
		t.Errorf("conflict on %s losing %s; want key [3] losing west's row", pk, lost)
	}

	dbtest.Exec(t, db, "CREATE TABLE inserted"+typesTable)
	ia := loadApplier(t, srv, "east->west2", []string{"inserted"}, true)
	if err := applyInserts(ctx, ia, typesSourceTable("inserted"), typesRows()); err != nil {
		t.Fatalf("Apply with INSERT: %v", err)
	}
	if diff := cmp.Diff(dump(t, db, "inserted"), dump(t, db, "loaded")); diff != "" {
		t.Errorf("rows (-INSERT +LOAD DATA):\n%s", diff)
	}
}

// TestLoadBadValue: a value the target refuses in strict mode (too long,
// out of range) is stored clipped by LOAD DATA LOCAL, with a warning; the
// applier sees the warning, and the pipeline stops on the server's error
// for that row, as with INSERTs, with nothing written.
func TestLoadBadValue(t *testing.T) {
	srv := testenv.MariaDB(t, 1)
	db := dbtest.Open(t, srv)
	utf8Only := strings.Replace(typesTable, " CHARACTER SET latin1", "", 1) // a binary stream
	for i, tc := range []struct {
		name string
		col  int
		v    any
		want string
		def  string
	}{
		{"too long", 14, "123456789", "Data too long for column 'c'", typesTable},
		{"out of range", 1, int64(1000), "Out of range value for column 'i8'", typesTable},
		{"bad date", 21, source.Date("2023-02-30"), "Incorrect date value", typesTable},
		{"bad utf8", 15, string([]byte{0xff, 0xfe}), "Incorrect string value", typesTable},
		{"bad utf8 in a binary stream", 16, "ok " + string([]byte{0xc3, 0x28}), "Incorrect string value", utf8Only},
		{"bad enum in a binary stream", 30, "purple", "Data truncated for column 'en'", utf8Only},
		{"too long in a binary stream", 15, strings.Repeat("\u00e9", 201), "Data too long for column 'vc'", utf8Only},
	} {
		t.Run(tc.name, func(t *testing.T) {
			table := fmt.Sprintf("bad%d", i)
			dbtest.Exec(t, db, "CREATE TABLE "+table+tc.def)
			rows := typesRows()
			rows[2][tc.col] = tc.v
			a := loadApplier(t, srv, "east->"+table, []string{table}, false)
			err := applyInserts(t.Context(), a, typesSourceTable(table), rows)
			if err == nil || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), "id=3") {
				t.Errorf("Apply: %v; want the server's %q naming {id=3}", err, tc.want)
			}
			if a.refused.Load() == 0 {
				t.Errorf("no load was refused")
			}
			if d := dump(t, db, table); len(d) != 0 {
				t.Errorf("rows written: %q", d)
			}
		})
	}
}

// TestLoadNotAllowed: a server that stops allowing LOAD DATA LOCAL after
// the writer connected refuses the load itself; the rows go in with
// INSERTs, in the same Exec, and the applier loads no more.
func TestLoadNotAllowed(t *testing.T) {
	srv := testenv.MariaDB(t, 1)
	db := dbtest.Open(t, srv)
	dbtest.Exec(t, db, "CREATE TABLE loaded"+typesTable)
	ctx := t.Context()
	a := loadApplier(t, srv, "east->west", []string{"loaded"}, false)
	w, err := a.newWriter(ctx, "")
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	if w.load == nil {
		t.Fatal("the writer does not load: the test server does not allow LOAD DATA LOCAL")
	}
	dbtest.Exec(t, db, "SET GLOBAL local_infile = 0")
	t.Cleanup(func() { dbtest.Exec(t, db, "SET GLOBAL local_infile = 1") })
	tbl := typesSourceTable("loaded")
	var changes []source.Change
	for _, r := range typesRows() {
		changes = append(changes, source.Change{Table: tbl, Op: source.Insert, After: r, TxnID: "0-1-2"})
	}
	if err := w.Begin(ctx, pos("0-1-2")); err != nil {
		t.Fatal(err)
	}
	if err := w.Exec(ctx, changes); err != nil {
		t.Fatalf("Exec: %v", err)
	}
	if err := w.Commit(ctx, pos("0-1-2")); err != nil {
		t.Fatal(err)
	}
	if !a.noLoad.Load() || a.loaded.Load() != 0 {
		t.Errorf("noLoad %v, %d rows loaded; want the applier to stop loading, nothing loaded", a.noLoad.Load(), a.loaded.Load())
	}
	if d := dump(t, db, "loaded"); len(d) != len(typesRows()) {
		t.Errorf("%d rows written; want %d", len(d), len(typesRows()))
	}
}

// TestLoadMostlyRefused: when most loads meet rows that are there already
// (a replay after a crash), the applier stops loading; every row is still
// written and every conflict recorded.
func TestLoadMostlyRefused(t *testing.T) {
	srv := testenv.MariaDB(t, 1)
	db := dbtest.Open(t, srv)
	dbtest.Exec(t, db, "CREATE TABLE notes (id BIGINT NOT NULL PRIMARY KEY, body VARCHAR(64) NOT NULL, code BINARY(4) NOT NULL)")
	const n = 24
	for i := 1; i <= n; i++ {
		dbtest.Exec(t, db, fmt.Sprintf("INSERT INTO notes VALUES (%d, 'west', 'ab')", i))
	}
	a := openApplier(t, Config{
		Pipeline: pipelineName, Source: "east", Target: "west", Conn: dbtest.Params(srv), Tables: []string{"notes"},
		Rules: &batch.Rules{Pipeline: pipelineName, Origin: "east", Target: "west"}, Lanes: 1, BatchChanges: 1,
	}, "0-1-1")
	ctx := t.Context()
	in := make(chan source.Txn, n)
	for i := 1; i <= n; i++ {
		p := fmt.Sprintf("0-1-%d", i+1)
		in <- source.Txn{End: pos(p), Origin: "east", Changes: []source.Change{{Table: notes, Op: source.Insert, After: note(int64(i), "east"), TxnID: p}}}
	}
	close(in)
	if err := a.Apply(ctx, in, func(checkpoint.Position, bool) {}); err != nil {
		t.Fatalf("Apply: %v", err)
	}
	if !a.noLoad.Load() || a.refused.Load() < 16 || a.refused.Load() == n {
		t.Errorf("noLoad %v after %d of %d loads refused; want loading stopped after 16", a.noLoad.Load(), a.refused.Load(), a.loads.Load())
	}
	var rows, conflicts int
	if err := db.QueryRow("SELECT COUNT(*) FROM notes WHERE body = 'east'").Scan(&rows); err != nil {
		t.Fatal(err)
	}
	if err := db.QueryRow("SELECT COUNT(*) FROM regiond_conflicts").Scan(&conflicts); err != nil {
		t.Fatal(err)
	}
	if rows != n || conflicts != n {
		t.Errorf("%d rows written, %d conflicts recorded; want %d of each", rows, conflicts, n)
	}
}
