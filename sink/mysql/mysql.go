// Package mysql applies a pipeline's transactions to a MySQL or MariaDB
// target: in batches of many source transactions, as multi-row statements,
// in one target transaction that begins with regiond's marker write and
// stores the pipeline's new position, so that each source transaction takes
// effect exactly once.
package mysql

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/regiond/regiond/checkpoint"
	"github.com/regiond/regiond/internal/mysqlconn"
	"github.com/regiond/regiond/pipeline"
	"github.com/regiond/regiond/source"
)

// Config says where and how to apply.
type Config struct {
	Pipeline string // "source->target"
	Source   string // source region name
	Target   string // target region name
	Conn     mysqlconn.Params
	// Tables are the configured tables; Open checks that each exists in the
	// target with a primary key before regiond writes anything there.
	Tables []string
	// BatchChanges is how many changes a batch collects before it is written
	// (default 8192). A batch is also written as soon as the source has
	// nothing more ready, so a lone small transaction never waits.
	BatchChanges int
	// StatementRows and StatementBytes bound one multi-row statement
	// (defaults 1000 rows, 4 MiB).
	StatementRows  int
	StatementBytes int
	// LockRetries is how many times a batch that hit a deadlock or lock wait
	// timeout is retried in place (default 20).
	LockRetries int
}

// Applier is the MySQL/MariaDB sink of one pipeline.
type Applier struct {
	cfg    Config
	logger *slog.Logger
	db     *sql.DB
	sqls   map[*source.Table]*tableSQL
}

var _ pipeline.Sink = (*Applier)(nil)

// New returns an applier; it connects lazily.
func New(cfg Config, logger *slog.Logger) (*Applier, error) {
	if cfg.BatchChanges <= 0 {
		cfg.BatchChanges = 8192
	}
	if cfg.StatementRows <= 0 {
		cfg.StatementRows = 1000
	}
	if cfg.StatementBytes <= 0 {
		cfg.StatementBytes = 4 << 20
	}
	if cfg.LockRetries <= 0 {
		cfg.LockRetries = 20
	}
	db, err := mysqlconn.Open(cfg.Conn)
	if err != nil {
		return nil, err
	}
	db.SetMaxOpenConns(3)
	return &Applier{cfg: cfg, logger: logger.With("pipeline", cfg.Pipeline), db: db, sqls: map[*source.Table]*tableSQL{}}, nil
}

// Close releases the applier's connections.
func (a *Applier) Close() error { return a.db.Close() }

// Open creates regiond's tables in the target when missing and returns the
// pipeline's stored position ("" when none).
func (a *Applier) Open(ctx context.Context) (string, error) {
	if err := checkTables(ctx, a.db, a.cfg.Target, a.cfg.Tables); err != nil {
		return "", err
	}
	if err := ensureTables(ctx, a.db); err != nil {
		return "", fmt.Errorf("region %s: %w", a.cfg.Target, err)
	}
	return a.stored(ctx)
}

func (a *Applier) stored(ctx context.Context) (string, error) {
	var pos string
	err := a.db.QueryRowContext(ctx,
		"SELECT `position` FROM "+quote(CheckpointTable)+" WHERE `pipeline` = ?", a.cfg.Pipeline).Scan(&pos)
	if errors.Is(err, sql.ErrNoRows) {
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("region %s: read checkpoint: %w", a.cfg.Target, err)
	}
	return pos, nil
}

// Init stores pos unless a position is stored already. The write is itself
// a marked transaction (it only touches the checkpoint table).
func (a *Applier) Init(ctx context.Context, pos string) (string, error) {
	_, err := a.db.ExecContext(ctx,
		"INSERT IGNORE INTO "+quote(CheckpointTable)+
			" (`pipeline`, `kind`, `source_region`, `position`, `seq`, `epoch`, `updated_at`) VALUES (?, 'pipeline', ?, ?, 1, 0, UTC_TIMESTAMP(6))",
		a.cfg.Pipeline, a.cfg.Source, pos)
	if err != nil {
		return "", fmt.Errorf("region %s: store start position: %w", a.cfg.Target, err)
	}
	return a.stored(ctx)
}

