package postgres

import (
	"math"
	"testing"

	"github.com/jackc/pgx/v5/pgtype"

	"github.com/regiond/regiond/source"
)

func TestEncode(t *testing.T) {
	text := &column{kind: kindText}
	for _, tc := range []struct {
		v    any
		c    *column
		want pgtype.Text
	}{
		{nil, text, pgtype.Text{}},
		{int64(-5), &column{kind: kindNumber}, pgtype.Text{String: "-5", Valid: true}},
		{uint64(math.MaxUint64), &column{kind: kindNumber}, pgtype.Text{String: "18446744073709551615", Valid: true}},
		{true, &column{kind: kindBool}, pgtype.Text{String: "true", Valid: true}},
		{false, &column{kind: kindNumber}, pgtype.Text{String: "0", Valid: true}},
		{int64(1), &column{kind: kindBool}, pgtype.Text{String: "1", Valid: true}}, // TINYINT(1) into boolean
		{math.Inf(-1), &column{kind: kindNumber}, pgtype.Text{String: "-Infinity", Valid: true}},
		{math.NaN(), &column{kind: kindNumber}, pgtype.Text{String: "NaN", Valid: true}},
		{float32(0.1), &column{kind: kindNumber}, pgtype.Text{String: "0.1", Valid: true}},
		{[]byte{0, 0xab}, &column{kind: kindBytea}, pgtype.Text{String: `\x00ab`, Valid: true}},
		{[]byte{}, &column{kind: kindBytea}, pgtype.Text{String: `\x`, Valid: true}},
		{"a\\b", &column{kind: kindBytea}, pgtype.Text{String: `\x615c62`, Valid: true}},
		{[]byte("plain"), text, pgtype.Text{String: "plain", Valid: true}},
		{source.Timestamp("2024-01-02 03:04:05.5"), &column{kind: kindTimestamptz}, pgtype.Text{String: "2024-01-02 03:04:05.5+00", Valid: true}},
		{source.Timestamp("2024-01-02 03:04:05"), text, pgtype.Text{String: "2024-01-02 03:04:05", Valid: true}},
		{source.DateTime("2024-01-02 03:04:05"), &column{kind: kindTimestamptz}, pgtype.Text{String: "2024-01-02 03:04:05", Valid: true}},
		{source.Bits("101"), &column{kind: kindBit, width: 8}, pgtype.Text{String: "00000101", Valid: true}},
		{source.Bits("00000101"), &column{kind: kindBit, width: 3}, pgtype.Text{String: "101", Valid: true}},
		{source.Bits("10000101"), &column{kind: kindBit, width: 3}, pgtype.Text{String: "10000101", Valid: true}}, // too wide: the server says so
		{source.Bits("0101"), &column{kind: kindVarbit}, pgtype.Text{String: "0101", Valid: true}},
		{source.Bits("0101"), &column{kind: kindNumber}, pgtype.Text{String: "5", Valid: true}},
		{int64(5), &column{kind: kindBit, width: 4}, pgtype.Text{String: "0101", Valid: true}},
		{uint64(5), &column{kind: kindVarbit}, pgtype.Text{String: "101", Valid: true}},
		{source.Decimal("-1.50"), text, pgtype.Text{String: "-1.50", Valid: true}},
		{source.JSON(`{"a":1}`), text, pgtype.Text{String: `{"a":1}`, Valid: true}},
	} {
		if got := encode(tc.v, tc.c); got != tc.want {
			t.Errorf("encode(%#v, kind %d) = %+v, want %+v", tc.v, tc.c.kind, got, tc.want)
		}
	}
}
