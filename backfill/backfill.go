// Package backfill copies the existing rows of configured tables from one
// region into another while regiond's pipelines keep streaming and
// applications keep writing, so that the target ends holding exactly what
// the source holds.
//
// # Why a chunk can never overwrite a newer streamed change
//
// Each table is split into primary-key ranges (snapshot.Bounds), planned
// once and stored in the target's regiond_backfill table. Each chunk is
// copied in one target transaction that
//
//  1. takes a shared lock on the checkpoint row of every pipeline into the
//     target (at least source->target). Every applier transaction begins by
//     updating its pipeline's checkpoint row, so this waits for an applier
//     transaction in progress to commit and holds the next one back until
//     the chunk commits;
//  2. writes the backfill marker (a regiond_checkpoints row of kind
//     "backfill", its seq bumped every time), so no reader captures the
//     chunk and nothing echoes;
//  3. reads the chunk's rows from the source, with a locking read
//     (READ COMMITTED, shared row locks released right after): it waits for
//     source transactions still writing those rows, so it sees every change
//     the pipeline may already have applied to the target;
//  4. upserts the rows through the target sink's own statements and type
//     mapping (last_writer_wins tables through the rule's locking read and
//     guarded writes: a row is written only if it is above the target's
//     row or tombstone in the rule's order), records the chunk as done in
//     regiond_backfill, and commits.
//
// So every change the pipeline applied before the chunk was already in the
// rows the chunk read, and every change after the read is applied after the
// chunk commits. A row updated at the source after the read is streamed and
// applied on top of the chunk; one deleted after the read is deleted after
// the chunk wrote it; a change made before the read that the pipeline had
// not applied yet (it is behind) is applied after the chunk, replaying the
// row's history up to the same final state, as replaying any suffix of a
// stream does. Rows of home_region tables are copied whatever their home.
//
// The pipeline from the source must have started (its checkpoint row must
// exist in the target) before backfill begins: from then on, every change
// reaches the target through it, and the rows that existed before are the
// chunks' job. A row inserted after planning with a key above the highest
// planned key is streamed, not copied.
//
// A rerun (after Ctrl-C or SIGKILL) finds the plan in regiond_backfill and
// copies only the chunks not yet recorded as done; a chunk's rows and its
// "done" commit together. Chunks run in parallel, each writer on a
// connection of its own.
package backfill

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/regiond/regiond/snapshot"
	"github.com/regiond/regiond/source"
)

// ErrMismatch means the regions' tables cannot be copied one into the
// other: a table missing, different primary keys, columns that do not map.
var ErrMismatch = errors.New("tables do not match")

// ErrNoPipeline means the pipeline from the source into the target has not
// started yet, so changes made during the backfill would not reach it.
var ErrNoPipeline = errors.New("pipeline not started")

// ChunkTx is one chunk's target transaction (sink/mysql and sink/postgres
// ChunkTx).
type ChunkTx interface {
	// Upsert writes rows; it returns how many the rule skipped.
	Upsert(ctx context.Context, t *source.Table, rows []source.Row) (int, error)
	// Exec runs (or queues) a statement in the transaction.
	Exec(ctx context.Context, query string, args ...any) error
	Commit(ctx context.Context) error
	// Rollback is safe after Commit.
	Rollback()
}

// Writer opens chunk transactions into the target; one per parallel
// worker.
type Writer interface {
	// BeginChunk opens a transaction that share-locks the guard pipelines'
	// checkpoint rows (returning their positions) and writes the marker.
	BeginChunk(ctx context.Context, marker, kind string, guard []string) (ChunkTx, map[string]string, error)
	// Retryable says whether an error is worth writing the chunk again.
	Retryable(err error) bool
	Close() error
}

