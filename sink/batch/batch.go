// Package batch is the engine-neutral half of regiond's database sinks: it
// collects source transactions into batches, writes a batch in one target
// transaction together with the pipeline's new position, streams a source
// transaction too large to hold through one open target transaction,
// retries lock conflicts in place, and, when the server rejects a batch,
// keeps every source transaction before the bad one and names the row.
//
// An engine supplies a Target (its statements and error codes); Run does
// the rest, the same way for every engine.
package batch

import (
	"context"
	"fmt"
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/regiond/regiond/checkpoint"
	"github.com/regiond/regiond/internal/metrics"
	"github.com/regiond/regiond/pipeline"
	"github.com/regiond/regiond/source"
)

// Target is one engine's target transaction. Run calls its methods from one
// goroutine, in the order Begin, Exec…, Commit or Rollback.
type Target interface {
	// Begin opens a target transaction whose first statement is regiond's
	// marker write to the pipeline's checkpoint row; when pos is not nil,
	// that write also stores pos as the pipeline's position. A missing
	// checkpoint row is a permanent error.
	Begin(ctx context.Context, pos checkpoint.Position) error
	// Exec writes changes, in source order, into the open transaction.
	Exec(ctx context.Context, changes []source.Change) error
	// Commit stores pos as the pipeline's position (unless Begin already
	// stored it) and commits the open transaction.
	Commit(ctx context.Context, pos checkpoint.Position) error
	// Rollback abandons the open transaction, if any. It is always safe to
	// call.
	Rollback()
	// Classify says how Run handles an error of Begin, Exec or Commit.
	Classify(err error) Class
	// Explain is called, with no transaction open, after the server rejected
	// change c with err: it returns what the error message should add to
	// name the cause, such as the column whose value the target cannot
	// hold and why, or "" (the server's error follows it in the message).
	Explain(ctx context.Context, c source.Change, err error) string
}

// Class is the kind of an error a Target returned.
type Class int

// The error classes.
const (
	// Transient errors (connection lost, server shutting down or read-only)
	// end Run; the pipeline retries from the stored checkpoint after a
	// backoff.
	Transient Class = iota
	// Lock errors (deadlock, lock wait timeout) retry the batch in place
	// while it is still in memory.
	Lock
	// Rejected errors mean the server refuses the data itself: Run commits
	// the source transactions before the bad one and stops the pipeline
	// with a permanent error naming the row.
	Rejected
)

// Config tunes Run.
type Config struct {
	// Region is the target region's name, for error messages.
	Region string
	// Pipeline names the pipeline in metrics.
	Pipeline string
	// BatchChanges is how many changes a batch collects before it is
	// written. A batch is also written as soon as the source has nothing
	// more ready, so a lone small transaction never waits.
	BatchChanges int
	// LockRetries is how many times a batch that hit a lock conflict is
	// retried in place.
	LockRetries int
	Logger      *slog.Logger
	// Rules are the tables' conflict rules; with a home_region table, the
	// Target must also be a RuleTarget.
	Rules *Rules
	// Start is the position stored in the target when Run starts (nil:
	// none). A local pipeline stores it again while a home_region revert
	// that began in the first batch is still open.
	Start checkpoint.Position
	// Lanes is how many target connections apply batches at once when the
	// Target is a Laner (see Lane); 0 or 1 applies one batch at a time.
	// Pipelines with home_region tables always apply one at a time.
	Lanes int
}

// StoredPosition is a position as the target stores it, for Config.Start.
type StoredPosition string

func (p StoredPosition) String() string { return string(p) }

// Stored returns the position text s a target stores as a Config.Start:
// nil when none is stored ("").
func Stored(s string) checkpoint.Position {
	if s == "" {
		return nil
	}
	return StoredPosition(s)
}

