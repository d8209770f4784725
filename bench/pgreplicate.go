package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"runtime/pprof"
	"runtime/trace"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/regiond/regiond/checkpoint"
	"github.com/regiond/regiond/internal/pgconn"
	"github.com/regiond/regiond/pipeline"
	pgsink "github.com/regiond/regiond/sink/postgres"
	pgsource "github.com/regiond/regiond/source/postgres"
)

// regiondSlot is the regiond pipeline's replication slot on the source, as
// the daemon names it for regions "source" and "target".
var regiondSlot = pgsource.SlotName("source", "target")

// slotConfirmWait bounds how long a replication phase waits, after its
// clock stopped, for the source's slot to confirm the whole backlog.
const slotConfirmWait = 30 * time.Second

// ---------------------------------------------------------------- native

// runNative enables the subscription and times it until its apply worker
// has committed the backlog's last transaction: until the remote_lsn of the
// subscription's replication origin in the native target (the end LSN of the
// last source commit applied, set by the commit that applies it) is past
// finalLSN. The subscription is disabled again at the end.
//
// Polling the source slot's confirmed_flush_lsn instead would add the
// subscriber's feedback delay: its apply commits asynchronously
// (the subscription's synchronous_commit = off) and it reports a position
// flushed only once its own WAL is, then at its next wakeup. That delay is
// measured after the clock stopped and reported as a note.
func (b *pgBench) runNative(ctx context.Context) (phase, error) {
	conn := b.native.conn
	if err := checkpointServers(ctx, b.source, b.native); err != nil {
		return phase{}, err
	}
	var origin string
	if err := conn.QueryRow(ctx, "SELECT 'pg_' || oid FROM pg_subscription WHERE subname = $1", pgSubscription).Scan(&origin); err != nil {
		return phase{}, fmt.Errorf("native target: find subscription %s: %w", pgSubscription, err)
	}
	pos := func(ctx context.Context) (checkpoint.LSN, error) {
		var s *string
		err := conn.QueryRow(ctx, "SELECT remote_lsn::text FROM pg_replication_origin_status WHERE external_id = $1", origin).Scan(&s)
		if errors.Is(err, pgx.ErrNoRows) || err == nil && s == nil {
			return 0, nil
		}
		if err != nil {
			return 0, err
		}
		return checkpoint.ParseLSN(*s)
	}
	check := func(ctx context.Context) error {
		var n int64
		err := conn.QueryRow(ctx, "SELECT apply_error_count FROM pg_stat_subscription_stats WHERE subname = $1", pgSubscription).Scan(&n)
		if err != nil {
			return fmt.Errorf("native target: read pg_stat_subscription_stats: %w", err)
		}
		if n > 0 {
			return fmt.Errorf("native target: the subscription's apply worker failed %d times (see %s/server.log)", n, b.native.srv.Dir)
		}
		return nil
	}

	cpu0 := b.cpuNow(b.native)
	start := time.Now()
	if _, err := conn.Exec(ctx, "ALTER SUBSCRIPTION "+pgSubscription+" ENABLE"); err != nil {
		return phase{}, fmt.Errorf("native target: ALTER SUBSCRIPTION ENABLE: %w", err)
	}
	var cpuMid cpuTimes
	mid, err := b.waitLSN(ctx, "native", b.nativeStart, pos, check, func() { cpuMid = b.cpuNow(b.native) })
	d := time.Since(start)
	cpu := b.cpuNow(b.native).sub(cpu0)
	if err != nil {
		return phase{}, err
	}
	if err := check(ctx); err != nil {
		return phase{}, err
	}
	note := b.slotConfirmNote(ctx, pgSubscription, start.Add(d))
	b.progress("native: %s", note)
	note = cpuSplitNote(cpuMid.sub(cpu0), cpu) + "; " + note
	if _, err := conn.Exec(ctx, "ALTER SUBSCRIPTION "+pgSubscription+" DISABLE"); err != nil {
		return phase{}, fmt.Errorf("native target: ALTER SUBSCRIPTION DISABLE: %w", err)
	}
	return phase{name: "native logical replication", unit: "changes", n: b.changes(), d: d, split: mid.Sub(start), cpu: cpu, note: note}, nil
}

