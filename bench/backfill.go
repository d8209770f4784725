package main

// -mode backfill: regiond backfill's copy rate against the target's raw
// bulk-load rate, in one run.
//
//  1. Setup: two private servers of -engine (the source and the target);
//     the bench table in both; -rows rows (the same generator as the
//     replication backlog) loaded into the source in 1000-row INSERTs; in
//     the target, regiond's tables and the checkpoint of the pipeline
//     source->target (as `regiond run` leaves them), so each chunk takes
//     its guard lock as in production.
//  2. Raw: the same rows, generated in memory, into a fresh table of the
//     target in 1000-row autocommit INSERTs on one connection; for
//     PostgreSQL also one COPY (pgx CopyFrom). The table is dropped.
//  3. Backfill: backfill.Run (the code `regiond backfill` runs) copies the
//     bench table from the source into the empty target table, with
//     -chunk-size and -parallel, timed from start to finish (planning
//     included).
//  4. Verify: both bench tables hold the same rows (internal/dbtest
//     canonical dumps).
//
// The report gives each rate and backfill/raw (target ≥ 0.6×).

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/jackc/pgx/v5"

	"github.com/regiond/regiond/backfill"
	"github.com/regiond/regiond/config"
	"github.com/regiond/regiond/internal/dbtest"
	"github.com/regiond/regiond/internal/mysqlconn"
	"github.com/regiond/regiond/internal/testenv"
	mysqlsink "github.com/regiond/regiond/sink/mysql"
	pgsink "github.com/regiond/regiond/sink/postgres"
	"github.com/regiond/regiond/snapshot"
)

// targetBackfillVsRaw is the backfill rate regiond should reach, as a share
// of the target's raw bulk-load rate.
const targetBackfillVsRaw = 0.6

