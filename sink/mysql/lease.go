package mysql

import (
	"context"
	"crypto/sha256"
	"database/sql"
	"encoding/hex"
	"errors"
	"fmt"
	"time"

	"github.com/regiond/regiond/pipeline"
)

var _ pipeline.Leaser = (*Applier)(nil)

// leaseCheckEvery is how often a held lease's session is checked.
const leaseCheckEvery = 2 * time.Second

// lockName is the server-wide name of the pipeline's session lock (at most
// 64 characters).
func lockName(database, pipelineName string) string {
	name := "regiond:" + database + ":" + pipelineName
	if len(name) <= 64 {
		return name
	}
	sum := sha256.Sum256([]byte(name))
	return "regiond:" + hex.EncodeToString(sum[:])[:48]
}

// Lead implements pipeline.Leaser. The lease is a session lock
// (GET_LOCK) held by a dedicated connection: the server frees it the moment
// that connection ends, so a standby takes over within about a second of
// the leader's death. The lock is only the hint of who should apply;
// correctness comes from the epoch that every apply transaction compares
// and sets first (see writer.Begin).
func (a *Applier) Lead(ctx context.Context, waiting func()) (*pipeline.Lease, error) {
	conn, err := a.db.Conn(ctx)
	if err != nil {
		return nil, fmt.Errorf("region %s: connect: %w", a.cfg.Target, err)
	}
	name := lockName(a.cfg.Conn.Database, a.cfg.Pipeline)
	for waited := false; ; {
		var got sql.NullInt64
		// GET_LOCK waits up to a second in the server, so a cancelled ctx
		// is seen soon.
		if err := conn.QueryRowContext(ctx, "SELECT GET_LOCK(?, 1)", name).Scan(&got); err != nil {
			conn.Close()
			return nil, fmt.Errorf("region %s: GET_LOCK(%s): %w", a.cfg.Target, name, err)
		}
		if got.Valid && got.Int64 == 1 {
			break
		}
		if !waited {
			waited = true
			waiting()
		}
	}
	release := func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_, _ = conn.ExecContext(ctx, "DO RELEASE_LOCK(?)", name)
		conn.Close()
	}
	epoch, pos, err := a.takeOver(ctx, conn)
	if err != nil {
		release()
		return nil, err
	}
	a.epoch.Store(epoch)
	a.start = pos // what the last leader stored: Apply's run starts there

	return pipeline.HoldLease(pos, epoch, leaseCheckEvery, func(ctx context.Context) bool {
		var mine sql.NullInt64
		err := conn.QueryRowContext(ctx, "SELECT IS_USED_LOCK(?) = CONNECTION_ID()", name).Scan(&mine)
		return err == nil && mine.Valid && mine.Int64 == 1
	}, release), nil
}

// takeOver runs newEpoch through pipeline.NewEpoch, which ends the session
// of an earlier holder whose open transaction holds the checkpoint row.
// (That holder's epoch could still commit that one transaction, since it
// wrote the row before the new epoch; ending it rolls the batch back.)
func (a *Applier) takeOver(ctx context.Context, conn *sql.Conn) (int64, string, error) {
	var self int64
	if err := conn.QueryRowContext(ctx, "SELECT CONNECTION_ID()").Scan(&self); err != nil {
		return 0, "", fmt.Errorf("region %s: %w", a.cfg.Target, err)
	}
	return pipeline.NewEpoch(func() (int64, string, error) { return a.newEpoch(ctx, conn) },
		func() { a.endStaleHolder(ctx, self) })
}

