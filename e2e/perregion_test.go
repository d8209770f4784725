package e2e

import (
	"fmt"
	"testing"
	"time"

	"github.com/regiond/regiond/internal/dbtest"
)

// TestProcessPerRegion runs one `regiond run --region X` process per region,
// as in production: both write, both converge, nothing echoes.
func TestProcessPerRegion(t *testing.T) {
	rs := mariaRegions(t, []string{"east", "west"}, accountsTable)
	east, west := rs[0], rs[1]
	cfg := writeConfig(t, []*region{east, west}, []string{"accounts"}, "")
	de := newDaemon(t, "run", "--config", cfg, "--region", "east")
	dw := newDaemon(t, "run", "--config", cfg, "--region", "west")
	de.start()
	dw.start()
	waitMesh(t, east, west)
	for i := range 300 {
		r, other := east, west
		if i%2 == 1 {
			r, other = west, east
		}
		dbtest.Exec(t, r.db, fmt.Sprintf("INSERT INTO accounts VALUES (%d, '%s', %d, 'x')", i, r.name, i))
		if i%10 == 9 {
			// Rows replicate; update one the other region wrote.
			dbtest.Exec(t, other.db, fmt.Sprintf("UPDATE accounts SET note = 'seen by %s' WHERE id = %d", other.name, i-9))
		}
	}
	dbtest.WaitEqual(t, time.Minute, "accounts", []string{"east", "west"}, east.db, west.db)
	pe, pw := dbtest.GTIDPos(t, east.db), dbtest.GTIDPos(t, west.db)
	time.Sleep(2 * time.Second)
	if pe2, pw2 := dbtest.GTIDPos(t, east.db), dbtest.GTIDPos(t, west.db); pe2 != pe || pw2 != pw {
		t.Fatalf("binlogs still move: east %s -> %s, west %s -> %s", pe, pe2, pw, pw2)
	}
	for _, d := range []*daemon{de, dw} {
		if _, code := d.term(5 * time.Second); code != 0 {
			t.Fatalf("exit code %d after SIGTERM", code)
		}
	}
}