func runBackfillBench(opt options) (err error) {
	ctx, stop := runContext(opt)
	defer stop()
	began := time.Now()
	progress := func(format string, args ...any) {
		fmt.Fprintf(os.Stderr, "[%6.1fs] %s\n", time.Since(began).Seconds(), fmt.Sprintf(format, args...))
	}
	pg := opt.engine == enginePostgres
	var servers []*testenv.Server
	defer func() {
		if opt.keep {
			return
		}
		for _, s := range servers {
			if derr := s.Destroy(); derr != nil && err == nil {
				err = derr
			}
		}
	}()
	start := func(id int) (*testenv.Server, error) {
		var (
			s   *testenv.Server
			err error
		)
		if pg {
			s, err = testenv.StartPostgres(ctx, "")
		} else {
			s, err = testenv.StartMariaDB(ctx, "", id)
		}
		if s != nil {
			servers = append(servers, s)
		}
		return s, err
	}
	progress("starting 2 %s servers", opt.engine)
	srcSrv, err := start(1)
	if err != nil {
		return err
	}
	dstSrv, err := start(2)
	if err != nil {
		return err
	}
	engine := config.EngineMySQL
	create := createBench
	d := mariadbSQL
	if pg {
		engine, create, d = config.EnginePostgres, pgCreateBench, postgresSQL
	}
	src := config.Region{Name: "source", Engine: engine, DSN: srcSrv.URL("app")}
	dst := config.Region{Name: "target", Engine: engine, DSN: dstSrv.URL("app")}
	sdb, err := snapshot.Open(src)
	if err != nil {
		return err
	}
	defer sdb.Close()
	tdb, err := snapshot.Open(dst)
	if err != nil {
		return err
	}
	defer tdb.Close()
	for _, db := range []*snapshot.DB{sdb, tdb} {
		if _, err := db.SQL.ExecContext(ctx, create); err != nil {
			return fmt.Errorf("%s: %w", db.Region, err)
		}
	}

	// The source's rows.
	progress("loading %d rows into the source", opt.rows)
	g := newGen(opt.seed)
	conn, err := sdb.SQL.Conn(ctx)
	if err != nil {
		return err
	}
	for first := 1; first <= opt.rows; first += 50_000 {
		n := min(50_000, opt.rows-first+1)
		if err := execAll(ctx, conn, insertStmts(d, benchTable, g.rows(int64(first), n), 1000)); err != nil {
			conn.Close()
			return fmt.Errorf("load source: %w", err)
		}
	}
	conn.Close()

	// regiond's tables and the pipeline's checkpoint in the target.
	if err := initCheckpoint(ctx, src, dst, srcSrv, dstSrv); err != nil {
		return err
	}

	// Raw bulk load into the target.
	rows := newGen(opt.seed).rows(1, opt.rows)
	raw, err := rawLoad(ctx, tdb, d, rows, pg, progress)
	if err != nil {
		return err
	}
	var copyIn phase
	if pg {
		if copyIn, err = rawCopy(ctx, dst.DSN, rows, progress); err != nil {
			return err
		}
	}

	// Backfill.
	progress("backfill: %d rows, chunk size %d, parallel %d", opt.rows, opt.chunk, opt.parallel)
	logger := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	stopProf, err := startProfiles(opt.cpuProfile, opt.trace)
	if err != nil {
		return err
	}
	t0 := time.Now()
	res, err := backfill.Run(ctx, backfill.Config{
		From: src.Name, To: dst.Name, Source: sdb, Target: tdb, Tables: []string{benchTable},
		Pipeline: "source->target", Guard: []string{"source->target"},
		ChunkRows: opt.chunk, Parallel: opt.parallel, Logger: logger,
		NewWriter: func(int) (backfill.Writer, error) {
			return backfill.NewSinkWriter(dst, "backfill source->target", src.Name, []string{benchTable}, nil, logger)
		},
	})
	bf := phase{name: "regiond backfill", unit: "rows", n: int(res.Rows), d: time.Since(t0)}
	if perr := stopProf(); perr != nil && err == nil {
		err = perr
	}
	if err != nil {
		return fmt.Errorf("backfill: %w", err)
	}
	progress("backfill: %d rows in %v (%d retries)", res.Rows, bf.d.Round(time.Millisecond), res.Retries)

	progress("verify")
	a, err := dbtest.DumpCanonical(ctx, dbtest.Region{Name: "source", Engine: engine, DB: sdb.SQL}, benchTable)
	if err != nil {
		return err
	}
	b, err := dbtest.DumpCanonical(ctx, dbtest.Region{Name: "target", Engine: engine, DB: tdb.SQL}, benchTable)
	if err != nil {
		return err
	}
	if len(a) != opt.rows || !slices.Equal(a, b) {
		diff := cmp.Diff(a, b)
		return fmt.Errorf("verify: source (%d rows) and target (%d rows) differ:\n%.2000s", len(a), len(b), diff)
	}
	reportBackfill(os.Stdout, opt, raw, copyIn, bf)
	return nil
}

// initCheckpoint creates regiond's tables in the target and stores the
// checkpoint of pipeline source->target, as the pipeline's first start does.
func initCheckpoint(ctx context.Context, src, dst config.Region, srcSrv, dstSrv *testenv.Server) error {
	logger := slog.New(slog.DiscardHandler)
	if dst.Engine == config.EnginePostgres {
		a, err := pgsink.New(pgsink.Config{Pipeline: "source->target", Source: src.Name, Target: dst.Name, DSN: dst.DSN, Tables: []string{benchTable}}, logger)
		if err != nil {
			return err
		}
		defer a.Close()
		if _, err := a.Open(ctx); err != nil {
			return err
		}
		_, err = a.Init(ctx, "0/0")
		return err
	}
	a, err := mysqlsink.New(mysqlsink.Config{Pipeline: "source->target", Source: src.Name, Target: dst.Name,
		Conn: mysqlconn.Params{Host: "127.0.0.1", Port: dstSrv.Port, User: "root", Database: "app"}, Tables: []string{benchTable}}, logger)
	if err != nil {
		return err
	}
	defer a.Close()
	if _, err := a.Open(ctx); err != nil {
		return err
	}
	_, err = a.Init(ctx, "")
	return err
}

