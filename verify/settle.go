package verify

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"hash/fnv"
	"log/slog"
	"os"
	"sync"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/regiond/regiond/checkpoint"
	"github.com/regiond/regiond/config"
	"github.com/regiond/regiond/internal/pgconn"
	"github.com/regiond/regiond/snapshot"
	"github.com/regiond/regiond/source"
	mysqlsource "github.com/regiond/regiond/source/mysql"
	pgsource "github.com/regiond/regiond/source/postgres"
)

// settler tells when every pipeline into the compared regions has passed
// given source positions.
//
// A pipeline src->dst has passed position p of src when dst stores (in
// regiond_checkpoints) a position at or after p; or, for a PostgreSQL
// source, when the pipeline's slot is confirmed at or after p (the reader
// confirms only what the target made durable, and moves past WAL that holds
// nothing for it); or, for a MySQL source, when every transaction between
// the stored position and p is one the pipeline skips (regiond's own
// writes, tables not configured: a pipeline stores no position for those,
// see DESIGN.md §Positions), which the settler finds by reading that part of
// the binlog with the pipeline's own reader.
type settler struct {
	log       *slog.Logger
	sources   map[string]*posSource // every region of the config
	pipelines []pipe                // into the compared regions
	dbs       map[string]*snapshot.DB
}

// pipe is one pipeline whose progress matters.
type pipe struct {
	src, dst string
	dstDB    *snapshot.DB
}

func (p pipe) name() string { return p.src + "->" + p.dst }

// posSource reads one region's current position and, for MySQL, scans
// binlog gaps.
type posSource struct {
	region config.Region
	db     *snapshot.DB
	mysql  *mysqlsource.Reader
	mu     sync.Mutex
	// skipped caches gap scans: from a stored position, the binlog holds
	// only skipped transactions up to the given position.
	skipped map[string]checkpoint.GTID
}

func newSettler(cfg *config.Config, compared []*region, log *slog.Logger) *settler {
	s := &settler{log: log, sources: map[string]*posSource{}, dbs: map[string]*snapshot.DB{}}
	tables := map[string]bool{}
	needLocal := false
	for name, t := range cfg.Tables {
		tables[name] = true
		needLocal = needLocal || t.Rule() == config.RuleLastWriterWins || t.Rule() == config.RuleHomeRegion
	}
	for _, r := range compared {
		s.dbs[r.name] = r.db
	}
	for _, rc := range cfg.Regions {
		ps := &posSource{region: rc, skipped: map[string]checkpoint.GTID{}}
		if db, ok := s.dbs[rc.Name]; ok {
			ps.db = db
		}
		if rc.Engine == config.EngineMySQL {
			if d, err := config.ParseMySQLDSN(rc.DSN); err == nil {
				h := fnv.New32a()
				fmt.Fprintf(h, "verify %s %d", rc.Name, os.Getpid())
				ps.mysql, _ = mysqlsource.New(mysqlsource.Config{
					Region: rc.Name,
					Conn:   mysqlParams(d),
					Flavor: rc.Flavor,
					// A replica id of its own, unlike any pipeline's.
					ServerID: h.Sum32() | 1<<31 | 1,
					Tables:   tables,
				}, log)
			}
		}
		s.sources[rc.Name] = ps
	}
	for _, dst := range compared {
		for _, src := range cfg.Regions {
			if src.Name == dst.name && !needLocal {
				continue
			}
			s.pipelines = append(s.pipelines, pipe{src: src.Name, dst: dst.name, dstDB: dst.db})
		}
	}
	return s
}

func (s *settler) close() {
	for _, ps := range s.sources {
		if ps.mysql != nil {
			ps.mysql.Close()
		}
		if ps.db != nil && s.dbs[ps.region.Name] == nil {
			ps.db.Close()
		}
	}
}

// open returns the region's database, opening it for regions that are not
// compared (sources only).
func (ps *posSource) open() (*snapshot.DB, error) {
	ps.mu.Lock()
	defer ps.mu.Unlock()
	if ps.db != nil {
		return ps.db, nil
	}
	db, err := snapshot.Open(ps.region)
	if err != nil {
		return nil, err
	}
	ps.db = db
	return db, nil
}

// positions returns every region's current log position. A region that
// cannot be reached has no entry: pipelines from it are not waited for (a
// lost region's writes cannot be in flight towards anyone before it
// returns), and a log line says so.
func (s *settler) positions(ctx context.Context) map[string]checkpoint.Position {
	out := map[string]checkpoint.Position{}
	for name, ps := range s.sources {
		pos, err := ps.current(ctx)
		if err != nil {
			s.log.Warn("cannot read the region's log position; rows in flight from it are not waited for", "region", name, "error", err)
			continue
		}
		out[name] = pos
	}
	return out
}

