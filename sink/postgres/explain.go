package postgres

import (
	"context"
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"

	pgxconn "github.com/jackc/pgx/v5/pgconn"

	"github.com/regiond/regiond/internal/pgconn"
	"github.com/regiond/regiond/source"
)

// Explain implements batch.Target: it finds the column of change c whose
// value the target cannot hold by storing each value alone, cast to its
// target column's type, into an empty copy of the table (a temporary table
// made in a transaction that is rolled back), and says what is wrong with
// it. Without such a column it names the column or constraint the server's
// error names.
func (t *target) Explain(ctx context.Context, c source.Change, err error) string {
	p := t.plans[c.Table]
	if p == nil {
		return fromError(err)
	}
	var probes []probe
	if c.After != nil {
		for _, i := range p.written {
			probes = append(probes, probe{i, c.After[i]})
		}
	}
	if c.Before != nil && (c.After == nil || !sameKeyValues(p, c.Before, c.After)) {
		for _, i := range p.key {
			probes = append(probes, probe{i, c.Before[i]})
		}
	}
	i, v, perr := t.probe(ctx, p, probes)
	if i < 0 {
		return fromError(err)
	}
	col := p.cols[i]
	d := fmt.Sprintf("column %s (%s) cannot hold the value %s", col.name, col.typ, display(v))
	if h := hint(v, col, perr); h != "" {
		d += " (" + h + ")"
	} else if perr != nil && pgCode(perr) != pgCode(err) {
		d += " (" + perr.Error() + ")"
	}
	return d
}

type probe struct {
	col int // source column
	v   any
}

func sameKeyValues(p *plan, a, b source.Row) bool {
	for _, k := range p.key {
		sa, _ := source.Text(a[k])
		sb, _ := source.Text(b[k])
		if sa != sb {
			return false
		}
	}
	return true
}

// probe returns the first probe whose value the target column refuses, with
// the server's error, or -1. It runs in its own transaction, rolled back.
func (t *target) probe(ctx context.Context, p *plan, probes []probe) (int, any, error) {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if _, err := t.conn.Exec(ctx, "BEGIN"); err != nil {
		return -1, nil, err
	}
	defer func() {
		if _, err := t.conn.Exec(ctx, "ROLLBACK"); err != nil {
			closeConn(t.conn)
		}
	}()
	// An empty table with the target's columns and types, without its
	// constraints: an INSERT of one value applies the column's type
	// modifier as the real write does (varchar(n) too long, bit(n) length).
	var cols []string
	for _, i := range p.written {
		cols = append(cols, pgconn.Ident(p.cols[i].name))
	}
	table := true
	if _, err := t.conn.Exec(ctx, "SAVEPOINT probe"); err != nil {
		return -1, nil, err
	}
	if _, err := t.conn.Exec(ctx, "CREATE TEMP TABLE regiond_probe ON COMMIT DROP AS SELECT "+strings.Join(cols, ", ")+
		" FROM "+p.table.ident+" WITH NO DATA"); err != nil {
		// No TEMP privilege, say: cast alone.
		if _, err := t.conn.Exec(ctx, "ROLLBACK TO SAVEPOINT probe"); err != nil {
			return -1, nil, err
		}
		table = false
	}
	for _, pr := range probes {
		if pr.v == nil || pr.v == source.Unchanged {
			continue
		}
		c := p.cols[pr.col]
		var q string
		if table {
			q = "INSERT INTO pg_temp.regiond_probe (" + pgconn.Ident(c.name) + ") SELECT $1::text::" + c.cast
		} else {
			q = "SELECT $1::text::" + c.typ
		}
		if _, err := t.conn.Exec(ctx, q, encode(pr.v, c)); err != nil {
			if pgCode(err) == "" {
				return -1, nil, err
			}
			return pr.col, pr.v, err
		}
	}
	return -1, nil, nil
}

// hint says why column c refuses v where the case is a known difference
// between the engines, or returns "".
func hint(v any, c *column, err error) string {
	code := pgCode(err)
	s, _ := source.Text(v)
	switch x := v.(type) {
	case string, []byte:
		if code == "22021" && strings.Contains(string(asBytes(x)), "\x00") {
			return "PostgreSQL text cannot hold NUL (0x00) characters: such data needs a bytea column in every region"
		}
		if code == "22021" {
			return "it is not valid UTF-8"
		}
	case uint64:
		if x > math.MaxInt64 && code == "22003" {
			return "it is beyond the range of " + c.typ + ": MySQL BIGINT UNSIGNED needs numeric(20,0) in PostgreSQL"
		}
	case source.Date, source.DateTime:
		if strings.HasPrefix(s, "0000-") || strings.Contains(s[:min(len(s), 10)], "-00") {
			return "PostgreSQL has no zero date (MySQL's 0000-00-00, or a zero month or day): store NULL instead, in every region"
		}
	case source.Time:
		if strings.HasPrefix(c.cast, "time ") {
			h, _, _ := strings.Cut(s, ":")
			if n, err := strconv.Atoi(h); err == nil && (n < 0 || n > 24 || strings.HasPrefix(h, "-")) {
				return "PostgreSQL time holds a time of day, 00:00:00 to 24:00:00: a MySQL TIME used as a duration needs an interval column"
			}
		}
	}
	return ""
}

func asBytes(v any) []byte {
	switch x := v.(type) {
	case string:
		return []byte(x)
	case []byte:
		return x
	}
	return nil
}

// display renders a value for an error message, shortened.
func display(v any) string {
	s, _ := source.Text(v)
	if _, ok := v.([]byte); ok {
		if len(s) > 66 {
			return s[:66] + "…"
		}
		return s
	}
	const max = 64
	if len(s) > max {
		return fmt.Sprintf("%q…", s[:max])
	}
	return fmt.Sprintf("%q", s)
}

// fromError names what the server's error names: a column (NOT NULL) or a
// constraint (unique, check).
func fromError(err error) string {
	var pe *pgxconn.PgError
	if !errors.As(err, &pe) {
		return ""
	}
	switch {
	case pe.ColumnName != "":
		return "column " + pe.ColumnName
	case pe.ConstraintName != "":
		if pe.Detail != "" {
			return "constraint " + pe.ConstraintName + " (" + pe.Detail + ")"
		}
		return "constraint " + pe.ConstraintName
	}
	return ""
}
