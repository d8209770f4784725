package main

// The PostgreSQL mode (-engine postgres): the same backlog, written into a
// private PostgreSQL 15 source, applied by PostgreSQL's own logical
// replication (publication + subscription) and by regiond (source/postgres →
// sink/postgres), next to the regiond target's raw 1000-row INSERT and COPY
// rates, all in one run. See the package comment and BENCHMARKS.md.

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"
	pgxconn "github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgtype"

	"github.com/regiond/regiond/checkpoint"
	"github.com/regiond/regiond/internal/pgconn"
	"github.com/regiond/regiond/internal/testenv"
)

const (
	// pgPublication and pgSubscription are native logical replication's
	// publication on the source and subscription in the native target; the
	// subscription's slot on the source has the subscription's name.
	pgPublication  = "benchpub"
	pgSubscription = "benchsub"
	// pgStatementRows is sink/postgres's default StatementRows: the rows of
	// one of its upsert statements, used by the diagnostic upsert phases.
	pgStatementRows = 4096
)

// pgServer is one of the benchmark's PostgreSQL servers.
type pgServer struct {
	role string
	srv  *testenv.Server
	conn *pgx.Conn // regiond's session settings (internal/pgconn); used by the main goroutine only
	pid  int       // the postmaster's
}

func (s *pgServer) dsn() string { return s.srv.URL("app") }

// pgBench holds the state of one run of the PostgreSQL mode.
type pgBench struct {
	opt     options
	began   time.Time
	logger  *slog.Logger
	loadAvg string
	servers []*pgServer // every server started, for cleanup
	source  *pgServer
	native  *pgServer // subscriber of native logical replication
	regiond *pgServer // target of regiond

	regiondStart checkpoint.LSN // regiond's stored start position (its slot's consistent point)
	nativeStart  checkpoint.LSN // the subscription slot's consistent point
	// midLSN and finalLSN are the source's WAL insert position read inside
	// the backlog's last insert transaction and inside its last transaction,
	// just before their COMMITs. Every earlier commit ends at or before such
	// a position and that transaction's commit ends after it, so a replica
	// whose applied position (a commit's end LSN) is past finalLSN has
	// applied the whole backlog, and past midLSN all its inserts.
	midLSN, finalLSN checkpoint.LSN
	endLSN           checkpoint.LSN // the source's pg_current_wal_lsn() after the backlog
	txns, insertTxns int
}

func (b *pgBench) changes() int { return b.opt.inserts + b.opt.updates }

func (b *pgBench) progress(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "[%6.1fs] %s\n", time.Since(b.began).Seconds(), fmt.Sprintf(format, args...))
}

// runPostgres is run for -engine postgres.
func runPostgres(opt options) error {
	return drive(opt, &pgBench{opt: opt, began: time.Now(), logger: runLogger(opt), loadAvg: loadAverage()})
}

func (b *pgBench) setupSteps() []func(context.Context) error {
	return []func(context.Context) error{b.startServers, b.createTables, b.prepareReplicas, b.writeBacklog}
}

func (b *pgBench) measure(ctx context.Context) error {
	opt := b.opt
	raws, err := b.runRaw(ctx)
	if err != nil {
		return fmt.Errorf("raw phase: %w", err)
	}
	raw, copyIn, diags := raws[0], raws[1], raws[2:]

	b.progress("native logical replication: ALTER SUBSCRIPTION %s ENABLE", pgSubscription)
	native, err := b.runNative(ctx)
	if err != nil {
		return fmt.Errorf("native logical replication phase: %w", err)
	}
	b.progress("%s", native.summary())

	b.progress("regiond: pipeline resumes from %s", b.regiondStart)
	reg, err := b.runRegiond(ctx)
	if err != nil {
		return fmt.Errorf("regiond phase: %w", err)
	}
	b.progress("%s", reg.summary())
	if opt.cpuProfile != "" {
		b.progress("regiond: CPU profile written to %s (go tool pprof -top %s)", opt.cpuProfile, opt.cpuProfile)
	}

	if err := b.verify(ctx); err != nil {
		return err
	}
	return b.report(ctx, os.Stdout, raw, copyIn, native, reg, diags)
}

