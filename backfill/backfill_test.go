package backfill

import (
	"database/sql"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/regiond/regiond/snapshot"
	"github.com/regiond/regiond/source"
)

func TestKeyRoundTrip(t *testing.T) {
	for _, k := range []snapshot.Key{
		{int64(-5)}, {uint64(18446744073709551615)}, {true}, {float32(0.1)}, {0.1},
		{"ä\"b", []byte{0, 0xff}}, {source.Decimal("-1.50")}, {source.Date("2024-02-29")},
		{source.DateTime("2024-02-29 01:02:03.5")}, {source.Timestamp("2024-01-01 00:00:00")},
		{source.Time("-838:59:59")}, {source.JSON(`{"a":1}`)}, {source.Bits("0101")},
		{int64(1), "x", source.Date("2020-01-01")},
	} {
		enc, err := encodeKey(k)
		if err != nil {
			t.Fatalf("%v: %v", k, err)
		}
		got, err := decodeKey(sql.NullString{String: enc.(string), Valid: true})
		if err != nil {
			t.Fatalf("%v: %v", k, err)
		}
		if diff := cmp.Diff(k, got); diff != "" {
			t.Errorf("key %v read back differently (-want +got):\n%s", k, diff)
		}
	}
	if enc, err := encodeKey(nil); enc != nil || err != nil {
		t.Errorf("open bound: %v, %v; want NULL", enc, err)
	}
	if k, err := decodeKey(sql.NullString{}); k != nil || err != nil {
		t.Errorf("NULL: %v, %v; want an open bound", k, err)
	}
}

func TestTypesMap(t *testing.T) {
	for _, c := range []struct {
		from, to string
		want     bool
	}{
		{"int(11)", "integer", true},
		{"bigint(20) unsigned", "numeric(20,0)", true},
		{"tinyint(1)", "boolean", true},
		{"boolean", "tinyint(1)", true},
		{"decimal(10,2)", "numeric(10,2)", true},
		{"varchar(20)", "character varying(20)", true},
		{"datetime(6)", "timestamp(6) without time zone", true},
		{"timestamp(6)", "timestamp(6) with time zone", true},
		{"time(3)", "time(3) without time zone", true},
		{"blob", "bytea", true},
		{"longtext", "jsonb", true},
		{"json", "text", true},
		{"bit(5)", "bit(5)", true},
		{"uuid", "char(36)", true},
		{"interval", "varchar(40)", true},
		{"datetime(6)", "int(11)", false},
		{"varchar(10)", "integer", false},
		{"blob", "date", false},
		{"int(11)", "bytea", false},
		{"varchar(40)", "interval", true}, // text form
	} {
		if got := maps(c.from, c.to); got != c.want {
			t.Errorf("maps(%q, %q) = %v, want %v", c.from, c.to, got, c.want)
		}
	}
}
