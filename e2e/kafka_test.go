package e2e

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/regiond/regiond/internal/dbtest"
	"github.com/regiond/regiond/internal/kafkatest"
	"github.com/regiond/regiond/internal/testenv"
)

var kevDDL = map[string][]string{
	"mysql": {"CREATE TABLE kev (id BIGINT NOT NULL PRIMARY KEY, v BIGINT NOT NULL, amount DECIMAL(12,2), data VARBINARY(40), at DATETIME(6), note VARCHAR(100)) DEFAULT CHARSET=utf8mb4"},
	"postgres": {
		"CREATE TABLE kev (id bigint PRIMARY KEY, v bigint NOT NULL, amount numeric(12,2), data bytea, at timestamp(6), note varchar(100))",
		// Full before images for updates and deletes, as MariaDB logs them.
		"ALTER TABLE kev REPLICA IDENTITY FULL",
	},
}

// kevRow is the row a test write leaves for key id at version v: every
// column is a function of both, so an event's images can be checked.
type kevRow struct {
	id, v int64
}

func (r kevRow) args() []any {
	return []any{r.id, r.v, r.amount(), r.data(), r.at(), r.note()}
}
func (r kevRow) amount() string { return fmt.Sprintf("%d.%02d", (r.id*31+r.v*7)%100000, r.v%100) }
func (r kevRow) data() []byte   { return []byte(fmt.Sprintf("k%d\x00v%d", r.id, r.v)) }
func (r kevRow) at() string {
	return time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC).Add(time.Duration(r.v)*time.Second + time.Duration(r.id%1000000)*time.Microsecond).Format("2006-01-02 15:04:05.000000")
}
func (r kevRow) note() string { return fmt.Sprintf("row %d \"v\" %d ✓", r.id, r.v) }

// image is the row as the envelope must show it (README's JSON mapping).
func (r kevRow) image() map[string]any {
	return map[string]any{
		"id": json.Number(strconv.FormatInt(r.id, 10)), "v": json.Number(strconv.FormatInt(r.v, 10)),
		"amount": r.amount(), "data": base64.StdEncoding.EncodeToString(r.data()),
		"at": r.at()[:10] + "T" + r.at()[11:], "note": r.note(),
	}
}

// kevChange is one committed change as the writer knows it.
type kevChange struct {
	Region string
	Op     string
	Before map[string]any
	After  map[string]any
}

// kevLog records the committed changes per key, in commit order.
type kevLog struct {
	mu    sync.Mutex
	byKey map[int64][]kevChange
	n     int
}

func (l *kevLog) add(id int64, c ...kevChange) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.byKey[id] = append(l.byKey[id], c...)
	l.n += len(c)
}

// kevWriter writes transactions over one region's own keys and logs what
// committed.
type kevWriter struct {
	r    *region
	base int64
	next int64
	live map[int64]int64 // id -> current version
	rng  *rand.Rand
	log  *kevLog
}

func (w *kevWriter) q(mysql string) string {
	if w.r.engine() != "postgres" {
		return mysql
	}
	out, n := []byte{}, 0
	for i := 0; i < len(mysql); i++ {
		if mysql[i] == '?' {
			n++
			out = append(out, '$')
			out = strconv.AppendInt(out, int64(n), 10)
			continue
		}
		out = append(out, mysql[i])
	}
	return string(out)
}

// txn runs one transaction of 1 to 4 inserts, updates and deletes. A
// deadlock is retried with a new transaction, as applications do: backfill's
// locking chunk reads take rows in key order, the writer in random order,
// and InnoDB may choose the writer as the victim. The writer's state changes
// only once a transaction commits.
func (w *kevWriter) txn(ctx context.Context) error {
	for {
		if err := w.attempt(ctx); !deadlocked(err) {
			return err
		}
	}
}

