package verify

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/regiond/regiond/config"
	"github.com/regiond/regiond/snapshot"
)

// Checksum methods of a table.
const (
	methodMySQL     = "mysql: BIT_XOR(CRC32(CONCAT_WS(...)))"
	methodPostgres  = "postgres: bit_xor(hashtextextended(row text))"
	methodCanonical = "canonical text, BIT_XOR of MD5 prefixes on each engine"
	methodRows      = "rows read and compared in regiond (types without common SQL text)"
)

// Type classes: what a column's values are, whatever the engine spells.
const (
	clInt       = "integer"
	clBool      = "boolean"
	clDecimal   = "decimal"
	clFloat     = "float"
	clDouble    = "double"
	clText      = "text"
	clBinary    = "binary"
	clDate      = "date"
	clDateTime  = "datetime"
	clTimestamp = "timestamp"
	clTime      = "time"
	clJSON      = "json"
	clBits      = "bits"
	clOther     = "other" // PostgreSQL types without MySQL counterpart: text form
)

// classOf maps a column type as the catalog spells it (MySQL COLUMN_TYPE,
// PostgreSQL format_type, lower case) to its class.
func classOf(engine, typ string) string {
	typ = strings.ToLower(typ)
	base := typ
	if i := strings.IndexAny(base, "( "); i >= 0 {
		base = base[:i]
	}
	if engine == config.EngineMySQL {
		switch base {
		case "tinyint":
			if strings.HasPrefix(typ, "tinyint(1)") && !strings.Contains(typ, "unsigned") {
				return clBool
			}
			return clInt
		case "smallint", "mediumint", "int", "integer", "bigint", "year":
			return clInt
		case "decimal", "numeric":
			return clDecimal
		case "float":
			return clFloat
		case "double", "real":
			return clDouble
		case "char", "varchar", "tinytext", "text", "mediumtext", "longtext", "enum", "set":
			return clText
		case "binary", "varbinary", "tinyblob", "blob", "mediumblob", "longblob":
			return clBinary
		case "date":
			return clDate
		case "datetime":
			return clDateTime
		case "timestamp":
			return clTimestamp
		case "time":
			return clTime
		case "json":
			return clJSON
		case "bit":
			return clBits
		}
		return clOther
	}
	switch {
	case typ == "smallint" || typ == "integer" || typ == "bigint":
		return clInt
	case strings.HasPrefix(typ, "numeric"):
		return clDecimal
	case typ == "real":
		return clFloat
	case typ == "double precision":
		return clDouble
	case typ == "boolean":
		return clBool
	case strings.HasPrefix(typ, "character") || typ == "text" || typ == `"char"`:
		return clText
	case typ == "bytea":
		return clBinary
	case typ == "date":
		return clDate
	case strings.HasPrefix(typ, "timestamp") && strings.HasSuffix(typ, "without time zone"):
		return clDateTime
	case strings.HasPrefix(typ, "timestamp"):
		return clTimestamp
	case strings.HasPrefix(typ, "time") && strings.HasSuffix(typ, "without time zone"):
		return clTime
	case typ == "json" || typ == "jsonb":
		return clJSON
	case strings.HasPrefix(typ, "bit"):
		return clBits
	}
	return clOther
}

// compatible reports whether columns of classes a and b hold values that
// map to each other (README, "Types across engines").
func compatible(a, b string) bool {
	if a == b {
		return true
	}
	pair := func(x, y string) bool { return a == x && b == y || a == y && b == x }
	return pair(clInt, clBool) || pair(clInt, clDecimal) || pair(clText, clJSON) || pair(clText, clOther) ||
		pair(clDateTime, clTimestamp)
}

// sqlCanonical reports whether a class has a canonical text expression on
// both engines (canonExpr).
func sqlCanonical(class string) bool {
	switch class {
	case clFloat, clDouble, clJSON:
		return false
	}
	return true
}

