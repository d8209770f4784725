package main

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"runtime/pprof"
	"runtime/trace"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/regiond/regiond/checkpoint"
	"github.com/regiond/regiond/internal/mysqlconn"
	"github.com/regiond/regiond/pipeline"
	mysqlsink "github.com/regiond/regiond/sink/mysql"
	"github.com/regiond/regiond/source"
	mysqlsource "github.com/regiond/regiond/source/mysql"
)

const (
	// pollEvery is how often a replication phase checks whether its target
	// has caught up with the source.
	pollEvery = 20 * time.Millisecond
	// pipelineName is the regiond pipeline under test; its reader presents
	// readerServerID to the source.
	pipelineName   = "source->target"
	readerServerID = 100
)

// ---------------------------------------------------------------- native

// setupNative points the native target at the source, starting after pos
// (the source's GTID state once the table exists), without starting it.
func (b *bench) setupNative(ctx context.Context, pos string) error {
	db := b.native.db
	for _, q := range []string{
		"SET GLOBAL slave_parallel_threads = " + strconv.Itoa(b.opt.nativeThreads),
		"SET GLOBAL gtid_slave_pos = '" + pos + "'",
		fmt.Sprintf("CHANGE MASTER TO MASTER_HOST='127.0.0.1', MASTER_PORT=%d, MASTER_USER='root', MASTER_PASSWORD='', MASTER_USE_GTID=slave_pos",
			b.source.srv.Port),
	} {
		if _, err := db.ExecContext(ctx, q); err != nil {
			return fmt.Errorf("native target: %s: %w", q, err)
		}
	}
	return nil
}

// runNative starts the native replica and times it until its
// @@gtid_slave_pos covers the source's final position.
func (b *bench) runNative(ctx context.Context) (phase, error) {
	db := b.native.db
	cpu0 := b.cpuNow(b.native)
	start := time.Now()
	if _, err := db.ExecContext(ctx, "START SLAVE"); err != nil {
		return phase{}, fmt.Errorf("native target: START SLAVE: %w", err)
	}
	mid, err := b.waitCaughtUp(ctx, "native",
		func(ctx context.Context) (string, error) {
			var s string
			err := db.QueryRowContext(ctx, "SELECT @@GLOBAL.gtid_slave_pos").Scan(&s)
			return s, err
		},
		func(ctx context.Context) error { return slaveError(ctx, db) })
	d := time.Since(start)
	cpu := b.cpuNow(b.native).sub(cpu0)
	if err != nil {
		return phase{}, err
	}
	if err := slaveError(ctx, db); err != nil {
		return phase{}, err
	}
	if _, err := db.ExecContext(ctx, "STOP SLAVE"); err != nil {
		return phase{}, fmt.Errorf("native target: STOP SLAVE: %w", err)
	}
	name := "native replication"
	if b.opt.nativeThreads > 0 {
		name += fmt.Sprintf(" (slave_parallel_threads=%d)", b.opt.nativeThreads)
	}
	return phase{name: name, unit: "changes", n: b.changes(), d: d, split: mid.Sub(start), cpu: cpu}, nil
}

// slaveError returns the native replica's I/O or SQL thread error, if any.
func slaveError(ctx context.Context, db *sql.DB) error {
	st, err := showSlaveStatus(ctx, db)
	if err != nil {
		return fmt.Errorf("native target: SHOW SLAVE STATUS: %w", err)
	}
	if st == nil {
		return errors.New("native target: SHOW SLAVE STATUS is empty: replication is not configured")
	}
	for _, t := range []string{"IO", "SQL"} {
		if n := st["Last_"+t+"_Errno"]; n != "" && n != "0" {
			return fmt.Errorf("native target: replication %s thread error %s: %s", t, n, st["Last_"+t+"_Error"])
		}
	}
	return nil
}

// showSlaveStatus returns SHOW SLAVE STATUS as column → value, or nil when
// replication is not configured.
func showSlaveStatus(ctx context.Context, db *sql.DB) (map[string]string, error) {
	rows, err := db.QueryContext(ctx, "SHOW SLAVE STATUS")
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	cols, err := rows.Columns()
	if err != nil {
		return nil, err
	}
	if !rows.Next() {
		return nil, rows.Err()
	}
	vals := make([]sql.NullString, len(cols))
	ptrs := make([]any, len(cols))
	for i := range vals {
		ptrs[i] = &vals[i]
	}
	if err := rows.Scan(ptrs...); err != nil {
		return nil, err
	}
	st := make(map[string]string, len(cols))
	for i, c := range cols {
		st[c] = vals[i].String
	}
	return st, rows.Err()
}

// --------------------------------------------------------------- regiond