func (w *kevWriter) attempt(ctx context.Context) error {
	tx, err := w.r.db.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	type pending struct {
		id int64
		c  kevChange
		v  int64 // new version; -1 deleted
	}
	var done []pending
	touched := map[int64]int64{}
	cur := func(id int64) (int64, bool) {
		if v, ok := touched[id]; ok {
			return v, v >= 0
		}
		v, ok := w.live[id]
		return v, ok
	}
	pick := func() (int64, int64, bool) {
		if len(w.live) == 0 {
			return 0, 0, false
		}
		ids := make([]int64, 0, len(w.live))
		for id := range w.live {
			ids = append(ids, id)
		}
		sort.Slice(ids, func(i, j int) bool { return ids[i] < ids[j] })
		id := ids[w.rng.IntN(len(ids))]
		v, ok := cur(id)
		return id, v, ok
	}
	for range 1 + w.rng.IntN(4) {
		k := w.rng.IntN(10)
		switch {
		case k < 4 || len(w.live) < 5:
			id := w.next
			w.next++
			row := kevRow{id, 1}
			if _, err := tx.ExecContext(ctx, w.q("INSERT INTO kev VALUES (?, ?, ?, ?, ?, ?)"), row.args()...); err != nil {
				tx.Rollback()
				return err
			}
			touched[id] = 1
			done = append(done, pending{id, kevChange{Region: w.r.name, Op: "c", After: row.image()}, 1})
		case k < 8:
			id, v, ok := pick()
			if !ok {
				continue
			}
			row := kevRow{id, v + 1}
			if _, err := tx.ExecContext(ctx, w.q("UPDATE kev SET v = ?, amount = ?, data = ?, at = ?, note = ? WHERE id = ?"),
				row.v, row.amount(), row.data(), row.at(), row.note(), id); err != nil {
				tx.Rollback()
				return err
			}
			touched[id] = v + 1
			done = append(done, pending{id, kevChange{Region: w.r.name, Op: "u", Before: kevRow{id, v}.image(), After: row.image()}, v + 1})
		default:
			id, v, ok := pick()
			if !ok {
				continue
			}
			if _, err := tx.ExecContext(ctx, w.q("DELETE FROM kev WHERE id = ?"), id); err != nil {
				tx.Rollback()
				return err
			}
			touched[id] = -1
			done = append(done, pending{id, kevChange{Region: w.r.name, Op: "d", Before: kevRow{id, v}.image()}, -1})
		}
	}
	if err := tx.Commit(); err != nil {
		return err
	}
	for _, p := range done {
		w.log.add(p.id, p.c)
	}
	for id, v := range touched {
		if v < 0 {
			delete(w.live, id)
		} else {
			w.live[id] = v
		}
	}
	return nil
}

// kafkaEvents reads the topic with kcat and groups its events by key: per
// key in offset order (a key's events are all in one partition), tombstones
// included as nil envelopes.
type kafkaEvent struct {
	env       kafkatest.Envelope
	tombstone bool
	partition int
}

func readKev(t *testing.T, broker string) (map[string][]kafkaEvent, int) {
	t.Helper()
	recs := kafkatest.ReadTopic(t, broker, "e2e.kev")
	byKey := map[string][]kafkaEvent{}
	for _, r := range recs {
		ev := kafkaEvent{tombstone: r.Value == nil, partition: r.Partition}
		if !ev.tombstone {
			ev.env = r.Decode(t)
		}
		if prev := byKey[r.Key]; len(prev) > 0 && prev[0].partition != r.Partition {
			t.Fatalf("key %s in partitions %d and %d: per-key order cannot hold", r.Key, prev[0].partition, r.Partition)
		}
		byKey[r.Key] = append(byKey[r.Key], ev)
	}
	return byKey, len(recs)
}

// dedupe drops events whose (region, pos) came before, and checks that a
// tombstone follows each delete; it returns the changes and how many
// duplicates it dropped.
func dedupe(t *testing.T, key string, evs []kafkaEvent) ([]kevChange, int) {
	t.Helper()
	seen := map[string]bool{}
	var out []kevChange
	dups := 0
	for i, ev := range evs {
		if ev.tombstone {
			if i == 0 || evs[i-1].tombstone || evs[i-1].env.Op != "d" {
				t.Errorf("key %s: tombstone at %d not right after a delete", key, i)
			}
			continue
		}
		e := ev.env
		if e.Op == "d" && (i+1 == len(evs) || !evs[i+1].tombstone) {
			t.Errorf("key %s: delete %s not followed by a tombstone", key, e.Source.Pos)
		}
		id := e.Source.Region + " " + e.Source.Pos
		if seen[id] {
			dups++
			continue
		}
		seen[id] = true
		out = append(out, kevChange{Region: e.Source.Region, Op: e.Op, Before: e.Before, After: e.After})
	}
	return out, dups
}

