package e2e

import (
	"context"
	"database/sql"
	"fmt"
	"math"
	"math/rand/v2"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/regiond/regiond/internal/dbtest"
)

// itemsTable has a column of every common type; the workload writes random
// values (and NULLs) into all of them.
const itemsTable = "CREATE TABLE items (" +
	"id BIGINT NOT NULL PRIMARY KEY," +
	"i8 TINYINT, u8 TINYINT UNSIGNED, i16 SMALLINT, u16 SMALLINT UNSIGNED, i24 MEDIUMINT, u24 MEDIUMINT UNSIGNED," +
	"i32 INT, u32 INT UNSIGNED, i64 BIGINT, u64 BIGINT UNSIGNED," +
	"dec1 DECIMAL(30,10), f FLOAT, d DOUBLE," +
	"c CHAR(8), vc VARCHAR(200), tx TEXT, lat VARCHAR(40) CHARACTER SET latin1," +
	"bin BINARY(4), vbin VARBINARY(40), bl BLOB," +
	"dt DATE, dtm0 DATETIME, dtm3 DATETIME(3), dtm6 DATETIME(6), ts0 TIMESTAMP NULL DEFAULT NULL, ts6 TIMESTAMP(6) NULL DEFAULT NULL," +
	"tm TIME(2), yr YEAR, js JSON, en ENUM('red','green','blue'), st SET('a','b','c','d'), bt BIT(10), flag TINYINT(1)" +
	") DEFAULT CHARSET=utf8mb4"

const itemsCols = 34 // id + 33

// txlog gets one row per workload transaction. A trigger in the target
// counts every insert attempt into it, so a transaction applied twice (its
// upsert re-run) shows up as a count above the number of rows.
const txlogTable = "CREATE TABLE txlog (id BIGINT NOT NULL PRIMARY KEY, worker INT NOT NULL, ops INT NOT NULL)"

const txlogCounter = "CREATE TABLE txlog_attempts (n BIGINT NOT NULL)"
const txlogTrigger = "CREATE TRIGGER txlog_count BEFORE INSERT ON txlog FOR EACH ROW UPDATE txlog_attempts SET n = n + 1"

// TestCrashConsistency runs a mixed workload on east while regiond (both
// directions, one process) is SIGKILLed at random moments and restarted;
// afterwards both regions hold the same rows, no transaction was applied
// twice, and neither binlog moves any more.
func TestCrashConsistency(t *testing.T) {
	rs := mariaRegions(t, []string{"east", "west"}, itemsTable, txlogTable)
	east, west := rs[0], rs[1]
	dbtest.Exec(t, west.db, txlogCounter, "INSERT INTO txlog_attempts VALUES (0)", txlogTrigger)

	cfg := writeConfig(t, []*region{east, west}, []string{"items", "txlog"}, "")
	d := newDaemon(t, "run", "--config", cfg)
	d.start()
	waitMesh(t, east, west)

	const (
		workers     = 2
		txnsPerWkr  = 2200
		minRowOps   = 20000
		minKills    = 3
		seedDefault = 0
	)
	seed := uint64(time.Now().UnixNano())
	t.Logf("workload seed %d", seed)

	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	var (
		wg      sync.WaitGroup
		rowOps  atomic.Int64
		txns    atomic.Int64
		wErr    = make(chan error, workers)
		running atomic.Bool
	)
	running.Store(true)
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := workload(ctx, east.db, w, txnsPerWkr, seed+uint64(w), &rowOps, &txns); err != nil {
				wErr <- fmt.Errorf("worker %d: %w", w, err)
			}
		}()
	}
	go func() { wg.Wait(); running.Store(false) }()

	// Kill at random moments while the workload runs (and, if it ends
	// first, while the backlog drains), at least minKills times.
	rng := rand.New(rand.NewPCG(seed, 7))
	kills := 0
	for running.Load() || kills < minKills {
		time.Sleep(time.Duration(200+rng.IntN(1300)) * time.Millisecond)
		d.kill()
		kills++
		t.Logf("kill %d after %d transactions, %d row changes", kills, txns.Load(), rowOps.Load())
		time.Sleep(time.Duration(rng.IntN(500)) * time.Millisecond)
		d.start()
	}
	wg.Wait()
	close(wErr)
	for err := range wErr {
		t.Fatal(err)
	}
	if n := rowOps.Load(); n < minRowOps {
		t.Fatalf("workload made %d row changes, want >= %d", n, minRowOps)
	}
	t.Logf("workload done: %d transactions, %d row changes, %d kills", txns.Load(), rowOps.Load(), kills)

	assertAppliedOnce(t, east, west, txns.Load())
	assertNoRemoteConflicts(t, east, west)

	// Quiet: nothing bounces between the regions.
	pe, pw := dbtest.GTIDPos(t, east.db), dbtest.GTIDPos(t, west.db)
	time.Sleep(3 * time.Second)
	if pe2, pw2 := dbtest.GTIDPos(t, east.db), dbtest.GTIDPos(t, west.db); pe2 != pe || pw2 != pw {
		t.Fatalf("binlogs still move after the workload: east %s -> %s, west %s -> %s", pe, pe2, pw, pw2)
	}

	took, code := d.term(5 * time.Second)
	if code != 0 {
		t.Fatalf("regiond exited with %d after SIGTERM, want 0", code)
	}
	t.Logf("SIGTERM: exited 0 in %v", took.Round(time.Millisecond))
}