// Run applies transactions from in to t until in is closed or ctx ends,
// calling durable as pipeline.Sink.Apply documents. When in is closed, the
// complete transactions received are committed and an incomplete one is
// abandoned (rolled back).
func Run(ctx context.Context, cfg Config, t Target, in <-chan source.Txn, durable func(checkpoint.Position, bool)) error {
	w := &writer{cfg: cfg, t: t, durable: durable, lastEnd: cfg.Start, reported: cfg.Start, tally: map[tallyKey]int{}, started: time.Now()}
	w.lag = metrics.ReplicationLag.WithLabelValues(cfg.Pipeline)
	w.progress = pipeline.Progress(ctx)
	defer w.rollback()
	b := &batch{rules: cfg.Rules}
	if cfg.Rules.hasHome() {
		if _, ok := t.(RuleTarget); !ok {
			return pipeline.Permanent(fmt.Errorf("region %s: home_region tables are not supported by this target", cfg.Region))
		}
	}
	if laner, ok := t.(Laner); ok && cfg.Lanes > 1 && !cfg.Rules.hasHome() {
		w.lanes = newLanes(cfg.Lanes, laner)
		w.lanes.prestart(ctx)
		defer w.stopLanes()
	}
	// lingered: the batch being collected has waited once for more.
	lingered := false
	linger := time.NewTimer(lingerFor)
	linger.Stop()
	defer linger.Stop()
	for {
		var (
			txn source.Txn
			ok  bool
		)
		if len(b.spans) == 0 && !b.open && !w.inTx {
			// Idle: once nothing has come for a while, everything the reader
			// delivered is applied and the lag is nil.
			idle := time.NewTimer(idleLag)
		wait:
			for {
				select {
				case txn, ok = <-in:
					break wait
				case <-ctx.Done():
					idle.Stop()
					return ctx.Err()
				case <-w.lanes.done():
					if err := w.finishLane(ctx); err != nil {
						idle.Stop()
						return err
					}
				case <-idle.C:
					if w.lanes.busy() {
						idle.Reset(idleLag)
						continue
					}
					w.lag.Set(0)
				}
			}
			idle.Stop()
		} else {
			select {
			case txn, ok = <-in:
			case <-ctx.Done():
				return ctx.Err()
			default:
				// Nothing more is ready: write what we have rather than
				// wait. But a small batch first waits a moment (once) for
				// more, and while a batch is on a lane this one grows until
				// it is full or the lanes are idle: a reader that is only
				// just behind would otherwise make every batch a few
				// transactions, each costing statements and a commit.
				ready := !b.open && !w.lanes.busy()
				if ready && (lingered || len(b.changes) >= cfg.BatchChanges/4) {
					lingered = false
					if err := w.commit(ctx, b); err != nil {
						return err
					}
					continue
				}
				var lingerC <-chan time.Time
				if ready {
					lingered = true
					linger.Reset(lingerFor)
					lingerC = linger.C
				}
				select {
				case txn, ok = <-in:
					linger.Stop()
				case <-ctx.Done():
					return ctx.Err()
				case <-lingerC:
					continue
				case <-w.lanes.done():
					linger.Stop()
					if err := w.finishLane(ctx); err != nil {
						return err
					}
					continue
				}
			}
		}
		w.progress.Add(1)
		if !ok {
			// The reader stopped: commit what is complete; an incomplete
			// source transaction is abandoned.
			if b.open {
				return w.drain(ctx)
			}
			if err := w.commit(ctx, b); err != nil {
				return err
			}
			return w.drain(ctx)
		}
		if err := b.add(txn, w.streamed); err != nil {
			return err
		}
		if len(b.changes) < cfg.BatchChanges {
			continue
		}
		if b.open {
			// A large transaction: write what we hold inside the open target
			// transaction, commit only at its end.
			if err := w.flush(ctx, b); err != nil {
				return err
			}
			continue
		}
		lingered = false
		if err := w.commit(ctx, b); err != nil {
			return err
		}
	}
}

// lingerFor is how long a small batch waits for more transactions when the
// source has none ready (once per batch).
const lingerFor = time.Millisecond

// batch is what has been received but not yet committed.
type batch struct {
	rules   *Rules
	changes []source.Change
	// spans[i] is the index in changes after source transaction i, and
	// ends[i] its end position, commits[i] its source commit time; only
	// whole transactions are listed.
	spans   []int
	ends    []checkpoint.Position
	commits []time.Time
	open    bool // the last transaction received is incomplete (chunks)
	// txnStart is where the open source transaction's changes begin.
	txnStart int
	// home holds the discarded home_region transactions, by span.
	home map[int]*homeEvent
	// dropping is the open source transaction's event once it is known to
	// be discarded.
	dropping *homeEvent
}

