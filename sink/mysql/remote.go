package mysql

import (
	"bytes"
	"context"
	"database/sql"
	"strconv"

	"github.com/regiond/regiond/sink/batch"
	"github.com/regiond/regiond/source"
)

var _ batch.RemoteFilter = (*writer)(nil)

// ReadDiffering implements batch.RemoteFilter with the locking read of
// ReadRows. A row read whose every value is, as text, exactly the image's
// value of the kind the column is read as (see sameText) is equal to the
// image and is left out, without being converted; every other row found
// is converted and returned, to be compared as ReadRows' rows are.
func (w *writer) ReadDiffering(ctx context.Context, t *source.Table, keys, images []source.Row, insert []bool) ([]int, []source.Row, func(int, any) any, error) {
	found := make([]source.Row, len(keys))
	seen := make([]bool, len(keys))
	var buf []byte
	cols, err := w.lockedRows(ctx, t, keys, func(i int, raw []sql.RawBytes, cols []targetColumn) error {
		seen[i] = true
		img := images[i]
		if img == nil { // only a missing row matters
			return nil
		}
		if len(img) == len(cols) {
			same := true
			for j, c := range cols {
				if img[j] == source.Unchanged {
					continue
				}
				var ok bool
				if ok, buf = c.sameText(raw[j], img[j], buf); !ok {
					same = false
					break
				}
			}
			if same {
				return nil
			}
		}
		row, err := canonicalRow(t, cols, raw)
		found[i] = row
		return err
	})
	if err != nil {
		return nil, nil, nil, err
	}
	var (
		idx  []int
		rows []source.Row
	)
	for i := range keys {
		switch {
		case found[i] != nil:
			idx, rows = append(idx, i), append(rows, found[i])
		case !seen[i] && !insert[i]:
			idx, rows = append(idx, i), append(rows, nil)
		}
	}
	return idx, rows, func(i int, v any) any { return cols[i].stored(v) }, nil
}

// sameText reports whether raw, a value of c as read, converts (canonical)
// to a value of v's own kind equal to v, and so compares equal to v; false
// means it may differ. Only kinds whose text is the value itself are
// compared here (buf is scratch space, returned for reuse).
func (c targetColumn) sameText(raw []byte, v any, buf []byte) (bool, []byte) {
	if raw == nil || v == nil {
		return raw == nil && v == nil, buf
	}
	switch c.kind {
	case "int":
		if x, ok := v.(int64); ok {
			buf = strconv.AppendInt(buf[:0], x, 10)
			return bytes.Equal(raw, buf), buf
		}
	case "uint":
		if x, ok := v.(uint64); ok {
			buf = strconv.AppendUint(buf[:0], x, 10)
			return bytes.Equal(raw, buf), buf
		}
	case "decimal":
		x, ok := v.(source.Decimal)
		return ok && string(raw) == string(x), buf
	case "date":
		x, ok := v.(source.Date)
		return ok && string(raw) == string(x), buf
	case "datetime":
		x, ok := v.(source.DateTime)
		return ok && string(raw) == string(x), buf
	case "timestamp":
		x, ok := v.(source.Timestamp)
		return ok && string(raw) == string(x), buf
	case "time":
		x, ok := v.(source.Time)
		return ok && string(raw) == string(x), buf
	case "json":
		x, ok := v.(source.JSON)
		return ok && string(raw) == string(x), buf
	case "float", "double", "bit":
		// Read as numbers in other notations: converted and compared.
	case "binary", "varbinary", "tinyblob", "blob", "mediumblob", "longblob":
		x, ok := v.([]byte)
		return ok && bytes.Equal(raw, x), buf
	default: // text, read as a Go string
		x, ok := v.(string)
		return ok && string(raw) == x, buf
	}
	return false, buf
}
