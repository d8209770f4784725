package batch

import (
	"fmt"
	"math"
	"strconv"

	"github.com/regiond/regiond/source"
)

// A Segment is a run of consecutive changes of one kind (upsert or delete)
// to one table. Changes inside a segment touch distinct keys once collapsed
// (the last image of a key wins), so a segment can be written as set-based
// statements in any row order; segments are written in source order, which
// keeps the order between tables (foreign keys) and between a delete and a
// re-insert.
type Segment struct {
	Table  *source.Table
	Delete bool
	// Rows are the after images (upserts) or the before images (deletes),
	// one per key, in the order each key first appeared.
	Rows []source.Row
	idx  map[string]int
}

// Segments splits changes into segments. Updates that keep the primary key
// are upserts of the after image; updates that change it are a delete of the
// old key followed by an upsert of the new row.
//
// When a later image of a key replaces an earlier one, a column the later
// image holds as source.Unchanged takes the earlier image's value: the
// collapsed row says everything the changes said.
func Segments(changes []source.Change) []*Segment {
	var (
		segs []*Segment
		cur  *Segment
		kb   []byte
	)
	put := func(t *source.Table, del bool, row source.Row) {
		if cur == nil || cur.Table != t || cur.Delete != del {
			cur = &Segment{Table: t, Delete: del, idx: make(map[string]int)}
			segs = append(segs, cur)
		}
		kb = AppendKey(kb[:0], t, row)
		if i, ok := cur.idx[string(kb)]; ok {
			if !del {
				cur.Rows[i] = mergeUnchanged(cur.Rows[i], row)
			}
			return
		}
		cur.idx[string(kb)] = len(cur.Rows)
		cur.Rows = append(cur.Rows, row)
	}
	for _, c := range changes {
		switch c.Op {
		case source.Insert:
			put(c.Table, false, c.After)
		case source.Delete:
			put(c.Table, true, c.Before)
		case source.Update:
			if !SameKey(c.Table, c.Before, c.After) {
				put(c.Table, true, c.Before)
			}
			put(c.Table, false, c.After)
		}
	}
	return segs
}

// mergeUnchanged returns next, with its Unchanged values taken from prev.
// next is copied before it is modified: rows belong to the source.
func mergeUnchanged(prev, next source.Row) source.Row {
	var out source.Row
	for i, v := range next {
		if v != source.Unchanged || i >= len(prev) || prev[i] == source.Unchanged {
			continue
		}
		if out == nil {
			out = append(source.Row(nil), next...)
		}
		out[i] = prev[i]
	}
	if out == nil {
		return next
	}
	return out
}

// HasUnchanged reports whether row holds a source.Unchanged value.
func HasUnchanged(row source.Row) bool {
	for _, v := range row {
		if v == source.Unchanged {
			return true
		}
	}
	return false
}

// SameKey reports whether rows a and b of table t have the same primary key.
func SameKey(t *source.Table, a, b source.Row) bool {
	for _, c := range t.PK {
		if !sameValue(a[c], b[c]) {
			return false
		}
	}
	return true
}

func sameValue(a, b any) bool {
	switch x := a.(type) {
	case []byte:
		y, ok := b.([]byte)
		return ok && string(x) == string(y)
	default:
		return a == b
	}
}

// AppendKey appends the primary key of row, type-tagged, to b: equal keys
// give equal bytes, for map lookups.
func AppendKey(b []byte, t *source.Table, row source.Row) []byte {
	for _, c := range t.PK {
		switch v := row[c].(type) {
		case nil:
			b = append(b, 'n')
		case int64:
			b = strconv.AppendInt(append(b, 'i'), v, 10)
		case int32:
			b = strconv.AppendInt(append(b, 'i'), int64(v), 10)
		case int16:
			b = strconv.AppendInt(append(b, 'i'), int64(v), 10)
		case int8:
			b = strconv.AppendInt(append(b, 'i'), int64(v), 10)
		case uint64:
			b = strconv.AppendUint(append(b, 'u'), v, 10)
		case uint32:
			b = strconv.AppendUint(append(b, 'u'), uint64(v), 10)
		case uint16:
			b = strconv.AppendUint(append(b, 'u'), uint64(v), 10)
		case uint8:
			b = strconv.AppendUint(append(b, 'u'), uint64(v), 10)
		case string:
			b = appendTagged(b, 's', v)
		case []byte:
			b = append(strconv.AppendInt(append(b, 'b'), int64(len(v)), 10), ':')
			b = append(b, v...)
		case float64:
			b = strconv.AppendUint(append(b, 'f'), math.Float64bits(v), 16)
		case float32:
			b = strconv.AppendUint(append(b, 'f'), uint64(math.Float32bits(v)), 16)
		case bool:
			b = strconv.AppendBool(append(b, 't'), v)
		case source.Decimal:
			b = appendTagged(b, 'd', string(v))
		case source.Date:
			b = appendTagged(b, 'D', string(v))
		case source.DateTime:
			b = appendTagged(b, 'T', string(v))
		case source.Timestamp:
			b = appendTagged(b, 'Z', string(v))
		case source.Time:
			b = appendTagged(b, 'h', string(v))
		case source.Bits:
			b = appendTagged(b, 'B', string(v))
		case source.JSON:
			b = appendTagged(b, 'j', string(v))
		default:
			b = append(b, fmt.Sprintf("%T:%v", v, v)...)
		}
		b = append(b, 0)
	}
	return b
}

// appendTagged appends a length-prefixed string with a type tag.
func appendTagged(b []byte, tag byte, s string) []byte {
	b = append(strconv.AppendInt(append(b, tag), int64(len(s)), 10), ':')
	return append(b, s...)
}
