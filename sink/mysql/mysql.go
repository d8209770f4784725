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
	"sync"
	"sync/atomic"

	"github.com/regiond/regiond/checkpoint"
	"github.com/regiond/regiond/internal/mysqlconn"
	"github.com/regiond/regiond/pipeline"
	"github.com/regiond/regiond/sink/batch"
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
	// Rules are the tables' conflict rules (nil: every table apply_remote).
	Rules *batch.Rules
	// Lanes is how many connections apply batches at once (default 2; 1
	// applies one batch at a time). See batch.Lane.
	Lanes int
	// NoLoadData writes the rows the log says are absent with INSERTs only,
	// never with LOAD DATA LOCAL (see load.go).
	NoLoadData bool
}

// Applier is the MySQL/MariaDB sink of one pipeline.
type Applier struct {
	cfg    Config
	logger *slog.Logger
	db     *sql.DB
	sqlMu  sync.Mutex
	sqls   map[*source.Table]*tableSQL
	// upserts are the prepared full-size upsert statements (see
	// preparedUpsert), by table; nil where preparing failed.
	upserts map[*source.Table]*sql.Stmt
	// start is the position last read from the target (Open, Init): where
	// Apply's run starts.
	start string
	// epoch is the fencing epoch of the lease this process holds (see
	// Lead); 0 when it never led, and then writes are not fenced.
	epoch atomic.Int64
	// loaded counts the rows LOAD DATA wrote (also in transactions rolled
	// back later), loads the statements and refused the loads found
	// skipping or changing rows (see load.go).
	loaded, loads, refused atomic.Int64
	// noLoad: no writer uses LOAD DATA any more: the server refused it
	// itself, or most loads were refused (see Exec).
	noLoad   atomic.Bool
	lastLoad atomic.Pointer[string] // the last LOAD DATA statement, for tests
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
	if cfg.Lanes <= 0 {
		cfg.Lanes = 2
	}
	db, err := mysqlconn.Open(cfg.Conn)
	if err != nil {
		return nil, err
	}
	db.SetMaxOpenConns(4 + cfg.Lanes) // apply, lanes, lease, Open/Init, spare
	return &Applier{cfg: cfg, logger: logger.With("pipeline", cfg.Pipeline), db: db, sqls: map[*source.Table]*tableSQL{}, upserts: map[*source.Table]*sql.Stmt{}}, nil
}

// Close releases the applier's connections.
func (a *Applier) Close() error {
	a.sqlMu.Lock()
	for _, st := range a.upserts {
		if st != nil {
			st.Close()
		}
	}
	a.sqlMu.Unlock()
	return a.db.Close()
}

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
	a.start = pos
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

// Apply implements pipeline.Sink.
func (a *Applier) Apply(ctx context.Context, in <-chan source.Txn, durable func(checkpoint.Position, bool)) error {
	w, err := a.newWriter(ctx, "")
	if err != nil {
		return err
	}
	defer w.Close()
	return batch.Run(ctx, batch.Config{
		Region:       a.cfg.Target,
		Pipeline:     a.cfg.Pipeline,
		BatchChanges: a.cfg.BatchChanges,
		LockRetries:  a.cfg.LockRetries,
		Logger:       a.logger,
		Rules:        a.cfg.Rules,
		Start:        batch.Stored(a.start),
		Lanes:        a.cfg.Lanes,
	}, w, in, durable)
}

// newWriter opens a connection set up for applying. lane names the lane's
// marker row ("": the serial writer, whose marker is the pipeline's row).
func (a *Applier) newWriter(ctx context.Context, lane string) (*writer, error) {
	conn, err := a.db.Conn(ctx)
	if err != nil {
		return nil, fmt.Errorf("region %s: connect: %w", a.cfg.Target, err)
	}
	// READ COMMITTED: no gap locks, so the applications' own transactions
	// (and the other lanes) meet fewer deadlocks. (A key with no row is not
	// locked by the rules' locking read; see Write for how a concurrent
	// insert is caught.)
	for _, q := range []string{
		// Strict, so that nothing is silently truncated; zero dates pass, as
		// they did at the source; explicit zero keys stay zero.
		"SET SESSION sql_mode = 'STRICT_ALL_TABLES,NO_AUTO_VALUE_ON_ZERO,NO_ENGINE_SUBSTITUTION'",
		"SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED",
	} {
		if _, err := conn.ExecContext(ctx, q); err != nil {
			conn.Close()
			return nil, fmt.Errorf("region %s: %s: %w", a.cfg.Target, q, err)
		}
	}
	w := &writer{a: a, conn: conn, lane: lane, cols: map[*source.Table][]targetColumn{}}
	// LOAD DATA LOCAL for the rows the log says are absent, where the
	// server allows it, on MariaDB, where its behaviour is tested (see
	// load.go).
	var local bool
	var version string
	if err := conn.QueryRowContext(ctx, "SELECT @@local_infile, VERSION()").Scan(&local, &version); err != nil {
		conn.Close()
		return nil, fmt.Errorf("region %s: read local_infile: %w", a.cfg.Target, err)
	}
	if local && strings.Contains(strings.ToLower(version), "mariadb") && !a.cfg.NoLoadData && !a.noLoad.Load() {
		w.load = newLoader()
	}
	return w, nil
}