// Config says what to copy where.
type Config struct {
	From, To string // region names
	Source   *snapshot.DB
	Target   *snapshot.DB
	Tables   []string
	// Pipeline is the pipeline from the source into the target; Guard
	// lists every pipeline into the target whose applier the chunks are
	// ordered with (Pipeline among them).
	Pipeline string
	Guard    []string
	// NewWriter returns a writer into the target for worker i.
	NewWriter func(i int) (Writer, error)
	// ChunkRows is the planned rows per chunk; Parallel the number of
	// chunks copied at once.
	ChunkRows int
	Parallel  int
	// Progress, when set, is called after every chunk.
	Progress func(Progress)
	Logger   *slog.Logger
}

// Progress is the state of a run.
type Progress struct {
	Rows, Total int64 // rows copied (this run and before), rows planned
	Skipped     int64 // rows not written because the target held a newer state
	Chunks      int   // chunks done
	AllChunks   int
	Resumed     int64 // rows already copied by an earlier run
	Retries     int64 // chunk writes retried (lock conflicts, lost connections)
}

// Result is what a run did.
type Result struct {
	Progress
	Elapsed time.Duration
}

type job struct {
	table *snapshot.Table
	chunk chunkRow
}

// Run copies the tables. It first checks that every table exists in both
// regions with the same primary key and columns that map (ErrMismatch) and
// that the pipeline has started (ErrNoPipeline), before writing anything.
func Run(ctx context.Context, cfg Config) (Result, error) {
	start := time.Now()
	if cfg.ChunkRows <= 0 {
		cfg.ChunkRows = 1000
	}
	if cfg.Parallel <= 0 {
		cfg.Parallel = 1
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	tables, err := Preflight(ctx, cfg.Source, cfg.Target, cfg.Tables)
	if err != nil {
		return Result{}, err
	}
	pos, err := positions(ctx, cfg.Target, cfg.Guard)
	if err != nil {
		return Result{}, fmt.Errorf("region %s: read %s: %w", cfg.To, "regiond_checkpoints", err)
	}
	if _, ok := pos[cfg.Pipeline]; !ok {
		return Result{}, fmt.Errorf("%w: region %s has no checkpoint for pipeline %s: start `regiond run` (for region %s) first and let it start that pipeline, so that every change made from then on is streamed, then run backfill again",
			ErrNoPipeline, cfg.To, cfg.Pipeline, cfg.To)
	}
	var guard []string
	for _, g := range cfg.Guard {
		if _, ok := pos[g]; ok {
			guard = append(guard, g)
		}
	}
	store := &progressStore{db: cfg.Target, pair: cfg.From + "->" + cfg.To}
	if err := store.ensure(ctx); err != nil {
		return Result{}, fmt.Errorf("region %s: create %s: %w", cfg.To, progressTable, err)
	}
	var (
		jobs []job
		p    Progress
	)
	for _, t := range tables {
		chunks, err := store.plan(ctx, cfg.Source, t, cfg.ChunkRows)
		if err != nil {
			return Result{}, fmt.Errorf("table %s: %w", t.Def.Name, err)
		}
		for _, c := range chunks {
			p.AllChunks++
			p.Total += c.planned
			if c.done {
				p.Chunks++
				p.Rows += c.rows
				p.Resumed += c.rows
				continue
			}
			jobs = append(jobs, job{table: t, chunk: c})
		}
	}
	if p.Resumed > 0 {
		cfg.Logger.Info("resuming backfill", "from", cfg.From, "to", cfg.To, "chunks_done", p.Chunks, "chunks", p.AllChunks)
	}
	if cfg.Source.SQL.Stats().MaxOpenConnections == 0 || cfg.Source.SQL.Stats().MaxOpenConnections < cfg.Parallel+1 {
		cfg.Source.SQL.SetMaxOpenConns(cfg.Parallel + 1)
	}

	var (
		mu    sync.Mutex
		next  int
		rows  atomic.Int64
		skip  atomic.Int64
		done  atomic.Int64
		retry atomic.Int64
		total = p
	)
	report := func() {
		if cfg.Progress == nil {
			return
		}
		mu.Lock()
		defer mu.Unlock()
		q := total
		q.Rows += rows.Load()
		q.Skipped += skip.Load()
		q.Chunks += int(done.Load())
		q.Retries += retry.Load()
		cfg.Progress(q)
	}
	report()
	g, gctx := errgroup.WithContext(ctx)
	for i := range min(cfg.Parallel, max(len(jobs), 1)) {
		g.Go(func() error {
			w, err := cfg.NewWriter(i)
			if err != nil {
				return err
			}
			defer w.Close()
			marker := fmt.Sprintf("backfill:%s->%s#%d", cfg.From, cfg.To, i)
			for {
				mu.Lock()
				if next >= len(jobs) {
					mu.Unlock()
					return nil
				}
				j := jobs[next]
				next++
				mu.Unlock()
				n, s, err := copyChunk(gctx, cfg, w, store, marker, guard, j, &retry)
				if err != nil {
					return err
				}
				rows.Add(n)
				skip.Add(s)
				done.Add(1)
				report()
			}
		})
	}
	err = g.Wait()
	res := Result{Progress: total, Elapsed: time.Since(start)}
	res.Rows += rows.Load()
	res.Skipped += skip.Load()
	res.Chunks += int(done.Load())
	res.Retries += retry.Load()
	return res, err
}

// copyChunk copies one chunk, retrying what is worth retrying.
func copyChunk(ctx context.Context, cfg Config, w Writer, store *progressStore, marker string, guard []string, j job, retries *atomic.Int64) (rows, skipped int64, err error) {
	for attempt := 0; ; attempt++ {
		rows, skipped, err = tryChunk(ctx, cfg, w, store, marker, guard, j)
		if err == nil || ctx.Err() != nil {
			return rows, skipped, err
		}
		if !w.Retryable(err) || attempt >= 30 {
			return 0, 0, fmt.Errorf("table %s chunk %d: %w", j.table.Def.Name, j.chunk.n, err)
		}
		retries.Add(1)
		cfg.Logger.Debug("chunk retried", "table", j.table.Def.Name, "chunk", j.chunk.n, "error", err)
		d := min(time.Duration(1<<min(attempt, 6))*50*time.Millisecond, 3*time.Second)
		select {
		case <-ctx.Done():
			return 0, 0, ctx.Err()
		case <-time.After(d):
		}
	}
}

func tryChunk(ctx context.Context, cfg Config, w Writer, store *progressStore, marker string, guard []string, j job) (int64, int64, error) {
	tx, pos, err := w.BeginChunk(ctx, marker, "backfill", guard)
	if err != nil {
		return 0, 0, err
	}
	defer tx.Rollback()
	if _, ok := pos[cfg.Pipeline]; !ok {
		return 0, 0, fmt.Errorf("%w: the checkpoint of pipeline %s vanished from region %s", ErrNoPipeline, cfg.Pipeline, cfg.To)
	}
	rows, err := readLocked(ctx, cfg.Source, j.table, j.chunk.rng)
	if err != nil {
		return 0, 0, err
	}
	skipped, err := tx.Upsert(ctx, j.table.Def, rows)
	if err != nil {
		return 0, 0, fmt.Errorf("region %s: write: %w", cfg.To, err)
	}
	q, args := store.doneSQL(j.table.Def.Name, j.chunk.n, int64(len(rows)), int64(skipped))
	if err := tx.Exec(ctx, q, args...); err != nil {
		return 0, 0, err
	}
	if err := tx.Commit(ctx); err != nil {
		return 0, 0, err
	}
	return int64(len(rows)), int64(skipped), nil
}

// readLocked reads a range of the source with a locking read in a READ
// COMMITTED transaction of its own, released at once.
func readLocked(ctx context.Context, db *snapshot.DB, t *snapshot.Table, r snapshot.Range) ([]source.Row, error) {
	tx, err := db.SQL.BeginTx(ctx, readCommitted)
	if err != nil {
		return nil, fmt.Errorf("region %s: %w", db.Region, err)
	}
	defer tx.Rollback()
	rows, err := t.Read(ctx, tx, r, true)
	if err != nil {
		return nil, err
	}
	return rows, tx.Commit()
}
