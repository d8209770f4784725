package postgres

import (
	"context"
	"fmt"
	"strconv"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgtype"

	"github.com/regiond/regiond/internal/pgconn"
	"github.com/regiond/regiond/pipeline"
	"github.com/regiond/regiond/sink/batch"
	"github.com/regiond/regiond/source"
	pgsource "github.com/regiond/regiond/source/postgres"
)

var _ batch.RemoteFilter = (*target)(nil)

// Compare modes of one key in ReadDiffering's statement.
const (
	modeMissing = 0 // only a missing row matters (key-only before image)
	modeCompare = 1 // a missing row, or one whose text differs from the image
	modeAlways  = 2 // any row: the image holds values the log left out
)

// ReadDiffering implements batch.RemoteFilter. One statement locks the rows
// of all keys (a materialized locking read, as ReadRows) and returns only
// those that may conflict: a missing row of an update or delete, the row of
// an insert's key (inserts rarely meet one, so their images are not sent),
// or an update's or delete's row with a column whose text (column::text)
// differs from the before image's value as the upsert would write it
// (encode). The comparison is of texts, never
// of the image cast to the column's type: a before image the target could
// not hold must not fail the batch, and a text that differs only in
// spelling (e.g. character(n) padding) is returned and compared again by
// the caller. Equal texts mean the target holds what the image writes.
func (t *target) ReadDiffering(ctx context.Context, st *source.Table, keys, images []source.Row, insert []bool) ([]int, []source.Row, func(int, any) any, error) {
	p, err := t.plan(ctx, st)
	if err != nil {
		return nil, nil, nil, err
	}
	ri, err := t.ruleInfo(ctx, p)
	if err != nil {
		return nil, nil, nil, err
	}
	types := pick(p, ri.types)
	if err := t.send(ctx, t.take()); err != nil {
		return nil, nil, nil, err
	}
	nk, nc := len(p.key), len(p.cols)
	mode := make([]int32, len(keys))
	for i, img := range images {
		switch {
		case insert[i]:
			// An insert rarely meets a row (a replay, a conflict): its
			// image is not sent, and a row that is there comes back.
			mode[i] = modeAlways
		case img == nil:
			mode[i] = modeMissing
		case batch.HasUnchanged(img):
			mode[i] = modeAlways
		default:
			mode[i] = modeCompare
		}
	}
	imgArgs := make([]any, nc)
	for i, c := range p.cols {
		arr := make(pgtype.FlatArray[pgtype.Text], len(images))
		for r, img := range images {
			if mode[r] == modeCompare {
				arr[r] = encode(img[i], c)
			}
		}
		imgArgs[i] = arr
	}

	var q strings.Builder
	q.WriteString("WITH l(o")
	for i := range nc {
		q.WriteString(", c" + strconv.Itoa(i+1))
	}
	q.WriteString(") AS MATERIALIZED (SELECT u.n")
	for _, c := range p.cols {
		q.WriteString(", r." + pgconn.Ident(c.name))
	}
	q.WriteString(" FROM unnest(" + arrayParams(1, nk) + ") WITH ORDINALITY AS u(" + aliases(nk) + ", n)" +
		" JOIN " + p.table.ident + " AS r ON (" + p.keyList("r.") + ") = (" + keyCast(p) + ") FOR UPDATE OF r)")
	q.WriteString(" SELECT u.n, l.o IS NOT NULL")
	for i := range nc {
		q.WriteString(", l.c" + strconv.Itoa(i+1))
	}
	q.WriteString(" FROM unnest(" + arrayParams(nk+1, nc) + ", $" + strconv.Itoa(nk+nc+1) + "::int4[], $" + strconv.Itoa(nk+nc+2) + "::bool[])" +
		" WITH ORDINALITY AS u(" + aliases(nc) + ", m, ins, n) LEFT JOIN l ON l.o = u.n" +
		" WHERE CASE WHEN l.o IS NULL THEN NOT u.ins WHEN u.m = 2 THEN true WHEN u.m = 0 THEN false ELSE false")
	for i := range nc {
		v := strconv.Itoa(i + 1)
		q.WriteString(" OR l.c" + v + "::text IS DISTINCT FROM u.v" + v)
	}
	q.WriteString(" END ORDER BY u.n")

	args := append([]any{pgx.QueryResultFormats{pgx.TextFormatCode}}, columnArrays(p, p.key, keys)...)
	args = append(args, imgArgs...)
	args = append(args, mode, insert)
	rows, err := t.conn.Query(ctx, q.String(), args...)
	if err != nil {
		return nil, nil, nil, err
	}
	defer rows.Close()
	var (
		idx []int
		out []source.Row
	)
	for rows.Next() {
		raw := rows.RawValues()
		n, err := strconv.Atoi(string(raw[0]))
		if err != nil || n < 1 || n > len(keys) {
			return nil, nil, nil, fmt.Errorf("region %s: locking read of table %s: bad ordinal %q", t.a.cfg.Target, st.Name, raw[0])
		}
		idx = append(idx, n-1)
		if string(raw[1]) != "t" {
			out = append(out, nil)
			continue
		}
		row := make(source.Row, nc)
		for i := range p.cols {
			v := raw[i+2]
			if v == nil {
				continue
			}
			row[i], err = pgsource.Canonical(types[i].oid, types[i].typmod, string(v))
			if err != nil {
				return nil, nil, nil, pipeline.Permanent(fmt.Errorf("region %s: table %s row %s column %s in the target: %w",
					t.a.cfg.Target, st.Name, source.KeyJSON(st, keys[n-1]), st.Columns[i].Name, err))
			}
		}
		out = append(out, row)
	}
	if err := rows.Err(); err != nil {
		return nil, nil, nil, err
	}
	return idx, out, normBpchar(types), nil
}
