package mysql

import (
	"context"
	"database/sql"
	"fmt"
	"strings"

	"github.com/regiond/regiond/sink/batch"
	"github.com/regiond/regiond/source"
)

// ChunkTx is a transaction regiond writes into the target outside a
// pipeline (backfill, repair). It begins like every regiond transaction
// with a marker write, to a row of its own kind in regiond_checkpoints whose
// seq changes every time, so that no reader captures it; the rows go
// through the same statements and value conversions as the applier's.
type ChunkTx struct {
	w    *writer
	conn *sql.Conn
}

// BeginChunk opens a chunk transaction. First it takes a shared lock on the
// checkpoint rows of the pipelines named in guard: that waits for an
// applier transaction of those pipelines still in progress, and holds the
// next one back until this transaction ends, so that everything those
// pipelines applied before is committed and nothing they apply later is
// overwritten. It returns the guard pipelines' positions (a pipeline with
// no checkpoint row is missing from the map). Then it writes the marker row
// named marker, of the given kind. Chunk transactions of one Applier must
// not run concurrently: use one Applier per parallel writer.
func (a *Applier) BeginChunk(ctx context.Context, marker, kind string, guard []string) (*ChunkTx, map[string]string, error) {
	conn, err := a.db.Conn(ctx)
	if err != nil {
		return nil, nil, fmt.Errorf("region %s: connect: %w", a.cfg.Target, err)
	}
	c := &ChunkTx{conn: conn, w: &writer{a: a, conn: conn, cols: map[*source.Table][]targetColumn{}}}
	pos, err := c.begin(ctx, marker, kind, guard)
	if err != nil {
		c.Rollback()
		return nil, nil, fmt.Errorf("region %s: %w", a.cfg.Target, err)
	}
	return c, pos, nil
}

func (c *ChunkTx) begin(ctx context.Context, marker, kind string, guard []string) (map[string]string, error) {
	for _, q := range []string{
		"SET SESSION sql_mode = 'STRICT_ALL_TABLES,NO_AUTO_VALUE_ON_ZERO,NO_ENGINE_SUBSTITUTION'",
		"SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED",
	} {
		if _, err := c.conn.ExecContext(ctx, q); err != nil {
			return nil, err
		}
	}
	tx, err := c.conn.BeginTx(ctx, nil)
	if err != nil {
		return nil, err
	}
	c.w.tx = tx
	pos := map[string]string{}
	if len(guard) > 0 {
		args := make([]any, len(guard))
		for i, g := range guard {
			args[i] = g
		}
		rows, err := tx.QueryContext(ctx, "SELECT `pipeline`, `position` FROM "+quote(CheckpointTable)+
			" WHERE `pipeline` IN ("+strings.TrimSuffix(strings.Repeat("?,", len(guard)), ",")+") LOCK IN SHARE MODE", args...)
		if err != nil {
			return nil, err
		}
		for rows.Next() {
			var p, s string
			if err := rows.Scan(&p, &s); err != nil {
				rows.Close()
				return nil, err
			}
			pos[p] = s
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return nil, err
		}
	}
	if _, err := tx.ExecContext(ctx, "INSERT INTO "+quote(CheckpointTable)+
		" (`pipeline`, `kind`, `source_region`, `position`, `seq`, `epoch`, `updated_at`) VALUES (?, ?, '', '', 1, 0, UTC_TIMESTAMP(6))"+
		" ON DUPLICATE KEY UPDATE `seq` = `seq` + 1, `updated_at` = VALUES(`updated_at`)", marker, kind); err != nil {
		return nil, err
	}
	return pos, nil
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
	rules := c.w.a.cfg.Rules
	for _, st := range batch.Plan(rules, changes) {
		if st.Segment == nil {
			cs, err := batch.ApplyLWW(ctx, batch.Unrecorded{RuleTarget: c.w}, rules, st)
			if err != nil {
				return skipped, err
			}
			skipped += len(cs)
			continue
		}
		if err := c.w.writeRows(ctx, st.Segment.Table, st.Segment.Rows, modeUpsert); err != nil {
			return skipped, err
		}
	}
	return skipped, nil
}

// Exec runs a statement in the transaction (e.g. a progress record).
func (c *ChunkTx) Exec(ctx context.Context, query string, args ...any) error {
	_, err := c.w.tx.ExecContext(ctx, query, args...)
	return err
}

// Commit commits the transaction and releases its connection.
func (c *ChunkTx) Commit(context.Context) error {
	err := c.w.tx.Commit()
	c.w.tx = nil
	c.conn.Close()
	return err
}

// Rollback abandons the transaction, if still open, and releases its
// connection. It is safe to call after Commit.
func (c *ChunkTx) Rollback() {
	if c.w.tx != nil {
		_ = c.w.tx.Rollback()
		c.w.tx = nil
	}
	c.conn.Close()
}

// Retryable reports whether err says "not now" (a lock conflict, a row
// inserted concurrently, a lost connection, a server going down) rather
// than that the target rejects the data: the chunk can be written again.
func (a *Applier) Retryable(err error) bool {
	return (&writer{a: a}).Classify(err) != batch.Rejected
}
