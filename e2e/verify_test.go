package e2e

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"os/exec"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/regiond/regiond/internal/dbtest"
)

// verifyDDL are the tables of the verify tests: one per rule.
var verifyDDL = map[string][]string{
	"mysql": {
		"CREATE TABLE vlww (id BIGINT NOT NULL PRIMARY KEY, val VARCHAR(32) NOT NULL, amount DECIMAL(12,2) NULL, at DATETIME(6) NULL, v BIGINT NOT NULL)",
		"CREATE TABLE vhome (id BIGINT NOT NULL PRIMARY KEY, home VARCHAR(16) NOT NULL, balance BIGINT NOT NULL, note VARCHAR(64) NULL)",
		"CREATE TABLE vplain (id BIGINT NOT NULL PRIMARY KEY, note VARCHAR(64) NULL, flag TINYINT(1) NOT NULL, data VARBINARY(16) NULL)",
	},
	"postgres": {
		"CREATE TABLE vlww (id bigint PRIMARY KEY, val varchar(32) NOT NULL, amount numeric(12,2), at timestamp(6), v bigint NOT NULL)",
		"ALTER TABLE vlww REPLICA IDENTITY FULL",
		"CREATE TABLE vhome (id bigint PRIMARY KEY, home varchar(16) NOT NULL, balance bigint NOT NULL, note varchar(64))",
		"ALTER TABLE vhome REPLICA IDENTITY FULL",
		"CREATE TABLE vplain (id bigint PRIMARY KEY, note varchar(64), flag boolean NOT NULL, data bytea)",
	},
}

const verifyTables = "tables:\n" +
	"  vlww: {conflict: last_writer_wins, version_column: v}\n" +
	"  vhome: {conflict: home_region, home_column: home}\n" +
	"  vplain: {}\n"

// TestVerifyRepairMariaDB: verify and verify --repair between two MariaDB
// regions while the daemon runs and a writer is active.
func TestVerifyRepairMariaDB(t *testing.T) {
	testVerifyRepair(t, newRegion(t, "east", "mysql", 1, verifyDDL), newRegion(t, "west", "mysql", 2, verifyDDL))
}

// TestVerifyRepairMariaDBToPostgres: the same between a MariaDB and a
// PostgreSQL region.
func TestVerifyRepairMariaDBToPostgres(t *testing.T) {
	testVerifyRepair(t, newRegion(t, "east", "mysql", 1, verifyDDL), newRegion(t, "west", "postgres", 0, verifyDDL))
}

