package postgres

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	pgxconn "github.com/jackc/pgx/v5/pgconn"

	"github.com/regiond/regiond/sink/batch"
	"github.com/regiond/regiond/source"
)

// ChunkTx is a transaction regiond writes into the target outside a
// pipeline (backfill, repair). It begins like every regiond transaction
// with a marker write, to a row of its own kind in regiond_checkpoints whose
// seq changes every time, so that no reader captures it; the rows go
// through the same statements and value conversions as the applier's, with
// session_replication_role = replica.
type ChunkTx struct {
	t    *target
	done bool // committed or rolled back
}

// BeginChunk opens a chunk transaction on a connection of its own. First
// it takes a shared lock on the checkpoint rows of the pipelines named in
// guard: that waits for an applier transaction of those pipelines still in
// progress, and holds the next one back until this transaction ends, so
// that everything those pipelines applied before is committed and nothing
// they apply later is overwritten. It returns the guard pipelines'
// positions (a pipeline with no checkpoint row is missing from the map).
// Then it writes the marker row named marker, of the given kind.
//
// Chunk transactions of one Applier must not run concurrently (use one
// Applier per parallel writer); the connection is kept for the next one.
func (a *Applier) BeginChunk(ctx context.Context, marker, kind string, guard []string) (*ChunkTx, map[string]string, error) {
	t := a.chunk
	a.chunk = nil
	if t == nil || t.conn.IsClosed() {
		cc := a.conn.Copy()
		cc.RuntimeParams["application_name"] = chunkApplication
		conn, err := pgx.ConnectConfig(ctx, cc)
		if err != nil {
			return nil, nil, fmt.Errorf("region %s: connect: %w", a.cfg.Target, err)
		}
		useTextArrayCodec(conn)
		if err := a.setupSession(ctx, conn); err != nil {
			closeConn(conn)
			return nil, nil, err
		}
		t = &target{a: a, conn: conn, tables: map[string]*pgTable{}, plans: map[*source.Table]*plan{}, reads: map[*pgTable]*ruleInfo{}}
	}
	if len(guard) > 0 {
		if err := a.yieldToAppliers(ctx, t.conn); err != nil {
			t.Rollback()
			closeConn(t.conn)
			return nil, nil, fmt.Errorf("region %s: %w", a.cfg.Target, err)
		}
	}
	c := &ChunkTx{t: t}
	pos := map[string]string{}
	b := &pgx.Batch{}
	b.Queue("BEGIN")
	if len(guard) > 0 {
		b.Queue("SELECT pipeline, position FROM "+a.checkpointTable()+" WHERE pipeline = ANY($1) FOR SHARE", guard).Query(func(rows pgx.Rows) error {
			for rows.Next() {
				var p, s string
				if err := rows.Scan(&p, &s); err != nil {
					return err
				}
				pos[p] = s
			}
			return rows.Err()
		})
	}
	b.Queue("INSERT INTO "+a.checkpointTable()+" AS c (pipeline, kind, source_region, position, seq, epoch, updated_at)"+
		" VALUES ($1, $2, '', '', 1, 0, now()) ON CONFLICT (pipeline) DO UPDATE SET seq = c.seq + 1, updated_at = now()",
		marker, kind).Exec(func(pgxconn.CommandTag) error { return nil })
	if err := t.send(ctx, b); err != nil {
		c.Rollback()
		return nil, nil, fmt.Errorf("region %s: begin chunk: %w", a.cfg.Target, err)
	}
	return c, pos, nil
}

// Upsert writes full rows of t: for a last_writer_wins table (per the
// applier's Rules) only rows above the target's row or tombstone in the
// rule's order, under the same locking read and guarded writes as the
// applier; other tables' rows replace the target's. It returns how many
// rows were skipped because the target held a newer state.
func (c *ChunkTx) Upsert(ctx context.Context, t *source.Table, rows []source.Row) (skipped int, err error) {
	changes := make([]source.Change, len(rows))
	for i, r := range rows {
		changes[i] = source.Change{Table: t, Op: source.Insert, After: r}
	}
	tg := c.t
	rules := tg.a.cfg.Rules
	b := tg.take()
	for _, st := range batch.Plan(rules, changes) {
		if st.Segment == nil {
			tg.pending = b
			cs, err := batch.ApplyLWW(ctx, batch.Unrecorded{RuleTarget: tg}, rules, st)
			if err != nil {
				return skipped, err
			}
			skipped += len(cs)
			b = tg.take()
			continue
		}
		p, err := tg.plan(ctx, st.Segment.Table)
		if err != nil {
			return skipped, err
		}
		tg.queueRows(b, p.upsert, p, p.written, st.Segment.Rows)
	}
	return skipped, tg.send(ctx, b)
}

// Exec queues a statement in the transaction (e.g. a progress record); it
// is sent with the commit.
func (c *ChunkTx) Exec(_ context.Context, query string, args ...any) error {
	if c.t.pending == nil {
		c.t.pending = &pgx.Batch{}
	}
	c.t.pending.Queue(query, args...).Exec(func(pgxconn.CommandTag) error { return nil })
	return nil
}

// Commit commits the transaction; the connection is kept for the next.
func (c *ChunkTx) Commit(ctx context.Context) error {
	b := c.t.take()
	b.Queue("COMMIT").Exec(func(ct pgxconn.CommandTag) error {
		if ct.String() != "COMMIT" {
			return fmt.Errorf("commit: the server answered %s", ct)
		}
		return nil
	})
	if err := c.t.send(ctx, b); err != nil {
		c.Rollback()
		return err
	}
	c.t.begun = false
	c.done = true
	c.t.a.chunk = c.t
	return nil
}

// Rollback abandons the transaction, if still open, and closes its
// connection. It is safe to call after Commit.
func (c *ChunkTx) Rollback() {
	if c.done {
		return
	}
	c.done = true
	c.t.Rollback()
	if !c.t.conn.IsClosed() {
		closeConn(c.t.conn)
	}
}

// Retryable reports whether err says "not now" (a lock conflict, a row
// inserted concurrently, a lost connection, a server going down) rather
// than that the target rejects the data: the chunk can be written again.
func (a *Applier) Retryable(err error) bool {
	return (&target{a: a}).Classify(err) != batch.Rejected
}

// chunkApplication is the application_name of chunk transactions'
// connections, so that they do not yield to each other.
const chunkApplication = "regiond chunk"

// yieldToAppliers waits (up to 10 s) while another session has waited
// more than 200 ms for a row lock of regiond_checkpoints, i.e. an applier
// waiting for the shared locks chunk transactions hold on its checkpoint
// row. PostgreSQL grants a shared
// row lock at once when only shared locks are held, however long an
// updater has been waiting, so parallel chunk transactions whose shared
// locks overlap would hold an applier back for as long as the backfill
// runs; letting the waiting applier in first keeps it moving.
func (a *Applier) yieldToAppliers(ctx context.Context, conn *pgx.Conn) error {
	deadline := time.Now().Add(10 * time.Second)
	for {
		var waiting bool
		err := conn.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM pg_locks l JOIN pg_stat_activity s ON s.pid = l.pid
			WHERE l.locktype = 'tuple' AND l.relation = $1::regclass AND l.pid <> pg_backend_pid()
			AND s.query_start < clock_timestamp() - interval '200 milliseconds' AND s.application_name <> $2)`,
			a.checkpointTable(), chunkApplication).Scan(&waiting)
		if err != nil || !waiting || time.Now().After(deadline) {
			return err
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(5 * time.Millisecond):
		}
	}
}