// statements returns t's statement texts, built once per table.
func (a *Applier) statements(t *source.Table) *tableSQL {
	a.sqlMu.Lock()
	defer a.sqlMu.Unlock()
	ts := a.sqls[t]
	if ts == nil {
		ts = newTableSQL(t)
		a.sqls[t] = ts
	}
	return ts
}

// Lane implements batch.Laner.
func (w *writer) Lane(ctx context.Context, i int) (batch.Lane, error) {
	return w.a.newWriter(ctx, batch.LaneMarker(w.a.cfg.Pipeline, i))
}

// Close releases the writer's connection.
func (w *writer) Close() error {
	w.Rollback()
	if w.load != nil {
		w.load.close()
	}
	return w.conn.Close()
}

// BeginLane implements batch.Lane: the marker write goes to the lane's own
// row, and Commit stores the position.
func (w *writer) BeginLane(ctx context.Context) error {
	tx, err := w.conn.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	w.tx, w.markPos, w.laneTx, w.execd = tx, "", true, false
	_, err = tx.ExecContext(ctx, "INSERT INTO "+quote(CheckpointTable)+
		" (`pipeline`, `kind`, `source_region`, `position`, `seq`, `epoch`, `updated_at`) VALUES (?, 'marker', ?, '', 1, 0, UTC_TIMESTAMP(6))"+
		" ON DUPLICATE KEY UPDATE `seq` = `seq` + 1, `updated_at` = VALUES(`updated_at`)", w.lane, w.a.cfg.Source)
	return err
}

// writer is the batch.Target of one Apply call: it owns the target
// transaction.
type writer struct {
	a       *Applier
	conn    *sql.Conn
	tx      *sql.Tx
	markPos string // the position the marker write stored in the open tx
	// lane is the lane's marker row ("": not a lane); laneTx says the open
	// transaction began with it (BeginLane), so Commit stores the position.
	lane   string
	laneTx bool
	// cols caches how each rule table's target columns are read back.
	cols map[*source.Table][]targetColumn
	// pending are the conflicts recorded in the open transaction.
	pending []batch.Conflict
	// load writes absent rows with LOAD DATA (nil: INSERTs only). beginPos
	// is the position Begin was given and execd says Exec ran in the open
	// transaction: together they let Exec redo its first call without
	// loads (see Exec).
	load     *loader
	beginPos checkpoint.Position
	execd    bool
}

var _ batch.Target = (*writer)(nil)

// Rollback implements batch.Target.
func (w *writer) Rollback() {
	if w.tx != nil {
		_ = w.tx.Rollback()
		w.tx = nil
	}
	w.pending = w.pending[:0]
}

// Begin opens the target transaction with the marker write: the pipeline's
// checkpoint row gets a new sequence number (and pos, when known).
func (w *writer) Begin(ctx context.Context, pos checkpoint.Position) error {
	tx, err := w.conn.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	w.tx, w.laneTx, w.execd, w.beginPos = tx, false, false, pos
	w.markPos = ""
	if pos != nil {
		w.markPos = pos.String()
	}
	// The marker write is also the fence.
	return w.store(ctx, pos)
}

