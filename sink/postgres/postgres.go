// Package postgres applies a pipeline's transactions to a PostgreSQL target:
// in batches of many source transactions, as set-based statements over
// arrays (INSERT … SELECT … FROM unnest(…) ON CONFLICT, DELETE … IN (SELECT
// … FROM unnest(…))), in one target transaction that begins with regiond's
// marker write and stores the pipeline's new position, so that each source
// transaction takes effect exactly once.
//
// Values are written by the target column's type: the canonical value's
// text, cast by the server. The apply session runs with
// session_replication_role = replica, so that neither user triggers nor
// foreign-key triggers fire for replicated rows (they fired in the region
// the change was made in).
package postgres

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	pgxconn "github.com/jackc/pgx/v5/pgconn"

	"github.com/regiond/regiond/checkpoint"
	"github.com/regiond/regiond/internal/pgconn"
	"github.com/regiond/regiond/pipeline"
	"github.com/regiond/regiond/sink/batch"
	"github.com/regiond/regiond/source"
)

// Config says where and how to apply.
type Config struct {
	Pipeline string // "source->target"
	Source   string // source region name
	Target   string // target region name
	DSN      string // postgres:// URL of the target database
	// Schema holds the tables and regiond_checkpoints ("public" by default).
	Schema string
	// Tables are the configured tables; Open checks that each exists in the
	// target with a primary key before regiond writes anything there.
	Tables []string
	// BatchChanges is how many changes a batch collects before it is written
	// (default 8192). A batch is also written as soon as the source has
	// nothing more ready, so a lone small transaction never waits.
	BatchChanges int
	// StatementRows bounds the rows of one statement (default 4096).
	StatementRows int
	// FastRows is the fewest rows of a segment that a fast path (copy.go:
	// COPY of inserts, UPDATE of updates, without the apply_remote check's
	// locking read) takes (default 32; below it the round trip of its own
	// costs more than it saves). A negative value turns them off.
	FastRows int
	// TextCopy makes the insert fast path's COPY use the text format
	// always, not the binary format where every value has one
	// (copybin.go); for tests and measurements.
	TextCopy bool
	// LockRetries is how many times a batch that hit a deadlock, lock
	// timeout or serialization failure is retried in place (default 20).
	LockRetries int
	// LockTimeout is the apply session's lock_timeout (default 10 s): a row
	// lock held longer by a local transaction fails the batch, which is
	// then retried, instead of stalling the pipeline silently.
	LockTimeout time.Duration
	// Rules are the tables' conflict rules (nil: every table apply_remote).
	Rules *batch.Rules
	// Lanes is how many connections apply batches at once (see batch.Lane).
	// The default is 2. (It was 1 while each connection's first five
	// executions of a statement got a custom plan: with two lanes most of
	// the bench's updates were applied by sequential scans, and the target
	// spent about 60% more CPU on them.)
	Lanes int
}

// Applier is the PostgreSQL sink of one pipeline.
type Applier struct {
	cfg    Config
	logger *slog.Logger
	conn   *pgx.ConnConfig
	// start is the position last read from the target (Open, Init): where
	// Apply's run starts.
	start string
	// chunk is the idle connection (and its cached plans) of chunk
	// transactions (chunk.go), kept between them.
	chunk *target
	// epoch is the fencing epoch of the lease this process holds (see
	// Lead); 0 when it never led, and then writes are not fenced.
	epoch atomic.Int64
	// copies counts the COPYs of the insert fast path (copy.go), and
	// copyFallbacks those that met a present row and were rolled back.
	copies, copyFallbacks atomic.Int64
	// binaryCopies counts the COPYs that went in binary format.
	binaryCopies atomic.Int64
}

var _ pipeline.Sink = (*Applier)(nil)

// New returns an applier; it connects only when used.
func New(cfg Config, logger *slog.Logger) (*Applier, error) {
	if cfg.Schema == "" {
		cfg.Schema = "public"
	}
	if cfg.BatchChanges <= 0 {
		cfg.BatchChanges = 8192
	}
	if cfg.StatementRows <= 0 {
		cfg.StatementRows = 4096
	}
	if cfg.LockRetries <= 0 {
		cfg.LockRetries = 20
	}
	if cfg.FastRows == 0 {
		cfg.FastRows = 32
	}
	if cfg.LockTimeout <= 0 {
		cfg.LockTimeout = 10 * time.Second
	}
	if cfg.Lanes <= 0 {
		cfg.Lanes = 2
	}
	conn, err := pgconn.Config(cfg.DSN)
	if err != nil {
		return nil, fmt.Errorf("region %s: %w", cfg.Target, err)
	}
	return &Applier{cfg: cfg, logger: logger.With("pipeline", cfg.Pipeline), conn: conn}, nil
}