// describe looks t up in every compared region and refuses what cannot be
// compared: a missing table, different primary keys, columns missing in a
// region or of types that do not map.
func (v *verifier) describe(ctx context.Context, tc Table) (*table, error) {
	t := &table{Table: tc}
	var problems []string
	for _, r := range v.regions {
		st, err := r.db.Table(ctx, tc.Name)
		if err != nil {
			if errors.Is(err, snapshot.ErrNoTable) {
				problems = append(problems, err.Error())
				t.per = append(t.per, nil)
				continue
			}
			return nil, err
		}
		t.per = append(t.per, st)
	}
	if len(problems) > 0 {
		return nil, fmt.Errorf("%w: table %s: %s", ErrRefused, tc.Name, strings.Join(problems, "; "))
	}
	ref := t.per[0]
	refKey := strings.Join(ref.KeyNames(), ", ")
	t.cols = make([][]int, len(v.regions))
	classes := make([][]string, len(v.regions))
	for ri, r := range v.regions {
		st := t.per[ri]
		if k := strings.Join(st.KeyNames(), ", "); !strings.EqualFold(k, refKey) {
			problems = append(problems, fmt.Sprintf("primary key (%s) in region %s but (%s) in region %s: the primary key must be the same in every region",
				refKey, v.regions[0].name, k, r.name))
		}
		byName := map[string]int{}
		for i, c := range st.Def.Columns {
			byName[strings.ToLower(c.Name)] = i
		}
		t.cols[ri] = make([]int, len(ref.Def.Columns))
		classes[ri] = make([]string, len(st.Def.Columns))
		for i := range st.Def.Columns {
			classes[ri][i] = classOf(r.engine, st.Types[i])
		}
		for i, c := range ref.Def.Columns {
			j, ok := byName[strings.ToLower(c.Name)]
			if !ok {
				problems = append(problems, fmt.Sprintf("column %s is in region %s but not in region %s: add it there with a matching type", c.Name, v.regions[0].name, r.name))
				t.cols[ri][i] = -1
				continue
			}
			t.cols[ri][i] = j
			if a, b := classes[0][i], classes[ri][j]; !compatible(a, b) {
				problems = append(problems, fmt.Sprintf("column %s is %s in region %s but %s in region %s: these types do not map (README, Types across engines)",
					c.Name, ref.Types[i], v.regions[0].name, st.Types[j], r.name))
			}
		}
		if len(st.Def.Columns) != len(ref.Def.Columns) {
			refNames := map[string]bool{}
			for _, c := range ref.Def.Columns {
				refNames[strings.ToLower(c.Name)] = true
			}
			for _, c := range st.Def.Columns {
				if !refNames[strings.ToLower(c.Name)] {
					problems = append(problems, fmt.Sprintf("column %s is in region %s but not in region %s: add it there with a matching type", c.Name, r.name, v.regions[0].name))
				}
			}
		}
	}
	for _, col := range []struct{ what, name string }{{"version_column", tc.VersionColumn}, {"home_column", tc.HomeColumn}} {
		if col.name == "" {
			continue
		}
		if ref.Def.Columns != nil && indexOfColumn(ref, col.name) < 0 {
			problems = append(problems, fmt.Sprintf("%s %s is not a column of the table", col.what, col.name))
		}
	}
	if len(problems) > 0 {
		return nil, fmt.Errorf("%w: table %s: %s", ErrRefused, tc.Name, strings.Join(problems, "; "))
	}
	t.padded = make([]bool, len(ref.Def.Columns))
	t.json = make([]bool, len(ref.Def.Columns))
	for ri := range v.regions {
		for i, j := range t.cols[ri] {
			t.json[i] = t.json[i] || classes[ri][j] == clJSON
			typ := strings.ToLower(t.per[ri].Types[j])
			t.padded[i] = t.padded[i] || strings.HasPrefix(typ, "char(") || strings.HasPrefix(typ, "character(")
		}
	}
	t.method = methodFor(v.regions, classes, t.cols)
	if v.opts.CompareRows {
		t.method = methodRows
	}
	t.exprs = make([]string, len(v.regions))
	for ri, r := range v.regions {
		t.exprs[ri] = checksumExpr(t.method, r, t.per[ri], classes[ri], t.cols[ri])
	}
	return t, nil
}

func indexOfColumn(st *snapshot.Table, name string) int {
	for i, c := range st.Def.Columns {
		if strings.EqualFold(c.Name, name) {
			return i
		}
	}
	return -1
}

// methodFor picks how a table's chunks are checksummed.
func methodFor(regions []*region, classes [][]string, cols [][]int) string {
	engine := regions[0].engine
	same := true
	for _, r := range regions {
		same = same && r.engine == engine
	}
	if same {
		if engine == config.EnginePostgres {
			return methodPostgres
		}
		return methodMySQL
	}
	for ri := range regions {
		for _, j := range cols[ri] {
			if !sqlCanonical(classes[ri][j]) {
				return methodRows
			}
		}
	}
	return methodCanonical
}

