package e2e

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-sql-driver/mysql"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/regiond/regiond/internal/dbtest"
	"github.com/regiond/regiond/internal/testenv"
)

// The mapping table of the README, as the same table in both engines.
const mixedMySQL = "CREATE TABLE mixed (" +
	"id BIGINT NOT NULL PRIMARY KEY," +
	"i16 SMALLINT, i32 INT, i64 BIGINT, u32 INT UNSIGNED, u64 BIGINT UNSIGNED," +
	"dec1 DECIMAL(20,6), f FLOAT, d DOUBLE," +
	"c CHAR(8), vc VARCHAR(200), tx TEXT, en ENUM('red','green','blue'), st SET('a','b','c')," +
	"bin VARBINARY(40), bl BLOB," +
	"dt DATE, dtm DATETIME(6), ts TIMESTAMP(6) NULL DEFAULT NULL, tm TIME(6), yr YEAR," +
	"js JSON, bt BIT(10), flag TINYINT(1)" +
	") DEFAULT CHARSET=utf8mb4"

const mixedPostgres = "CREATE TABLE mixed (" +
	"id bigint PRIMARY KEY," +
	"i16 smallint, i32 integer, i64 bigint, u32 bigint, u64 numeric(20,0)," +
	"dec1 numeric(20,6), f real, d double precision," +
	"c char(8), vc varchar(200), tx text, en text, st text," +
	"bin bytea, bl bytea," +
	"dt date, dtm timestamp(6), ts timestamptz(6), tm time(6), yr smallint," +
	"js jsonb, bt bit(10), flag boolean)"

const mixedCols = 24

var txlogDDL = map[string][]string{
	"mysql": {txlogTable, txlogCounter, "INSERT INTO txlog_attempts VALUES (0)", txlogTrigger},
	"postgres": {
		"CREATE TABLE txlog (id bigint PRIMARY KEY, worker integer NOT NULL, ops integer NOT NULL)",
		txlogCounter, "INSERT INTO txlog_attempts VALUES (0)",
		`CREATE FUNCTION txlog_count() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN UPDATE txlog_attempts SET n = n + 1; RETURN NEW; END $$`,
		"CREATE TRIGGER txlog_count BEFORE INSERT ON txlog FOR EACH ROW EXECUTE FUNCTION txlog_count()",
		// Fire for regiond's writes too (its session runs as a replica).
		"ALTER TABLE txlog ENABLE ALWAYS TRIGGER txlog_count",
	},
}

