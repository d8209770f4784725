package batch

import (
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/regiond/regiond/source"
)

func TestSegments(t *testing.T) {
	a := &source.Table{Name: "a", Columns: []source.Column{{Name: "id"}, {Name: "v"}, {Name: "big"}}, PK: []int{0}}
	b := &source.Table{Name: "b", Columns: []source.Column{{Name: "k"}, {Name: "v"}}, PK: []int{0}}
	row := func(vals ...any) source.Row { return source.Row(vals) }
	changes := []source.Change{
		{Table: a, Op: source.Insert, After: row(int64(1), "x", "big1")},
		{Table: a, Op: source.Update, Before: row(int64(1), "x", "big1"), After: row(int64(1), "y", source.Unchanged)},
		{Table: a, Op: source.Insert, After: row(int64(2), "z", source.Unchanged)},
		{Table: b, Op: source.Insert, After: row([]byte{0, 1}, "b")},
		{Table: b, Op: source.Update, Before: row([]byte{0, 1}, "b"), After: row([]byte{0, 2}, "c")}, // key change
		{Table: b, Op: source.Delete, Before: row([]byte{0, 3}, "d")},
		{Table: a, Op: source.Delete, Before: row(int64(2), nil, nil)},
		{Table: a, Op: source.Delete, Before: row(int64(2), nil, nil)},
	}
	type seg struct {
		Table  string
		Delete bool
		Rows   []source.Row
	}
	var got []seg
	for _, s := range Segments(changes) {
		got = append(got, seg{s.Table.Name, s.Delete, s.Rows})
	}
	want := []seg{
		// Row 1's unchanged value comes from its earlier image; row 2 has
		// none in the batch and keeps Unchanged.
		{"a", false, []source.Row{row(int64(1), "y", "big1"), row(int64(2), "z", source.Unchanged)}},
		{"b", false, []source.Row{row([]byte{0, 1}, "b")}},
		{"b", true, []source.Row{row([]byte{0, 1}, "b")}},
		{"b", false, []source.Row{row([]byte{0, 2}, "c")}},
		{"b", true, []source.Row{row([]byte{0, 3}, "d")}},
		{"a", true, []source.Row{row(int64(2), nil, nil)}},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("segments (-want +got):\n%s", diff)
	}
	// The source's row was not modified by the merge.
	if changes[1].After[2] != source.Unchanged {
		t.Errorf("Segments modified a source row: %v", changes[1].After)
	}
}

func TestAppendKeyDistinguishesTypes(t *testing.T) {
	tb := &source.Table{Columns: []source.Column{{Name: "k"}, {Name: "l"}}, PK: []int{0, 1}}
	keys := []source.Row{
		{int64(1), "2"}, {uint64(1), "2"}, {"1", "2"}, {[]byte("1"), "2"}, {source.Decimal("1"), "2"},
		{"1\x002", ""}, {"1", "\x002"}, {nil, "2"}, {true, "2"}, {source.Date("2024-01-01"), "2"}, {"2024-01-01", "2"},
	}
	seen := map[string]source.Row{}
	for _, k := range keys {
		s := string(AppendKey(nil, tb, k))
		if prev, ok := seen[s]; ok {
			t.Errorf("keys %v and %v encode the same", prev, k)
		}
		seen[s] = k
	}
	if a, b := AppendKey(nil, tb, source.Row{int64(7), "x"}), AppendKey(nil, tb, source.Row{int64(7), "x"}); string(a) != string(b) {
		t.Errorf("equal keys encode differently")
	}
}
