// Package snapshot reads the current rows of a configured table of a region
// (MySQL/MariaDB or PostgreSQL) in primary-key order, in chunks, as the
// canonical source.Row values the log readers produce (source/values.go),
// so that rows read here can be written by any sink and compared with rows
// of any other region.
//
// Use: Open a region, look up a Table, split it with Bounds into key ranges
// of about n rows, and Read each range. A Range is (Lo, Hi]: Lo excluded,
// Hi included, a nil bound open. Keys are rows of primary-key values in
// key order (canonical values too), so they can be stored as JSON and
// compared across engines.
//
// Values are read as text and converted the way each engine's sink reads
// target rows back (sink/mysql ColumnReader, source/postgres Canonical),
// with regiond's session settings (UTC, ISO dates, exact floats).
package snapshot

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/jackc/pgx/v5/stdlib"

	"github.com/regiond/regiond/config"
	"github.com/regiond/regiond/internal/mysqlconn"
	"github.com/regiond/regiond/internal/pgconn"
	mysqlsink "github.com/regiond/regiond/sink/mysql"
	"github.com/regiond/regiond/source"
	pgsource "github.com/regiond/regiond/source/postgres"
)

// ErrNoTable means the table does not exist in the region (or has no
// primary key, which regiond cannot replicate either).
var ErrNoTable = errors.New("table missing")

// Key is a primary key: its values in key order.
type Key []any

// Range is the keys k with Lo < k <= Hi; a nil bound is open.
type Range struct{ Lo, Hi Key }

// DB is one region's database, opened for reading (and, by callers that
// need it, writing) through database/sql.
type DB struct {
	Region string
	Engine string // config.EngineMySQL or config.EnginePostgres
	Schema string // Postgres schema of the tables
	SQL    *sql.DB
}

// Open opens region r's database with regiond's session settings.
func Open(r config.Region) (*DB, error) {
	switch r.Engine {
	case config.EngineMySQL:
		d, err := config.ParseMySQLDSN(r.DSN)
		if err != nil {
			return nil, fmt.Errorf("region %s: %w", r.Name, err)
		}
		db, err := mysqlconn.Open(mysqlconn.Params{Host: d.Host, Port: d.Port, User: d.User, Password: d.Password, Database: d.Database, Extra: d.Params})
		if err != nil {
			return nil, fmt.Errorf("region %s: %w", r.Name, err)
		}
		return &DB{Region: r.Name, Engine: r.Engine, SQL: db}, nil
	case config.EnginePostgres:
		cc, err := pgconn.Config(r.DSN)
		if err != nil {
			return nil, fmt.Errorf("region %s: %w", r.Name, err)
		}
		schema := r.Schema
		if schema == "" {
			schema = "public"
		}
		return &DB{Region: r.Name, Engine: r.Engine, Schema: schema, SQL: stdlib.OpenDB(*cc)}, nil
	}
	return nil, fmt.Errorf("region %s: unknown engine %q", r.Name, r.Engine)
}

// Close closes the database's connections.
func (d *DB) Close() error { return d.SQL.Close() }

// Quote quotes an identifier for the engine.
func (d *DB) Quote(name string) string {
	if d.Engine == config.EnginePostgres {
		return pgconn.Ident(name)
	}
	return mysqlsink.Quote(name)
}

// Ident is the (schema-qualified) name of table name.
func (d *DB) Ident(name string) string {
	if d.Engine == config.EnginePostgres {
		return pgconn.Ident(d.Schema, name)
	}
	return mysqlsink.Quote(name)
}

// Param is the n-th (from 1) statement placeholder.
func (d *DB) Param(n int) string {
	if d.Engine == config.EnginePostgres {
		return "$" + strconv.Itoa(n)
	}
	return "?"
}

// Table is a table of one region, as its catalog describes it now.
type Table struct {
	db *DB
	// Def lists the columns in the table's order and the primary key; it is
	// what sinks take to write the rows Read returns.
	Def *source.Table
	// Types are the columns' types as the catalog spells them (COLUMN_TYPE,
	// format_type), for messages and mapping checks.
	Types []string

	exprs []string                    // select expression per column (text)
	conv  []func([]byte) (any, error) // text to canonical, per column
	casts []string                    // Postgres: cast of a key parameter, per key column
}

