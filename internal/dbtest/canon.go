package dbtest

import (
	"context"
	"database/sql"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"math/big"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	_ "github.com/jackc/pgx/v5/stdlib" // database/sql driver "pgx" for Postgres regions in tests

	"github.com/regiond/regiond/internal/testenv"
)

// OpenPostgres opens database "app" of a Postgres test server through
// database/sql, with the session in UTC.
func OpenPostgres(t testing.TB, s *testenv.Server) *sql.DB {
	t.Helper()
	db, err := sql.Open("pgx", s.URL("app")+"&timezone=UTC")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

// Region is a database of a test region for cross-engine comparison.
type Region struct {
	Name   string
	Engine string // "mysql" or "postgres"
	DB     *sql.DB
}

// column is a column's name and how its values are compared.
type column struct {
	name string
	kind string
	bits int
}

// columns lists a table's columns with a comparison kind derived from the
// engine's type, and its primary key columns.
func columns(ctx context.Context, r Region, table string) ([]column, []string, error) {
	var q string
	if r.Engine == "postgres" {
		q = `SELECT a.attname, format_type(a.atttypid, a.atttypmod)
			FROM pg_attribute a WHERE a.attrelid = $1::regclass AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum`
	} else {
		q = `SELECT COLUMN_NAME, COLUMN_TYPE FROM information_schema.COLUMNS
			WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = ? ORDER BY ORDINAL_POSITION`
	}
	rows, err := r.DB.QueryContext(ctx, q, table)
	if err != nil {
		return nil, nil, err
	}
	defer rows.Close()
	var cols []column
	for rows.Next() {
		var name, typ string
		if err := rows.Scan(&name, &typ); err != nil {
			return nil, nil, err
		}
		cols = append(cols, columnKind(name, strings.ToLower(typ)))
	}
	if err := rows.Err(); err != nil {
		return nil, nil, err
	}
	var pk []string
	if r.Engine == "postgres" {
		q = `SELECT a.attname FROM pg_index i JOIN LATERAL unnest(i.indkey) WITH ORDINALITY k(attnum, n) ON true
			JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum
			WHERE i.indrelid = $1::regclass AND i.indisprimary ORDER BY k.n`
	} else {
		q = `SELECT COLUMN_NAME FROM information_schema.KEY_COLUMN_USAGE
			WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = ? AND CONSTRAINT_NAME = 'PRIMARY' ORDER BY ORDINAL_POSITION`
	}
	krows, err := r.DB.QueryContext(ctx, q, table)
	if err != nil {
		return nil, nil, err
	}
	defer krows.Close()
	for krows.Next() {
		var c string
		if err := krows.Scan(&c); err != nil {
			return nil, nil, err
		}
		pk = append(pk, c)
	}
	return cols, pk, krows.Err()
}

func columnKind(name, typ string) column {
	c := column{name: name, kind: "text"}
	switch {
	case typ == "tinyint(1)" || typ == "boolean":
		c.kind = "bool"
	case strings.HasPrefix(typ, "char(") || strings.HasPrefix(typ, "character("):
		c.kind = "char"
	case strings.HasPrefix(typ, "bit"):
		c.kind = "bits"
		if i := strings.IndexByte(typ, '('); i >= 0 {
			c.bits, _ = strconv.Atoi(strings.TrimSuffix(typ[i+1:], ")"))
		}
	case strings.Contains(typ, "int") || typ == "year" || strings.HasPrefix(typ, "year"):
		c.kind = "int"
	case strings.HasPrefix(typ, "decimal") || strings.HasPrefix(typ, "numeric"):
		c.kind = "decimal"
	case typ == "float" || typ == "real":
		c.kind = "float32"
	case typ == "double" || typ == "double precision":
		c.kind = "float64"
	case strings.HasPrefix(typ, "datetime") || strings.HasPrefix(typ, "timestamp"):
		c.kind = "datetime"
	case strings.HasPrefix(typ, "time"):
		c.kind = "time"
	case typ == "json" || typ == "jsonb" || typ == "longtext" && name == "js":
		c.kind = "json"
	case strings.Contains(typ, "blob") || strings.Contains(typ, "binary") || typ == "bytea":
		c.kind = "binary"
	}
	return c
}

// DumpCanonical returns table's rows ordered by primary key, each value in a
// text form that is equal across engines exactly when the values map to each
// other (the README's type mapping): booleans 0/1, decimals without trailing
// zeros, date-times with six fractional digits, binary in hex, JSON with
// sorted keys, bit strings as 0/1 digits.
func DumpCanonical(ctx context.Context, r Region, table string) ([]string, error) {
	cols, pk, err := columns(ctx, r, table)
	if err != nil {
		return nil, err
	}
	if len(cols) == 0 || len(pk) == 0 {
		return nil, fmt.Errorf("%s: table %s has no columns or no primary key", r.Name, table)
	}
	quote := func(s string) string { return "`" + s + "`" }
	if r.Engine == "postgres" {
		quote = func(s string) string { return `"` + s + `"` }
	}
	var sel []string
	for _, c := range cols {
		expr := quote(c.name)
		if r.Engine == "postgres" {
			expr += "::text"
		} else if c.kind == "bits" {
			expr = "BIN(" + expr + ")"
		} else if c.kind == "float32" {
			// MySQL prints FLOAT rounded to 6 digits; widen to see it all.
			expr = "(" + expr + " + 0e0)"
		}
		sel = append(sel, expr)
	}
	var order []string
	for _, k := range pk {
		// Qualified: in Postgres a bare name would mean the text output
		// column, sorting 10 before 2.
		order = append(order, quote(table)+"."+quote(k))
	}
	rows, err := r.DB.QueryContext(ctx, "SELECT "+strings.Join(sel, ", ")+" FROM "+quote(table)+" ORDER BY "+strings.Join(order, ", "))
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	vals := make([]sql.RawBytes, len(cols))
	ptrs := make([]any, len(cols))
	for i := range vals {
		ptrs[i] = &vals[i]
	}
	var out []string
	for rows.Next() {
		if err := rows.Scan(ptrs...); err != nil {
			return nil, err
		}
		parts := make([]string, len(cols))
		for i, v := range vals {
			if v == nil {
				parts[i] = cols[i].name + "=NULL"
				continue
			}
			parts[i] = cols[i].name + "=" + canonical(cols[i], string(v), r.Engine)
		}
		out = append(out, strings.Join(parts, "|"))
	}
	return out, rows.Err()
}

func canonical(c column, s, engine string) string {
	switch c.kind {
	case "bool":
		switch s {
		case "t", "true", "1":
			return "1"
		case "f", "false", "0":
			return "0"
		}
	case "char":
		// MySQL drops CHAR's trailing pad spaces when reading, Postgres
		// keeps them.
		return strconv.Quote(strings.TrimRight(s, " "))
	case "decimal":
		if strings.Contains(s, ".") {
			s = strings.TrimSuffix(strings.TrimRight(s, "0"), ".")
		}
		if s == "-0" {
			s = "0"
		}
	case "float32", "float64":
		bits := 64
		if c.kind == "float32" {
			bits = 32
		}
		if f, err := strconv.ParseFloat(s, bits); err == nil {
			return strconv.FormatFloat(f, 'g', -1, bits)
		}
	case "datetime":
		s = strings.TrimSuffix(strings.TrimSuffix(s, "+00"), "+00:00")
		return padFraction(s)
	case "time":
		return padFraction(s)
	case "json":
		var v any
		d := json.NewDecoder(strings.NewReader(s))
		d.UseNumber()
		if d.Decode(&v) == nil {
			if b, err := json.Marshal(v); err == nil {
				return string(b)
			}
		}
	case "binary":
		if engine == "postgres" {
			return strings.TrimPrefix(s, `\x`)
		}
		return hex.EncodeToString([]byte(s))
	case "bits":
		n, ok := new(big.Int).SetString(s, 2)
		if ok && c.bits > 0 {
			return fmt.Sprintf("%0*s", c.bits, n.Text(2))
		}
	}
	return strconv.Quote(s)
}

func padFraction(s string) string {
	i := strings.IndexByte(s, '.')
	if i < 0 {
		return s + ".000000"
	}
	return s + strings.Repeat("0", max(0, 6-len(s[i+1:])))
}

// WaitEqualCanonical waits until table holds the same rows, compared through
// the type mapping, in every region; it fails the test after timeout.
func WaitEqualCanonical(t testing.TB, timeout time.Duration, table string, regions ...Region) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		diff, err := diffCanonical(t.Context(), table, regions)
		if err == nil && diff == "" {
			return
		}
		if time.Now().After(deadline) {
			if err != nil {
				t.Fatalf("table %s: %v", table, err)
			}
			t.Fatalf("table %s differs after %v:\n%s", table, timeout, diff)
		}
		time.Sleep(250 * time.Millisecond)
	}
}

func diffCanonical(ctx context.Context, table string, regions []Region) (string, error) {
	first, err := DumpCanonical(ctx, regions[0], table)
	if err != nil {
		return "", fmt.Errorf("%s: %w", regions[0].Name, err)
	}
	for _, r := range regions[1:] {
		d, err := DumpCanonical(ctx, r, table)
		if err != nil {
			return "", fmt.Errorf("%s: %w", r.Name, err)
		}
		if diff := cmp.Diff(first, d); diff != "" {
			if len(diff) > 4000 {
				diff = diff[:4000] + "\n..."
			}
			return fmt.Sprintf("%s (-) vs %s (+): %d vs %d rows\n%s", regions[0].Name, r.Name, len(first), len(d), diff), nil
		}
	}
	return "", nil
}
