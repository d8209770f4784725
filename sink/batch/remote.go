package batch

import (
	"bytes"
	"context"
	"fmt"
	"math"

	"github.com/regiond/regiond/conflict"
	"github.com/regiond/regiond/source"
)

// RemoteTarget is what an engine's Target offers to check apply_remote
// changes against the rows they overwrite, inside the open target
// transaction.
type RemoteTarget interface {
	// ReadRows reads the target's current row of each key (rows holding
	// the keys), nil where there is none, locking the rows until the
	// transaction ends. Values are canonical (source/values.go), as the
	// target's log reader would produce them. norm maps a value of column
	// i (of t) to the form in which the target stores it where the engine
	// pads or strips what a log image does not (BINARY(n) zero bytes,
	// CHAR(n) spaces); it is applied to both sides before they are compared.
	ReadRows(ctx context.Context, t *source.Table, keys []source.Row) (rows []source.Row, norm func(i int, v any) any, err error)
	// Record writes conflict records.
	Record(ctx context.Context, cs []Conflict) error
}

// RemoteFilter is what a RemoteTarget may offer on top: the target compares
// the images with its rows itself and sends back only the rows that may
// conflict, so that rows nothing conflicts on are neither sent nor
// converted. It must lock the rows of all keys, as ReadRows does, and may
// return rows that turn out equal (they are compared again, as ReadRows'
// are), but never leave out one that differs.
type RemoteFilter interface {
	// ReadDiffering reads the target's rows of keys, locking them, and
	// compares each with images[i], the image of key i that the change
	// expects there (insert[i]: an insert, whose key may be missing; a nil
	// images[i]: only a missing row matters). It returns, in key order, the
	// indexes of the keys that may conflict and their rows (nil: none),
	// with norm as ReadRows documents.
	ReadDiffering(ctx context.Context, t *source.Table, keys, images []source.Row, insert []bool) (idx []int, rows []source.Row, norm func(i int, v any) any, err error)
}

// remoteCheck is one apply_remote change to compare with the target: the
// first change of its key in what is being written.
type remoteCheck struct {
	change source.Change
	key    source.Row
}

// remoteChecks picks, per apply_remote table, the first change of each key
// among changes, in order. The later changes of a key are checked by the
// earlier ones: the source's log orders them, and the target's row is
// locked from the read to the commit.
func remoteChecks(rules *Rules, changes []source.Change) (tables []*source.Table, checks map[*source.Table][]remoteCheck) {
	if rules == nil || rules.Local {
		return nil, nil
	}
	var (
		seen map[*source.Table]map[string]bool
		kb   []byte
	)
	for _, c := range changes {
		if rules.rule(c.Table.Name).Name != "apply_remote" {
			continue
		}
		key := c.Before
		if c.Op == source.Insert {
			key = c.After
		}
		if checks == nil {
			checks = map[*source.Table][]remoteCheck{}
			seen = map[*source.Table]map[string]bool{}
		}
		s := seen[c.Table]
		if s == nil {
			s = map[string]bool{}
			seen[c.Table] = s
			tables = append(tables, c.Table)
		}
		kb = AppendKey(kb[:0], c.Table, key)
		if s[string(kb)] {
			continue
		}
		s[string(kb)] = true
		checks[c.Table] = append(checks[c.Table], remoteCheck{change: c, key: key})
	}
	return tables, checks
}

// CheckRemote compares the apply_remote changes among changes (the first
// change of each key) with the target's current rows, read in one locking
// read per table, and returns a conflict for each change whose target row
// is not what the change's source saw: an update or delete whose row is
// missing or differs from its before image, an insert that meets a row with
// other values. The changes are applied all the same (the rule says so);
// the records let the operator see where regions may have diverged. Call
// it before writing changes.
func CheckRemote(ctx context.Context, rt RemoteTarget, rules *Rules, changes []source.Change) ([]Conflict, error) {
	tables, checks := remoteChecks(rules, changes)
	return checkRemote(ctx, rt, rules, tables, checks)
}

// checkRemote reads and compares the checks of tables, as CheckRemote
// documents.
func checkRemote(ctx context.Context, rt RemoteTarget, rules *Rules, tables []*source.Table, checks map[*source.Table][]remoteCheck) ([]Conflict, error) {
	var out []Conflict
	for _, t := range tables {
		cs := checks[t]
		if len(cs) == 0 {
			continue
		}
		keys := make([]source.Row, len(cs))
		for i, c := range cs {
			keys[i] = c.key
		}
		if f, ok := rt.(RemoteFilter); ok {
			images := make([]source.Row, len(cs))
			insert := make([]bool, len(cs))
			for i, c := range cs {
				switch {
				case c.change.Op == source.Insert:
					images[i], insert[i] = c.change.After, true
				case !t.KeyOnlyBefore:
					images[i] = c.change.Before
				}
			}
			idx, rows, norm, err := f.ReadDiffering(ctx, t, keys, images, insert)
			if err != nil {
				return nil, err
			}
			for n, i := range idx {
				if x, ok := DecideRemote(rules, t, cs[i].change, rows[n], norm); ok {
					out = append(out, x)
				}
			}
			continue
		}
		rows, norm, err := rt.ReadRows(ctx, t, keys)
		if err != nil {
			return nil, err
		}
		for i, c := range cs {
			if x, ok := DecideRemote(rules, t, c.change, rows[i], norm); ok {
				out = append(out, x)
			}
		}
	}
	return out, nil
}

