// Package pipeline runs one (source region → target) pipeline: the source's
// reader feeding the target's sink, resumed from the checkpoint stored in the
// target, supervised with capped backoff so that a region that is down stops
// nothing but its own pipelines.
package pipeline

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/regiond/regiond/checkpoint"
	"github.com/regiond/regiond/internal/metrics"
	"github.com/regiond/regiond/source"
)

// Sink applies a pipeline's transactions to its target.
type Sink interface {
	// Open prepares the target (regiond's own tables) and returns the
	// position stored there for this pipeline, or "" when it has none yet.
	Open(ctx context.Context) (string, error)
	// Init stores pos as the pipeline's starting position unless a position
	// is already stored, and returns the one in force.
	Init(ctx context.Context, pos string) (string, error)
	// Apply applies transactions from in, in order, until in is closed or ctx
	// ends. Each source transaction is applied atomically together with the
	// pipeline's new position, so replaying any suffix of the stream is
	// harmless. Each time the position advances it calls durable: with
	// stored set after a commit that wrote pos into the target, unset when
	// pos only passed skipped transactions (nothing was written).
	Apply(ctx context.Context, in <-chan source.Txn, durable func(pos checkpoint.Position, stored bool)) error
}

// Leaser is implemented by sinks that let one process at a time apply a
// pipeline, fenced through the target database: two `regiond run` processes
// for the same region may run, and exactly one applies.
type Leaser interface {
	// Lead blocks until this process holds the pipeline's lease in the
	// target (waiting is called once if it has to wait: another process
	// holds it), then fences every earlier holder: it gives the pipeline's
	// checkpoint row a new epoch, which every later apply transaction of
	// this sink compares and sets as its first statement, so that an older
	// holder, even one paused mid-batch, can never commit again. It returns
	// the position stored at that moment. Call it after Open and Init, and
	// Release the lease when the run ends.
	Lead(ctx context.Context, waiting func()) (*Lease, error)
}

// Lease is a held lease on a pipeline.
type Lease struct {
	// Position is the pipeline's stored position when the lease was taken.
	Position string
	// Epoch is the pipeline's fencing epoch under this lease.
	Epoch int64
	// Lost is closed when the lease's hold on the target is lost (its
	// session ended). The epoch still fences, but the run should stop.
	Lost <-chan struct{}
	// Release gives the lease up (another process may take it at once).
	Release func()
}

// HoldLease returns the Lease on pos and epoch of a sink that holds its
// lease through a session on the target: every interval, held (given a
// context bounded to 10 s) says whether the session still holds it, and
// the Lease's Lost closes when it no longer does; Release stops the checks
// and calls release once.
func HoldLease(pos string, epoch int64, every time.Duration, held func(context.Context) bool, release func()) *Lease {
	lost := make(chan struct{})
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		t := time.NewTicker(every)
		defer t.Stop()
		for {
			select {
			case <-stop:
				return
			case <-t.C:
			}
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			ok := held(ctx)
			cancel()
			if !ok {
				close(lost)
				return
			}
		}
	}()
	var once sync.Once
	return &Lease{Position: pos, Epoch: epoch, Lost: lost, Release: func() {
		once.Do(func() {
			close(stop)
			<-done
			release()
		})
	}}
}

// StaleCheckEvery is how long a new lease holder's epoch write may wait for
// the checkpoint row's lock before the holder of that lock is looked for.
const StaleCheckEvery = 2 * time.Second

// NewEpoch runs write, which gives the pipeline's checkpoint row a new
// epoch and returns it with the position stored there, and calls endStale
// every StaleCheckEvery while write waits. Only holders of the pipeline's
// lease write that row, so a row lock that makes the write wait is held by
// an earlier holder whose session lock is gone but whose apply transaction
// is still open: a process paused or cut off mid-batch. Waiting for it
// would be correct but could last as long as the pause; endStale ends its
// session instead, which rolls its batch back.
func NewEpoch(write func() (epoch int64, pos string, err error), endStale func()) (int64, string, error) {
	type result struct {
		epoch int64
		pos   string
		err   error
	}
	done := make(chan result, 1)
	go func() {
		var r result
		r.epoch, r.pos, r.err = write()
		done <- r
	}()
	t := time.NewTicker(StaleCheckEvery)
	defer t.Stop()
	for {
		select {
		case r := <-done:
			return r.epoch, r.pos, r.err
		case <-t.C:
			endStale()
		}
	}
}

