// Command bench measures regiond's apply rate against MariaDB's native
// replication and against the target's raw INSERT rate, in one run on this
// machine, from the same source backlog.
//
// Usage (from the repository root):
//
//	go run ./bench -mode backfill [-engine mariadb|postgres] [-rows 500000] [-chunk-size 2000] [-parallel 2]
//	go run ./bench [-engine mariadb|postgres] [-to kafka] [-inserts 200000] [-updates 100000] [-keep] [-cpuprofile FILE] [-trace FILE]
//	go run ./bench -mode verify [-engine mariadb|postgres] [-verify-rows 1000000] [-chunk-rows 10000]   (see verify.go)
//
// A run has these phases:
//
//  1. Setup: three private MariaDB servers are started with
//     internal/testenv: the source, a target for native replication and a
//     target for regiond. The table `bench` is created in all three (in the
//     targets with sql_log_bin=0). The regiond pipeline is run once, briefly,
//     so that it creates regiond_checkpoints in its target and stores the
//     source's current position (just after the CREATE TABLE); the native
//     target gets gtid_slave_pos set to that same position and CHANGE MASTER
//     TO the source, but is not started.
//  2. Backlog: on the source, -inserts new rows in 100-row multi-row INSERTs
//     (one transaction each), then -updates single-row UPDATEs by random
//     primary key, 10 per transaction. The source's @@gtid_binlog_pos after
//     the backlog is the final position.
//  3. Raw INSERT: -raw-rows rows (default -inserts + -updates) of the same
//     shape are inserted into a fresh table on the regiond target in
//     1000-row autocommit statements on one connection. Then, as diagnostics
//     (-upserts, on by default), the same is timed in regiond's statement
//     form, INSERT … ON DUPLICATE KEY UPDATE, once for new rows and once for
//     the same keys again (every row a conflict). The table is dropped.
//  4. Native replication: START SLAVE on the native target, timed until its
//     @@gtid_slave_pos covers the final position (polled every 20 ms).
//  5. regiond: the pipeline (source/mysql → sink/mysql under pipeline.Run, in
//     this process, with the daemon's default settings) resumes from its
//     stored position, timed until the position it stores in the target
//     covers the final position (polled every 20 ms).
//  6. Verify: the bench table must hold the same rows on all three servers
//     (row count, sum of per-row CRC32 and XOR of per-row MD5 prefixes).
//
// The phases run one after the other, so they do not compete for the CPUs.
// Rates are rows/s (raw) and row changes/s (replication); the report, in
// Markdown, also shows the ratios regiond/native and regiond/raw against
// the targets (≥ 1.0× and ≥ 0.7×), each replication's rate over the
// backlog's inserts and over its updates, and the CPU time the source, the
// phase's target, this process and all other processes used during each
// phase. The machine may be shared: a phase during which other processes
// took more than a fifth of the CPUs is flagged NOISY. For the regiond phase
// it reports how full the queue between reader and sink was (full: the
// sink is the bottleneck), and can write a CPU profile (-cpuprofile) and an
// execution trace (-trace; e.g. go tool trace -pprof=net FILE shows where
// the sink waits for the target).
//
// With -engine postgres, the same run is made with three private
// PostgreSQL 15 servers (wal_level=logical) and the same backlog, written
// with the same statements:
//
//  1. Setup: the bench table (bigint, integer, varchar(120), char(60),
//     integer, timestamp(6)) is created in all three servers. Before the
//     backlog, the source gets CREATE PUBLICATION benchpub FOR TABLE bench
//     and the native target a subscription to it WITH (copy_data = false,
//     enabled = false), whose slot is thus created before the backlog; the
//     regiond pipeline runs once, briefly, so that it creates its
//     publication, its slot regiond_source_target and its checkpoint.
//  2. Backlog: as above. Inside the last insert transaction and inside the
//     last transaction, just before their COMMITs, the source's
//     pg_current_wal_insert_lsn() is read: every earlier commit ends at or
//     before it and that commit ends after it, so a replica has applied the
//     inserts (the backlog) once its applied commit end LSN is past it.
//  3. Raw rates on the regiond target, each into a fresh table: 1000-row
//     autocommit INSERTs (SQL text), and one COPY of the same rows (pgx
//     CopyFrom). Diagnostics (-upserts): sink/postgres's statement form,
//     INSERT … SELECT … FROM unnest(text arrays) ON CONFLICT DO UPDATE,
//     4096 rows a statement, for new rows and again for existing rows.
//  4. Native logical replication: ALTER SUBSCRIPTION benchsub ENABLE, timed
//     until the remote_lsn of the subscription's replication origin in the
//     native target (the end LSN of the last source commit it applied) is
//     past the backlog's end; then disabled again.
//  5. regiond: the pipeline (source/postgres → sink/postgres under
//     pipeline.Run, as the daemon wires two Postgres regions) resumes from
//     its stored position, timed until the LSN in its regiond_checkpoints
//     row is past the backlog's end.
//  6. Verify: count and MD5 over all rows in key order, on all three.
//
// CHECKPOINT is run in the servers a phase uses before it starts. The CPU
// time of a PostgreSQL server is its postmaster's and all its processes'
// (WAL senders, backends, workers). After each replication phase the report
// also notes how long the source's slot took to confirm the backlog. The
// report shows regiond/native for the whole backlog and for its inserts and
// updates parts (target ≥ 1.0× each), and regiond/raw INSERT and
// regiond/COPY.
//
// With -to kafka (and -engine mariadb), the backlog is written to one
// private MariaDB server and published by regiond (source/mysql →
// sink/kafka, as the daemon's "source->kafka" pipeline) to a kfake broker
// started in this process, timed until the position the pipeline saved in
// its state_dir covers the backlog (every message acknowledged). The topic is
// then read back, untimed, and must hold each change exactly once (by
// source.pos); those same messages are then sent by a raw kafka-go writer
// with regiond's settings (acks=all, murmur2 by key, same partition count)
// to a fresh topic of the same broker. The report gives both rates and
// regiond/raw (target ≥ 0.5×). The broker runs in this process, so its CPU
// time counts as the bench process's in both phases.
//
// Progress goes to stderr, the report to stdout. The servers are destroyed
// at the end, also after an error or Ctrl-C, unless -keep is given.
package main