// checkKev compares the topic with the committed changes. It returns "" when
// every committed change is there exactly as committed (after dropping
// duplicates), and the number of duplicates.
func checkKev(t *testing.T, broker string, log *kevLog, engines map[string]string) (string, int) {
	t.Helper()
	byKey, _ := readKev(t, broker)
	log.mu.Lock()
	defer log.mu.Unlock()
	dups := 0
	got := map[int64][]kevChange{}
	for key, evs := range byKey {
		var k struct {
			ID int64 `json:"id"`
		}
		if err := json.Unmarshal([]byte(key), &k); err != nil || key != fmt.Sprintf(`{"id":%d}`, k.ID) {
			t.Fatalf("message key %q is not {\"id\":N}", key)
		}
		for _, ev := range evs {
			if ev.tombstone {
				continue
			}
			s := ev.env.Source
			if s.Engine != engines[s.Region] || s.DB != "app" || s.Table != "kev" || s.TxID == "" || s.TsMs == 0 || ev.env.TsMs == 0 {
				t.Fatalf("key %s: bad source block %+v (ts_ms %d)", key, s, ev.env.TsMs)
			}
		}
		changes, n := dedupe(t, key, evs)
		dups += n
		got[k.ID] = changes
	}
	for id, want := range log.byKey {
		if diff := cmp.Diff(want, got[id]); diff != "" {
			return fmt.Sprintf("key %d: events (-committed +published):\n%s", id, diff), dups
		}
	}
	for id := range got {
		if _, ok := log.byKey[id]; !ok {
			return fmt.Sprintf("key %d: published but never written", id), dups
		}
	}
	return "", dups
}

func waitKev(t *testing.T, broker string, log *kevLog, engines map[string]string, timeout time.Duration) int {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		diff, dups := checkKev(t, broker, log, engines)
		if diff == "" {
			return dups
		}
		if time.Now().After(deadline) {
			t.Fatalf("the topic does not hold the committed changes after %v:\n%s", timeout, diff)
		}
		time.Sleep(time.Second)
	}
}

// TestKafkaCrash: a MariaDB and a PostgreSQL region written concurrently,
// each region's changes published by its Kafka pipeline, with regiond
// SIGKILLed at random moments. kcat reads the topic back: every committed
// change is there once after dropping duplicates by source.pos (none before
// the first kill), in commit order per key, with the envelope and images as
// committed; changes regiond applied are not published again; a row written
// in both engines keeps its key and partition.
func TestKafkaCrash(t *testing.T) {
	kafkatest.RequireKcat(t)
	broker := kafkatest.Start(t)
	m1 := &region{name: "m1", srv: testenv.MariaDB(t, 1)}
	p1 := &region{name: "p1", srv: testenv.Postgres(t)}
	m1.db = dbtest.Open(t, m1.srv)
	p1.db = dbtest.OpenPostgres(t, p1.srv)
	dbtest.Exec(t, m1.db, kevDDL["mysql"]...)
	dbtest.Exec(t, p1.db, kevDDL["postgres"]...)
	all := []*region{m1, p1}
	engines := map[string]string{"m1": "mysql", "p1": "postgres"}
	state := t.TempDir()
	cfg := writeConfig(t, all, []string{"kev"}, fmt.Sprintf("state_dir: %s\nkafka:\n  brokers: [%s]\n  topic_prefix: e2e\n  partitions: 4\n  tombstones: true\n", state, broker))
	d := newDaemon(t, "run", "--config", cfg)
	d.start()
	waitMesh(t, all...)
	waitFiles(t, filepath.Join(state, "position-*kafka*.json"), 2)

	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d", seed)
	log := &kevLog{byKey: map[int64][]kevChange{}}
	writers := []*kevWriter{
		{r: m1, base: 1_000_000, next: 1_000_000, live: map[int64]int64{}, rng: rand.New(rand.NewPCG(seed, 1)), log: log},
		{r: p1, base: 2_000_000, next: 2_000_000, live: map[int64]int64{}, rng: rand.New(rand.NewPCG(seed, 2)), log: log},
	}
	run := func(n int, pause time.Duration, txns *atomic.Int64) error {
		var wg sync.WaitGroup
		errs := make(chan error, len(writers))
		for _, w := range writers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for range n {
					if err := w.txn(t.Context()); err != nil {
						errs <- fmt.Errorf("%s: %w", w.r.name, err)
						return
					}
					txns.Add(1)
					if pause > 0 {
						time.Sleep(time.Duration(w.rng.Int64N(int64(pause))))
					}
				}
			}()
		}
		wg.Wait()
		close(errs)
		return <-errs
	}

	// Phase 1, no crash: no duplicates.
	var txns atomic.Int64
	if err := run(150, 0, &txns); err != nil {
		t.Fatal(err)
	}
	if dups := waitKev(t, broker, log, engines, 3*time.Minute); dups != 0 {
		t.Fatalf("%d duplicates without a crash", dups)
	}
	t.Logf("phase 1: %d transactions, %d changes published, no duplicates", txns.Load(), log.n)

	// Phase 2: writes while the daemon is killed at random moments.
	var running atomic.Bool
	running.Store(true)
	errc := make(chan error, 1)
	go func() { errc <- run(1500, 6*time.Millisecond, &txns); running.Store(false) }()
	rng := rand.New(rand.NewPCG(seed, 3))
	kills := 0
	for running.Load() || kills < 3 {
		time.Sleep(time.Duration(300+rng.IntN(1500)) * time.Millisecond)
		d.kill()
		kills++
		t.Logf("kill %d after %d transactions", kills, txns.Load())
		time.Sleep(time.Duration(rng.IntN(400)) * time.Millisecond)
		d.start()
	}
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
	dups := waitKev(t, broker, log, engines, 3*time.Minute)
	t.Logf("phase 2: %d transactions, %d changes, %d kills, %d duplicates (dropped by source.pos)", txns.Load(), log.n, kills, dups)

	// Phase 3: rows written in MariaDB, replicated, then updated in
	// PostgreSQL: the same key bytes, so the same partition.
	dbtest.WaitEqualCanonical(t, 3*time.Minute, "kev", m1.canon(), p1.canon())
	handed := 0
	for id, v := range writers[0].live {
		if handed == 20 {
			break
		}
		row := kevRow{id, v + 1}
		if _, err := p1.db.Exec("UPDATE kev SET v = $1, amount = $2, data = $3, at = $4, note = $5 WHERE id = $6",
			row.v, row.amount(), row.data(), row.at(), row.note(), id); err != nil {
			t.Fatal(err)
		}
		writers[0].live[id] = v + 1
		log.add(id, kevChange{Region: "p1", Op: "u", Before: kevRow{id, v}.image(), After: row.image()})
		handed++
	}
	waitKev(t, broker, log, engines, 3*time.Minute)
	t.Logf("phase 3: %d rows of m1 updated in p1, same key and partition", handed)

	// The Postgres slot of p1->kafka confirmed past the last write.
	last := currentLSN(t, p1.db)
	deadline := time.Now().Add(time.Minute)
	for behind := slotsBehind(t, p1.db, last); len(behind) > 0; behind = slotsBehind(t, p1.db, last) {
		if time.Now().After(deadline) {
			t.Fatalf("slots not past the last write %s: %v", last, behind)
		}
		time.Sleep(200 * time.Millisecond)
	}
	if _, code := d.term(10 * time.Second); code != 0 {
		t.Fatalf("exit code %d after SIGTERM", code)
	}
}

