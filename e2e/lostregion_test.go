package e2e

import (
	"context"
	"database/sql"
	"fmt"
	"net"
	"testing"
	"time"

	"github.com/regiond/regiond/internal/dbtest"
)

const accountsTable = "CREATE TABLE accounts (id BIGINT NOT NULL PRIMARY KEY, owner VARCHAR(40) NOT NULL, balance DECIMAL(20,2) NOT NULL, note TEXT)"

// TestLostRegion: three regions replicate; the third region's server goes
// down; regiond is killed and restarted while it is down; the two live
// regions keep taking writes and replicating both ways; when the third
// returns, its pipelines catch up from their checkpoints. A fourth region
// that is configured but never reachable stops nothing.
func TestLostRegion(t *testing.T) {
	all := mariaRegions(t, []string{"a", "b", "c"}, accountsTable)
	a, b, c := all[0], all[1], all[2]
	// Region d: a port where nothing listens.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	deadPort := l.Addr().(*net.TCPAddr).Port
	l.Close()
	extra := fmt.Sprintf("  - name: d\n    engine: mysql\n    dsn: mysql://root@127.0.0.1:%d/app\n", deadPort)
	cfg := writeConfig(t, all, []string{"accounts"}, extra)

	d := newDaemon(t, "run", "--config", cfg)
	d.start()
	waitMesh(t, all...)
	names := []string{"a", "b", "c"}
	dbs := []*sql.DB{a.db, b.db, c.db}

	// Each region writes its own keys (apply_remote: one writer per row).
	write := func(r *region, idx, from, to int) {
		t.Helper()
		for i := from; i < to; i++ {
			id := idx*1_000_000 + i
			dbtest.Exec(t, r.db, fmt.Sprintf(
				"INSERT INTO accounts VALUES (%d, '%s', %d.25, 'v1') ON DUPLICATE KEY UPDATE balance = balance + 1, note = 'v2'", id, r.name, i))
			if i%7 == 0 {
				dbtest.Exec(t, r.db, fmt.Sprintf("DELETE FROM accounts WHERE id = %d", id-3))
			}
		}
	}
	write(a, 1, 0, 200)
	write(b, 2, 0, 200)
	write(c, 3, 0, 200)
	dbtest.WaitEqual(t, time.Minute, "accounts", names, dbs...)
	t.Log("three regions converged")

	// c is lost; regiond restarts while it is down.
	if err := c.srv.Stop(); err != nil {
		t.Fatal(err)
	}
	d.kill()
	d.start()
	write(a, 1, 200, 500)
	write(b, 2, 200, 500)
	write(a, 2, 0, 50) // a updates rows b wrote earlier
	dbtest.WaitEqual(t, time.Minute, "accounts", names[:2], dbs[:2]...)
	t.Log("a and b converged while c was down")
	d.kill()
	d.start()
	write(b, 1, 500, 600)
	dbtest.WaitEqual(t, time.Minute, "accounts", names[:2], dbs[:2]...)

	// c returns (with its own writes made just before it was lost already
	// replicated); its pipelines catch up from their checkpoints.
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	if err := c.srv.Restart(ctx); err != nil {
		t.Fatal(err)
	}
	write(c, 3, 200, 300)
	dbtest.WaitEqual(t, 2*time.Minute, "accounts", names, dbs...)
	t.Log("c caught up; all three regions hold the same rows")

	took, code := d.term(5 * time.Second)
	if code != 0 {
		t.Fatalf("regiond exited with %d after SIGTERM, want 0", code)
	}
	t.Logf("SIGTERM: exited 0 in %v", took.Round(time.Millisecond))
}
