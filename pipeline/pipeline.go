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
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/regiond/regiond/checkpoint"
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
}

// Pipeline is one source region feeding one target.
type Pipeline struct {
	Name   string // "east->west"
	Source source.Source
	Sink   Sink
	Logger *slog.Logger
	// Buffer is the number of transactions in flight between reader and
	// sink (default 1024).
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

	mu      sync.Mutex
	status  Status
	applied time.Time
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

func (p *Pipeline) runOnce(ctx context.Context, healthy chan<- struct{}) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	log := p.Logger.With("pipeline", p.Name)

	stored, err := p.Sink.Open(ctx)
	if err != nil {
		return fmt.Errorf("open target: %w", err)
	}
	if stored == "" {
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
	if buf <= 0 {
		buf = 1024
	}
	ch := make(chan source.Txn, buf)
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error {
		defer close(ch)
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
		return ctx.Err()
	}
	return err
}
