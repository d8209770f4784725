package mysql

import (
	"strings"

	"github.com/regiond/regiond/source"
)

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
