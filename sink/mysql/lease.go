package mysql

import (
	"context"
	"crypto/sha256"
	"database/sql"
	"encoding/hex"
	"errors"
	"fmt"
	"sync"
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
	epoch, pos, err := a.newEpoch(ctx, conn)
	if err != nil {
		release()
		return nil, err
	}
	a.epoch.Store(epoch)

	lost := make(chan struct{})
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		t := time.NewTicker(leaseCheckEvery)
		defer t.Stop()
		for {
			select {
			case <-stop:
				return
			case <-t.C:
			}
			cctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			var mine sql.NullInt64
			err := conn.QueryRowContext(cctx, "SELECT IS_USED_LOCK(?) = CONNECTION_ID()", name).Scan(&mine)
			cancel()
			if err != nil || !mine.Valid || mine.Int64 != 1 {
				close(lost)
				return
			}
		}
	}()
	var once sync.Once
	return &pipeline.Lease{Position: pos, Epoch: epoch, Lost: lost, Release: func() {
		once.Do(func() {
			close(stop)
			<-done
			release()
		})
	}}, nil
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