import (
	"context"
	"database/sql"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	_ "github.com/go-sql-driver/mysql" // the "mysql" driver for the backlog writer

	"github.com/regiond/regiond/internal/mysqlconn"
	"github.com/regiond/regiond/internal/testenv"
	"github.com/regiond/regiond/sink/batch"
)

// Engines of -engine.
const (
	engineMariaDB  = "mariadb"
	enginePostgres = "postgres"
	engineMixed    = "mixed" // -mode verify only: one MariaDB and one PostgreSQL server
)

// Targets regiond should meet, as ratios of its rate to the baselines'.
const (
	targetVsNative = 1.0
	targetVsRaw    = 0.7
)

// options are the command-line flags.
type options struct {
	engine           string // engineMariaDB or enginePostgres
	to               string // "" (a database of the engine) or toKafka
	rounds           int    // -to kafka: measured rounds
	inserts, updates int
	rawRows          int
	nativeThreads    int
	keep             bool
	cpuProfile       string
	trace            string
	upserts          bool
	seed             uint64
	timeout          time.Duration
	verbose          bool
	remoteCheck      bool
	lanes            int
	mode             string // "replicate", "backfill" or "verify"
	rows             int    // -mode backfill: rows to copy
	chunk, parallel  int    // -mode backfill
	// -mode verify (bench/verify.go)
	verifyRows     int
	chunkRows      int
	verifyParallel int
	verifyRuns     int
}

