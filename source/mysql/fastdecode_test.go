package mysql_test

import (
	"context"
	"database/sql"
	"fmt"
	"io"
	"log/slog"
	"math"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/regiond/regiond/checkpoint"
	"github.com/regiond/regiond/internal/dbtest"
	"github.com/regiond/regiond/internal/testenv"
	"github.com/regiond/regiond/source"
	mysqlsource "github.com/regiond/regiond/source/mysql"
)

// fastTables are tables whose every column the fast row-image decoder
// handles (in MariaDB, JSON is LONGTEXT: a BLOB column), plus one it must
// leave to go-mysql (a GEOMETRY column).
var fastTables = []string{
	allTypes,
	"CREATE TABLE temporal (id INT PRIMARY KEY, d DATE," +
		" dt0 DATETIME, dt1 DATETIME(1), dt2 DATETIME(2), dt3 DATETIME(3), dt4 DATETIME(4), dt5 DATETIME(5), dt6 DATETIME(6)," +
		" ts0 TIMESTAMP NULL, ts1 TIMESTAMP(1) NULL, ts2 TIMESTAMP(2) NULL, ts3 TIMESTAMP(3) NULL, ts4 TIMESTAMP(4) NULL, ts5 TIMESTAMP(5) NULL, ts6 TIMESTAMP(6) NULL," +
		" t0 TIME, t1 TIME(1), t2 TIME(2), t3 TIME(3), t4 TIME(4), t5 TIME(5), t6 TIME(6), y YEAR)",
	"CREATE TABLE nums (id INT PRIMARY KEY, d1_0 DECIMAL(1,0), d1_1 DECIMAL(1,1), d5_2 DECIMAL(5,2), d9_0 DECIMAL(9,0)," +
		" d9_9 DECIMAL(9,9), d10_0 DECIMAL(10,0), d10_5 DECIMAL(10,5), d18_9 DECIMAL(18,9), d19_10 DECIMAL(19,10)," +
		" d27_13 DECIMAL(27,13), d65_0 DECIMAL(65,0), d65_30 DECIMAL(65,30), du DECIMAL(12,4) UNSIGNED," +
		" f FLOAT, d DOUBLE, i8 TINYINT, u8 TINYINT UNSIGNED, i16 SMALLINT, u16 SMALLINT UNSIGNED, i24 MEDIUMINT," +
		" u24 MEDIUMINT UNSIGNED, i32 INT, u32 INT UNSIGNED, i64 BIGINT, u64 BIGINT UNSIGNED)",
	"CREATE TABLE strs (id INT PRIMARY KEY, v300 VARCHAR(300), v50l VARCHAR(50) CHARACTER SET latin1," +
		" c255 CHAR(255), c10u CHAR(10) CHARACTER SET ucs2, c5g VARCHAR(20) CHARACTER SET gbk, b20 BINARY(20), b1 BINARY(1)," +
		" vb300 VARBINARY(300), tb TINYBLOB, tt TINYTEXT, mt MEDIUMTEXT, lb LONGBLOB," +
		" e2 ENUM(" + enumValues(300) + "), s64 SET(" + enumValues(64) + ")," +
		" bit1 BIT(1), bit7 BIT(7), bit9 BIT(9), bit33 BIT(33), bit64 BIT(64))",
	"CREATE TABLE geo (id INT PRIMARY KEY, p POINT, n INT)",
	"CREATE TABLE alt (id INT PRIMARY KEY, v VARCHAR(50), b BINARY(4), d DECIMAL(5,2), u INT)",
}

func enumValues(n int) string {
	vs := make([]string, n)
	for i := range vs {
		vs[i] = fmt.Sprintf("'v%d'", i)
	}
	return strings.Join(vs, ",")
}