// batch is what has been received but not yet committed.
type batch struct {
	changes []source.Change
	// spans[i] is the index in changes after source transaction i, and
	// ends[i] its end position; only whole transactions are listed.
	spans []int
	ends  []checkpoint.Position
	open  bool // the last transaction received is incomplete (chunks)
}

func (b *batch) add(t source.Txn) {
	b.changes = append(b.changes, t.Changes...)
	b.open = t.More
	if !t.More {
		b.spans = append(b.spans, len(b.changes))
		b.ends = append(b.ends, t.End)
	}
}

func (b *batch) end() checkpoint.Position {
	if len(b.ends) == 0 {
		return nil
	}
	return b.ends[len(b.ends)-1]
}

func (b *batch) reset() {
	b.changes, b.spans, b.ends, b.open = b.changes[:0], b.spans[:0], b.ends[:0], false
}

// Apply implements pipeline.Sink.
func (a *Applier) Apply(ctx context.Context, in <-chan source.Txn, durable func(checkpoint.Position, bool)) error {
	conn, err := a.db.Conn(ctx)
	if err != nil {
		return fmt.Errorf("region %s: connect: %w", a.cfg.Target, err)
	}
	defer conn.Close()
	for _, q := range []string{
		// Strict, so that nothing is silently truncated; zero dates pass, as
		// they did at the source; explicit zero keys stay zero.
		"SET SESSION sql_mode = 'STRICT_ALL_TABLES,NO_AUTO_VALUE_ON_ZERO,NO_ENGINE_SUBSTITUTION'",
		"SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED",
	} {
		if _, err := conn.ExecContext(ctx, q); err != nil {
			return fmt.Errorf("region %s: %s: %w", a.cfg.Target, q, err)
		}
	}
	w := &writer{a: a, conn: conn, durable: durable}
	defer w.rollback()
	b := &batch{}
	for {
		var (
			txn source.Txn
			ok  bool
		)
		if len(b.spans) == 0 && !b.open && w.tx == nil {
			select {
			case txn, ok = <-in:
			case <-ctx.Done():
				return ctx.Err()
			}
		} else {
			select {
			case txn, ok = <-in:
			case <-ctx.Done():
				return ctx.Err()
			default:
				// Nothing more is ready: write what we have rather than wait.
				if !b.open {
					if err := w.commit(ctx, b); err != nil {
						return err
					}
					continue
				}
				select {
				case txn, ok = <-in:
				case <-ctx.Done():
					return ctx.Err()
				}
			}
		}
		if !ok {
			// The reader stopped; an incomplete transaction is abandoned.
			return nil
		}
		b.add(txn)
		if len(b.changes) < a.cfg.BatchChanges {
			continue
		}
		if b.open {
			// A large transaction: write what we hold inside the open target
			// transaction, commit only at its end.
			if err := w.flush(ctx, b); err != nil {
				return err
			}
			continue
		}
		if err := w.commit(ctx, b); err != nil {
			return err
		}
	}
}

// writer owns the target transaction of one Apply call.
type writer struct {
	a       *Applier
	conn    *sql.Conn
	tx      *sql.Tx
	durable func(checkpoint.Position, bool)
	// streamed is set once changes were written into the open transaction
	// and dropped from memory: that transaction can no longer be retried in
	// place, only by replaying from the stored checkpoint.
	streamed bool
	markPos  string // the position the marker write stored in the open tx
}

func (w *writer) rollback() {
	if w.tx != nil {
		_ = w.tx.Rollback()
		w.tx = nil
	}
	w.streamed = false
}

// begin opens the target transaction with the marker write: the pipeline's
// checkpoint row gets a new sequence number (and pos, when known).
func (w *writer) begin(ctx context.Context, pos checkpoint.Position) error {
	tx, err := w.conn.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	w.tx = tx
	var res sql.Result
	if pos != nil {
		w.markPos = pos.String()
		res, err = tx.ExecContext(ctx, "UPDATE "+quote(CheckpointTable)+
			" SET `seq` = `seq` + 1, `position` = ?, `updated_at` = UTC_TIMESTAMP(6) WHERE `pipeline` = ?",
			w.markPos, w.a.cfg.Pipeline)
	} else {
		w.markPos = ""
		res, err = tx.ExecContext(ctx, "UPDATE "+quote(CheckpointTable)+
			" SET `seq` = `seq` + 1, `updated_at` = UTC_TIMESTAMP(6) WHERE `pipeline` = ?",
			w.a.cfg.Pipeline)
	}
	if err != nil {
		return err
	}
	if n, err := res.RowsAffected(); err != nil {
		return err
	} else if n != 1 {
		return pipeline.Permanent(fmt.Errorf("region %s: %w for pipeline %s in %s; it was deleted while regiond ran: restore it or run `regiond backfill`",
			w.a.cfg.Target, errCheckpointMissing, w.a.cfg.Pipeline, CheckpointTable))
	}
	return nil
}

