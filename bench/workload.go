package main

import (
	"context"
	"database/sql"
	"fmt"
	"math/rand/v2"
	"strconv"
	"strings"
	"time"
)

// The benchmark table. It is created with the same definition on the source
// and on both targets before the backlog is written; the raw INSERT phase
// uses a copy of it named rawTable.
const (
	benchTable = "bench"
	rawTable   = "bench_raw"

	createBench = "CREATE TABLE `" + benchTable + "` (" +
		"`id` BIGINT NOT NULL PRIMARY KEY," +
		"`k` INT NOT NULL," +
		"`c` VARCHAR(120) NOT NULL," +
		"`pad` CHAR(60) NOT NULL," +
		"`n` INT NULL," +
		"`ts` DATETIME(6) NULL" +
		") ENGINE=InnoDB"

	// pgCreateBench is the same table in PostgreSQL (-engine postgres).
	pgCreateBench = `CREATE TABLE "` + benchTable + `" (` +
		`"id" bigint NOT NULL PRIMARY KEY,` +
		`"k" integer NOT NULL,` +
		`"c" varchar(120) NOT NULL,` +
		`"pad" char(60) NOT NULL,` +
		`"n" integer NULL,` +
		`"ts" timestamp(6) NULL` +
		`)`

	insertHead = " (`id`, `k`, `c`, `pad`, `n`, `ts`) VALUES "
)

// benchColumns are the bench table's columns, in order.
var benchColumns = []string{"id", "k", "c", "pad", "n", "ts"}

// dialect is how one engine's SQL text quotes identifiers. The generated
// values are plain ASCII literals that both engines read the same way.
type dialect struct{ quote string }

var (
	mariadbSQL  = dialect{"`"}
	postgresSQL = dialect{`"`}
)

// ident quotes a (plain, quote-free) identifier.
func (d dialect) ident(name string) string { return d.quote + name + d.quote }

// insertHead is the column list and VALUES keyword of a bench INSERT.
func (d dialect) insertHead() string {
	if d == mariadbSQL {
		return insertHead
	}
	cols := make([]string, len(benchColumns))
	for i, c := range benchColumns {
		cols[i] = d.ident(c)
	}
	return " (" + strings.Join(cols, ", ") + ") VALUES "
}

// Workload shape.
const (
	insertTxnRows    = 100  // rows per multi-row INSERT (= one transaction) of the backlog
	updateTxnStmts   = 10   // single-row UPDATEs per transaction of the backlog
	rawStmtRows      = 1000 // rows per multi-row INSERT of the raw phase
	progressEvery    = 2 * time.Second
	cMinLen, cMaxLen = 60, 120 // length range of column c
	padLen           = 60
)

// gen produces rows and updates from a seeded generator, so that every run
// with the same flags writes the same data. Values are plain ASCII and safe
// to embed in SQL text without escaping.
type gen struct {
	r    *rand.Rand
	base time.Time
}

func newGen(seed uint64) *gen {
	return &gen{
		r:    rand.New(rand.NewPCG(seed, 0x5eed)),
		base: time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC),
	}
}

// row is one generated row of the bench table.
type row struct {
	id, k  int64
	c, pad string
	n      int64
	nNull  bool   // n is NULL
	ts     string // DATETIME(6) in the server's text form
}

// alphabet has 64 symbols: six random bits pick one.
const alphabet = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_"

// str returns a random string of n characters.
func (g *gen) str(n int) string {
	b := make([]byte, n)
	var bits uint64
	for i := range b {
		if i%10 == 0 {
			bits = g.r.Uint64()
		}
		b[i] = alphabet[bits&63]
		bits >>= 6
	}
	return string(b)
}

// row returns a row with primary key id and random values; n is NULL one
// time in ten, ts lies within a year after base.
func (g *gen) row(id int64) row {
	r := row{
		id:  id,
		k:   int64(g.r.IntN(1_000_000)),
		c:   g.str(cMinLen + g.r.IntN(cMaxLen-cMinLen+1)),
		pad: g.str(padLen),
		n:   int64(g.r.Int32()) - 1<<30,
	}
	r.nNull = g.r.IntN(10) == 0
	t := g.base.Add(time.Duration(g.r.Int64N(int64(365*24*time.Hour/time.Microsecond))) * time.Microsecond)
	r.ts = t.Format("2006-01-02 15:04:05.000000")
	return r
}

// rows returns count rows with keys first, first+1, ...
func (g *gen) rows(first int64, count int) []row {
	rs := make([]row, count)
	for i := range rs {
		rs[i] = g.row(first + int64(i))
	}
	return rs
}

