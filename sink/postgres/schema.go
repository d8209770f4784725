package postgres

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strconv"
	"strings"

	"github.com/jackc/pgx/v5"

	"github.com/regiond/regiond/internal/pgconn"
	"github.com/regiond/regiond/pipeline"
	"github.com/regiond/regiond/source"
)

// errSchema marks a difference between a change and the target table that
// regiond cannot bridge (a missing table or column, another primary key).
var errSchema = errors.New("schema incompatible")

// checkTables verifies that every configured table exists in the target
// schema and has a primary key. A failure is permanent for the pipeline:
// nothing is written until the operator fixes the table.
func checkTables(ctx context.Context, conn *pgx.Conn, region, schema string, tables []string) error {
	if len(tables) == 0 {
		return nil
	}
	rows, err := conn.Query(ctx, `
		SELECT t.name, c.oid IS NOT NULL,
		       EXISTS (SELECT 1 FROM pg_index i WHERE i.indrelid = c.oid AND i.indisprimary)
		FROM unnest($2::text[]) WITH ORDINALITY AS t(name, n)
		LEFT JOIN (pg_class c JOIN pg_namespace s ON s.oid = c.relnamespace AND s.nspname = $1)
		       ON c.relname = t.name AND c.relkind IN ('r', 'p')
		ORDER BY t.n`, schema, tables)
	if err != nil {
		return fmt.Errorf("region %s: look up tables: %w", region, err)
	}
	var problems []string
	for rows.Next() {
		var (
			name       string
			exists, pk bool
		)
		if err := rows.Scan(&name, &exists, &pk); err != nil {
			return fmt.Errorf("region %s: look up tables: %w", region, err)
		}
		switch {
		case !exists:
			problems = append(problems, fmt.Sprintf("table %s does not exist in schema %s: create it with the same definition as in the other regions", name, schema))
		case !pk:
			problems = append(problems, fmt.Sprintf("table %s has no primary key: ALTER TABLE %s ADD PRIMARY KEY (...) in every region", name, pgconn.Ident(schema, name)))
		}
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("region %s: look up tables: %w", region, err)
	}
	if len(problems) > 0 {
		return pipeline.Permanent(fmt.Errorf("region %s: %s", region, strings.Join(problems, "; ")))
	}
	return nil
}

// kind is how a target column wants canonical values adjusted before the
// server parses their text.
type kind uint8

const (
	kindText        kind = iota // anything the server parses from the canonical text
	kindBool                    // boolean
	kindNumber                  // numeric category: integers, numeric, floats
	kindBytea                   // bytea: text goes as \x hex
	kindTimestamptz             // timestamptz: Timestamp values get "+00"
	kindBit                     // bit(n): bit strings padded to n
	kindVarbit                  // bit varying(n)
)

// column is a column of a target table.
type column struct {
	name string
	// typ is the declared type, e.g. "character varying(10)", for messages.
	typ string
	// cast is the type without its modifier, e.g. "character varying": the
	// statements cast text to it explicitly, and the column's own modifier
	// then applies as an assignment (which fails on a too long value instead
	// of truncating it, as an explicit cast to varchar(10) would).
	cast      string
	kind      kind
	oid       uint32 // the base type (of a domain, its base type)
	width     int    // bit(n), bit varying(n): n; 0 when unknown
	generated bool   // GENERATED ALWAYS AS (...) STORED: never written
	identity  bool   // GENERATED ALWAYS AS IDENTITY: written, never updated
}

// pgTable is a target table's definition.
type pgTable struct {
	name  string // bare name
	ident string // schema-qualified, quoted
	cols  []*column
	byName,
	byFold map[string]*column // exact names; lower-cased names when unambiguous
	pk []*column // in key order
}

