package postgres

import (
	"context"
	"fmt"
	"hash/fnv"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/regiond/regiond/internal/pgconn"
	"github.com/regiond/regiond/pipeline"
)

var _ pipeline.Leaser = (*Applier)(nil)

// leaseCheckEvery is how often a held lease's session is checked; leasePoll
// how often a standby tries to take it.
const (
	leaseCheckEvery = 2 * time.Second
	leasePoll       = time.Second
)

// lockKey is the pipeline's advisory lock key (advisory locks are per
// database).
func (a *Applier) lockKey() int64 {
	h := fnv.New64a()
	h.Write([]byte("regiond:" + a.cfg.Schema + ":" + a.cfg.Pipeline))
	return int64(h.Sum64())
}

// takeOver gives the pipeline's checkpoint row a new epoch and returns it
// with the position stored, through pipeline.NewEpoch, which terminates the
// backend of an earlier holder whose open transaction holds the row.
func (a *Applier) takeOver(ctx context.Context, conn *pgx.Conn) (int64, string, error) {
	var self int32
	if err := conn.QueryRow(ctx, "SELECT pg_backend_pid()").Scan(&self); err != nil {
		return 0, "", err
	}
	return pipeline.NewEpoch(func() (epoch int64, pos string, err error) {
		// One statement, autocommit: it writes only regiond_checkpoints,
		// so readers skip it like every marked transaction.
		err = conn.QueryRow(ctx, "UPDATE "+a.checkpointTable()+" SET epoch = epoch + 1, seq = seq + 1, updated_at = now() WHERE pipeline = $1 RETURNING epoch, position",
			a.cfg.Pipeline).Scan(&epoch, &pos)
		return epoch, pos, err
	}, func() { a.endStaleHolder(ctx, self) })
}

// endStaleHolder terminates the backends that block backend waiter (needs
// the same role, superuser or pg_signal_backend). Failures are logged: the
// new epoch then waits for the lock.
func (a *Applier) endStaleHolder(ctx context.Context, waiter int32) {
	conn, err := a.connect(ctx)
	if err != nil {
		return
	}
	defer closeConn(conn)
	rows, err := conn.Query(ctx, "SELECT b, pg_terminate_backend(b) FROM unnest(pg_blocking_pids($1)) AS b", waiter)
	if err != nil {
		a.logger.Warn("cannot end the session holding the pipeline's checkpoint row; waiting for it", "error", err)
		return
	}
	defer rows.Close()
	for rows.Next() {
		var (
			pid int32
			ok  bool
		)
		if rows.Scan(&pid, &ok) == nil {
			a.logger.Warn("ended the session of an earlier holder of this pipeline's lease: it held the checkpoint row in an open transaction (a paused or cut-off process); its batch is rolled back", "backend_pid", pid, "terminated", ok)
		}
	}
}

// Lead implements pipeline.Leaser. The lease is a session-level advisory
// lock held by a dedicated connection: the server frees it the moment that
// connection ends, so a standby takes over within about a second of the
// leader's death. The lock is only the hint of who should apply;
// correctness comes from the epoch that every apply transaction compares
// and sets first (see target.Begin).
func (a *Applier) Lead(ctx context.Context, waiting func()) (*pipeline.Lease, error) {
	conn, err := a.connect(ctx)
	if err != nil {
		return nil, err
	}
	key := a.lockKey()
	for waited := false; ; {
		var got bool
		if err := conn.QueryRow(ctx, "SELECT pg_try_advisory_lock($1)", key).Scan(&got); err != nil {
			closeConn(conn)
			return nil, fmt.Errorf("region %s: pg_try_advisory_lock: %w", a.cfg.Target, err)
		}
		if got {
			break
		}
		if !waited {
			waited = true
			waiting()
		}
		select {
		case <-ctx.Done():
			closeConn(conn)
			return nil, ctx.Err()
		case <-time.After(leasePoll):
		}
	}
	var (
		epoch int64
		pos   string
	)
	epoch, pos, err = a.takeOver(ctx, conn)
	if err != nil {
		closeConn(conn) // ends the session: the lock goes with it
		if err == pgx.ErrNoRows {
			return nil, pipeline.Permanent(fmt.Errorf("region %s: checkpoint row missing for pipeline %s in %s; it was deleted while regiond ran: restore it or run `regiond backfill`",
				a.cfg.Target, a.cfg.Pipeline, pgconn.CheckpointTable))
		}
		return nil, fmt.Errorf("region %s: new epoch: %w", a.cfg.Target, err)
	}
	a.epoch.Store(epoch)
	a.start = pos // what the last leader stored: Apply's run starts there

	return pipeline.HoldLease(pos, epoch, leaseCheckEvery, func(ctx context.Context) bool {
		return conn.Ping(ctx) == nil
	}, func() {
		closeConn(conn) // the session's advisory lock goes with it
	}), nil
}