// store bumps the pipeline's checkpoint row (and stores pos, when not nil)
// in the open transaction. It is the fence: it matches only while the row
// holds this process's epoch, and then locks the row until commit, so no
// newer leader's epoch can come in between.
func (w *writer) store(ctx context.Context, pos checkpoint.Position) error {
	q := "UPDATE " + quote(CheckpointTable) + " SET `seq` = `seq` + 1, `updated_at` = UTC_TIMESTAMP(6)"
	args := []any{}
	if pos != nil {
		q += ", `position` = ?"
		args = append(args, pos.String())
	}
	q += " WHERE `pipeline` = ?"
	args = append(args, w.a.cfg.Pipeline)
	epoch := w.a.epoch.Load()
	if epoch > 0 {
		q += " AND `epoch` = ?"
		args = append(args, epoch)
	}
	res, err := w.tx.ExecContext(ctx, q, args...)
	if err != nil {
		return err
	}
	if n, err := res.RowsAffected(); err != nil {
		return err
	} else if n != 1 && epoch > 0 {
		return w.fenced(ctx, epoch)
	} else if n != 1 {
		return pipeline.Permanent(fmt.Errorf("region %s: %w for pipeline %s in %s; it was deleted while regiond ran: restore it or run `regiond backfill`",
			w.a.cfg.Target, errCheckpointMissing, w.a.cfg.Pipeline, CheckpointTable))
	}
	return nil
}

// Commit stores pos, unless the marker write did, and commits.
func (w *writer) Commit(ctx context.Context, pos checkpoint.Position) error {
	if w.laneTx {
		if err := w.store(ctx, pos); err != nil {
			return err
		}
	} else if w.markPos != pos.String() {
		if _, err := w.tx.ExecContext(ctx, "UPDATE "+quote(CheckpointTable)+
			" SET `position` = ? WHERE `pipeline` = ?", pos.String(), w.a.cfg.Pipeline); err != nil {
			return err
		}
	}
	err := w.tx.Commit()
	w.tx = nil
	if err == nil {
		w.announce()
	}
	w.pending = w.pending[:0]
	return err
}

// Exec writes changes in source order: segments of tables without a
// conflict rule as multi-row statements; steps of last_writer_wins tables
// through a locking read, the rule's decisions and guarded writes. The
// rows that apply_remote changes overwrite are read first (one locking
// read per table) and compared with what the changes' sources saw, except
// the rows the log says are absent, which are written with plain INSERTs
// and checked only when one fails (see writeAbsent).
//
// In the first Exec of a transaction, the absent rows are loaded with LOAD
// DATA (see load.go). When a load skips or changes a row, the transaction
// holds nothing but its marker write and this Exec's writes: it is rolled
// back, begun again the same way, and the changes are written with
// INSERTs.
func (w *writer) Exec(ctx context.Context, changes []source.Change) error {
	first := !w.execd
	w.execd = true
	if !first || w.load == nil || w.a.noLoad.Load() {
		return w.exec(ctx, changes, false)
	}
	err := w.exec(ctx, changes, true)
	if !errors.Is(err, errLoadRefused) {
		return err
	}
	w.a.logger.Debug("rows written again with INSERT", "reason", err)
	// A target where most loads are refused (rows that are there already,
	// a note every load leaves) would write most batches twice.
	if r := w.a.refused.Add(1); r >= 16 && 2*r >= w.a.loads.Load() && !w.a.noLoad.Swap(true) {
		w.a.logger.Info("most loads into the target were refused; absent rows are written with INSERT from now on", "loads", w.a.loads.Load(), "refused", r)
	}
	lane := w.laneTx
	w.Rollback()
	if lane {
		err = w.BeginLane(ctx)
	} else {
		err = w.Begin(ctx, w.beginPos)
	}
	if err != nil {
		return err
	}
	w.execd = true
	return w.exec(ctx, changes, false)
}