// TestFastDecodeMatchesGoMySQL reads one binlog twice, with the fast
// row-image decoder and with go-mysql's decoding plus convert, and requires
// the same transactions with the same values of the same Go types. The
// binlog holds every column type the fast decoder handles, at its edges
// (zero dates and zero-in-date, DATETIME/TIMESTAMP/TIME of every precision,
// TIMESTAMPs written under several session time zones, negative and large
// TIMEs, decimals of many precisions and scales, every integer width, text
// in non-UTF-8 charsets, BINARY padding, two-byte length prefixes, wide
// ENUMs and SETs, BIT widths), and random values of each.
func TestFastDecodeMatchesGoMySQL(t *testing.T) {
	srv := testenv.MariaDB(t, 1)
	db := dbtest.Open(t, srv)
	dbtest.Exec(t, db, fastTables...)
	logger := slog.New(slog.NewTextHandler(io.Discard, nil))
	newReader := func(slow bool) *mysqlsource.Reader {
		r, err := mysqlsource.New(mysqlsource.Config{
			Region: "east", Conn: dbtest.Params(srv), ServerID: 1001, ChunkChanges: 7,
			Tables: map[string]bool{"alltypes": true, "temporal": true, "nums": true, "strs": true, "geo": true, "alt": true},
		}, logger)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { r.Close() })
		if slow {
			mysqlsource.SlowDecoding(r)
		}
		return r
	}
	fast, slow := newReader(false), newReader(true)
	from, err := fast.CurrentPosition(t.Context())
	if err != nil {
		t.Fatal(err)
	}

	writeEdgeRows(t, db)
	rng := rand.New(rand.NewPCG(1, 2))
	for range 4 {
		writeRandomRows(t, db, rng, 200)
	}
	to, err := fast.CurrentPosition(t.Context())
	if err != nil {
		t.Fatal(err)
	}

	got := readAll(t, fast, from, to)
	want := readAll(t, slow, from, to)
	if diff := cmp.Diff(want, got); diff != "" {
		t.Fatalf("fast decoder differs from go-mysql + convert (-go-mysql +fast):\n%s", diff)
	}
	if n := mysqlsource.FastRows(slow); n != 0 {
		t.Errorf("the slow reader decoded %d row images with the fast decoder", n)
	}
	// Every row image but geo's went through the fast decoder.
	images, geo := 0, 0
	for _, c := range got {
		n := 1
		if c.Op == source.Update {
			n = 2
		}
		images += n
		if c.Table == "geo" {
			geo += n
		}
	}
	if n := mysqlsource.FastRows(fast); n != int64(images-geo) || geo == 0 {
		t.Errorf("fast decoder decoded %d row images, want %d (all but geo's %d)", n, images-geo, geo)
	}
	t.Logf("%d changes, %d row images compared", len(got), images)
}

// change is what the test compares of a source.Change, with its
// transaction's end.
type change struct {
	Table, TxnID, End string
	Op                source.Op
	Before, After     source.Row
}

func readAll(t *testing.T, r *mysqlsource.Reader, from, to checkpoint.Position) []change {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	out := make(chan source.Txn, 64)
	done := make(chan error, 1)
	go func() { done <- r.Read(ctx, from, out) }()
	final := to.(checkpoint.GTID)
	var got []change
	var pending []change
	for {
		select {
		case txn := <-out:
			for _, c := range txn.Changes {
				pending = append(pending, change{Table: c.Table.Name, TxnID: c.TxnID, Op: c.Op, Before: c.Before, After: c.After})
			}
			if txn.More {
				continue
			}
			for i := range pending {
				pending[i].End = txn.End.String()
			}
			got, pending = append(got, pending...), nil
			if txn.End.(checkpoint.GTID).Contains(final) {
				cancel()
				<-done
				return got
			}
		case err := <-done:
			t.Fatalf("read: %v", err)
		}
	}
}