// loadTable reads the definition of table name in schema; it returns nil
// when the table does not exist.
func loadTable(ctx context.Context, conn *pgx.Conn, schema, name string) (*pgTable, error) {
	rows, err := conn.Query(ctx, `
		SELECT a.attname, format_type(a.atttypid, a.atttypmod), format_type(a.atttypid, -1),
		       bt.oid::int8, bt.typcategory::text, a.atttypmod,
		       a.attgenerated <> '', a.attidentity = 'a',
		       COALESCE((SELECT k.n FROM unnest(i.indkey) WITH ORDINALITY AS k(attnum, n) WHERE k.attnum = a.attnum), 0)::int4
		FROM pg_attribute a
		JOIN pg_class c ON c.oid = a.attrelid
		JOIN pg_namespace n ON n.oid = c.relnamespace
		JOIN pg_type t ON t.oid = a.atttypid
		JOIN pg_type bt ON bt.oid = CASE WHEN t.typtype = 'd' THEN t.typbasetype ELSE t.oid END
		LEFT JOIN pg_index i ON i.indrelid = c.oid AND i.indisprimary
		WHERE n.nspname = $1 AND c.relname = $2 AND c.relkind IN ('r', 'p')
		  AND a.attnum > 0 AND NOT a.attisdropped
		ORDER BY a.attnum`, schema, name)
	if err != nil {
		return nil, err
	}
	t := &pgTable{name: name, ident: pgconn.Ident(schema, name), byName: map[string]*column{}, byFold: map[string]*column{}}
	keyPos := map[*column]int{}
	folded := map[string]int{}
	for rows.Next() {
		var (
			c        column
			base     int64
			category string
			typmod   int32
			pos      int32
		)
		if err := rows.Scan(&c.name, &c.typ, &c.cast, &base, &category, &typmod, &c.generated, &c.identity, &pos); err != nil {
			rows.Close()
			return nil, err
		}
		c.kind = kindOf(uint32(base), category)
		c.oid = uint32(base)
		if (c.kind == kindBit || c.kind == kindVarbit) && typmod > 0 {
			c.width = int(typmod)
		}
		cp := &c
		t.cols = append(t.cols, cp)
		t.byName[c.name] = cp
		f := strings.ToLower(c.name)
		folded[f]++
		t.byFold[f] = cp
		if pos > 0 {
			keyPos[cp] = int(pos)
			t.pk = append(t.pk, cp)
		}
	}
	if err := rows.Err(); err != nil {
		return nil, err
	}
	if len(t.cols) == 0 {
		return nil, nil
	}
	for f, n := range folded {
		if n > 1 {
			delete(t.byFold, f)
		}
	}
	sort.Slice(t.pk, func(i, j int) bool { return keyPos[t.pk[i]] < keyPos[t.pk[j]] })
	return t, nil
}

// The type OIDs that need their own handling (pg_type.dat).
const (
	oidBool        = 16
	oidBytea       = 17
	oidTimestamptz = 1184
	oidBit         = 1560
	oidVarbit      = 1562
)

func kindOf(base uint32, category string) kind {
	switch base {
	case oidBool:
		return kindBool
	case oidBytea:
		return kindBytea
	case oidTimestamptz:
		return kindTimestamptz
	case oidBit:
		return kindBit
	case oidVarbit:
		return kindVarbit
	}
	if category == "N" {
		return kindNumber
	}
	return kindText
}

// column returns the target column for a source column name: the same name,
// or else the only one that is equal ignoring case (MySQL column names are
// case-insensitive, unquoted PostgreSQL names are folded to lower case).
func (t *pgTable) column(name string) *column {
	if c := t.byName[name]; c != nil {
		return c
	}
	return t.byFold[strings.ToLower(name)]
}

// plan is how changes read under one source table definition are written to
// their target table.
type plan struct {
	table *pgTable
	// cols[i] is the target column of source column i; written lists the
	// source columns that are written, in order (generated columns are not).
	cols    []*column
	written []int
	// key lists the source columns of the target's primary key, in its
	// key order.
	key []int

	upsert string // INSERT ... SELECT ... FROM unnest(...) ON CONFLICT ...
	insert string // the same without ON CONFLICT: a present key is an error
	delete string // DELETE ... WHERE (key) IN (SELECT ... FROM unnest(...))
	copy   string // COPY ... (written columns) FROM STDIN, text format (copy.go)
	// copyBinary is the same COPY in binary format, "" when a written
	// column has no binary form in copybin.go.
	copyBinary string
	// present is the UPDATE of full rows, with the upsert's arguments,
	// returning the ordinals of the rows it found (copy.go); "" when the
	// key is not written or nothing but the key is.
	present string
	// updates holds, per set of unchanged columns, the UPDATE that leaves
	// them alone; keyed by the unchanged source column numbers.
	updates map[string]*update
}

