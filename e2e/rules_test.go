package e2e

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/regiond/regiond/internal/dbtest"
)

// rulesDuration is how long the writers of TestConflictRules run.
func rulesDuration() time.Duration {
	if s := os.Getenv("REGIOND_RULES_SECONDS"); s != "" {
		if n, err := strconv.Atoi(s); err == nil {
			return time.Duration(n) * time.Second
		}
	}
	return 20 * time.Second
}

var rulesDDL = map[string][]string{
	"mysql": {
		"CREATE TABLE profiles (id BIGINT NOT NULL PRIMARY KEY, name VARCHAR(64) NOT NULL, v BIGINT NOT NULL)",
		"CREATE TABLE accounts (id BIGINT NOT NULL PRIMARY KEY, home VARCHAR(16) NOT NULL, balance BIGINT NOT NULL, note VARCHAR(64) NOT NULL)",
	},
	"postgres": {
		"CREATE TABLE profiles (id bigint PRIMARY KEY, name varchar(64) NOT NULL, v bigint NOT NULL)",
		"ALTER TABLE profiles REPLICA IDENTITY FULL",
		"CREATE TABLE accounts (id bigint PRIMARY KEY, home varchar(16) NOT NULL, balance bigint NOT NULL, note varchar(64) NOT NULL)",
		"ALTER TABLE accounts REPLICA IDENTITY FULL",
	},
}

// TestConflictRules: two MariaDB regions and a PostgreSQL region, one writer
// in each hitting the same keys of a last_writer_wins table and a
// home_region table for 20 s with inserts, updates and deletes, regiond
// SIGKILLed once at a random moment. Afterwards all three converge within
// 60 s; every last_writer_wins key without deletes holds its highest
// version; every home_region key holds the last write made in its home;
// the discarded changes are recorded; nothing echoes.
func TestConflictRules(t *testing.T) {
	rs := []*region{
		newRegion(t, "m1", "mysql", 1, rulesDDL),
		newRegion(t, "m2", "mysql", 2, rulesDDL),
		newRegion(t, "p1", "postgres", 0, rulesDDL),
	}
	cfg := writeConfig(t, rs, nil, "state_dir: "+t.TempDir()+"\ntables:\n"+
		"  profiles: {conflict: last_writer_wins, version_column: v}\n"+
		"  accounts: {conflict: home_region, home_column: home}\n")
	d := newDaemon(t, "run", "--config", cfg)
	d.start()
	waitMesh(t, rs...)

	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d", seed)
	const keys = 24
	home := func(id int) *region { return rs[id%len(rs)] }
	start := time.Now()
	deadline := start.Add(rulesDuration())
	w := &rulesWorld{best: map[int]int64{}, lwwDeleted: map[int]bool{}, last: map[int]string{}}
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	var wg sync.WaitGroup
	errs := make(chan error, len(rs))
	for i, r := range rs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(seed, uint64(i)))
			for n := 0; time.Now().Before(deadline); n++ {
				var err error
				if rng.IntN(2) == 0 {
					err = w.lwwWrite(ctx, r, rng, rng.IntN(keys), start)
				} else {
					id := rng.IntN(keys)
					if home(id) != r && rng.IntN(4) != 0 {
						id = id - id%len(rs) + i // mostly its own rows
					}
					err = w.homeWrite(ctx, r, rng, id, home(id) == r, n)
				}
				if deadlocked(err) {
					// An application retries a deadlock victim, and so
					// does this one: regiond's appliers lock rows here
					// too, and an INSERT ... ON CONFLICT of a new key can
					// meet the applier's INSERT of the same key. A victim
					// wrote nothing and is not counted.
					w.mu.Lock()
					w.deadlocks++
					w.mu.Unlock()
					continue
				}
				if err != nil {
					errs <- fmt.Errorf("%s: %w", r.name, err)
					return
				}
			}
		}()
	}
	// One SIGKILL at a random moment while the writers run.
	time.Sleep(time.Duration(2000+rand.New(rand.NewPCG(seed, 99)).IntN(int(rulesDuration().Milliseconds()-4000))) * time.Millisecond)
	d.kill()
	t.Logf("killed regiond after %v", time.Since(start).Round(time.Millisecond))
	d.start()
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	canon := make([]dbtest.Region, len(rs))
	for i, r := range rs {
		canon[i] = r.canon()
	}
	converge := time.Now()
	dbtest.WaitEqualCanonical(t, 60*time.Second, "profiles", canon...)
	dbtest.WaitEqualCanonical(t, 60*time.Second, "accounts", canon...)
	t.Logf("converged %v after the writers stopped; %d lww writes, %d home writes (%d outside the row's home), %d deadlock victims",
		time.Since(converge).Round(time.Millisecond), w.lwwWrites, w.homeWrites, w.violations, w.deadlocks)

	for id, v := range w.best {
		if w.lwwDeleted[id] {
			continue
		}
		var got int64
		if err := rs[0].db.QueryRow(fmt.Sprintf("SELECT v FROM profiles WHERE id = %d", id)).Scan(&got); err != nil {
			t.Fatalf("profiles %d: %v", id, err)
		}
		if got != v {
			t.Errorf("profiles %d: version %d, want the highest written, %d", id, got, v)
		}
	}
	for id, want := range w.last {
		var got string
		err := rs[0].db.QueryRow(fmt.Sprintf("SELECT note FROM accounts WHERE id = %d", id)).Scan(&got)
		if errors.Is(err, sql.ErrNoRows) {
			got = "(deleted)"
		} else if err != nil {
			t.Fatal(err)
		}
		if got != want {
			t.Errorf("accounts %d: %q, want %q, the last write of its home %s", id, got, want, home(id).name)
		}
	}
	conflicts := 0
	for _, r := range rs {
		var n int
		if err := r.db.QueryRow("SELECT COUNT(*) FROM regiond_conflicts").Scan(&n); err != nil {
			t.Fatal(err)
		}
		conflicts += n
	}
	if conflicts == 0 {
		t.Error("no conflict recorded")
	}
	t.Logf("%d conflicts recorded", conflicts)
	before := activity(t, rs, "profiles", "accounts")
	time.Sleep(3 * time.Second)
	if after := activity(t, rs, "profiles", "accounts"); after != before {
		t.Fatalf("writes continue after convergence (echo?): %s -> %s", before, after)
	}
}