// startServers starts the three servers at once, each in a new directory.
func (b *pgBench) startServers(ctx context.Context) error {
	b.source = &pgServer{role: "source"}
	b.native = &pgServer{role: "native target"}
	b.regiond = &pgServer{role: "regiond target"}
	b.servers = []*pgServer{b.source, b.native, b.regiond}
	b.progress("starting 3 PostgreSQL servers")
	errs := make([]error, len(b.servers))
	var wg sync.WaitGroup
	for i, s := range b.servers {
		wg.Go(func() {
			dir, err := os.MkdirTemp("", "regiond-bench-pg-")
			if err != nil {
				errs[i] = err
				return
			}
			// Known before the start, so that cleanup covers a failed start.
			s.srv = &testenv.Server{Engine: testenv.EnginePostgres, Dir: dir}
			srv, err := testenv.StartPostgres(ctx, dir)
			if err != nil {
				errs[i] = fmt.Errorf("%s: %w", s.role, err)
				return
			}
			s.srv = srv
			if s.conn, err = pgconn.Connect(ctx, s.dsn()); err != nil {
				errs[i] = fmt.Errorf("%s: %w", s.role, err)
				return
			}
			if data, err := os.ReadFile(filepath.Join(dir, "data", "postmaster.pid")); err == nil {
				line, _, _ := strings.Cut(string(data), "\n")
				s.pid, _ = strconv.Atoi(strings.TrimSpace(line))
			}
		})
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return err
	}
	for _, s := range b.servers {
		b.progress("%-14s port=%d postmaster pid=%d dir=%s", s.role, s.srv.Port, s.pid, s.srv.Dir)
	}
	return nil
}

// createTables creates the bench table in all three servers.
func (b *pgBench) createTables(ctx context.Context) error {
	for _, s := range b.servers {
		if _, err := s.conn.Exec(ctx, pgCreateBench); err != nil {
			return fmt.Errorf("%s: %w", s.role, err)
		}
	}
	return nil
}

// prepareReplicas sets both replicas up before the backlog, so that both
// start from a position before it and copy nothing: the publication and a
// disabled subscription without initial copy (its slot is created at the
// source's current position), and a first, brief run of the regiond
// pipeline (it creates its publication, slot and checkpoint).
func (b *pgBench) prepareReplicas(ctx context.Context) error {
	if _, err := b.source.conn.Exec(ctx, "CREATE PUBLICATION "+pgPublication+" FOR TABLE "+benchTable); err != nil {
		return fmt.Errorf("source: %w", err)
	}
	sub := fmt.Sprintf("CREATE SUBSCRIPTION %s CONNECTION 'host=127.0.0.1 port=%d user=postgres dbname=app' PUBLICATION %s WITH (copy_data = false, enabled = false)",
		pgSubscription, b.source.srv.Port, pgPublication)
	if _, err := b.native.conn.Exec(ctx, sub); err != nil {
		return fmt.Errorf("native target: %s: %w", sub, err)
	}
	var err error
	if b.nativeStart, err = b.slotConfirmed(ctx, pgSubscription); err != nil {
		return err
	}
	b.progress("native target: subscription %s created (disabled, copy_data = false); its slot on the source starts at %s", pgSubscription, b.nativeStart)

	b.progress("regiond: first start, to create its slot and store its start position")
	if b.regiondStart, err = b.initRegiond(ctx); err != nil {
		return err
	}
	if _, err := b.slotConfirmed(ctx, regiondSlot); err != nil {
		return err
	}
	cur, err := walLSN(ctx, b.source.conn, "pg_current_wal_lsn()")
	if err != nil {
		return fmt.Errorf("source: %w", err)
	}
	if b.regiondStart > cur {
		return fmt.Errorf("regiond stored start position %s, ahead of the source's WAL at %s", b.regiondStart, cur)
	}
	b.progress("regiond starts at %s, the native subscription at %s; the source's WAL is at %s", b.regiondStart, b.nativeStart, cur)
	return nil
}

