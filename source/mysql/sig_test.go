package mysql

import (
	"testing"

	"github.com/go-mysql-org/go-mysql/replication"
)

// TestTableSigSeesEveryDecodingInput: a table map that differs from another
// in anything decoding uses must get a different signature, or a cached
// tableDef (and its fast decoding plan) would decode with stale metadata.
func TestTableSigSeesEveryDecodingInput(t *testing.T) {
	base := func() *replication.TableMapEvent {
		return &replication.TableMapEvent{
			Schema: []byte("app"), Table: []byte("t"), ColumnCount: 3,
			ColumnType: []byte{3, 15, 254}, ColumnMeta: []uint16{0, 200, 0xfe04},
			NullBitmap: []byte{6}, SignednessBitmap: []byte{0},
			DefaultCharset: []uint64{45}, ColumnCharset: []uint64{45, 63},
			SetStrValue: [][][]byte{{[]byte("x")}}, EnumStrValue: [][][]byte{{[]byte("a")}},
			ColumnName: [][]byte{[]byte("id"), []byte("v"), []byte("c")},
			PrimaryKey: []uint64{0}, PrimaryKeyPrefix: []uint64{0},
			EnumSetDefaultCharset: []uint64{45}, EnumSetColumnCharset: []uint64{45},
			VisibilityBitmap: []byte{7}, GeometryType: []uint64{1},
		}
	}
	want := string(appendTableSig(nil, base()))
	for name, change := range map[string]func(*replication.TableMapEvent){
		"schema":       func(e *replication.TableMapEvent) { e.Schema = []byte("app2") },
		"table":        func(e *replication.TableMapEvent) { e.Table = []byte("t2") },
		"type":         func(e *replication.TableMapEvent) { e.ColumnType[1] = 252 },
		"meta":         func(e *replication.TableMapEvent) { e.ColumnMeta[1] = 1200 },
		"nullable":     func(e *replication.TableMapEvent) { e.NullBitmap[0] = 2 },
		"signedness":   func(e *replication.TableMapEvent) { e.SignednessBitmap[0] = 0x80 },
		"charset":      func(e *replication.TableMapEvent) { e.DefaultCharset[0] = 8 },
		"col charset":  func(e *replication.TableMapEvent) { e.ColumnCharset[1] = 8 },
		"set values":   func(e *replication.TableMapEvent) { e.SetStrValue[0] = append(e.SetStrValue[0], []byte("y")) },
		"enum values":  func(e *replication.TableMapEvent) { e.EnumStrValue[0][0] = []byte("b") },
		"names":        func(e *replication.TableMapEvent) { e.ColumnName[2] = []byte("d") },
		"name split":   func(e *replication.TableMapEvent) { e.ColumnName[1], e.ColumnName[2] = []byte("vc"), []byte("") },
		"pk":           func(e *replication.TableMapEvent) { e.PrimaryKey = []uint64{1} },
		"pk prefix":    func(e *replication.TableMapEvent) { e.PrimaryKeyPrefix = []uint64{4} },
		"enum charset": func(e *replication.TableMapEvent) { e.EnumSetColumnCharset[0] = 8 },
		"visibility":   func(e *replication.TableMapEvent) { e.VisibilityBitmap[0] = 5 },
		"geometry":     func(e *replication.TableMapEvent) { e.GeometryType[0] = 2 },
	} {
		e := base()
		change(e)
		if string(appendTableSig(nil, e)) == want {
			t.Errorf("%s: signature unchanged", name)
		}
	}
}