// add takes a transaction or chunk. A source transaction that writes a
// home_region row homed elsewhere is taken out whole. streamed says earlier
// chunks were written already: such a transaction can no longer be taken
// out, and stops the pipeline.
func (b *batch) add(t source.Txn, streamed bool) error {
	if !b.open {
		b.txnStart = len(b.changes)
	}
	switch {
	case b.dropping != nil:
		b.dropping.changes = append(b.dropping.changes, t.Changes...)
	case b.rules.hasHome():
		home, c, err := b.rules.violation(t.Changes)
		if err != nil {
			return err
		}
		if c == nil {
			b.changes = append(b.changes, t.Changes...)
			break
		}
		if streamed && b.open {
			return pipeline.Permanent(fmt.Errorf("table %s row %s: a transaction too large to hold writes a row homed in %q from %s, after part of it was applied; apply it again in its home region",
				c.Table.Name, c.Table.FormatKey(c.After), home, b.rules.Origin))
		}
		ev := &homeEvent{home: home, changes: append(append([]source.Change(nil), b.changes[b.txnStart:]...), t.Changes...)}
		if n := len(b.ends); n > 0 {
			ev.start = b.ends[n-1]
		}
		clear(b.changes[b.txnStart:])
		b.changes = b.changes[:b.txnStart]
		b.dropping = ev
	default:
		b.changes = append(b.changes, t.Changes...)
	}
	b.open = t.More
	if !t.More {
		if b.dropping != nil {
			b.dropping.commit = t.Commit
			if b.home == nil {
				b.home = map[int]*homeEvent{}
			}
			b.home[len(b.spans)] = b.dropping
			b.dropping = nil
		}
		b.spans = append(b.spans, len(b.changes))
		b.ends = append(b.ends, t.End)
		b.commits = append(b.commits, t.Commit)
	}
	return nil
}

// events returns the home events of spans [from, to).
func (b *batch) events(from, to int) []*homeEvent {
	var out []*homeEvent
	for i := from; i < to; i++ {
		if e := b.home[i]; e != nil {
			out = append(out, e)
		}
	}
	return out
}

func (b *batch) end() checkpoint.Position {
	if len(b.ends) == 0 {
		return nil
	}
	return b.ends[len(b.ends)-1]
}

// commit is the source commit time of the batch's last transaction.
func (b *batch) commit() time.Time {
	if len(b.commits) == 0 {
		return time.Time{}
	}
	return b.commits[len(b.commits)-1]
}

func (b *batch) reset() {
	// The changes are dropped, not kept for reuse: rows belong to the source.
	clear(b.changes)
	b.changes, b.spans, b.ends, b.commits, b.open = b.changes[:0], b.spans[:0], b.ends[:0], b.commits[:0], false
	b.home, b.txnStart = nil, 0
}

// writer drives the Target through one Run.
type writer struct {
	cfg     Config
	t       Target
	durable func(checkpoint.Position, bool)
	inTx    bool
	// streamed is set once changes were written into the open transaction
	// and dropped from memory: that transaction can no longer be retried in
	// place, only by replaying from the stored checkpoint.
	streamed bool
	rv       reverter
	// lastEnd is the end of the last transaction committed (or skipped);
	// reported the last position given to durable. They differ while a
	// home_region revert is open (see stored).
	lastEnd, reported checkpoint.Position
	// tally counts the changes written in the open transaction, by table
	// and op, for the metrics once it commits.
	tally map[tallyKey]int
	// started is when Run began: a source transaction committed before
	// then may have been read by an earlier run.
	started time.Time
	// began is when the open transaction started.
	began    time.Time
	lag      interface{ Set(float64) }
	progress *atomic.Uint64
	// lanes apply batches on more connections at once (nil: serial).
	lanes *lanes
}

// stored returns the position to store with a commit whose transactions
// end at end: end, or, while a home_region revert that a local pipeline
// began is still open (a later write in the log may continue it), the
// position before the transaction that began it, so that a restart reads
// that transaction again and derives the revert anew.
func (w *writer) stored(end checkpoint.Position, commit time.Time) checkpoint.Position {
	if h := w.rv.hold(commit); h != nil {
		return h
	}
	return end
}

// advanced records a commit (or skip) that stored pos for transactions
// ending at end, and tells durable when pos is new.
func (w *writer) advanced(end, pos checkpoint.Position, wrote bool) {
	w.lastEnd = end
	if _, ok := pos.(StoredPosition); ok {
		return // the position the run started from: nothing new
	}
	if w.reported != nil && pos.String() == w.reported.String() && !wrote {
		return
	}
	w.reported = pos
	w.durable(pos, wrote)
}

type tallyKey struct {
	table string
	op    source.Op
}

// idleLag is how long an applier waits with nothing to apply before it
// reports a replication lag of 0.
const idleLag = time.Second