// slotConfirmed returns the confirmed_flush_lsn of the source's slot.
func (b *pgBench) slotConfirmed(ctx context.Context, slot string) (checkpoint.LSN, error) {
	var s *string
	err := b.source.conn.QueryRow(ctx, "SELECT confirmed_flush_lsn::text FROM pg_replication_slots WHERE slot_name = $1", slot).Scan(&s)
	if errors.Is(err, pgx.ErrNoRows) {
		return 0, fmt.Errorf("source: replication slot %s does not exist", slot)
	}
	if err != nil {
		return 0, fmt.Errorf("source: read slot %s: %w", slot, err)
	}
	if s == nil {
		return 0, nil
	}
	return checkpoint.ParseLSN(*s)
}

// walLSN evaluates an LSN-valued SQL expression, e.g. pg_current_wal_lsn().
func walLSN(ctx context.Context, conn *pgx.Conn, expr string) (checkpoint.LSN, error) {
	var s string
	if err := conn.QueryRow(ctx, "SELECT "+expr+"::text").Scan(&s); err != nil {
		return 0, err
	}
	return checkpoint.ParseLSN(s)
}

// writeBacklog writes the backlog on the source (the same statements as the
// MariaDB mode, in PostgreSQL's quoting) and records midLSN, finalLSN and
// endLSN.
func (b *pgBench) writeBacklog(ctx context.Context) error {
	b.progress("backlog: %d inserts (%d-row transactions), %d updates (%d-row transactions)",
		b.opt.inserts, insertTxnRows, b.opt.updates, updateTxnStmts)
	conn, err := pgconn.Connect(ctx, b.source.dsn())
	if err != nil {
		return fmt.Errorf("source: %w", err)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	var lastLSN checkpoint.LSN
	exec := func(ctx context.Context, q string, last bool) error {
		if !last {
			_, err := conn.Exec(ctx, q) // no arguments: the simple protocol, which takes "BEGIN;…;COMMIT"
			return err
		}
		// The part's last transaction: read the WAL insert position inside
		// it, just before its COMMIT.
		body, explicit := strings.CutSuffix(q, "COMMIT")
		if !explicit {
			body = "BEGIN;" + q + ";"
		}
		results, err := conn.PgConn().Exec(ctx, body+"SELECT pg_current_wal_insert_lsn()::text;COMMIT").ReadAll()
		if err != nil {
			return err
		}
		if len(results) < 2 || len(results[len(results)-2].Rows) != 1 {
			return fmt.Errorf("reading the WAL position before the last COMMIT: unexpected results")
		}
		lastLSN, err = checkpoint.ParseLSN(string(results[len(results)-2].Rows[0][0]))
		return err
	}
	start := time.Now()
	g := newGen(b.opt.seed)
	if b.insertTxns, err = writeInserts(ctx, exec, postgresSQL, g, b.opt.inserts, b.progress); err != nil {
		return fmt.Errorf("source: %w", err)
	}
	b.midLSN = lastLSN
	updateTxns, err := writeUpdates(ctx, exec, postgresSQL, g, b.opt.inserts, b.opt.updates, b.progress)
	if err != nil {
		return fmt.Errorf("source: %w", err)
	}
	b.finalLSN = lastLSN
	b.txns = b.insertTxns + updateTxns
	if b.endLSN, err = walLSN(ctx, conn, "pg_current_wal_lsn()"); err != nil {
		return fmt.Errorf("source: %w", err)
	}
	b.progress("backlog: %d changes in %d transactions written in %.1fs; %.1f MB of WAL; last insert commits after %s, last transaction after %s, WAL at %s",
		b.changes(), b.txns, time.Since(start).Seconds(), float64(b.endLSN-b.regiondStart)/1e6, b.midLSN, b.finalLSN, b.endLSN)
	return nil
}

// checkpointServers runs CHECKPOINT in the servers, so that a timed phase
// does not start with (or run into) a checkpoint left over from the
// previous one.
func checkpointServers(ctx context.Context, servers ...*pgServer) error {
	for _, s := range servers {
		if _, err := s.conn.Exec(ctx, "CHECKPOINT"); err != nil {
			return fmt.Errorf("%s: CHECKPOINT: %w", s.role, err)
		}
	}
	return nil
}

// runRaw measures the regiond target's raw write rates, each on a fresh
// table, on one connection: -raw-rows rows in 1000-row autocommit INSERTs
// sent as SQL text (the baseline), then the same rows in one COPY (pgx
// CopyFrom, binary). Unless -upserts=false, it also times regiond's own
// statement form as diagnostics: sink/postgres's INSERT … SELECT … FROM
// unnest(text arrays) ON CONFLICT … DO UPDATE, 4096 rows a statement
// (its default), for new rows and then for the same keys again with new
// values. Statements and rows are built before each clock starts; the table
// is dropped at the end.
func (b *pgBench) runRaw(ctx context.Context) ([]phase, error) {
	conn := b.regiond.conn
	n := b.opt.rawRows
	g := newGen(b.opt.seed + 1)
	rows := g.rows(1, n)
	casts, err := columnCasts(ctx, conn)
	if err != nil {
		return nil, err
	}
	type step struct {
		name  string
		prep  func() (func(context.Context) error, error)
		reset bool // start from an empty table
	}
	steps := []step{
		{fmt.Sprintf("raw INSERT, %d-row statements", rawStmtRows), func() (func(context.Context) error, error) {
			stmts := insertStmts(postgresSQL, rawTable, rows, rawStmtRows)
			return func(ctx context.Context) error {
				for i, s := range stmts {
					if _, err := conn.Exec(ctx, s.q); err != nil {
						return fmt.Errorf("statement %d of %d: %w", i+1, len(stmts), err)
					}
				}
				return nil
			}, nil
		}, true},
		{"raw COPY (pgx CopyFrom)", func() (func(context.Context) error, error) {
			src, err := copyRows(rows)
			if err != nil {
				return nil, err
			}
			return func(ctx context.Context) error {
				got, err := conn.CopyFrom(ctx, pgx.Identifier{rawTable}, benchColumns, pgx.CopyFromRows(src))
				if err == nil && got != int64(len(src)) {
					err = fmt.Errorf("COPY wrote %d rows, want %d", got, len(src))
				}
				return err
			}, nil
		}, true},
	}
	upsert := func(rows []row) func() (func(context.Context) error, error) {
		return func() (func(context.Context) error, error) {
			q, chunks := unnestUpserts(casts, rows, pgStatementRows)
			return func(ctx context.Context) error {
				for i, args := range chunks {
					if _, err := conn.Exec(ctx, q, args...); err != nil {
						return fmt.Errorf("statement %d of %d: %w", i+1, len(chunks), err)
					}
				}
				return nil
			}, nil
		}
	}
	if b.opt.upserts {
		steps = append(steps,
			step{"diagnostic: regiond's upsert form, new rows", upsert(rows), true},
			step{"diagnostic: regiond's upsert form, existing rows", upsert(g.rows(1, n)), false})
	}
	var phases []phase
	for _, st := range steps {
		if st.reset {
			for _, q := range []string{
				"DROP TABLE IF EXISTS " + rawTable,
				"CREATE TABLE " + rawTable + " (LIKE " + benchTable + " INCLUDING ALL)",
			} {
				if _, err := conn.Exec(ctx, q); err != nil {
					return nil, fmt.Errorf("%s: %w", q, err)
				}
			}
		}
		do, err := st.prep()
		if err != nil {
			return nil, fmt.Errorf("%s: %w", st.name, err)
		}
		if err := checkpointServers(ctx, b.regiond); err != nil {
			return nil, err
		}
		b.progress("%s: %d rows into %s on the regiond target", st.name, n, rawTable)
		cpu0 := b.cpuNow(b.regiond)
		start := time.Now()
		if err := do(ctx); err != nil {
			return nil, fmt.Errorf("%s: %w", st.name, err)
		}
		p := phase{name: st.name, unit: "rows", n: n, d: time.Since(start), cpu: b.cpuNow(b.regiond).sub(cpu0)}
		var got int
		if err := conn.QueryRow(ctx, "SELECT count(*) FROM "+rawTable).Scan(&got); err != nil {
			return nil, err
		}
		if got != n {
			return nil, fmt.Errorf("%s: %s holds %d rows, want %d", st.name, rawTable, got, n)
		}
		b.progress("%s", p.summary())
		phases = append(phases, p)
	}
	if _, err := conn.Exec(ctx, "DROP TABLE "+rawTable); err != nil {
		return nil, err
	}
	return phases, nil
}

// copyRows returns rows as pgx CopyFrom values, in benchColumns order.
func copyRows(rows []row) ([][]any, error) {
	out := make([][]any, len(rows))
	for i, r := range rows {
		ts, err := time.Parse("2006-01-02 15:04:05.000000", r.ts)
		if err != nil {
			return nil, err
		}
		var n any
		if !r.nNull {
			n = int32(r.n)
		}
		out[i] = []any{r.id, int32(r.k), r.c, r.pad, n, ts}
	}
	return out, nil
}

// columnCasts returns the bench table's column types as sink/postgres
// casts its text values: format_type without the type modifier.
func columnCasts(ctx context.Context, conn *pgx.Conn) ([]string, error) {
	rows, err := conn.Query(ctx, `SELECT format_type(atttypid, -1) FROM pg_attribute
		WHERE attrelid = $1::regclass AND attnum > 0 AND NOT attisdropped ORDER BY attnum`, benchTable)
	if err != nil {
		return nil, err
	}
	casts, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err == nil && len(casts) != len(benchColumns) {
		err = fmt.Errorf("table %s has %d columns, want %d", benchTable, len(casts), len(benchColumns))
	}
	return casts, err
}

// unnestUpserts returns sink/postgres's upsert statement for rawTable (as
// its plan builds it for this table) and the arguments of one execution per
// perStmt rows: one text array per column, values in the canonical text
// form the MySQL or Postgres reader hands over.
func unnestUpserts(casts []string, rows []row, perStmt int) (string, [][]any) {
	var ins, sel, args, alias, set []string
	for i, c := range benchColumns {
		v := "v" + strconv.Itoa(i+1)
		ins = append(ins, pgconn.Ident(c))
		sel = append(sel, v+"::"+casts[i])
		args = append(args, "$"+strconv.Itoa(i+1)+"::text[]")
		alias = append(alias, v)
		if c != "id" {
			set = append(set, pgconn.Ident(c)+" = EXCLUDED."+pgconn.Ident(c))
		}
	}
	q := "INSERT INTO " + pgconn.Ident("public", rawTable) + " (" + strings.Join(ins, ", ") + ") OVERRIDING SYSTEM VALUE SELECT " +
		strings.Join(sel, ", ") + " FROM unnest(" + strings.Join(args, ", ") + ") AS u(" + strings.Join(alias, ", ") +
		") ON CONFLICT (" + pgconn.Ident("id") + ") DO UPDATE SET " + strings.Join(set, ", ")
	text := func(s string) pgtype.Text { return pgtype.Text{String: s, Valid: true} }
	var chunks [][]any
	for start := 0; start < len(rows); start += perStmt {
		part := rows[start:min(start+perStmt, len(rows))]
		cols := make([]pgtype.FlatArray[pgtype.Text], len(benchColumns))
		for i := range cols {
			cols[i] = make(pgtype.FlatArray[pgtype.Text], len(part))
		}
		for j, r := range part {
			cols[0][j] = text(strconv.FormatInt(r.id, 10))
			cols[1][j] = text(strconv.FormatInt(r.k, 10))
			cols[2][j] = text(r.c)
			cols[3][j] = text(r.pad)
			if !r.nNull {
				cols[4][j] = text(strconv.FormatInt(r.n, 10))
			}
			cols[5][j] = text(r.ts)
		}
		a := make([]any, len(cols))
		for i, c := range cols {
			a[i] = c
		}
		chunks = append(chunks, a)
	}
	return q, chunks
}

// pgChecksumQuery summarises the bench table's content: the row count and
// the MD5 of all rows' text, in key order. NULL is spelled out.
const pgChecksumQuery = `SELECT count(*), COALESCE(md5(string_agg(concat_ws('|', id, k, c, pad, COALESCE(n::text, 'NULL'), COALESCE(ts::text, 'NULL')), E'\n' ORDER BY id)), '') FROM ` + benchTable

// verify checks that the bench table has the same content everywhere.
func (b *pgBench) verify(ctx context.Context) error {
	var want tableSum
	for i, s := range b.servers {
		var sum tableSum
		if err := s.conn.QueryRow(ctx, pgChecksumQuery).Scan(&sum.Rows, &sum.MD5); err != nil {
			return fmt.Errorf("verify: %s: %w", s.role, err)
		}
		b.progress("verify: %-14s rows=%d md5=%s", s.role, sum.Rows, sum.MD5)
		if i == 0 {
			want = sum
			if sum.Rows != int64(b.opt.inserts) {
				return fmt.Errorf("verify: the source holds %d rows, want %d", sum.Rows, b.opt.inserts)
			}
			continue
		}
		if sum != want {
			return fmt.Errorf("verify: the %s's bench table differs from the source's: rows=%d md5=%s, source rows=%d md5=%s",
				s.role, sum.Rows, sum.MD5, want.Rows, want.MD5)
		}
	}
	b.progress("verify: all three tables are identical")
	return nil
}

// report prints the results as Markdown.
func (b *pgBench) report(ctx context.Context, w io.Writer, raw, copyIn, native, reg phase, diags []phase) error {
	var version string
	if err := b.source.conn.QueryRow(ctx, "SHOW server_version").Scan(&version); err != nil {
		return err
	}
	fmt.Fprintf(w, "\n## regiond benchmark (PostgreSQL), %s\n\n", time.Now().UTC().Format("2006-01-02 15:04 UTC"))
	fmt.Fprintf(w, "- machine: %d CPUs (%s), GOMAXPROCS %d, %s %s/%s, PostgreSQL %s; load average at the start: %s\n",
		runtime.NumCPU(), cpuModel(), runtime.GOMAXPROCS(0), runtime.Version(), runtime.GOOS, runtime.GOARCH, version, b.loadAvg)
	fmt.Fprintf(w, "- backlog: %d inserts in %d-row transactions + %d single-row updates in %d-statement transactions = %d changes in %d source transactions, %.1f MB of WAL\n\n",
		b.opt.inserts, insertTxnRows, b.opt.updates, updateTxnStmts, b.changes(), b.txns, float64(b.endLSN-b.regiondStart)/1e6)
	fmt.Fprintln(w, "| path | count | seconds | rate | inserts part /s | updates part /s | CPU s: source / target / bench process / other processes |")
	fmt.Fprintln(w, "|---|---:|---:|---:|---:|---:|---|")
	all := append([]phase{raw, copyIn, native, reg}, diags...)
	for _, p := range all {
		ins, upd := p.splitRates(b.opt)
		name := p.name
		if p.noisy() {
			name += " (NOISY)"
		}
		fmt.Fprintf(w, "| %s | %d %s | %.2f | %.0f %s/s | %s | %s | %.1f / %.1f / %.1f / %.1f |\n",
			name, p.n, p.unit, p.d.Seconds(), p.rate(), p.unit, ins, upd,
			p.cpu.source.Seconds(), p.cpu.target.Seconds(), p.cpu.self.Seconds(), p.cpu.others().Seconds())
	}
	fmt.Fprintf(w, "\n(inserts part / updates part: the replication rate until the backlog's inserts were applied, and after. CPU s: CPU time used during the phase by the source server (postmaster and all its processes, WAL senders included), the phase's target server, this process — regiond's reader and applier in the regiond phase — and by every other process on the machine; the machine has %d CPUs, so %d CPU s per second of phase.)\n\n",
		runtime.NumCPU(), runtime.NumCPU())
	for _, p := range []phase{native, reg} {
		if p.note != "" {
			fmt.Fprintf(w, "- %s: %s\n", p.name, p.note)
		}
	}
	for _, p := range all {
		if p.noisy() {
			fmt.Fprintf(w, "- WARNING: other processes took %.0f%% of the CPUs during %q: its numbers are unreliable; rerun on a quiet machine\n",
				100*p.othersShare(), p.name)
		}
	}
	verdict := func(r, target float64) string {
		if r < target {
			return fmt.Sprintf("target ≥ %.1f×: MISSED", target)
		}
		return fmt.Sprintf("target ≥ %.1f×: met", target)
	}
	fmt.Fprintf(w, "- regiond / native logical replication: %.2f× (%s)\n", reg.rate()/native.rate(), verdict(reg.rate()/native.rate(), targetVsNative))
	ri, ru, rok := reg.splitRateValues(b.opt)
	ni, nu, nok := native.splitRateValues(b.opt)
	if rok && nok {
		fmt.Fprintf(w, "  - inserts part: %.2f× (%s); updates part: %.2f× (%s)\n",
			ri/ni, verdict(ri/ni, targetVsNative), ru/nu, verdict(ru/nu, targetVsNative))
	}
	fmt.Fprintf(w, "- regiond / raw INSERT: %.2f×; regiond / raw COPY: %.2f×; native / raw INSERT: %.2f×\n",
		reg.rate()/raw.rate(), reg.rate()/copyIn.rate(), native.rate()/raw.rate())
	return nil
}

// cleanup closes the connections and destroys the servers, or with -keep
// says where they are.
func (b *pgBench) cleanup() error {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for _, s := range b.servers {
		if s.conn != nil {
			s.conn.Close(ctx)
		}
	}
	var errs []error
	for _, s := range b.servers {
		if s.srv == nil {
			continue
		}
		if b.opt.keep {
			b.progress("kept %s: port %d, dir %s (stop with: scripts/testdb.sh stop %s)", s.role, s.srv.Port, s.srv.Dir, s.srv.Dir)
			continue
		}
		if err := s.srv.Destroy(); err != nil {
			errs = append(errs, fmt.Errorf("destroying the %s server: %w", s.role, err))
		}
	}
	if !b.opt.keep && len(b.servers) > 0 {
		b.progress("servers destroyed")
	}
	return errors.Join(errs...)
}

// ------------------------------------------------------------- CPU time

// cpuNow samples the CPU time used so far by the source and target servers
// (each a postmaster with its processes), this process and the machine.
func (b *pgBench) cpuNow(target *pgServer) cpuTimes {
	var ru syscall.Rusage
	var self time.Duration
	if syscall.Getrusage(syscall.RUSAGE_SELF, &ru) == nil {
		self = time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
	}
	src, ws := procTreeCPU(b.source.pid)
	tgt, _ := procTreeCPU(target.pid)
	return cpuTimes{source: src, target: tgt, self: self, machine: machineCPU(), walSenders: ws}
}

// procTreeCPU returns the CPU time (user + system) used so far by process
// pid, its children and every child it has reaped, from /proc (Linux), or
// 0. A PostgreSQL server is a postmaster with one child process per backend,
// WAL sender and worker, and the postmaster reaps the ones that end (their
// time then moves into its cutime and cstime), so this is the whole
// server's CPU time. walSenders is the CPU time of each of its WAL senders
// running now (by their process title), by process ID.
func procTreeCPU(pid int) (all time.Duration, walSenders map[int]time.Duration) {
	if pid <= 0 {
		return 0, nil
	}
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return 0, nil
	}
	var ticks int64
	for _, e := range entries {
		p, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		data, err := os.ReadFile("/proc/" + e.Name() + "/stat")
		if err != nil {
			continue
		}
		s := string(data)
		i := strings.LastIndexByte(s, ')')
		if i < 0 {
			continue
		}
		// After "pid (comm) ": state is field 3, ppid 4, utime 14, stime
		// 15, cutime 16, cstime 17.
		f := strings.Fields(s[i+1:])
		if len(f) < 15 {
			continue
		}
		ppid, _ := strconv.Atoi(f[1])
		if p != pid && ppid != pid {
			continue
		}
		var own int64
		for _, v := range f[11:15] {
			t, _ := strconv.ParseInt(v, 10, 64)
			own += t
		}
		ticks += own
		if p != pid {
			if title, err := os.ReadFile("/proc/" + e.Name() + "/cmdline"); err == nil && strings.HasPrefix(string(title), "postgres: walsender") {
				if walSenders == nil {
					walSenders = map[int]time.Duration{}
				}
				walSenders[p] = time.Duration(own) * time.Second / clockTicks
			}
		}
	}
	return time.Duration(ticks) * time.Second / clockTicks, walSenders
}

// pgCode returns the SQLSTATE of a server error, or "".
func pgCode(err error) string {
	var pe *pgxconn.PgError
	if errors.As(err, &pe) {
		return pe.Code
	}
	return ""
}