// exec is Exec, with loads of absent rows or without.
func (w *writer) exec(ctx context.Context, changes []source.Change, load bool) error {
	rules := w.a.cfg.Rules
	absence := batch.NewAbsence(rules, changes)
	remote, err := absence.CheckRemote(ctx, w)
	if err != nil {
		return err
	}
	for _, st := range batch.Plan(rules, changes) {
		if st.Segment == nil {
			if _, err := batch.ApplyLWW(ctx, w, rules, st); err != nil {
				return err
			}
			continue
		}
		seg := st.Segment
		absent, check := absence.Next(seg)
		if seg.Delete {
			if err := w.writeRows(ctx, seg.Table, seg.Rows, modeDelete); err != nil {
				return err
			}
			continue
		}
		rows, partial, fresh, checks := splitRows(seg.Rows, absent, check)
		// Keys in a segment are distinct: the order between the kinds of
		// write does not matter.
		if err := w.updatePartial(ctx, seg.Table, partial); err != nil {
			return err
		}
		if err := w.writeRows(ctx, seg.Table, rows, modeUpsert); err != nil {
			return err
		}
		if load && len(fresh) > 0 {
			n, err := w.loadRows(ctx, seg.Table, fresh, w.a.cfg.StatementBytes)
			if err != nil {
				return err
			}
			fresh, checks = fresh[n:], checks[n:]
		}
		cs, err := w.writeAbsent(ctx, seg.Table, fresh, checks)
		if err != nil {
			return err
		}
		remote = append(remote, cs...)
	}
	if len(remote) > 0 {
		return w.Record(ctx, remote)
	}
	return nil
}

// splitRows separates a segment's rows into full rows to upsert, rows
// holding source.Unchanged values (see updatePartial), and full rows the
// log says are absent (absent[i], see batch.Absence) with their checks.
func splitRows(rows []source.Row, absent []bool, check []*source.Change) (upsert, partial, fresh []source.Row, checks []*source.Change) {
	if absent == nil {
		upsert, partial = splitUnchanged(rows)
		return upsert, partial, nil, nil
	}
	// Sized first: a segment is often a whole batch, and growing the
	// slices copies them over and over.
	var nUpsert, nPartial, nFresh int
	for i, r := range rows {
		switch {
		case batch.HasUnchanged(r):
			nPartial++
		case absent[i]:
			nFresh++
		default:
			nUpsert++
		}
	}
	if nUpsert > 0 {
		upsert = make([]source.Row, 0, nUpsert)
	}
	if nPartial > 0 {
		partial = make([]source.Row, 0, nPartial)
	}
	if nFresh > 0 {
		fresh = make([]source.Row, 0, nFresh)
		checks = make([]*source.Change, 0, nFresh)
	}
	for i, r := range rows {
		switch {
		case batch.HasUnchanged(r):
			partial = append(partial, r)
		case absent[i]:
			fresh = append(fresh, r)
			checks = append(checks, check[i])
		default:
			upsert = append(upsert, r)
		}
	}
	return upsert, partial, fresh, checks
}

// writeAbsent writes rows of t that the source's log says have no row in
// the target (see batch.Absence) with plain multi-row INSERTs. A statement
// that succeeds proves that none of its keys had a row: the locking read
// and the comparison the upsert path would have made find nothing, so
// none is made. A statement that fails on a duplicate key (1062) is
// undone by the server alone (InnoDB rolls back the failed statement, not
// the transaction), and its rows take the upsert path: one locking read,
// batch.DecideRemote for the rows whose check is not nil, and the upsert.
// That is what the upsert path does for them, so the conflicts it returns
// are the same; they are recorded by the caller. (A duplicate on another
// unique key takes the same way, and the upsert does what it always did.)
// The one difference is when a first insert's key is looked at: at its
// write rather than before the batch's first write; only a target-side
// cascade of an earlier statement in the batch could tell them apart.
func (w *writer) writeAbsent(ctx context.Context, t *source.Table, rows []source.Row, checks []*source.Change) ([]batch.Conflict, error) {
	ts := w.a.statements(t)
	var (
		st  statement
		out []batch.Conflict
	)
	for start := 0; start < len(rows); {
		n := st.build(ts, t, rows[start:], modeInsert, w.a.cfg.StatementRows, w.a.cfg.StatementBytes)
		part, partChecks := rows[start:start+n], checks[start:start+n]
		start += n
		_, err := w.tx.ExecContext(ctx, st.q.String(), st.args...)
		if err == nil {
			continue
		}
		if !mysqlconnDuplicate(err) {
			return nil, err
		}
		cs, err := w.upsertChecked(ctx, t, part, partChecks)
		if err != nil {
			return nil, err
		}
		out = append(out, cs...)
	}
	return out, nil
}