func parseFlags() options {
	var o options
	flag.StringVar(&o.engine, "engine", engineMariaDB, "engine of all three servers: "+engineMariaDB+" (binlog → MariaDB) or "+enginePostgres+" (logical WAL → PostgreSQL)")
	flag.StringVar(&o.to, "to", "", "target: empty for a database of -engine, or "+toKafka+" (publish to an in-process kfake broker, against a raw kafka-go writer)")
	flag.IntVar(&o.rounds, "rounds", 5, "-to kafka: rounds of a regiond phase and a raw writer phase, judged by the median ratio")
	flag.IntVar(&o.inserts, "inserts", 200_000, "rows the backlog inserts, in 100-row transactions")
	flag.IntVar(&o.updates, "updates", 100_000, "single-row UPDATEs the backlog makes, in 10-row transactions")
	flag.IntVar(&o.rawRows, "raw-rows", 0, "rows the raw INSERT phase inserts (default -inserts + -updates)")
	flag.IntVar(&o.nativeThreads, "native-threads", 0, "slave_parallel_threads of the native replica (0: MariaDB's default, serial apply; MariaDB only)")
	flag.BoolVar(&o.keep, "keep", false, "keep the servers running and their directories at the end")
	flag.StringVar(&o.cpuProfile, "cpuprofile", "", "write a CPU profile of the regiond phase to this file")
	flag.StringVar(&o.trace, "trace", "", "write a runtime/trace of the regiond phase to this file")
	flag.BoolVar(&o.upserts, "upserts", true, "also time regiond's upsert statement form on the target (diagnostic baselines)")
	flag.Uint64Var(&o.seed, "seed", 1, "seed of the generated data")
	flag.DurationVar(&o.timeout, "timeout", time.Hour, "give up after this long")
	flag.BoolVar(&o.verbose, "v", false, "show the pipeline's debug logs")
	flag.IntVar(&o.lanes, "lanes", 0, "target connections regiond applies batches on at once (0: the daemon's default)")
	flag.BoolVar(&o.remoteCheck, "remote-check", true, "compare each apply_remote change with the target row it overwrites, as the daemon does (false: apply blindly, as before that check)")
	flag.StringVar(&o.mode, "mode", "replicate", "replicate (apply rate, see above), backfill (regiond backfill against the target's raw bulk load; see backfill.go) or verify (regiond verify against a full checksum scan; see verify.go)")
	flag.IntVar(&o.rows, "rows", 500_000, "-mode backfill: rows in the source table")
	flag.IntVar(&o.chunk, "chunk-size", 5000, "-mode backfill: rows per chunk")
	flag.IntVar(&o.parallel, "parallel", 4, "-mode backfill: chunks copied at once")
	flag.IntVar(&o.verifyRows, "verify-rows", 1_000_000, "-mode verify: rows in each of the two tables")
	flag.IntVar(&o.chunkRows, "chunk-rows", 10_000, "-mode verify: rows per verify chunk")
	flag.IntVar(&o.verifyParallel, "verify-parallel", 2, "-mode verify: chunks checksummed at once")
	flag.IntVar(&o.verifyRuns, "verify-runs", 3, "-mode verify: timed runs of each")
	flag.Parse()
	if o.rawRows == 0 {
		o.rawRows = o.inserts + o.updates
	}
	return o
}