// workload runs n transactions of 3 to 8 random inserts, updates and
// deletes over worker w's own key range, each with one txlog row.
func workload(ctx context.Context, db *sql.DB, w, n int, seed uint64, rowOps, txns *atomic.Int64) error {
	return workloadUntil(ctx, nil, db, w, n, seed, rowOps, txns)
}

// workloadUntil is workload that also ends, between two transactions, once
// stop is closed.
func workloadUntil(ctx context.Context, stop <-chan struct{}, db *sql.DB, w, n int, seed uint64, rowOps, txns *atomic.Int64) error {
	rng := rand.New(rand.NewPCG(seed, uint64(w)))
	base := int64(w) * 1_000_000_000
	var live []int64
	next := base + 1
	for i := range n {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		select {
		case <-stop:
			return nil
		default:
		}
		tx, err := db.BeginTx(ctx, nil)
		if err != nil {
			return err
		}
		ops := 3 + rng.IntN(6)
		done := 0
		var inserted []int64
		deleted := map[int64]bool{}
		for range ops {
			switch k := rng.IntN(10); {
			case k < 5 || len(live) < 20: // insert
				id := next
				next++
				args := append([]any{id}, randomValues(rng)...)
				if _, err := tx.Exec("INSERT INTO items VALUES ("+placeholders(itemsCols)+")", args...); err != nil {
					tx.Rollback()
					return err
				}
				inserted = append(inserted, id)
				done++
			case k < 8: // update, sometimes several rows
				id := live[rng.IntN(len(live))]
				if deleted[id] {
					continue
				}
				vals := randomValues(rng)
				if _, err := tx.Exec("UPDATE items SET vc = ?, i64 = ?, dtm6 = ?, js = ?, bl = ?, u64 = ?, st = ? WHERE id = ?",
					vals[14], vals[8], vals[23], vals[28], vals[19], vals[9], vals[30], id); err != nil {
					tx.Rollback()
					return err
				}
				done++
			default: // delete
				j := rng.IntN(len(live))
				id := live[j]
				if deleted[id] {
					continue
				}
				if _, err := tx.Exec("DELETE FROM items WHERE id = ?", id); err != nil {
					tx.Rollback()
					return err
				}
				deleted[id] = true
				done++
			}
		}
		txid := base + int64(i) + 1
		if _, err := tx.Exec("INSERT INTO txlog VALUES (?, ?, ?)", txid, w, done); err != nil {
			tx.Rollback()
			return err
		}
		if err := tx.Commit(); err != nil {
			return err
		}
		rowOps.Add(int64(done + 1))
		txns.Add(1)
		live = liveAfter(live, inserted, deleted)
	}
	return nil
}

func placeholders(n int) string {
	return strings.TrimSuffix(strings.Repeat("?,", n), ",")
}