// flush writes the batch's changes into the open target transaction without
// committing, for a source transaction too large to hold.
func (w *writer) flush(ctx context.Context, b *batch) error {
	if w.tx == nil {
		if err := w.begin(ctx, nil); err != nil {
			w.rollback()
			return w.a.wrap(err)
		}
	}
	if err := w.exec(ctx, b.changes); err != nil {
		w.rollback()
		return w.a.wrap(err)
	}
	w.streamed = true
	// The written changes leave memory; the ends stay, for the commit. The
	// spans are only needed to split a batch that can be retried in place.
	b.changes = b.changes[:0]
	b.spans = b.spans[:0]
	return nil
}

// commit writes the batch (whole source transactions) and the pipeline's
// new position in one target transaction.
func (w *writer) commit(ctx context.Context, b *batch) error {
	end := b.end()
	if end == nil {
		return nil
	}
	if len(b.changes) == 0 && w.tx == nil {
		// Only skipped transactions: nothing to write (writing the position
		// would be a new marked transaction for the other side to skip, and
		// so on forever); the position advances in memory.
		w.durable(end, false)
		b.reset()
		return nil
	}
	for attempt := 1; ; attempt++ {
		err := w.write(ctx, b.changes, end)
		if err == nil {
			w.durable(end, true)
			b.reset()
			return nil
		}
		w.rollback()
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if pipeline.IsPermanent(err) {
			return err
		}
		if w.streamed || !isServerError(err) {
			// Replay from the stored checkpoint.
			return w.a.wrap(err)
		}
		if mysqlconn.IsLockError(err) && attempt <= w.a.cfg.LockRetries {
			w.a.logger.Debug("retrying batch after lock conflict", "attempt", attempt, "error", err)
			if err := sleep(ctx, time.Duration(attempt*attempt)*10*time.Millisecond); err != nil {
				return err
			}
			continue
		}
		if !isRetryable(err) {
			return w.isolate(ctx, b, err)
		}
		return w.a.wrap(err)
	}
}

// write applies changes (the rest of the open transaction) and commits it
// with pos as the pipeline's position.
func (w *writer) write(ctx context.Context, changes []source.Change, pos checkpoint.Position) error {
	if w.tx == nil {
		if err := w.begin(ctx, pos); err != nil {
			return err
		}
	}
	if err := w.exec(ctx, changes); err != nil {
		return err
	}
	if w.markPos != pos.String() {
		if _, err := w.tx.ExecContext(ctx, "UPDATE "+quote(CheckpointTable)+
			" SET `position` = ? WHERE `pipeline` = ?", pos.String(), w.a.cfg.Pipeline); err != nil {
			return err
		}
	}
	err := w.tx.Commit()
	w.tx = nil
	w.streamed = false
	return err
}

// exec writes changes as multi-row statements, segment by segment.
func (w *writer) exec(ctx context.Context, changes []source.Change) error {
	var (
		q    strings.Builder
		args []any
	)
	for _, seg := range segments(changes) {
		ts := w.a.sqls[seg.t]
		if ts == nil {
			ts = newTableSQL(seg.t)
			w.a.sqls[seg.t] = ts
		}
		for start := 0; start < len(seg.rows); {
			q.Reset()
			args = args[:0]
			size := 0
			n := 0
			if seg.del {
				q.WriteString(ts.deleteHead)
			} else {
				q.WriteString(ts.insertHead)
			}
			for i := start; i < len(seg.rows) && n < w.a.cfg.StatementRows && (n == 0 || size < w.a.cfg.StatementBytes); i++ {
				row := seg.rows[i]
				if n > 0 {
					q.WriteByte(',')
				}
				if seg.del {
					q.WriteString(ts.keyPH)
					for _, k := range seg.t.PK {
						args = append(args, arg(row[k]))
					}
					size += 32
				} else {
					q.WriteString(ts.rowPH)
					for _, v := range row {
						args = append(args, arg(v))
					}
					size += rowSize(row)
				}
				n++
			}
			if seg.del {
				q.WriteByte(')')
			} else {
				q.WriteString(ts.upsertTail)
			}
			if _, err := w.tx.ExecContext(ctx, q.String(), args...); err != nil {
				return err
			}
			start += n
		}
	}
	return nil
}