// Table looks table up in the region's catalog. A missing table, or one
// without primary key, is ErrNoTable.
func (d *DB) Table(ctx context.Context, name string) (*Table, error) {
	t := &Table{db: d, Def: &source.Table{Name: name}}
	var err error
	if d.Engine == config.EnginePostgres {
		err = t.loadPostgres(ctx)
	} else {
		err = t.loadMySQL(ctx)
	}
	if err != nil {
		return nil, fmt.Errorf("region %s: table %s: %w", d.Region, name, err)
	}
	if len(t.Def.Columns) == 0 {
		return nil, fmt.Errorf("region %s: %w: table %s does not exist: create it with the same definition as in the other regions", d.Region, ErrNoTable, name)
	}
	if len(t.Def.PK) == 0 {
		return nil, fmt.Errorf("region %s: %w: table %s has no primary key: add the same primary key as in the other regions", d.Region, ErrNoTable, name)
	}
	return t, nil
}

func (t *Table) loadMySQL(ctx context.Context) error {
	rows, err := t.db.SQL.QueryContext(ctx, `SELECT COLUMN_NAME, DATA_TYPE, COLUMN_TYPE, COLUMN_KEY FROM information_schema.COLUMNS
		WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = ? ORDER BY ORDINAL_POSITION`, t.Def.Name)
	if err != nil {
		return err
	}
	defer rows.Close()
	for rows.Next() {
		var name, dt, ct, key string
		if err := rows.Scan(&name, &dt, &ct, &key); err != nil {
			return err
		}
		r := mysqlsink.NewColumnReader(name, strings.ToLower(dt), strings.ToLower(ct))
		t.Def.Columns = append(t.Def.Columns, source.Column{Name: name, Unsigned: strings.Contains(strings.ToLower(ct), "unsigned")})
		t.Types = append(t.Types, strings.ToLower(ct))
		t.exprs = append(t.exprs, r.Expr())
		t.conv = append(t.conv, r.Canonical)
	}
	if err := rows.Err(); err != nil {
		return err
	}
	krows, err := t.db.SQL.QueryContext(ctx, `SELECT COLUMN_NAME FROM information_schema.KEY_COLUMN_USAGE
		WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = ? AND CONSTRAINT_NAME = 'PRIMARY' ORDER BY ORDINAL_POSITION`, t.Def.Name)
	if err != nil {
		return err
	}
	defer krows.Close()
	for krows.Next() {
		var c string
		if err := krows.Scan(&c); err != nil {
			return err
		}
		t.Def.PK = append(t.Def.PK, t.index(c))
	}
	return krows.Err()
}

func (t *Table) loadPostgres(ctx context.Context) error {
	var exists bool
	ident := pgconn.Ident(t.db.Schema, t.Def.Name)
	if err := t.db.SQL.QueryRowContext(ctx, "SELECT to_regclass($1) IS NOT NULL", ident).Scan(&exists); err != nil || !exists {
		return err
	}
	// A domain column reads as its base type (one level; as the reader
	// treats domains, with no type modifier).
	rows, err := t.db.SQL.QueryContext(ctx, `
		SELECT a.attname::text, format_type(a.atttypid, a.atttypmod),
		       CASE WHEN ty.typtype = 'd' THEN ty.typbasetype ELSE a.atttypid END::int8,
		       CASE WHEN ty.typtype = 'd' THEN -1 ELSE a.atttypmod END
		FROM pg_attribute a JOIN pg_type ty ON ty.oid = a.atttypid
		WHERE a.attrelid = $1::regclass AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum`, ident)
	if err != nil {
		return err
	}
	defer rows.Close()
	for rows.Next() {
		var (
			name, typ string
			oid       int64
			typmod    int32
		)
		if err := rows.Scan(&name, &typ, &oid, &typmod); err != nil {
			return err
		}
		t.Def.Columns = append(t.Def.Columns, source.Column{Name: name})
		t.Types = append(t.Types, typ)
		// The type's output function, as the log reader sees values
		// (a cast to text differs for boolean, character(n), inet).
		q := pgconn.Ident(name)
		t.exprs = append(t.exprs, "CASE WHEN "+q+" IS NULL THEN NULL ELSE format('%s', "+q+") END")
		o, m := uint32(oid), typmod
		t.conv = append(t.conv, func(b []byte) (any, error) {
			if b == nil {
				return nil, nil
			}
			return pgsource.Canonical(o, m, string(b))
		})
	}
	if err := rows.Err(); err != nil {
		return err
	}
	krows, err := t.db.SQL.QueryContext(ctx, `SELECT a.attname::text FROM pg_index i
		JOIN LATERAL unnest(i.indkey) WITH ORDINALITY k(attnum, n) ON true
		JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum
		WHERE i.indrelid = $1::regclass AND i.indisprimary ORDER BY k.n`, ident)
	if err != nil {
		return err
	}
	defer krows.Close()
	for krows.Next() {
		var c string
		if err := krows.Scan(&c); err != nil {
			return err
		}
		i := t.index(c)
		t.Def.PK = append(t.Def.PK, i)
		t.casts = append(t.casts, t.Types[i])
	}
	return krows.Err()
}

