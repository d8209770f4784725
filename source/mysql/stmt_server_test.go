package mysql_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/regiond/regiond/internal/dbtest"
	"github.com/regiond/regiond/internal/testenv"
	"github.com/regiond/regiond/pipeline"
	"github.com/regiond/regiond/source"
	mysqlsource "github.com/regiond/regiond/source/mysql"
)

// TestStatementFormatDMLStops: a session may SET SESSION binlog_format =
// 'STATEMENT' although the server logs ROW; its DML then reaches the binlog
// as text without row images. On an unconfigured table that is harmless and
// must pass; on a configured table the reader must stop with a permanent
// error instead of skipping the change, and must not deliver its
// transaction (nor any later one, which would move the position past it).
func TestStatementFormatDMLStops(t *testing.T) {
	east := testenv.MariaDB(t, 1)
	db := dbtest.Open(t, east)
	dbtest.Exec(t, db,
		"CREATE TABLE accounts (id INT PRIMARY KEY, balance INT)",
		"CREATE TABLE log (id INT PRIMARY KEY, note VARCHAR(20))")

	reader, err := mysqlsource.New(mysqlsource.Config{
		Region: "east", Conn: dbtest.Params(east), ServerID: 1001,
		Tables: map[string]bool{"accounts": true},
	}, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	defer reader.Close()
	ctx := t.Context()
	from, err := reader.CurrentPosition(ctx)
	if err != nil {
		t.Fatal(err)
	}

	stmtConn, err := db.Conn(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer stmtConn.Close()
	exec := func(q string) {
		t.Helper()
		if _, err := stmtConn.ExecContext(ctx, q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	exec("SET SESSION binlog_format = 'STATEMENT'")
	exec("INSERT INTO log VALUES (1, 'statement')")           // unconfigured: passes
	dbtest.Exec(t, db, "INSERT INTO accounts VALUES (1, 10)") // ROW: replicated
	exec("INSERT INTO `app`.accounts VALUES (2, 20)")         // must stop here
	var gtid string
	if err := stmtConn.QueryRowContext(ctx, "SELECT @@last_gtid").Scan(&gtid); err != nil {
		t.Fatal(err)
	}
	dbtest.Exec(t, db, "INSERT INTO accounts VALUES (3, 30)") // after the stop: not delivered

	out := make(chan source.Txn, 100)
	// The bound only keeps a broken reader from hanging the test.
	readCtx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	err = reader.Read(readCtx, from, out)
	close(out)
	if readCtx.Err() != nil {
		t.Fatalf("the reader did not stop at the statement-based INSERT into accounts: %v", err)
	}
	if !errors.Is(err, mysqlsource.ErrUnsupported) || !errors.Is(err, pipeline.ErrPermanent) {
		t.Fatalf("error %v is not ErrUnsupported and permanent", err)
	}
	for _, want := range []string{"region east", "transaction " + gtid + " ", "INSERT on table accounts", "binlog_format=ROW", "regiond_checkpoints", "regiond backfill --from east"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not say %q", err, want)
		}
	}

	var txns, ids []string
	for txn := range out {
		txns = append(txns, txn.End.String())
		for _, c := range txn.Changes {
			ids = append(ids, fmt.Sprintf("%s:%v", c.Table.Name, c.After))
		}
	}
	// The statement on log and the ROW insert of id 1, nothing after.
	if len(txns) != 2 || len(ids) != 1 || !strings.HasPrefix(ids[0], "accounts:[1 ") {
		t.Errorf("delivered transactions %v with changes %v; want 2 transactions, the second inserting accounts id 1", txns, ids)
	}
	for _, end := range txns {
		if strings.Contains(end, gtid) {
			t.Errorf("a transaction ending at %s (contains the stopped transaction %s) was delivered", end, gtid)
		}
	}
}