// update is the statement for rows with source.Unchanged in given columns.
type update struct {
	sql  string
	cols []int // source columns passed as arrays, in parameter order; nil when nothing is left to set
}

// newPlan maps source table st onto target table t.
func newPlan(region string, st *source.Table, t *pgTable) (*plan, error) {
	p := &plan{table: t, cols: make([]*column, len(st.Columns)), updates: map[string]*update{}}
	var missing []string
	for i, sc := range st.Columns {
		c := t.column(sc.Name)
		if c == nil {
			missing = append(missing, sc.Name)
			continue
		}
		p.cols[i] = c
		if !c.generated {
			p.written = append(p.written, i)
		}
	}
	if len(missing) > 0 {
		return nil, pipeline.Permanent(fmt.Errorf("region %s: %w: table %s has no column %s that the source table has: add it (ALTER TABLE %s ADD COLUMN ...) with the same type as in the other regions and restart regiond",
			region, errSchema, st.Name, strings.Join(missing, ", "), t.ident))
	}
	srcKey := map[int]bool{}
	for _, k := range st.PK {
		srcKey[k] = true
	}
	for _, kc := range t.pk {
		i := indexOf(p.cols, kc)
		if i < 0 || !srcKey[i] {
			return nil, pipeline.Permanent(keyMismatch(region, st, t))
		}
		p.key = append(p.key, i)
	}
	if len(p.key) != len(st.PK) {
		return nil, pipeline.Permanent(keyMismatch(region, st, t))
	}

	var ins, sel, args, alias, set strings.Builder
	isKey := map[int]bool{}
	for _, k := range p.key {
		isKey[k] = true
	}
	for n, i := range p.written {
		c := p.cols[i]
		if n > 0 {
			ins.WriteString(", ")
			sel.WriteString(", ")
			args.WriteString(", ")
			alias.WriteString(", ")
		}
		ins.WriteString(pgconn.Ident(c.name))
		v := "v" + strconv.Itoa(n+1)
		sel.WriteString(v + "::" + c.cast)
		args.WriteString("$" + strconv.Itoa(n+1) + "::text[]")
		alias.WriteString(v)
		if !isKey[i] && !c.identity {
			if set.Len() > 0 {
				set.WriteString(", ")
			}
			set.WriteString(pgconn.Ident(c.name) + " = EXCLUDED." + pgconn.Ident(c.name))
		}
	}
	conflict := " DO NOTHING"
	if set.Len() > 0 {
		conflict = " DO UPDATE SET " + set.String()
	}
	p.insert = "INSERT INTO " + t.ident + " (" + ins.String() + ") OVERRIDING SYSTEM VALUE SELECT " + sel.String() +
		" FROM unnest(" + args.String() + ") AS u(" + alias.String() + ")"
	p.upsert = p.insert + " ON CONFLICT (" + p.keyList("") + ")" + conflict
	p.copy = "COPY " + t.ident + " (" + ins.String() + ") FROM STDIN"
	if binaryCopyable(p, p.written) {
		p.copyBinary = p.copy + " (FORMAT binary)"
	}
	p.present = presentUpdate(p, alias.String(), args.String())

	var ksel, kargs, kalias strings.Builder
	for n, i := range p.key {
		if n > 0 {
			ksel.WriteString(", ")
			kargs.WriteString(", ")
			kalias.WriteString(", ")
		}
		v := "v" + strconv.Itoa(n+1)
		ksel.WriteString(v + "::" + p.cols[i].cast)
		kargs.WriteString("$" + strconv.Itoa(n+1) + "::text[]")
		kalias.WriteString(v)
	}
	p.delete = "DELETE FROM " + t.ident + " WHERE (" + p.keyList("") + ") IN (SELECT " + ksel.String() +
		" FROM unnest(" + kargs.String() + ") AS u(" + kalias.String() + "))"
	return p, nil
}