func (t *Table) index(name string) int {
	for i, c := range t.Def.Columns {
		if c.Name == name {
			return i
		}
	}
	return -1
}

// KeyNames returns the primary key's column names in key order.
func (t *Table) KeyNames() []string {
	out := make([]string, len(t.Def.PK))
	for i, k := range t.Def.PK {
		out[i] = t.Def.Columns[k].Name
	}
	return out
}

// KeyOf returns the primary key of row.
func (t *Table) KeyOf(row source.Row) Key { return Key(t.Def.Key(row)) }

// Querier is what reads run on: *sql.DB, *sql.Conn or *sql.Tx of the
// table's database.
type Querier interface {
	QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error)
}

// keyTuple returns the key columns as a comparable tuple, "(a, b)" or "a".
func (t *Table) keyTuple() string {
	cs := make([]string, len(t.Def.PK))
	for i, k := range t.Def.PK {
		cs[i] = t.db.Quote(t.Def.Columns[k].Name)
	}
	if len(cs) == 1 {
		return cs[0]
	}
	return "(" + strings.Join(cs, ", ") + ")"
}

// keyParams returns a placeholder tuple for a key starting at parameter n,
// and the key's arguments.
func (t *Table) keyParams(k Key, n int) (string, []any) {
	ps := make([]string, len(k))
	args := make([]any, len(k))
	for i, v := range k {
		if t.db.Engine == config.EnginePostgres {
			// Text cast by the server to the key column's type: the same
			// text the value was read as.
			s, _ := source.Text(v)
			ps[i] = t.db.Param(n+i) + "::text::" + t.casts[i]
			args[i] = s
		} else {
			ps[i] = "?"
			args[i] = mysqlsink.Arg(v)
		}
	}
	if len(ps) == 1 {
		return ps[0], args
	}
	return "(" + strings.Join(ps, ", ") + ")", args
}

// where returns the condition selecting r (and its arguments), or "".
func (t *Table) where(r Range) (string, []any) {
	var conds []string
	var args []any
	if r.Lo != nil {
		p, a := t.keyParams(r.Lo, len(args)+1)
		conds = append(conds, t.keyTuple()+" > "+p)
		args = append(args, a...)
	}
	if r.Hi != nil {
		p, a := t.keyParams(r.Hi, len(args)+1)
		conds = append(conds, t.keyTuple()+" <= "+p)
		args = append(args, a...)
	}
	if len(conds) == 0 {
		return "", nil
	}
	return " WHERE " + strings.Join(conds, " AND "), args
}

func (t *Table) orderBy() string {
	cs := make([]string, len(t.Def.PK))
	for i, k := range t.Def.PK {
		cs[i] = t.db.Ident(t.Def.Name) + "." + t.db.Quote(t.Def.Columns[k].Name)
	}
	return " ORDER BY " + strings.Join(cs, ", ")
}

// Bounds splits the table's current rows into ranges of n rows each in key
// order (the last one may hold fewer): the first range is open below, the
// last one ends at the highest key. An empty table has no ranges. Rows
// inserted later land inside a range when their key is not above the
// highest key of now.
func (t *Table) Bounds(ctx context.Context, q Querier, n int) ([]Range, error) {
	return t.BoundsAfter(ctx, q, n, nil)
}

// BoundsAfter is Bounds of the rows whose keys are above after (nil: all
// of them); the first range starts after it.
func (t *Table) BoundsAfter(ctx context.Context, q Querier, n int, after Key) ([]Range, error) {
	if n <= 0 {
		return nil, fmt.Errorf("chunk size %d: must be positive", n)
	}
	kcols := make([]string, len(t.Def.PK))
	for i, k := range t.Def.PK {
		kcols[i] = t.exprs[k]
	}
	var out []Range
	lo := after
	for {
		w, args := t.where(Range{Lo: lo})
		// The last key of the next n rows, or of fewer when the table ends.
		query := "SELECT " + strings.Join(kcols, ", ") + " FROM " + t.db.Ident(t.Def.Name) + w + t.orderBy() +
			" LIMIT 1 OFFSET " + strconv.Itoa(n-1)
		hi, err := t.readKey(ctx, q, query, args)
		if err != nil {
			return nil, err
		}
		if hi == nil {
			query = t.descQuery(kcols, w)
			if hi, err = t.readKey(ctx, q, query, args); err != nil {
				return nil, err
			}
			if hi != nil {
				out = append(out, Range{Lo: lo, Hi: hi})
			}
			return out, nil
		}
		out = append(out, Range{Lo: lo, Hi: hi})
		lo = hi
	}
}