// checksumExpr returns the select list "count, hash" of a chunk in region
// r: the hash is an unsigned 64-bit integer (as text) combining every row's
// hash with XOR, so it does not depend on the order rows are read in.
// Columns are taken in region 0's order (cols), so that the canonical text
// of a row is the same on both engines.
func checksumExpr(method string, r *region, st *snapshot.Table, classes []string, cols []int) string {
	q := r.db.Quote
	switch method {
	case methodMySQL:
		parts := make([]string, 0, len(cols)+1)
		nulls := make([]string, 0, len(cols))
		for _, j := range cols {
			c := q(st.Def.Columns[j].Name)
			if classes[j] == clFloat {
				c = "(" + c + " + 0e0)" // FLOAT is printed rounded to 6 digits
			}
			parts = append(parts, c)
			nulls = append(nulls, "ISNULL("+q(st.Def.Columns[j].Name)+")")
		}
		parts = append(parts, "CONCAT("+strings.Join(nulls, ", ")+")")
		return "COUNT(*), CAST(COALESCE(BIT_XOR(CRC32(CONCAT_WS('#', " + strings.Join(parts, ", ") + "))), 0) AS CHAR)"
	case methodPostgres:
		cs := make([]string, len(cols))
		for i, j := range cols {
			cs[i] = q(st.Def.Columns[j].Name)
		}
		return "count(*), coalesce(bit_xor(hashtextextended(ROW(" + strings.Join(cs, ", ") + ")::text, 0)), 0)::text"
	case methodCanonical:
		parts := make([]string, 0, len(cols)+1)
		nulls := make([]string, 0, len(cols))
		for _, j := range cols {
			name := q(st.Def.Columns[j].Name)
			parts = append(parts, canonExpr(r.engine, classes[j], st.Types[j], name))
			if r.engine == config.EnginePostgres {
				nulls = append(nulls, "("+name+" IS NULL)::int")
			} else {
				nulls = append(nulls, "ISNULL("+name+")")
			}
		}
		if r.engine == config.EnginePostgres {
			parts = append(parts, "concat("+strings.Join(nulls, ", ")+")")
			row := "concat_ws('#', " + strings.Join(parts, ", ") + ")"
			return "count(*), coalesce(bit_xor(('x' || left(md5(" + row + "), 16))::bit(64)::bigint), 0)::text"
		}
		parts = append(parts, "CONCAT("+strings.Join(nulls, ", ")+")")
		row := "CONCAT_WS('#', " + strings.Join(parts, ", ") + ")"
		return "COUNT(*), CAST(COALESCE(BIT_XOR(CAST(CONV(LEFT(MD5(" + row + "), 16), 16, 10) AS UNSIGNED)), 0) AS CHAR)"
	}
	return ""
}

// canonExpr is a column's value as text that is the same on both engines
// for values that map to each other.
func canonExpr(engine, class, typ, c string) string {
	if engine == config.EnginePostgres {
		switch class {
		case clBool:
			return c + "::int::text"
		case clBinary:
			return "encode(" + c + ", 'hex')"
		case clDateTime, clTimestamp:
			return "to_char(" + c + ", 'YYYY-MM-DD HH24:MI:SS.US')"
		case clTime:
			return "to_char(" + c + "::interval, 'HH24:MI:SS.US')"
		}
		return c + "::text"
	}
	switch class {
	case clInt, clBool, clDecimal, clDate:
		return "CAST(" + c + " AS CHAR)"
	case clBinary:
		return "LOWER(HEX(" + c + "))"
	case clDateTime, clTimestamp:
		return "DATE_FORMAT(" + c + ", '%Y-%m-%d %H:%i:%s.%f')"
	case clTime:
		return "TIME_FORMAT(" + c + ", '%H:%i:%s.%f')"
	case clBits:
		n := 64
		if i := strings.IndexByte(typ, '('); i >= 0 {
			n, _ = strconv.Atoi(strings.TrimSuffix(typ[i+1:], ")"))
		}
		return "LPAD(BIN(" + c + "), " + strconv.Itoa(n) + ", '0')"
	}
	return "CONVERT(" + c + " USING utf8mb4)"
}

// checksum runs the chunk checksum of r in region ri.
func (v *verifier) checksum(ctx context.Context, t *table, ri int, r snapshot.Range) (chunkSum, error) {
	reg := v.regions[ri]
	st := t.per[ri]
	where, args := st.Where(r)
	q := "SELECT " + t.exprs[ri] + " FROM " + reg.db.Ident(t.Name) + where
	var (
		s   chunkSum
		sum string
	)
	if err := reg.db.SQL.QueryRowContext(ctx, q, args...).Scan(&s.rows, &sum); err != nil {
		return s, fmt.Errorf("region %s: table %s: checksum: %w", reg.name, t.Name, err)
	}
	if strings.HasPrefix(sum, "-") {
		n, err := strconv.ParseInt(sum, 10, 64)
		if err != nil {
			return s, fmt.Errorf("region %s: table %s: checksum %q: %w", reg.name, t.Name, sum, err)
		}
		s.sum = uint64(n)
		return s, nil
	}
	n, err := strconv.ParseUint(sum, 10, 64)
	if err != nil {
		return s, fmt.Errorf("region %s: table %s: checksum %q: %w", reg.name, t.Name, sum, err)
	}
	s.sum = n
	return s, nil
}

// estimate returns the catalog's row estimate of t in region 0 (0 when
// unknown), for progress.
func (v *verifier) estimate(ctx context.Context, t *table) int64 {
	reg := v.regions[0]
	var n int64
	var err error
	if reg.engine == config.EnginePostgres {
		err = reg.db.SQL.QueryRowContext(ctx, "SELECT greatest(reltuples, 0)::bigint FROM pg_class WHERE oid = $1::regclass", reg.db.Ident(t.Name)).Scan(&n)
	} else {
		err = reg.db.SQL.QueryRowContext(ctx, "SELECT COALESCE(TABLE_ROWS, 0) FROM information_schema.TABLES WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = ?", t.Name).Scan(&n)
	}
	if err != nil {
		return 0
	}
	return n
}