// Close releases the applier's resources. Connections live only as long as
// the Open, Init or Apply call that made them, except the idle connection
// of chunk transactions, which Close closes.
func (a *Applier) Close() error {
	if a.chunk != nil {
		closeConn(a.chunk.conn)
		a.chunk = nil
	}
	return nil
}

func (a *Applier) connect(ctx context.Context) (*pgx.Conn, error) {
	conn, err := pgx.ConnectConfig(ctx, a.conn.Copy())
	if err != nil {
		return nil, fmt.Errorf("region %s: connect: %w", a.cfg.Target, err)
	}
	useTextArrayCodec(conn)
	return conn, nil
}

func closeConn(conn *pgx.Conn) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_ = conn.Close(ctx)
}

func (a *Applier) checkpointTable() string { return pgconn.Ident(a.cfg.Schema, pgconn.CheckpointTable) }

// Open checks the configured tables, creates regiond's tables
// (regiond_checkpoints, regiond_tombstones, regiond_conflicts) when they are
// missing and returns the pipeline's stored position ("" when none).
func (a *Applier) Open(ctx context.Context) (string, error) {
	conn, err := a.connect(ctx)
	if err != nil {
		return "", err
	}
	defer closeConn(conn)
	if err := checkTables(ctx, conn, a.cfg.Target, a.cfg.Schema, a.cfg.Tables); err != nil {
		return "", err
	}
	if err := pgconn.EnsureTables(ctx, conn, a.cfg.Schema); err != nil {
		return "", fmt.Errorf("region %s: %w", a.cfg.Target, err)
	}
	return a.stored(ctx, conn)
}

func (a *Applier) stored(ctx context.Context, conn *pgx.Conn) (string, error) {
	var pos string
	err := conn.QueryRow(ctx, "SELECT position FROM "+a.checkpointTable()+" WHERE pipeline = $1", a.cfg.Pipeline).Scan(&pos)
	if errors.Is(err, pgx.ErrNoRows) {
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("region %s: read checkpoint: %w", a.cfg.Target, err)
	}
	a.start = pos
	return pos, nil
}

// Init stores pos unless a position is stored already, and returns the one
// in force. The write is itself a marked transaction (it only touches the
// checkpoint table).
func (a *Applier) Init(ctx context.Context, pos string) (string, error) {
	conn, err := a.connect(ctx)
	if err != nil {
		return "", err
	}
	defer closeConn(conn)
	_, err = conn.Exec(ctx, "INSERT INTO "+a.checkpointTable()+
		" (pipeline, kind, source_region, position, seq, epoch, updated_at) VALUES ($1, 'pipeline', $2, $3, 1, 0, now())"+
		" ON CONFLICT (pipeline) DO NOTHING", a.cfg.Pipeline, a.cfg.Source, pos)
	if err != nil {
		return "", fmt.Errorf("region %s: store start position: %w", a.cfg.Target, err)
	}
	return a.stored(ctx, conn)
}

// Apply implements pipeline.Sink.
func (a *Applier) Apply(ctx context.Context, in <-chan source.Txn, durable func(checkpoint.Position, bool)) error {
	t, err := a.newTarget(ctx, "")
	if err != nil {
		return err
	}
	defer t.Close()
	return batch.Run(ctx, batch.Config{
		Region:       a.cfg.Target,
		Pipeline:     a.cfg.Pipeline,
		BatchChanges: a.cfg.BatchChanges,
		LockRetries:  a.cfg.LockRetries,
		Logger:       a.logger,
		Rules:        a.cfg.Rules,
		Start:        batch.Stored(a.start),
		Lanes:        a.cfg.Lanes,
	}, t, in, durable)
}

// newTarget opens a connection set up for applying. lane names the lane's
// marker row ("": the serial target, whose marker is the pipeline's row).
func (a *Applier) newTarget(ctx context.Context, lane string) (*target, error) {
	conn, err := a.connect(ctx)
	if err != nil {
		return nil, err
	}
	if err := a.setupSession(ctx, conn); err != nil {
		closeConn(conn)
		return nil, err
	}
	t := &target{a: a, conn: conn, lane: lane, tables: map[string]*pgTable{}, plans: map[*source.Table]*plan{}, reads: map[*pgTable]*ruleInfo{}}
	for _, name := range a.cfg.Tables {
		if _, err := t.table(ctx, name); err != nil {
			closeConn(conn)
			return nil, err
		}
	}
	return t, nil
}

