package e2e

import (
	"context"
	"fmt"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	"github.com/regiond/regiond/internal/dbtest"
	"github.com/regiond/regiond/internal/testenv"
)

// newRegion starts a region of the engine ("mysql" or "postgres") and runs
// that engine's ddl in it.
func newRegion(t *testing.T, name, engine string, serverID int, ddl map[string][]string) *region {
	t.Helper()
	r := &region{name: name}
	if engine == "postgres" {
		r.srv = testenv.Postgres(t)
		r.db = dbtest.OpenPostgres(t, r.srv)
	} else {
		r.srv = testenv.MariaDB(t, serverID)
		r.db = dbtest.Open(t, r.srv)
	}
	dbtest.Exec(t, r.db, ddl[engine]...)
	return r
}

// TestLastWriterWinsTwoRegions: two MariaDB regions write the same keys at
// once under last_writer_wins, deletes too.
func TestLastWriterWinsTwoRegions(t *testing.T) {
	testLastWriterWins(t, newRegion(t, "east", "mysql", 1, rulesDDL), newRegion(t, "west", "mysql", 2, rulesDDL))
}

// TestLastWriterWinsMariaDBAndPostgres: the same with a MariaDB and a
// PostgreSQL region.
func TestLastWriterWinsMariaDBAndPostgres(t *testing.T) {
	testLastWriterWins(t, newRegion(t, "east", "mysql", 1, rulesDDL), newRegion(t, "west", "postgres", 0, rulesDDL))
}

// testLastWriterWins has each region write the same keys at once, with
// versions as an application makes them (the time of the write), deletes
// too. Afterwards the regions hold the same rows, every key without a
// delete holds its highest-version write, and the discarded changes are in
// regiond_conflicts.
func testLastWriterWins(t *testing.T, rs ...*region) {
	cfg := writeConfig(t, rs, nil, "tables:\n  profiles: {conflict: last_writer_wins, version_column: v}\n")
	d := newDaemon(t, "run", "--config", cfg)
	d.start()
	waitMesh(t, rs...)
	// And the local pipelines, which write the tombstones of each region's
	// own deletes.
	for _, r := range rs {
		dbtest.WaitCheckpoint(t, r.db, r.name+"->"+r.name)
	}
	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d", seed)
	w := &rulesWorld{best: map[int]int64{}, lwwDeleted: map[int]bool{}}
	start := time.Now()
	var wg sync.WaitGroup
	errs := make(chan error, len(rs))
	for i, r := range rs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(seed, uint64(i)))
			for range 400 {
				if err := w.lwwWrite(context.Background(), r, rng, rng.IntN(30), start); err != nil {
					errs <- fmt.Errorf("%s: %w", r.name, err)
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	canon := make([]dbtest.Region, len(rs))
	for i, r := range rs {
		canon[i] = r.canon()
	}
	dbtest.WaitEqualCanonical(t, time.Minute, "profiles", canon...)
	for id, v := range w.best {
		if w.lwwDeleted[id] {
			continue
		}
		for _, r := range rs {
			var got int64
			if err := r.db.QueryRow(fmt.Sprintf("SELECT v FROM profiles WHERE id = %d", id)).Scan(&got); err != nil {
				t.Fatalf("%s: profiles %d: %v", r.name, id, err)
			}
			if got != v {
				t.Errorf("%s: profiles %d holds version %d, want the highest written, %d", r.name, id, got, v)
			}
		}
	}
	conflicts := 0
	for _, r := range rs {
		var n int
		if err := r.db.QueryRow("SELECT COUNT(*) FROM regiond_conflicts WHERE rule = 'last_writer_wins'").Scan(&n); err != nil {
			t.Fatal(err)
		}
		conflicts += n
	}
	t.Logf("%d writes, %d conflicts recorded", w.lwwWrites, conflicts)
	if conflicts == 0 {
		t.Error("concurrent writes to the same keys recorded no conflict")
	}
}
