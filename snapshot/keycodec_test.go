package snapshot

import (
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/regiond/regiond/source"
)

func TestKeyRoundTrip(t *testing.T) {
	for _, k := range []Key{
		{int64(-5)}, {uint64(18446744073709551615)}, {true}, {float32(0.1)}, {0.1},
		{"ä\"b", []byte{0, 0xff}}, {source.Decimal("-1.50")}, {source.Date("2024-02-29")},
		{source.DateTime("2024-02-29 01:02:03.5")}, {source.Timestamp("2024-01-01 00:00:00")},
		{source.Time("-838:59:59")}, {source.JSON(`{"a":1}`)}, {source.Bits("0101")},
		{int64(1), "x", source.Date("2020-01-01")},
	} {
		enc, err := EncodeKey(k)
		if err != nil {
			t.Fatalf("%v: %v", k, err)
		}
		got, err := DecodeKey(enc)
		if err != nil {
			t.Fatalf("%v: %v", k, err)
		}
		if diff := cmp.Diff(k, got); diff != "" {
			t.Errorf("key %v read back differently (-want +got):\n%s", k, diff)
		}
	}
}