// ErrFenced is wrapped by an apply error when another process took the
// pipeline over (a newer epoch on its checkpoint row): nothing of the
// transaction was committed, and this process stands by.
var ErrFenced = errors.New("another regiond process took over the pipeline")

// LogLagger is implemented by sources that can tell how far their log runs
// beyond a position, in bytes.
type LogLagger interface {
	// LagBytes returns how many bytes of log the source holds beyond pos.
	LagBytes(ctx context.Context, pos checkpoint.Position) (int64, error)
}

type progressKey struct{}

// WithProgress returns ctx carrying c, which a sink's Apply (sink/batch)
// increments each time it takes a transaction or writes to the target: the
// watchdog tells a slow pipeline from a stuck one by it.
func WithProgress(ctx context.Context, c *atomic.Uint64) context.Context {
	return context.WithValue(ctx, progressKey{}, c)
}

// Progress returns the progress counter in ctx (a throwaway one if none).
func Progress(ctx context.Context) *atomic.Uint64 {
	if c, ok := ctx.Value(progressKey{}).(*atomic.Uint64); ok {
		return c
	}
	return new(atomic.Uint64)
}

// ErrPermanent marks a failure that retrying cannot fix (lost position,
// incompatible schema, a value the target cannot hold): the pipeline stops,
// with its position kept, until the operator acts.
var ErrPermanent = errors.New("pipeline cannot continue")

// Permanent wraps err so that IsPermanent reports true.
func Permanent(err error) error {
	if err == nil || errors.Is(err, ErrPermanent) {
		return err
	}
	return permanentError{err}
}

type permanentError struct{ err error }

func (e permanentError) Error() string   { return e.err.Error() }
func (e permanentError) Unwrap() []error { return []error{e.err, ErrPermanent} }

// IsPermanent reports whether err should stop the pipeline for good.
func IsPermanent(err error) bool {
	return errors.Is(err, ErrPermanent) || errors.Is(err, checkpoint.ErrPositionLost)
}

// State is where a pipeline is in its life.
type State string

// The pipeline states.
const (
	Starting  State = "starting"
	Streaming State = "streaming"
	Standby   State = "standby" // another process holds the lease and applies
	Retrying  State = "retrying"
	Stopped   State = "stopped" // permanent failure; needs the operator
	Done      State = "done"    // the process is shutting down
)

// Status is a snapshot of a pipeline for health checks and `status`.
type Status struct {
	Name      string
	State     State
	Position  string
	LastError string
	Failures  int
	Since     time.Time
	// Leader is set while this process holds the pipeline's lease.
	Leader bool
	// Epoch is the fencing epoch of the lease held (0: none).
	Epoch int64
	// Pending is the number of transactions read and not yet taken by
	// the sink; Progress counts the sink's steps (see WithProgress).
	Pending  int
	Progress uint64
	// SourceLagBytes is how many bytes of log the source holds beyond the
	// position, when the source tells (see LogLagger); -1 otherwise.
	SourceLagBytes int64
}

// Healthy reports whether the pipeline does its job: streaming, or standing
// by while another process applies.
func (s Status) Healthy() bool { return s.State == Streaming || s.State == Standby }

// Preparer is implemented by sources whose Read starts with work that does
// not depend on the position: connecting, checking the server, setting up
// what reading needs there. A run does it while the sink opens and the
// lease is taken, instead of after.
type Preparer interface {
	// Prepare does that work and keeps its result for the next Read,
	// which goes on from there (the checks that need the position stay in
	// Read). If it fails, or what it kept is discarded, Read does the work
	// itself. It is never called concurrently with Read or Discard.
	Prepare(ctx context.Context) error
	// Discard releases what Prepare kept and no Read took.
	Discard()
}

// QueueDepther is implemented by a Source that knows how many transactions
// are worth holding decoded ahead of the sink.
type QueueDepther interface {
	// QueueDepth returns the number of transactions (at least 1).
	QueueDepth() int
}

// Pipeline is one source region feeding one target.
type Pipeline struct {
	Name   string // "east->west"
	Source source.Source
	Sink   Sink
	Logger *slog.Logger
	// Buffer is the number of transactions in flight between reader and
	// sink (default: what the Source's QueueDepth says, else 1024).
	Buffer int
	// MinBackoff and MaxBackoff bound the retry delay (1 s and 30 s).
	MinBackoff, MaxBackoff time.Duration
	// State, when set, keeps how far the source advanced through skipped
	// transactions beyond the target's checkpoint, so that a restart resumes
	// there: a mostly idle direction then never falls behind the source's
	// log retention.
	State *checkpoint.FileStore
	// TrackCommits makes Applied report the source commit time of the
	// last transaction the target holds (applied or skipped), for pruning
	// tombstones.
	TrackCommits bool

	mu       sync.Mutex
	status   Status
	pending  func() int // length of the running reader's channel
	progress atomic.Uint64
	lagBytes *int64    // last LogLagger answer
	applied  time.Time // see Applied
}