func (w *writer) rollback() {
	w.t.Rollback()
	w.rv.undo()
	w.inTx, w.streamed = false, false
	clear(w.tally)
}

func (w *writer) begin(ctx context.Context, pos checkpoint.Position) error {
	if w.inTx {
		return nil
	}
	if err := w.t.Begin(ctx, pos); err != nil {
		return err
	}
	w.inTx = true
	w.began = time.Now()
	return nil
}

// count adds changes to the open transaction's tally.
func (w *writer) count(changes []source.Change) {
	w.progress.Add(1)
	for i := range changes {
		w.tally[tallyKey{changes[i].Table.Name, changes[i].Op}]++
	}
}

// committed publishes the metrics of a transaction that just committed,
// whose last source transaction committed at source time commit.
func (w *writer) committed(commit time.Time) {
	p := w.cfg.Pipeline
	for k, n := range w.tally {
		metrics.ChangesApplied.WithLabelValues(p, k.table, k.op.String()).Add(float64(n))
	}
	clear(w.tally)
	metrics.Batches.WithLabelValues(p).Inc()
	now := time.Now()
	metrics.ApplyDuration.WithLabelValues(p).Observe(now.Sub(w.began).Seconds())
	w.observeLag(now, commit)
}

func (w *writer) observeLag(now, commit time.Time) {
	if commit.IsZero() {
		return
	}
	w.lag.Set(max(now.Sub(commit).Seconds(), 0))
}

// flush writes the batch's changes into the open target transaction without
// committing, for a source transaction too large to hold.
func (w *writer) flush(ctx context.Context, b *batch) error {
	if err := w.drain(ctx); err != nil {
		return err
	}
	if err := w.begin(ctx, nil); err != nil {
		w.rollback()
		return w.wrap(err)
	}
	if err := w.t.Exec(ctx, b.changes); err != nil {
		w.rollback()
		return w.wrap(err)
	}
	w.count(b.changes)
	if err := w.record(ctx, b.events(0, len(b.spans))); err != nil {
		w.rollback()
		return w.wrap(err)
	}
	b.home = nil
	w.streamed = true
	// The written changes leave memory; the ends stay, for the commit. The
	// spans are only needed to split a batch that can be retried in place.
	clear(b.changes)
	b.changes = b.changes[:0]
	b.spans = b.spans[:0]
	return nil
}

// commit writes the batch (whole source transactions) and the pipeline's
// new position in one target transaction: on a lane when it can go to one,
// else on the serial path once the lanes are done.
func (w *writer) commit(ctx context.Context, b *batch) error {
	if w.laneable(b) {
		return w.dispatch(ctx, b)
	}
	if err := w.drain(ctx); err != nil {
		return err
	}
	return w.commitSerial(ctx, b)
}

// commitSerial is commit on the serial path.
func (w *writer) commitSerial(ctx context.Context, b *batch) error {
	end := b.end()
	if end == nil {
		return nil
	}
	if len(b.changes) == 0 && len(b.home) == 0 && !w.inTx {
		// Only skipped transactions: nothing to write (writing the position
		// would be a new marked transaction for the other side to skip, and
		// so on forever); the position advances in memory.
		w.observeLag(time.Now(), b.commit())
		w.advanced(end, w.stored(end, b.commit()), false)
		b.reset()
		return nil
	}
	for attempt := 1; ; attempt++ {
		pos, err := w.write(ctx, b.changes, b.events(0, len(b.spans)), end, b.commit())
		if err == nil {
			w.advanced(end, pos, true)
			b.reset()
			return nil
		}
		streamed := w.streamed
		w.rollback()
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if pipeline.IsPermanent(err) {
			return err
		}
		if streamed {
			// Replay from the stored checkpoint.
			return w.wrap(err)
		}
		switch w.t.Classify(err) {
		case Lock:
			if attempt > w.cfg.LockRetries {
				return w.wrap(err)
			}
			w.cfg.Logger.Debug("retrying batch after lock conflict", "attempt", attempt, "error", err)
			if err := sleep(ctx, backoff(attempt)); err != nil {
				return err
			}
		case Rejected:
			return w.isolate(ctx, b, err)
		default:
			return w.wrap(err)
		}
	}
}

