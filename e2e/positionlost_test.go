package e2e

import (
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/regiond/regiond/internal/dbtest"
)

// TestPositionLost: the source purged the binlog that holds a pipeline's
// checkpoint while regiond was down. That pipeline stops with an error that
// says a backfill is needed, and stays stopped (no restart loop); the
// pipeline in the other direction goes on.
func TestPositionLost(t *testing.T) {
	rs := mariaRegions(t, []string{"east", "west"}, accountsTable)
	east, west := rs[0], rs[1]
	cfg := writeConfig(t, []*region{east, west}, []string{"accounts"}, "")
	d := newDaemon(t, "run", "--config", cfg)
	d.start()
	waitMesh(t, east, west)
	dbtest.Exec(t, east.db, "INSERT INTO accounts VALUES (1, 'east', 1, NULL)")
	dbtest.WaitEqual(t, 30*time.Second, "accounts", []string{"east", "west"}, east.db, west.db)
	d.kill()

	// While regiond is down, east writes and then purges its binlog.
	dbtest.Exec(t, east.db, "INSERT INTO accounts VALUES (2, 'east', 2, NULL)")
	purgeAll(t, east)

	d.start()
	dbtest.Exec(t, west.db, "INSERT INTO accounts VALUES (3, 'west', 3, NULL)")
	deadline := time.Now().Add(30 * time.Second)
	for {
		var n int
		if err := east.db.QueryRow("SELECT COUNT(*) FROM accounts WHERE id = 3").Scan(&n); err != nil {
			t.Fatal(err)
		}
		if n == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("west->east did not replicate while east->west was stopped")
		}
		time.Sleep(100 * time.Millisecond)
	}
	time.Sleep(4 * time.Second) // a restart loop would retry within this
	log, err := os.ReadFile(d.log.Name())
	if err != nil {
		t.Fatal(err)
	}
	var stopped, retried int
	for _, line := range strings.Split(string(log), "\n") {
		if !strings.Contains(line, `"pipeline":"east->west"`) {
			continue
		}
		if strings.Contains(line, "pipeline stopped") {
			stopped++
			if !strings.Contains(line, "backfill") {
				t.Errorf("the stop message does not say a backfill is needed: %s", line)
			}
		}
		if strings.Contains(line, "retrying") {
			retried++
		}
	}
	if stopped != 1 || retried != 0 {
		t.Fatalf("east->west: %d stop messages and %d retries, want 1 and 0", stopped, retried)
	}
	took, code := d.term(5 * time.Second)
	if code != 0 {
		t.Fatalf("regiond exited with %d, want 0 (a stopped pipeline does not fail the process)", code)
	}
	_ = took
}

// TestIdleDirectionSurvivesPurge: only east takes writes, so west's binlog
// holds nothing but regiond's own transactions, which west->east skips and
// never stores in east. With state_dir, the skipped position survives a
// SIGKILL, so purging west's old binlogs is no "position lost". (Without
// state_dir this test fails: west->east stops, needing a backfill.)
func TestIdleDirectionSurvivesPurge(t *testing.T) {
	rs := mariaRegions(t, []string{"east", "west"}, accountsTable)
	east, west := rs[0], rs[1]
	cfg := writeConfig(t, []*region{east, west}, []string{"accounts"}, "state_dir: "+t.TempDir()+"\n")
	d := newDaemon(t, "run", "--config", cfg)
	d.start()
	waitMesh(t, east, west)
	for i := range 50 {
		dbtest.Exec(t, east.db, fmt.Sprintf("INSERT INTO accounts VALUES (%d, 'east', 1, NULL)", i))
	}
	dbtest.WaitEqual(t, 30*time.Second, "accounts", []string{"east", "west"}, east.db, west.db)
	time.Sleep(2 * time.Second) // the state file is written every second
	d.kill()
	purgeAll(t, west)

	d.start()
	time.Sleep(4 * time.Second)
	dbtest.Exec(t, west.db, "INSERT INTO accounts VALUES (1000, 'west', 1, NULL)")
	dbtest.Exec(t, east.db, "INSERT INTO accounts VALUES (1001, 'east', 1, NULL)")
	dbtest.WaitEqual(t, 30*time.Second, "accounts", []string{"east", "west"}, east.db, west.db)
	log, err := os.ReadFile(d.log.Name())
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(log), "pipeline stopped") {
		t.Fatal("a pipeline stopped after the purge of binlogs that held only skipped transactions")
	}
}

// purgeAll rotates r's binlog and purges every older file, retrying while a
// dump thread of a killed process still holds one open.
func purgeAll(t *testing.T, r *region) {
	t.Helper()
	dbtest.Exec(t, r.db, "FLUSH BINARY LOGS")
	var file string
	var pos int64
	var skip1, skip2 any
	if err := r.db.QueryRow("SHOW MASTER STATUS").Scan(&file, &pos, &skip1, &skip2); err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(30 * time.Second); ; {
		dbtest.Exec(t, r.db, "PURGE BINARY LOGS TO '"+file+"'")
		rows, err := r.db.Query("SHOW BINARY LOGS")
		if err != nil {
			t.Fatal(err)
		}
		files := 0
		for rows.Next() {
			files++
		}
		rows.Close()
		if files == 1 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s still has %d binlog files after PURGE", r.name, files)
		}
		time.Sleep(200 * time.Millisecond)
	}
}