func main() {
	opt := parseFlags()
	if flag.NArg() > 0 || opt.inserts < 1 || opt.updates < 0 || opt.rawRows < 1 || opt.nativeThreads < 0 || opt.rounds < 1 {
		fmt.Fprintln(os.Stderr, "bench: -inserts and -raw-rows must be positive, -updates and -native-threads not negative; no arguments")
		flag.Usage()
		os.Exit(2)
	}
	if opt.engine != engineMariaDB && opt.engine != enginePostgres && !(opt.engine == engineMixed && opt.mode == "verify") {
		fmt.Fprintf(os.Stderr, "bench: -engine must be %s or %s\n", engineMariaDB, enginePostgres)
		os.Exit(2)
	}
	if opt.engine == enginePostgres && opt.nativeThreads != 0 {
		fmt.Fprintln(os.Stderr, "bench: -native-threads is for MariaDB only (PostgreSQL 15 applies a subscription with one worker)")
		os.Exit(2)
	}
	runFn := run
	if opt.engine == enginePostgres {
		runFn = runPostgres
	}
	switch opt.to {
	case "":
	case toKafka:
		if opt.engine != engineMariaDB || opt.mode != "replicate" {
			fmt.Fprintln(os.Stderr, "bench: -to kafka publishes a MariaDB backlog; use -engine mariadb and -mode replicate")
			os.Exit(2)
		}
		runFn = runKafka
	default:
		fmt.Fprintf(os.Stderr, "bench: -to must be empty or %s\n", toKafka)
		os.Exit(2)
	}
	switch opt.mode {
	case "replicate":
	case "backfill":
		if opt.rows < 1 || opt.chunk < 1 || opt.parallel < 1 {
			fmt.Fprintln(os.Stderr, "bench: -rows, -chunk-size and -parallel must be positive")
			os.Exit(2)
		}
		runFn = runBackfillBench
	case "verify":
		runFn = runVerifyBench
	default:
		fmt.Fprintln(os.Stderr, "bench: -mode must be replicate, backfill or verify")
		os.Exit(2)
	}
	if err := runFn(opt); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

// server is one of the benchmark's MariaDB servers.
type server struct {
	role string
	srv  *testenv.Server
	db   *sql.DB // regiond's connection settings (internal/mysqlconn)
	pid  int
}

func (s *server) params() mysqlconn.Params {
	return mysqlconn.Params{Host: "127.0.0.1", Port: s.srv.Port, User: "root", Database: "app"}
}

// bench holds the state of one run.
type bench struct {
	opt     options
	began   time.Time
	logger  *slog.Logger // for the pipeline
	servers []*server    // every server started, for cleanup
	source  *server
	native  *server // target of native replication
	regiond *server // target of regiond

	startPos   string // source GTID state before the backlog
	midPos     string // source GTID state after the backlog's inserts
	final      string // source GTID state after the backlog
	txns       int    // source transactions in the backlog
	insertTxns int    // of which the inserts
	loadAvg    string // /proc/loadavg when the run began
}

// changes is the number of row changes in the backlog.
func (b *bench) changes() int { return b.opt.inserts + b.opt.updates }

// rules are the pipeline's conflict rules as the daemon wires them (the
// bench table is apply_remote), or nil without -remote-check.
func (o options) rules() *batch.Rules {
	if !o.remoteCheck {
		return nil
	}
	return &batch.Rules{Tables: map[string]batch.Rule{}, Pipeline: pipelineName, Origin: "source", Target: "target"}
}

// progress prints a progress line to stderr.
func (b *bench) progress(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "[%6.1fs] %s\n", time.Since(b.began).Seconds(), fmt.Sprintf(format, args...))
}

// phase is the measurement of one timed phase.
type phase struct {
	name  string
	unit  string // what n counts: "rows" or "changes"
	n     int
	d     time.Duration
	split time.Duration // replication: until the backlog's inserts were applied
	cpu   cpuTimes
	note  string // diagnostics for the report
}

func (p phase) rate() float64 { return float64(p.n) / p.d.Seconds() }

// splitRates are a replication phase's rates over the backlog's inserts and
// over its updates; "–" for other phases.
func (p phase) splitRates(o options) (inserts, updates string) {
	ins, upd, ok := p.splitRateValues(o)
	if !ok {
		return "–", "–"
	}
	return fmt.Sprintf("%.0f", ins), fmt.Sprintf("%.0f", upd)
}

// splitRateValues are the numbers behind splitRates; ok is false for a
// phase without a split.
func (p phase) splitRateValues(o options) (inserts, updates float64, ok bool) {
	if p.split <= 0 || p.split >= p.d {
		return 0, 0, false
	}
	return float64(o.inserts) / p.split.Seconds(), float64(o.updates) / (p.d - p.split).Seconds(), true
}

// noisyShare is the share of the machine's CPU capacity that other
// processes may take during a phase before its numbers are flagged as
// unreliable.
const noisyShare = 0.2

// othersShare is the share of the machine's CPU capacity that other
// processes used during the phase.
func (p phase) othersShare() float64 {
	return p.cpu.others().Seconds() / (float64(runtime.NumCPU()) * p.d.Seconds())
}

// noisy reports whether other processes disturbed the phase.
func (p phase) noisy() bool { return p.othersShare() > noisyShare }