// queueProbe watches the channel between the pipeline's reader and its
// sink, to tell which side is the bottleneck: a queue that is mostly full
// means the sink (applier + target) cannot keep up with the reader; one
// that is mostly empty means the reader (source + decoding) is the slower.
// It only samples len(), so it costs the pipeline nothing.
type queueProbe struct {
	in                        atomic.Pointer[<-chan source.Txn]
	samples, sum, full, empty int
	capacity                  int
}

// probeSink is a pipeline.Sink that hands the sink's input channel to a
// queueProbe and otherwise is the wrapped sink.
type probeSink struct {
	pipeline.Sink
	probe *queueProbe
}

func (s probeSink) Apply(ctx context.Context, in <-chan source.Txn, durable func(pos checkpoint.Position, stored bool)) error {
	s.probe.in.Store(&in)
	return s.Sink.Apply(ctx, in, durable)
}

// sample records the queue's current length (not before the sink started).
func (q *queueProbe) sample() {
	in := q.in.Load()
	if in == nil {
		return
	}
	n, c := len(*in), cap(*in)
	q.samples++
	q.sum += n
	q.capacity = c
	if n == c {
		q.full++
	}
	if n == 0 {
		q.empty++
	}
}

func (q *queueProbe) String() string {
	if q.samples == 0 || q.capacity == 0 {
		return "no samples"
	}
	pct := func(n int) float64 { return 100 * float64(n) / float64(q.samples) }
	return fmt.Sprintf("mean %.0f of %d transactions queued; full in %.0f%%, empty in %.0f%% of %d samples",
		float64(q.sum)/float64(q.samples), q.capacity, pct(q.full), pct(q.empty), q.samples)
}

// assemble makes the regiond phase's pipeline of a reader and an applier;
// probe, if not nil, watches the queue between them. closeFn releases both.
func assemble(reader interface {
	source.Source
	Close() error
}, applier interface {
	pipeline.Sink
	Close() error
}, probe *queueProbe, logger *slog.Logger) (p *pipeline.Pipeline, closeFn func()) {
	var sink pipeline.Sink = applier
	if probe != nil {
		sink = probeSink{Sink: applier, probe: probe}
	}
	p = &pipeline.Pipeline{Name: pipelineName, Source: reader, Sink: sink, Logger: logger}
	return p, func() { reader.Close(); applier.Close() }
}

// newPipeline wires a pipeline from the source into the regiond target with
// the same packages and settings the daemon uses; probe, if not nil,
// watches its reader→sink queue. closeFn releases its connections. (No
// state_dir: it only matters for skipped transactions, and there are none.)
func (b *bench) newPipeline(probe *queueProbe) (p *pipeline.Pipeline, closeFn func(), err error) {
	src, tgt := b.source.params(), b.regiond.params()
	reader, err := mysqlsource.New(mysqlsource.Config{
		Region:   "source",
		Conn:     src,
		ServerID: readerServerID,
		Tables:   map[string]bool{benchTable: true},
	}, b.logger)
	if err != nil {
		return nil, nil, err
	}
	applier, err := mysqlsink.New(mysqlsink.Config{
		Pipeline: pipelineName,
		Source:   "source",
		Target:   "target",
		Conn:     tgt,
		Tables:   []string{benchTable},
		Rules:    b.opt.rules(),
		Lanes:    b.opt.lanes,
	}, b.logger)
	if err != nil {
		reader.Close()
		return nil, nil, err
	}
	p, closeFn = assemble(reader, applier, probe, b.logger)
	return p, closeFn, nil
}

// storedPosition reads the pipeline's position from the regiond target
// ("" while there is no checkpoint row).
func (b *bench) storedPosition(ctx context.Context) (string, error) {
	var pos string
	err := b.regiond.db.QueryRowContext(ctx,
		"SELECT `position` FROM `"+mysqlsink.CheckpointTable+"` WHERE `pipeline` = ?", pipelineName).Scan(&pos)
	if errors.Is(err, sql.ErrNoRows) || mysqlconn.ErrorNumber(err) == 1146 { // no row, no table yet
		return "", nil
	}
	return pos, err
}

// initRegiond runs the pipeline once until it has created its checkpoint
// table in the regiond target and stored its starting position (the
// source's current position), then stops it. It returns that position.
func (b *bench) initRegiond(ctx context.Context) (string, error) {
	p, closeP, err := b.newPipeline(nil)
	if err != nil {
		return "", err
	}
	defer closeP()
	return firstPosition(ctx, p, b.storedPosition)
}

