// Package dbtest holds helpers for regiond's integration tests: opening test
// servers, dumping tables in a canonical text form and waiting until regions
// hold the same rows.
package dbtest

import (
	"context"
	"database/sql"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/regiond/regiond/internal/mysqlconn"
	"github.com/regiond/regiond/internal/testenv"
)

// Params returns connection parameters for database "app" of a MariaDB test
// server, as root.
func Params(s *testenv.Server) mysqlconn.Params {
	return mysqlconn.Params{Host: "127.0.0.1", Port: s.Port, User: "root", Database: "app"}
}

// Open opens database "app" of a MariaDB test server with regiond's own
// session settings; the pool is closed at the end of the test.
func Open(t testing.TB, s *testenv.Server) *sql.DB {
	t.Helper()
	db, err := mysqlconn.Open(Params(s))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

// Exec runs statements, failing the test on error.
func Exec(t testing.TB, db *sql.DB, stmts ...string) {
	t.Helper()
	for _, q := range stmts {
		if _, err := db.Exec(q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
}

// Dump returns every row of table, ordered by its primary key, each row as
// one line of its column values in the server's text form (NULL as \N,
// binary columns as hex). Two regions hold the same rows iff their dumps are
// equal.
func Dump(ctx context.Context, db *sql.DB, table string) ([]string, error) {
	var pk []string
	rows, err := db.QueryContext(ctx, `SELECT COLUMN_NAME FROM information_schema.KEY_COLUMN_USAGE
		WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = ? AND CONSTRAINT_NAME = 'PRIMARY' ORDER BY ORDINAL_POSITION`, table)
	if err != nil {
		return nil, err
	}
	for rows.Next() {
		var c string
		if err := rows.Scan(&c); err != nil {
			return nil, err
		}
		pk = append(pk, "`"+c+"`")
	}
	if err := rows.Err(); err != nil {
		return nil, err
	}
	if len(pk) == 0 {
		return nil, fmt.Errorf("table %s: no primary key (or no such table)", table)
	}
	rows, err = db.QueryContext(ctx, "SELECT * FROM `"+table+"` ORDER BY "+strings.Join(pk, ","))
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	cols, err := rows.Columns()
	if err != nil {
		return nil, err
	}
	vals := make([]sql.RawBytes, len(cols))
	ptrs := make([]any, len(cols))
	for i := range vals {
		ptrs[i] = &vals[i]
	}
	var out []string
	var b strings.Builder
	for rows.Next() {
		if err := rows.Scan(ptrs...); err != nil {
			return nil, err
		}
		b.Reset()
		for i, v := range vals {
			if i > 0 {
				b.WriteByte('|')
			}
			if v == nil {
				b.WriteString(`\N`)
			} else {
				fmt.Fprintf(&b, "%q", string(v))
			}
		}
		out = append(out, b.String())
	}
	return out, rows.Err()
}

// WaitEqual waits until table holds the same rows in every db, failing the
// test with a diff after timeout.
func WaitEqual(t testing.TB, timeout time.Duration, table string, names []string, dbs ...*sql.DB) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		diff, err := diffAll(t.Context(), table, names, dbs)
		if err == nil && diff == "" {
			return
		}
		if time.Now().After(deadline) {
			if err != nil {
				t.Fatalf("table %s: %v", table, err)
			}
			t.Fatalf("table %s differs after %v:\n%s", table, timeout, diff)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func diffAll(ctx context.Context, table string, names []string, dbs []*sql.DB) (string, error) {
	first, err := Dump(ctx, dbs[0], table)
	if err != nil {
		return "", fmt.Errorf("%s: %w", names[0], err)
	}
	for i := 1; i < len(dbs); i++ {
		d, err := Dump(ctx, dbs[i], table)
		if err != nil {
			return "", fmt.Errorf("%s: %w", names[i], err)
		}
		if diff := cmp.Diff(first, d); diff != "" {
			if len(diff) > 4000 {
				diff = diff[:4000] + "\n..."
			}
			return fmt.Sprintf("%s (-) vs %s (+): %d vs %d rows\n%s", names[0], names[i], len(first), len(d), diff), nil
		}
	}
	return "", nil
}

// GTIDPos returns a MariaDB server's @@gtid_binlog_pos.
func GTIDPos(t testing.TB, db *sql.DB) string {
	t.Helper()
	var s string
	if err := db.QueryRow("SELECT @@GLOBAL.gtid_binlog_pos").Scan(&s); err != nil {
		t.Fatal(err)
	}
	return s
}

// WaitCheckpoint waits until pipeline has a checkpoint row in db (the
// pipeline stored its start position), failing the test after 30 s.
func WaitCheckpoint(t testing.TB, db *sql.DB, pipeline string) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		var n int
		// No placeholder: the same text works on MySQL and Postgres.
		err := db.QueryRow("SELECT COUNT(*) FROM regiond_checkpoints WHERE pipeline = '" + strings.ReplaceAll(pipeline, "'", "''") + "'").Scan(&n)
		if err == nil && n == 1 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("pipeline %s stored no checkpoint within 30s (last error: %v)", pipeline, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
