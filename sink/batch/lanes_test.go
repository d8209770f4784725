package batch

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/regiond/regiond/checkpoint"
	"github.com/regiond/regiond/source"
)

// memTarget is an in-memory target with row locks held until commit, so
// that the lanes' ordering can be checked without a server: the engines'
// own tests and the crash tests run the same code against real ones.
type memTarget struct {
	mu   sync.Mutex
	rows map[int64]int64
	// history is every committed write, per key, in commit order (the
	// values are source transaction numbers).
	history map[int64][]int64
	commits []int // positions stored, in commit order
	locks   map[int64]*memTx
	// lockOf maps a key to the row lock it takes (default: itself); two
	// keys with one lock are one row for the target, as 'a' and 'A' are
	// under a case-insensitive collation.
	lockOf func(int64) int64
	// failOnce fails the first Exec that writes this key (0: never).
	failOnce int64
	// slowKey delays the Exec that writes it, before it takes any lock.
	slowKey   int64
	serial    int // batches committed on the serial path
	waitedOut int // lock waits that timed out
}

type memTx struct {
	db     *memTarget
	writes []memWrite
	held   []int64
}

type memWrite struct{ key, val int64 }

// errInjected is a lock wait timeout: injected, or waited out.
var errInjected = errors.New("lock wait timeout")

func newMemTarget() *memTarget {
	return &memTarget{rows: map[int64]int64{}, history: map[int64][]int64{}, locks: map[int64]*memTx{}, lockOf: func(k int64) int64 { return k }}
}

func (tx *memTx) exec(ctx context.Context, changes []source.Change) error {
	m := tx.db
	for _, c := range changes {
		key := c.After[0].(int64)
		if key == m.slowKey {
			time.Sleep(50 * time.Millisecond)
		}
		m.mu.Lock()
		if key == m.failOnce {
			m.failOnce = 0
			m.mu.Unlock()
			return errInjected
		}
		l := m.lockOf(key)
		// Waits for the lock as a server does: until a lock wait timeout.
		for start := time.Now(); m.locks[l] != nil && m.locks[l] != tx; {
			if ctx.Err() != nil || time.Since(start) > 2*time.Second {
				m.waitedOut++
				m.mu.Unlock()
				return errors.Join(errInjected, ctx.Err())
			}
			m.mu.Unlock()
			time.Sleep(time.Millisecond)
			m.mu.Lock()
		}
		if m.locks[l] == nil {
			m.locks[l] = tx
			tx.held = append(tx.held, l)
		}
		m.mu.Unlock()
		tx.writes = append(tx.writes, memWrite{key, c.After[1].(int64)})
	}
	return nil
}

func (tx *memTx) end(commit bool, pos checkpoint.Position) {
	m := tx.db
	m.mu.Lock()
	defer m.mu.Unlock()
	if commit {
		for _, w := range tx.writes {
			m.rows[w.key] = w.val
			m.history[w.key] = append(m.history[w.key], w.val)
		}
		n, _ := strconv.Atoi(pos.String())
		m.commits = append(m.commits, n)
	}
	for _, l := range tx.held {
		delete(m.locks, l)
	}
	tx.writes, tx.held = nil, nil
}

// memLane is a lane (or, as memSerial, the serial Target) of a memTarget.
type memLane struct {
	db *memTarget
	tx *memTx
}

func (l *memLane) BeginLane(context.Context) error { l.tx = &memTx{db: l.db}; return nil }
func (l *memLane) Exec(ctx context.Context, changes []source.Change) error {
	return l.tx.exec(ctx, changes)
}
func (l *memLane) Commit(_ context.Context, pos checkpoint.Position) error {
	l.tx.end(true, pos)
	l.tx = nil
	return nil
}
func (l *memLane) Rollback() {
	if l.tx != nil {
		l.tx.end(false, nil)
		l.tx = nil
	}
}
func (l *memLane) Close() error { return nil }

type memSerial struct{ memLane }

func (s *memSerial) Begin(ctx context.Context, _ checkpoint.Position) error { return s.BeginLane(ctx) }
func (s *memSerial) Commit(ctx context.Context, pos checkpoint.Position) error {
	s.db.mu.Lock()
	s.db.serial++
	s.db.mu.Unlock()
	return s.memLane.Commit(ctx, pos)
}
func (s *memSerial) Classify(err error) Class {
	if errors.Is(err, errInjected) {
		return Lock
	}
	return Transient
}
func (s *memSerial) Explain(context.Context, source.Change, error) string { return "" }
func (s *memSerial) Lane(context.Context, int) (Lane, error) {
	return &memLane{db: s.db}, nil
}

type intPos int

func (p intPos) String() string { return strconv.Itoa(int(p)) }