// endStaleHolder ends the sessions whose transactions block connection
// waiter (InnoDB lock waits; needs the PROCESS privilege to see them and
// the same user, or CONNECTION ADMIN, to end them). Failures are logged:
// the new epoch then waits for the lock.
func (a *Applier) endStaleHolder(ctx context.Context, waiter int64) {
	rows, err := a.db.QueryContext(ctx, "SELECT DISTINCT b.trx_mysql_thread_id FROM information_schema.INNODB_LOCK_WAITS w"+
		" JOIN information_schema.INNODB_TRX b ON b.trx_id = w.blocking_trx_id"+
		" JOIN information_schema.INNODB_TRX r ON r.trx_id = w.requesting_trx_id"+
		" WHERE r.trx_mysql_thread_id = ?", waiter)
	if err != nil {
		a.logger.Warn("cannot look up who holds the pipeline's checkpoint row; waiting for it", "error", err)
		return
	}
	var ids []int64
	for rows.Next() {
		var id int64
		if rows.Scan(&id) == nil {
			ids = append(ids, id)
		}
	}
	rows.Close()
	for _, id := range ids {
		a.logger.Warn("ending the session of an earlier holder of this pipeline's lease: it holds the checkpoint row in an open transaction (a paused or cut-off process); its batch is rolled back", "connection_id", id)
		if _, err := a.db.ExecContext(ctx, fmt.Sprintf("KILL CONNECTION %d", id)); err != nil {
			a.logger.Warn("cannot end that session; waiting for it", "connection_id", id, "error", err)
		}
	}
}

// newEpoch gives the pipeline's checkpoint row a new epoch and returns it
// with the position stored, read in the same transaction. The transaction
// writes only regiond_checkpoints: readers skip it like every marked one.
func (a *Applier) newEpoch(ctx context.Context, conn *sql.Conn) (int64, string, error) {
	tx, err := conn.BeginTx(ctx, nil)
	if err != nil {
		return 0, "", fmt.Errorf("region %s: new epoch: %w", a.cfg.Target, err)
	}
	defer tx.Rollback()
	res, err := tx.ExecContext(ctx, "UPDATE "+quote(CheckpointTable)+
		" SET `epoch` = `epoch` + 1, `seq` = `seq` + 1, `updated_at` = UTC_TIMESTAMP(6) WHERE `pipeline` = ?", a.cfg.Pipeline)
	if err != nil {
		return 0, "", fmt.Errorf("region %s: new epoch: %w", a.cfg.Target, err)
	}
	if n, err := res.RowsAffected(); err != nil {
		return 0, "", err
	} else if n != 1 {
		return 0, "", pipeline.Permanent(fmt.Errorf("region %s: %w for pipeline %s in %s; it was deleted while regiond ran: restore it or run `regiond backfill`",
			a.cfg.Target, errCheckpointMissing, a.cfg.Pipeline, CheckpointTable))
	}
	var (
		epoch int64
		pos   string
	)
	if err := tx.QueryRowContext(ctx, "SELECT `epoch`, `position` FROM "+quote(CheckpointTable)+" WHERE `pipeline` = ?", a.cfg.Pipeline).Scan(&epoch, &pos); err != nil {
		return 0, "", fmt.Errorf("region %s: new epoch: %w", a.cfg.Target, err)
	}
	if err := tx.Commit(); err != nil {
		return 0, "", fmt.Errorf("region %s: new epoch: %w", a.cfg.Target, err)
	}
	return epoch, pos, nil
}

// fenced explains why the marker write matched no row although the process
// holds epoch: the row is gone (permanent), or a newer epoch took over.
func (w *writer) fenced(ctx context.Context, epoch int64) error {
	var cur int64
	err := w.tx.QueryRowContext(ctx, "SELECT `epoch` FROM "+quote(CheckpointTable)+" WHERE `pipeline` = ?", w.a.cfg.Pipeline).Scan(&cur)
	if errors.Is(err, sql.ErrNoRows) {
		return pipeline.Permanent(fmt.Errorf("region %s: %w for pipeline %s in %s; it was deleted while regiond ran: restore it or run `regiond backfill`",
			w.a.cfg.Target, errCheckpointMissing, w.a.cfg.Pipeline, CheckpointTable))
	}
	if err != nil {
		return err
	}
	return fmt.Errorf("region %s: pipeline %s: %w (this process's epoch %d, now %d)", w.a.cfg.Target, w.a.cfg.Pipeline, pipeline.ErrFenced, epoch, cur)
}