// summary is the phase's progress line.
func (p phase) summary() string {
	s := fmt.Sprintf("%s: %d %s in %.2fs = %.0f %s/s (CPU s: source %.1f, target %.1f, bench %.1f, other processes %.1f)",
		p.name, p.n, p.unit, p.d.Seconds(), p.rate(), p.unit,
		p.cpu.source.Seconds(), p.cpu.target.Seconds(), p.cpu.self.Seconds(), p.cpu.others().Seconds())
	if p.noisy() {
		s += fmt.Sprintf(" NOISY: other processes took %.0f%% of the CPUs", 100*p.othersShare())
	}
	return s
}

// runContext ends on SIGINT/SIGTERM or after opt.timeout.
func runContext(opt options) (context.Context, func()) {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	ctx, cancel := context.WithTimeout(ctx, opt.timeout)
	return ctx, func() { cancel(); stop() }
}

// runLogger logs progress details to stderr (debug with -v).
func runLogger(opt options) *slog.Logger {
	level := slog.LevelInfo
	if opt.verbose {
		level = slog.LevelDebug
	}
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
}

// loadAverage is the machine's 1, 5 and 15 minute load averages.
func loadAverage() string {
	data, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return ""
	}
	f := strings.Fields(string(data))
	return strings.Join(f[:min(3, len(f))], " ")
}

// engineBench is one engine's benchmark: its servers and its phases.
type engineBench interface {
	// setupSteps start the servers, create the table, set both replicas up
	// before the backlog and write the backlog, in order.
	setupSteps() []func(context.Context) error
	// measure runs the timed phases, verifies the copies and reports.
	measure(ctx context.Context) error
	// cleanup stops and removes the servers (unless -keep).
	cleanup() error
}

// drive runs b until it is done, interrupted or timed out, and always
// cleans up.
func drive(opt options, b engineBench) (err error) {
	ctx, done := runContext(opt)
	defer done()
	defer func() {
		if cerr := b.cleanup(); cerr != nil {
			err = errors.Join(err, cerr)
		}
	}()
	defer func() {
		// An interrupt shows up as a context error deep inside; say so.
		if err != nil && ctx.Err() != nil {
			err = fmt.Errorf("%w (%w)", context.Cause(ctx), err)
		}
	}()
	for _, step := range b.setupSteps() {
		if err := step(ctx); err != nil {
			return err
		}
	}
	return b.measure(ctx)
}

func run(opt options) error {
	return drive(opt, &bench{opt: opt, began: time.Now(), logger: runLogger(opt), loadAvg: loadAverage()})
}

func (b *bench) setupSteps() []func(context.Context) error {
	return []func(context.Context) error{b.startServers, b.createTables, b.prepareReplicas, b.writeBacklog}
}

func (b *bench) measure(ctx context.Context) error {
	opt := b.opt
	raws, err := b.runRaw(ctx)
	if err != nil {
		return fmt.Errorf("raw INSERT phase: %w", err)
	}
	raw, diags := raws[0], raws[1:]

	b.progress("native replication: START SLAVE")
	native, err := b.runNative(ctx)
	if err != nil {
		return fmt.Errorf("native replication phase: %w", err)
	}
	b.progress("%s", native.summary())

	b.progress("regiond: pipeline resumes from %s", b.startPos)
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
	return b.report(ctx, os.Stdout, raw, native, reg, diags)
}

