package batch

import (
	"context"
	"fmt"
	"hash/maphash"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/regiond/regiond/checkpoint"
	"github.com/regiond/regiond/source"
)

// Lane is one more connection into the target, for Config.Lanes. Batches of
// whole source transactions go to the lanes in turn, so that the target
// executes one batch's statements while another's are sent or committed;
// each batch is still one target transaction holding its rows and the
// pipeline's new position, and the batches commit in source order.
type Lane interface {
	// BeginLane opens a target transaction whose first statement is
	// regiond's marker write to a row of this lane's own (not the
	// pipeline's checkpoint row, which would make every other lane wait).
	BeginLane(ctx context.Context) error
	// Exec writes changes, in source order, into the open transaction.
	Exec(ctx context.Context, changes []source.Change) error
	// Commit stores pos as the pipeline's position, fenced as Target.Begin
	// fences its write, and commits.
	Commit(ctx context.Context, pos checkpoint.Position) error
	// Rollback abandons the open transaction, if any.
	Rollback()
	// Close releases the lane's connection.
	Close() error
}

// LaneMarker names lane i's marker row (kind 'marker') in
// regiond_checkpoints for a pipeline, in every engine.
func LaneMarker(pipeline string, i int) string {
	return fmt.Sprintf("%s lane %d", pipeline, i)
}

// Laner is a Target that can open lanes (see Config.Lanes).
type Laner interface {
	// Lane opens lane i (0, 1, …) on a connection of its own. It is
	// called for every lane at once, from different goroutines.
	Lane(ctx context.Context, i int) (Lane, error)
}

// How the lanes keep the contract:
//
//   - Exactly once: a batch commits its rows and the pipeline's new
//     position in one transaction, as on the serial path; and a batch
//     stores its position only after every earlier batch committed (the
//     lane waits for the one before it), so the stored position always
//     ends a prefix of the source's transactions.
//   - Order per key: a batch's changes to keys that a batch still in
//     flight also changes are held back until that batch has committed
//     (the lane writes them after its wait); the rest, whose keys no
//     earlier batch in flight touches, are written at once. Both parts
//     keep source order, and the transaction commits them together.
//   - No stall: keys that differ here but are one row in the target (a
//     case-insensitive collation, a secondary unique key) can make the
//     earlier batch wait on a lock the later one holds while the later one
//     waits for the earlier one to commit. The later batch gives up after
//     a while (laneWait), rolls back and is applied again on the serial
//     path once the earlier one is done.
//   - Any error in a lane rolls back that batch and every later one in
//     flight; they are applied again, in order, on the serial path, which
//     retries lock conflicts and isolates rejected rows as always.

// lanes is the set of lanes of one Run and the batches in flight on them.
type lanes struct {
	n      int
	opened bool
	open   func(ctx context.Context, i int) (Lane, error)
	// opening delivers the lanes prestart opens (nil: none pending).
	opening chan openedLanes
	free    []Lane
	all     []Lane
	jobs    []*laneJob // in flight, oldest first
	spare   []*batch   // emptied batches of jobs done, for reuse
	// spareKeys are the key sets of jobs done, for reuse: a batch's set
	// has an entry per change, and a new map of that size per batch was
	// the largest allocation of the lanes.
	spareKeys []map[uint64]struct{}
	seed      maphash.Seed
	kb        []byte
	// last is how long the last batch took on its lane, for laneWait.
	last time.Duration
}

// laneJob is one batch on a lane.
type laneJob struct {
	lane  Lane
	b     *batch
	keys  map[uint64]struct{}
	now   []source.Change // written at once
	later []source.Change // written once prev has committed
	prev  *laneJob
	wait  time.Duration // how long to wait for prev before giving up
	began time.Time
	done  chan struct{}
	// Set before done is closed.
	err     error
	aborted bool // rolled back because prev failed or took too long
	took    time.Duration
}

func (j *laneJob) ok() bool { return j.err == nil && !j.aborted }

// laneWait is how long a batch that is ready to commit waits for the batch
// before it: at least minLaneWait, and several times what the last batch
// took, so that a slow target does not make every batch give up. (Giving
// up costs the batch's work once more, never correctness.)
func (l *lanes) laneWait() time.Duration {
	return max(minLaneWait, 4*l.last)
}

var minLaneWait = 250 * time.Millisecond

func newLanes(n int, laner Laner) *lanes {
	return &lanes{n: n, open: laner.Lane, seed: maphash.MakeSeed()}
}

// busy reports whether batches are in flight.
func (l *lanes) busy() bool { return l != nil && len(l.jobs) > 0 }

// done is closed when the oldest batch in flight is done (nil: none).
func (l *lanes) done() <-chan struct{} {
	if !l.busy() {
		return nil
	}
	return l.jobs[0].done
}

// prestart opens the lanes in the background, so that the first batch
// finds them ready instead of waiting for their connections and session
// setup (a pipeline's start, while the source is still connecting).
func (l *lanes) prestart(ctx context.Context) {
	ch := make(chan openedLanes, 1)
	l.opening = ch
	go func() {
		all, err := l.openAll(ctx)
		ch <- openedLanes{all, err}
	}()
}