// Applied returns the source commit time of the last source transaction
// the target holds, applied or skipped, in this process's run (ok is false
// until one was, or without TrackCommits): every source transaction that
// committed before it is in the target. (MySQL/MariaDB commit times are
// whole seconds.)
func (p *Pipeline) Applied() (time.Time, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.applied, !p.applied.IsZero()
}

// commitLog follows, between reader and sink, the commit time of each
// source transaction in flight, so that the sink's durable positions can
// be turned into commit times.
type commitLog struct {
	mu      sync.Mutex
	pending []commitAt
}

type commitAt struct {
	pos    string
	commit time.Time
}

// maxPending bounds the commit log: transactions in flight are at most the
// channel buffers plus one batch; beyond that (a sink that reports other
// positions) the oldest are forgotten, which only makes Applied lag.
const maxPending = 1 << 18

func (l *commitLog) add(pos checkpoint.Position, commit time.Time) {
	l.mu.Lock()
	if len(l.pending) >= maxPending {
		l.pending = append(l.pending[:0], l.pending[maxPending/2:]...)
	}
	l.pending = append(l.pending, commitAt{pos.String(), commit})
	l.mu.Unlock()
}

// reached drops the transactions up to pos and returns pos's commit time.
func (l *commitLog) reached(pos checkpoint.Position) (time.Time, bool) {
	s := pos.String()
	l.mu.Lock()
	defer l.mu.Unlock()
	for i, c := range l.pending {
		if c.pos == s {
			l.pending = append(l.pending[:0], l.pending[i+1:]...)
			return c.commit, true
		}
	}
	return time.Time{}, false
}

// Status returns the pipeline's current status.
func (p *Pipeline) Status() Status {
	p.mu.Lock()
	defer p.mu.Unlock()
	s := p.status
	s.Name = p.Name
	if p.pending != nil {
		s.Pending = p.pending()
	}
	s.Progress = p.progress.Load()
	s.SourceLagBytes = -1
	if p.lagBytes != nil {
		s.SourceLagBytes = *p.lagBytes
	}
	return s
}

func (p *Pipeline) setState(st State, err error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.status.State != st {
		p.status.Since = time.Now()
	}
	p.status.State = st
	if err != nil {
		p.status.LastError = err.Error()
	}
	up := 0.0
	if p.status.Healthy() {
		up = 1
	}
	metrics.PipelineUp.WithLabelValues(p.Name).Set(up)
}

func (p *Pipeline) setLeader(epoch int64) {
	p.mu.Lock()
	p.status.Leader, p.status.Epoch = epoch > 0, epoch
	p.mu.Unlock()
	v := 0.0
	if epoch > 0 {
		v = 1
	}
	metrics.PipelineLeader.WithLabelValues(p.Name).Set(v)
}

func (p *Pipeline) setPosition(pos checkpoint.Position) {
	p.mu.Lock()
	p.status.Position = pos.String()
	p.mu.Unlock()
}

// Run runs the pipeline until ctx ends (it then returns nil) or it fails
// permanently (it then returns that error, already logged). Any other
// failure is retried with capped exponential backoff; repeated identical
// errors are logged at most once a minute.
func (p *Pipeline) Run(ctx context.Context) error {
	minB, maxB := p.MinBackoff, p.MaxBackoff
	if minB <= 0 {
		minB = time.Second
	}
	if maxB <= 0 {
		maxB = 30 * time.Second
	}
	log := p.Logger.With("pipeline", p.Name)
	var (
		failures   int
		backoff    = minB
		lastErr    string
		lastLogged time.Time
		suppressed int
	)
	p.setState(Starting, nil)
	for {
		healthy := make(chan struct{})
		err := p.runOnce(ctx, healthy)
		select {
		case <-healthy:
			// It had been streaming: start the backoff and count afresh.
			backoff, failures = minB, 0
		default:
		}
		if ctx.Err() != nil {
			p.setState(Done, nil)
			return nil
		}
		if err == nil {
			err = errors.New("stream ended")
		}
		if errors.Is(err, ErrFenced) || errors.Is(err, errLeaseLost) {
			// Not a failure: another process applies now. Stand by at once.
			log.Info("standing by: another regiond process applies this pipeline now", "reason", err)
			p.setState(Standby, nil)
			backoff, failures = minB, 0
			select {
			case <-ctx.Done():
				p.setState(Done, nil)
				return nil
			case <-time.After(100 * time.Millisecond):
			}
			continue
		}
		if IsPermanent(err) {
			p.setState(Stopped, err)
			log.Error("pipeline stopped; it will not retry until regiond is restarted", "error", err)
			return err
		}
		failures++
		p.mu.Lock()
		p.status.Failures = failures
		p.mu.Unlock()
		p.setState(Retrying, err)
		if msg := err.Error(); msg != lastErr || time.Since(lastLogged) >= time.Minute {
			if suppressed > 0 {
				log.Error("pipeline failed; retrying", "error", err, "retry_in", backoff.String(), "failures", failures, "suppressed", suppressed)
			} else {
				log.Error("pipeline failed; retrying", "error", err, "retry_in", backoff.String(), "failures", failures)
			}
			lastErr, lastLogged, suppressed = msg, time.Now(), 0
		} else {
			suppressed++
		}
		select {
		case <-ctx.Done():
			p.setState(Done, nil)
			return nil
		case <-time.After(backoff):
		}
		backoff = min(backoff*2, maxB)
	}
}

