package e2e

import (
	"bytes"
	"context"
	"database/sql"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/regiond/regiond/internal/dbtest"
)

// backfillDDL: items (apply_remote) over many types of the mapping, and
// profiles under last_writer_wins.
var backfillDDL = map[string][]string{
	"mysql": {
		"CREATE TABLE items (id BIGINT NOT NULL PRIMARY KEY, n INT, price DECIMAL(12,2), f DOUBLE, name VARCHAR(64), body TEXT," +
			" bin VARBINARY(16), at DATETIME(6), ts TIMESTAMP(6) NULL DEFAULT NULL, d DATE, flag TINYINT(1)) DEFAULT CHARSET=utf8mb4",
		"CREATE TABLE profiles (id INT NOT NULL PRIMARY KEY, v BIGINT NOT NULL, note VARCHAR(64)) DEFAULT CHARSET=utf8mb4",
	},
	"postgres": {
		"CREATE TABLE items (id bigint PRIMARY KEY, n integer, price numeric(12,2), f double precision, name varchar(64), body text," +
			" bin bytea, at timestamp(6), ts timestamptz(6), d date, flag boolean)",
		"CREATE TABLE profiles (id integer PRIMARY KEY, v bigint NOT NULL, note varchar(64))",
		"ALTER TABLE profiles REPLICA IDENTITY FULL",
	},
}

const backfillTables = "tables:\n  items: {}\n  profiles: {conflict: last_writer_wins, version_column: v}\n"

// TestBackfillMariaDBToPostgres: 100,000 rows of a MariaDB region are
// copied into an empty PostgreSQL region while a writer changes rows of the
// source and regiond streams; the backfill is SIGKILLed half way and run
// again; then both regions hold the same rows.
func TestBackfillMariaDBToPostgres(t *testing.T) {
	testBackfill(t, newRegion(t, "east", "mysql", 1, backfillDDL), newRegion(t, "west", "postgres", 0, backfillDDL), 100000)
}

// TestBackfillMariaDBToMariaDB: the same between two MariaDB regions.
func TestBackfillMariaDBToMariaDB(t *testing.T) {
	testBackfill(t, newRegion(t, "east", "mysql", 1, backfillDDL), newRegion(t, "west", "mysql", 2, backfillDDL), 100000)
}

func testBackfill(t *testing.T, src, dst *region, rows int) {
	began := time.Now()
	step := func(what string) { t.Logf("%6.1fs %s", time.Since(began).Seconds(), what) }
	// Existing rows, written before regiond starts: only backfill brings
	// them to dst.
	dbtest.Exec(t, src.db,
		fmt.Sprintf(`INSERT INTO items SELECT seq, seq %% 1000, seq / 7, seq * 1.5, CONCAT('item-', seq), REPEAT('x', seq %% 50),
			UNHEX(LPAD(HEX(seq), 8, '0')), '2024-01-02 03:04:05.123456' + INTERVAL seq SECOND, '2024-06-01 00:00:00' + INTERVAL seq MINUTE,
			'2020-01-01' + INTERVAL seq %% 3000 DAY, seq %% 2 FROM seq_1_to_%d`, rows),
		"INSERT INTO profiles SELECT seq, 1000, CONCAT('p', seq) FROM seq_1_to_5000")
	step("source loaded")
	cfg := writeConfig(t, []*region{src, dst}, nil, "state_dir: "+t.TempDir()+"\n"+backfillTables)
	d := newDaemon(t, "run", "--config", cfg)
	d.start()
	waitMesh(t, src, dst)
	step("pipelines started")

	// A writer on the source: updates, deletes and inserts of items, and
	// last_writer_wins updates and deletes of profiles with rising
	// versions, until stopped.
	ctx, cancel := context.WithCancel(t.Context())
	var (
		wg     sync.WaitGroup
		writes atomic.Int64
		werr   error
	)
	wg.Add(1)
	go func() {
		defer wg.Done()
		werr = backfillWriter(ctx, src.db, rows, &writes)
	}()
	defer func() {
		cancel()
		wg.Wait()
	}()

	// First run, killed once about half of the chunks are done.
	bin := regiondBinary(t)
	args := []string{"backfill", "--config", cfg, "--from", src.name, "--to", dst.name, "--chunk-size", "1000", "--parallel", "3"}
	first := exec.Command(bin, args...)
	var out1 bytes.Buffer
	first.Stdout, first.Stderr = &out1, &out1
	if err := first.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- first.Wait() }()
	killed := false
	deadline := time.Now().Add(3 * time.Minute)
