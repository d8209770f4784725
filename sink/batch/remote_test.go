package batch

import (
	"bytes"
	"math"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/regiond/regiond/conflict"
	"github.com/regiond/regiond/source"
)

func TestDecideRemote(t *testing.T) {
	tb := &source.Table{Name: "a", Columns: []source.Column{{Name: "id"}, {Name: "v"}, {Name: "bin"}, {Name: "at"}}, PK: []int{0}}
	keyOnly := &source.Table{Name: "k", Columns: tb.Columns, PK: tb.PK, KeyOnlyBefore: true}
	rules := &Rules{Pipeline: "east->west", Origin: "east", Target: "west"}
	row := func(vals ...any) source.Row { return source.Row(vals) }
	// The target pads bin (column 2) with zero bytes, as BINARY(n) does.
	norm := func(i int, v any) any {
		if b, ok := v.([]byte); ok && i == 2 {
			return bytes.TrimRight(b, "\x00")
		}
		return v
	}
	r1 := row(int64(1), "x", []byte("ab"), source.DateTime("2024-01-02 03:04:05"))
	tests := []struct {
		name   string
		t      *source.Table
		c      source.Change
		cur    source.Row
		want   bool
		column string // named in the reason
	}{
		{"insert into nothing", tb, source.Change{Op: source.Insert, After: r1}, nil, false, ""},
		{"insert over the same row", tb, source.Change{Op: source.Insert, After: r1}, r1, false, ""},
		{"insert over another row", tb, source.Change{Op: source.Insert, After: r1}, row(int64(1), "y", []byte("ab"), source.DateTime("2024-01-02 03:04:05")), true, "v"},
		{"update of the same row", tb, source.Change{Op: source.Update, Before: r1, After: row(int64(1), "z", []byte("ab"), nil)}, r1, false, ""},
		{"update, padded binary and longer fraction compare equal", tb, source.Change{Op: source.Update, Before: r1, After: r1},
			row(int64(1), "x", []byte("ab\x00\x00"), source.DateTime("2024-01-02 03:04:05.000000")), false, ""},
		{"update of a changed row", tb, source.Change{Op: source.Update, Before: r1, After: r1}, row(int64(1), "x", []byte("ac"), source.DateTime("2024-01-02 03:04:05")), true, "bin"},
		{"update of a missing row", tb, source.Change{Op: source.Update, Before: r1, After: r1}, nil, true, ""},
		{"update: NULL differs from a value", tb, source.Change{Op: source.Update, Before: r1, After: r1}, row(int64(1), "x", []byte("ab"), nil), true, "at"},
		{"update: an unchanged value is not compared", tb, source.Change{Op: source.Update, Before: row(int64(1), source.Unchanged, []byte("ab"), source.DateTime("2024-01-02 03:04:05")), After: r1}, r1, false, ""},
		{"update: MariaDB JSON text equals the same document from jsonb", tb, source.Change{Op: source.Update, Before: row(int64(1), `{"k": 29, "s": "x"}`, []byte("ab"), nil), After: r1},
			row(int64(1), source.JSON(`{"s":"x","k":29}`), []byte("ab"), nil), false, ""},
		{"update: MariaDB JSON text differs from another document", tb, source.Change{Op: source.Update, Before: row(int64(1), `{"k": 29}`, []byte("ab"), nil), After: r1},
			row(int64(1), source.JSON(`{"k": 30}`), []byte("ab"), nil), true, "v"},
		{"update: a NaN equals a NaN, -0 differs from 0 (as their text does)", tb,
			source.Change{Op: source.Update, Before: row(int64(1), math.NaN(), []byte("ab"), 0.0), After: r1},
			row(int64(1), math.NaN(), []byte("ab"), math.Copysign(0, -1)), true, "at"},
		{"delete of the same row", tb, source.Change{Op: source.Delete, Before: r1}, r1, false, ""},
		{"delete of a missing row", tb, source.Change{Op: source.Delete, Before: r1}, nil, true, ""},
		{"delete of a changed row", tb, source.Change{Op: source.Delete, Before: r1}, row(int64(1), "q", []byte("ab"), source.DateTime("2024-01-02 03:04:05")), true, "v"},
		{"key-only before image: other values are not known", keyOnly, source.Change{Op: source.Delete, Before: row(int64(1), nil, nil, nil)}, r1, false, ""},
		{"key-only before image: a missing row is known", keyOnly, source.Change{Op: source.Update, Before: row(int64(1), nil, nil, nil), After: r1}, nil, true, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.c.Table, tt.c.TxnID = tt.t, "0-1-7"
			got, ok := DecideRemote(rules, tt.t, tt.c, tt.cur, norm)
			if ok != tt.want {
				t.Fatalf("conflict = %v, want %v (reason %q)", ok, tt.want, got.Reason)
			}
			if !ok {
				return
			}
			if got.Rule != "apply_remote" || got.Winner != "east" || got.Loser != "west" || got.Position != "0-1-7" || got.Pipeline != "east->west" {
				t.Errorf("record %+v: want rule apply_remote, winner east, loser west, position 0-1-7", got)
			}
			if d := cmp.Diff(tt.cur, got.Lost, cmpopts.EquateNaNs()); d != "" {
				t.Errorf("lost image (the target's row) differs (-want +got):\n%s", d)
			}
			if d := cmp.Diff(tt.c.After, got.Kept); d != "" {
				t.Errorf("kept image (the incoming row) differs (-want +got):\n%s", d)
			}
			if tt.column != "" && !bytes.Contains([]byte(got.Reason), []byte("column "+tt.column)) {
				t.Errorf("reason %q does not name column %s", got.Reason, tt.column)
			}
		})
	}
}