// openedLanes is what prestart opened.
type openedLanes struct {
	all []Lane
	err error
}

// start makes the lanes ready: those prestart opened, else opened now.
func (l *lanes) start(ctx context.Context) error {
	if l.opened {
		return nil
	}
	var (
		all []Lane
		err error
	)
	if l.opening != nil {
		r := <-l.opening // prestart's open ends with ctx too
		l.opening = nil
		all, err = r.all, r.err
	} else {
		all, err = l.openAll(ctx)
	}
	if err != nil {
		return err
	}
	l.all = all
	l.free = append(l.free[:0], l.all...)
	l.opened = true
	return nil
}

// openAll opens the n lanes at once (each connection's setup is a few
// round trips that need not wait for the others'); on a failure it closes
// those it opened.
func (l *lanes) openAll(ctx context.Context) ([]Lane, error) {
	all := make([]Lane, l.n)
	errs := make([]error, l.n)
	var wg sync.WaitGroup
	for i := range all {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ln, err := l.open(ctx, i)
			if err != nil {
				errs[i] = err
				return
			}
			all[i] = ln
		}()
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			for _, ln := range all {
				if ln != nil {
					_ = ln.Close()
				}
			}
			return nil, err
		}
	}
	return all, nil
}

// close releases the lanes (also those prestart is still opening); no
// batch may be in flight.
func (l *lanes) close() {
	if l.opening != nil {
		r := <-l.opening
		l.opening = nil
		for _, ln := range r.all {
			_ = ln.Close()
		}
	}
	for _, ln := range l.all {
		_ = ln.Close()
	}
	l.all, l.free, l.opened = nil, nil, false
}

// laneable reports whether b can go to a lane: whole source transactions
// with changes, nothing open on the serial path, no home_region events.
func (w *writer) laneable(b *batch) bool {
	return w.lanes != nil && !b.open && !w.inTx && !w.streamed && len(b.home) == 0 && len(b.changes) > 0
}

// dispatch hands b's transactions to a free lane (waiting for one if
// needed) and leaves b empty.
func (w *writer) dispatch(ctx context.Context, b *batch) error {
	l := w.lanes
	if err := l.start(ctx); err != nil {
		return w.wrap(err)
	}
	for len(l.free) == 0 {
		if err := w.finishLane(ctx); err != nil {
			return err
		}
	}
	// b's slices go with the job; b takes those of a batch done before.
	jb := &batch{rules: b.rules}
	if n := len(l.spare); n > 0 {
		jb = l.spare[n-1]
		l.spare = l.spare[:n-1]
	}
	*jb, *b = *b, *jb
	j := &laneJob{b: jb, began: time.Now(), wait: l.laneWait(), done: make(chan struct{})}
	j.keys, j.now, j.later = l.split(jb.changes)
	if n := len(l.jobs); n > 0 {
		j.prev = l.jobs[n-1]
	}
	j.lane = l.free[len(l.free)-1]
	l.free = l.free[:len(l.free)-1]
	l.jobs = append(l.jobs, j)
	go j.run(ctx, jb.end())
	return nil
}

// run applies the job's batch on its lane.
func (j *laneJob) run(ctx context.Context, end checkpoint.Position) {
	defer close(j.done)
	defer func() { j.took = time.Since(j.began) }()
	fail := func(err error) {
		j.lane.Rollback()
		j.err = err
	}
	if err := j.lane.BeginLane(ctx); err != nil {
		fail(err)
		return
	}
	if len(j.now) > 0 {
		if err := j.lane.Exec(ctx, j.now); err != nil {
			fail(err)
			return
		}
	}
	if p := j.prev; p != nil {
		t := time.NewTimer(j.wait)
		select {
		case <-p.done:
			t.Stop()
		case <-t.C:
			j.lane.Rollback()
			j.aborted = true
			return
		case <-ctx.Done():
			t.Stop()
			fail(ctx.Err())
			return
		}
		if !p.ok() {
			j.lane.Rollback()
			j.aborted = true
			return
		}
	}
	if len(j.later) > 0 {
		if err := j.lane.Exec(ctx, j.later); err != nil {
			fail(err)
			return
		}
	}
	if err := j.lane.Commit(ctx, end); err != nil {
		fail(err)
	}
}

