package backfill

import (
	"database/sql"
	"testing"
)

func TestOpenBoundIsNull(t *testing.T) {
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