// TestCrossEngineCrash: a MariaDB region and two PostgreSQL regions, all
// written at once (each its own keys) over every type of the mapping, while
// regiond is SIGKILLed at random moments. Afterwards every region holds the
// same rows (compared through the mapping), no transaction was applied twice
// or echoed back, and each slot confirmed past the last write.
func TestCrossEngineCrash(t *testing.T) {
	m1 := &region{name: "m1", srv: testenv.MariaDB(t, 1)}
	// p1's appliers apply one batch at a time; p2's run two lanes (the
	// default).
	p1 := &region{name: "p1", srv: testenv.Postgres(t), settings: []string{"apply_connections: 1"}}
	p2 := &region{name: "p2", srv: testenv.Postgres(t)}
	all := []*region{m1, p1, p2}
	m1.db = dbtest.Open(t, m1.srv)
	dbtest.Exec(t, m1.db, mixedMySQL)
	dbtest.Exec(t, m1.db, txlogDDL["mysql"]...)
	for _, p := range []*region{p1, p2} {
		p.db = dbtest.OpenPostgres(t, p.srv)
		dbtest.Exec(t, p.db, mixedPostgres)
		dbtest.Exec(t, p.db, txlogDDL["postgres"]...)
	}
	// p2's updates and deletes carry whole before images, which the
	// appliers compare with their rows (apply_remote); p1's carry the key.
	dbtest.Exec(t, p2.db, "ALTER TABLE mixed REPLICA IDENTITY FULL")
	cfg := writeConfig(t, all, []string{"mixed", "txlog"}, "state_dir: "+t.TempDir()+"\n")
	d := newDaemon(t, "run", "--config", cfg)
	d.start()
	waitMesh(t, all...)

	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d", seed)
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	const txnsPerRegion = 700
	var (
		wg      sync.WaitGroup
		txns    atomic.Int64
		rowOps  atomic.Int64
		errs    = make(chan error, len(all))
		running atomic.Bool
	)
	running.Store(true)
	for i, r := range all {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := mixedWorkload(ctx, r, i+1, txnsPerRegion, seed+uint64(i), &txns, &rowOps); err != nil {
				if r.engine() == "mysql" {
					var a, b, st string
					r.db.QueryRow("SHOW ENGINE INNODB STATUS").Scan(&a, &b, &st)
					t.Logf("%s InnoDB status (for a deadlock: who held what):\n%s", r.name, st)
				}
				errs <- fmt.Errorf("%s: %w", r.name, err)
			}
		}()
	}
	go func() { wg.Wait(); running.Store(false) }()
	rng := rand.New(rand.NewPCG(seed, 9))
	kills := 0
	for running.Load() || kills < 3 {
		time.Sleep(time.Duration(300+rng.IntN(1500)) * time.Millisecond)
		d.kill()
		kills++
		t.Logf("kill %d after %d transactions", kills, txns.Load())
		time.Sleep(time.Duration(rng.IntN(400)) * time.Millisecond)
		d.start()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	t.Logf("workload done: %d transactions, %d row changes, %d kills", txns.Load(), rowOps.Load(), kills)
	lastWrite := map[string]string{}
	for _, p := range []*region{p1, p2} {
		lastWrite[p.name] = currentLSN(t, p.db)
	}

	for _, table := range []string{"mixed", "txlog"} {
		canon := make([]dbtest.Region, len(all))
		for i, r := range all {
			canon[i] = r.canon()
		}
		dbtest.WaitEqualCanonical(t, 3*time.Minute, table, canon...)
	}
	assertNoRemoteConflicts(t, all...)
	// The lanes into p2 did apply (each writes its own marker row); p1's
	// appliers wrote none.
	for _, c := range []struct {
		r     *region
		pipes []string
		lanes bool
	}{{p2, []string{"m1->p2", "p1->p2"}, true}, {p1, []string{"m1->p1", "p2->p1"}, false}} {
		for _, pipe := range c.pipes {
			var lanes int
			if err := c.r.db.QueryRow("SELECT COUNT(*) FROM regiond_checkpoints WHERE pipeline LIKE $1", pipe+" lane %").Scan(&lanes); err != nil {
				t.Fatal(err)
			}
			if (lanes > 0) != c.lanes {
				t.Errorf("%s has %d lane marker rows of %s, want them %v (apply_connections)", c.r.name, lanes, pipe, c.lanes)
			}
		}
	}
	for _, r := range all {
		var rows, attempts int64
		if err := r.db.QueryRow("SELECT COUNT(*) FROM txlog").Scan(&rows); err != nil {
			t.Fatal(err)
		}
		if err := r.db.QueryRow("SELECT n FROM txlog_attempts").Scan(&attempts); err != nil {
			t.Fatal(err)
		}
		if rows != txns.Load() || attempts != rows {
			t.Errorf("%s: %d txlog rows and %d insert attempts, want %d of each (applied twice or echoed?)", r.name, rows, attempts, txns.Load())
		}
	}
	// Each slot out of a Postgres region confirms past its last write.
	deadline := time.Now().Add(30 * time.Second)
	for _, p := range []*region{p1, p2} {
		for {
			behind := slotsBehind(t, p.db, lastWrite[p.name])
			if len(behind) == 0 {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: slots not past the last write %s: %v", p.name, lastWrite[p.name], behind)
			}
			time.Sleep(200 * time.Millisecond)
		}
	}
	// Quiet: nothing bounces.
	before := activity(t, all, "mixed", "txlog")
	time.Sleep(3 * time.Second)
	if after := activity(t, all, "mixed", "txlog"); after != before {
		t.Fatalf("writes continue after the workload ended: %s -> %s", before, after)
	}
	if _, code := d.term(5 * time.Second); code != 0 {
		t.Fatalf("exit code %d after SIGTERM", code)
	}
}

func currentLSN(t *testing.T, db *sql.DB) string {
	t.Helper()
	var lsn string
	if err := db.QueryRow("SELECT pg_current_wal_lsn()::text").Scan(&lsn); err != nil {
		t.Fatal(err)
	}
	return lsn
}

