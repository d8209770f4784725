// Package mysql reads a MySQL or MariaDB region's binlog (row format, full
// row images, full row metadata) with go-mysql and turns it into committed
// transactions of row changes, positioned by GTID state.
package mysql

import (
	"context"
	"database/sql"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"sync/atomic"
	"time"

	gomysql "github.com/go-mysql-org/go-mysql/mysql"
	"github.com/go-mysql-org/go-mysql/replication"
	"github.com/google/uuid"
	"github.com/pingcap/tidb/pkg/parser"
	"golang.org/x/text/encoding"

	"github.com/regiond/regiond/checkpoint"
	"github.com/regiond/regiond/internal/mysqlconn"
	"github.com/regiond/regiond/pipeline"
	"github.com/regiond/regiond/source"
)

// MarkerTable is regiond's own table whose write opens every transaction
// regiond makes in a region; readers skip transactions that begin with it.
const MarkerTable = "regiond_checkpoints"

// Config says which binlog to read and what to keep of it.
type Config struct {
	Region string // the region this binlog belongs to
	Conn   mysqlconn.Params
	// Flavor is "mysql" or "mariadb"; empty means ask the server.
	Flavor string
	// ServerID is the replica id regiond presents to the server. It must be
	// unique among the server's replicas, and per pipeline.
	ServerID uint32
	// Tables is the set of configured (bare) table names to capture.
	Tables map[string]bool
	// ChunkChanges bounds how many changes of one large transaction are held
	// before they are sent on as a chunk (default 4096).
	ChunkChanges int
}

// Reader reads one region's binlog. It is safe to call Read again after it
// returned (the pipeline supervisor does so after failures).
type Reader struct {
	cfg    Config
	logger *slog.Logger
	db     *sql.DB
	ends   ends // binlog coordinates of recent transaction ends (LagBytes)
	// slowDecode turns the fast row-image decoder off (tests compare both).
	slowDecode bool
	// fastRows counts the row images the fast decoder decoded (tests).
	fastRows atomic.Int64
}

var _ source.Source = (*Reader)(nil)

// New returns a reader; it connects lazily.
func New(cfg Config, logger *slog.Logger) (*Reader, error) {
	if cfg.ChunkChanges <= 0 {
		cfg.ChunkChanges = 4096
	}
	if cfg.ServerID == 0 {
		return nil, errors.New("mysql source: server id must not be 0")
	}
	db, err := mysqlconn.Open(cfg.Conn)
	if err != nil {
		return nil, err
	}
	db.SetMaxOpenConns(2)
	return &Reader{cfg: cfg, logger: logger, db: db}, nil
}

// Close releases the reader's connections.
func (r *Reader) Close() error { return r.db.Close() }

func (r *Reader) flavor(ctx context.Context) (string, error) {
	if r.cfg.Flavor != "" {
		return r.cfg.Flavor, nil
	}
	f, err := mysqlconn.Flavor(ctx, r.db)
	if err != nil {
		return "", fmt.Errorf("region %s: %w", r.cfg.Region, err)
	}
	r.cfg.Flavor = f
	return f, nil
}

// CurrentPosition returns the server's GTID state: @@gtid_binlog_pos on
// MariaDB (every domain in the binlog), @@gtid_executed on MySQL.
func (r *Reader) CurrentPosition(ctx context.Context) (checkpoint.Position, error) {
	flavor, err := r.flavor(ctx)
	if err != nil {
		return nil, err
	}
	if err := r.preflight(ctx); err != nil {
		return nil, err
	}
	q := "SELECT @@GLOBAL.gtid_executed"
	if flavor == gomysql.MariaDBFlavor {
		q = "SELECT @@GLOBAL.gtid_binlog_pos"
	}
	var s string
	if err := r.db.QueryRowContext(ctx, q).Scan(&s); err != nil {
		return nil, fmt.Errorf("region %s: read gtid position: %w", r.cfg.Region, err)
	}
	return checkpoint.ParseGTID(flavor, strings.ReplaceAll(s, "\n", ""))
}

// ParsePosition parses a GTID state of this region's flavor.
func (r *Reader) ParsePosition(s string) (checkpoint.Position, error) {
	flavor := r.cfg.Flavor
	if flavor == "" {
		flavor = guessFlavor(s)
	}
	return checkpoint.ParseGTID(flavor, s)
}

// guessFlavor tells a MySQL GTID set (uuid:interval) from MariaDB's
// domain-server-seq list, for positions parsed before the server answered.
func guessFlavor(s string) string {
	if strings.Contains(s, ":") {
		return gomysql.MySQLFlavor
	}
	return gomysql.MariaDBFlavor
}

