package postgres

import (
	"encoding/binary"
	"fmt"

	"github.com/jackc/pglogrepl"
)

// parseRowMessage parses a pgoutput Insert, Update or Delete message (not
// streamed) into pglogrepl's types, like pglogrepl.ParseV2, but its column
// values are slices of data instead of copies: one allocation per tuple
// instead of one per column. data must not change while the message is in
// use (the stream hands each message its own buffer).
func parseRowMessage(data []byte) (pglogrepl.Message, error) {
	return (&rowScratch{}).parse(data)
}

// rowScratch is the memory of one parsed row message, reused from message
// to message by the stream: the decoder converts a row message's values
// into a row of their own before the next message is parsed, and keeps
// nothing of it, so the per-row message, tuple and column structs need no
// allocation of their own.
type rowScratch struct {
	ins  pglogrepl.InsertMessage
	upd  pglogrepl.UpdateMessage
	del  pglogrepl.DeleteMessage
	tup  [2]pglogrepl.TupleData
	cols [2][]pglogrepl.TupleDataColumn
	ptrs [2][]*pglogrepl.TupleDataColumn
}

// parse is parseRowMessage into s: the message is valid until the next
// call.
func (s *rowScratch) parse(data []byte) (pglogrepl.Message, error) {
	p := rowParser{data: data, off: 1, s: s}
	relID := p.uint32()
	switch data[0] {
	case 'I':
		if p.byte() != 'N' {
			return nil, p.fail("insert: no new tuple")
		}
		tup := p.tuple(0)
		if p.err != nil {
			return nil, p.err
		}
		s.ins = pglogrepl.InsertMessage{RelationID: relID, Tuple: tup}
		return &s.ins, nil
	case 'U':
		s.upd = pglogrepl.UpdateMessage{RelationID: relID}
		m := &s.upd
		kind := p.byte()
		if kind == 'K' || kind == 'O' {
			m.OldTupleType = kind
			m.OldTuple = p.tuple(1)
			kind = p.byte()
		}
		if kind != 'N' {
			return nil, p.fail("update: no new tuple")
		}
		m.NewTuple = p.tuple(0)
		if p.err != nil {
			return nil, p.err
		}
		return m, nil
	case 'D':
		s.del = pglogrepl.DeleteMessage{RelationID: relID}
		m := &s.del
		m.OldTupleType = p.byte()
		if m.OldTupleType != 'K' && m.OldTupleType != 'O' {
			return nil, p.fail("delete: no old tuple")
		}
		m.OldTuple = p.tuple(1)
		if p.err != nil {
			return nil, p.err
		}
		return m, nil
	}
	return nil, fmt.Errorf("not a row message: %q", data[0])
}

type rowParser struct {
	data []byte
	off  int
	err  error
	s    *rowScratch
}

func (p *rowParser) fail(what string) error {
	if p.err == nil {
		p.err = fmt.Errorf("pgoutput %c message: %s at byte %d", p.data[0], what, p.off)
	}
	return p.err
}

func (p *rowParser) need(n int) bool {
	if p.err != nil {
		return false
	}
	if len(p.data)-p.off < n {
		p.fail("truncated")
		return false
	}
	return true
}

func (p *rowParser) byte() byte {
	if !p.need(1) {
		return 0
	}
	p.off++
	return p.data[p.off-1]
}

func (p *rowParser) uint32() uint32 {
	if !p.need(4) {
		return 0
	}
	p.off += 4
	return binary.BigEndian.Uint32(p.data[p.off-4:])
}

// tuple parses a tuple into slot (0: new, 1: old) of p's scratch.
func (p *rowParser) tuple(slot int) *pglogrepl.TupleData {
	if !p.need(2) {
		return nil
	}
	n := int(binary.BigEndian.Uint16(p.data[p.off:]))
	p.off += 2
	s := p.s
	if cap(s.cols[slot]) < n {
		s.cols[slot] = make([]pglogrepl.TupleDataColumn, n)
		s.ptrs[slot] = make([]*pglogrepl.TupleDataColumn, n)
	}
	cols, ptrs := s.cols[slot][:n], s.ptrs[slot][:n]
	t := &s.tup[slot]
	*t = pglogrepl.TupleData{ColumnNum: uint16(n), Columns: ptrs}
	for i := range n {
		c := &cols[i]
		*c = pglogrepl.TupleDataColumn{}
		ptrs[i] = c
		c.DataType = p.byte()
		switch c.DataType {
		case pglogrepl.TupleDataTypeNull, pglogrepl.TupleDataTypeToast:
		case pglogrepl.TupleDataTypeText, pglogrepl.TupleDataTypeBinary:
			l := int(int32(p.uint32()))
			if l < 0 || !p.need(l) {
				p.fail("bad column length")
				return nil
			}
			c.Length = uint32(l)
			c.Data = p.data[p.off : p.off+l : p.off+l]
			p.off += l
		default:
			p.fail(fmt.Sprintf("unknown column value kind %q", c.DataType))
			return nil
		}
	}
	return t
}
