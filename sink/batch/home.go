package batch

import (
	"context"
	"fmt"
	"time"

	"github.com/regiond/regiond/checkpoint"

	"github.com/regiond/regiond/conflict"
	"github.com/regiond/regiond/pipeline"
	"github.com/regiond/regiond/source"
)

// Home reports whether table t is under home_region.
func (r *Rules) Home(t string) bool { return r.rule(t).Name == "home_region" }

// HasRules reports whether any table is under a rule other than
// apply_remote.
func (r *Rules) HasRules() bool {
	if r == nil {
		return false
	}
	for _, x := range r.Tables {
		if x.Name != "" && x.Name != "apply_remote" {
			return true
		}
	}
	return false
}

// hasHome reports whether any table is under home_region.
func (r *Rules) hasHome() bool {
	if r == nil {
		return false
	}
	for _, x := range r.Tables {
		if x.Name == "home_region" {
			return true
		}
	}
	return false
}

// violation returns the home region of the first change in changes that
// writes a home_region row homed elsewhere than the rules' origin, judged
// from the before image (the after image for inserts).
func (r *Rules) violation(changes []source.Change) (home string, c *source.Change, err error) {
	for i := range changes {
		ch := &changes[i]
		if !r.Home(ch.Table.Name) {
			continue
		}
		col := columnIndex(ch.Table, r.rule(ch.Table.Name).HomeColumn)
		if col < 0 {
			return "", nil, pipeline.Permanent(fmt.Errorf("table %s: home column %q is not in the change (the source table lacks it)",
				ch.Table.Name, r.rule(ch.Table.Name).HomeColumn))
		}
		img := ch.Before
		if img == nil {
			img = ch.After
		}
		h, ok := source.Text(img[col])
		if !ok {
			h = "" // NULL: homed nowhere, written by a region that is not its home
		}
		if h != r.Origin {
			return h, ch, nil
		}
	}
	return "", nil, nil
}

// homeEvent is a source transaction that wrote a row homed elsewhere: no
// region applies any of it; every region records it; the origin region's
// local pipeline reverts it there.
type homeEvent struct {
	home    string // the home region of the first offending row
	changes []source.Change
	// start is the position just before the transaction (nil: before the
	// batch; the writer fills it in).
	start checkpoint.Position
	// commit is the transaction's commit time at the source.
	commit time.Time
}

// homeConflicts are the records of a discarded transaction: one per change.
func (r *Rules) homeConflicts(e homeEvent) []Conflict {
	cs := make([]Conflict, 0, len(e.changes))
	for _, c := range e.changes {
		img := c.After
		if img == nil {
			img = c.Before
		}
		winner := e.home
		if winner == "" {
			winner = "(none)"
		}
		cs = append(cs, Conflict{
			Pipeline: r.Pipeline, Table: c.Table, Key: img, Rule: "home_region",
			Winner: winner, Loser: r.Origin, Lost: img, Position: c.TxnID,
			Reason: fmt.Sprintf("the transaction wrote a row homed in %s from %s: none of it is applied", winner, r.Origin),
		})
	}
	return cs
}

// chain follows consecutive violating writes to one row in their origin
// region: base is the row before the first of them (nil: no row), last the
// hash of what the latest left (nil: no row). Reverting restores base, but
// only while the row is still what the latest violating write left.
type chain struct {
	base source.Row
	last *conflict.Hash
	// start is the position before the transaction that began the chain:
	// while the chain is open, the local pipeline's stored position stays
	// there, so that after a crash the chain is derived again from the log
	// (it lives in memory only).
	start checkpoint.Position
	seq   uint64 // order of creation
	// seen is when the row was last found changed since the chain's last
	// write. Every write that changed it committed before then; once the
	// log has been read past that time (plus a margin), a write continuing
	// the chain would have been seen, and the chain is dropped.
	seen time.Time
}

// chainMargin allows for the difference between regiond's clock and the
// region's commit times (whole seconds on MariaDB).
const chainMargin = 2 * time.Second

// reverter undoes, in a region, the violating transactions that region
// made. It remembers unresolved chains across batches: a violating write
// whose row has already changed again may be followed in the log by another
// violating write that continues it.
//
// The chains are part of the target transaction's state: a transaction
// that reverts a row consumes its chain, and if it rolls back (a lock
// timeout retried in place), the retry must find the chain as it was, or
// it would restore an intermediate violating write instead of the base.
// save keeps a copy when a transaction first touches them; undo puts it
// back, keep drops it once the transaction committed.
type reverter struct {
	chains map[string]*chain
	seq    uint64
	saved  *reverter // the state before the open transaction (nil: none)
}

// save copies the chains, once per target transaction.
func (rv *reverter) save() {
	if rv.saved != nil {
		return
	}
	cp := &reverter{chains: make(map[string]*chain, len(rv.chains)), seq: rv.seq}
	for id, ch := range rv.chains {
		c := *ch
		cp.chains[id] = &c
	}
	rv.saved = cp
}

