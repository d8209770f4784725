package e2e

import (
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os/exec"
	"sync"
	"testing"
	"time"

	"github.com/regiond/regiond/internal/dbtest"
)

const ledgerTable = "CREATE TABLE ledger (id BIGINT NOT NULL PRIMARY KEY, home VARCHAR(16) NOT NULL, balance BIGINT NOT NULL, note VARCHAR(64) NOT NULL)"

// TestHomeRegion: three regions each write their own rows and, now and
// then, rows homed elsewhere (double spending). Writes made outside a row's
// home never replicate and are reverted where they were made; every region
// ends with each row as its home region last wrote it, and the violations
// are recorded.
func TestHomeRegion(t *testing.T) {
	rs := mariaRegions(t, []string{"a", "b", "c"}, ledgerTable)
	cfg := writeConfig(t, rs, nil, "tables:\n  ledger: {conflict: home_region, home_column: home}\n")
	d := newDaemon(t, "run", "--config", cfg)
	d.start()
	waitMesh(t, rs...)
	const keys = 30
	home := func(id int) *region { return rs[id%3] }
	for id := range keys {
		dbtest.Exec(t, home(id).db, fmt.Sprintf("INSERT INTO ledger VALUES (%d, '%s', 100, 'open')", id, home(id).name))
	}
	dbtest.WaitEqual(t, time.Minute, "ledger", []string{"a", "b", "c"}, rs[0].db, rs[1].db, rs[2].db)

	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d", seed)
	var (
		mu   sync.Mutex
		last = map[int]string{} // the last note each row's home wrote
		wg   sync.WaitGroup
		bad  int
	)
	for i, r := range rs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(seed, uint64(i)))
			for n := range 300 {
				id := rng.IntN(keys)
				if home(id) != r && rng.IntN(5) != 0 {
					continue // mostly, regions write their own rows
				}
				note := fmt.Sprintf("%s-%d", r.name, n)
				tx, err := r.db.Begin()
				if err != nil {
					t.Error(err)
					return
				}
				if _, err := tx.Exec(fmt.Sprintf("UPDATE ledger SET balance = balance - %d, note = '%s' WHERE id = %d", rng.IntN(10), note, id)); err != nil {
					t.Error(err)
					tx.Rollback()
					return
				}
				if err := tx.Commit(); err != nil {
					t.Error(err)
					return
				}
				mu.Lock()
				if home(id) == r {
					last[id] = note
				} else {
					bad++
				}
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	if t.Failed() {
		return
	}
	t.Logf("%d writes outside their row's home", bad)
	dbtest.WaitEqual(t, time.Minute, "ledger", []string{"a", "b", "c"}, rs[0].db, rs[1].db, rs[2].db)
	for id, want := range last {
		var got string
		if err := rs[0].db.QueryRow(fmt.Sprintf("SELECT note FROM ledger WHERE id = %d", id)).Scan(&got); err != nil {
			t.Fatal(err)
		}
		if got != want {
			t.Errorf("row %d: note %q, want %q (the last write of its home, %s)", id, got, want, home(id).name)
		}
	}
	total := 0
	for _, r := range rs {
		var n int
		if err := r.db.QueryRow("SELECT COUNT(*) FROM regiond_conflicts WHERE rule = 'home_region'").Scan(&n); err != nil {
			t.Fatal(err)
		}
		if bad > 0 && n == 0 {
			t.Errorf("%s recorded no home_region conflict", r.name)
		}
		total += n
	}
	// The operator's view: regiond conflicts lists them all.
	out, err := exec.Command(regiondBinary(t), "conflicts", "--config", cfg, "--format", "json", "--limit", "100000").Output()
	if err != nil {
		t.Fatalf("regiond conflicts: %v", err)
	}
	var listed []struct {
		Region string          `json:"region"`
		Rule   string          `json:"rule"`
		Key    json.RawMessage `json:"key"`
		Lost   json.RawMessage `json:"lost_image"`
	}
	if err := json.Unmarshal(out, &listed); err != nil {
		t.Fatalf("regiond conflicts --format json: %v\n%s", err, out)
	}
	if len(listed) != total {
		t.Errorf("regiond conflicts listed %d conflicts, the tables hold %d", len(listed), total)
	}
	if len(listed) > 0 && (listed[0].Rule != "home_region" || len(listed[0].Lost) < 10) {
		t.Errorf("conflict record lacks rule or image: %+v", listed[0])
	}
}
