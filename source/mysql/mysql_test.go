package mysql_test

import (
	"context"
	"database/sql"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/regiond/regiond/internal/dbtest"
	"github.com/regiond/regiond/internal/testenv"
	"github.com/regiond/regiond/pipeline"
	mysqlsink "github.com/regiond/regiond/sink/mysql"
	mysqlsource "github.com/regiond/regiond/source/mysql"
)

const allTypes = "CREATE TABLE alltypes (" +
	"id BIGINT NOT NULL PRIMARY KEY," +
	"ti TINYINT, tiu TINYINT UNSIGNED, si SMALLINT, siu SMALLINT UNSIGNED," +
	"mi MEDIUMINT, miu MEDIUMINT UNSIGNED, i INT, iu INT UNSIGNED, bi BIGINT, biu BIGINT UNSIGNED," +
	"dec1 DECIMAL(20,6), dec2 DECIMAL(65,30), f FLOAT, d DOUBLE," +
	"c CHAR(10), vc VARCHAR(255), tx TEXT, mtx MEDIUMTEXT, lat VARCHAR(20) CHARACTER SET latin1," +
	"bin BINARY(8), vbin VARBINARY(64), bl BLOB," +
	"dt DATE, dtm0 DATETIME, dtm1 DATETIME(1), dtm3 DATETIME(3), dtm6 DATETIME(6)," +
	"ts0 TIMESTAMP NULL DEFAULT NULL, ts3 TIMESTAMP(3) NULL DEFAULT NULL, ts6 TIMESTAMP(6) NULL DEFAULT NULL," +
	"tm TIME, tm6 TIME(6), yr YEAR, js JSON," +
	"en ENUM('a','b','c d'), st SET('x','y','z'), bt BIT(12), b1 BIT(1), b64 BIT(64), bool1 TINYINT(1)" +
	") DEFAULT CHARSET=utf8mb4"

var typeRows = []string{
	// Minimums, and a mix of everything.
	`INSERT INTO alltypes VALUES (1, -128, 0, -32768, 0, -8388608, 0, -2147483648, 0, -9223372036854775808, 0,
		-99999999999999.999999, -12345678901234567890123456789012345.123456789012345678901234567890, -3.4e38, -1.7976931348623157e308,
		'', '', '', '', 'Ünïcödé',
		x'0000000000000000', x'00', x'',
		'1000-01-01', '1000-01-01 00:00:00', '1000-01-01 00:00:00.1', '1000-01-01 00:00:00.001', '1000-01-01 00:00:00.000001',
		'1970-01-01 00:00:01', '1970-01-01 00:00:01.001', '1970-01-01 00:00:01.000001',
		'-838:59:59', '-838:59:58.999999', 1901, '{}',
		'a', '', b'0', b'0', b'0', 0)`,
	// Maximums.
	`INSERT INTO alltypes VALUES (2, 127, 255, 32767, 65535, 8388607, 16777215, 2147483647, 4294967295, 9223372036854775807, 18446744073709551615,
		99999999999999.999999, 99999999999999999999999999999999999.999999999999999999999999999999, 3.4e38, 1.7976931348623157e308,
		'abcdefghij', REPEAT('x', 255), REPEAT('long text ', 1000), REPEAT('😀', 5000), 'latin',
		x'ffffffffffffffff', x'ff00ff00ff', REPEAT(x'00ff', 10000),
		'9999-12-31', '9999-12-31 23:59:59', '9999-12-31 23:59:59.9', '9999-12-31 23:59:59.999', '9999-12-31 23:59:59.999999',
		'2038-01-19 03:14:07', '2038-01-19 03:14:07.999', '2038-01-19 03:14:07.999999',
		'838:59:59', '838:59:58.999999', 2155, '{"a": [1, 2.5, "x", null, true], "b": {"c": "😀"}}',
		'c d', 'x,y,z', b'111111111111', b'1', 18446744073709551615, 1)`,
	// Utf8mb4 beyond the BMP, quotes and escapes, zero bytes in binary.
	`INSERT INTO alltypes (id, c, vc, tx, bin, vbin, bl, js, en, st, f, d, dec1, tm, yr, dtm6, ts6, bool1)
		VALUES (3, '😀🎉', 'it''s \\ "quoted"\n\ttab', 'emoji 👩‍👩‍👧 and 中文', x'00010203', x'000000', x'5c27220a0d1a00',
		'["\\u0000", "\\"q\\""]', 'b', 'y', 1.1, 0.1, 0.000001, '00:00:00.5', 2000, '2024-02-29 12:34:56.123456', '2024-02-29 12:34:56.654321', 0)`,
	// NULL in every nullable column.
	`INSERT INTO alltypes (id) VALUES (4)`,
}

// TestTypesRoundTrip writes every common type in one region and checks the
// other region holds exactly the same values after replication, through
// inserts, updates (also of the key) and deletes.
func TestTypesRoundTrip(t *testing.T) { typesRoundTrip(t, false) }

// TestTypesRoundTripCompressedBinlog is TestTypesRoundTrip with MariaDB's
// binlog compression on: rows and statements arrive as *_COMPRESSED events,
// which go-mysql inflates (the fast decoder declines them), and must
// replicate exactly like uncompressed ones.
func TestTypesRoundTripCompressedBinlog(t *testing.T) { typesRoundTrip(t, true) }