wait:
	for {
		select {
		case err := <-exited:
			t.Fatalf("backfill ended before it could be killed (%v):\n%s", err, out1.String())
		default:
		}
		var done, all int
		q := "SELECT COUNT(*) FILTER (WHERE done), COUNT(*) FROM regiond_backfill WHERE chunk >= 0"
		if dst.engine() == "mysql" {
			q = "SELECT COALESCE(SUM(done), 0), COUNT(*) FROM regiond_backfill WHERE chunk >= 0"
		}
		_ = dst.db.QueryRow(q).Scan(&done, &all) // the table appears with the plan
		if all > 0 && done >= all/2 {
			_ = first.Process.Signal(syscall.SIGKILL)
			<-exited
			killed = true
			t.Logf("backfill SIGKILLed after %d of %d chunks", done, all)
			break wait
		}
		if time.Now().After(deadline) {
			t.Fatalf("backfill made no progress:\n%s", out1.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
	if !killed {
		t.Fatal("not killed")
	}

	step("first backfill killed")
	// The rerun continues from the chunks done.
	start := time.Now()
	out, err := exec.Command(bin, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("backfill rerun: %v\n%s", err, out)
	}
	t.Logf("rerun took %v: %s", time.Since(start).Round(time.Millisecond), bytes.TrimSpace(out))
	if !strings.Contains(string(out), "copied before") {
		t.Errorf("the rerun did not continue from the first run's chunks:\n%s", out)
	}
	// Keep writing a little after the backfill, then stop.
	time.Sleep(time.Second)
	cancel()
	wg.Wait()
	step("writer stopped")
	if werr != nil {
		t.Fatalf("writer: %v", werr)
	}
	t.Logf("writer made %d writes during the backfill", writes.Load())
	if writes.Load() < 100 {
		t.Errorf("only %d concurrent writes: the test proves little", writes.Load())
	}

	// Right after the writer stopped, with its last writes still streaming:
	// verify finds the regions identical (rows in flight settle once the
	// pipelines pass them).
	if code, _, vout := runVerify(t, "--config", cfg); code != 0 {
		t.Errorf("verify after the backfill: exit %d, want 0:\n%.6000s", code, vout)
	}
	for _, tb := range []string{"items", "profiles"} {
		dbtest.WaitEqualCanonical(t, 2*time.Minute, tb, src.canon(), dst.canon())
		step(tb + " equal")
	}
	step("regions equal")
	var n int
	if err := dst.db.QueryRow("SELECT COUNT(*) FROM items").Scan(&n); err != nil || n < rows/2 {
		t.Fatalf("target holds %d items (%v)", n, err)
	}
	// No echo: with the writer stopped, the source's log stands still.
	if src.engine() == "mysql" {
		before := dbtest.GTIDPos(t, src.db)
		time.Sleep(3 * time.Second)
		if after := dbtest.GTIDPos(t, src.db); after != before {
			t.Errorf("the source's binlog moved from %s to %s with no writer: regiond echoed", before, after)
		}
	}
	// Nothing the backfill skipped was recorded as a conflict.
	var conflicts int
	if err := dst.db.QueryRow("SELECT COUNT(*) FROM regiond_conflicts WHERE pipeline LIKE 'backfill%'").Scan(&conflicts); err != nil {
		t.Fatal(err)
	}
	if conflicts != 0 {
		t.Errorf("%d conflicts recorded by backfill", conflicts)
	}
	if _, err := os.Stat(bin); err != nil {
		t.Fatal(err)
	}
}

// backfillWriter changes the source until ctx ends: small transactions of
// updates, deletes and inserts of items; one transaction in ten updates
// (rising versions) and deletes profiles instead.
func backfillWriter(ctx context.Context, db *sql.DB, rows int, writes *atomic.Int64) error {
	rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 7))
	next := int64(rows)
	version := int64(2000)
	for ctx.Err() == nil {
		tx, err := db.BeginTx(ctx, nil)
		if err != nil {
			return ignoreCancel(ctx, err)
		}
		// One transaction in ten writes profiles, the others items.
		lww := rng.IntN(10) == 0
		for range 1 + rng.IntN(4) {
			id := 1 + rng.Int64N(int64(rows)+1000)
			var q string
			var args []any
			k := rng.IntN(8)
			if lww {
				k = 8 + rng.IntN(2)
			}
			switch {
			case k < 5:
				q, args = "UPDATE items SET n = n + 1, name = ?, at = UTC_TIMESTAMP(6), flag = 1 - flag WHERE id = ?", []any{fmt.Sprintf("upd-%d", rng.IntN(1e6)), id}
			case k < 7:
				q, args = "DELETE FROM items WHERE id = ?", []any{id}
			case k < 8:
				next++
				q, args = "INSERT INTO items (id, n, name, bin) VALUES (?, 1, 'new', 0x00ff)", []any{next}
			case k < 9:
				version++
				q, args = "UPDATE profiles SET v = ?, note = ? WHERE id = ?", []any{version, fmt.Sprintf("n%d", version), 1 + rng.IntN(5000)}
			default:
				q, args = "DELETE FROM profiles WHERE id = ?", []any{1 + rng.IntN(5000)}
			}
			if _, err := tx.ExecContext(ctx, q, args...); err != nil {
				_ = tx.Rollback()
				return ignoreCancel(ctx, err)
			}
		}
		if err := tx.Commit(); err != nil {
			return ignoreCancel(ctx, err)
		}
		writes.Add(1)
		// A busy application, not a flood: the backfill shares the
		// target with the applier of these writes.
		time.Sleep(10 * time.Millisecond)
	}
	return nil
}

func ignoreCancel(ctx context.Context, err error) error {
	if ctx.Err() != nil {
		return nil
	}
	return err
}
