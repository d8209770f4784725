package mysql

import (
	"fmt"
	"math"
	"strconv"
	"strings"

	"github.com/regiond/regiond/source"
)

// A segment is a run of consecutive changes of one kind (upsert or delete)
// to one table. Changes inside a segment touch distinct keys once collapsed
// (the last image of a key wins), so a segment can be written as multi-row
// statements; segments are written in source order, which keeps the order
// between tables (foreign keys) and between a delete and a re-insert.
type segment struct {
	t    *source.Table
	del  bool
	rows []source.Row
	idx  map[string]int
}

// segments splits changes into segments. Updates that keep the primary key
// are upserts of the after image; updates that change it are a delete of the
// old key followed by an upsert of the new row.
func segments(changes []source.Change) []*segment {
	var (
		segs []*segment
		cur  *segment
		kb   []byte
	)
	put := func(t *source.Table, del bool, row source.Row) {
		if cur == nil || cur.t != t || cur.del != del {
			cur = &segment{t: t, del: del, idx: make(map[string]int)}
			segs = append(segs, cur)
		}
		kb = appendKey(kb[:0], t, row)
		if i, ok := cur.idx[string(kb)]; ok {
			if !del {
				cur.rows[i] = row
			}
			return
		}
		cur.idx[string(kb)] = len(cur.rows)
		cur.rows = append(cur.rows, row)
	}
	for _, c := range changes {
		switch c.Op {
		case source.Insert:
			put(c.Table, false, c.After)
		case source.Delete:
			put(c.Table, true, c.Before)
		case source.Update:
			if !sameKey(c.Table, c.Before, c.After) {
				put(c.Table, true, c.Before)
			}
			put(c.Table, false, c.After)
		}
	}
	return segs
}

func sameKey(t *source.Table, a, b source.Row) bool {
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

// appendKey encodes the primary key of row, type-tagged, for map lookups.
func appendKey(b []byte, t *source.Table, row source.Row) []byte {
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
			b = append(strconv.AppendInt(append(b, 's'), int64(len(v)), 10), ':')
			b = append(b, v...)
		case []byte:
			b = append(strconv.AppendInt(append(b, 'b'), int64(len(v)), 10), ':')
			b = append(b, v...)
		case float64:
			b = strconv.AppendUint(append(b, 'f'), math.Float64bits(v), 16)
		case float32:
			b = strconv.AppendUint(append(b, 'f'), uint64(math.Float32bits(v)), 16)
		default:
			b = append(b, fmt.Sprintf("%T:%v", v, v)...)
		}
		b = append(b, 0)
	}
	return b
}

// tableSQL holds the statement pieces of one table definition.
type tableSQL struct {
	insertHead string // INSERT INTO `t` (`a`,`b`) VALUES
	rowPH      string // (?,?)
	upsertTail string //  ON DUPLICATE KEY UPDATE `a`=VALUES(`a`),...
	deleteHead string // DELETE FROM `t` WHERE `id` IN (   or  WHERE (`a`,`b`) IN (
	keyPH      string // ? or (?,?)
}

func newTableSQL(t *source.Table) *tableSQL {
	var cols, ph, upd strings.Builder
	ph.WriteByte('(')
	for i, c := range t.Columns {
		if i > 0 {
			cols.WriteByte(',')
			ph.WriteByte(',')
		}
		cols.WriteString(quote(c.Name))
		ph.WriteByte('?')
	}
	ph.WriteByte(')')
	isPK := make(map[int]bool, len(t.PK))
	for _, k := range t.PK {
		isPK[k] = true
	}
	for i, c := range t.Columns {
		if isPK[i] {
			continue
		}
		if upd.Len() > 0 {
			upd.WriteByte(',')
		}
		q := quote(c.Name)
		upd.WriteString(q + "=VALUES(" + q + ")")
	}
	if upd.Len() == 0 { // a table of key columns only
		q := quote(t.Columns[t.PK[0]].Name)
		upd.WriteString(q + "=VALUES(" + q + ")")
	}
	s := &tableSQL{
		insertHead: "INSERT INTO " + quote(t.Name) + " (" + cols.String() + ") VALUES ",
		rowPH:      ph.String(),
		upsertTail: " ON DUPLICATE KEY UPDATE " + upd.String(),
	}
	var kc, kph strings.Builder
	for i, k := range t.PK {
		if i > 0 {
			kc.WriteByte(',')
			kph.WriteByte(',')
		}
		kc.WriteString(quote(t.Columns[k].Name))
		kph.WriteByte('?')
	}
	if len(t.PK) == 1 {
		s.deleteHead = "DELETE FROM " + quote(t.Name) + " WHERE " + kc.String() + " IN ("
		s.keyPH = "?"
	} else {
		s.deleteHead = "DELETE FROM " + quote(t.Name) + " WHERE (" + kc.String() + ") IN ("
		s.keyPH = "(" + kph.String() + ")"
	}
	return s
}

// rowSize estimates the bytes a row adds to a statement.
func rowSize(row source.Row) int {
	n := 4
	for _, v := range row {
		switch x := v.(type) {
		case string:
			n += len(x) + 3
		case []byte:
			n += 2*len(x) + 10
		default:
			n += 21
		}
	}
	return n
}