func (t *Table) descQuery(kcols []string, where string) string {
	cs := make([]string, len(t.Def.PK))
	for i, k := range t.Def.PK {
		cs[i] = t.db.Ident(t.Def.Name) + "." + t.db.Quote(t.Def.Columns[k].Name) + " DESC"
	}
	return "SELECT " + strings.Join(kcols, ", ") + " FROM " + t.db.Ident(t.Def.Name) + where + " ORDER BY " + strings.Join(cs, ", ") + " LIMIT 1"
}

func (t *Table) readKey(ctx context.Context, q Querier, query string, args []any) (Key, error) {
	rows, err := q.QueryContext(ctx, query, args...)
	if err != nil {
		return nil, fmt.Errorf("region %s: table %s: read chunk bounds: %w", t.db.Region, t.Def.Name, err)
	}
	defer rows.Close()
	if !rows.Next() {
		return nil, rows.Err()
	}
	sc := t.newScanner(len(t.Def.PK))
	if err := rows.Scan(sc.ptrs...); err != nil {
		return nil, err
	}
	k := make(Key, len(t.Def.PK))
	for i, c := range t.Def.PK {
		if k[i], err = t.conv[c](sc.bytes(i)); err != nil {
			return nil, fmt.Errorf("region %s: table %s column %s: %w", t.db.Region, t.Def.Name, t.Def.Columns[c].Name, err)
		}
	}
	return k, rows.Err()
}

// Read returns the rows of r in key order. With lock, it is a locking read
// (shared row locks, held until q's transaction ends; q should then be a
// READ COMMITTED transaction): it waits for transactions still writing
// those rows and returns their committed result.
func (t *Table) Read(ctx context.Context, q Querier, r Range, lock bool) ([]source.Row, error) {
	w, args := t.where(r)
	query := "SELECT " + strings.Join(t.exprs, ", ") + " FROM " + t.db.Ident(t.Def.Name) + w + t.orderBy()
	if lock {
		if t.db.Engine == config.EnginePostgres {
			query += " FOR SHARE"
		} else {
			query += " LOCK IN SHARE MODE"
		}
	}
	return t.readRows(ctx, q, query, args)
}

// readRows runs a select of every column (t.exprs) and converts the rows.
func (t *Table) readRows(ctx context.Context, q Querier, query string, args []any) ([]source.Row, error) {
	rows, err := q.QueryContext(ctx, query, args...)
	if err != nil {
		return nil, fmt.Errorf("region %s: table %s: read rows: %w", t.db.Region, t.Def.Name, err)
	}
	defer rows.Close()
	sc := t.newScanner(len(t.exprs))
	var out []source.Row
	for rows.Next() {
		if err := rows.Scan(sc.ptrs...); err != nil {
			return nil, err
		}
		row := make(source.Row, len(t.exprs))
		for i := range row {
			if row[i], err = t.conv[i](sc.bytes(i)); err != nil {
				return nil, fmt.Errorf("region %s: table %s row %s column %s: %w", t.db.Region, t.Def.Name, t.Def.FormatKey(row), t.Def.Columns[i].Name, err)
			}
		}
		out = append(out, row)
	}
	return out, rows.Err()
}

// scanner receives one result row as text. MySQL columns scan into
// sql.RawBytes (the driver's buffer, non-nil for an empty string); pgx's
// database/sql adapter hands out strings, which RawBytes would turn into nil
// when empty, so Postgres columns scan into sql.NullString.
type scanner struct {
	ptrs []any
	raw  []sql.RawBytes
	str  []sql.NullString
}

func (t *Table) newScanner(n int) *scanner {
	sc := &scanner{ptrs: make([]any, n)}
	if t.db.Engine == config.EnginePostgres {
		sc.str = make([]sql.NullString, n)
		for i := range sc.str {
			sc.ptrs[i] = &sc.str[i]
		}
		return sc
	}
	sc.raw = make([]sql.RawBytes, n)
	for i := range sc.raw {
		sc.ptrs[i] = &sc.raw[i]
	}
	return sc
}

// bytes returns column i of the last scanned row, nil for NULL.
func (sc *scanner) bytes(i int) []byte {
	if sc.str != nil {
		if !sc.str[i].Valid {
			return nil
		}
		return []byte(sc.str[i].String)
	}
	if sc.raw[i] == nil {
		return nil
	}
	return sc.raw[i]
}