// writeEdgeRows writes the edge values of every type.
func writeEdgeRows(t *testing.T, db *sql.DB) {
	t.Helper()
	exec := sessionExec(t, db)
	exec(`SET SESSION sql_mode = ''`) // zero dates, zero-in-date
	for _, q := range typeRows {
		exec(q)
	}
	exec(`INSERT INTO alltypes (id, dt, dtm0, dtm6, ts0, ts6) VALUES (5, '0000-00-00', '0000-00-00 00:00:00', '0000-00-00 00:00:00', '0000-00-00 00:00:00', '0000-00-00 00:00:00')`)
	dts := []string{"0000-00-00 00:00:00", "0000-00-00 00:00:00.000001", "2020-00-00 00:00:00", "2020-02-00 12:00:00.5",
		"1000-01-01 00:00:00", "9999-12-31 23:59:59.999999", "1970-01-01 00:00:00", "2024-02-29 23:59:59.000001",
		"2001-01-01 00:00:00.100000", "2001-01-01 00:00:00.010000", "2001-01-01 00:00:00.999990", "2001-01-01 00:00:00.000010"}
	times := []string{"00:00:00", "-00:00:00.000001", "-00:00:01", "-00:00:00.5", "-00:00:00.01", "-00:00:00.99", "-00:00:01.01",
		"-00:00:01.10", "838:59:59", "-838:59:59", "838:59:58.999999", "-838:59:58.999999", "12:34:56.123456", "-12:34:56.000100",
		"100:00:00", "-100:00:00.100000", "00:00:00.000001", "23:59:59.9"}
	tss := []string{"1970-01-01 00:00:01", "2038-01-19 03:14:07.999999", "2000-01-01 00:00:00.000001", "2024-02-29 12:00:00.5",
		"2001-09-09 01:46:40.123456", "1999-12-31 23:59:59.990000"}
	id := 1
	for _, tz := range []string{"+00:00", "+05:30", "-08:00", "+13:00"} {
		exec(`SET SESSION time_zone = '` + tz + `'`)
		for i := range max(len(dts), len(times), len(tss)) {
			dt, tm, ts := dts[i%len(dts)], times[i%len(times)], tss[i%len(tss)]
			exec(`INSERT INTO temporal VALUES (?, ?, ?,?,?,?,?,?,?, ?,?,?,?,?,?,?, ?,?,?,?,?,?,?, ?)`,
				id, dt[:10], dt, dt, dt, dt, dt, dt, dt, ts, ts, ts, ts, ts, ts, ts, tm, tm, tm, tm, tm, tm, tm, 1901+i)
			id++
		}
	}
	exec(`INSERT INTO temporal (id, ts6, y) VALUES (?, '0000-00-00 00:00:00', 0), (?, NULL, 2155)`, id, id+1)
	exec(`SET SESSION time_zone = '+00:00'`)
	exec(`UPDATE temporal SET dt6 = '2000-01-01 00:00:00.000001', t6 = '-00:00:00.000001', ts3 = '2010-10-10 10:10:10.101' WHERE id < 10`)
	exec(`DELETE FROM temporal WHERE id = 3`)

	exec(`INSERT INTO nums (id, d1_0, d1_1, d5_2, d9_0, d9_9, d10_0, d10_5, d18_9, d19_10, d27_13, d65_0, d65_30, du) VALUES
		(1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0),
		(2, 9, 0.9, 999.99, 999999999, 0.999999999, 9999999999, 99999.99999, 999999999.999999999, 999999999.9999999999, 99999999999999.9999999999999, REPEAT('9', 65), CONCAT(REPEAT('9', 35), '.', REPEAT('9', 30)), 99999999.9999),
		(3, -9, -0.9, -999.99, -999999999, -0.999999999, -9999999999, -99999.99999, -999999999.999999999, -999999999.9999999999, -99999999999999.9999999999999, CONCAT('-', REPEAT('9', 65)), CONCAT('-', REPEAT('9', 35), '.', REPEAT('9', 30)), 0.0001),
		(4, 1, 0.1, 0.01, 1, 0.000000001, 1000000000, 0.00001, 0.000000001, 1.0000000001, 1000000000000.0000000000001, CONCAT('1', REPEAT('0', 64)), 0.000000000000000000000000000001, 1),
		(5, -1, -0.1, -0.01, -1, -0.000000001, -1000000000, -0.00001, -0.000000001, -1.0000000001, -1000000000000.0000000000001, CONCAT('-1', REPEAT('0', 64)), -0.000000000000000000000000000001, 0)`)
	exec(`INSERT INTO nums (id, f, d, i8, u8, i16, u16, i24, u24, i32, u32, i64, u64) VALUES
		(6, -0.0, -0.0, -128, 255, -32768, 65535, -8388608, 16777215, -2147483648, 4294967295, -9223372036854775808, 18446744073709551615),
		(7, 1.17549435e-38, 4.9406564584124654e-324, 127, 0, 32767, 0, 8388607, 0, 2147483647, 0, 9223372036854775807, 0),
		(8, -1, -1, -1, 1, -1, 1, -1, 1, -1, 1, -1, 1)`)

	exec(`INSERT INTO strs VALUES (1, '', '', '', '', '', '', '', '', '', '', '', '', 'v0', '', b'0', b'0', b'0', b'0', b'0'),
		(2, REPEAT('é', 300), 'Ä€ÿ', REPEAT('😀', 255), 'ǅé€', '中文字', x'01', x'ff', REPEAT(x'00', 300), x'00', 'x', REPEAT('ab', 40000), REPEAT(x'ff00', 70000),
			'v299', 'v0,v7,v8,v63', b'1', b'1111111', b'100000001', b'100000000000000000000000000000001', b'1111111111111111111111111111111111111111111111111111111111111111'),
		(3, 'a\0b', 'x', 'trailing   ', ' ', ' ', x'0000', x'00', x'', x'', '', '', x'', 'v255', 'v0,v1,v2,v3,v4,v5,v6,v7,v8,v9', b'0', b'1000000', b'011111111', b'1', b'1000000000000000000000000000000000000000000000000000000000000000')`)
	exec(`UPDATE strs SET v300 = CONCAT(v300, '!'), b20 = x'ff', e2 = 'v256' WHERE id > 1`)
	exec(`INSERT INTO geo VALUES (1, POINT(1, 2), 3), (2, NULL, NULL)`)
	exec(`UPDATE geo SET n = 4`)
	// Definitions that change under the same table and column names:
	// only the type metadata (lengths, widths, precision, signedness).
	exec(`INSERT INTO alt VALUES (1, REPEAT('a', 50), x'01', 123.45, -1)`)
	exec(`ALTER TABLE alt MODIFY v VARCHAR(300), MODIFY b BINARY(8), MODIFY d DECIMAL(12,6), MODIFY u INT UNSIGNED`)
	exec(`INSERT INTO alt VALUES (2, REPEAT('b', 300), x'02', 123456.654321, 4294967295)`)
	exec(`UPDATE alt SET v = CONCAT(v, 'c'), d = -d`)
	exec(`DELETE FROM alt WHERE id = 1`)
}