// undo restores the chains as they were before the open transaction.
func (rv *reverter) undo() {
	if rv.saved != nil {
		rv.chains, rv.seq, rv.saved = rv.saved.chains, rv.saved.seq, nil
	}
}

// keep forgets the copy: the open transaction committed.
func (rv *reverter) keep() { rv.saved = nil }

// hold drops the open chains whose rows' later writes the log has been
// read past (transactions committed up to passed), and returns the start
// of the oldest chain still open (nil: none).
func (rv *reverter) hold(passed time.Time) checkpoint.Position {
	var oldest *chain
	for id, ch := range rv.chains {
		if !passed.IsZero() && ch.seen.Add(chainMargin).Before(passed) {
			delete(rv.chains, id)
			continue
		}
		if ch.start != nil && (oldest == nil || ch.seq < oldest.seq) {
			oldest = ch
		}
	}
	if oldest == nil {
		return nil
	}
	return oldest.start
}

func imageHash(t *source.Table, row source.Row) *conflict.Hash {
	if row == nil {
		return nil
	}
	h := conflict.RowHash(t, row)
	return &h
}

func sameHash(a, b *conflict.Hash) bool {
	if a == nil || b == nil {
		return a == b
	}
	return *a == *b
}

// applyHome records a discarded transaction and, in its origin region,
// reverts it. A local pipeline that started after the transaction
// committed (replayed says so) may be reading it again: while a revert
// chain was open it stored the position before the chain's first
// transaction, so after a crash it re-reads transactions whose records it
// had committed already. Those records are not written again: a record of
// the same pipeline, table, key and source transaction, detected since
// the commit (the local pipeline writes into the region whose clock
// stamped the commit), is the one an earlier run wrote.
func (rv *reverter) applyHome(ctx context.Context, rt RuleTarget, r *Rules, e homeEvent, replayed bool) error {
	if r.Local {
		for _, c := range e.changes {
			if err := rv.revert(ctx, rt, c, e.start); err != nil {
				return err
			}
		}
	}
	cs := r.homeConflicts(e)
	if r.Local && replayed && len(cs) > 0 {
		// One source transaction: the records share pipeline, rule and
		// position.
		done, err := rt.Recorded(ctx, cs[0].Pipeline, cs[0].Rule, cs[0].Position, e.commit.Add(-chainMargin))
		if err != nil {
			return err
		}
		kept := cs[:0]
		for _, c := range cs {
			if !done[RecordKey(c.Table.Name, source.KeyJSON(c.Table, c.Key))] {
				kept = append(kept, c)
			}
		}
		cs = kept
	}
	if len(cs) == 0 {
		return nil
	}
	return rt.Record(ctx, cs)
}

// revert follows change c in its row's chain and restores the chain's base
// if the row is still what c left.
func (rv *reverter) revert(ctx context.Context, rt RuleTarget, c source.Change, start checkpoint.Position) error {
	if rv.chains == nil {
		rv.chains = map[string]*chain{}
	}
	t := c.Table
	key := c.After
	if key == nil {
		key = c.Before
	}
	id := t.Name + "\x00" + source.KeyJSON(t, key)
	before := imageHash(t, c.Before)
	ch := rv.chains[id]
	if c.Before != nil && !SameKey(t, c.Before, key) {
		// A key change: the old key's chain carries over.
		if old := rv.chains[t.Name+"\x00"+source.KeyJSON(t, c.Before)]; old != nil && sameHash(old.last, before) {
			ch = old
			delete(rv.chains, t.Name+"\x00"+source.KeyJSON(t, c.Before))
		}
	}
	if ch == nil || !sameHash(ch.last, before) {
		rv.seq++
		ch = &chain{base: c.Before, start: start, seq: rv.seq}
	}
	ch.last = imageHash(t, c.After)
	rv.chains[id] = ch

	cur, err := rt.Lock(ctx, t, []source.Row{key})
	if err != nil {
		return err
	}
	now := cur[0].Row
	if !sameHash(imageHash(t, now), ch.last) {
		// Changed since: a later write (home's, or one of ours still to
		// come in the log).
		ch.seen = time.Now()
		return nil
	}
	delete(rv.chains, id)
	switch {
	case ch.base == nil:
		if now != nil {
			return rt.Write(ctx, t, &Resolved{Delete: []source.Row{now}})
		}
	case now == nil:
		return rt.Write(ctx, t, &Resolved{Insert: []source.Row{ch.base}})
	case SameKey(t, ch.base, now):
		return rt.Write(ctx, t, &Resolved{Update: []source.Row{ch.base}})
	default:
		old, err := rt.Lock(ctx, t, []source.Row{ch.base})
		if err != nil {
			return err
		}
		if old[0].Row != nil {
			return nil // the old key is taken again: leave both
		}
		if err := rt.Write(ctx, t, &Resolved{Delete: []source.Row{now}}); err != nil {
			return err
		}
		return rt.Write(ctx, t, &Resolved{Insert: []source.Row{ch.base}})
	}
	return nil
}