// upsertChecked is the upsert path for rows whose plain INSERT met a
// present key: it reads the rows under lock, decides the checked ones
// against them, and upserts them all.
func (w *writer) upsertChecked(ctx context.Context, t *source.Table, rows []source.Row, checks []*source.Change) ([]batch.Conflict, error) {
	var out []batch.Conflict
	if rules := w.a.cfg.Rules; rules != nil {
		cur, norm, err := w.ReadRows(ctx, t, rows)
		if err != nil {
			return nil, err
		}
		for i, c := range checks {
			if c == nil {
				continue
			}
			if x, ok := batch.DecideRemote(rules, t, *c, cur[i], norm); ok {
				out = append(out, x)
			}
		}
	}
	return out, w.writeRows(ctx, t, rows, modeUpsert)
}

// writeMode is the statement writeRows builds.
type writeMode uint8

const (
	modeUpsert writeMode = iota // INSERT … ON DUPLICATE KEY UPDATE
	modeInsert                  // plain INSERT: a duplicate key is an error
	modeDelete                  // DELETE … WHERE pk IN (…): rows hold the keys
)

// writeRows writes rows of t as multi-row statements of at most
// StatementRows rows and about StatementBytes bytes.
//
// Upserts of StatementRows rows run as a statement prepared once per
// connection (see preparedUpsert): the server neither parses their text
// nor the driver escapes their values into it. Statements of fewer rows
// (the tail of a write, or cut by StatementBytes) are sent as text, and
// so are those holding values the server takes otherwise as a parameter
// than as text (see plainArgs).
func (w *writer) writeRows(ctx context.Context, t *source.Table, rows []source.Row, mode writeMode) error {
	ts := w.a.statements(t)
	maxRows, maxBytes := w.a.cfg.StatementRows, w.a.cfg.StatementBytes
	if mode != modeUpsert || len(rows) < maxRows {
		return execRows(ctx, w.tx, ts, t, rows, mode, maxRows, maxBytes)
	}
	var (
		st statement
		ps *sql.Stmt
	)
	for start := 0; start < len(rows); {
		n := st.build(ts, t, rows[start:], mode, maxRows, maxBytes)
		prepared := n == maxRows && plainArgs(st.args)
		if prepared && ps == nil {
			if base := w.a.preparedUpsert(ctx, t, st.q.String()); base != nil {
				ps = w.tx.StmtContext(ctx, base)
				defer ps.Close()
			}
		}
		var err error
		if prepared && ps != nil {
			_, err = ps.ExecContext(ctx, st.args...)
		} else {
			_, err = w.tx.ExecContext(ctx, st.q.String(), st.args...)
		}
		if err != nil {
			return err
		}
		start += n
	}
	return nil
}

// plainArgs reports whether args hold only integers, text and NULLs: the
// values a prepared statement's parameters give the columns as the text
// statement's literals do. Floats are not: a literal 2.5 is a DECIMAL,
// which an INT column rounds to 3, a DOUBLE parameter is rounded to even.
// Nor bytes: a _binary literal goes into a latin1 column byte for byte, a
// parameter is converted from the connection's character set.
func plainArgs(args []any) bool {
	for _, v := range args {
		switch v.(type) {
		case nil, int64, uint64, string:
		default:
			return false
		}
	}
	return true
}

// maxPlaceholders is how many parameters one prepared statement may have.
const maxPlaceholders = 65535

// preparedUpsert returns the prepared upsert of StatementRows rows of t,
// whose text is q, preparing it at the first call (nil: it cannot be
// prepared, and the upserts go as text). It is prepared on the pool;
// Tx.StmtContext prepares it once on each connection that runs it.
func (a *Applier) preparedUpsert(ctx context.Context, t *source.Table, q string) *sql.Stmt {
	a.sqlMu.Lock()
	defer a.sqlMu.Unlock()
	if st, ok := a.upserts[t]; ok {
		return st
	}
	var st *sql.Stmt
	if a.cfg.StatementRows*len(t.Columns) <= maxPlaceholders {
		var err error
		if st, err = a.db.PrepareContext(ctx, q); err != nil {
			if !isServerError(err) {
				return nil // not kept: the next call tries again
			}
			a.logger.Debug("upserts are sent as text", "table", t.Name, "reason", err)
			st = nil
		}
	}
	a.upserts[t] = st
	return st
}

// execer runs a statement: *sql.Tx, *sql.Conn or *sql.DB.
type execer interface {
	ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error)
}

