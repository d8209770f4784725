// Package postgres reads a PostgreSQL region's logical WAL through a
// replication slot with the pgoutput plugin (pglogrepl), and turns it into
// committed transactions of row changes, positioned by each commit's end
// LSN.
//
// Each pipeline reading a region has its own slot; the region's pipelines
// share one publication, which holds exactly the configured tables and
// regiond_checkpoints (so that regiond's own transactions, which begin with
// a marker write to it, are seen and skipped).
//
// The slot's confirmed_flush_lsn only ever moves to a position the
// pipeline's sinks made durable (see Reader.Ack), so the server keeps the
// WAL of everything not yet applied. (When every transaction read has been
// acknowledged and none is open, it may also move over WAL that held nothing
// for the pipeline, up to the server's send position, so that an idle
// direction does not hold WAL forever.) A slot that is dropped or invalidated
// (max_slot_wal_keep_size) is a lost position: the reader never re-creates
// a slot behind a checkpoint. PostgreSQL 15 slots do not survive a failover
// to a standby; after one, the pipeline reports its position lost.
package postgres

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	pgxconn "github.com/jackc/pgx/v5/pgconn"

	"github.com/regiond/regiond/checkpoint"
	"github.com/regiond/regiond/internal/pgconn"
	"github.com/regiond/regiond/pipeline"
	"github.com/regiond/regiond/source"
)

// MarkerTable is regiond's own table whose write opens every transaction
// regiond makes in a region; the reader skips transactions that begin with
// it.
const MarkerTable = pgconn.CheckpointTable

// Defaults of Config.
const (
	DefaultSchema         = "public"
	DefaultPublication    = "regiond"
	DefaultChunkChanges   = 4096
	DefaultStatusInterval = 10 * time.Second
)

// ackReportEvery rate-limits the standby status updates sent because Ack
// advanced.
const ackReportEvery = time.Second

// Config says which slot to read and what to keep of it.
type Config struct {
	Region string // this source region's name
	DSN    string // postgres:// URL
	Schema string // where the tables live (default "public")
	// Slot is this pipeline's replication slot, e.g. "regiond_east_west":
	// one slot per pipeline, lower-case letters, digits and underscores.
	Slot string
	// Publication is shared by the region's pipelines (default "regiond").
	Publication string
	// Tables is the set of configured (bare) table names to capture.
	Tables map[string]bool
	// ChunkChanges bounds how many changes of one large transaction are held
	// before they are sent on as a chunk (default 4096).
	ChunkChanges int
	// StatusInterval is the longest time between two standby status updates
	// (default 10s), kept even while the sink is slow so that the server
	// does not drop the connection. It is lowered to a third of the
	// server's wal_sender_timeout when that is shorter.
	StatusInterval time.Duration
}

var slotName = regexp.MustCompile(`^[a-z0-9_]{1,63}$`)

// Reader reads one region's logical WAL for one pipeline. Read may be
// called again after it returned (the pipeline supervisor does so after
// failures), but not concurrently; Ack may be called from any goroutine.
//
// Row images. pgoutput logs what the table's REPLICA IDENTITY says:
//   - Insert: Before is nil, After the new row.
//   - Delete: with REPLICA IDENTITY DEFAULT, Before holds the primary key
//     columns and nil in every other column (the WAL does not carry them,
//     so nil there does not mean NULL); with REPLICA IDENTITY FULL, Before
//     is the whole old row.
//   - Update: Before is never nil. With FULL it is the whole old row. With
//     DEFAULT it holds the old primary key and nil in every other column:
//     taken from the WAL's old key when the update changed the key, else
//     from the new row (the key did not change).
//   - After of an update: a TOASTed value the update did not change is not
//     in the WAL. With FULL it is taken from the old row; otherwise the
//     column holds source.Unchanged and the sink must leave it alone.
//
// Tables that need whole before images (conflict detection against the
// before image, a last_writer_wins delete's version) need REPLICA IDENTITY
// FULL.
type Reader struct {
	cfg    Config
	logger *slog.Logger

	// acked is the highest LSN passed to Ack: durable in every sink.
	acked     atomic.Uint64
	ackNotify chan struct{}

	// prep is what Prepare did for the next Read (nil: nothing).
	prepMu sync.Mutex
	prep   *prepared
}

// prepared is a connection that passed the checks and setup Read starts
// with.
type prepared struct {
	conn *pgx.Conn
	info serverInfo
}

var (
	_ source.Source         = (*Reader)(nil)
	_ pipeline.QueueDepther = (*Reader)(nil)
	_ pipeline.Preparer     = (*Reader)(nil)
)