// appendN appends the SQL literal of column n.
func (r *row) appendN(b []byte) []byte {
	if r.nNull {
		return append(b, "NULL"...)
	}
	return strconv.AppendInt(b, r.n, 10)
}

// appendSQL appends the row's VALUES tuple as SQL text.
func (r *row) appendSQL(b []byte) []byte {
	b = append(b, '(')
	b = strconv.AppendInt(b, r.id, 10)
	b = append(b, ',')
	b = strconv.AppendInt(b, r.k, 10)
	b = append(append(append(b, ",'"...), r.c...), "','"...)
	b = append(append(b, r.pad...), "',"...)
	b = r.appendN(b)
	b = append(append(append(b, ",'"...), r.ts...), "')"...)
	return b
}

// appendArgs appends the row's values as statement parameters, in column
// order, typed as regiond's MySQL source hands them to the sink.
func (r *row) appendArgs(a []any) []any {
	var n any
	if !r.nNull {
		n = int32(r.n)
	}
	return append(a, r.id, int32(r.k), r.c, r.pad, n, r.ts)
}

// appendUpdate appends one single-row UPDATE of a random existing key
// (1..maxID) in dialect d, ending with ';'. Every update changes the row (k
// grows), so each one is exactly one row change in the binlog (WAL).
func (g *gen) appendUpdate(d dialect, b []byte, maxID int) []byte {
	r := g.row(1 + g.r.Int64N(int64(maxID)))
	b = append(b, "UPDATE "+d.ident(benchTable)+" SET "+d.ident("k")+" = "+d.ident("k")+" + 1, "+d.ident("c")+" = '"...)
	b = append(append(b, r.c...), "', "+d.ident("n")+" = "...)
	b = r.appendN(b)
	b = append(append(append(b, ", "+d.ident("ts")+" = '"...), r.ts...), "' WHERE "+d.ident("id")+" = "...)
	b = strconv.AppendInt(b, r.id, 10)
	return append(b, ';')
}

// stmt is one statement with its parameters.
type stmt struct {
	q    string
	args []any
}

// insertStmts returns multi-row INSERTs of rows into table, as SQL text in
// dialect d, perStmt rows per statement (the last may hold fewer).
func insertStmts(d dialect, table string, rows []row, perStmt int) []stmt {
	var stmts []stmt
	var b []byte
	head := "INSERT INTO " + d.ident(table) + d.insertHead()
	for start := 0; start < len(rows); start += perStmt {
		b = append(b[:0], head...)
		for i, r := range rows[start:min(start+perStmt, len(rows))] {
			if i > 0 {
				b = append(b, ',')
			}
			b = r.appendSQL(b)
		}
		stmts = append(stmts, stmt{q: string(b)})
	}
	return stmts
}

// upsertStmts returns multi-row upserts of rows into table in the form
// regiond's MySQL sink writes (placeholders, interpolated by the driver
// under regiond's connection settings, and ON DUPLICATE KEY UPDATE of every
// non-key column), perStmt rows per statement.
func upsertStmts(table string, rows []row, perStmt int) []stmt {
	const ph = "(?,?,?,?,?,?)"
	const tail = " ON DUPLICATE KEY UPDATE `k`=VALUES(`k`),`c`=VALUES(`c`),`pad`=VALUES(`pad`),`n`=VALUES(`n`),`ts`=VALUES(`ts`)"
	var stmts []stmt
	var b strings.Builder
	for start := 0; start < len(rows); start += perStmt {
		part := rows[start:min(start+perStmt, len(rows))]
		b.Reset()
		b.WriteString("INSERT INTO `" + table + "`" + insertHead)
		args := make([]any, 0, 6*len(part))
		for i, r := range part {
			if i > 0 {
				b.WriteByte(',')
			}
			b.WriteString(ph)
			args = r.appendArgs(args)
		}
		b.WriteString(tail)
		stmts = append(stmts, stmt{q: b.String(), args: args})
	}
	return stmts
}

// execAll runs stmts one after the other on conn, each in autocommit.
func execAll(ctx context.Context, conn *sql.Conn, stmts []stmt) error {
	for i, s := range stmts {
		if _, err := conn.ExecContext(ctx, s.q, s.args...); err != nil {
			return fmt.Errorf("statement %d of %d: %w", i+1, len(stmts), err)
		}
	}
	return nil
}