// rulesWorld is what the writers did, to check the outcome against.
type rulesWorld struct {
	mu                                sync.Mutex
	best                              map[int]int64 // highest version written per profiles key
	lwwDeleted                        map[int]bool
	last                              map[int]string // last note (or "(deleted)") each accounts row's home wrote
	lwwWrites, homeWrites, violations int
	deadlocks                         int // writes that were deadlock victims (not applied)
}

func q(r *region, mysql, pg string) string {
	if r.engine() == "postgres" {
		return pg
	}
	return mysql
}

// lwwWrite writes a profiles row the way an application under
// last_writer_wins does: the version is the time of the write, raised above
// the row's current version in this region.
func (w *rulesWorld) lwwWrite(ctx context.Context, r *region, rng *rand.Rand, id int, start time.Time) error {
	tx, err := r.db.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer tx.Rollback()
	var cur int64
	err = tx.QueryRowContext(ctx, fmt.Sprintf("SELECT v FROM profiles WHERE id = %d FOR UPDATE", id)).Scan(&cur)
	if err != nil && !errors.Is(err, sql.ErrNoRows) {
		return err
	}
	v := max(time.Since(start).Microseconds(), cur+1)
	del := rng.IntN(12) == 0
	if del {
		_, err = tx.ExecContext(ctx, fmt.Sprintf("DELETE FROM profiles WHERE id = %d", id))
	} else {
		_, err = tx.ExecContext(ctx, fmt.Sprintf(q(r,
			"INSERT INTO profiles VALUES (%d, '%s-%d', %d) ON DUPLICATE KEY UPDATE name = VALUES(name), v = VALUES(v)",
			"INSERT INTO profiles VALUES (%d, '%s-%d', %d) ON CONFLICT (id) DO UPDATE SET name = EXCLUDED.name, v = EXCLUDED.v"),
			id, r.name, v, v))
	}
	if err != nil {
		return err
	}
	if err := tx.Commit(); err != nil {
		return err
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	w.lwwWrites++
	if del {
		w.lwwDeleted[id] = true
	} else if v > w.best[id] {
		w.best[id] = v
	}
	return nil
}

// homeWrite writes an accounts row: in its home any change; elsewhere an
// update (double spending), which must be undone.
func (w *rulesWorld) homeWrite(ctx context.Context, r *region, rng *rand.Rand, id int, isHome bool, n int) error {
	note := fmt.Sprintf("%s-%d", r.name, n)
	var stmt string
	deleted := false
	switch k := rng.IntN(10); {
	case isHome && k == 0:
		stmt = fmt.Sprintf("DELETE FROM accounts WHERE id = %d", id)
		deleted = true
	case isHome && k < 3:
		stmt = fmt.Sprintf(q(r,
			"INSERT INTO accounts VALUES (%d, '%s', 100, '%s') ON DUPLICATE KEY UPDATE balance = 100, note = VALUES(note)",
			"INSERT INTO accounts VALUES (%d, '%s', 100, '%s') ON CONFLICT (id) DO UPDATE SET balance = 100, note = EXCLUDED.note"),
			id, r.name, note)
	default:
		stmt = fmt.Sprintf("UPDATE accounts SET balance = balance - %d, note = '%s' WHERE id = %d", 1+rng.IntN(9), note, id)
	}
	res, err := r.db.ExecContext(ctx, stmt)
	if err != nil {
		return err
	}
	affected, _ := res.RowsAffected()
	w.mu.Lock()
	defer w.mu.Unlock()
	w.homeWrites++
	if !isHome {
		if affected > 0 {
			w.violations++
		}
		return nil
	}
	switch {
	case deleted:
		if affected > 0 {
			w.last[id] = "(deleted)"
		}
	case affected > 0:
		w.last[id] = note
	}
	return nil
}