// New returns a reader; it connects lazily.
func New(cfg Config, logger *slog.Logger) (*Reader, error) {
	if cfg.Schema == "" {
		cfg.Schema = DefaultSchema
	}
	if cfg.Publication == "" {
		cfg.Publication = DefaultPublication
	}
	if cfg.ChunkChanges <= 0 {
		cfg.ChunkChanges = DefaultChunkChanges
	}
	if cfg.StatusInterval <= 0 {
		cfg.StatusInterval = DefaultStatusInterval
	}
	if !slotName.MatchString(cfg.Slot) {
		return nil, fmt.Errorf("postgres source %s: slot name %q: use 1 to 63 lower-case letters, digits and underscores", cfg.Region, cfg.Slot)
	}
	if !slotName.MatchString(cfg.Publication) {
		return nil, fmt.Errorf("postgres source %s: publication name %q: use 1 to 63 lower-case letters, digits and underscores", cfg.Region, cfg.Publication)
	}
	if _, err := pgconn.Config(cfg.DSN); err != nil {
		return nil, fmt.Errorf("postgres source %s: dsn: %w", cfg.Region, err)
	}
	if logger == nil {
		logger = slog.Default()
	}
	return &Reader{cfg: cfg, logger: logger, ackNotify: make(chan struct{}, 1)}, nil
}

// Close releases the reader's resources. The reader holds no connection
// between calls, so this only exists to satisfy the usual shape.
func (r *Reader) Close() error { return nil }

// QueueDepth is the pipeline's queue between this reader and the sink, in
// transactions (pipeline.QueueDepther). The sink's batches do not need a
// deep one: sink/batch keeps taking transactions while its lanes write, so
// a batch grows as fast as the reader decodes. A deeper queue (the
// pipeline's default of 1024, half the inserts of the PostgreSQL bench in
// its 100-row transactions) lets the reader and the server's WAL sender run
// that far ahead, decoding and holding later transactions while the CPUs
// are needed to apply the earlier ones.
func (r *Reader) QueueDepth() int { return 128 }

// Preflight runs the checks CurrentPosition and Read start with, and
// writes nothing: wal_level = logical, a role allowed to replicate, and
// every configured table present in Schema with a primary key and a
// replica identity that carries it (DEFAULT or FULL). Failures are one
// permanent error listing every problem with its fix. For `regiond check`.
func (r *Reader) Preflight(ctx context.Context) error {
	conn, err := r.connect(ctx)
	if err != nil {
		return err
	}
	defer conn.Close(context.WithoutCancel(ctx))
	_, err = r.preflight(ctx, conn)
	return err
}

// CurrentPosition checks the server and tables, sets up the publication
// and creates the pipeline's slot, returning the slot's consistent point:
// the pipeline streams from there. If the slot already exists (a crash
// between creating it and storing the checkpoint), it is reused and its
// confirmed_flush_lsn returned. It is called only on a pipeline's first
// start, before any applier writes into this region (creating a slot waits
// for every open transaction on the server).
func (r *Reader) CurrentPosition(ctx context.Context) (checkpoint.Position, error) {
	conn, err := r.connect(ctx)
	if err != nil {
		return nil, err
	}
	defer conn.Close(context.WithoutCancel(ctx))
	if _, err := r.setup(ctx, conn); err != nil {
		return nil, err
	}
	for attempt := 0; ; attempt++ {
		s, err := r.slot(ctx, conn)
		if err != nil {
			return nil, err
		}
		if s.exists {
			if err := r.checkSlot(s); err != nil {
				return nil, err
			}
			if s.walStatus == "lost" {
				// No checkpoint refers to this slot yet (that is why we are
				// here), so nothing is lost by starting afresh.
				r.logger.Warn("replication slot was invalidated before the pipeline stored a checkpoint; dropping and re-creating it",
					"region", r.cfg.Region, "slot", r.cfg.Slot)
				if _, err := conn.Exec(ctx, "SELECT pg_drop_replication_slot($1)", r.cfg.Slot); err != nil {
					return nil, fmt.Errorf("region %s: drop invalidated slot %s: %w", r.cfg.Region, r.cfg.Slot, err)
				}
			} else if s.confirmed != "" {
				pos, err := checkpoint.ParseLSN(s.confirmed)
				if err != nil {
					return nil, fmt.Errorf("region %s: slot %s: %w", r.cfg.Region, r.cfg.Slot, err)
				}
				r.logger.Info("reusing existing replication slot", "region", r.cfg.Region, "slot", r.cfg.Slot, "position", pos.String())
				return pos, nil
			} else {
				return nil, fmt.Errorf("region %s: replication slot %s is still being created elsewhere", r.cfg.Region, r.cfg.Slot)
			}
		}
		pos, err := r.createSlot(ctx)
		if errors.Is(err, errSlotExists) && attempt == 0 {
			continue // created concurrently: read it back
		}
		if err != nil {
			return nil, err
		}
		r.logger.Info("created replication slot", "region", r.cfg.Region, "slot", r.cfg.Slot, "position", pos.String())
		return pos, nil
	}
}