// runRaw measures the regiond target's raw write rates on a fresh table,
// one autocommit statement of rawStmtRows rows at a time, on one connection:
// first plain multi-row INSERTs of -raw-rows new rows (the baseline), then,
// unless -upserts=false, regiond's own statement form (INSERT … ON
// DUPLICATE KEY UPDATE with interpolated parameters) for the same number of
// new rows and then for the same keys again with new values. The upserts
// are diagnostics: they show what the target's SQL layer costs for the
// statements regiond sends. Statements are built before each clock starts;
// the table is dropped at the end.
func (b *bench) runRaw(ctx context.Context) ([]phase, error) {
	conn, err := b.regiond.db.Conn(ctx)
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	n := b.opt.rawRows
	g := newGen(b.opt.seed + 1)
	rows := g.rows(1, n)
	type step struct {
		name  string
		stmts func() []stmt
		reset bool // start from an empty table
	}
	steps := []step{{fmt.Sprintf("raw INSERT, %d-row statements", rawStmtRows),
		func() []stmt { return insertStmts(mariadbSQL, rawTable, rows, rawStmtRows) }, true}}
	if b.opt.upserts {
		steps = append(steps,
			step{"diagnostic: regiond's upsert form, new rows",
				func() []stmt { return upsertStmts(rawTable, rows, rawStmtRows) }, true},
			step{"diagnostic: regiond's upsert form, existing rows",
				func() []stmt { return upsertStmts(rawTable, g.rows(1, n), rawStmtRows) }, false})
	}
	var phases []phase
	for _, st := range steps {
		if st.reset {
			if err := resetRawTable(ctx, conn); err != nil {
				return nil, err
			}
		}
		stmts := st.stmts()
		b.progress("%s: %d rows into %s on the regiond target", st.name, n, rawTable)
		cpu0 := b.cpuNow(b.regiond)
		start := time.Now()
		if err := execAll(ctx, conn, stmts); err != nil {
			return nil, fmt.Errorf("%s: %w", st.name, err)
		}
		p := phase{name: st.name, unit: "rows", n: n, d: time.Since(start),
			cpu: b.cpuNow(b.regiond).sub(cpu0)}
		if got, err := countRows(ctx, conn, rawTable); err != nil {
			return nil, err
		} else if got != n {
			return nil, fmt.Errorf("%s: %s holds %d rows, want %d", st.name, rawTable, got, n)
		}
		b.progress("%s", p.summary())
		phases = append(phases, p)
	}
	if _, err := conn.ExecContext(ctx, "DROP TABLE `"+rawTable+"`"); err != nil {
		return nil, err
	}
	return phases, nil
}

// startServers starts the three servers at once, each in a new directory.
func (b *bench) startServers(ctx context.Context) error {
	b.source = &server{role: "source"}
	b.native = &server{role: "native target"}
	b.regiond = &server{role: "regiond target"}
	b.servers = []*server{b.source, b.native, b.regiond}
	b.progress("starting 3 MariaDB servers")
	errs := make([]error, len(b.servers))
	var wg sync.WaitGroup
	for i, s := range b.servers {
		wg.Go(func() {
			dir, err := os.MkdirTemp("", "regiond-bench-")
			if err != nil {
				errs[i] = err
				return
			}
			// Known before the start, so that cleanup covers a failed start.
			s.srv = &testenv.Server{Engine: testenv.EngineMySQL, Dir: dir, ServerID: i + 1}
			srv, err := testenv.StartMariaDB(ctx, dir, i+1)
			if err != nil {
				errs[i] = fmt.Errorf("%s: %w", s.role, err)
				return
			}
			s.srv = srv
			if s.db, err = mysqlconn.Open(s.params()); err != nil {
				errs[i] = err
				return
			}
			if pid, err := os.ReadFile(filepath.Join(dir, "mysqld.pid")); err == nil {
				s.pid, _ = strconv.Atoi(strings.TrimSpace(string(pid)))
			}
		})
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return err
	}
	for _, s := range b.servers {
		b.progress("%-14s server_id=%d port=%d dir=%s", s.role, s.srv.ServerID, s.srv.Port, s.srv.Dir)
	}
	return nil
}

// createTables creates the bench table on the source (logged: its GTID is
// the last before the backlog) and on both targets, unlogged there so that
// the targets' own binlogs stay empty (a GTID of the native target's own
// would conflict with the gtid_slave_pos it is given).
func (b *bench) createTables(ctx context.Context) error {
	if _, err := b.source.db.ExecContext(ctx, createBench); err != nil {
		return fmt.Errorf("source: %w", err)
	}
	for _, s := range []*server{b.native, b.regiond} {
		conn, err := s.db.Conn(ctx)
		if err != nil {
			return fmt.Errorf("%s: %w", s.role, err)
		}
		_, err = conn.ExecContext(ctx, "SET SESSION sql_log_bin = 0")
		if err == nil {
			_, err = conn.ExecContext(ctx, createBench)
		}
		if err == nil {
			_, err = conn.ExecContext(ctx, "SET SESSION sql_log_bin = 1")
		}
		conn.Close()
		if err != nil {
			return fmt.Errorf("%s: %w", s.role, err)
		}
	}
	return nil
}