// waitFiles waits until pattern matches n files.
func waitFiles(t *testing.T, pattern string, n int) {
	t.Helper()
	deadline := time.Now().Add(2 * time.Minute)
	for {
		m, _ := filepath.Glob(pattern)
		if len(m) >= n {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d files match %s after 2 minutes, want %d", len(m), pattern, n)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// TestKafkaBackfill: rows that existed before regiond started in a MariaDB
// and a PostgreSQL region are published by `regiond backfill --to kafka` as
// op "r" events while writers keep changing them; replaying each key's
// events in topic order then gives exactly the rows each region holds.
func TestKafkaBackfill(t *testing.T) {
	kafkatest.RequireKcat(t)
	broker := kafkatest.Start(t)
	m1 := &region{name: "m1", srv: testenv.MariaDB(t, 1)}
	p1 := &region{name: "p1", srv: testenv.Postgres(t)}
	m1.db = dbtest.Open(t, m1.srv)
	p1.db = dbtest.OpenPostgres(t, p1.srv)
	dbtest.Exec(t, m1.db, kevDDL["mysql"]...)
	dbtest.Exec(t, p1.db, kevDDL["postgres"]...)
	all := []*region{m1, p1}
	state := t.TempDir()
	cfg := writeConfig(t, all, []string{"kev"}, fmt.Sprintf("state_dir: %s\nkafka:\n  brokers: [%s]\n  topic_prefix: e2e\n  partitions: 3\n  tombstones: true\n", state, broker))

	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d", seed)
	log := &kevLog{byKey: map[int64][]kevChange{}}
	writers := []*kevWriter{
		{r: m1, next: 1_000_000, live: map[int64]int64{}, rng: rand.New(rand.NewPCG(seed, 1)), log: log},
		{r: p1, next: 2_000_000, live: map[int64]int64{}, rng: rand.New(rand.NewPCG(seed, 2)), log: log},
	}
	// Rows from before regiond: each region's own, not replicated.
	for _, w := range writers {
		for range 400 {
			if err := w.txn(t.Context()); err != nil {
				t.Fatal(err)
			}
		}
	}
	d := newDaemon(t, "run", "--config", cfg)
	d.start()
	waitMesh(t, all...)
	waitFiles(t, filepath.Join(state, "position-*kafka*.json"), 2)

	// Backfill each region while it alone writes: the backfilled region's
	// own writes are ordered after its "r" events by the chunks' locks; the
	// rows it holds from other regions must be quiet and caught up (see the
	// README's limits).
	published := 0
	for i, r := range all {
		if i > 0 {
			prev := all[i-1]
			waitApplied(t, prev, r)
		}
		w := writers[i]
		var stop atomic.Bool
		done := make(chan error, 1)
		go func() {
			for !stop.Load() {
				if err := w.txn(t.Context()); err != nil {
					done <- err
					return
				}
				time.Sleep(time.Millisecond)
			}
			done <- nil
		}()
		out, err := exec.Command(regiondBinary(t), "backfill", "--config", cfg, "--from", r.name, "--to", "kafka", "--chunk-size", "50").CombinedOutput()
		stop.Store(true)
		if werr := <-done; werr != nil {
			t.Fatal(werr)
		}
		if err != nil {
			t.Fatalf("backfill --from %s --to kafka: %v\n%s", r.name, err, out)
		}
		t.Logf("%s", bytes.TrimSpace(out))
		var n, tables int
		var took string
		line := out[bytes.LastIndex(out, []byte("backfill "+r.name+"->kafka: ")):]
		if _, err := fmt.Sscanf(string(line), "backfill "+r.name+"->kafka: %d rows of %d tables published in %s", &n, &tables, &took); err != nil {
			t.Fatalf("backfill output: %v\n%s", err, out)
		}
		published += n
	}

	// Replaying each key's events gives the region's rows.
	want := map[string]map[string]any{}
	for _, w := range writers {
		for id, v := range w.live {
			want[fmt.Sprintf(`{"id":%d}`, id)] = kevRow{id, v}.image()
		}
	}
	deadline := time.Now().Add(time.Minute)
	for {
		byKey, _ := readKev(t, broker)
		got := map[string]map[string]any{}
		snaps := 0
		for key, evs := range byKey {
			for _, ev := range evs {
				if ev.tombstone {
					continue
				}
				switch ev.env.Op {
				case "c", "u", "r":
					got[key] = ev.env.After
				case "d":
					delete(got, key)
				}
				if ev.env.Op == "r" {
					snaps++
					if ev.env.Before != nil || !strings.HasPrefix(ev.env.Source.TxID, "backfill-") {
						t.Fatalf("key %s: snapshot event with before image or txid %q", key, ev.env.Source.TxID)
					}
				}
			}
		}
		diff := cmp.Diff(want, got)
		if diff == "" && snaps == published {
			t.Logf("%d keys replay to the regions' rows; %d snapshot events", len(want), snaps)
			break
		}
		if time.Now().After(deadline) {
			keys := map[string]bool{}
			for key := range want {
				keys[key] = true
			}
			for key := range got {
				keys[key] = true
			}
			for key := range keys {
				if cmp.Equal(want[key], got[key]) {
					continue
				}
				var seq []string
				for _, ev := range byKey[key] {
					if ev.tombstone {
						seq = append(seq, "tombstone")
						continue
					}
					v := "-"
					if ev.env.After != nil {
						v = fmt.Sprint(ev.env.After["v"])
					}
					seq = append(seq, fmt.Sprintf("%s v%s %s %s ts %d/%d", ev.env.Op, v, ev.env.Source.Region, ev.env.Source.Pos, ev.env.Source.TsMs, ev.env.TsMs))
				}
				t.Logf("key %s: events %v", key, seq)
			}
			t.Fatalf("replayed topic differs from the regions' rows (%d snapshot events, backfill published %d) (-rows +replayed):\n%s", snaps, published, diff)
		}
		time.Sleep(time.Second)
	}
}

// waitApplied waits until the pipeline from src into dst stored src's
// current GTID position (src is MariaDB and idle).
func waitApplied(t *testing.T, src, dst *region) {
	t.Helper()
	want := dbtest.GTIDPos(t, src.db)
	deadline := time.Now().Add(2 * time.Minute)
	for {
		var pos string
		_ = dst.db.QueryRow("SELECT position FROM regiond_checkpoints WHERE pipeline = $1", src.name+"->"+dst.name).Scan(&pos)
		if pos == want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s->%s at %q, want %q", src.name, dst.name, pos, want)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