func typesRoundTrip(t *testing.T, compress bool) {
	east := testenv.MariaDB(t, 1)
	west := testenv.MariaDB(t, 2)
	eastDB, westDB := dbtest.Open(t, east), dbtest.Open(t, west)
	dbtest.Exec(t, eastDB, allTypes)
	dbtest.Exec(t, westDB, allTypes)

	logger := slog.New(slog.NewTextHandler(io.Discard, nil))
	if testing.Verbose() {
		logger = slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	reader, err := mysqlsource.New(mysqlsource.Config{
		Region: "east", Conn: dbtest.Params(east), ServerID: 1001,
		Tables: map[string]bool{"alltypes": true}, ChunkChanges: 3,
	}, logger)
	if err != nil {
		t.Fatal(err)
	}
	defer reader.Close()
	applier, err := mysqlsink.New(mysqlsink.Config{
		Pipeline: "east->west", Source: "east", Target: "west", Conn: dbtest.Params(west), BatchChanges: 4,
	}, logger)
	if err != nil {
		t.Fatal(err)
	}
	defer applier.Close()
	p := &pipeline.Pipeline{Name: "east->west", Source: reader, Sink: applier, Logger: logger, MinBackoff: 100 * time.Millisecond}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- p.Run(ctx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("pipeline: %v", err)
		}
	}()
	// The pipeline starts at the current position: wait until it stored it.
	dbtest.WaitCheckpoint(t, westDB, "east->west")
	if compress {
		// 10 bytes is the smallest minimum: every rows event qualifies.
		dbtest.Exec(t, eastDB, "SET GLOBAL log_bin_compress = ON", "SET GLOBAL log_bin_compress_min_len = 10")
	}

	dbtest.Exec(t, eastDB, typeRows...)
	dbtest.WaitEqual(t, 30*time.Second, "alltypes", []string{"east", "west"}, eastDB, westDB)

	// Updates, a key change, a delete, and a large transaction in chunks.
	tx, err := eastDB.Begin()
	if err != nil {
		t.Fatal(err)
	}
	for _, q := range []string{
		`UPDATE alltypes SET vc = CONCAT(LEFT(vc, 200), '!'), biu = IF(biu > 0, biu - 1, 7), ts6 = '2001-02-03 04:05:06.7' WHERE id IN (1, 2)`,
		`UPDATE alltypes SET id = 40 WHERE id = 4`,
		`DELETE FROM alltypes WHERE id = 3`,
		`INSERT INTO alltypes (id, vc) SELECT seq + 100, CONCAT('bulk ', seq) FROM seq_1_to_50`,
		`UPDATE alltypes SET vc = 'again' WHERE id BETWEEN 110 AND 120`,
	} {
		if _, err := tx.Exec(q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	if err := tx.Commit(); err != nil {
		t.Fatal(err)
	}
	// Zero dates, as a non-strict source accepts them.
	conn, err := eastDB.Conn(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if _, err := conn.ExecContext(t.Context(), `SET SESSION sql_mode = ''`); err != nil {
		t.Fatal(err)
	}
	if _, err := conn.ExecContext(t.Context(), `INSERT INTO alltypes (id, dt, dtm6, ts0) VALUES (5, '0000-00-00', '0000-00-00 00:00:00', '0000-00-00 00:00:00')`); err != nil {
		t.Fatal(err)
	}
	dbtest.WaitEqual(t, 30*time.Second, "alltypes", []string{"east", "west"}, eastDB, westDB)
	if !compress {
		return
	}
	// A DDL statement (a transaction of its own, as a Query_compressed
	// event) must commit its GTID like any other; rows after it still come.
	dbtest.Exec(t, eastDB, "CREATE TABLE not_replicated (id INT PRIMARY KEY, note VARCHAR(100))",
		"UPDATE alltypes SET vc = 'after the compressed DDL' WHERE id = 1")
	dbtest.WaitEqual(t, 30*time.Second, "alltypes", []string{"east", "west"}, eastDB, westDB)
	// Without this the test could pass with compression silently off.
	seen := binlogEventTypes(t, eastDB)
	for _, typ := range []string{"Write_rows_compressed_v1", "Update_rows_compressed_v1", "Delete_rows_compressed_v1", "Query_compressed"} {
		if seen[typ] == 0 {
			t.Errorf("east's binlog has no %s event (types seen: %v): the test did not exercise compression", typ, seen)
		}
	}
}

// binlogEventTypes counts the events of every type in db's binlogs.
func binlogEventTypes(t *testing.T, db *sql.DB) map[string]int {
	t.Helper()
	var files []string
	rows, err := db.Query("SHOW BINARY LOGS")
	if err != nil {
		t.Fatal(err)
	}
	for rows.Next() {
		cols, err := rows.Columns()
		if err != nil {
			t.Fatal(err)
		}
		vals := make([]sql.RawBytes, len(cols))
		ptrs := make([]any, len(cols))
		for i := range vals {
			ptrs[i] = &vals[i]
		}
		if err := rows.Scan(ptrs...); err != nil {
			t.Fatal(err)
		}
		files = append(files, string(vals[0]))
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	rows.Close()
	seen := map[string]int{}
	for _, f := range files {
		rows, err := db.Query("SHOW BINLOG EVENTS IN '" + f + "'")
		if err != nil {
			t.Fatal(err)
		}
		for rows.Next() {
			var name, typ, info string
			var pos, serverID, end uint64
			if err := rows.Scan(&name, &pos, &typ, &serverID, &end, &info); err != nil {
				t.Fatal(err)
			}
			seen[typ]++
		}
		if err := rows.Err(); err != nil {
			t.Fatal(err)
		}
		rows.Close()
	}
	return seen
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(b []byte) (int, error) {
	w.t.Log(string(b))
	return len(b), nil
}
