package snapshot

import (
	"context"
	"strings"

	"github.com/regiond/regiond/source"
)

// Where returns the condition selecting the keys of r, " WHERE …" (or ""
// for a range open at both ends), and its arguments, for statements of the
// caller's own over the same range (verify's checksums).
func (t *Table) Where(r Range) (string, []any) { return t.where(r) }

// ReadKeys returns the rows with the given keys that exist, in key order.
// With lock, the rows are locked for update until q's transaction ends.
func (t *Table) ReadKeys(ctx context.Context, q Querier, keys []Key, lock bool) ([]source.Row, error) {
	var out []source.Row
	const batch = 500
	for start := 0; start < len(keys); start += batch {
		part := keys[start:min(start+batch, len(keys))]
		ps := make([]string, len(part))
		var args []any
		for i, k := range part {
			p, a := t.keyParams(k, len(args)+1)
			ps[i] = p
			args = append(args, a...)
		}
		query := "SELECT " + strings.Join(t.exprs, ", ") + " FROM " + t.db.Ident(t.Def.Name) +
			" WHERE " + t.keyTuple() + " IN (" + strings.Join(ps, ", ") + ")" + t.orderBy()
		if lock {
			query += " FOR UPDATE"
		}
		rows, err := t.readRows(ctx, q, query, args)
		if err != nil {
			return nil, err
		}
		out = append(out, rows...)
	}
	return out, nil
}