// Ack is a no-op: binlog retention is time based and set by the operator;
// the position that matters is stored in the target with the rows.
func (r *Reader) Ack(context.Context, checkpoint.Position) error { return nil }

// Read streams the binlog after from. See source.Source.
func (r *Reader) Read(ctx context.Context, from checkpoint.Position, out chan<- source.Txn) error {
	flavor, err := r.flavor(ctx)
	if err != nil {
		return err
	}
	if err := r.preflight(ctx); err != nil {
		return err
	}
	start, ok := from.(checkpoint.GTID)
	if !ok {
		return fmt.Errorf("region %s: position %v is not a gtid state", r.cfg.Region, from)
	}
	if start.Flavor() != flavor {
		start, err = checkpoint.ParseGTID(flavor, start.String())
		if err != nil {
			return err
		}
	}
	d := &decoder{
		cfg:    &r.cfg,
		flavor: flavor,
		cur:    start.Set(),
		tables: map[uint64]*tableDef{},
		logger: r.logger,
		ends:   &r.ends,
		reader: r,
		maps:   tableMaps{lazy: true, flavor: flavor},
	}
	// The decoder runs in go-mysql's goroutine, as its synchronous event
	// handler, and sends whole transactions on: handing every event over a
	// channel to a goroutine of the reader's cost a channel operation and a
	// select per event (22 events for a transaction of ten single-row
	// updates) and left the events to the garbage collector one at a time.
	// failed carries the handler's own error, which go-mysql wraps.
	failed := make(chan error, 1)
	handle := func(ev *replication.BinlogEvent) error {
		if err := d.handle(ctx, ev, out); err != nil {
			failed <- err
			return err
		}
		return nil
	}
	syncer := replication.NewBinlogSyncer(replication.BinlogSyncerConfig{
		ServerID:                r.cfg.ServerID,
		Flavor:                  flavor,
		Host:                    r.cfg.Conn.Host,
		Port:                    uint16(r.cfg.Conn.Port),
		User:                    r.cfg.Conn.User,
		Password:                r.cfg.Conn.Password,
		Charset:                 "utf8mb4",
		TimestampStringLocation: time.UTC,
		HeartbeatPeriod:         heartbeatPeriod,
		// No ReadTimeout: the dialer's connections fail a read after
		// readIdleTimeout without data, at less cost (see idleConn).
		Dialer:                  dialIdle(readIdleTimeout),
		DisableRetrySync:        true,
		SynchronousEventHandler: eventFunc(handle),
		// The decoder keeps the GTID state itself (d.cur); go-mysql would
		// copy its own into every XID event.
		DiscardGTIDSet: true,
		Logger:         slog.New(slog.NewTextHandler(io.Discard, nil)),
		// Row images are decoded by the reader, see rowimage.go.
		RowsEventDecodeFunc: deferRowsDecode,
		// Table maps too, and only when one changed: see tablemap.go.
		TableMapOptionalMetaDecodeFunc: skipOptionalMeta,
	})
	defer syncer.Close()

	streamer, err := syncer.StartSyncGTID(start.Set())
	if err != nil {
		return r.classify(fmt.Errorf("region %s: start binlog stream at %q: %w", r.cfg.Region, start.String(), err))
	}
	for {
		// With a synchronous handler the streamer delivers no event: it
		// returns when the stream ends, with the error that ended it.
		_, err := streamer.GetEvent(ctx)
		if err == nil {
			continue
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		select {
		case err := <-failed:
			return err
		default:
		}
		return r.classify(fmt.Errorf("region %s: read binlog: %w", r.cfg.Region, err))
	}
}

// eventFunc is a function as go-mysql's EventHandler.
type eventFunc func(*replication.BinlogEvent) error

func (f eventFunc) HandleEvent(ev *replication.BinlogEvent) error { return f(ev) }

// handle consumes one binlog event and sends the transaction (or chunk of
// one) it completes, if any, on out.
func (d *decoder) handle(ctx context.Context, ev *replication.BinlogEvent, out chan<- source.Txn) error {
	if rot, ok := ev.Event.(*replication.RotateEvent); ok {
		d.file = string(rot.NextLogName)
	}
	d.logPos = ev.Header.LogPos
	txn, send, err := d.event(ev)
	if err != nil || !send {
		return err
	}
	select {
	case out <- txn:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// classify marks "the server no longer has (or never had) this GTID
// position" as a lost position.
func (r *Reader) classify(err error) error {
	var me *gomysql.MyError
	if errors.As(err, &me) && me.Code == gomysql.ER_MASTER_FATAL_ERROR_READING_BINLOG {
		return fmt.Errorf("%w: %v; the binlog no longer holds this pipeline's checkpoint: run `regiond backfill` into the target, then start again", checkpoint.ErrPositionLost, err)
	}
	if strings.Contains(err.Error(), "ERROR 1236") || strings.Contains(err.Error(), "Error 1236") {
		return fmt.Errorf("%w: %v; the binlog no longer holds this pipeline's checkpoint: run `regiond backfill` into the target, then start again", checkpoint.ErrPositionLost, err)
	}
	return err
}

// ErrUnsupported marks a binlog this reader cannot use (wrong format,
// missing metadata, table without primary key). Retrying does not help: it
// wraps pipeline.ErrPermanent.
var ErrUnsupported = fmt.Errorf("unsupported binlog (%w)", pipeline.ErrPermanent)

// preflight checks the server settings row-based capture needs, before the
// stream starts, so that a misconfigured server is one clear error.
func (r *Reader) preflight(ctx context.Context) error {
	var logBin int
	var format, image, meta string
	err := r.db.QueryRowContext(ctx,
		"SELECT @@GLOBAL.log_bin, @@GLOBAL.binlog_format, @@GLOBAL.binlog_row_image, COALESCE(@@GLOBAL.binlog_row_metadata, '')").
		Scan(&logBin, &format, &image, &meta)
	if err != nil {
		return fmt.Errorf("region %s: read binlog settings: %w", r.cfg.Region, err)
	}
	var problems []string
	if logBin != 1 {
		problems = append(problems, "the binlog is off: start the server with log_bin (log-bin=... in my.cnf)")
	}
	if !strings.EqualFold(format, "ROW") {
		problems = append(problems, fmt.Sprintf("binlog_format is %s: SET GLOBAL binlog_format=ROW (and binlog_format=ROW in my.cnf)", format))
	}
	if !strings.EqualFold(image, "FULL") {
		problems = append(problems, fmt.Sprintf("binlog_row_image is %s: SET GLOBAL binlog_row_image=FULL (and in my.cnf)", image))
	}
	if !strings.EqualFold(meta, "FULL") {
		problems = append(problems, fmt.Sprintf("binlog_row_metadata is %s: SET GLOBAL binlog_row_metadata=FULL (and in my.cnf)", meta))
	}
	if len(problems) > 0 {
		return fmt.Errorf("%w: region %s: %s", ErrUnsupported, r.cfg.Region, strings.Join(problems, "; "))
	}
	return nil
}

// tableDef caches the decoded definition of a table map, and how to turn
// raw values into source values.
type tableDef struct {
	sig   string // appendTableSig: a changed definition gets a new def
	table *source.Table
	enums map[int][]string
	sets  map[int][]string
	// text marks character columns (strings in the canonical form, not
	// bytes); a non-nil decoder converts them from their charset to UTF-8.
	text map[int]*encoding.Decoder
	// kinds says which canonical type each column's values become.
	kinds []kind
	bits  []int // BIT column widths
	// pad gives BINARY(n) columns their width n: the binlog drops the
	// trailing zero bytes the column stores, a read returns them.
	pad  map[int]int
	keep bool // a configured table of the configured database
	// fast is the plan of the fast row-image decoder (rowimage.go), nil
	// when a column needs go-mysql's.
	fast []fastCol
	tm   *replication.TableMapEvent // the table map event def was made from
	// raw is the body of the table map event def was made from (see
	// tableMaps): the next one of its table id with the same body is the
	// same definition.
	raw []byte
}

// kind is how a column's raw go-mysql value becomes a canonical value.
type kind uint8

const (
	kindAsIs kind = iota
	kindInt
	kindUint
	kindDecimal
	kindDate
	kindDateTime
	kindTimestamp
	kindTime
	kindJSON
	kindBit
)

func columnKind(tp byte, unsigned bool) kind {
	switch tp {
	case gomysql.MYSQL_TYPE_TINY, gomysql.MYSQL_TYPE_SHORT, gomysql.MYSQL_TYPE_INT24,
		gomysql.MYSQL_TYPE_LONG, gomysql.MYSQL_TYPE_LONGLONG:
		if unsigned {
			return kindUint
		}
		return kindInt
	case gomysql.MYSQL_TYPE_YEAR:
		return kindInt
	case gomysql.MYSQL_TYPE_NEWDECIMAL, gomysql.MYSQL_TYPE_DECIMAL:
		return kindDecimal
	case gomysql.MYSQL_TYPE_DATE, gomysql.MYSQL_TYPE_NEWDATE:
		return kindDate
	case gomysql.MYSQL_TYPE_DATETIME, gomysql.MYSQL_TYPE_DATETIME2:
		return kindDateTime
	case gomysql.MYSQL_TYPE_TIMESTAMP, gomysql.MYSQL_TYPE_TIMESTAMP2:
		return kindTimestamp
	case gomysql.MYSQL_TYPE_TIME, gomysql.MYSQL_TYPE_TIME2:
		return kindTime
	case gomysql.MYSQL_TYPE_JSON:
		return kindJSON
	case gomysql.MYSQL_TYPE_BIT:
		return kindBit
	}
	return kindAsIs
}

// decoder turns binlog events into transactions. It holds the state of the
// transaction being read.
type decoder struct {
	cfg    *Config
	flavor string
	cur    gomysql.GTIDSet // GTID state after the last committed transaction
	tables map[uint64]*tableDef
	logger *slog.Logger
	// file and logPos are the binlog file and the end of the current
	// event; ends records them for each transaction end.
	file   string
	logPos uint32
	ends   *ends
	reader *Reader // for slowDecode and fastRows

	inTxn      bool
	standalone bool // MariaDB: a GTID event of a single-statement (DDL) transaction
	decided    bool // the first rows event of the transaction was seen
	skip       bool // the transaction carries regiond's marker
	sentChunk  bool
	mariaGTID  gomysql.MariadbGTID
	mysqlSID   uuid.UUID
	mysqlGNO   int64
	commitTS   uint32
	txnID      string // GTID of the transaction, for Change.TxnID
	changes    []source.Change
	lastLen    int // changes in the previous transaction: a capacity hint
	sig        []byte
	maps       tableMaps      // decodes table maps that changed (tablemap.go)
	arena      arena          // what the fast row decoder's rows are made of
	sqlParser  *parser.Parser // for query events, made on the first one
}

// appendTableSig appends everything of a table map that decoding depends on:
// names, types, type metadata (lengths, precisions, widths), signedness,
// charsets, ENUM and SET values, the primary key. A table map that differs in
// any of these (an ALTER TABLE under the same table id) gets a new tableDef.
func appendTableSig(b []byte, tm *replication.TableMapEvent) []byte {
	bytes := func(p []byte) {
		b = binary.AppendUvarint(b, uint64(len(p)))
		b = append(b, p...)
	}
	ints := func(v []uint64) {
		b = binary.AppendUvarint(b, uint64(len(v)))
		for _, x := range v {
			b = binary.AppendUvarint(b, x)
		}
	}
	strs := func(vs [][][]byte) {
		b = binary.AppendUvarint(b, uint64(len(vs)))
		for _, v := range vs {
			b = binary.AppendUvarint(b, uint64(len(v)))
			for _, x := range v {
				bytes(x)
			}
		}
	}
	bytes(tm.Schema)
	bytes(tm.Table)
	bytes(tm.ColumnType)
	b = binary.AppendUvarint(b, uint64(len(tm.ColumnMeta)))
	for _, m := range tm.ColumnMeta {
		b = binary.LittleEndian.AppendUint16(b, m)
	}
	bytes(tm.NullBitmap)
	bytes(tm.SignednessBitmap)
	ints(tm.DefaultCharset)
	ints(tm.ColumnCharset)
	strs(tm.SetStrValue)
	strs(tm.EnumStrValue)
	strs([][][]byte{tm.ColumnName})
	ints(tm.GeometryType)
	ints(tm.PrimaryKey)
	ints(tm.PrimaryKeyPrefix)
	ints(tm.EnumSetDefaultCharset)
	ints(tm.EnumSetColumnCharset)
	bytes(tm.VisibilityBitmap)
	return b
}

func (d *decoder) begin(ts uint32) {
	d.inTxn, d.decided, d.skip, d.sentChunk = true, false, false, false
	d.commitTS = ts
	d.changes = nil
}

// appendChange adds c to the transaction being read, sizing a new slice of
// changes like the previous transaction's.
func (d *decoder) appendChange(c source.Change) {
	if d.changes == nil {
		d.changes = make([]source.Change, 0, min(max(d.lastLen, 16), d.cfg.ChunkChanges))
	}
	d.changes = append(d.changes, c)
}

// event consumes one binlog event and returns a transaction (or a chunk of
// one) when one is ready.
func (d *decoder) event(ev *replication.BinlogEvent) (source.Txn, bool, error) {
	switch e := ev.Event.(type) {
	case *replication.MariadbGTIDEvent:
		d.begin(ev.Header.Timestamp)
		d.mariaGTID = e.GTID
		d.txnID = e.GTID.String()
		d.standalone = e.IsStandalone()
	case *replication.GTIDEvent:
		d.begin(ev.Header.Timestamp)
		sid, err := uuid.FromBytes(e.SID)
		if err != nil {
			return source.Txn{}, false, fmt.Errorf("region %s: gtid event: %w", d.cfg.Region, err)
		}
		d.mysqlSID, d.mysqlGNO = sid, e.GNO
		d.txnID = fmt.Sprintf("%s:%d", sid, e.GNO)
		d.standalone = false
	case *replication.QueryEvent:
		q := string(e.Query)
		switch {
		case strings.EqualFold(q, "BEGIN"):
			return source.Txn{}, false, nil
		case strings.EqualFold(q, "COMMIT"):
			return d.commit()
		}
		if err := d.statementDML(string(e.Schema), q); err != nil {
			return source.Txn{}, false, err
		}
		d.ddl(string(e.Schema), q)
		if !d.inTxn || d.standalone || d.flavor == gomysql.MySQLFlavor {
			// A DDL statement is a transaction of its own.
			return d.commit()
		}
	case *replication.FormatDescriptionEvent:
		d.maps.format(ev, e)
	case *replication.TableMapEvent:
		return source.Txn{}, false, d.tableMap(ev, e)
	case *replication.RowsEvent:
		return d.rows(ev.Header.EventType, e)
	case *replication.XIDEvent:
		return d.commit()
	case *replication.TransactionPayloadEvent:
		// MySQL 8 binlog_transaction_compression: the transaction's table
		// maps, rows events and XID are inside this one event. Reading
		// them is not implemented (nor testable without a MySQL 8 server
		// here); ignoring the event would drop the transaction and then
		// advance past it at the next commit, so it stops the pipeline
		// before that. MariaDB's log_bin_compress is different: its
		// *_COMPRESSED events arrive as RowsEvent and QueryEvent above.
		return source.Txn{}, false, d.compressedTxn()
	}
	return source.Txn{}, false, nil
}

// compressedTxn is the error for a transaction the server wrote compressed.
// Where the pipeline stops, its stored position is just before that
// transaction; it would stop there again on every start, so the fix moves
// the position on and copies what the compressed transactions changed.
func (d *decoder) compressedTxn() error {
	return fmt.Errorf("%w: region %s: binlog transaction compression is on (binlog_transaction_compression): transaction %s is compressed, and regiond cannot read compressed transactions yet, so it stopped before it instead of skipping it: "+
		"SET GLOBAL binlog_transaction_compression = OFF (and binlog_transaction_compression = OFF under [mysqld] in my.cnf; sessions already open keep compressing until they reconnect); "+
		"the transactions already written compressed are not replicated: delete this pipeline's row from the target's regiond_checkpoints (for a Kafka target, its position file) so that it starts again at the source's current position, "+
		"then run `regiond backfill --from %s --to <target>` to copy the rows they changed",
		ErrUnsupported, d.cfg.Region, d.txnID, d.cfg.Region)
}

// statementDML returns an error when q, a statement the binlog holds as
// text, writes a configured table: a session with binlog_format=STATEMENT
// (or MIXED) ran it, so there are no row images to replicate. Skipping it
// would lose the change; like compressedTxn, the pipeline stops before the
// transaction and would stop there again on every start.
func (d *decoder) statementDML(schema, q string) error {
	if d.sqlParser == nil {
		d.sqlParser = parser.New()
	}
	t, ok := statementWrites(d.sqlParser, q, schema, d.cfg.Conn.Database, d.cfg.Tables)
	if !ok {
		return nil
	}
	table := "table " + t.table
	if t.table == "" {
		table = "a table regiond could not determine (the statement did not parse), possibly a configured one"
	}
	return fmt.Errorf("%w: region %s: transaction %s holds a statement-based %s on %s in database %s (the session ran with binlog_format=STATEMENT or MIXED), "+
		"which has no row images to replicate, so regiond stopped before it instead of skipping it: "+
		"every session writing replicated tables must use binlog_format=ROW (do not SET SESSION binlog_format; sessions that did must reconnect or SET SESSION binlog_format = ROW); "+
		"this transaction is not replicated: delete this pipeline's row from the target's regiond_checkpoints (for a Kafka target, its position file) so that it starts again at the source's current position, "+
		"then run `regiond backfill --from %s --to <target>` to copy the rows it changed; statement: %.200q",
		ErrUnsupported, d.cfg.Region, d.txnID, t.kind, table, d.cfg.Conn.Database, d.cfg.Region, q)
}

func (d *decoder) ddl(schema, q string) {
	if schema != d.cfg.Conn.Database {
		return
	}
	fields := strings.Fields(strings.ToLower(q))
	if len(fields) >= 2 && fields[0] == "truncate" {
		name := strings.Trim(fields[len(fields)-1], "`;")
		if i := strings.LastIndexByte(name, '.'); i >= 0 {
			name = strings.Trim(name[i+1:], "`")
		}
		if d.cfg.Tables[name] {
			d.logger.Warn("TRUNCATE is not replicated; the table now differs between regions until you truncate it everywhere or run `regiond backfill`",
				"region", d.cfg.Region, "table", name)
		}
	}
}

func (d *decoder) commit() (source.Txn, bool, error) {
	if !d.inTxn {
		return source.Txn{}, false, nil
	}
	d.inTxn = false
	switch s := d.cur.(type) {
	case *gomysql.MariadbGTIDSet:
		g := d.mariaGTID
		if err := s.AddSet(&g); err != nil {
			return source.Txn{}, false, fmt.Errorf("region %s: gtid %s: %w", d.cfg.Region, g.String(), err)
		}
	case *gomysql.MysqlGTIDSet:
		s.AddGTID(d.mysqlSID, d.mysqlGNO)
	}
	txn := source.Txn{
		Changes: d.changes,
		End:     checkpoint.NewGTID(d.flavor, d.cur),
		Commit:  time.Unix(int64(d.commitTS), 0).UTC(),
		Origin:  d.cfg.Region,
	}
	if d.skip {
		txn.Changes = nil
	}
	d.lastLen = len(d.changes)
	d.changes = nil
	if d.ends != nil && d.file != "" && d.logPos > 0 {
		d.ends.add(txn.End.String(), binlogCoord{d.file, d.logPos})
	}
	return txn, true, nil
}

// def returns the definition of the fully decoded table map tm, the cached
// one of its table id when tm does not differ from it in anything decoding
// uses, and makes it the current definition of the table id.
func (d *decoder) def(tm *replication.TableMapEvent) (*tableDef, error) {
	d.sig = appendTableSig(d.sig[:0], tm)
	if def, ok := d.tables[tm.TableID]; ok && def.sig == string(d.sig) {
		def.tm = tm
		return def, nil
	}
	name := string(tm.Table)
	def := &tableDef{sig: string(d.sig), tm: tm}
	def.keep = string(tm.Schema) == d.cfg.Conn.Database && d.cfg.Tables[name]
	if def.keep || name == MarkerTable {
		if len(tm.ColumnName) == 0 {
			return nil, fmt.Errorf("%w: region %s: table %s: the binlog carries no column names; set binlog_row_metadata=FULL on the server (SET GLOBAL binlog_row_metadata=FULL and in my.cnf)",
				ErrUnsupported, d.cfg.Region, name)
		}
	}
	if def.keep {
		t := &source.Table{Name: name, Columns: make([]source.Column, tm.ColumnCount)}
		unsigned := tm.UnsignedMap()
		for i := range t.Columns {
			t.Columns[i] = source.Column{Name: string(tm.ColumnName[i]), Type: tm.ColumnType[i], Unsigned: unsigned[i]}
		}
		if len(tm.PrimaryKey) == 0 {
			return nil, fmt.Errorf("%w: region %s: table %s has no primary key in the binlog; give it a PRIMARY KEY (and keep binlog_row_metadata=FULL)",
				ErrUnsupported, d.cfg.Region, name)
		}
		for _, k := range tm.PrimaryKey {
			t.PK = append(t.PK, int(k))
		}
		def.table = t
		def.kinds = make([]kind, len(t.Columns))
		def.bits = make([]int, len(t.Columns))
		for i, c := range t.Columns {
			def.kinds[i] = columnKind(c.Type, c.Unsigned)
			if def.kinds[i] == kindBit {
				m := tm.ColumnMeta[i]
				def.bits[i] = int(m>>8)*8 + int(m&0xff)
			}
		}
		def.enums = tm.EnumStrValueMap()
		def.sets = tm.SetStrValueMap()
		def.text = map[int]*encoding.Decoder{}
		def.pad = map[int]int{}
		for i, coll := range tm.CollationMap() {
			if coll == binaryCollation {
				if n, ok := binaryWidth(t.Columns[i].Type, tm.ColumnMeta[i]); ok {
					def.pad[i] = n
				}
				continue
			}
			dec, err := textDecoder(coll)
			if err != nil {
				return nil, fmt.Errorf("%w: region %s: table %s column %s: %v",
					ErrUnsupported, d.cfg.Region, name, t.Columns[i].Name, err)
			}
			def.text[i] = dec
		}
		for i, c := range t.Columns {
			if c.Type == gomysql.MYSQL_TYPE_JSON {
				def.text[i] = nil
			}
		}
		def.fast = def.fastColumns(tm, unsigned)
	}
	d.tables[tm.TableID] = def
	return def, nil
}

func (d *decoder) rows(et replication.EventType, e *replication.RowsEvent) (source.Txn, bool, error) {
	if e.Table == nil {
		return source.Txn{}, false, nil
	}
	def, ok := d.tables[e.TableID]
	if !ok {
		if d.maps.lazy {
			// go-mysql found the table map (e.Table), so this reader saw it.
			return source.Txn{}, false, fmt.Errorf("region %s: rows event of table id %d before its table map", d.cfg.Region, e.TableID)
		}
		var err error
		if def, err = d.def(e.Table); err != nil {
			return source.Txn{}, false, err
		}
	}
	if !d.decided {
		d.decided = true
		d.skip = string(def.tm.Table) == MarkerTable && string(def.tm.Schema) == d.cfg.Conn.Database
	}
	if d.skip || !def.keep {
		return source.Txn{}, false, nil
	}
	if et == replication.PARTIAL_UPDATE_ROWS_EVENT {
		// MySQL 8 binlog_row_value_options = PARTIAL_JSON: the after image
		// of a JSON column is a diff against the before image, not a
		// value. Applying it as one would write wrong rows.
		return source.Txn{}, false, fmt.Errorf("%w: region %s: table %s: transaction %s was logged with partial JSON updates (binlog_row_value_options = PARTIAL_JSON), whose after images regiond cannot apply, so it stopped before it: "+
			"SET GLOBAL binlog_row_value_options = '' (and under [mysqld] in my.cnf; sessions already open keep it until they reconnect); "+
			"then delete this pipeline's row from the target's regiond_checkpoints (for a Kafka target, its position file) so that it starts again at the source's current position, and run `regiond backfill --from %s --to <target>`",
			ErrUnsupported, d.cfg.Region, def.table.Name, d.txnID, d.cfg.Region)
	}
	rows, err := d.decodeRows(et, def, e)
	if err != nil {
		return source.Txn{}, false, err
	}
	t := def.table
	switch e.Type() {
	case replication.EnumRowsEventTypeInsert:
		for _, r := range rows {
			d.appendChange(source.Change{Table: t, Op: source.Insert, After: r, TxnID: d.txnID})
		}
	case replication.EnumRowsEventTypeDelete:
		for _, r := range rows {
			d.appendChange(source.Change{Table: t, Op: source.Delete, Before: r, TxnID: d.txnID})
		}
	case replication.EnumRowsEventTypeUpdate:
		for i := 0; i+1 < len(rows); i += 2 {
			d.appendChange(source.Change{Table: t, Op: source.Update, Before: rows[i], After: rows[i+1], TxnID: d.txnID})
		}
	default:
		// Reading it again cannot help: stop rather than retry forever.
		return source.Txn{}, false, fmt.Errorf("%w: region %s: table %s: rows event %v is not one regiond reads", ErrUnsupported, d.cfg.Region, t.Name, et)
	}
	if len(d.changes) >= d.cfg.ChunkChanges {
		txn := source.Txn{Changes: d.changes, More: true, Origin: d.cfg.Region,
			Commit: time.Unix(int64(d.commitTS), 0).UTC()}
		d.changes = nil
		d.sentChunk = true
		return txn, true, nil
	}
	return source.Txn{}, false, nil
}

// decodeRows decodes the row images of e: with the fast decoder when the
// table's columns and the event allow it, else with go-mysql and convert.
func (d *decoder) decodeRows(et replication.EventType, def *tableDef, e *replication.RowsEvent) ([]source.Row, error) {
	raw, ok := takeImages(e)
	if !ok {
		return nil, fmt.Errorf("region %s: table %s: rows event without its row images", d.cfg.Region, def.table.Name)
	}
	if def.fast != nil && !d.reader.slowDecode {
		rows, ok, err := def.fastRows(et, e, raw, &d.arena)
		if err != nil {
			return nil, fmt.Errorf("%w: region %s: %v", ErrUnsupported, d.cfg.Region, err)
		}
		if ok {
			d.reader.fastRows.Add(int64(len(rows)))
			return rows, nil
		}
	}
	e.Rows = nil
	e.Table = def.tm // go-mysql's own lacks the optional metadata (signedness)
	if err := e.DecodeData(raw.pos, raw.data); err != nil {
		return nil, fmt.Errorf("region %s: table %s: decode rows event: %w", d.cfg.Region, def.table.Name, err)
	}
	for _, s := range e.SkippedColumns {
		if len(s) > 0 {
			return nil, fmt.Errorf("%w: region %s: table %s: the binlog row image is not full; set binlog_row_image=FULL on the server",
				ErrUnsupported, d.cfg.Region, def.table.Name)
		}
	}
	rows := make([]source.Row, len(e.Rows))
	for i, r := range e.Rows {
		row, err := def.convert(r)
		if err != nil {
			return nil, fmt.Errorf("%w: region %s: %v", ErrUnsupported, d.cfg.Region, err)
		}
		rows[i] = row
	}
	return rows, nil
}

// convert turns one raw go-mysql row into canonical values, in place (see
// source.Row).
func (def *tableDef) convert(raw []any) (source.Row, error) {
	for i, v := range raw {
		if v == nil {
			continue
		}
		if names, ok := def.enums[i]; ok {
			raw[i] = enumName(names, toInt64(v))
			continue
		}
		if names, ok := def.sets[i]; ok {
			raw[i] = setNames(names, toInt64(v))
			continue
		}
		switch def.kinds[i] {
		case kindInt:
			raw[i] = toInt64(v)
			continue
		case kindUint:
			raw[i] = toUint64(v)
			continue
		case kindDecimal:
			raw[i] = source.Decimal(fmt.Sprint(v))
			continue
		case kindDate:
			raw[i] = source.Date(fmt.Sprint(v))
			continue
		case kindDateTime:
			raw[i] = source.DateTime(fmt.Sprint(v))
			continue
		case kindTimestamp:
			raw[i] = source.Timestamp(fmt.Sprint(v))
			continue
		case kindTime:
			raw[i] = source.Time(fmt.Sprint(v))
			continue
		case kindJSON:
			switch x := v.(type) {
			case []byte:
				raw[i] = source.JSON(x)
			default:
				raw[i] = source.JSON(fmt.Sprint(x))
			}
			continue
		case kindBit:
			raw[i] = source.BitsFromUint(toUint64(v), def.bits[i])
			continue
		}
		switch x := v.(type) {
		case []byte:
			if dec, ok := def.text[i]; ok {
				s, err := decodeText(dec, x)
				if err != nil {
					return nil, fmt.Errorf("table %s column %s: %w", def.table.Name, def.table.Columns[i].Name, err)
				}
				raw[i] = s
				continue
			}
			// go-mysql may hand out slices of its read buffer. An empty
			// value stays non-nil: nil would be written as NULL.
			raw[i] = padBinary(append(make([]byte, 0, len(x)), x...), def.pad[i])
		case string:
			if dec, ok := def.text[i]; ok && dec != nil {
				s, err := decodeText(dec, []byte(x))
				if err != nil {
					return nil, fmt.Errorf("table %s column %s: %w", def.table.Name, def.table.Columns[i].Name, err)
				}
				raw[i] = s
			} else if _, ok := def.text[i]; !ok {
				// A binary string column (BINARY/VARBINARY) decoded as string.
				raw[i] = padBinary([]byte(x), def.pad[i])
			}
		}
	}
	return source.Row(raw), nil
}

// binaryWidth returns n for a BINARY(n) column (a fixed-length string
// column), from its table-map type and metadata.
func binaryWidth(typ byte, meta uint16) (int, bool) {
	if typ != gomysql.MYSQL_TYPE_STRING {
		return 0, false
	}
	real, length := byte(meta>>8), int(meta&0xff)
	if meta >= 256 && real&0x30 != 0x30 {
		// Widths above 255 keep two more bits in the type byte.
		length |= int((real&0x30)^0x30) << 4
		real |= 0x30
	}
	if meta < 256 {
		real = gomysql.MYSQL_TYPE_STRING
	}
	return length, real == gomysql.MYSQL_TYPE_STRING
}

// padBinary restores the zero bytes a BINARY(n) value stores after its
// logged bytes.
func padBinary(b []byte, n int) []byte {
	if len(b) >= n {
		return b
	}
	return append(b, make([]byte, n-len(b))...)
}

func toInt64(v any) int64 {
	switch x := v.(type) {
	case int8:
		return int64(x)
	case int16:
		return int64(x)
	case int32:
		return int64(x)
	case int64:
		return x
	case int:
		return int64(x)
	case uint8:
		return int64(x)
	case uint16:
		return int64(x)
	case uint32:
		return int64(x)
	case uint64:
		return int64(x)
	}
	return 0
}

func toUint64(v any) uint64 {
	switch x := v.(type) {
	case uint8:
		return uint64(x)
	case uint16:
		return uint64(x)
	case uint32:
		return uint64(x)
	case uint64:
		return x
	case int8:
		return uint64(uint8(x))
	case int16:
		return uint64(uint16(x))
	case int32:
		return uint64(uint32(x))
	case int64:
		return uint64(x)
	case int:
		return uint64(x)
	}
	return 0
}

func decodeText(dec *encoding.Decoder, b []byte) (string, error) {
	if dec == nil {
		return string(b), nil
	}
	out, err := dec.Bytes(b)
	if err != nil {
		return "", err
	}
	return string(out), nil
}

func enumName(names []string, idx int64) string {
	if idx < 1 || int(idx) > len(names) {
		return "" // MySQL's "invalid value" of a non-strict insert
	}
	return names[idx-1]
}

func setNames(names []string, bits int64) string {
	var b strings.Builder
	for i, n := range names {
		if bits&(1<<uint(i)) != 0 {
			if b.Len() > 0 {
				b.WriteByte(',')
			}
			b.WriteString(n)
		}
	}
	return b.String()
}