// Lane implements batch.Laner.
func (t *target) Lane(ctx context.Context, i int) (batch.Lane, error) {
	return t.a.newTarget(ctx, batch.LaneMarker(t.a.cfg.Pipeline, i))
}

// Close releases the target's connection.
func (t *target) Close() error {
	t.Rollback()
	closeConn(t.conn)
	return nil
}

// BeginLane implements batch.Lane: the marker write goes to the lane's own
// row, and Commit stores the position. The statements are sent with the
// next Exec or Commit.
func (t *target) BeginLane(ctx context.Context) error {
	t.pending = &pgx.Batch{}
	t.pending.Queue("BEGIN")
	t.markPos, t.laneTx, t.copies = "", true, 0
	t.pending.Queue("INSERT INTO "+t.a.checkpointTable()+
		" (pipeline, kind, source_region, position, seq, epoch, updated_at) VALUES ($1, 'marker', $2, '', 1, 0, now())"+
		" ON CONFLICT (pipeline) DO UPDATE SET seq = "+t.a.checkpointTable()+".seq + 1, updated_at = now()", t.lane, t.a.cfg.Source)
	return nil
}

func (a *Applier) setupSession(ctx context.Context, conn *pgx.Conn) error {
	_, err := conn.Exec(ctx, "SET session_replication_role = replica")
	if err != nil {
		if pgCode(err) == "42501" {
			user := a.conn.User
			return pipeline.Permanent(fmt.Errorf("region %s: SET session_replication_role = replica: %w; regiond applies with it so that triggers do not fire a second time: "+
				"make %s a superuser, or (PostgreSQL 15+) GRANT SET ON PARAMETER session_replication_role TO %s",
				a.cfg.Target, err, user, roleName(user)))
		}
		return fmt.Errorf("region %s: SET session_replication_role = replica: %w", a.cfg.Target, err)
	}
	for _, q := range []string{
		fmt.Sprintf("SET lock_timeout = %d", a.cfg.LockTimeout.Milliseconds()),
		"SET default_transaction_isolation = 'read committed'",
		// Every statement finds rows by arrays of keys (unnest). A custom
		// plan (the first five executions of each prepared statement)
		// knows the arrays' length, and for a few thousand keys picks a
		// hash join over a sequential scan of the whole table: twice the
		// time of the generic plan's index lookups for 8192 updates of a
		// 200,000-row table, plus about 10 ms of planning each time.
		"SET plan_cache_mode = force_generic_plan",
	} {
		if _, err := conn.Exec(ctx, q); err != nil {
			return fmt.Errorf("region %s: %s: %w", a.cfg.Target, q, err)
		}
	}
	return nil
}

// target is the batch.Target of one Apply call: it owns the connection and
// its transaction.
//
// Statements go out as pipelined batches: BEGIN and the marker write wait
// in pending and travel with the first Exec (or the Commit), so a small
// source transaction costs two round trips.
type target struct {
	a       *Applier
	conn    *pgx.Conn
	tables  map[string]*pgTable
	plans   map[*source.Table]*plan
	pending *pgx.Batch // queued, not yet sent
	begun   bool       // BEGIN was sent: the server has a transaction open
	markPos string     // the position the marker write stores
	// lane is the lane's marker row ("": not a lane); laneTx says the open
	// transaction began with it (BeginLane), so Commit stores the position.
	lane   string
	laneTx bool
	// reads caches how each target table's columns are read back as
	// canonical values (rule tables).
	reads map[*pgTable]*ruleInfo
	// conflicts are the conflicts recorded in the open transaction,
	// announced when it commits.
	conflicts []batch.Conflict
	// copies counts the COPYs of the open transaction (copySavepoints);
	// copyBuf is their data, reused.
	copies  int
	copyBuf copyBuffer
	// keys is the fast paths' planning state, reused from batch to batch.
	keys keyStates
	// keyed and sortedRows are sortByKey's, reused.
	keyed      []keyedRow
	sortedRows []source.Row
}

var _ batch.Target = (*target)(nil)

