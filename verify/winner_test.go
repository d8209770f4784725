package verify

import (
	"testing"

	"github.com/regiond/regiond/config"
	"github.com/regiond/regiond/snapshot"
	"github.com/regiond/regiond/source"
)

// TestWinner: the row each rule picks for a difference.
func TestWinner(t *testing.T) {
	def := &source.Table{Name: "t", Columns: []source.Column{{Name: "id"}, {Name: "home"}, {Name: "v"}, {Name: "note"}}, PK: []int{0}}
	st := &snapshot.Table{Def: def, Types: []string{"bigint", "varchar(8)", "bigint", "text"}}
	v := &verifier{regions: []*region{{name: "a"}, {name: "b"}, {name: "c"}}}
	tb := &table{per: []*snapshot.Table{st, st, st}, cols: [][]int{{0, 1, 2, 3}, {0, 1, 2, 3}, {0, 1, 2, 3}},
		padded: make([]bool, 4), json: make([]bool, 4)}
	row := func(home string, ver int64, note string) source.Row { return source.Row{int64(1), home, ver, note} }
	for _, c := range []struct {
		name   string
		rule   string
		images map[string]source.Row
		src    int
		want   int // region index, -1: none
	}{
		{"lww highest version", config.RuleLastWriterWins, map[string]source.Row{"a": row("a", 3, "x"), "b": row("a", 5, "y"), "c": row("a", 4, "z")}, -1, 1},
		{"lww row beats absence", config.RuleLastWriterWins, map[string]source.Row{"a": nil, "b": nil, "c": row("a", 1, "z")}, -1, 2},
		{"home region's row", config.RuleHomeRegion, map[string]source.Row{"a": row("b", 1, "x"), "b": row("b", 1, "y"), "c": nil}, -1, 1},
		{"home region without the row", config.RuleHomeRegion, map[string]source.Row{"a": row("b", 1, "x"), "b": nil, "c": row("b", 1, "x")}, -1, 1},
		{"row re-homed in its home", config.RuleHomeRegion, map[string]source.Row{"a": row("a", 1, "x"), "b": row("b", 1, "x"), "c": row("a", 1, "x")}, -1, -1},
		{"home not compared", config.RuleHomeRegion, map[string]source.Row{"a": row("z", 1, "x"), "b": nil, "c": nil}, -1, -1},
		{"apply_remote source", config.RuleApplyRemote, map[string]source.Row{"a": row("a", 1, "x"), "b": nil, "c": nil}, 2, 2},
	} {
		tb.Rule, tb.VersionColumn, tb.HomeColumn = c.rule, "v", "home"
		got, why := v.winner(tb, &Difference{images: c.images}, c.src)
		if got != c.want {
			t.Errorf("%s: winner %d (%s), want %d", c.name, got, why, c.want)
		}
	}
	// An LWW tie is decided by the row hash, whatever the regions' order.
	tb.Rule = config.RuleLastWriterWins
	x, y := row("a", 7, "x"), row("a", 7, "y")
	w1, _ := v.winner(tb, &Difference{images: map[string]source.Row{"a": x, "b": y, "c": nil}}, -1)
	w2, _ := v.winner(tb, &Difference{images: map[string]source.Row{"a": y, "b": x, "c": nil}}, -1)
	if w1 == w2 {
		t.Errorf("tie: winner region %d both times, want the same row (so the other region)", w1)
	}
}