// runLanes applies txns to m through Run with two lanes and checks what
// every lane run must give: the final rows of applying the transactions
// one by one, each key's writes committed in source order, positions
// stored and reported in increasing order, ending at the last one.
func runLanes(t *testing.T, m *memTarget, txns [][]int64) {
	t.Helper()
	tb := &source.Table{Name: "t", Columns: []source.Column{{Name: "id"}, {Name: "v"}}, PK: []int{0}}
	in := make(chan source.Txn, len(txns))
	want := map[int64]int64{}
	for i, keys := range txns {
		var cs []source.Change
		for _, k := range keys {
			cs = append(cs, source.Change{Table: tb, Op: source.Update, Before: source.Row{k, int64(0)}, After: source.Row{k, int64(i + 1)}})
			want[k] = int64(i + 1)
		}
		in <- source.Txn{Changes: cs, End: intPos(i + 1)}
	}
	close(in)
	var reported []int
	durable := func(p checkpoint.Position, _ bool) {
		n, _ := strconv.Atoi(p.String())
		reported = append(reported, n)
	}
	cfg := Config{Region: "west", Pipeline: "east->west", BatchChanges: 40, LockRetries: 3, Lanes: 2, Logger: slog.New(slog.DiscardHandler)}
	if err := Run(context.Background(), cfg, &memSerial{memLane{db: m}}, in, durable); err != nil {
		t.Fatal(err)
	}
	for k, v := range want {
		if m.rows[k] != v {
			t.Errorf("key %d = %d, want %d", k, m.rows[k], v)
		}
	}
	for k, h := range m.history {
		for i := 1; i < len(h); i++ {
			if h[i] <= h[i-1] {
				t.Fatalf("key %d: writes committed out of source order: %v", k, h)
			}
		}
	}
	for _, seq := range [][]int{m.commits, reported} {
		for i := 1; i < len(seq); i++ {
			if seq[i] <= seq[i-1] {
				t.Fatalf("positions out of order: %v", seq)
			}
		}
		if len(seq) == 0 || seq[len(seq)-1] != len(txns) {
			t.Fatalf("last position %v, want %d", seq, len(txns))
		}
	}
}

// randomTxns returns n transactions of up to 10 keys drawn from keys.
func randomTxns(r *rand.Rand, n, keys int) [][]int64 {
	out := make([][]int64, n)
	for i := range out {
		seen := map[int64]bool{}
		for j := 1 + r.IntN(10); j > 0; j-- {
			k := int64(1 + r.IntN(keys))
			if !seen[k] {
				seen[k] = true
				out[i] = append(out[i], k)
			}
		}
	}
	return out
}

func TestLanesKeepOrder(t *testing.T) {
	for seed := range uint64(20) {
		t.Run(fmt.Sprint(seed), func(t *testing.T) {
			m := newMemTarget()
			runLanes(t, m, randomTxns(rand.New(rand.NewPCG(seed, 1)), 500, 50+int(seed)*20))
			if m.serial != 0 {
				t.Errorf("%d batches went to the serial path, want none", m.serial)
			}
		})
	}
}

func TestLaneFailureReplaysSerially(t *testing.T) {
	m := newMemTarget()
	m.failOnce = 77
	txns := randomTxns(rand.New(rand.NewPCG(7, 7)), 300, 200)
	txns[150] = append(txns[150], 77)
	runLanes(t, m, txns)
	if m.serial == 0 {
		t.Error("the failed batch was not applied on the serial path")
	}
}

// Keys 5 and 1005 are one row for the target. The earlier batch writes 5
// late; the later one writes 1005 at once (it is not a key of the earlier
// batch), so the earlier one waits for the later one's lock while the
// later one waits for it to commit: the later one must give up.
func TestLaneGivesUpOnHiddenLock(t *testing.T) {
	defer func(d time.Duration) { minLaneWait = d }(minLaneWait)
	minLaneWait = 100 * time.Millisecond
	m := newMemTarget()
	m.lockOf = func(k int64) int64 { return k % 1000 }
	m.slowKey = 5
	var txns [][]int64
	for i := range 40 {
		txns = append(txns, []int64{int64(100 + i)})
	}
	txns = append(txns, []int64{5})
	for i := range 40 {
		txns = append(txns, []int64{int64(1005 + i*1000)})
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		runLanes(t, m, txns)
	}()
	select {
	case <-done:
	case <-time.After(20 * time.Second):
		t.Fatal("the lanes deadlocked")
	}
	if m.serial == 0 || m.waitedOut > 0 {
		t.Errorf("%d batches applied on the serial path, %d lock waits timed out: want the later batch to give up before the earlier one's wait times out", m.serial, m.waitedOut)
	}
}

func TestSplitHoldsBackKeysInFlight(t *testing.T) {
	tb := &source.Table{Name: "t", Columns: []source.Column{{Name: "id"}}, PK: []int{0}}
	ins := func(k int64) source.Change { return source.Change{Table: tb, Op: source.Insert, After: source.Row{k}} }
	moved := source.Change{Table: tb, Op: source.Update, Before: source.Row{int64(9)}, After: source.Row{int64(3)}}
	l := &lanes{seed: newLanes(2, &memSerial{}).seed}
	keys, _, _ := l.split([]source.Change{ins(1), ins(2)})
	l.jobs = []*laneJob{{keys: keys}}
	// 1 is in flight: it is held back; the key change 9 -> 3 touches no key
	// in flight, so it and the later changes go now.
	_, now, later := l.split([]source.Change{ins(4), ins(1), moved, ins(3), ins(4)})
	key := func(cs []source.Change) []int64 {
		var out []int64
		for _, c := range cs {
			out = append(out, c.After[0].(int64))
		}
		return out
	}
	if got := fmt.Sprint(key(now), key(later)); got != "[4 3 3 4] [1]" {
		t.Errorf("now, later = %s", got)
	}
	_, now, later = l.split([]source.Change{ins(5), {Table: tb, Op: source.Update, Before: source.Row{int64(2)}, After: source.Row{int64(6)}}, ins(6), ins(5)})
	if got := fmt.Sprint(key(now), key(later)); got != "[5 5] [6 6]" {
		t.Errorf("a key moved from a key in flight: now, later = %s", got)
	}
}
