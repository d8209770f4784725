package demo

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-sql-driver/mysql"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/regiond/regiond/internal/testenv"
)

// Workload writes to every region at once the way applications of the
// three conflict rules do, with conflicts on purpose:
//   - profiles (last_writer_wins): every region updates, inserts and now and
//     then deletes the same few dozen rows, the version being the write's
//     time in microseconds, raised above the row's current version;
//   - accounts (home_region): each region moves money on the rows it owns,
//     and one write in ten touches a row homed elsewhere (regiond discards
//     and reverts it);
//   - orders (apply_remote): each region inserts and updates rows with keys
//     of its own.
type Workload struct {
	Regions []*Region
	// Pause is the time each region's writer waits between transactions,
	// so the demo does not starve the pipelines of CPU.
	Pause time.Duration

	writes     atomic.Int64
	violations atomic.Int64
	retries    atomic.Int64
}

// Stats is what the workload has done so far.
type Stats struct {
	Writes     int64 // committed transactions
	Violations int64 // of those, writes to rows homed in another region
	Retries    int64 // transactions retried after a deadlock
}

// Stats returns the counts so far; safe while Run runs.
func (w *Workload) Stats() Stats {
	return Stats{Writes: w.writes.Load(), Violations: w.violations.Load(), Retries: w.retries.Load()}
}

const (
	profileKeys       = 40
	accountsPerRegion = 10
)

// Run seeds each region's own accounts, then writes in every region until
// ctx ends. It returns the first error a writer could not retry; ending ctx
// is not an error.
func (w *Workload) Run(ctx context.Context) error {
	for i, r := range w.Regions {
		if err := w.seed(ctx, r, i); err != nil {
			return fmt.Errorf("region %s: seeding accounts: %w", r.Name, err)
		}
	}
	var wg sync.WaitGroup
	errs := make(chan error, len(w.Regions))
	for i, r := range w.Regions {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := w.writer(ctx, r, i); err != nil && ctx.Err() == nil {
				errs <- fmt.Errorf("region %s: %w", r.Name, err)
			}
		}()
	}
	wg.Wait()
	close(errs)
	return <-errs
}

// home returns the index of the region that owns accounts row id.
func (w *Workload) home(id int) int { return (id - 1) % len(w.Regions) }

func (w *Workload) seed(ctx context.Context, r *Region, i int) error {
	n := len(w.Regions)
	for k := range accountsPerRegion {
		id := k*n + i + 1
		_, err := r.DB.ExecContext(ctx, fmt.Sprintf(
			"INSERT INTO accounts (id, home, owner, balance, updated_at) VALUES (%d, '%s', 'owner-%d', 1000.00, %s)",
			id, r.Name, id, now(r)))
		if err != nil {
			return err
		}
		w.writes.Add(1)
	}
	return nil
}

func (w *Workload) writer(ctx context.Context, r *Region, i int) error {
	rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), uint64(i)))
	n := len(w.Regions)
	orders := 0
	for ctx.Err() == nil {
		var (
			write     func(context.Context, *sql.Tx) error
			violation bool
		)
		switch p := rng.IntN(100); {
		case p < 45:
			id := 1 + rng.IntN(profileKeys)
			del := rng.IntN(15) == 0
			write = func(ctx context.Context, tx *sql.Tx) error { return writeProfile(ctx, tx, r, id, del) }
		case p < 80:
			id := 1 + rng.IntN(accountsPerRegion)*n + i // one of its own
			if rng.IntN(10) == 0 {
				id = 1 + rng.IntN(accountsPerRegion*n)
			}
			violation = w.home(id) != i
			delta := rng.IntN(2001) - 1000
			write = func(ctx context.Context, tx *sql.Tx) error { return moveMoney(ctx, tx, r, id, delta) }
		default:
			orders++
			id := orders*n + i
			update := orders > 1 && rng.IntN(3) == 0
			if update {
				id = (1+rng.IntN(orders-1))*n + i
			}
			write = func(ctx context.Context, tx *sql.Tx) error { return writeOrder(ctx, tx, r, id, update, rng.IntN(9)+1) }
		}
		if err := w.transact(ctx, r, write); err != nil {
			return err
		}
		w.writes.Add(1)
		if violation {
			w.violations.Add(1)
		}
		select {
		case <-ctx.Done():
		case <-time.After(w.Pause):
		}
	}
	return nil
}