// prepareReplicas lets regiond store its start position and points the
// native replica at the same position: both start after the CREATE TABLE.
func (b *bench) prepareReplicas(ctx context.Context) error {
	pos, err := gtidBinlogPos(ctx, b.source.db)
	if err != nil {
		return fmt.Errorf("source: %w", err)
	}
	b.startPos = pos
	b.progress("regiond: first start, to store its start position")
	stored, err := b.initRegiond(ctx)
	if err != nil {
		return err
	}
	if stored != pos {
		return fmt.Errorf("regiond stored start position %q, but the source is at %q", stored, pos)
	}
	b.progress("regiond and native replica both start after %s", pos)
	return b.setupNative(ctx, pos)
}

// writeBacklog writes the backlog on the source and records the source's
// position after its inserts and at its end.
func (b *bench) writeBacklog(ctx context.Context) error {
	b.progress("backlog: %d inserts (%d-row transactions), %d updates (%d-row transactions)",
		b.opt.inserts, insertTxnRows, b.opt.updates, updateTxnStmts)
	db, err := sql.Open("mysql", b.source.srv.DriverDSN("app")) // multiStatements=true
	if err != nil {
		return err
	}
	defer db.Close()
	conn, err := db.Conn(ctx)
	if err != nil {
		return fmt.Errorf("source: %w", err)
	}
	defer conn.Close()
	start := time.Now()
	g := newGen(b.opt.seed)
	b.insertTxns, err = writeInserts(ctx, sqlExec(conn), mariadbSQL, g, b.opt.inserts, b.progress)
	if err != nil {
		return fmt.Errorf("source: %w", err)
	}
	if b.midPos, err = gtidBinlogPos(ctx, b.source.db); err != nil {
		return fmt.Errorf("source: %w", err)
	}
	updateTxns, err := writeUpdates(ctx, sqlExec(conn), mariadbSQL, g, b.opt.inserts, b.opt.updates, b.progress)
	if err != nil {
		return fmt.Errorf("source: %w", err)
	}
	b.txns = b.insertTxns + updateTxns
	if b.final, err = gtidBinlogPos(ctx, b.source.db); err != nil {
		return fmt.Errorf("source: %w", err)
	}
	if got := seqSum(b.final) - seqSum(b.startPos); got != int64(b.txns) {
		return fmt.Errorf("source: the binlog gained %d transactions, want %d (%s → %s)", got, b.txns, b.startPos, b.final)
	}
	b.progress("backlog: %d changes in %d transactions written in %.1fs; source at %s (%s after the inserts)",
		b.changes(), b.txns, time.Since(start).Seconds(), b.final, b.midPos)
	return nil
}

// gtidBinlogPos returns the server's @@gtid_binlog_pos.
func gtidBinlogPos(ctx context.Context, db *sql.DB) (string, error) {
	var s string
	err := db.QueryRowContext(ctx, "SELECT @@GLOBAL.gtid_binlog_pos").Scan(&s)
	return strings.ReplaceAll(s, "\n", ""), err
}

// verify checks that the bench table has the same content everywhere.
func (b *bench) verify(ctx context.Context) error {
	var want tableSum
	for i, s := range []*server{b.source, b.native, b.regiond} {
		sum, err := checksum(ctx, s.db)
		if err != nil {
			return fmt.Errorf("verify: %s: %w", s.role, err)
		}
		b.progress("verify: %-14s %s", s.role, sum)
		if i == 0 {
			want = sum
			if sum.Rows != int64(b.opt.inserts) {
				return fmt.Errorf("verify: the source holds %d rows, want %d", sum.Rows, b.opt.inserts)
			}
			continue
		}
		if sum != want {
			return fmt.Errorf("verify: the %s's bench table differs from the source's: %s, source %s", s.role, sum, want)
		}
	}
	b.progress("verify: all three tables are identical")
	return nil
}

