package e2e

import (
	"os"
	"strings"
	"testing"
	"time"

	"github.com/regiond/regiond/internal/dbtest"
	"github.com/regiond/regiond/internal/testenv"
)

// TestPositionLost: the source purged the binlog that holds a pipeline's
// checkpoint while regiond was down. That pipeline stops with an error that
// says a backfill is needed, and stays stopped (no restart loop); the
// pipeline in the other direction goes on.
func TestPositionLost(t *testing.T) {
	east := &region{name: "east", srv: testenv.MariaDB(t, 1)}
	west := &region{name: "west", srv: testenv.MariaDB(t, 2)}
	for _, r := range []*region{east, west} {
		r.db = dbtest.Open(t, r.srv)
		dbtest.Exec(t, r.db, accountsTable)
	}
	cfg := writeConfig(t, []*region{east, west}, []string{"accounts"}, "")
	d := newDaemon(t, "run", "--config", cfg)
	d.start()
	dbtest.WaitCheckpoint(t, west.db, "east->west")
	dbtest.WaitCheckpoint(t, east.db, "west->east")
	dbtest.Exec(t, east.db, "INSERT INTO accounts VALUES (1, 'east', 1, NULL)")
	dbtest.WaitEqual(t, 30*time.Second, "accounts", []string{"east", "west"}, east.db, west.db)
	d.kill()

	// While regiond is down, east writes and then purges its binlog.
	dbtest.Exec(t, east.db, "INSERT INTO accounts VALUES (2, 'east', 2, NULL)", "FLUSH BINARY LOGS")
	var file string
	var pos int64
	var skip1, skip2 any
	if err := east.db.QueryRow("SHOW MASTER STATUS").Scan(&file, &pos, &skip1, &skip2); err != nil {
		t.Fatal(err)
	}
	// A binlog file still open by a dump thread of the killed process is
	// not purged: retry until the server has dropped that connection.
	for deadline := time.Now().Add(30 * time.Second); ; {
		dbtest.Exec(t, east.db, "PURGE BINARY LOGS TO '"+file+"'")
		var n int
		if err := east.db.QueryRow("SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE COMMAND LIKE 'Binlog Dump%'").Scan(&n); err != nil {
			t.Fatal(err)
		}
		rows, err := east.db.Query("SHOW BINARY LOGS")
		if err != nil {
			t.Fatal(err)
		}
		files := 0
		for rows.Next() {
			files++
		}
		rows.Close()
		if files == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("east still has %d binlog files after PURGE (%d dump threads)", files, n)
		}
		time.Sleep(200 * time.Millisecond)
	}

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