// transact runs write in a transaction, retrying deadlocks and
// serialization failures, which concurrent writers of the same rows cause.
func (w *Workload) transact(ctx context.Context, r *Region, write func(context.Context, *sql.Tx) error) error {
	for {
		err := func() error {
			tx, err := r.DB.BeginTx(ctx, nil)
			if err != nil {
				return err
			}
			defer tx.Rollback()
			if err := write(ctx, tx); err != nil {
				return err
			}
			return tx.Commit()
		}()
		if err == nil || ctx.Err() != nil || !retryable(err) {
			return err
		}
		w.retries.Add(1)
	}
}

func retryable(err error) bool {
	var me *mysql.MySQLError
	if errors.As(err, &me) {
		return me.Number == 1213 || me.Number == 1205
	}
	var pe *pgconn.PgError
	if errors.As(err, &pe) {
		return pe.Code == "40P01" || pe.Code == "40001"
	}
	return false
}

// writeProfile is a last_writer_wins write: the version is the current time
// in microseconds, above the row's current version.
func writeProfile(ctx context.Context, tx *sql.Tx, r *Region, id int, del bool) error {
	var cur int64
	err := tx.QueryRowContext(ctx, fmt.Sprintf("SELECT v FROM profiles WHERE id = %d FOR UPDATE", id)).Scan(&cur)
	if err != nil && !errors.Is(err, sql.ErrNoRows) {
		return err
	}
	if del {
		if errors.Is(err, sql.ErrNoRows) {
			return nil
		}
		_, err = tx.ExecContext(ctx, fmt.Sprintf("DELETE FROM profiles WHERE id = %d", id))
		return err
	}
	v := max(time.Now().UnixMicro(), cur+1)
	city := cities[v%int64(len(cities))]
	upsert := "INSERT INTO profiles (id, name, city, v) VALUES (%d, '%s-%d', '%s', %d) ON DUPLICATE KEY UPDATE name = VALUES(name), city = VALUES(city), v = VALUES(v)"
	if r.Engine == testenv.EnginePostgres {
		upsert = "INSERT INTO profiles (id, name, city, v) VALUES (%d, '%s-%d', '%s', %d) ON CONFLICT (id) DO UPDATE SET name = EXCLUDED.name, city = EXCLUDED.city, v = EXCLUDED.v"
	}
	_, err = tx.ExecContext(ctx, fmt.Sprintf(upsert, id, r.Name, v%100000, city, v))
	return err
}

var cities = []string{"Lisbon", "Osaka", "Lagos", "Quito", "Oslo", "Perth", "Lima", "Accra"}

// moveMoney changes an account's balance; in a region that does not own
// the row it is a home_region violation.
func moveMoney(ctx context.Context, tx *sql.Tx, r *Region, id, cents int) error {
	_, err := tx.ExecContext(ctx, fmt.Sprintf(
		"UPDATE accounts SET balance = balance + %d.%02d, updated_at = %s WHERE id = %d",
		cents/100, abs(cents%100), now(r), id))
	return err
}

func abs(n int) int {
	if n < 0 {
		return -n
	}
	return n
}

// writeOrder inserts an order with a key only this region uses, or updates
// one of its earlier orders.
func writeOrder(ctx context.Context, tx *sql.Tx, r *Region, id int, update bool, qty int) error {
	q := fmt.Sprintf("INSERT INTO orders (id, region, item, qty, placed_at) VALUES (%d, '%s', '%s', %d, %s)",
		id, r.Name, strings.ToLower(cities[id%len(cities)])+"-widget", qty, now(r))
	if update {
		q = fmt.Sprintf("UPDATE orders SET qty = qty + %d WHERE id = %d", qty, id)
	}
	_, err := tx.ExecContext(ctx, q)
	return err
}

func now(r *Region) string {
	if r.Engine == testenv.EnginePostgres {
		return "LOCALTIMESTAMP(6)"
	}
	return "NOW(6)"
}