// Prepare connects and runs the checks and setup that Read starts with
// (pipeline.Preparer), which do not depend on the position: the next Read
// goes on from there with the checks of the slot against its position.
func (r *Reader) Prepare(ctx context.Context) error {
	r.Discard()
	conn, err := r.connect(ctx)
	if err != nil {
		return err
	}
	info, err := r.setup(ctx, conn)
	if err != nil {
		conn.Close(context.WithoutCancel(ctx))
		return err
	}
	r.prepMu.Lock()
	r.prep = &prepared{conn: conn, info: info}
	r.prepMu.Unlock()
	return nil
}

// Discard closes what Prepare kept and no Read took (pipeline.Preparer).
func (r *Reader) Discard() {
	if p := r.takePrepared(); p != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		p.conn.Close(ctx)
	}
}

func (r *Reader) takePrepared() *prepared {
	r.prepMu.Lock()
	defer r.prepMu.Unlock()
	p := r.prep
	r.prep = nil
	return p
}

// ParsePosition parses an LSN, e.g. "16/B374D848".
func (r *Reader) ParsePosition(s string) (checkpoint.Position, error) {
	return checkpoint.ParseLSN(s)
}

// Ack records that every transaction up to pos is durable in every sink.
// The reading stream reports it to the server as the slot's flush position
// with its next standby status update (at most a second later), which
// lets the server release the WAL before it. It never blocks.
func (r *Reader) Ack(_ context.Context, pos checkpoint.Position) error {
	lsn, err := asLSN(pos)
	if err != nil {
		return fmt.Errorf("region %s: ack: %w", r.cfg.Region, err)
	}
	for {
		cur := r.acked.Load()
		if uint64(lsn) <= cur {
			return nil
		}
		if r.acked.CompareAndSwap(cur, uint64(lsn)) {
			break
		}
	}
	select {
	case r.ackNotify <- struct{}{}:
	default:
	}
	return nil
}

func asLSN(pos checkpoint.Position) (checkpoint.LSN, error) {
	switch p := pos.(type) {
	case checkpoint.LSN:
		return p, nil
	case nil:
		return 0, errors.New("no position")
	}
	return checkpoint.ParseLSN(pos.String())
}

// Read streams the slot's changes after from. See source.Source.
//
// It runs the preflight checks and publication setup first (unless a
// Prepare did), then checks the slot against from while the replication
// connection opens, and starts replication on the slot with pgoutput
// (protocol version 2 on PostgreSQL 14 and later, else 1). A missing or invalidated slot, or a from ahead of
// the server's WAL, is an error wrapping checkpoint.ErrPositionLost.
//
// Transactions are sent in commit order, with End the commit's end LSN,
// Commit its time in UTC and Origin the region. Transactions ending at or
// before from are dropped (the server resends from the slot's
// confirmed_flush_lsn). Large ones come in chunks of ChunkChanges changes.
// source.Table values list the columns of the WAL's relation message with
// Column.Type 0, and PK in primary key order; the same *source.Table is
// shared while the definition is unchanged within one Read.
//
// Values follow source/values.go. Time and timestamp values of a column
// with a declared precision (timestamp(6)) carry exactly that many
// fractional digits, as MySQL prints DATETIME(6); without one, as
// PostgreSQL prints them. timestamptz becomes a Timestamp in UTC. Enums,
// arrays, uuid, inet, interval, timetz, money, xml and other types are
// strings; domains take their base type's form. NaN or infinite numerics,
// infinite dates and timestamps and BC dates stop the pipeline with a
// permanent error naming the table, row key and column.
func (r *Reader) Read(ctx context.Context, from checkpoint.Position, out chan<- source.Txn) error {
	start, err := asLSN(from)
	if err != nil {
		return pipeline.Permanent(fmt.Errorf("region %s: position %v is not an LSN: %w", r.cfg.Region, from, err))
	}
	var (
		conn *pgx.Conn
		info serverInfo
	)
	if p := r.takePrepared(); p != nil {
		conn, info = p.conn, p.info
	} else {
		if conn, err = r.connect(ctx); err != nil {
			return err
		}
		if info, err = r.setup(ctx, conn); err != nil {
			conn.Close(context.WithoutCancel(ctx))
			return err
		}
	}
	// The replication connection opens while the slot is checked.
	type opened struct {
		conn *pgxconn.PgConn
		err  error
	}
	replc := make(chan opened, 1)
	go func() {
		c, err := pgconn.ConnectReplication(ctx, r.cfg.DSN)
		replc <- opened{c, err}
	}()
	err = r.checkSlotForRead(ctx, conn, start)
	conn.Close(context.WithoutCancel(ctx))
	o := <-replc
	repl := o.conn
	if err == nil && o.err != nil {
		err = fmt.Errorf("region %s: open replication connection: %w", r.cfg.Region, o.err)
	}
	if err != nil {
		if repl != nil {
			repl.Close(context.WithoutCancel(ctx))
		}
		return err
	}
	interval := r.cfg.StatusInterval
	if t := info.walSenderTimeout / 3; t > 0 && t < interval {
		interval = t
	}
	defer func() {
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		repl.Close(cctx)
	}()
	if err := r.startReplication(ctx, repl, start, info.protoVersion); err != nil {
		return err
	}
	r.logger.Debug("streaming from replication slot", "region", r.cfg.Region, "slot", r.cfg.Slot,
		"position", start.String(), "proto_version", info.protoVersion)
	s := newStream(r, repl, out, start, interval)
	return s.run(ctx)
}