// stateSaveEvery is how often a new skipped position is written to
// state_dir.
const stateSaveEvery = time.Second

// skipTracker follows the target's stored position (base) and how far
// skipped transactions took the source beyond it.
type skipTracker struct {
	mu      sync.Mutex
	base    string
	unsaved checkpoint.Position
}

func (s *skipTracker) advance(pos checkpoint.Position, stored bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if stored {
		s.base, s.unsaved = pos.String(), nil
	} else {
		s.unsaved = pos
	}
}

func (s *skipTracker) save(p *Pipeline, log *slog.Logger) {
	s.mu.Lock()
	rec := checkpoint.Skipped{Base: s.base}
	if s.unsaved != nil {
		rec.Position = s.unsaved.String()
	}
	s.unsaved = nil
	s.mu.Unlock()
	if rec.Position == "" {
		return
	}
	if err := p.State.Save(p.Name, rec); err != nil {
		log.Warn("save skipped position to state_dir", "error", err)
	}
}

// healthyAfter is how long a run must stream without error to count as
// recovered.
const healthyAfter = 3 * time.Second

// errLeaseLost ends a run whose lease's session ended.
var errLeaseLost = errors.New("lost the pipeline's lease (its session in the target ended)")

// lagEvery is how often the source's log lag in bytes is asked.
const lagEvery = 10 * time.Second