func (ps *posSource) current(ctx context.Context) (checkpoint.Position, error) {
	if ps.mysql != nil {
		return ps.mysql.CurrentPosition(ctx)
	}
	db, err := ps.open()
	if err != nil {
		return nil, err
	}
	var s string
	if err := db.SQL.QueryRowContext(ctx, "SELECT pg_current_wal_lsn()::text").Scan(&s); err != nil {
		return nil, fmt.Errorf("region %s: read wal position: %w", ps.region.Name, err)
	}
	return checkpoint.ParseLSN(s)
}

// wait blocks until every pipeline has passed the positions (true), or
// until timeout (false).
func (s *settler) wait(ctx context.Context, pos map[string]checkpoint.Position, timeout time.Duration) (bool, error) {
	deadline := time.Now().Add(timeout)
	pending := append([]pipe(nil), s.pipelines...)
	delay := 50 * time.Millisecond
	for {
		var still []pipe
		for _, p := range pending {
			want, ok := pos[p.src]
			if !ok {
				continue
			}
			passed, err := s.passed(ctx, p, want, time.Until(deadline))
			if err != nil {
				s.log.Warn("cannot tell how far the pipeline is", "pipeline", p.name(), "error", err)
			}
			if !passed {
				still = append(still, p)
			}
		}
		if len(still) == 0 {
			return true, nil
		}
		if time.Now().After(deadline) {
			for _, p := range still {
				s.log.Warn("pipeline did not pass the position at which differing rows were read", "pipeline", p.name(), "position", pos[p.src].String())
			}
			return false, nil
		}
		pending = still
		select {
		case <-ctx.Done():
			return false, ctx.Err()
		case <-time.After(delay):
		}
		// Short polls: a read long after the pipelines passed sees newer
		// writes, which hides the state the regions had in common.
		delay = min(delay*2, 200*time.Millisecond)
	}
}

// passed reports whether pipeline p has passed want.
func (s *settler) passed(ctx context.Context, p pipe, want checkpoint.Position, budget time.Duration) (bool, error) {
	stored, ok, err := storedPosition(ctx, p.dstDB, p.name())
	if err != nil || !ok {
		// No checkpoint: the pipeline never started, nothing flows through it.
		return !ok && err == nil, err
	}
	ps := s.sources[p.src]
	switch w := want.(type) {
	case checkpoint.LSN:
		at, err := checkpoint.ParseLSN(stored)
		if err == nil && at >= w {
			return true, nil
		}
		db, err := ps.open()
		if err != nil {
			return false, err
		}
		var confirmed sql.NullString
		err = db.SQL.QueryRowContext(ctx, "SELECT confirmed_flush_lsn::text FROM pg_replication_slots WHERE slot_name = $1",
			pgsource.SlotName(p.src, p.dst)).Scan(&confirmed)
		if errors.Is(err, sql.ErrNoRows) || err == nil && !confirmed.Valid {
			return false, nil
		}
		if err != nil {
			return false, err
		}
		c, err := checkpoint.ParseLSN(confirmed.String)
		return err == nil && c >= w, err
	case checkpoint.GTID:
		if ps.mysql == nil {
			return false, fmt.Errorf("region %s: no binlog reader", p.src)
		}
		at, err := ps.mysql.ParsePosition(stored)
		if err != nil {
			return false, err
		}
		g := at.(checkpoint.GTID)
		if g.Contains(w) {
			return true, nil
		}
		return ps.onlySkipped(ctx, g, w, max(budget, 5*time.Second))
	}
	return false, fmt.Errorf("unknown position type %T", want)
}

// onlySkipped reads the binlog after from and reports whether every
// transaction up to want is one pipelines skip.
func (ps *posSource) onlySkipped(ctx context.Context, from, want checkpoint.GTID, budget time.Duration) (bool, error) {
	start := from
	ps.mu.Lock()
	if upto, ok := ps.skipped[from.String()]; ok {
		if upto.Contains(want) {
			ps.mu.Unlock()
			return true, nil
		}
		start = upto // scanned before: go on from there
	}
	ps.mu.Unlock()
	ctx, cancel := context.WithTimeout(ctx, budget)
	defer cancel()
	out := make(chan source.Txn, 64)
	errc := make(chan error, 1)
	go func() { errc <- ps.mysql.Read(ctx, start, out) }()
	defer func() {
		cancel()
		<-errc
	}()
	for {
		select {
		case txn := <-out:
			if len(txn.Changes) > 0 {
				return false, nil
			}
			if g, ok := txn.End.(checkpoint.GTID); ok {
				ps.mu.Lock()
				ps.skipped[from.String()] = g
				ps.mu.Unlock()
				if g.Contains(want) {
					return true, nil
				}
			}
		case err := <-errc:
			errc <- err
			if ctx.Err() != nil {
				return false, nil
			}
			return false, err
		}
	}
}

