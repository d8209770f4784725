package postgres

import (
	"encoding/binary"
	"reflect"
	"testing"

	"github.com/jackc/pglogrepl"
)

// tupleBytes is a pgoutput TupleData of values (nil: NULL, "\x00toast":
// unchanged TOASTed value).
func tupleBytes(values ...any) []byte {
	b := binary.BigEndian.AppendUint16(nil, uint16(len(values)))
	for _, v := range values {
		switch v := v.(type) {
		case nil:
			b = append(b, 'n')
		case string:
			if v == "\x00toast" {
				b = append(b, 'u')
				continue
			}
			b = append(b, 't')
			b = binary.BigEndian.AppendUint32(b, uint32(len(v)))
			b = append(b, v...)
		}
	}
	return b
}

// TestParseRowMessage: the row messages parse to what pglogrepl.ParseV2
// makes of them, and a truncated message is an error, not a panic.
func TestParseRowMessage(t *testing.T) {
	rel := binary.BigEndian.AppendUint32(nil, 16385)
	tup := tupleBytes("42", nil, "\x00toast", "", "héllo")
	key := tupleBytes("41", nil, nil, nil, nil)
	cat := func(parts ...[]byte) []byte {
		var b []byte
		for _, p := range parts {
			b = append(b, p...)
		}
		return b
	}
	msgs := [][]byte{
		cat([]byte("I"), rel, []byte("N"), tup),
		cat([]byte("U"), rel, []byte("N"), tup),
		cat([]byte("U"), rel, []byte("K"), key, []byte("N"), tup),
		cat([]byte("U"), rel, []byte("O"), tup, []byte("N"), tup),
		cat([]byte("D"), rel, []byte("K"), key),
		cat([]byte("D"), rel, []byte("O"), tup),
	}
	for _, m := range msgs {
		want, err := pglogrepl.ParseV2(m, false)
		if err != nil {
			t.Fatal(err)
		}
		got, err := parseRowMessage(m)
		if err != nil {
			t.Fatalf("%q: %v", m, err)
		}
		var w, g []*pglogrepl.TupleData
		switch x := want.(type) {
		case *pglogrepl.InsertMessageV2:
			y := got.(*pglogrepl.InsertMessage)
			if x.RelationID != y.RelationID {
				t.Errorf("%q: relation %d, want %d", m, y.RelationID, x.RelationID)
			}
			w, g = []*pglogrepl.TupleData{x.Tuple}, []*pglogrepl.TupleData{y.Tuple}
		case *pglogrepl.UpdateMessageV2:
			y := got.(*pglogrepl.UpdateMessage)
			if x.RelationID != y.RelationID || x.OldTupleType != y.OldTupleType {
				t.Errorf("%q: relation %d old %q, want %d %q", m, y.RelationID, y.OldTupleType, x.RelationID, x.OldTupleType)
			}
			w, g = []*pglogrepl.TupleData{x.OldTuple, x.NewTuple}, []*pglogrepl.TupleData{y.OldTuple, y.NewTuple}
		case *pglogrepl.DeleteMessageV2:
			y := got.(*pglogrepl.DeleteMessage)
			if x.RelationID != y.RelationID || x.OldTupleType != y.OldTupleType {
				t.Errorf("%q: relation %d old %q, want %d %q", m, y.RelationID, y.OldTupleType, x.RelationID, x.OldTupleType)
			}
			w, g = []*pglogrepl.TupleData{x.OldTuple}, []*pglogrepl.TupleData{y.OldTuple}
		default:
			t.Fatalf("%q: ParseV2 gave %T", m, want)
		}
		for i := range w {
			if (w[i] == nil) != (g[i] == nil) || w[i] != nil && !reflect.DeepEqual(*w[i], *g[i]) {
				t.Errorf("%q: tuple %d = %+v, want %+v", m, i, g[i], w[i])
			}
		}
		for n := 1; n < len(m); n++ {
			if _, err := parseRowMessage(m[:n]); err == nil {
				t.Errorf("%q cut to %d bytes: no error", m, n)
			}
		}
	}
}

// BenchmarkParseRow compares parseRowMessage with pglogrepl.ParseV2 on an
// insert of the bench command's row shape (6 columns):
//
//	go test ./source/postgres -run '^$' -bench ParseRow -benchmem
func BenchmarkParseRow(b *testing.B) {
	m := append([]byte("I"), binary.BigEndian.AppendUint32(nil, 16385)...)
	m = append(m, 'N')
	m = append(m, tupleBytes("123456", "4242", "some text of the c column, some text of the c column, some more",
		"pad pad pad pad pad pad pad pad pad pad pad pad pad pad pad", nil, "2026-11-27 14:00:00.123456")...)
	b.Run("pglogrepl.ParseV2", func(b *testing.B) {
		b.ReportAllocs()
		for range b.N {
			if _, err := pglogrepl.ParseV2(m, false); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("parseRowMessage", func(b *testing.B) {
		b.ReportAllocs()
		for range b.N {
			if _, err := parseRowMessage(m); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("rowScratch.parse", func(b *testing.B) {
		// As the stream parses: one scratch for every message.
		var s rowScratch
		b.ReportAllocs()
		for range b.N {
			if _, err := s.parse(m); err != nil {
				b.Fatal(err)
			}
		}
	})
}