// execRows writes rows of t through ts as multi-row statements of at most
// maxRows rows and about maxBytes bytes.
func execRows(ctx context.Context, ex execer, ts *tableSQL, t *source.Table, rows []source.Row, mode writeMode, maxRows, maxBytes int) error {
	var st statement
	for start := 0; start < len(rows); {
		n := st.build(ts, t, rows[start:], mode, maxRows, maxBytes)
		if _, err := ex.ExecContext(ctx, st.q.String(), st.args...); err != nil {
			return err
		}
		start += n
	}
	return nil
}

// statement is a multi-row statement being built; its buffers are reused.
type statement struct {
	q    strings.Builder
	args []any
}

// build makes st the statement of mode for the first rows, at most maxRows
// rows and about maxBytes bytes, and returns how many rows it holds.
func (st *statement) build(ts *tableSQL, t *source.Table, rows []source.Row, mode writeMode, maxRows, maxBytes int) int {
	q := &st.q
	q.Reset()
	clear(st.args)
	st.args = st.args[:0]
	size, n := 0, 0
	if mode == modeDelete {
		q.WriteString(ts.deleteHead)
	} else {
		q.WriteString(ts.insertHead)
	}
	for i := 0; i < len(rows) && n < maxRows && (n == 0 || size < maxBytes); i++ {
		row := rows[i]
		if n > 0 {
			q.WriteByte(',')
		}
		if mode == modeDelete {
			q.WriteString(ts.keyPH)
			for _, k := range t.PK {
				st.args = append(st.args, arg(row[k]))
			}
			size += 32
		} else {
			q.WriteString(ts.rowPH)
			for _, v := range row {
				st.args = append(st.args, arg(v))
			}
			size += rowSize(row)
		}
		n++
	}
	switch mode {
	case modeDelete:
		q.WriteByte(')')
	case modeUpsert:
		q.WriteString(ts.upsertTail)
	}
	return n
}

// splitUnchanged separates rows holding source.Unchanged (a Postgres source's
// TOASTed value the update did not carry) from full rows.
func splitUnchanged(rows []source.Row) (full, partial []source.Row) {
	for _, r := range rows {
		if batch.HasUnchanged(r) {
			if partial == nil {
				full = append(make([]source.Row, 0, len(rows)), full...)
			}
			partial = append(partial, r)
			continue
		}
		full = append(full, r)
	}
	return full, partial
}

// updatePartial writes rows that hold source.Unchanged values with an UPDATE
// of the other columns, leaving the unchanged ones as the target has them.
// A row missing in the target cannot be completed: it is logged and skipped.
func (w *writer) updatePartial(ctx context.Context, t *source.Table, rows []source.Row) error {
	missing := 0
	for _, row := range rows {
		var set []string
		var args []any
		isPK := make(map[int]bool, len(t.PK))
		for _, k := range t.PK {
			isPK[k] = true
		}
		for i, c := range t.Columns {
			if isPK[i] || row[i] == source.Unchanged {
				continue
			}
			set = append(set, quote(c.Name)+" = ?")
			args = append(args, arg(row[i]))
		}
		var where []string
		for _, k := range t.PK {
			where = append(where, quote(t.Columns[k].Name)+" = ?")
			args = append(args, arg(row[k]))
		}
		if len(set) == 0 {
			continue
		}
		res, err := w.tx.ExecContext(ctx, "UPDATE "+quote(t.Name)+" SET "+strings.Join(set, ", ")+" WHERE "+strings.Join(where, " AND "), args...)
		if err != nil {
			return err
		}
		if n, _ := res.RowsAffected(); n == 0 {
			missing++
		}
	}
	if missing > 0 {
		w.a.logger.Warn("rows updated at the source without their unchanged large values are missing in the target; they were skipped (run `regiond backfill` for this table)",
			"table", t.Name, "rows", missing)
	}
	return nil
}

// Classify implements batch.Target: lock conflicts retry in place, errors
// that say "not now" (or no server answer) replay from the checkpoint, and
// any other server error rejects the data.
func (w *writer) Classify(err error) batch.Class {
	switch {
	case errors.Is(err, errInsertRace):
		return batch.Lock
	case !isServerError(err):
		return batch.Transient
	case mysqlconn.IsLockError(err):
		return batch.Lock
	case isRetryable(err):
		return batch.Transient
	}
	return batch.Rejected
}

// Explain implements batch.Target. MySQL's own messages name the column.
func (w *writer) Explain(context.Context, source.Change, error) string { return "" }

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