// presentUpdate is plan.present: UPDATE … SET every written column but the
// key and identity columns (as the upsert's DO UPDATE) … FROM unnest(args)
// WITH ORDINALITY AS u(alias, n) WHERE the key matches (compared as the
// locking read of the apply_remote check compares it) RETURNING u.n.
func presentUpdate(p *plan, alias, args string) string {
	var set, where strings.Builder
	isKey := map[int]bool{}
	for _, k := range p.key {
		isKey[k] = true
	}
	for n, i := range p.written {
		c := p.cols[i]
		v := "u.v" + strconv.Itoa(n+1) + "::" + c.cast
		if isKey[i] || c.identity {
			continue
		}
		if set.Len() > 0 {
			set.WriteString(", ")
		}
		set.WriteString(pgconn.Ident(c.name) + " = " + v)
	}
	for n, k := range p.key {
		w := slices.Index(p.written, k)
		if w < 0 {
			return ""
		}
		if n > 0 {
			where.WriteString(", ")
		}
		where.WriteString("u.v" + strconv.Itoa(w+1) + "::" + p.cols[k].cast)
	}
	if set.Len() == 0 {
		return ""
	}
	return "UPDATE " + p.table.ident + " AS t SET " + set.String() + " FROM unnest(" + args + ") WITH ORDINALITY AS u(" + alias + ", n)" +
		" WHERE (" + p.keyList("t.") + ") = (" + where.String() + ") RETURNING u.n"
}

func keyMismatch(region string, st *source.Table, t *pgTable) error {
	src := make([]string, len(st.PK))
	for i, k := range st.PK {
		src[i] = st.Columns[k].Name
	}
	dst := make([]string, len(t.pk))
	for i, c := range t.pk {
		dst[i] = c.name
	}
	return fmt.Errorf("region %s: %w: table %s has primary key (%s) in the target but (%s) at the source: the primary key must be the same in every region",
		region, errSchema, st.Name, strings.Join(dst, ", "), strings.Join(src, ", "))
}

func indexOf(cols []*column, c *column) int {
	for i, x := range cols {
		if x == c {
			return i
		}
	}
	return -1
}

// keyList returns the quoted key columns, each prefixed with prefix.
func (p *plan) keyList(prefix string) string {
	var b strings.Builder
	for n, i := range p.key {
		if n > 0 {
			b.WriteString(", ")
		}
		b.WriteString(prefix + pgconn.Ident(p.cols[i].name))
	}
	return b.String()
}

// updateFor returns the statement for rows whose unchanged source columns
// are those in unchanged (sorted).
func (p *plan) updateFor(unchanged []int) *update {
	var kb strings.Builder
	for _, i := range unchanged {
		kb.WriteString(strconv.Itoa(i))
		kb.WriteByte(',')
	}
	if u := p.updates[kb.String()]; u != nil {
		return u
	}
	skip := map[int]bool{}
	for _, i := range unchanged {
		skip[i] = true
	}
	isKey := map[int]bool{}
	for _, k := range p.key {
		isKey[k] = true
	}
	u := &update{}
	var set, args, alias, where strings.Builder
	param := func(i int) string {
		u.cols = append(u.cols, i)
		n := strconv.Itoa(len(u.cols))
		if len(u.cols) > 1 {
			args.WriteString(", ")
			alias.WriteString(", ")
		}
		args.WriteString("$" + n + "::text[]")
		alias.WriteString("v" + n)
		return "u.v" + n + "::" + p.cols[i].cast
	}
	for n, k := range p.key {
		if n > 0 {
			where.WriteString(", ")
		}
		where.WriteString(param(k))
	}
	for _, i := range p.written {
		c := p.cols[i]
		if isKey[i] || skip[i] || c.identity {
			continue
		}
		if set.Len() > 0 {
			set.WriteString(", ")
		}
		set.WriteString(pgconn.Ident(c.name) + " = " + param(i))
	}
	if set.Len() == 0 {
		// Only unchanged columns besides the key: nothing to write.
		u.cols = nil
	} else {
		u.sql = "UPDATE " + p.table.ident + " AS t SET " + set.String() + " FROM unnest(" + args.String() + ") AS u(" + alias.String() +
			") WHERE (" + p.keyList("t.") + ") = (" + where.String() + ")"
	}
	p.updates[kb.String()] = u
	return u
}
