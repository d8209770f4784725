package postgres

import (
	"encoding/binary"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgtype"
)

// textArray is a text[] statement argument (columnArrays). pgx's generic
// array encoding boxes every element into an interface and looks its plan
// up again; textArrayCodec writes it directly, in the same binary form.
// It is an ArrayGetter too, so that a connection without textArrayCodec
// encodes it as pgx does any array.
type textArray []pgtype.Text

func (a textArray) Dimensions() []pgtype.ArrayDimension {
	if a == nil {
		return nil
	}
	return []pgtype.ArrayDimension{{Length: int32(len(a)), LowerBound: 1}}
}

func (a textArray) Index(i int) any { return a[i] }

func (a textArray) IndexType() any { return pgtype.Text{} }

// textArrayCodec is text[]'s codec on the applier's connections: the
// binary encoding of textArray values is its own; everything else (other
// values, text format, decoding) is pgx's codec's.
type textArrayCodec struct{ pgtype.Codec }

func (c textArrayCodec) PlanEncode(m *pgtype.Map, oid uint32, format int16, value any) pgtype.EncodePlan {
	if _, ok := value.(textArray); ok && format == pgtype.BinaryFormatCode {
		return encodeTextArray{}
	}
	return c.Codec.PlanEncode(m, oid, format, value)
}

// useTextArrayCodec puts textArrayCodec in conn's type map.
func useTextArrayCodec(conn *pgx.Conn) {
	m := conn.TypeMap()
	if t, ok := m.TypeForOID(pgtype.TextArrayOID); ok {
		if _, done := t.Codec.(textArrayCodec); !done {
			m.RegisterType(&pgtype.Type{Name: t.Name, OID: t.OID, Codec: textArrayCodec{t.Codec}})
		}
	}
}

type encodeTextArray struct{}

// Encode writes array_send's form: dimensions, a has-NULL flag, the
// element type, each dimension's length and lower bound, then each element
// as its length (-1 for NULL) and bytes.
func (encodeTextArray) Encode(value any, buf []byte) ([]byte, error) {
	a := value.(textArray)
	if a == nil {
		return nil, nil // NULL
	}
	var hasNull uint32
	size := 20
	for _, t := range a {
		size += 4 + len(t.String)
		if !t.Valid {
			hasNull = 1
		}
	}
	buf = growBuf(buf, size)
	buf = binary.BigEndian.AppendUint32(buf, 1)
	buf = binary.BigEndian.AppendUint32(buf, hasNull)
	buf = binary.BigEndian.AppendUint32(buf, pgtype.TextOID)
	buf = binary.BigEndian.AppendUint32(buf, uint32(len(a)))
	buf = binary.BigEndian.AppendUint32(buf, 1)
	for _, t := range a {
		if !t.Valid {
			buf = binary.BigEndian.AppendUint32(buf, 0xffffffff)
			continue
		}
		buf = binary.BigEndian.AppendUint32(buf, uint32(len(t.String)))
		buf = append(buf, t.String...)
	}
	return buf, nil
}

// growBuf returns buf with room for n more bytes.
func growBuf(buf []byte, n int) []byte {
	if cap(buf)-len(buf) >= n {
		return buf
	}
	out := make([]byte, len(buf), len(buf)+n)
	copy(out, buf)
	return out
}
