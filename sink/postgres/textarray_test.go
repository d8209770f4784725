package postgres

import (
	"bytes"
	"fmt"
	"testing"

	"github.com/jackc/pgx/v5/pgtype"
)

// TestTextArrayEncoding: textArrayCodec writes the bytes pgx's own array
// encoding writes, with and without NULLs, empty and nil.
func TestTextArrayEncoding(t *testing.T) {
	plain := pgtype.NewMap()
	ours := pgtype.NewMap()
	tt, _ := ours.TypeForOID(pgtype.TextArrayOID)
	ours.RegisterType(&pgtype.Type{Name: tt.Name, OID: tt.OID, Codec: textArrayCodec{tt.Codec}})
	for _, a := range []textArray{
		nil,
		{},
		{text("a")},
		{text("a"), {}, text(""), text("héllo\x01")},
		{{}, {}},
	} {
		want, err := plain.Encode(pgtype.TextArrayOID, pgtype.BinaryFormatCode, pgtype.FlatArray[pgtype.Text](a), nil)
		if err != nil {
			t.Fatal(err)
		}
		got, err := ours.Encode(pgtype.TextArrayOID, pgtype.BinaryFormatCode, a, []byte("prefix"))
		if err != nil {
			t.Fatal(err)
		}
		if a == nil {
			if got != nil {
				t.Errorf("nil: got %x, want NULL", got)
			}
			continue
		}
		if !bytes.Equal(got, append([]byte("prefix"), want...)) {
			t.Errorf("%v: got %x, want prefix + %x", a, got, want)
		}
		// Without the codec, the generic encoding of the same value.
		generic, err := plain.Encode(pgtype.TextArrayOID, pgtype.BinaryFormatCode, a, nil)
		if err != nil || !bytes.Equal(generic, want) {
			t.Errorf("%v without the codec: %x, %v; want %x", a, generic, err, want)
		}
	}
}

func BenchmarkTextArrays(b *testing.B) {
	a := make(textArray, 4096)
	for i := range a {
		a[i] = text(fmt.Sprint("value number ", i))
	}
	for _, name := range []string{"pgx", "textArrayCodec"} {
		m := pgtype.NewMap()
		var v any = pgtype.FlatArray[pgtype.Text](a)
		if name == "textArrayCodec" {
			tt, _ := m.TypeForOID(pgtype.TextArrayOID)
			m.RegisterType(&pgtype.Type{Name: tt.Name, OID: tt.OID, Codec: textArrayCodec{tt.Codec}})
			v = a
		}
		b.Run(name, func(b *testing.B) {
			b.ReportAllocs()
			var buf []byte
			for range b.N {
				var err error
				if buf, err = m.Encode(pgtype.TextArrayOID, pgtype.BinaryFormatCode, v, buf[:0]); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