// DecideRemote compares one apply_remote change with the target's current
// row (nil: none) and returns its conflict record, if it is one. norm is as
// RemoteTarget.ReadRows documents (nil: none). A before image that carries
// only the key (a PostgreSQL source table with REPLICA IDENTITY DEFAULT)
// can only show a missing row.
func DecideRemote(rules *Rules, t *source.Table, c source.Change, cur source.Row, norm func(int, any) any) (Conflict, bool) {
	rec := Conflict{
		Pipeline: rules.Pipeline, Table: t, Rule: "apply_remote",
		Winner: rules.Origin, Loser: rules.Target,
		Kept: c.After, Lost: cur, Position: c.TxnID,
	}
	switch c.Op {
	case source.Insert:
		rec.Key = c.After
		if cur == nil {
			return rec, false
		}
		if col := differs(t, c.After, cur, norm); col >= 0 {
			rec.Reason = fmt.Sprintf("insert from %s met a row in %s that differs in column %s; it was overwritten", rules.Origin, rules.Target, t.Columns[col].Name)
			return rec, true
		}
		return rec, false
	default:
		rec.Key = c.Before
		if cur == nil {
			rec.Reason = fmt.Sprintf("%s from %s found no row in %s", c.Op, rules.Origin, rules.Target)
			return rec, true
		}
		if t.KeyOnlyBefore {
			return rec, false
		}
		if col := differs(t, c.Before, cur, norm); col >= 0 {
			rec.Reason = fmt.Sprintf("the row in %s differs from the %s's before image (from %s) in column %s; it was overwritten", rules.Target, c.Op, rules.Origin, t.Columns[col].Name)
			return rec, true
		}
		return rec, false
	}
}

// differs returns the first column in which image and the target's row
// hold different values (compared as conflict.Normalize puts them, after
// norm), or -1. Values the log did not carry (source.Unchanged) are not
// compared.
func differs(t *source.Table, image, cur source.Row, norm func(int, any) any) int {
	for i := range t.Columns {
		if i >= len(image) || i >= len(cur) {
			return i
		}
		a, b := image[i], cur[i]
		if a == source.Unchanged {
			continue
		}
		if norm != nil {
			a, b = norm(i, a), norm(i, b)
		}
		if same, ok := sameKind(a, b); ok {
			if !same {
				return i
			}
			continue
		}
		a, b = asJSON(a, b), asJSON(b, a)
		as, aok := conflict.Normalize(a)
		bs, bok := conflict.Normalize(b)
		if aok != bok || as != bs {
			return i
		}
	}
	return -1
}

// sameKind compares two values of the same plain kind directly (ok false:
// they need conflict.Normalize), with Normalize's outcome: a cheap path
// for the common case of a row read back from an engine of the same kind.
func sameKind(a, b any) (same, ok bool) {
	switch x := a.(type) {
	case nil:
		return b == nil, b == nil
	case int64:
		y, ok := b.(int64)
		return ok && x == y, ok
	case uint64:
		y, ok := b.(uint64)
		return ok && x == y, ok
	case string:
		y, ok := b.(string)
		return ok && x == y, ok
	case []byte:
		y, ok := b.([]byte)
		return ok && bytes.Equal(x, y), ok
	case bool:
		y, ok := b.(bool)
		return ok && x == y, ok
	case float64:
		y, ok := b.(float64)
		return ok && (math.Float64bits(x) == math.Float64bits(y) || x != x && y != y), ok
	case float32:
		y, ok := b.(float32)
		return ok && (math.Float32bits(x) == math.Float32bits(y) || x != x && y != y), ok
	case source.DateTime, source.Timestamp, source.Decimal, source.Date, source.Time, source.JSON, source.Bits:
		// Equal texts of one kind normalize alike; other pairs (say
		// "…:00" and "…:00.000000") are for conflict.Normalize.
		return true, a == b
	}
	return false, false
}

// asJSON returns v as JSON when it is text compared with a JSON value:
// MariaDB's JSON is a text column, so its log images and reads carry JSON
// documents as plain strings, which compare with a PostgreSQL json(b) value
// as documents.
func asJSON(v, other any) any {
	if s, ok := v.(string); ok {
		if _, ok := other.(source.JSON); ok {
			return source.JSON(s)
		}
	}
	return v
}

// LogMessage is the log line of a recorded conflict under rule: under
// apply_remote the change was applied and the target's row replaced; under
// the other rules the change was discarded.
func LogMessage(rule string) string {
	if rule == "apply_remote" {
		return "conflict: target row replaced"
	}
	return "conflict: change discarded"
}
