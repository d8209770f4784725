package e2e

import (
	"fmt"
	"net"
	"testing"
	"time"

	"github.com/regiond/regiond/internal/dbtest"
)

// TestTombstonePruning: a MariaDB and a PostgreSQL region under
// last_writer_wins with tombstone_retention 2s. While a third configured
// region is unreachable (its pipelines into the others never pass
// anything), a tombstone stays in both regions long after its retention:
// a late older write from that region could still need it. Once the
// config no longer has that region and both directions move on, both
// regions prune it; the deleted row stays deleted.
func TestTombstonePruning(t *testing.T) {
	rs := []*region{newRegion(t, "east", "mysql", 1, rulesDDL), newRegion(t, "west", "postgres", 0, rulesDDL)}
	east, west := rs[0], rs[1]
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	deadPort := l.Addr().(*net.TCPAddr).Port
	l.Close()
	tables := "tombstone_retention: 2s\ntables:\n  profiles: {conflict: last_writer_wins, version_column: v}\n"
	lost := fmt.Sprintf("  - name: north\n    engine: mysql\n    dsn: mysql://root@127.0.0.1:%d/app\n", deadPort)
	d := newDaemon(t, "run", "--config", writeConfig(t, rs, nil, lost+tables))
	d.start()
	waitMesh(t, rs...)
	for _, r := range rs {
		dbtest.WaitCheckpoint(t, r.db, r.name+"->"+r.name)
	}
	dbtest.Exec(t, east.db, "INSERT INTO profiles VALUES (1, 'doomed', 10), (2, 'kept', 10)")
	dbtest.WaitEqualCanonical(t, time.Minute, "profiles", east.canon(), west.canon())
	dbtest.Exec(t, east.db, "DELETE FROM profiles WHERE id = 1")
	tombs := func(r *region) int {
		t.Helper()
		var n int
		if err := r.db.QueryRow("SELECT COUNT(*) FROM regiond_tombstones WHERE table_name = 'profiles'").Scan(&n); err != nil {
			t.Fatalf("%s: %v", r.name, err)
		}
		return n
	}
	// Versions grow with every write, as last_writer_wins requires.
	ver := 10
	write := func() {
		t.Helper()
		ver++
		dbtest.Exec(t, east.db, fmt.Sprintf("INSERT INTO profiles VALUES (100, 'east', %d) ON DUPLICATE KEY UPDATE v = %d", ver, ver))
		dbtest.Exec(t, west.db, fmt.Sprintf("INSERT INTO profiles VALUES (200, 'west', %d) ON CONFLICT (id) DO UPDATE SET v = %d", ver, ver))
	}
	waitTombs := func(what string, want int, traffic bool) {
		t.Helper()
		deadline := time.Now().Add(90 * time.Second)
		for {
			if tombs(east) == want && tombs(west) == want {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: east holds %d tombstones, west %d; want %d each", what, tombs(east), tombs(west), want)
			}
			if traffic {
				write() // both directions move on
			}
			time.Sleep(500 * time.Millisecond)
		}
	}
	waitTombs("after the delete", 1, false)
	// Well past the retention and the margin, with traffic both ways: north's
	// pipelines have passed nothing, so the tombstone stays.
	stop := time.Now().Add(15 * time.Second)
	for time.Now().Before(stop) {
		write()
		time.Sleep(500 * time.Millisecond)
	}
	if e, w := tombs(east), tombs(west); e != 1 || w != 1 {
		t.Fatalf("with region north unreachable: east holds %d tombstones, west %d; want the tombstone kept in both", e, w)
	}
	if _, code := d.term(5 * time.Second); code != 0 {
		t.Fatalf("exit code %d after SIGTERM", code)
	}

	// Without north: every pipeline into each region moves past the delete.
	d = newDaemon(t, "run", "--config", writeConfig(t, rs, nil, tables))
	d.start()
	waitTombs("without north", 0, true)
	for _, r := range rs {
		var n int
		if err := r.db.QueryRow("SELECT COUNT(*) FROM profiles WHERE id = 1").Scan(&n); err != nil || n != 0 {
			t.Errorf("%s: profiles 1 present %d times (%v) after its tombstone was pruned, want deleted", r.name, n, err)
		}
	}
	dbtest.WaitEqualCanonical(t, time.Minute, "profiles", east.canon(), west.canon())
	if _, code := d.term(5 * time.Second); code != 0 {
		t.Fatalf("exit code %d after SIGTERM", code)
	}
}