// writeRandomRows writes n random rows to temporal, nums and strs, then
// updates and deletes some, in a few transactions.
func writeRandomRows(t *testing.T, db *sql.DB, rng *rand.Rand, n int) {
	t.Helper()
	exec := sessionExec(t, db)
	exec(`SET SESSION sql_mode = ''`)
	exec(`SET SESSION time_zone = ?`, []string{"+00:00", "+09:00", "-03:30"}[rng.IntN(3)])
	var maxID int
	if err := db.QueryRowContext(t.Context(), `SELECT COALESCE(MAX(id), 1000) FROM nums`).Scan(&maxID); err != nil {
		t.Fatal(err)
	}
	base := max(maxID, 1000) + 1
	exec(`BEGIN`)
	nullable := func(v any) any {
		if rng.IntN(10) == 0 {
			return nil
		}
		return v
	}
	for i := range n {
		id := base + i
		dt := randDateTime(rng)
		ts := randTimestamp(rng)
		tm := randTime(rng)
		exec(`INSERT INTO temporal VALUES (?, ?, ?,?,?,?,?,?,?, ?,?,?,?,?,?,?, ?,?,?,?,?,?,?, ?)`,
			id, nullable(dt[:10]), nullable(dt), dt, nullable(dt), dt, dt, nullable(dt), dt,
			nullable(ts), ts, ts, nullable(ts), ts, ts, ts, nullable(tm), tm, tm, tm, nullable(tm), tm, tm, nullable(1901+rng.IntN(255)))
		exec(`INSERT INTO nums VALUES (?, ?,?,?,?,?,?,?,?,?,?,?,?,?, ?,?, ?,?,?,?,?,?,?,?,?,?)`,
			id, randDecimal(rng, 1, 0), randDecimal(rng, 1, 1), randDecimal(rng, 5, 2), nullable(randDecimal(rng, 9, 0)),
			randDecimal(rng, 9, 9), randDecimal(rng, 10, 0), randDecimal(rng, 10, 5), randDecimal(rng, 18, 9),
			randDecimal(rng, 19, 10), randDecimal(rng, 27, 13), randDecimal(rng, 65, 0), randDecimal(rng, 65, 30),
			strings.TrimPrefix(randDecimal(rng, 12, 4), "-"),
			nullable(float32(rng.NormFloat64()*math.Pow(10, float64(rng.IntN(60)-30)))), rng.NormFloat64()*math.Pow(10, float64(rng.IntN(600)-300)),
			int8(rng.Uint32()), uint8(rng.Uint32()), int16(rng.Uint32()), uint16(rng.Uint32()), int32(rng.Uint32())>>8, rng.Uint32()>>8,
			int32(rng.Uint32()), rng.Uint32(), int64(rng.Uint64()), rng.Uint64()>>rng.IntN(64))
		exec(`INSERT INTO strs VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
			id, randText(rng, 300), nullable(randLatin(rng, 50)), randText(rng, 255), randText(rng, 10), randGBK(rng, 20),
			randBytes(rng, 20), randBytes(rng, 1), randBytes(rng, 300), nullable(randBytes(rng, 255)), randText(rng, 60),
			randText(rng, 2000), randBytes(rng, 3000), fmt.Sprintf("v%d", rng.IntN(300)), randSet(rng),
			rng.Uint64()&1, rng.Uint64()&0x7f, rng.Uint64()&0x1ff, rng.Uint64()&(1<<33-1), rng.Uint64())
		if i%25 == 24 {
			exec(`COMMIT`)
			exec(`BEGIN`)
		}
	}
	exec(`UPDATE temporal SET dt6 = ?, ts6 = ?, t6 = ? WHERE id % 7 = 1 AND id >= ?`, randDateTime(rng), randTimestamp(rng), randTime(rng), base)
	exec(`UPDATE nums SET d65_30 = -d65_30, i64 = -i64 WHERE id % 5 = 2 AND id >= ?`, base)
	exec(`UPDATE strs SET v300 = ?, b20 = ? WHERE id % 3 = 0 AND id >= ?`, randText(rng, 300), randBytes(rng, 20), base)
	exec(`DELETE FROM nums WHERE id % 11 = 0 AND id >= ?`, base)
	exec(`DELETE FROM strs WHERE id % 13 = 0 AND id >= ?`, base)
	exec(`COMMIT`)
}

func randDateTime(rng *rand.Rand) string {
	if rng.IntN(20) == 0 {
		return "0000-00-00 00:00:00"
	}
	s := fmt.Sprintf("%04d-%02d-%02d %02d:%02d:%02d", 1000+rng.IntN(9000), rng.IntN(13), rng.IntN(29), rng.IntN(24), rng.IntN(60), rng.IntN(60))
	return s + randFrac(rng)
}

func randTimestamp(rng *rand.Rand) string {
	sec := 1 + rng.Int64N(1<<31-2)
	return time.Unix(sec, 0).UTC().Format("2006-01-02 15:04:05") + randFrac(rng)
}

func randTime(rng *rand.Rand) string {
	sign := ""
	if rng.IntN(2) == 0 {
		sign = "-"
	}
	return fmt.Sprintf("%s%02d:%02d:%02d", sign, rng.IntN(839), rng.IntN(60), rng.IntN(60)) + randFrac(rng)
}

func randFrac(rng *rand.Rand) string {
	switch rng.IntN(3) {
	case 0:
		return ""
	case 1:
		return fmt.Sprintf(".%d", rng.IntN(10))
	}
	return fmt.Sprintf(".%06d", rng.IntN(1000000))
}

func randDecimal(rng *rand.Rand, prec, scale int) string {
	digits := func(n int) string {
		b := make([]byte, n)
		for i := range b {
			b[i] = byte('0' + rng.IntN(10))
		}
		return string(b)
	}
	s := digits(rng.IntN(prec - scale + 1))
	if s == "" {
		s = "0"
	}
	if scale > 0 {
		s += "." + digits(1+rng.IntN(scale))
	}
	if rng.IntN(2) == 0 {
		s = "-" + s
	}
	return s
}

var (
	textRunes  = []rune("aZ09 _'\"\\\n\t\x01éß€中文😀👩\u2028\u0000")
	latinRunes = []rune("aZ09 'éÄÿ€‰")
	gbkRunes   = []rune("ab 中文字符")
)

// randRunes is a string of up to maxLen runes drawn from alphabet.
func randRunes(rng *rand.Rand, alphabet []rune, maxLen int) string {
	r := make([]rune, rng.IntN(maxLen+1))
	for i := range r {
		r[i] = alphabet[rng.IntN(len(alphabet))]
	}
	return string(r)
}

func randText(rng *rand.Rand, maxLen int) string  { return randRunes(rng, textRunes, maxLen) }
func randLatin(rng *rand.Rand, maxLen int) string { return randRunes(rng, latinRunes, maxLen) }
func randGBK(rng *rand.Rand, maxLen int) string   { return randRunes(rng, gbkRunes, maxLen) }

func randBytes(rng *rand.Rand, maxLen int) []byte {
	b := make([]byte, rng.IntN(maxLen+1))
	for i := range b {
		if rng.IntN(3) == 0 {
			continue // zero bytes, also at the end (BINARY padding)
		}
		b[i] = byte(rng.Uint32())
	}
	return b
}

func randSet(rng *rand.Rand) string {
	var vs []string
	for i := range 64 {
		if rng.IntN(8) == 0 {
			vs = append(vs, fmt.Sprintf("v%d", i))
		}
	}
	return strings.Join(vs, ",")
}

// sessionExec returns a function that runs statements on one connection of
// db (session settings hold across calls), failing t on an error; the
// connection is closed when t ends.
func sessionExec(t *testing.T, db *sql.DB) func(q string, args ...any) {
	t.Helper()
	ctx := t.Context()
	conn, err := db.Conn(ctx)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return func(q string, args ...any) {
		t.Helper()
		if _, err := conn.ExecContext(ctx, q, args...); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
}
