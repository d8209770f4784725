// Package tombstones prunes a region's last_writer_wins delete tombstones
// once no change that could still be decided against them can arrive.
//
// A tombstone in region R keeps an older write that arrives after the
// delete from bringing the row back. Such a write comes from some region S
// through the pipeline S->R. Once that pipeline holds every transaction S
// committed up to a time T, every write S made before T is decided in R
// already; a write S makes later was made after S itself had the delete
// (its own tombstone), provided the delete reached S by then: the
// retention (tombstone_retention, a week by default) is the bound regiond
// assumes on how far a region's copy of another region's writes lags.
// So a tombstone recorded at time D (when R wrote it, at or after the
// delete's commit) is pruned when D is older than the retention and older
// than T−margin for every pipeline into R, where T is the commit time of
// the last source transaction that pipeline's target holds (applied, or
// skipped as nothing to apply) and the margin absorbs clock differences
// between the servers and MariaDB's whole-second commit times. A pipeline
// that has not yet passed a transaction in this process's run holds all
// pruning back.
package tombstones

import (
	"context"
	"log/slog"
	"time"
)

// Store deletes a region's tombstones.
type Store interface {
	// PruneTombstones deletes at most limit tombstones recorded before
	// before, oldest first, in one short transaction, and returns how
	// many it deleted.
	PruneTombstones(ctx context.Context, before time.Time, limit int) (int64, error)
}

// Pipeline is a pipeline into the region, as far as pruning needs it.
type Pipeline interface {
	// Applied returns the source commit time up to which the target
	// holds every source transaction (ok false: not known yet).
	Applied() (time.Time, bool)
}

// Margin is subtracted from every pipeline's applied commit time: clocks
// of different servers may differ by this much, and MariaDB commit times
// are whole seconds.
const Margin = 5 * time.Second

// Batch is how many tombstones one prune transaction deletes at most.
const Batch = 1000

// Pruner prunes one region's tombstones periodically.
type Pruner struct {
	Region    string
	Store     Store
	Retention time.Duration
	// Pipelines are the pipelines into the region from every other region.
	Pipelines []Pipeline
	Logger    *slog.Logger
	// Now is the clock (time.Now when nil).
	Now func() time.Time
}

// Horizon returns the time before which tombstones may be pruned now, or
// ok false when some pipeline has not reported its progress yet.
func (p *Pruner) Horizon() (time.Time, bool) {
	now := time.Now
	if p.Now != nil {
		now = p.Now
	}
	h := now().Add(-p.Retention)
	for _, pl := range p.Pipelines {
		at, ok := pl.Applied()
		if !ok {
			return time.Time{}, false
		}
		if at = at.Add(-Margin); at.Before(h) {
			h = at
		}
	}
	return h, true
}

// Interval is how often Run prunes: a tenth of the retention, between a
// second and a minute.
func (p *Pruner) Interval() time.Duration {
	return min(max(p.Retention/10, time.Second), time.Minute)
}

// Once prunes everything below the horizon, in transactions of at most
// Batch tombstones, and returns how many it deleted.
func (p *Pruner) Once(ctx context.Context) (int64, error) {
	h, ok := p.Horizon()
	if !ok {
		return 0, nil
	}
	var total int64
	for ctx.Err() == nil {
		n, err := p.Store.PruneTombstones(ctx, h, Batch)
		total += n
		if err != nil || n < Batch {
			return total, err
		}
	}
	return total, ctx.Err()
}

// Run prunes every Interval until ctx ends. Errors are logged and retried
// at the next interval.
func (p *Pruner) Run(ctx context.Context) {
	t := time.NewTicker(p.Interval())
	defer t.Stop()
	failing := false
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		n, err := p.Once(ctx)
		switch {
		case ctx.Err() != nil:
			return
		case err != nil:
			if !failing {
				p.Logger.Warn("pruning tombstones failed; retrying", "region", p.Region, "error", err)
			}
			failing = true
			continue
		case failing:
			p.Logger.Info("pruning tombstones recovered", "region", p.Region)
		}
		failing = false
		if n > 0 {
			p.Logger.Debug("pruned tombstones", "region", p.Region, "tombstones", n)
		}
	}
}