// slotsBehind lists regiond's slots whose confirmed_flush_lsn is before lsn.
func slotsBehind(t *testing.T, db *sql.DB, lsn string) []string {
	t.Helper()
	rows, err := db.Query(`SELECT slot_name || ' at ' || COALESCE(confirmed_flush_lsn::text, 'none')
		FROM pg_replication_slots WHERE slot_name LIKE 'regiond\_%' AND (confirmed_flush_lsn IS NULL OR confirmed_flush_lsn < $1::pg_lsn)`, lsn)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var s string
		if err := rows.Scan(&s); err != nil {
			t.Fatal(err)
		}
		out = append(out, s)
	}
	return out
}

// activity sums what the regions have written: MariaDB's GTID position and
// the row count and row versions (xmin) of Postgres's tables.
func activity(t *testing.T, rs []*region, tables ...string) string {
	t.Helper()
	var parts []string
	for _, r := range rs {
		if r.engine() == "mysql" {
			parts = append(parts, r.name+"="+dbtest.GTIDPos(t, r.db))
			continue
		}
		// Row versions, not pg_stat_user_tables: a backend reports its
		// counters up to a second or more after its transactions ended.
		// Every write (an echo rewriting a row with the same values too)
		// makes a new row version with a new xmin.
		for _, tb := range tables {
			var n, x int64
			if err := r.db.QueryRow(`SELECT COUNT(*), COALESCE(SUM(xmin::text::bigint), 0) FROM `+tb).Scan(&n, &x); err != nil {
				t.Fatal(err)
			}
			parts = append(parts, fmt.Sprintf("%s.%s=%d/%d", r.name, tb, n, x))
		}
	}
	return strings.Join(parts, " ")
}

// mixedWorkload runs n transactions of inserts, updates and deletes over the
// region's own key range, each with one txlog row.
func mixedWorkload(ctx context.Context, r *region, w, n int, seed uint64, txns, rowOps *atomic.Int64) error {
	rng := rand.New(rand.NewPCG(seed, uint64(w)))
	pg := r.engine() == "postgres"
	ph := func(i int) string {
		if pg {
			return fmt.Sprintf("$%d", i)
		}
		return "?"
	}
	list := func(from, count int) string {
		p := make([]string, count)
		for i := range p {
			p[i] = ph(from + i)
		}
		return strings.Join(p, ",")
	}
	insert := "INSERT INTO mixed VALUES (" + list(1, mixedCols) + ")"
	update := fmt.Sprintf("UPDATE mixed SET vc = %s, dtm = %s, js = %s, bl = %s, u64 = %s, flag = %s, ts = %s WHERE id = %s",
		ph(1), ph(2), ph(3), ph(4), ph(5), ph(6), ph(7), ph(8))
	// Without bl: a Postgres source then sends the large (TOASTed) bytea
	// as "unchanged", and the targets must keep theirs.
	updateSmall := fmt.Sprintf("UPDATE mixed SET vc = %s, dtm = %s, flag = %s WHERE id = %s", ph(1), ph(2), ph(3), ph(4))
	del := "DELETE FROM mixed WHERE id = " + ph(1)
	logIns := "INSERT INTO txlog VALUES (" + list(1, 3) + ")"
	base := int64(w) * 1_000_000_000
	next := base + 1
	var live []int64
	for i := 0; i < n; i++ {
		var (
			inserted []int64
			deleted  map[int64]bool
			done     int
		)
		err := func() error {
			tx, err := r.db.BeginTx(ctx, nil)
			if err != nil {
				return err
			}
			ops := 2 + rng.IntN(5)
			inserted, deleted, done = nil, map[int64]bool{}, 0
			fail := func(err error) error { tx.Rollback(); return err }
			for range ops {
				switch k := rng.IntN(10); {
				case k < 5 || len(live) < 10:
					id := next
					next++
					vals := append([]any{id}, mixedValues(rng, pg)...)
					if _, err := tx.ExecContext(ctx, insert, vals...); err != nil {
						return fail(err)
					}
					inserted = append(inserted, id)
				case k < 8:
					id := live[rng.IntN(len(live))]
					if deleted[id] {
						continue
					}
					v := mixedValues(rng, pg)
					var err error
					if rng.IntN(2) == 0 {
						_, err = tx.ExecContext(ctx, update, v[9], v[16], v[20], v[14], v[4], v[22], v[17], id)
					} else {
						_, err = tx.ExecContext(ctx, updateSmall, v[9], v[16], v[22], id)
					}
					if err != nil {
						return fail(err)
					}
				default:
					id := live[rng.IntN(len(live))]
					if deleted[id] {
						continue
					}
					if _, err := tx.ExecContext(ctx, del, id); err != nil {
						return fail(err)
					}
					deleted[id] = true
				}
				done++
			}
			if _, err := tx.ExecContext(ctx, logIns, base+int64(i)+1, w, done); err != nil {
				return fail(err)
			}
			return tx.Commit()
		}()
		if deadlocked(err) {
			// An application retries a deadlock victim, and so does this
			// one: regiond's applier takes row locks in this region too
			// (its apply_remote check reads the rows it replaces FOR
			// UPDATE). The failed attempt's keys are simply not used.
			i--
			continue
		}
		if err != nil {
			return err
		}
		txns.Add(1)
		rowOps.Add(int64(done + 1))
		live = liveAfter(live, inserted, deleted)
	}
	return nil
}