// rawLoad inserts rows into a fresh copy of the bench table in the target in
// 1000-row autocommit INSERTs on one connection, timed; the table is
// dropped afterwards.
func rawLoad(ctx context.Context, db *snapshot.DB, d dialect, rows []row, pg bool, progress func(string, ...any)) (phase, error) {
	like := "CREATE TABLE " + d.ident(rawTable) + " LIKE " + d.ident(benchTable)
	if pg {
		like = "CREATE TABLE " + d.ident(rawTable) + " (LIKE " + d.ident(benchTable) + " INCLUDING ALL)"
	}
	if _, err := db.SQL.ExecContext(ctx, like); err != nil {
		return phase{}, err
	}
	defer db.SQL.ExecContext(context.WithoutCancel(ctx), "DROP TABLE "+d.ident(rawTable))
	stmts := insertStmts(d, rawTable, rows, 1000)
	conn, err := db.SQL.Conn(ctx)
	if err != nil {
		return phase{}, err
	}
	defer conn.Close()
	progress("raw: %d rows in 1000-row INSERTs", len(rows))
	t0 := time.Now()
	if err := execAll(ctx, conn, stmts); err != nil {
		return phase{}, fmt.Errorf("raw insert: %w", err)
	}
	return phase{name: "raw 1000-row INSERT", unit: "rows", n: len(rows), d: time.Since(t0)}, nil
}

// rawCopy loads rows into a fresh copy of the bench table with one COPY.
func rawCopy(ctx context.Context, dsn string, rows []row, progress func(string, ...any)) (phase, error) {
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		return phase{}, err
	}
	defer conn.Close(context.WithoutCancel(ctx))
	if _, err := conn.Exec(ctx, `CREATE TABLE "`+rawTable+`" (LIKE "`+benchTable+`" INCLUDING ALL)`); err != nil {
		return phase{}, err
	}
	defer conn.Exec(context.WithoutCancel(ctx), `DROP TABLE "`+rawTable+`"`)
	vals, err := copyRows(rows)
	if err != nil {
		return phase{}, err
	}
	progress("raw: %d rows in one COPY", len(rows))
	t0 := time.Now()
	n, err := conn.CopyFrom(ctx, pgx.Identifier{rawTable}, benchColumns, pgx.CopyFromRows(vals))
	if err != nil {
		return phase{}, fmt.Errorf("copy: %w", err)
	}
	if int(n) != len(rows) {
		return phase{}, errors.New("copy: short")
	}
	return phase{name: "raw COPY", unit: "rows", n: len(rows), d: time.Since(t0)}, nil
}

func reportBackfill(w io.Writer, opt options, raw, copyIn, bf phase) {
	fmt.Fprintf(w, "## backfill, %s → %s, %d rows, chunk size %d, parallel %d (%s)\n\n", opt.engine, opt.engine, opt.rows, opt.chunk, opt.parallel, time.Now().UTC().Format("2006-01-02 15:04 UTC"))
	fmt.Fprintln(w, "| phase | rows | time | rows/s |")
	fmt.Fprintln(w, "|---|---|---|---|")
	for _, p := range []phase{raw, copyIn, bf} {
		if p.n == 0 {
			continue
		}
		fmt.Fprintf(w, "| %s | %d | %.2fs | %.0f |\n", p.name, p.n, p.d.Seconds(), p.rate())
	}
	fmt.Fprintln(w)
	var lines []string
	ratio := bf.rate() / raw.rate()
	lines = append(lines, fmt.Sprintf("backfill / raw 1000-row INSERT: **%.2f×** (target ≥ %.1f×%s)", ratio, targetBackfillVsRaw, verdict(ratio >= targetBackfillVsRaw)))
	if copyIn.n > 0 {
		lines = append(lines, fmt.Sprintf("backfill / raw COPY: %.2f×", bf.rate()/copyIn.rate()))
	}
	fmt.Fprintln(w, strings.Join(lines, "  \n"))
}

func verdict(ok bool) string {
	if ok {
		return ", met"
	}
	return ", NOT met"
}