// table returns the target table's definition, read from the server the
// first time.
func (t *target) table(ctx context.Context, name string) (*pgTable, error) {
	if tb := t.tables[name]; tb != nil {
		return tb, nil
	}
	tb, err := loadTable(ctx, t.conn, t.a.cfg.Schema, name)
	if err != nil {
		return nil, fmt.Errorf("region %s: read definition of table %s: %w", t.a.cfg.Target, name, err)
	}
	if tb == nil {
		return nil, pipeline.Permanent(fmt.Errorf("region %s: %w: table %s does not exist in schema %s: create it with the same definition as in the other regions",
			t.a.cfg.Target, errSchema, name, t.a.cfg.Schema))
	}
	if len(tb.pk) == 0 {
		return nil, pipeline.Permanent(fmt.Errorf("region %s: %w: table %s has no primary key: ALTER TABLE %s ADD PRIMARY KEY (...) in every region",
			t.a.cfg.Target, errSchema, name, tb.ident))
	}
	t.tables[name] = tb
	return tb, nil
}

// plan returns how to write changes of source table st. When the cached
// target definition lacks a column, it is read again once (a column added
// since Apply started) before that is an error.
func (t *target) plan(ctx context.Context, st *source.Table) (*plan, error) {
	if p := t.plans[st]; p != nil {
		return p, nil
	}
	tb, err := t.table(ctx, st.Name)
	if err != nil {
		return nil, err
	}
	p, err := newPlan(t.a.cfg.Target, st, tb)
	if err != nil && !t.begun {
		// Reading the definition again inside an open transaction would see
		// a schema that the transaction's snapshot may not; only outside.
		delete(t.tables, st.Name)
		if tb, err2 := t.table(ctx, st.Name); err2 == nil {
			p, err = newPlan(t.a.cfg.Target, st, tb)
		}
	}
	if err != nil {
		return nil, err
	}
	t.plans[st] = p
	return p, nil
}

// Begin implements batch.Target. The statements are sent with the next
// Exec or Commit.
func (t *target) Begin(ctx context.Context, pos checkpoint.Position) error {
	t.pending = &pgx.Batch{}
	t.pending.Queue("BEGIN")
	t.markPos, t.laneTx = "", false
	t.copies = 0
	if pos != nil {
		t.markPos = pos.String()
	}
	t.queueStore(t.pending, pos)
	return nil
}

// queueStore queues the write that bumps the pipeline's checkpoint row (and
// stores pos, when not nil). It is the fence: it matches only while the
// row holds this process's epoch, and then locks the row until commit, so
// no newer leader's epoch can come in between.
func (t *target) queueStore(b *pgx.Batch, pos checkpoint.Position) {
	mark := "UPDATE " + t.a.checkpointTable() + " SET seq = seq + 1, updated_at = now() WHERE pipeline = $1"
	args := []any{t.a.cfg.Pipeline}
	if pos != nil {
		mark = "UPDATE " + t.a.checkpointTable() + " SET seq = seq + 1, position = $2, updated_at = now() WHERE pipeline = $1"
		args = append(args, pos.String())
	}
	missing := func() error {
		return pipeline.Permanent(fmt.Errorf("region %s: checkpoint row missing for pipeline %s in %s; it was deleted while regiond ran: restore it or run `regiond backfill`",
			t.a.cfg.Target, t.a.cfg.Pipeline, pgconn.CheckpointTable))
	}
	epoch := t.a.epoch.Load()
	if epoch <= 0 {
		b.Queue(mark, args...).Exec(func(ct pgxconn.CommandTag) error {
			if ct.RowsAffected() != 1 {
				return missing()
			}
			return nil
		})
		return
	}
	// The statement reports the epoch it saw, to tell a takeover from a
	// missing row.
	args = append(args, epoch)
	fenced := "WITH m AS (" + mark + fmt.Sprintf(" AND epoch = $%d RETURNING 1)", len(args)) +
		" SELECT (SELECT count(*) FROM m), (SELECT epoch FROM " + t.a.checkpointTable() + " WHERE pipeline = $1)"
	b.Queue(fenced, args...).QueryRow(func(row pgx.Row) error {
		var (
			n   int64
			cur *int64
		)
		if err := row.Scan(&n, &cur); err != nil {
			return err
		}
		switch {
		case n == 1:
			return nil
		case cur == nil:
			return missing()
		}
		return fmt.Errorf("region %s: pipeline %s: %w (this process's epoch %d, now %d)", t.a.cfg.Target, t.a.cfg.Pipeline, pipeline.ErrFenced, epoch, *cur)
	})
}

