package main

// The verify benchmark (-mode verify): two servers of -engine (mariadb,
// postgres, or mixed: one of each) each hold the
// same -verify-rows rows (generated once, loaded into both with 1000-row
// INSERTs, sql_log_bin=0 on MariaDB). Then, alternating, -verify-runs
// times each:
//
//   - full checksum: one aggregate over the whole table in both servers at
//     once (MariaDB: COUNT(*) and BIT_XOR(CRC32(CONCAT_WS('#', every column,
//     the NULL flags))); PostgreSQL: count(*) and
//     bit_xor(hashtextextended(row text, 0))), timed until both answered;
//   - regiond verify: verify.Run on the same two regions (chunks of
//     -chunk-rows, -verify-parallel at once), the same code as `regiond
//     verify`, timed.
//
// With -engine mixed, verify compares on canonical text in SQL (MD5 on both
// engines), and is also timed reading every row into regiond and comparing
// there (verify.Options.CompareRows); the full checksum is each engine's
// own. The report gives the best time of each and the ratio verify / full
// checksum (target ≤ 2). The table is read once before the timings so that
// both start from a warm buffer pool.

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/regiond/regiond/config"
	"github.com/regiond/regiond/internal/testenv"
	"github.com/regiond/regiond/snapshot"
	"github.com/regiond/regiond/verify"
)

const verifyTarget = 2.0

const (
	vbMySQLTable = "CREATE TABLE vbench (id BIGINT NOT NULL PRIMARY KEY, k INT NOT NULL, name VARCHAR(120) NOT NULL, " +
		"pad CHAR(60) NOT NULL, amount DECIMAL(12,2) NULL, at DATETIME(6) NOT NULL)"
	vbPostgresTable = "CREATE TABLE vbench (id bigint PRIMARY KEY, k integer NOT NULL, name varchar(120) NOT NULL, " +
		"pad char(60) NOT NULL, amount numeric(12,2), at timestamp(6) NOT NULL)"
)

// runVerifyBench runs the verify benchmark.
func runVerifyBench(opt options) (err error) {
	ctx, done := runContext(opt)
	defer done()
	began := time.Now()
	say := func(format string, args ...any) {
		fmt.Fprintf(os.Stderr, "[%6.1fs] %s\n", time.Since(began).Seconds(), fmt.Sprintf(format, args...))
	}
	engines := []string{config.EngineMySQL, config.EngineMySQL}
	switch opt.engine {
	case enginePostgres:
		engines = []string{config.EnginePostgres, config.EnginePostgres}
	case engineMixed:
		engines = []string{config.EngineMySQL, config.EnginePostgres}
	}
	servers := make([]*testenv.Server, 2)
	defer func() {
		if opt.keep {
			return
		}
		for _, s := range servers {
			if s != nil {
				err = errors.Join(err, s.Destroy())
			}
		}
	}()
	say("starting 2 %s servers", opt.engine)
	errs := make([]error, 2)
	var wg sync.WaitGroup
	for i := range servers {
		wg.Go(func() {
			dir, err := os.MkdirTemp("", "regiond-bench-verify-")
			if err != nil {
				errs[i] = err
				return
			}
			if engines[i] == config.EnginePostgres {
				servers[i] = &testenv.Server{Engine: testenv.EnginePostgres, Dir: dir}
				servers[i], errs[i] = testenv.StartPostgres(ctx, dir)
			} else {
				servers[i] = &testenv.Server{Engine: testenv.EngineMySQL, Dir: dir}
				servers[i], errs[i] = testenv.StartMariaDB(ctx, dir, i+1)
			}
		})
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return err
	}
	cfg := &config.Config{Tables: map[string]config.Table{"vbench": {}}}
	dbs := make([]*snapshot.DB, 2)
	for i, s := range servers {
		rc := config.Region{Name: fmt.Sprintf("r%d", i+1), Engine: engines[i], DSN: s.URL("app")}
		cfg.Regions = append(cfg.Regions, rc)
		if dbs[i], err = snapshot.Open(rc); err != nil {
			return err
		}
		defer dbs[i].Close()
	}

	say("loading %d identical rows into both", opt.verifyRows)
	loadStart := time.Now()
	for i := range dbs {
		wg.Go(func() { errs[i] = loadVerifyRows(ctx, dbs[i], opt) })
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return err
	}
	say("loaded in %.1fs", time.Since(loadStart).Seconds())

	full := func() (time.Duration, error) {
		start := time.Now()
		sums := make([]string, 2)
		for i := range dbs {
			wg.Go(func() { sums[i], errs[i] = fullChecksum(ctx, dbs[i]) })
		}
		wg.Wait()
		if err := errors.Join(errs...); err != nil {
			return 0, err
		}
		if engines[0] == engines[1] && sums[0] != sums[1] {
			return 0, fmt.Errorf("full checksums differ: %s vs %s", sums[0], sums[1])
		}
		return time.Since(start), nil
	}
	runVerify := func(rows bool) (time.Duration, error) {
		start := time.Now()
		rep, err := verify.Run(ctx, verify.Options{Config: cfg, ChunkRows: opt.chunkRows, Parallel: opt.verifyParallel, CompareRows: rows})
		if err != nil {
			return 0, err
		}
		if !rep.Identical() || rep.Tables[0].RowsCompared != int64(opt.verifyRows) {
			return 0, fmt.Errorf("verify: identical=%v, %d rows compared, want %d", rep.Identical(), rep.Tables[0].RowsCompared, opt.verifyRows)
		}
		return time.Since(start), nil
	}
	if _, err := full(); err != nil { // warm the buffer pools
		return err
	}
	var bestFull, bestVerify, bestRows time.Duration
	var fulls, verifies, rowRuns []string
	best := func(b *time.Duration, d time.Duration) {
		if *b == 0 || d < *b {
			*b = d
		}
	}
	for run := range opt.verifyRuns {
		f, err := full()
		if err != nil {
			return err
		}
		v, err := runVerify(false)
		if err != nil {
			return err
		}
		say("run %d: full checksum of both %.2fs, regiond verify %.2fs (%.2f×)", run+1, f.Seconds(), v.Seconds(), v.Seconds()/f.Seconds())
		fulls = append(fulls, fmt.Sprintf("%.2f", f.Seconds()))
		verifies = append(verifies, fmt.Sprintf("%.2f", v.Seconds()))
		best(&bestFull, f)
		best(&bestVerify, v)
		if opt.engine == engineMixed {
			r, err := runVerify(true)
			if err != nil {
				return err
			}
			say("run %d: regiond verify comparing rows in regiond %.2fs", run+1, r.Seconds())
			rowRuns = append(rowRuns, fmt.Sprintf("%.2f", r.Seconds()))
			best(&bestRows, r)
		}
	}
	ratio := bestVerify.Seconds() / bestFull.Seconds()
	verdict := "meets"
	if ratio > verifyTarget {
		verdict = "MISSES"
	}
	fmt.Printf("## verify benchmark (%s, %d rows, chunks of %d, %d at once, load average at start %s)\n\n",
		opt.engine, opt.verifyRows, opt.chunkRows, opt.verifyParallel, loadAverage())
	fmt.Printf("| | best | runs (s) | rows/s |\n|---|---|---|---|\n")
	fmt.Printf("| full checksum of both tables at once | %.2fs | %s | %.0f |\n", bestFull.Seconds(), strings.Join(fulls, ", "), float64(opt.verifyRows)/bestFull.Seconds())
	fmt.Printf("| regiond verify | %.2fs | %s | %.0f |\n", bestVerify.Seconds(), strings.Join(verifies, ", "), float64(opt.verifyRows)/bestVerify.Seconds())
	if bestRows > 0 {
		fmt.Printf("| regiond verify, rows read and compared in regiond | %.2fs | %s | %.0f |\n", bestRows.Seconds(), strings.Join(rowRuns, ", "), float64(opt.verifyRows)/bestRows.Seconds())
	}
	fmt.Println()
	fmt.Printf("verify / full checksum = %.2f× (target ≤ %.1f×: %s)\n", ratio, verifyTarget, verdict)
	return nil
}