// randomValues returns values for every items column but id; about one in
// eight is NULL.
func randomValues(rng *rand.Rand) []any {
	pick := func(vs ...any) any { return vs[rng.IntN(len(vs))] }
	strs := []string{"", "plain", "it's \\ \"q\"", "😀🎉 emoji", "中文字符", "tab\tnew\nline", "\x00zero"}
	v := []any{
		pick(int8(math.MinInt8), int8(math.MaxInt8), int8(rng.IntN(200)-100)),
		pick(uint8(0), uint8(math.MaxUint8), uint8(rng.IntN(256))),
		pick(int16(math.MinInt16), int16(math.MaxInt16), int16(rng.IntN(60000)-30000)),
		pick(uint16(0), uint16(math.MaxUint16), uint16(rng.IntN(65536))),
		pick(int32(-8388608), int32(8388607), int32(rng.IntN(1000))),
		pick(uint32(0), uint32(16777215), uint32(rng.IntN(1000))),
		pick(int32(math.MinInt32), int32(math.MaxInt32), rng.Int32()),
		pick(uint32(0), uint32(math.MaxUint32), rng.Uint32()),
		pick(int64(math.MinInt64), int64(math.MaxInt64), rng.Int64()-rng.Int64()),
		pick(uint64(0), uint64(math.MaxUint64), rng.Uint64()),
		fmt.Sprintf("%d.%010d", rng.IntN(2_000_000_000)-1_000_000_000, rng.IntN(10_000_000_000)),
		pick(float32(0), float32(1.5), float32(-3.25e10), rng.Float32()),
		pick(0.0, -1.0/3, 1e300, rng.NormFloat64()),
		pick("", "ab", "12345678"),
		strs[rng.IntN(len(strs))] + fmt.Sprint(rng.IntN(1000)),
		strings.Repeat(strs[rng.IntN(len(strs))], rng.IntN(50)),
		pick("Ünïcödé", "café", "plain"),
		[]byte{byte(rng.IntN(256)), 0, byte(rng.IntN(256)), 0},
		pick([]byte{}, []byte{0, 0, 0}, []byte("bin\x00ary")),
		randomBytes(rng, rng.IntN(300)),
		fmt.Sprintf("%04d-%02d-%02d", 1000+rng.IntN(8999), 1+rng.IntN(12), 1+rng.IntN(28)),
		fmt.Sprintf("%04d-%02d-%02d %02d:%02d:%02d", 1000+rng.IntN(8999), 1+rng.IntN(12), 1+rng.IntN(28), rng.IntN(24), rng.IntN(60), rng.IntN(60)),
		fmt.Sprintf("2020-01-01 00:00:00.%03d", rng.IntN(1000)),
		fmt.Sprintf("%04d-06-15 12:30:45.%06d", 1900+rng.IntN(200), rng.IntN(1_000_000)),
		fmt.Sprintf("20%02d-03-04 05:06:07", 1+rng.IntN(37)),
		fmt.Sprintf("2030-12-31 23:59:59.%06d", rng.IntN(1_000_000)),
		pick("-838:59:59.99", "00:00:00", "123:45:06.7"),
		1901 + rng.IntN(255),
		pick(`{}`, `[1, 2.5, "x", null, true]`, fmt.Sprintf(`{"k": %d, "s": "😀"}`, rng.IntN(100))),
		pick("red", "green", "blue"),
		pick("", "a", "a,c", "a,b,c,d"),
		rng.IntN(1024),
		rng.IntN(2),
	}
	for i := range v {
		if rng.IntN(8) == 0 {
			v[i] = nil
		}
	}
	return v
}

func randomBytes(rng *rand.Rand, n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(rng.IntN(256))
	}
	return b
}

// assertAppliedOnce waits until east and west hold the same items and txlog
// rows, then checks that west holds one txlog row per committed workload
// transaction and that its trigger saw exactly one insert attempt each:
// nothing lost, nothing applied twice.
func assertAppliedOnce(t *testing.T, east, west *region, txns int64) {
	t.Helper()
	for _, table := range []string{"items", "txlog"} {
		dbtest.WaitEqual(t, 3*time.Minute, table, []string{"east", "west"}, east.db, west.db)
	}
	var rows, attempts int64
	if err := west.db.QueryRow("SELECT COUNT(*) FROM txlog").Scan(&rows); err != nil {
		t.Fatal(err)
	}
	if err := west.db.QueryRow("SELECT n FROM txlog_attempts").Scan(&attempts); err != nil {
		t.Fatal(err)
	}
	if rows != txns || attempts != rows {
		t.Fatalf("west: %d txlog rows and %d insert attempts, want %d of each (a transaction applied twice?)", rows, attempts, txns)
	}
}

// liveAfter is the workload's list of existing keys after a committed
// transaction inserted and deleted the given ones.
func liveAfter(live, inserted []int64, deleted map[int64]bool) []int64 {
	live = append(live, inserted...)
	if len(deleted) == 0 {
		return live
	}
	kept := live[:0]
	for _, id := range live {
		if !deleted[id] {
			kept = append(kept, id)
		}
	}
	return kept
}