// isolate runs after a batch was rejected by the server: it commits the
// batch's source transactions one at a time, so every transaction before the
// failing one is kept, and then finds the row the server rejects.
func (w *writer) isolate(ctx context.Context, b *batch, batchErr error) error {
	from := 0
	for i, to := range b.spans {
		changes := b.changes[from:to]
		var err error
		for attempt := 1; attempt <= w.a.cfg.LockRetries+1; attempt++ {
			err = w.write(ctx, changes, b.ends[i])
			if err == nil || !mysqlconn.IsLockError(err) {
				break
			}
			w.rollback()
			if err := sleep(ctx, time.Duration(attempt*attempt)*10*time.Millisecond); err != nil {
				return err
			}
		}
		if err == nil {
			w.durable(b.ends[i], true)
			from = to
			continue
		}
		w.rollback()
		if !isServerError(err) || isRetryable(err) {
			return w.a.wrap(err)
		}
		return pipeline.Permanent(w.findRow(ctx, changes, b.ends[i], err))
	}
	// Every transaction went through alone: the batch failed for a reason
	// that involves several of them; they are all applied now.
	b.reset()
	w.a.logger.Warn("batch was rejected but each of its transactions applied alone", "error", batchErr)
	return nil
}

// findRow applies the changes of one rejected transaction one by one (and
// rolls back) to name the row the server rejects.
func (w *writer) findRow(ctx context.Context, changes []source.Change, end checkpoint.Position, txnErr error) error {
	defer w.rollback()
	if err := w.begin(ctx, nil); err != nil {
		return fmt.Errorf("region %s: transaction ending at %s: %w", w.a.cfg.Target, end, txnErr)
	}
	for _, c := range changes {
		if err := w.exec(ctx, []source.Change{c}); err != nil {
			row := c.After
			if row == nil {
				row = c.Before
			}
			return fmt.Errorf("region %s rejected %s of table %s row %s in the source transaction ending at %s: %w; fix the target table (or the value) and restart regiond",
				w.a.cfg.Target, c.Op, c.Table.Name, c.Table.FormatKey(row), end, err)
		}
	}
	return fmt.Errorf("region %s rejected the source transaction ending at %s: %w", w.a.cfg.Target, end, txnErr)
}

// arg turns a canonical value into a driver argument: the named string types
// pass as text (the server parses dates, decimals, JSON), booleans as 0/1,
// bit strings as integers.
func arg(v any) any {
	switch x := v.(type) {
	case nil, int64, uint64, string, []byte, float64, float32:
		return v
	case bool:
		if x {
			return int64(1)
		}
		return int64(0)
	case source.Bits:
		if u, err := x.Uint(); err == nil {
			return u
		}
		return string(x) // the server rejects it, naming the column
	case source.Decimal:
		return string(x)
	case source.Date:
		return string(x)
	case source.DateTime:
		return string(x)
	case source.Timestamp:
		return string(x)
	case source.Time:
		return string(x)
	case source.JSON:
		return string(x)
	}
	return v
}

func (a *Applier) wrap(err error) error {
	if err == nil || pipeline.IsPermanent(err) {
		return err
	}
	return fmt.Errorf("region %s: apply: %w", a.cfg.Target, err)
}

func isServerError(err error) bool { return mysqlconn.IsServerError(err) }

// isRetryable lists server errors that say "not now" rather than "never":
// the pipeline replays from its checkpoint after a backoff.
func isRetryable(err error) bool {
	switch mysqlconn.ErrorNumber(err) {
	case 1213, 1205, // deadlock, lock wait timeout
		1290, 1836, // read-only
		1040, 1203, // too many connections
		1053, 1927, 1317, // shutdown, connection killed, interrupted
		1792: // read-only transaction
		return true
	}
	return false
}

func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}