// checkSlotForRead makes sure the slot still holds from: a missing or
// invalidated slot is a lost position.
func (r *Reader) checkSlotForRead(ctx context.Context, conn querier, from checkpoint.LSN) error {
	s, err := r.slot(ctx, conn)
	if err != nil {
		return err
	}
	if !s.exists {
		return r.lost(fmt.Sprintf("replication slot %s does not exist (dropped, or lost in a failover)", r.cfg.Slot))
	}
	if err := r.checkSlot(s); err != nil {
		return err
	}
	if s.walStatus == "lost" {
		return r.lost(fmt.Sprintf("replication slot %s was invalidated: the server removed WAL it still needed (max_slot_wal_keep_size)", r.cfg.Slot))
	}
	if s.walStatus == "unreserved" {
		r.logger.Warn("replication slot is beyond max_slot_wal_keep_size and will be invalidated at the next checkpoint unless the pipeline catches up",
			"region", r.cfg.Region, "slot", r.cfg.Slot, "position", from.String())
	}
	var cur string
	if err := conn.QueryRow(ctx, "SELECT pg_current_wal_lsn()::text").Scan(&cur); err != nil {
		return fmt.Errorf("region %s: read current WAL position: %w", r.cfg.Region, err)
	}
	if now, err := checkpoint.ParseLSN(cur); err == nil && from > now {
		// Streaming from there would silently skip whatever the server
		// writes until its WAL gets there.
		return r.lost(fmt.Sprintf("the checkpoint %s is ahead of the server's WAL (%s): it belongs to another server's history (restored or rebuilt database?)", from, now))
	}
	if s.confirmed != "" {
		if c, err := checkpoint.ParseLSN(s.confirmed); err == nil && c > from {
			// Normal when the slot advanced over WAL holding no change of a
			// configured table after everything before was acknowledged.
			r.logger.Debug("slot is ahead of the checkpoint", "region", r.cfg.Region, "slot", r.cfg.Slot,
				"confirmed_flush_lsn", c.String(), "position", from.String())
		}
	}
	return nil
}

// lost returns an error wrapping checkpoint.ErrPositionLost.
func (r *Reader) lost(why string) error {
	return fmt.Errorf("%w: region %s: %s; regiond never re-creates a slot behind a checkpoint: run `regiond backfill` into the target, then start again",
		checkpoint.ErrPositionLost, r.cfg.Region, why)
}

// SlotName is the replication slot of the pipeline from region src into
// dst: "regiond_<src>_<dst>", lower case, with every character a slot name
// cannot hold turned into '_'. (Region names are short: config allows 32
// characters, so the name fits 63.)
func SlotName(src, dst string) string {
	clean := func(s string) string {
		b := []byte(strings.ToLower(s))
		for i, c := range b {
			if (c < 'a' || c > 'z') && (c < '0' || c > '9') && c != '_' {
				b[i] = '_'
			}
		}
		return string(b)
	}
	return "regiond_" + clean(src) + "_" + clean(dst)
}