// storedPosition reads pipeline's position in a region's
// regiond_checkpoints; ok is false when there is none.
func storedPosition(ctx context.Context, db *snapshot.DB, pipeline string) (string, bool, error) {
	q := "SELECT `position` FROM `regiond_checkpoints` WHERE `pipeline` = ?"
	if db.Engine == config.EnginePostgres {
		q = "SELECT position FROM " + pgconn.Ident(db.Schema, pgconn.CheckpointTable) + " WHERE pipeline = $1"
	}
	var pos string
	err := db.SQL.QueryRowContext(ctx, q, pipeline).Scan(&pos)
	if errors.Is(err, sql.ErrNoRows) || isMissingTable(err) {
		return "", false, nil
	}
	if err != nil {
		return "", false, fmt.Errorf("region %s: read checkpoint of %s: %w", db.Region, pipeline, err)
	}
	return pos, true, nil
}

// settle reads differing rows again once the pipelines have passed the
// positions at which they were read: rows now equal were in flight; rows
// read the same again still differ; rows that changed are read again, up
// to SettleRounds times, and then reported as unsettled.
func (v *verifier) settle(ctx context.Context, t *table, list []*Difference) (real, unsettled []*Difference, err error) {
	pending := list
	deadline := time.Now().Add(v.opts.SettleTimeout)
	for round := 0; round < v.opts.SettleRounds && len(pending) > 0; round++ {
		pos := v.settler.positions(ctx)
		ok, err := v.settler.wait(ctx, pos, time.Until(deadline))
		if err != nil {
			return nil, nil, err
		}
		if !ok {
			break
		}
		fresh, err := v.readKeys(ctx, t, pending)
		if err != nil {
			return nil, nil, err
		}
		var next []*Difference
		for i, d := range pending {
			now := fresh[i]
			if v.sameImages(t, now) {
				continue // was in flight
			}
			if v.sameAsBefore(t, d.images, now) {
				real = append(real, d)
				continue
			}
			if d.history == nil {
				d.history = map[string][]source.Row{}
				for r, img := range d.images {
					d.history[r] = append(d.history[r], img)
				}
			}
			for _, r := range v.regions {
				d.history[r.name] = append(d.history[r.name], now[r.name])
			}
			if v.passedCommonState(t, d.history) {
				continue // replicated, and written again since: in flight
			}
			d.images = now
			v.describeDiff(t, d)
			next = append(next, d)
		}
		pending = next
		v.log.Debug("settle round", "table", t.Name, "round", round+1, "real", len(real), "changing", len(pending))
	}
	return real, pending, nil
}

// passedCommonState reports whether, over the reads of a row so far, every
// region has held one same row state (or its absence): the pipelines carried
// it everywhere, and what differs now are newer writes still in flight. A
// region that keeps a row no other region ever held does not pass.
func (v *verifier) passedCommonState(t *table, history map[string][]source.Row) bool {
	same := func(ra int, a source.Row, rb int, b source.Row) bool {
		if (a == nil) != (b == nil) {
			return false
		}
		return a == nil || len(t.differingColumns(ra, a, rb, b)) == 0
	}
	for _, cand := range history[v.regions[0].name] {
		everywhere := true
		for ri := 1; ri < len(v.regions) && everywhere; ri++ {
			found := false
			for _, s := range history[v.regions[ri].name] {
				found = found || same(0, cand, ri, s)
			}
			everywhere = found
		}
		if everywhere {
			return true
		}
	}
	return false
}

// sameAsBefore reports whether every region still holds the row it held.
func (v *verifier) sameAsBefore(t *table, before, now map[string]source.Row) bool {
	for i, r := range v.regions {
		a, b := before[r.name], now[r.name]
		if (a == nil) != (b == nil) {
			return false
		}
		if a != nil && len(t.differingColumns(i, a, i, b)) > 0 {
			return false
		}
	}
	return true
}

// readKeys reads the rows of the differences' keys in every region.
func (v *verifier) readKeys(ctx context.Context, t *table, ds []*Difference) ([]map[string]source.Row, error) {
	out := make([]map[string]source.Row, len(ds))
	for i := range out {
		out[i] = map[string]source.Row{}
	}
	index := map[string]int{}
	keys := make([]snapshot.Key, len(ds))
	for i, d := range ds {
		keys[i] = d.key
		index[keyString(d.key)] = i
	}
	// All regions at once, so that a write landing between the reads is
	// less likely.
	rows := make([][]source.Row, len(v.regions))
	g, gctx := errgroup.WithContext(ctx)
	for ri, reg := range v.regions {
		g.Go(func() error {
			var err error
			rows[ri], err = t.per[ri].ReadKeys(gctx, reg.db.SQL, keys, false)
			return err
		})
	}
	if err := g.Wait(); err != nil {
		return nil, err
	}
	for ri, reg := range v.regions {
		for _, row := range rows[ri] {
			if i, ok := index[keyString(t.per[ri].KeyOf(row))]; ok {
				out[i][reg.name] = row
			}
		}
	}
	return out, nil
}