// firstPosition runs p until stored returns a position (not the zero
// value), then stops it and returns that position.
func firstPosition[P comparable](ctx context.Context, p *pipeline.Pipeline, stored func(context.Context) (P, error)) (P, error) {
	var none P
	pctx, cancel := context.WithCancel(ctx)
	var runErr error
	stopped := make(chan struct{})
	go func() { runErr = p.Run(pctx); close(stopped) }()
	defer func() { cancel(); <-stopped }()

	deadline := time.Now().Add(time.Minute)
	for {
		pos, err := stored(ctx)
		if err != nil {
			return none, fmt.Errorf("regiond target: read checkpoint: %w", err)
		}
		if pos != none {
			return pos, nil
		}
		select {
		case <-stopped:
			return none, fmt.Errorf("regiond pipeline stopped before storing its position: %v", runErr)
		case <-ctx.Done():
			return none, ctx.Err()
		case <-time.After(pollEvery):
		}
		if time.Now().After(deadline) {
			return none, fmt.Errorf("regiond pipeline stored no position within a minute (state %s: %s)", p.Status().State, p.Status().LastError)
		}
	}
}

// runRegiond runs the pipeline from its stored position and times it until
// the position stored in the target covers the source's final position.
// With -cpuprofile, this phase (and only this one) is CPU-profiled; with
// -trace, it is traced with runtime/trace.
func (b *bench) runRegiond(ctx context.Context) (ph phase, err error) {
	probe := &queueProbe{}
	p, closeP, err := b.newPipeline(probe)
	if err != nil {
		return phase{}, err
	}
	defer closeP()
	if b.opt.cpuProfile != "" {
		f, err := os.Create(b.opt.cpuProfile)
		if err != nil {
			return phase{}, err
		}
		defer func() {
			if cerr := f.Close(); cerr != nil && err == nil {
				err = cerr
			}
		}()
		if err := pprof.StartCPUProfile(f); err != nil {
			return phase{}, err
		}
		defer pprof.StopCPUProfile() // after an error; normally stopped below
	}
	if b.opt.trace != "" {
		f, err := os.Create(b.opt.trace)
		if err != nil {
			return phase{}, err
		}
		defer func() {
			if cerr := f.Close(); cerr != nil && err == nil {
				err = cerr
			}
		}()
		if err := trace.Start(f); err != nil {
			return phase{}, err
		}
		defer trace.Stop() // after an error; normally stopped below
	}

	pctx, cancel := context.WithCancel(ctx)
	var runErr error
	stopped := make(chan struct{})
	cpu0 := b.cpuNow(b.regiond)
	start := time.Now()
	go func() { runErr = p.Run(pctx); close(stopped) }()
	defer func() { cancel(); <-stopped }()
	lastRetry := ""
	pos := func(ctx context.Context) (string, error) {
		probe.sample()
		return b.storedPosition(ctx)
	}
	mid, err := b.waitCaughtUp(ctx, "regiond", pos, func(context.Context) error {
		select {
		case <-stopped:
			return fmt.Errorf("regiond pipeline stopped: %v", runErr)
		default:
		}
		if st := p.Status(); st.State == pipeline.Retrying && st.LastError != lastRetry {
			lastRetry = st.LastError
			b.progress("regiond: WARNING: pipeline is retrying after: %s", st.LastError)
		}
		return nil
	})
	d := time.Since(start)
	cpu := b.cpuNow(b.regiond).sub(cpu0)
	pprof.StopCPUProfile()
	trace.Stop()
	if err != nil {
		return phase{}, err
	}
	b.progress("regiond: reader→sink queue: %s", probe)
	if st := p.Status(); st.Failures > 0 || lastRetry != "" {
		b.progress("regiond: WARNING: the pipeline failed and retried during the measurement (last error: %s)", lastRetry)
	}
	return phase{name: "regiond", unit: "changes", n: b.changes(), d: d, split: mid.Sub(start), cpu: cpu, note: "reader→sink queue: " + probe.String()}, nil
}

// ------------------------------------------------------------ catching up

