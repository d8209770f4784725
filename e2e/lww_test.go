package e2e

import (
	"fmt"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	"github.com/regiond/regiond/internal/dbtest"
)

const profilesTable = "CREATE TABLE profiles (id BIGINT NOT NULL PRIMARY KEY, name VARCHAR(64) NOT NULL, region VARCHAR(16) NOT NULL, v BIGINT NOT NULL)"

// TestLastWriterWinsTwoRegions: two regions write the same keys at once,
// with versions drawn so that both win sometimes and ties happen; deletes
// too. Afterwards both hold the same rows, every key without a delete holds
// its highest-version write, and the discarded changes are in
// regiond_conflicts.
func TestLastWriterWinsTwoRegions(t *testing.T) {
	rs := mariaRegions(t, []string{"east", "west"}, profilesTable)
	east, west := rs[0], rs[1]
	cfg := writeConfig(t, rs, nil, "tables:\n  profiles: {conflict: last_writer_wins, version_column: v}\n")
	d := newDaemon(t, "run", "--config", cfg)
	d.start()
	waitMesh(t, east, west)

	seed := uint64(time.Now().UnixNano())
	start := time.Now()
	t.Logf("seed %d", seed)
	type write struct {
		v      int64
		region string
	}
	var (
		mu      sync.Mutex
		best    = map[int]write{}
		deleted = map[int]bool{}
		wg      sync.WaitGroup
	)
	for i, r := range rs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(seed, uint64(i)))
			for n := range 400 {
				id := rng.IntN(30)
				// Versions as an application makes them: the time of the
				// write (here in microseconds), so they rise across deletes
				// too; a write that would not raise the row's version in
				// this region raises it by one.
				v := time.Since(start).Microseconds()
				if rng.IntN(25) == 0 {
					if _, err := r.db.Exec(fmt.Sprintf("DELETE FROM profiles WHERE id = %d", id)); err != nil {
						t.Error(err)
						return
					}
					mu.Lock()
					deleted[id] = true
					mu.Unlock()
					continue
				}
				// The application's rule: a write carries a version above
				// the row's current one in its region.
				tx, err := r.db.Begin()
				if err != nil {
					t.Error(err)
					return
				}
				var cur int64
				if err := tx.QueryRow(fmt.Sprintf("SELECT COALESCE(MAX(v), 0) FROM profiles WHERE id = %d FOR UPDATE", id)).Scan(&cur); err != nil {
					t.Error(err)
					tx.Rollback()
					return
				}
				v = max(v, cur+1)
				if _, err := tx.Exec(fmt.Sprintf("INSERT INTO profiles VALUES (%d, 'n%d-%s', '%s', %d) ON DUPLICATE KEY UPDATE name = VALUES(name), region = VALUES(region), v = VALUES(v)",
					id, n, r.name, r.name, v)); err != nil {
					t.Error(err)
					tx.Rollback()
					return
				}
				if err := tx.Commit(); err != nil {
					t.Error(err)
					return
				}
				mu.Lock()
				if b, ok := best[id]; !ok || v > b.v {
					best[id] = write{v, r.name}
				}
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	if t.Failed() {
		return
	}
	dbtest.WaitEqual(t, time.Minute, "profiles", []string{"east", "west"}, east.db, west.db)
	rows, err := east.db.Query("SELECT id, v FROM profiles")
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	for rows.Next() {
		var id int
		var v int64
		if err := rows.Scan(&id, &v); err != nil {
			t.Fatal(err)
		}
		if b, ok := best[id]; ok && !deleted[id] && v != b.v {
			t.Errorf("id %d holds version %d, want the highest written, %d", id, v, b.v)
		}
	}
	var conflicts int
	for _, r := range rs {
		var n int
		if err := r.db.QueryRow("SELECT COUNT(*) FROM regiond_conflicts WHERE rule = 'last_writer_wins'").Scan(&n); err != nil {
			t.Fatal(err)
		}
		conflicts += n
	}
	t.Logf("%d conflicts recorded", conflicts)
	if conflicts == 0 {
		t.Error("concurrent writes to the same keys recorded no conflict")
	}
}
