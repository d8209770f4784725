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
	ints map[int64]int // idx for keys of one int64 column
	size int           // the most rows it can take (runLength)
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
	put := func(t *source.Table, del bool, row source.Row, rest []source.Change) {
		if cur == nil || cur.Table != t || cur.Delete != del {
			// Sized for the changes the segment will take: a batch is
			// often one long segment, and growing its rows and index
			// copies them over and over.
			cur = &Segment{Table: t, Delete: del}
			cur.size = runLength(rest, t, del)
			cur.Rows = make([]source.Row, 0, cur.size)
			segs = append(segs, cur)
		}
		// A key of one int64 column (the common case) is indexed by its
		// value, without key bytes of its own; a key is int64 in every
		// row of a table or in none (a column's values have one kind).
		if len(t.PK) == 1 {
			if v, ok := row[t.PK[0]].(int64); ok {
				if cur.ints == nil {
					cur.ints = make(map[int64]int, cur.size)
				}
				if i, ok := cur.ints[v]; ok {
					if !del {
						cur.Rows[i] = mergeUnchanged(cur.Rows[i], row)
					}
					return
				}
				cur.ints[v] = len(cur.Rows)
				cur.Rows = append(cur.Rows, row)
				return
			}
		}
		if cur.idx == nil {
			cur.idx = make(map[string]int)
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
	for n, c := range changes {
		switch c.Op {
		case source.Insert:
			put(c.Table, false, c.After, changes[n:])
		case source.Delete:
			put(c.Table, true, c.Before, changes[n:])
		case source.Update:
			if !SameKey(c.Table, c.Before, c.After) {
				put(c.Table, true, c.Before, changes[n:])
			}
			put(c.Table, false, c.After, changes[n:])
		}
	}
	return segs
}

// runLength bounds the rows of a segment of t (a delete segment if del)
// that starts with changes[0]: that change and the changes after it that
// the segment takes in a row.
func runLength(changes []source.Change, t *source.Table, del bool) int {
	n := 1
	for _, c := range changes[1:] {
		if c.Table != t {
			break
		}
		switch {
		case del && c.Op == source.Delete:
		case !del && c.Op == source.Insert:
		case !del && c.Op == source.Update && SameKey(c.Table, c.Before, c.After):
		default:
			return n
		}
		n++
	}
	return n
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