// Commit implements batch.Target.
func (t *target) Commit(ctx context.Context, pos checkpoint.Position) error {
	b := t.take()
	if t.laneTx {
		// The fence must have matched before COMMIT is sent: sent in one
		// pipeline, COMMIT would run after a write that matched nothing.
		t.queueStore(b, pos)
		if err := t.send(ctx, b); err != nil {
			return err
		}
		b = &pgx.Batch{}
	} else if t.markPos != pos.String() {
		b.Queue("UPDATE "+t.a.checkpointTable()+" SET position = $2 WHERE pipeline = $1", t.a.cfg.Pipeline, pos.String())
	}
	b.Queue("COMMIT").Exec(func(ct pgxconn.CommandTag) error {
		if ct.String() != "COMMIT" {
			return fmt.Errorf("commit: the server answered %s", ct)
		}
		return nil
	})
	if err := t.send(ctx, b); err != nil {
		// Still begun: Rollback ends whatever is left of the transaction.
		return err
	}
	t.begun = false
	t.announce()
	return nil
}

// Rollback implements batch.Target.
func (t *target) Rollback() {
	t.pending = nil
	t.conflicts = t.conflicts[:0]
	if !t.begun {
		return
	}
	t.begun = false
	if t.conn.IsClosed() {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := t.conn.Exec(ctx, "ROLLBACK"); err != nil {
		// The connection is unusable; the server rolls back when it goes.
		closeConn(t.conn)
	}
}

// take returns the pending statements (BEGIN and the marker write) as the
// start of a new batch.
func (t *target) take() *pgx.Batch {
	b := t.pending
	t.pending = nil
	if b == nil {
		b = &pgx.Batch{}
	}
	return b
}

// send runs b and returns its first error.
func (t *target) send(ctx context.Context, b *pgx.Batch) error {
	if b.Len() == 0 {
		return nil
	}
	if len(b.QueuedQueries) > 0 && b.QueuedQueries[0].SQL == "BEGIN" {
		t.begun = true
	}
	return t.conn.SendBatch(ctx, b).Close()
}

// Exec implements batch.Target: changes in source order, tables without a
// conflict rule as one statement per segment and chunk of rows, all sent as
// one pipelined batch; steps of last_writer_wins tables through a locking
// read, the rule's decisions and guarded writes (see rules.go), which send
// what is queued before each locking read. The rows that apply_remote
// changes overwrite are read first (one locking read per table) and
// compared with what the changes' sources saw, except the rows the log says
// are absent, which go by COPY when a segment has enough of them and are
// checked only if the COPY meets a row (copy.go).
func (t *target) Exec(ctx context.Context, changes []source.Change) error {
	rules := t.a.cfg.Rules
	steps := batch.Plan(rules, changes)
	var (
		fast map[int]*fastRows
		keys *keyStates
	)
	if t.a.cfg.FastRows > 0 {
		fast, keys = planCopies(&t.keys, rules, changes, steps, t.a.cfg.FastRows, copySavepoints-t.copies)
	}
	checked := changes
	if fast != nil {
		checked = withoutKeys(changes, keys)
	}
	remote, err := batch.CheckRemote(ctx, t, rules, checked)
	if err != nil {
		return err
	}
	b := t.take()
	for i, st := range steps {
		if st.Segment == nil {
			t.pending = b
			if _, err := batch.ApplyLWW(ctx, t, rules, st); err != nil {
				return err
			}
			b = t.take()
			continue
		}
		seg := st.Segment
		p, err := t.plan(ctx, seg.Table)
		if err != nil {
			return err
		}
		if seg.Delete {
			t.queueRows(b, p.delete, p, p.key, seg.Rows)
			continue
		}
		rows := seg.Rows
		if f := fast[i]; f != nil {
			if b, err = t.writeFast(ctx, b, p, f, changes); err != nil {
				return err
			}
			rows = f.rest
		}
		full, partial, order := splitUnchanged(p, rows)
		t.queueRows(b, p.upsert, p, p.written, full)
		for _, u := range order {
			if u.sql != "" {
				t.queueUpdate(b, u, p, seg.Table.Name, partial[u])
			}
		}
	}
	if len(remote) > 0 {
		t.pending = b
		if err := t.Record(ctx, remote); err != nil {
			return err
		}
		b = t.take()
	}
	return t.send(ctx, b)
}

// queueRows queues sql over rows in chunks, one text array per source
// column in cols.
func (t *target) queueRows(b *pgx.Batch, sql string, p *plan, cols []int, rows []source.Row) {
	for start := 0; start < len(rows); start += t.a.cfg.StatementRows {
		chunk := rows[start:min(start+t.a.cfg.StatementRows, len(rows))]
		b.Queue(sql, columnArrays(p, cols, chunk)...)
	}
}

// queueUpdate queues the UPDATE for rows that hold source.Unchanged values.
// A row missing in the target cannot be inserted (the log did not carry all
// of it); that is logged, not an error: replaying a suffix of the stream
// after the row was deleted does the same.
func (t *target) queueUpdate(b *pgx.Batch, u *update, p *plan, table string, rows []source.Row) {
	for start := 0; start < len(rows); start += t.a.cfg.StatementRows {
		chunk := rows[start:min(start+t.a.cfg.StatementRows, len(rows))]
		want := int64(len(chunk))
		b.Queue(u.sql, columnArrays(p, u.cols, chunk)...).Exec(func(ct pgxconn.CommandTag) error {
			if n := ct.RowsAffected(); n < want {
				t.a.logger.Warn("updated rows are missing in the target and were not inserted, because the source log left some of their values out (unchanged TOASTed values); `regiond verify --repair` restores them",
					"table", table, "missing", want-n)
			}
			return nil
		})
	}
}

// columnArrays returns one text array per source column in cols over rows.
func columnArrays(p *plan, cols []int, rows []source.Row) []any {
	args := make([]any, len(cols))
	for n, i := range cols {
		c := p.cols[i]
		arr := make(textArray, len(rows))
		for r, row := range rows {
			arr[r] = encode(row[i], c)
		}
		args[n] = arr
	}
	return args
}

// splitUnchanged separates the rows that hold source.Unchanged values,
// grouped by the UPDATE that writes them, from the full rows.
func splitUnchanged(p *plan, rows []source.Row) (full []source.Row, partial map[*update][]source.Row, order []*update) {
	n := 0
	for _, r := range rows {
		if batch.HasUnchanged(r) {
			n++
		}
	}
	if n == 0 {
		return rows, nil, nil
	}
	full = make([]source.Row, 0, len(rows)-n)
	partial = map[*update][]source.Row{}
	for _, row := range rows {
		if !batch.HasUnchanged(row) {
			full = append(full, row)
			continue
		}
		u := p.updateFor(unchangedCols(row))
		if _, ok := partial[u]; !ok {
			order = append(order, u)
		}
		partial[u] = append(partial[u], row)
	}
	return full, partial, order
}

func unchangedCols(row source.Row) []int {
	var out []int
	for i, v := range row {
		if v == source.Unchanged {
			out = append(out, i)
		}
	}
	return out
}

// Classify implements batch.Target.
func (t *target) Classify(err error) batch.Class {
	if errors.Is(err, errInsertRace) {
		// A guarded INSERT met a row a local transaction inserted after the
		// locking read: retry the batch, which reads it again.
		return batch.Lock
	}
	var pe *pgxconn.PgError
	if !errors.As(err, &pe) {
		return batch.Transient // no answer from the server: connection, context
	}
	switch pe.Code {
	case "40P01", // deadlock_detected
		"55P03", // lock_not_available (lock_timeout)
		"40001": // serialization_failure
		return batch.Lock
	case "25006", // read_only_sql_transaction (a standby, a failover under way)
		"25P02", // in_failed_sql_transaction
		"57014": // query_canceled (statement_timeout, pg_cancel_backend)
		return batch.Transient
	}
	switch pe.Code[:2] {
	case "08", // connection exception
		"53", // insufficient resources
		"57", // operator intervention (shutdown)
		"58", // system error
		"XX": // internal error
		return batch.Transient
	}
	return batch.Rejected
}

// pgCode returns the SQLSTATE of a server error, or "".
func pgCode(err error) string {
	var pe *pgxconn.PgError
	if errors.As(err, &pe) {
		return pe.Code
	}
	return ""
}

// roleName is user as SQL spells it: bare when that reads back the same.
func roleName(user string) string {
	for i, r := range user {
		if !(r >= 'a' && r <= 'z' || r == '_' || i > 0 && r >= '0' && r <= '9') {
			return pgconn.Ident(user)
		}
	}
	if user == "" {
		return pgconn.Ident(user)
	}
	return user
}