func TestRemoteChecksFirstChangePerKey(t *testing.T) {
	a := &source.Table{Name: "a", Columns: []source.Column{{Name: "id"}, {Name: "v"}}, PK: []int{0}}
	l := &source.Table{Name: "l", Columns: []source.Column{{Name: "id"}, {Name: "v"}}, PK: []int{0}}
	rules := &Rules{Tables: map[string]Rule{"l": {Name: "last_writer_wins", VersionColumn: "v"}}, Origin: "east", Target: "west"}
	row := func(vals ...any) source.Row { return source.Row(vals) }
	changes := []source.Change{
		{Table: a, Op: source.Insert, After: row(int64(1), "x")},
		{Table: a, Op: source.Update, Before: row(int64(1), "x"), After: row(int64(1), "y")},
		{Table: l, Op: source.Insert, After: row(int64(1), int64(5))},
		{Table: a, Op: source.Delete, Before: row(int64(2), "z")},
		{Table: a, Op: source.Insert, After: row(int64(2), "w")},
	}
	tables, checks := remoteChecks(rules, changes)
	if len(tables) != 1 || tables[0] != a {
		t.Fatalf("tables %v, want only the apply_remote table a", tables)
	}
	var got []string
	for _, c := range checks[a] {
		got = append(got, c.change.Op.String()+" "+source.KeyJSON(a, c.key))
	}
	want := []string{"insert [1]", "delete [2]"}
	if d := cmp.Diff(want, got); d != "" {
		t.Errorf("checked changes (-want +got):\n%s", d)
	}
	if tables, _ := remoteChecks(&Rules{Local: true}, changes); tables != nil {
		t.Errorf("a local pipeline checks %v, want nothing", tables)
	}
}

// TestSameKindTextKinds checks sameKind's shortcut for equal values of the
// text kinds against conflict.Normalize, which decides every other pair.
func TestSameKindTextKinds(t *testing.T) {
	vals := []any{source.DateTime("2024-01-02 03:04:05"), source.DateTime("2024-01-02 03:04:05.000000"),
		source.Timestamp("2024-01-02 03:04:05.5"), source.Decimal("1.50"), source.Decimal("1.5"), source.Date("2024-01-02"),
		source.Time("01:02:03"), source.JSON(`{"b":1,"a":2}`), source.JSON(`{"a":2,"b":1}`), source.Bits("\x01"),
		"2024-01-02 03:04:05", []byte("x"), int64(1), nil}
	for _, a := range vals {
		for _, b := range vals {
			same, ok := sameKind(a, b)
			if !ok {
				continue
			}
			as, aok := conflict.Normalize(a)
			bs, bok := conflict.Normalize(b)
			if want := aok == bok && as == bs; same != want {
				t.Errorf("sameKind(%#v, %#v) = %v, Normalize says %v", a, b, same, want)
			}
		}
	}
}