// mixedValues returns values for every mixed column but id, representable
// in both engines; about one in eight is NULL.
func mixedValues(rng *rand.Rand, pg bool) []any {
	pick := func(vs ...any) any { return vs[rng.IntN(len(vs))] }
	strs := []string{"", "plain", "it's \\ \"q\"", "😀🎉 emoji", "中文字符", "tab\tnew\nline", "Ünïcödé"}
	bits := rng.IntN(1024)
	var bt any = int64(bits)
	flag := any(int64(rng.IntN(2)))
	if pg {
		bt = fmt.Sprintf("%010b", bits)
		flag = flag == int64(1)
	}
	v := []any{
		pick(int16(math.MinInt16), int16(math.MaxInt16), int16(rng.IntN(60000)-30000)),
		pick(int32(math.MinInt32), int32(math.MaxInt32), rng.Int32()),
		pick(int64(math.MinInt64), int64(math.MaxInt64), rng.Int64()-rng.Int64()),
		pick(int64(0), int64(math.MaxUint32), int64(rng.Uint32())),
		pick("0", "18446744073709551615", fmt.Sprint(rng.Uint64())),
		fmt.Sprintf("%d.%06d", rng.IntN(2_000_000_000)-1_000_000_000, rng.IntN(1_000_000)),
		pick(float32(0), float32(1.5), float32(-3.25e10), rng.Float32()),
		pick(0.0, -1.0/3, 1e300, rng.NormFloat64()),
		pick("", "ab", "12345678"),
		strs[rng.IntN(len(strs))] + fmt.Sprint(rng.IntN(1000)),
		strings.Repeat(strs[rng.IntN(len(strs))], rng.IntN(80)),
		pick("red", "green", "blue"),
		pick("", "a", "a,c", "a,b,c"),
		pick([]byte{}, []byte{0, 0, 0}, []byte("bin\x00ary")),
		randomBytes(rng, rng.IntN(3000)),
		fmt.Sprintf("%04d-%02d-%02d", 1000+rng.IntN(8999), 1+rng.IntN(12), 1+rng.IntN(28)),
		fmt.Sprintf("%04d-06-15 12:30:45.%06d", 1000+rng.IntN(8999), rng.IntN(1_000_000)),
		fmt.Sprintf("20%02d-03-04 05:06:07.%06d", 1+rng.IntN(37), rng.IntN(1_000_000)),
		fmt.Sprintf("%02d:%02d:%02d.%06d", rng.IntN(24), rng.IntN(60), rng.IntN(60), rng.IntN(1_000_000)),
		int64(1901 + rng.IntN(255)),
		pick(`{}`, `[1, 2.5, "x", null, true]`, fmt.Sprintf(`{"k": %d, "s": "😀"}`, rng.IntN(100))),
		bt,
		flag,
	}
	for i := range v {
		if rng.IntN(8) == 0 {
			v[i] = nil
		}
	}
	return v
}

// deadlocked reports whether err made the transaction a deadlock victim
// (MariaDB 1213, PostgreSQL 40P01).
func deadlocked(err error) bool {
	var me *mysql.MySQLError
	if errors.As(err, &me) {
		return me.Number == 1213
	}
	var pe *pgconn.PgError
	return errors.As(err, &pe) && pe.Code == "40P01"
}