// finishLane waits for the oldest batch in flight and takes its outcome:
// a commit is reported; a failure or a give-up sends it and every later
// batch in flight (which all give up after it) to the serial path.
func (w *writer) finishLane(ctx context.Context) error {
	l := w.lanes
	j := l.jobs[0]
	select {
	case <-j.done:
	case <-ctx.Done():
		return ctx.Err()
	}
	l.jobs = l.jobs[1:]
	l.free = append(l.free, j.lane)
	if j.ok() {
		l.last = j.took
		w.laneCommitted(j)
		j.b.reset()
		l.spare = append(l.spare, j.b)
		clear(j.keys)
		l.spareKeys = append(l.spareKeys, j.keys)
		j.keys = nil
		return nil
	}
	failed := append([]*laneJob{j}, l.jobs...)
	for _, k := range l.jobs {
		<-k.done
		l.free = append(l.free, k.lane)
		if k.ok() {
			// A batch committed after one before it did not: the order
			// the lanes keep is broken.
			return fmt.Errorf("region %s: internal error: a lane committed after an earlier batch failed", w.cfg.Region)
		}
	}
	l.jobs = l.jobs[:0]
	if j.err != nil {
		w.cfg.Logger.Debug("lane batch failed; applying it and the batches after it one at a time", "error", j.err, "batches", len(failed))
	} else {
		w.cfg.Logger.Debug("lane batch waited too long for the one before it; applying it again", "wait", j.wait, "batches", len(failed))
	}
	for _, k := range failed {
		if err := w.commitSerial(ctx, k.b); err != nil {
			return err
		}
	}
	return nil
}

// laneCommitted reports a batch a lane committed.
func (w *writer) laneCommitted(j *laneJob) {
	w.began = j.began
	w.count(j.b.changes)
	w.committed(j.b.commit())
	end := j.b.end()
	w.advanced(end, end, true)
}

// drain waits for every batch in flight, so that the serial path can go
// on after them.
func (w *writer) drain(ctx context.Context) error {
	for w.lanes.busy() {
		if err := w.finishLane(ctx); err != nil {
			return err
		}
	}
	return nil
}

// stopLanes ends a Run: it waits for the batches in flight, reports those
// that committed (in order, up to the first that did not), and closes the
// lanes.
func (w *writer) stopLanes() {
	l := w.lanes
	if l == nil {
		return
	}
	reporting := true
	for _, j := range l.jobs {
		<-j.done
		if reporting && j.ok() {
			w.laneCommitted(j)
			continue
		}
		reporting = false
	}
	l.jobs = nil
	l.close()
}

// split computes the keys changes touch, and which changes touch a key of
// a batch still in flight (later) or a key such a change touched before
// them, and which do not (now); both keep source order.
func (l *lanes) split(changes []source.Change) (keys map[uint64]struct{}, now, later []source.Change) {
	if n := len(l.spareKeys); n > 0 {
		keys = l.spareKeys[n-1]
		l.spareKeys = l.spareKeys[:n-1]
	} else {
		keys = make(map[uint64]struct{}, len(changes))
	}
	var held map[uint64]struct{} // this batch's keys that go later
	for i := range changes {
		c := &changes[i]
		a, b := l.keysOf(c)
		keys[a] = struct{}{}
		if b != a {
			keys[b] = struct{}{}
		}
		if !l.inFlight(a) && (b == a || !l.inFlight(b)) && !has(held, a) && !has(held, b) {
			if later != nil {
				now = append(now, *c)
			}
			continue
		}
		if later == nil {
			now = append(make([]source.Change, 0, len(changes)), changes[:i]...)
			later = make([]source.Change, 0, len(changes)-i)
			held = map[uint64]struct{}{}
		}
		held[a] = struct{}{}
		held[b] = struct{}{}
		later = append(later, *c)
	}
	if later == nil {
		now = changes
	}
	return keys, now, later
}

func has(m map[uint64]struct{}, k uint64) bool {
	_, ok := m[k]
	return ok
}

// inFlight reports whether a batch in flight touches key k.
func (l *lanes) inFlight(k uint64) bool {
	for _, j := range l.jobs {
		if has(j.keys, k) {
			return true
		}
	}
	return false
}

// keysOf returns the hashes of the keys c touches: its row's key, and for
// an update that changes the key, the old one too (else both are the
// same). Equal keys of one table give equal hashes; different keys may
// collide, which only holds a change back for nothing.
func (l *lanes) keysOf(c *source.Change) (uint64, uint64) {
	row := c.After
	if c.Op == source.Delete {
		row = c.Before
	}
	a := l.hash(c.Table, row)
	if c.Op == source.Update && c.Before != nil {
		return a, l.hash(c.Table, c.Before)
	}
	return a, a
}

func (l *lanes) hash(t *source.Table, row source.Row) uint64 {
	l.kb = append(append(l.kb[:0], t.Name...), 0)
	l.kb = AppendKey(l.kb, t, l.folded(t, row))
	return maphash.Bytes(l.seed, l.kb)
}

// folded returns row with its text key values in lower case and without
// trailing spaces, so that keys a case-insensitive, PAD SPACE collation
// holds equal (the MySQL default) hash equal. (Other equalities, such as
// accents under such a collation, are left to the lane's give-up.)
func (l *lanes) folded(t *source.Table, row source.Row) source.Row {
	var out source.Row
	for _, c := range t.PK {
		s, ok := row[c].(string)
		if !ok {
			continue
		}
		f := strings.ToLower(strings.TrimRight(s, " "))
		if f == s {
			continue
		}
		if out == nil {
			out = slices.Clone(row)
		}
		out[c] = f
	}
	if out == nil {
		return row
	}
	return out
}