// report prints the results as Markdown.
func (b *bench) report(ctx context.Context, w io.Writer, raw, native, reg phase, diags []phase) error {
	var version string
	if err := b.source.db.QueryRowContext(ctx, "SELECT VERSION()").Scan(&version); err != nil {
		return err
	}
	fmt.Fprintf(w, "\n## regiond benchmark, %s\n\n", time.Now().UTC().Format("2006-01-02 15:04 UTC"))
	fmt.Fprintf(w, "- machine: %d CPUs (%s), GOMAXPROCS %d, %s %s/%s, MariaDB %s; load average at the start: %s\n",
		runtime.NumCPU(), cpuModel(), runtime.GOMAXPROCS(0), runtime.Version(), runtime.GOOS, runtime.GOARCH, version, b.loadAvg)
	fmt.Fprintf(w, "- backlog: %d inserts in %d-row transactions + %d single-row updates in %d-statement transactions = %d changes in %d source transactions\n\n",
		b.opt.inserts, insertTxnRows, b.opt.updates, updateTxnStmts, b.changes(), b.txns)
	fmt.Fprintln(w, "| path | count | seconds | rate | inserts part /s | updates part /s | CPU s: source / target / bench process / other processes |")
	fmt.Fprintln(w, "|---|---:|---:|---:|---:|---:|---|")
	for _, p := range append([]phase{raw, native, reg}, diags...) {
		ins, upd := p.splitRates(b.opt)
		name := p.name
		if p.noisy() {
			name += " (NOISY)"
		}
		fmt.Fprintf(w, "| %s | %d %s | %.2f | %.0f %s/s | %s | %s | %.1f / %.1f / %.1f / %.1f |\n",
			name, p.n, p.unit, p.d.Seconds(), p.rate(), p.unit, ins, upd,
			p.cpu.source.Seconds(), p.cpu.target.Seconds(), p.cpu.self.Seconds(), p.cpu.others().Seconds())
	}
	fmt.Fprintf(w, "\n(inserts part / updates part: the replication rate until the backlog's inserts were applied, and after. CPU s: CPU time used during the phase by the source server, the phase's target server, this process — regiond's reader and applier in the regiond phase — and by every other process on the machine; the machine has %d CPUs, so %d CPU s per second of phase.)\n\n",
		runtime.NumCPU(), runtime.NumCPU())
	ratio := func(name string, r, target float64) {
		verdict := "met"
		if r < target {
			verdict = "MISSED"
		}
		fmt.Fprintf(w, "- %s: %.2f× (target ≥ %.1f×: %s)\n", name, r, target, verdict)
	}
	for _, p := range []phase{raw, native, reg} {
		if p.note != "" {
			fmt.Fprintf(w, "- %s: %s\n", p.name, p.note)
		}
	}
	for _, p := range append([]phase{raw, native, reg}, diags...) {
		if p.noisy() {
			fmt.Fprintf(w, "- WARNING: other processes took %.0f%% of the CPUs during %q: its numbers are unreliable; rerun on a quiet machine\n",
				100*p.othersShare(), p.name)
		}
	}
	ratio("regiond / native replication", reg.rate()/native.rate(), targetVsNative)
	ratio("regiond / raw INSERT", reg.rate()/raw.rate(), targetVsRaw)
	return nil
}

// cpuModel returns the first "model name" of /proc/cpuinfo, or "unknown CPU".
func cpuModel() string {
	data, err := os.ReadFile("/proc/cpuinfo")
	if err != nil {
		return "unknown CPU"
	}
	for line := range strings.Lines(string(data)) {
		if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
			return strings.TrimSpace(v)
		}
	}
	return "unknown CPU"
}

// cleanup closes the connections and destroys the servers, or with -keep
// says where they are.
func (b *bench) cleanup() error {
	var errs []error
	for _, s := range b.servers {
		if s.db != nil {
			s.db.Close()
		}
	}
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