// write applies changes (the rest of the open transaction) and the
// discarded home_region transactions among them, and commits it; the
// pipeline's position stored with it is end (the end of the transactions,
// committed at commit at the source) or, while a revert is open, earlier
// (see stored), and is returned.
func (w *writer) write(ctx context.Context, changes []source.Change, events []*homeEvent, end checkpoint.Position, commit time.Time) (checkpoint.Position, error) {
	if err := w.begin(ctx, end); err != nil {
		return nil, err
	}
	if err := w.t.Exec(ctx, changes); err != nil {
		return nil, err
	}
	w.count(changes)
	if err := w.record(ctx, events); err != nil {
		return nil, err
	}
	if len(w.rv.chains) > 0 {
		w.rv.save() // stored may drop chains
	}
	pos := w.stored(end, commit)
	err := w.t.Commit(ctx, pos)
	w.inTx, w.streamed = false, false
	if err == nil {
		w.rv.keep()
		w.committed(commit)
	}
	return pos, err
}

// isolate runs after a batch was rejected by the server: it commits the
// batch's source transactions one at a time, so every transaction before the
// failing one is kept, and then finds the row the server rejects.
func (w *writer) isolate(ctx context.Context, b *batch, batchErr error) error {
	from := 0
	for i, to := range b.spans {
		changes := b.changes[from:to]
		var err error
		for attempt := 1; attempt <= w.cfg.LockRetries+1; attempt++ {
			var pos checkpoint.Position
			pos, err = w.write(ctx, changes, b.events(i, i+1), b.ends[i], b.commits[i])
			if err == nil {
				w.advanced(b.ends[i], pos, true)
			}
			if err == nil || pipeline.IsPermanent(err) || w.t.Classify(err) != Lock {
				break
			}
			w.rollback()
			if err := sleep(ctx, backoff(attempt)); err != nil {
				return err
			}
		}
		if err == nil {
			from = to
			continue
		}
		w.rollback()
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if pipeline.IsPermanent(err) || w.t.Classify(err) != Rejected {
			return w.wrap(err)
		}
		return pipeline.Permanent(w.findRow(ctx, changes, b.ends[i], err))
	}
	// Every transaction went through alone: the batch failed for a reason
	// that involves several of them; they are all applied now.
	b.reset()
	w.cfg.Logger.Warn("batch was rejected but each of its transactions applied alone", "error", batchErr)
	return nil
}

// findRow applies the changes of one rejected transaction one by one (and
// rolls back) to name the row the server rejects.
func (w *writer) findRow(ctx context.Context, changes []source.Change, end checkpoint.Position, txnErr error) error {
	defer w.rollback()
	if err := w.begin(ctx, nil); err != nil {
		return fmt.Errorf("region %s: transaction ending at %s: %w", w.cfg.Region, end, txnErr)
	}
	for _, c := range changes {
		err := w.t.Exec(ctx, []source.Change{c})
		if err == nil {
			continue
		}
		w.rollback()
		row := c.After
		if row == nil {
			row = c.Before
		}
		what := fmt.Sprintf("region %s rejected %s of table %s row %s in the source transaction ending at %s",
			w.cfg.Region, c.Op, c.Table.Name, c.Table.FormatKey(row), end)
		if d := w.t.Explain(ctx, c, err); d != "" {
			what += ": " + d
		}
		return fmt.Errorf("%s: %w; fix the target table (or the value) and restart regiond", what, err)
	}
	return fmt.Errorf("region %s rejected the source transaction ending at %s: %w", w.cfg.Region, end, txnErr)
}

// replayMargin: see record.
const replayMargin = time.Minute

// record writes the discarded home_region transactions: their conflict
// records, and in the origin region their reverts.
func (w *writer) record(ctx context.Context, events []*homeEvent) error {
	if len(events) == 0 {
		return nil
	}
	rt := w.t.(RuleTarget)
	w.rv.save()
	for _, e := range events {
		if e.start == nil {
			e.start = w.lastEnd
		}
		// Only a transaction committed before this run began can have been
		// read by an earlier one (replayMargin allows for the region's clock
		// being ahead of regiond's).
		replayed := e.commit.Before(w.started.Add(replayMargin))
		if err := w.rv.applyHome(ctx, rt, w.cfg.Rules, *e, replayed); err != nil {
			return err
		}
	}
	return nil
}

func (w *writer) wrap(err error) error {
	if err == nil || pipeline.IsPermanent(err) {
		return err
	}
	return fmt.Errorf("region %s: apply: %w", w.cfg.Region, err)
}

// backoff is the pause before lock retry number attempt: 10 ms, 40 ms,
// 90 ms, … (2 s at the 14th).
func backoff(attempt int) time.Duration {
	return time.Duration(attempt*attempt) * 10 * time.Millisecond
}

func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}