// loadVerifyRows inserts the benchmark's rows (the same for every server:
// a fixed seed) in 1000-row statements.
func loadVerifyRows(ctx context.Context, db *snapshot.DB, opt options) error {
	conn, err := db.SQL.Conn(ctx)
	if err != nil {
		return err
	}
	defer conn.Close()
	ddl := vbPostgresTable
	if db.Engine == config.EngineMySQL {
		ddl = vbMySQLTable
		if _, err := conn.ExecContext(ctx, "SET SESSION sql_log_bin = 0"); err != nil {
			return err
		}
	}
	if _, err := conn.ExecContext(ctx, ddl); err != nil {
		return err
	}
	rng := rand.New(rand.NewPCG(opt.seed, 7))
	var b strings.Builder
	for start := 1; start <= opt.verifyRows; start += 1000 {
		b.Reset()
		b.WriteString("INSERT INTO vbench (id, k, name, pad, amount, at) VALUES ")
		for id := start; id < start+1000 && id <= opt.verifyRows; id++ {
			if id > start {
				b.WriteByte(',')
			}
			amount := "NULL"
			if id%7 != 0 {
				amount = fmt.Sprintf("%d.%02d", rng.IntN(1_000_000), rng.IntN(100))
			}
			fmt.Fprintf(&b, "(%d, %d, 'name-%d-%d', 'pad-%d', %s, '2025-%02d-%02d %02d:%02d:%02d.%06d')",
				id, rng.IntN(1<<30), id, rng.Uint32(), rng.IntN(1000), amount,
				1+rng.IntN(12), 1+rng.IntN(28), rng.IntN(24), rng.IntN(60), rng.IntN(60), rng.IntN(1_000_000))
		}
		if _, err := conn.ExecContext(ctx, b.String()); err != nil {
			return fmt.Errorf("region %s: load: %w", db.Region, err)
		}
	}
	if db.Engine == config.EnginePostgres {
		_, err = conn.ExecContext(ctx, "VACUUM ANALYZE vbench")
	} else {
		_, err = conn.ExecContext(ctx, "ANALYZE TABLE vbench")
	}
	return err
}

// fullChecksum is one aggregate over the whole table, with the same per-row
// hash as verify's same-engine chunks.
func fullChecksum(ctx context.Context, db *snapshot.DB) (string, error) {
	q := "SELECT COUNT(*), COALESCE(BIT_XOR(CRC32(CONCAT_WS('#', id, k, name, pad, amount, at, " +
		"CONCAT(ISNULL(id), ISNULL(k), ISNULL(name), ISNULL(pad), ISNULL(amount), ISNULL(at))))), 0) FROM vbench"
	if db.Engine == config.EnginePostgres {
		q = "SELECT count(*), coalesce(bit_xor(hashtextextended(ROW(id, k, name, pad, amount, at)::text, 0)), 0) FROM vbench"
	}
	var n int64
	var sum sql.NullString
	if err := db.SQL.QueryRowContext(ctx, q).Scan(&n, &sum); err != nil {
		return "", fmt.Errorf("region %s: full checksum: %w", db.Region, err)
	}
	return fmt.Sprintf("%d/%s", n, sum.String), nil
}