// slotConfirmNote waits (at most slotConfirmWait) until the source's slot
// has confirmed the whole backlog and says how long after stopped that was.
func (b *pgBench) slotConfirmNote(ctx context.Context, slot string, stopped time.Time) string {
	deadline := time.Now().Add(slotConfirmWait)
	for {
		c, err := b.slotConfirmed(ctx, slot)
		if err != nil {
			return fmt.Sprintf("reading the source slot %s: %v", slot, err)
		}
		if c > b.finalLSN {
			return fmt.Sprintf("the source slot %s confirmed the backlog %.2f s after the clock stopped", slot, time.Since(stopped).Seconds())
		}
		if time.Now().After(deadline) {
			return fmt.Sprintf("the source slot %s had not confirmed the backlog %.0f s after the clock stopped (at %s)", slot, time.Since(stopped).Seconds(), c)
		}
		select {
		case <-ctx.Done():
			return ctx.Err().Error()
		case <-time.After(pollEvery):
		}
	}
}

// --------------------------------------------------------------- regiond

// newPipeline wires a pipeline from the source into the regiond target with
// the same packages and settings the daemon uses for two PostgreSQL regions
// named "source" and "target" (cmd/regiond's wiring); probe, if not nil,
// watches its reader→sink queue.
func (b *pgBench) newPipeline(probe *queueProbe) (p *pipeline.Pipeline, closeFn func(), err error) {
	reader, err := pgsource.New(pgsource.Config{
		Region: "source",
		DSN:    b.source.dsn(),
		Slot:   regiondSlot,
		Tables: map[string]bool{benchTable: true},
	}, b.logger)
	if err != nil {
		return nil, nil, err
	}
	applier, err := pgsink.New(pgsink.Config{
		Pipeline: pipelineName,
		Source:   "source",
		Target:   "target",
		DSN:      b.regiond.dsn(),
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

// storedPosition reads the pipeline's position from the regiond target (0
// while there is no checkpoint row).
func (b *pgBench) storedPosition(ctx context.Context) (checkpoint.LSN, error) {
	var pos string
	err := b.regiond.conn.QueryRow(ctx,
		"SELECT position FROM "+pgconn.Ident(pgconn.CheckpointTable)+" WHERE pipeline = $1", pipelineName).Scan(&pos)
	if errors.Is(err, pgx.ErrNoRows) || pgCode(err) == "42P01" { // no row, no table yet
		return 0, nil
	}
	if err != nil {
		return 0, err
	}
	return checkpoint.ParseLSN(pos)
}

// initRegiond runs the pipeline once until it has created its publication
// and slot in the source and stored its starting position (the slot's
// consistent point) in the regiond target, then stops it. It returns that
// position.
func (b *pgBench) initRegiond(ctx context.Context) (checkpoint.LSN, error) {
	p, closeP, err := b.newPipeline(nil)
	if err != nil {
		return 0, err
	}
	defer closeP()
	return firstPosition(ctx, p, b.storedPosition)
}

// runRegiond runs the pipeline from its stored position and times it until
// the position it stores in the target is past finalLSN. With -cpuprofile
// and -trace, this phase (and only this one) is profiled and traced.
func (b *pgBench) runRegiond(ctx context.Context) (ph phase, err error) {
	if err := checkpointServers(ctx, b.source, b.regiond); err != nil {
		return phase{}, err
	}
	probe := &queueProbe{}
	p, closeP, err := b.newPipeline(probe)
	if err != nil {
		return phase{}, err
	}
	defer closeP()
	stopProfiles, err := startProfiles(b.opt.cpuProfile, b.opt.trace)
	if err != nil {
		return phase{}, err
	}
	defer func() {
		if perr := stopProfiles(); perr != nil && err == nil {
			err = perr
		}
	}()

	pctx, cancel := context.WithCancel(ctx)
	var runErr error
	stopped := make(chan struct{})
	cpu0 := b.cpuNow(b.regiond)
	start := time.Now()
	go func() { runErr = p.Run(pctx); close(stopped) }()
	defer func() { cancel(); <-stopped }()
	lastRetry := ""
	// The queue is also sampled per part of the backlog: partProbes[0] until
	// the stored position is past the inserts, then partProbes[1].
	var partProbes [2]queueProbe
	var cur checkpoint.LSN
	pos := func(ctx context.Context) (checkpoint.LSN, error) {
		probe.sample()
		if in := probe.in.Load(); in != nil {
			pp := &partProbes[0]
			if cur > b.midLSN {
				pp = &partProbes[1]
			}
			pp.in.Store(in)
			pp.sample()
		}
		var err error
		cur, err = b.storedPosition(ctx)
		return cur, err
	}
	var cpuMid cpuTimes
	onMid := func() { cpuMid = b.cpuNow(b.regiond) }
	mid, err := b.waitLSN(ctx, "regiond", b.regiondStart, pos, func(context.Context) error {
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
	}, onMid)
	d := time.Since(start)
	cpu := b.cpuNow(b.regiond).sub(cpu0)
	if perr := stopProfiles(); perr != nil {
		return phase{}, perr
	}
	if err != nil {
		return phase{}, err
	}
	b.progress("regiond: reader→sink queue: %s (inserts part: %s; updates part: %s)", probe, &partProbes[0], &partProbes[1])
	if st := p.Status(); st.Failures > 0 || lastRetry != "" {
		b.progress("regiond: WARNING: the pipeline failed and retried during the measurement (last error: %s)", lastRetry)
	}
	slotNote := b.slotConfirmNote(ctx, regiondSlot, start.Add(d))
	b.progress("regiond: %s", slotNote)
	return phase{name: "regiond", unit: "changes", n: b.changes(), d: d, split: mid.Sub(start), cpu: cpu,
		note: fmt.Sprintf("%s; reader→sink queue: %s (inserts part: %s; updates part: %s); %s",
			cpuSplitNote(cpuMid.sub(cpu0), cpu), probe, &partProbes[0], &partProbes[1], slotNote)}, nil
}

// startProfiles starts a CPU profile and an execution trace into the files
// named (each unless ""); stop ends both and closes the files, and may be
// called more than once.
func startProfiles(cpuProfile, tracePath string) (stop func() error, err error) {
	var files []*os.File
	var cpuOn, traceOn, done bool
	stop = func() error {
		if done {
			return nil
		}
		done = true
		if cpuOn {
			pprof.StopCPUProfile()
		}
		if traceOn {
			trace.Stop()
		}
		var errs []error
		for _, f := range files {
			errs = append(errs, f.Close())
		}
		return errors.Join(errs...)
	}
	if cpuProfile != "" {
		f, err := os.Create(cpuProfile)
		if err != nil {
			return nil, errors.Join(err, stop())
		}
		files = append(files, f)
		if err := pprof.StartCPUProfile(f); err != nil {
			return nil, errors.Join(err, stop())
		}
		cpuOn = true
	}
	if tracePath != "" {
		f, err := os.Create(tracePath)
		if err != nil {
			return nil, errors.Join(err, stop())
		}
		files = append(files, f)
		if err := trace.Start(f); err != nil {
			return nil, errors.Join(err, stop())
		}
		traceOn = true
	}
	return stop, nil
}

// ------------------------------------------------------------ catching up

// waitLSN polls pos every pollEvery until the applied position it returns
// (a source commit's end LSN, 0 for none yet) is past finalLSN, and
// returns when it first was past midLSN (the backlog's inserts applied).
// from is where the replica started, for the progress lines. Every
// progressEvery it prints progress and calls check, whose error ends the
// wait. onMid is called when the position first is past midLSN.
func (b *pgBench) waitLSN(ctx context.Context, name string, from checkpoint.LSN, pos func(context.Context) (checkpoint.LSN, error), check func(context.Context) error, onMid func()) (mid time.Time, err error) {
	last := time.Now()
	tick := time.NewTicker(pollEvery)
	defer tick.Stop()
	for {
		cur, err := pos(ctx)
		if err != nil {
			return mid, fmt.Errorf("%s: read position: %w", name, err)
		}
		if mid.IsZero() && cur > b.midLSN {
			mid = time.Now()
			onMid()
		}
		if cur > b.finalLSN {
			return mid, nil
		}
		if time.Since(last) >= progressEvery {
			last = time.Now()
			if err := check(ctx); err != nil {
				return mid, err
			}
			pct := 0.0
			if cur > from && b.finalLSN > from {
				pct = 100 * float64(cur-from) / float64(b.finalLSN-from)
			}
			b.progress("%s: applied up to %s, %.0f%% of the backlog's WAL (ends after %s)", name, cur, pct, b.finalLSN)
		}
		select {
		case <-ctx.Done():
			return mid, ctx.Err()
		case <-tick.C:
		}
	}
}

// cpuSplitNote splits a replication phase's CPU time (all) into its
// inserts part (ins, until the backlog's inserts were applied) and the rest.
func cpuSplitNote(ins, all cpuTimes) string {
	upd := all.sub(ins)
	f := func(c cpuTimes) string {
		return fmt.Sprintf("%.1f / %.1f / %.1f / %.1f", c.source.Seconds(), c.target.Seconds(), c.self.Seconds(), c.others().Seconds())
	}
	return "CPU s (source / target / bench / others) in the inserts part: " + f(ins) + ", in the updates part: " + f(upd) +
		fmt.Sprintf("; the source's WAL sender: %.2f / %.2f CPU s", ins.walSender().Seconds(), upd.walSender().Seconds())
}