func (p *Pipeline) runOnce(ctx context.Context, healthy chan<- struct{}) error {
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	ctx = WithProgress(ctx, &p.progress)
	log := p.Logger.With("pipeline", p.Name)
	p.mu.Lock()
	p.lagBytes = nil // a new run measures afresh
	p.mu.Unlock()

	// prepared is closed once the source's Prepare (if any) has returned:
	// it runs while the sink opens and the lease is taken.
	prepared := make(chan struct{})
	prep, _ := p.Source.(Preparer)
	if prep != nil {
		go func() {
			defer close(prepared)
			if err := prep.Prepare(ctx); err != nil && ctx.Err() == nil {
				log.Debug("preparing the source failed; reading will start afresh", "error", err)
			}
		}()
		defer func() {
			cancel(nil)
			<-prepared
			prep.Discard()
		}()
	} else {
		close(prepared)
	}
	stored, err := p.Sink.Open(ctx)
	if err != nil {
		return fmt.Errorf("open target: %w", err)
	}
	if stored == "" {
		<-prepared // one setup of the source at a time
		cur, err := p.Source.CurrentPosition(ctx)
		if err != nil {
			return fmt.Errorf("read source position: %w", err)
		}
		stored, err = p.Sink.Init(ctx, cur.String())
		if err != nil {
			return fmt.Errorf("store start position: %w", err)
		}
		log.Info("pipeline starts at the source's current position (existing rows are backfill's job)", "position", stored)
	}
	if l, ok := p.Sink.(Leaser); ok {
		lease, err := l.Lead(ctx, func() {
			log.Info("standing by: another regiond process holds this pipeline's lease")
			p.setState(Standby, nil)
			if prep != nil {
				// Standing by may last: hold no source connection, and
				// let Read check the source afresh once this leads.
				<-prepared
				prep.Discard()
			}
		})
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			return fmt.Errorf("take the pipeline's lease: %w", err)
		}
		defer lease.Release()
		defer p.setLeader(0)
		p.setLeader(lease.Epoch)
		log.Info("applying: this process holds the pipeline's lease", "epoch", lease.Epoch, "position", lease.Position)
		stored = lease.Position
		go func() {
			select {
			case <-lease.Lost:
				cancel(errLeaseLost)
			case <-ctx.Done():
			}
		}()
	}
	from, err := p.Source.ParsePosition(stored)
	if err != nil {
		return Permanent(fmt.Errorf("checkpoint %q stored in the target: %w", stored, err))
	}
	if p.State != nil {
		rec, ok, err := p.State.Load(p.Name)
		if err != nil {
			log.Warn("ignoring unreadable state file", "error", err)
		} else if ok && rec.Base == stored && rec.Position != stored {
			if pos, err := p.Source.ParsePosition(rec.Position); err == nil {
				log.Debug("resuming after skipped transactions", "checkpoint", stored, "position", rec.Position)
				from = pos
			}
		}
	}
	p.setPosition(from)
	sk := &skipTracker{base: stored}
	if p.State != nil {
		defer sk.save(p, log)
	}

	buf := p.Buffer
	if q, ok := p.Source.(QueueDepther); ok && buf <= 0 {
		buf = q.QueueDepth()
	}
	if buf <= 0 {
		buf = 1024
	}
	ch := make(chan source.Txn, buf)
	p.mu.Lock()
	p.pending = func() int { return len(ch) }
	p.mu.Unlock()
	defer func() {
		p.mu.Lock()
		p.pending = nil
		p.mu.Unlock()
	}()
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error {
		defer close(ch)
		<-prepared // the sink meanwhile gets ready to apply
		return p.Source.Read(gctx, from, ch)
	})
	in := ch
	var commits *commitLog
	if p.TrackCommits {
		// Note each transaction's commit time on its way to the sink.
		commits = &commitLog{}
		fwd := make(chan source.Txn, buf)
		in = fwd
		g.Go(func() error {
			defer close(fwd)
			for txn := range ch {
				if !txn.More && txn.End != nil {
					commits.add(txn.End, txn.Commit)
				}
				select {
				case fwd <- txn:
				case <-gctx.Done():
					return nil
				}
			}
			return nil
		})
	}
	g.Go(func() error {
		return p.Sink.Apply(gctx, in, func(pos checkpoint.Position, stored bool) {
			if commits != nil {
				if at, ok := commits.reached(pos); ok && !at.IsZero() {
					p.mu.Lock()
					if at.After(p.applied) {
						p.applied = at
					}
					p.mu.Unlock()
				}
			}
			p.setPosition(pos)
			sk.advance(pos, stored)
			if err := p.Source.Ack(gctx, pos); err != nil {
				log.Warn("acknowledge position to source", "error", err)
			}
		})
	})
	if p.State != nil {
		g.Go(func() error {
			t := time.NewTicker(stateSaveEvery)
			defer t.Stop()
			for {
				select {
				case <-gctx.Done():
					return nil
				case <-t.C:
					sk.save(p, log)
				}
			}
		})
	}
	if ll, ok := p.Source.(LogLagger); ok {
		g.Go(func() error {
			gauge := metrics.SourcePositionLag.WithLabelValues(p.Name)
			t := time.NewTicker(lagEvery)
			defer t.Stop()
			for {
				select {
				case <-gctx.Done():
					return nil
				case <-t.C:
				}
				pos, err := p.Source.ParsePosition(p.Status().Position)
				if err != nil {
					continue
				}
				if n, err := ll.LagBytes(gctx, pos); err == nil {
					gauge.Set(float64(n))
					p.mu.Lock()
					p.lagBytes = &n
					p.mu.Unlock()
				} else if gctx.Err() == nil {
					log.Debug("source log lag", "error", err)
				}
			}
		})
	}
	g.Go(func() error {
		select {
		case <-gctx.Done():
		case <-time.After(healthyAfter):
			p.mu.Lock()
			failures := p.status.Failures
			p.status.Failures = 0
			p.mu.Unlock()
			p.setState(Streaming, nil)
			if failures > 0 {
				log.Info("pipeline recovered", "failures", failures, "position", p.Status().Position)
			} else {
				log.Info("pipeline streaming", "position", p.Status().Position)
			}
			close(healthy)
		}
		return nil
	})
	err = g.Wait()
	if ctx.Err() != nil && !IsPermanent(err) {
		if cause := context.Cause(ctx); errors.Is(cause, errLeaseLost) {
			return cause
		}
		return ctx.Err()
	}
	return err
}