// outOfBand runs stmts in r as one transaction that no regiond reader
// replicates, as a manual fix or a restore would: on MariaDB with
// sql_log_bin=0 (nothing reaches the binlog); on PostgreSQL in a
// transaction that first writes a marker row of its own in
// regiond_checkpoints (logical decoding still sends it, and every regiond
// reader skips a transaction that opens with a marker write).
func outOfBand(t *testing.T, r *region, stmts ...string) {
	t.Helper()
	ctx := context.Background()
	conn, err := r.db.Conn(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if r.engine() == "mysql" {
		if _, err := conn.ExecContext(ctx, "SET SESSION sql_log_bin = 0"); err != nil {
			t.Fatal(err)
		}
		defer conn.ExecContext(ctx, "SET SESSION sql_log_bin = 1")
	}
	tx, err := conn.BeginTx(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback()
	if r.engine() == "postgres" {
		stmts = append([]string{"INSERT INTO regiond_checkpoints (pipeline, kind, position, seq, updated_at) VALUES ('test-out-of-band', 'marker', '', 1, now()) " +
			"ON CONFLICT (pipeline) DO UPDATE SET seq = regiond_checkpoints.seq + 1"}, stmts...)
	}
	for _, q := range stmts {
		if _, err := tx.ExecContext(ctx, q); err != nil {
			t.Fatalf("%s: %s: %v", r.name, q, err)
		}
	}
	if err := tx.Commit(); err != nil {
		t.Fatal(err)
	}
}

// verifyJSON is the part of `verify --format json` the tests read.
type verifyJSON struct {
	Identical bool `json:"identical"`
	Tables    []struct {
		Table        string `json:"table"`
		RowsCompared int64  `json:"rows_compared"`
		Differences  []struct {
			Key     string   `json:"key"`
			Missing []string `json:"missing"`
			Columns []string `json:"columns"`
		} `json:"differences"`
		Unsettled []struct {
			Key string `json:"key"`
		} `json:"unsettled"`
	} `json:"tables"`
	Repairs []struct {
		Table       string            `json:"table"`
		Repaired    []json.RawMessage `json:"repaired"`
		NotRepaired []json.RawMessage `json:"not_repaired"`
	} `json:"repairs"`
}

// runVerify runs regiond verify with args and returns its exit code and
// parsed report.
func runVerify(t *testing.T, args ...string) (int, verifyJSON, string) {
	t.Helper()
	cmd := exec.Command(regiondBinary(t), append([]string{"verify", "--format", "json"}, args...)...)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	code := 0
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	var rep verifyJSON
	if code != 2 {
		if err := json.Unmarshal(out, &rep); err != nil {
			t.Fatalf("verify %v: exit %d, output is not JSON: %v\n%s\nstderr: %s", args, code, err, out, stderr.String())
		}
	}
	return code, rep, string(out) + "\nstderr: " + stderr.String()
}

// pipelineSeq is how many batches pipeline has applied into r.
func pipelineSeq(t *testing.T, r *region, pipeline string) int64 {
	t.Helper()
	var n int64
	q := "SELECT seq FROM regiond_checkpoints WHERE pipeline = ?"
	if r.engine() == "postgres" {
		q = "SELECT seq FROM regiond_checkpoints WHERE pipeline = $1"
	}
	if err := r.db.QueryRow(q, pipeline).Scan(&n); err != nil {
		t.Fatalf("%s: seq of %s: %v", r.name, pipeline, err)
	}
	return n
}

// testVerifyRepair: the daemon runs, a writer in east changes other rows
// all along; in west a few rows of each table are changed, deleted and
// added outside replication. verify exits 1 naming exactly those keys (the
// writer's rows in flight are not reported); verify --repair --source east
// exits 0 and nothing echoes (no pipeline applies anything after it while
// the writer is stopped); verify exits 0.
func testVerifyRepair(t *testing.T, east, west *region) {
	cfg := writeConfig(t, []*region{east, west}, nil, verifyTables)
	d := newDaemon(t, "run", "--config", cfg)
	d.start()
	waitMesh(t, east, west)
	for _, r := range []*region{east, west} {
		dbtest.WaitCheckpoint(t, r.db, r.name+"->"+r.name)
	}
	const rows = 300
	for id := 1; id <= rows; id++ {
		home := east
		if id%2 == 0 {
			home = west
		}
		dbtest.Exec(t, east.db,
			fmt.Sprintf("INSERT INTO vlww VALUES (%d, 'v%d', %d.25, '2024-05-06 07:08:09.123456', 1)", id, id, id),
			fmt.Sprintf("INSERT INTO vplain VALUES (%d, 'n%d', %d, X'0a0b%02x')", id, id, id%2, id%256))
		if home == east {
			dbtest.Exec(t, east.db, fmt.Sprintf("INSERT INTO vhome VALUES (%d, 'east', 100, NULL)", id))
		} else {
			q := fmt.Sprintf("INSERT INTO vhome VALUES (%d, 'west', 100, NULL)", id)
			dbtest.Exec(t, west.db, q)
		}
	}
	for _, tb := range []string{"vlww", "vhome", "vplain"} {
		dbtest.WaitEqualCanonical(t, time.Minute, tb, east.canon(), west.canon())
	}

	// The writer: rows 201..300 of every table, in east, all along.
	var (
		stop    atomic.Bool
		wg      sync.WaitGroup
		writes  atomic.Int64
		werr    error
		version = int64(10)
	)
	wg.Add(1)
	go func() {
		defer wg.Done()
		for n := 0; !stop.Load(); n++ {
			id := 201 + n%100
			version++
			stmts := []string{
				fmt.Sprintf("UPDATE vlww SET val = 'w%d', v = %d WHERE id = %d", n, version, id),
				fmt.Sprintf("UPDATE vplain SET note = 'w%d' WHERE id = %d", n, id),
			}
			if id%2 == 1 { // homed in east
				stmts = append(stmts, fmt.Sprintf("UPDATE vhome SET balance = balance - 1, note = 'w%d' WHERE id = %d", n, id))
			}
			for _, q := range stmts {
				if _, err := east.db.Exec(q); err != nil {
					werr = err
					return
				}
			}
			writes.Add(1)
			time.Sleep(2 * time.Millisecond)
		}
	}()
	stopWriter := func() {
		if !stop.Swap(true) {
			wg.Wait()
			if werr != nil {
				t.Fatalf("writer: %v", werr)
			}
		}
	}
	t.Cleanup(func() { stop.Store(true); wg.Wait() })

	// Outside replication, in west: changed, deleted and added rows.
	q := func(mysql, pg string) string {
		if west.engine() == "postgres" {
			return pg
		}
		return mysql
	}
	outOfBand(t, west,
		"UPDATE vlww SET val = 'manual', v = 5 WHERE id = 10",
		"UPDATE vlww SET amount = 99.99 WHERE id = 11",
		"DELETE FROM vlww WHERE id = 12",
		"INSERT INTO vlww VALUES (1001, 'added', NULL, NULL, 3)",
		"UPDATE vhome SET balance = 5 WHERE id = 21",       // homed in east: east's row wins
		"UPDATE vhome SET note = 'fix' WHERE id = 22",      // homed in west: west's row wins
		"DELETE FROM vhome WHERE id = 23",                  // homed in east: comes back
		"INSERT INTO vhome VALUES (1002, 'west', 7, NULL)", // west's own: copied to east
		q("UPDATE vplain SET flag = 1 - flag WHERE id = 30", "UPDATE vplain SET flag = NOT flag WHERE id = 30"),
		"UPDATE vplain SET note = NULL WHERE id = 31",
		"DELETE FROM vplain WHERE id = 32",
		q("INSERT INTO vplain VALUES (1003, 'added', 0, X'ff')", "INSERT INTO vplain VALUES (1003, 'added', false, '\\xff')"),
	)
	want := map[string][]string{
		"vlww":   {"10", "11", "12", "1001"},
		"vhome":  {"21", "22", "23", "1002"},
		"vplain": {"30", "31", "32", "1003"},
	}
	time.Sleep(500 * time.Millisecond) // the writer is well under way

	code, rep, out := runVerify(t, "--config", cfg, "--chunk-rows", "50")
	if code != 1 {
		t.Fatalf("verify exited %d, want 1 (differences):\n%s", code, out)
	}
	for _, tr := range rep.Tables {
		var got []string
		for _, d := range tr.Differences {
			var k struct {
				ID json.Number `json:"id"`
			}
			if err := json.Unmarshal([]byte(d.Key), &k); err != nil {
				t.Fatalf("key %q: %v", d.Key, err)
			}
			got = append(got, k.ID.String())
		}
		sort.Strings(got)
		w := append([]string(nil), want[tr.Table]...)
		sort.Strings(w)
		if strings.Join(got, ",") != strings.Join(w, ",") {
			t.Errorf("table %s: verify named keys %v, want exactly %v\n%s", tr.Table, got, w, out)
		}
		// Rows the writer rewrites about every second may not settle when
		// the machine is loaded and the pipelines lag by seconds: verify
		// then reports them as unsettled, apart from differences, which is
		// no false alarm. Any other unsettled row is.
		for _, u := range tr.Unsettled {
			var k struct {
				ID int `json:"id"`
			}
			if err := json.Unmarshal([]byte(u.Key), &k); err != nil || k.ID < 201 || k.ID > 300 {
				i := strings.Index(out, `"table": "`+tr.Table+`"`)
				t.Errorf("table %s: row %s unsettled, but the writer does not write it:\n%.4000s", tr.Table, u.Key, out[max(i, 0):])
			}
		}
		if len(tr.Unsettled) > 0 {
			t.Logf("table %s: %d of the writer's rows kept changing and were reported unsettled", tr.Table, len(tr.Unsettled))
		}
		if tr.RowsCompared < rows {
			t.Errorf("table %s: %d rows compared, want ≥ %d", tr.Table, tr.RowsCompared, rows)
		}
	}
	if t.Failed() {
		return
	}
	t.Logf("writer made %d writes during verify; verify said:\n%s", writes.Load(), out)

	// Repair, with the writer stopped so that any echo would show: no
	// pipeline may apply anything after the repair.
	stopWriter()
	waitQuiet(t, east, west)
	seqEast, seqWest := pipelineSeq(t, east, "west->east"), pipelineSeq(t, west, "east->west")
	code, rep, out = runVerify(t, "--config", cfg, "--repair", "--source", "east", "--chunk-rows", "50")
	if code != 0 {
		t.Fatalf("verify --repair exited %d, want 0:\n%s", code, out)
	}
	repaired := 0
	for _, r := range rep.Repairs {
		repaired += len(r.Repaired)
		if len(r.NotRepaired) > 0 {
			t.Errorf("table %s: not repaired: %s", r.Table, r.NotRepaired)
		}
	}
	if repaired < 12 {
		t.Errorf("%d repairs, want ≥ 12:\n%s", repaired, out)
	}
	// Each region written got its repairs behind the repair marker.
	for _, r := range []*region{east, west} {
		var kind string
		if err := r.db.QueryRow("SELECT kind FROM regiond_checkpoints WHERE pipeline = 'verify-repair'").Scan(&kind); err != nil || kind != "marker" {
			t.Errorf("%s: repair marker row: kind %q, %v", r.name, kind, err)
		}
	}
	time.Sleep(3 * time.Second) // an echo would be applied by now
	if a, b := pipelineSeq(t, east, "west->east"), pipelineSeq(t, west, "east->west"); a != seqEast || b != seqWest {
		t.Errorf("the repair echoed: pipeline west->east applied %d batches, east->west %d after it", a-seqEast, b-seqWest)
	}
	for _, tb := range []string{"vlww", "vhome", "vplain"} {
		dbtest.WaitEqualCanonical(t, 10*time.Second, tb, east.canon(), west.canon())
	}
	// The winners by rule.
	expectRow(t, east.db, west.db, "SELECT val FROM vlww WHERE id = 10", "manual") // version 5 beat version 1
	expectRow(t, east.db, west.db, "SELECT balance FROM vhome WHERE id = 21", "100")
	expectRow(t, east.db, west.db, "SELECT note FROM vhome WHERE id = 22", "fix")
	expectRow(t, east.db, west.db, "SELECT note FROM vplain WHERE id = 31", "n31")
	code, _, out = runVerify(t, "--config", cfg)
	if code != 0 {
		t.Fatalf("verify after the repair exited %d, want 0:\n%s", code, out)
	}
}

// expectRow checks that query returns want in both databases.
func expectRow(t *testing.T, a, b *sql.DB, query, want string) {
	t.Helper()
	for _, db := range []*sql.DB{a, b} {
		var got sql.NullString
		if err := db.QueryRow(query).Scan(&got); err != nil {
			t.Errorf("%s: %v", query, err)
			continue
		}
		if got.String != want {
			t.Errorf("%s = %q, want %q", query, got.String, want)
		}
	}
}

// waitQuiet waits until both pipelines' batch counters stand still for a
// second: everything written so far is applied.
func waitQuiet(t *testing.T, east, west *region) {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for {
		a, b := pipelineSeq(t, east, "west->east"), pipelineSeq(t, west, "east->west")
		time.Sleep(time.Second)
		if a == pipelineSeq(t, east, "west->east") && b == pipelineSeq(t, west, "east->west") {
			return
		}
		if time.Now().After(deadline) {
			t.Fatal("pipelines did not come to rest")
		}
	}
}
