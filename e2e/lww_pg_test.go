package e2e

import (
	"database/sql"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	"github.com/regiond/regiond/internal/dbtest"
	"github.com/regiond/regiond/internal/testenv"
)

// profilesPostgres is profilesTable in PostgreSQL; REPLICA IDENTITY FULL so
// that its deletes carry the version.
var profilesPostgres = []string{
	"CREATE TABLE profiles (id bigint PRIMARY KEY, name varchar(64) NOT NULL, region varchar(16) NOT NULL, v bigint NOT NULL)",
	"ALTER TABLE profiles REPLICA IDENTITY FULL",
}

// TestLastWriterWinsMariaDBAndPostgres is TestLastWriterWinsTwoRegions with
// a MariaDB region and a PostgreSQL region: both write the same keys at
// once, with versions that make either win and tie; deletes too.
// Afterwards both hold the same rows, every key without a delete holds its
// highest-version write, and the discarded changes are in
// regiond_conflicts.
func TestLastWriterWinsMariaDBAndPostgres(t *testing.T) {
	east := &region{name: "east", srv: testenv.MariaDB(t, 1)}
	west := &region{name: "west", srv: testenv.Postgres(t)}
	east.db = dbtest.Open(t, east.srv)
	dbtest.Exec(t, east.db, profilesTable)
	west.db = dbtest.OpenPostgres(t, west.srv)
	dbtest.Exec(t, west.db, profilesPostgres...)
	rs := []*region{east, west}
	cfg := writeConfig(t, rs, nil, "tables:\n  profiles: {conflict: last_writer_wins, version_column: v}\n")
	d := newDaemon(t, "run", "--config", cfg)
	d.start()
	waitMesh(t, east, west)
	// And the local pipelines, which write the tombstones of each region's
	// own deletes.
	for _, r := range rs {
		dbtest.WaitCheckpoint(t, r.db, r.name+"->"+r.name)
	}

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
		upsert := "INSERT INTO profiles VALUES (%d, 'n%d-%s', '%s', %d) ON DUPLICATE KEY UPDATE name = VALUES(name), region = VALUES(region), v = VALUES(v)"
		if r.engine() == "postgres" {
			upsert = "INSERT INTO profiles VALUES (%d, 'n%d-%s', '%s', %d) ON CONFLICT (id) DO UPDATE SET name = EXCLUDED.name, region = EXCLUDED.region, v = EXCLUDED.v"
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(seed, uint64(i)))
			for n := range 400 {
				// Ids of one width: dbtest.DumpCanonical orders a
				// Postgres table by its key's text (ORDER BY names the
				// ::text output column), MariaDB by value.
				id := 100 + rng.IntN(30)
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
				err = tx.QueryRow(fmt.Sprintf("SELECT v FROM profiles WHERE id = %d FOR UPDATE", id)).Scan(&cur)
				if err != nil && !errors.Is(err, sql.ErrNoRows) {
					t.Error(err)
					tx.Rollback()
					return
				}
				v = max(v, cur+1)
				if _, err := tx.Exec(fmt.Sprintf(upsert, id, n, r.name, r.name, v)); err != nil {
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
	dbtest.WaitEqualCanonical(t, time.Minute, "profiles", east.canon(), west.canon())
	for _, r := range rs {
		rows, err := r.db.Query("SELECT id, v FROM profiles")
		if err != nil {
			t.Fatal(err)
		}
		for rows.Next() {
			var id int
			var v int64
			if err := rows.Scan(&id, &v); err != nil {
				t.Fatal(err)
			}
			if b, ok := best[id]; ok && !deleted[id] && v != b.v {
				t.Errorf("%s: id %d holds version %d, want the highest written, %d (from %s)", r.name, id, v, b.v, b.region)
			}
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			t.Fatal(err)
		}
	}
	var conflicts int
	for _, r := range rs {
		var n int
		if err := r.db.QueryRow("SELECT COUNT(*) FROM regiond_conflicts WHERE rule = 'last_writer_wins'").Scan(&n); err != nil {
			t.Fatal(err)
		}
		t.Logf("%s: %d conflicts recorded", r.name, n)
		conflicts += n
	}
	if conflicts == 0 {
		t.Error("concurrent writes to the same keys recorded no conflict")
	}
	// Keys deleted last are gone everywhere with a tombstone in each
	// region; every region agrees on that (WaitEqualCanonical), and the
	// Postgres region has tombstones of both regions' deletes.
	var tombs int
	if err := west.db.QueryRow("SELECT COUNT(*) FROM regiond_tombstones WHERE table_name = 'profiles'").Scan(&tombs); err != nil {
		t.Fatal(err)
	}
	if len(deleted) > 0 && tombs == 0 {
		t.Errorf("%d keys were deleted, and west holds no tombstone", len(deleted))
	}
	if _, code := d.term(5 * time.Second); code != 0 {
		t.Fatalf("exit code %d after SIGTERM", code)
	}
}