// waitCaughtUp polls pos every pollEvery until the GTID state it returns
// covers b.final, and returns when it first covered b.midPos (the end of the
// backlog's inserts). Every progressEvery it prints progress and calls
// check, whose error ends the wait.
func (b *bench) waitCaughtUp(ctx context.Context, name string, pos func(context.Context) (string, error), check func(context.Context) error) (mid time.Time, err error) {
	final, err := checkpoint.ParseGTID("mariadb", b.final)
	if err != nil {
		return mid, err
	}
	midPos, err := checkpoint.ParseGTID("mariadb", b.midPos)
	if err != nil {
		return mid, err
	}
	last := time.Now()
	tick := time.NewTicker(pollEvery)
	defer tick.Stop()
	for {
		s, err := pos(ctx)
		if err != nil {
			return mid, fmt.Errorf("%s: read position: %w", name, err)
		}
		s = strings.ReplaceAll(s, "\n", "")
		if s != "" {
			cur, err := checkpoint.ParseGTID("mariadb", s)
			if err != nil {
				return mid, fmt.Errorf("%s: %w", name, err)
			}
			if mid.IsZero() && cur.Contains(midPos) {
				mid = time.Now()
			}
			if cur.Contains(final) {
				return mid, nil
			}
		}
		if time.Since(last) >= progressEvery {
			last = time.Now()
			if err := check(ctx); err != nil {
				return mid, err
			}
			done := seqSum(s) - seqSum(b.startPos)
			all := seqSum(b.final) - seqSum(b.startPos)
			b.progress("%s: %d/%d source transactions applied (position %s)", name, done, all, s)
		}
		select {
		case <-ctx.Done():
			return mid, ctx.Err()
		case <-tick.C:
		}
	}
}

// seqSum adds up the sequence numbers of a MariaDB GTID state
// ("0-1-42,1-2-7"): with one source, the number of its transactions.
func seqSum(s string) int64 {
	var n int64
	for _, g := range strings.Split(s, ",") {
		g = strings.TrimSpace(g)
		if i := strings.LastIndexByte(g, '-'); i >= 0 {
			v, _ := strconv.ParseInt(g[i+1:], 10, 64)
			n += v
		}
	}
	return n
}

// ------------------------------------------------------------- CPU time

// cpuTimes is CPU time (user + system) used by the processes of a phase:
// the source server, the phase's target server and this process (which
// runs regiond's reader and applier in the regiond phase, and the client
// in the raw INSERT phase), and by the whole machine. The machine is
// shared: what the machine used beyond those three was taken by other
// processes, and is a measure of how noisy the phase's numbers are.
type cpuTimes struct {
	source, target, self, machine time.Duration
	// walSenders is the CPU time of each of the source's WAL senders
	// running when sampled, by process ID (PostgreSQL only).
	walSenders map[int]time.Duration
}

// sub returns the CPU time used between o and c. A WAL sender counts from
// 0 when it was not running at o, and not at all when it has ended by c.
func (c cpuTimes) sub(o cpuTimes) cpuTimes {
	d := cpuTimes{c.source - o.source, c.target - o.target, c.self - o.self, c.machine - o.machine, nil}
	for pid, t := range c.walSenders {
		if d.walSenders == nil {
			d.walSenders = map[int]time.Duration{}
		}
		d.walSenders[pid] = t - o.walSenders[pid]
	}
	return d
}

// walSender is the CPU time of the WAL senders.
func (c cpuTimes) walSender() time.Duration {
	var all time.Duration
	for _, t := range c.walSenders {
		all += t
	}
	return all
}

// others is the CPU time used by processes other than the phase's own.
func (c cpuTimes) others() time.Duration {
	return max(0, c.machine-c.source-c.target-c.self)
}

// cpuNow samples the CPU time used so far by the source, target, this
// process and the machine. Values that cannot be read are 0.
func (b *bench) cpuNow(target *server) cpuTimes {
	var ru syscall.Rusage
	var self time.Duration
	if syscall.Getrusage(syscall.RUSAGE_SELF, &ru) == nil {
		self = time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
	}
	return cpuTimes{source: procCPU(b.source.pid), target: procCPU(target.pid), self: self, machine: machineCPU()}
}

// clockTicks is USER_HZ, the unit of /proc CPU times on Linux.
const clockTicks = 100

// machineCPU returns the busy time of all CPUs from /proc/stat, or 0.
func machineCPU() time.Duration {
	data, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0
	}
	line, _, _ := strings.Cut(string(data), "\n")
	f := strings.Fields(line) // cpu user nice system idle iowait irq softirq steal ...
	if len(f) < 9 || f[0] != "cpu" {
		return 0
	}
	var busy int64
	for _, i := range []int{1, 2, 3, 6, 7, 8} {
		v, _ := strconv.ParseInt(f[i], 10, 64)
		busy += v
	}
	return time.Duration(busy) * time.Second / clockTicks
}

// procCPU returns utime+stime of process pid from /proc (Linux), or 0.
func procCPU(pid int) time.Duration {
	if pid <= 0 {
		return 0
	}
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	s := string(data)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return 0
	}
	// After "pid (comm) ": state is field 3, utime 14, stime 15.
	f := strings.Fields(s[i+1:])
	if len(f) < 13 {
		return 0
	}
	ut, _ := strconv.ParseInt(f[11], 10, 64)
	st, _ := strconv.ParseInt(f[12], 10, 64)
	return time.Duration(ut+st) * time.Second / clockTicks
}