// execFunc runs one backlog transaction on the source: a single autocommit
// statement, or "BEGIN;…;COMMIT" sent in one round trip. last is set for
// the last transaction of a part of the backlog (inserts, updates), so that
// the Postgres mode can record the WAL position just before its commit.
type execFunc func(ctx context.Context, q string, last bool) error

// sqlExec is the execFunc of a database/sql connection (MariaDB mode).
func sqlExec(conn *sql.Conn) execFunc {
	return func(ctx context.Context, q string, _ bool) error {
		_, err := conn.ExecContext(ctx, q)
		return err
	}
}

// writeInserts writes the first part of the backlog with exec: inserts new
// rows with keys 1..inserts in insertTxnRows-row INSERTs (in dialect d),
// each one autocommit transaction. It returns the number of transactions
// written.
func writeInserts(ctx context.Context, exec execFunc, d dialect, g *gen, inserts int, progress func(string, ...any)) (int, error) {
	txns := 0
	last := time.Now()
	stmts := insertStmts(d, benchTable, g.rows(1, inserts), insertTxnRows)
	for i, st := range stmts {
		if err := exec(ctx, st.q, i == len(stmts)-1); err != nil {
			return txns, fmt.Errorf("backlog insert #%d: %w", i+1, err)
		}
		txns++
		if time.Since(last) >= progressEvery {
			progress("backlog: %d/%d rows inserted", min((i+1)*insertTxnRows, inserts), inserts)
			last = time.Now()
		}
	}
	return txns, nil
}

// writeUpdates writes the second part of the backlog with exec, whose
// connection must allow multiple statements: updates single rows by random
// primary key (1..maxID) in transactions of updateTxnStmts UPDATEs (in
// dialect d), each transaction sent as one "BEGIN;UPDATE ...;...;COMMIT"
// round trip. It returns the number of transactions written.
func writeUpdates(ctx context.Context, exec execFunc, d dialect, g *gen, maxID, updates int, progress func(string, ...any)) (int, error) {
	txns := 0
	last := time.Now()
	var b []byte
	for done := 0; done < updates; {
		n := min(updateTxnStmts, updates-done)
		b = append(b[:0], "BEGIN;"...)
		for range n {
			b = g.appendUpdate(d, b, maxID)
		}
		b = append(b, "COMMIT"...)
		if err := exec(ctx, string(b), done+n == updates); err != nil {
			return txns, fmt.Errorf("backlog update transaction #%d: %w", txns+1, err)
		}
		txns++
		done += n
		if time.Since(last) >= progressEvery {
			progress("backlog: %d/%d rows updated", done, updates)
			last = time.Now()
		}
	}
	return txns, nil
}

// resetRawTable (re)creates rawTable as an empty copy of the bench table.
func resetRawTable(ctx context.Context, conn *sql.Conn) error {
	for _, q := range []string{
		"DROP TABLE IF EXISTS `" + rawTable + "`",
		"CREATE TABLE `" + rawTable + "` LIKE `" + benchTable + "`",
	} {
		if _, err := conn.ExecContext(ctx, q); err != nil {
			return fmt.Errorf("%s: %w", q, err)
		}
	}
	return nil
}

// countRows returns the number of rows in table.
func countRows(ctx context.Context, conn *sql.Conn, table string) (int, error) {
	var n int
	err := conn.QueryRowContext(ctx, "SELECT COUNT(*) FROM `"+table+"`").Scan(&n)
	return n, err
}

// checksumQuery summarises the bench table's content: row count, the sum
// of a CRC32 per row and the XOR of a 64-bit MD5 prefix per row (both order
// independent). NULL is spelled out so that it differs from any value.
const checksumQuery = "SELECT COUNT(*)," +
	" COALESCE(SUM(CRC32(r)), 0)," +
	" COALESCE(BIT_XOR(CAST(CONV(LEFT(MD5(r), 16), 16, 10) AS UNSIGNED)), 0)" +
	" FROM (SELECT CONCAT_WS('|', `id`, `k`, `c`, `pad`, IFNULL(`n`, 'NULL'), IFNULL(`ts`, 'NULL')) AS r FROM `" + benchTable + "`) AS t"

// tableSum is the result of checksumQuery.
type tableSum struct {
	Rows int64
	CRC  string
	MD5  string
}

func (s tableSum) String() string {
	return fmt.Sprintf("rows=%d crc32sum=%s md5xor=%s", s.Rows, s.CRC, s.MD5)
}

func checksum(ctx context.Context, db *sql.DB) (tableSum, error) {
	var s tableSum
	err := db.QueryRowContext(ctx, checksumQuery).Scan(&s.Rows, &s.CRC, &s.MD5)
	return s, err
}
