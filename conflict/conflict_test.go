package conflict

import (
	"math/rand/v2"
	"testing"

	"github.com/regiond/regiond/source"
)

func ver(t *testing.T, v any) Version {
	t.Helper()
	x, err := ParseVersion(v)
	if err != nil {
		t.Fatal(err)
	}
	return x
}

func TestParseVersion(t *testing.T) {
	for _, tc := range []struct {
		a, b any
		want int
	}{
		{int64(1), int64(2), -1},
		{int64(5), uint64(5), 0},
		{source.DateTime("2024-01-01 00:00:00"), source.DateTime("2024-01-01 00:00:00.000000"), 0},
		{source.DateTime("2024-01-01 00:00:00.1"), source.DateTime("2024-01-01 00:00:00.09"), 1},
		{source.Timestamp("2024-01-01 00:00:00.000001"), source.DateTime("2024-01-01 00:00:00"), 1},
		{source.DateTime("1999-12-31 23:59:59.999999"), source.Timestamp("2000-01-01 00:00:00"), -1},
		{source.Decimal("42"), int64(41), 1},
	} {
		if got := ver(t, tc.a).Compare(ver(t, tc.b)); got != tc.want {
			t.Errorf("Compare(%v, %v) = %d, want %d", tc.a, tc.b, got, tc.want)
		}
	}
	for _, bad := range []any{nil, "x", source.DateTime("2024-01-01"), source.DateTime("2024-01-01 00:00:00.1234567"), uint64(1 << 63), 1.5} {
		if _, err := ParseVersion(bad); err == nil {
			t.Errorf("ParseVersion(%#v): no error", bad)
		}
	}
}

var tbl = &source.Table{Name: "t", Columns: []source.Column{{Name: "id"}, {Name: "v"}, {Name: "flag"}, {Name: "amount"}, {Name: "at"}, {Name: "doc"}}, PK: []int{0}}

func TestRowHashAcrossEngines(t *testing.T) {
	mysqlRow := source.Row{int64(1), int64(7), int64(1), source.Decimal("10.50"), source.DateTime("2024-01-01 10:00:00.000000"), source.JSON(`{"b": 1, "a": [1, 2]}`)}
	pgRow := source.Row{int64(1), int64(7), true, source.Decimal("10.5"), source.Timestamp("2024-01-01 10:00:00"), source.JSON(`{"a":[1,2],"b":1}`)}
	if RowHash(tbl, mysqlRow) != RowHash(tbl, pgRow) {
		t.Fatal("the same row read from MySQL and PostgreSQL hashes differently")
	}
	other := append(source.Row(nil), pgRow...)
	other[3] = source.Decimal("10.51")
	if RowHash(tbl, other) == RowHash(tbl, pgRow) {
		t.Fatal("different rows hash the same")
	}
	// Column order does not matter.
	swapped := &source.Table{Name: "t", Columns: []source.Column{{Name: "v"}, {Name: "id"}, {Name: "flag"}, {Name: "amount"}, {Name: "at"}, {Name: "doc"}}, PK: []int{1}}
	r2 := source.Row{mysqlRow[1], mysqlRow[0], mysqlRow[2], mysqlRow[3], mysqlRow[4], mysqlRow[5]}
	if RowHash(swapped, r2) != RowHash(tbl, mysqlRow) {
		t.Fatal("column order changes the hash")
	}
	// NULL differs from empty.
	a := source.Row{int64(1), nil, nil, nil, nil, nil}
	b := source.Row{int64(1), int64(0), nil, nil, nil, nil}
	if RowHash(tbl, a) == RowHash(tbl, b) {
		t.Fatal("NULL hashes like 0")
	}
}

func TestLastWriterWinsTable(t *testing.T) {
	h := func(b byte) Hash { return Hash{b} }
	row := func(v int64, b byte) State { return State{Kind: Row, Version: Version{n: v}, Hash: h(b)} }
	tomb := func(v int64, b byte) State { return State{Kind: Tombstone, Version: Version{n: v}, Hash: h(b)} }
	for _, tc := range []struct {
		name    string
		cur, in State
		want    Outcome
	}{
		{"insert into nothing", State{}, row(1, 1), Apply},
		{"delete of nothing leaves a tombstone", State{}, tomb(1, 1), Apply},
		{"newer update", row(1, 1), row(2, 9), Apply},
		{"older update", row(2, 1), row(1, 9), Discard},
		{"replay", row(2, 1), row(2, 1), Same},
		{"tie, higher hash", row(2, 1), row(2, 2), Apply},
		{"tie, lower hash", row(2, 2), row(2, 1), Discard},
		{"delete of the row it saw", row(3, 5), tomb(3, 5), Apply},
		{"delete of an older version", row(4, 5), tomb(3, 5), Discard},
		{"late update cannot resurrect", tomb(3, 5), row(2, 9), Discard},
		{"replayed insert of deleted image", tomb(3, 5), row(3, 5), Discard},
		{"newer write beats tombstone", tomb(3, 5), row(4, 1), Apply},
		{"same-version update with higher hash beats delete", tomb(3, 5), row(3, 6), Apply},
		{"same-version update with lower hash loses to delete", tomb(3, 5), row(3, 4), Discard},
		{"newer delete replaces tombstone", tomb(3, 5), tomb(4, 1), Apply},
	} {
		if got := LastWriterWins(tc.cur, tc.in); got != tc.want {
			t.Errorf("%s: got %v, want %v", tc.name, got, tc.want)
		}
	}
}

// randomState returns states drawn from a small space so that ties of
// versions and hashes are frequent.
func randomState(r *rand.Rand) State {
	k := Row
	if r.IntN(3) == 0 {
		k = Tombstone
	}
	return State{Kind: k, Version: Version{n: int64(r.IntN(4))}, Hash: Hash{byte(r.IntN(3))}}
}

// TestLessIsStrictTotalOrder: irreflexive, asymmetric, transitive, total.
func TestLessIsStrictTotalOrder(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	states := []State{{}}
	for range 60 {
		states = append(states, randomState(r))
	}
	for _, a := range states {
		if a.Less(a) {
			t.Fatalf("%+v < itself", a)
		}
		for _, b := range states {
			if a.Less(b) && b.Less(a) {
				t.Fatalf("%+v and %+v each less than the other", a, b)
			}
			if !a.Equal(b) && !a.Less(b) && !b.Less(a) {
				t.Fatalf("%+v and %+v are unordered", a, b)
			}
			for _, c := range states {
				if a.Less(b) && b.Less(c) && !a.Less(c) {
					t.Fatalf("not transitive: %+v < %+v < %+v", a, b, c)
				}
			}
		}
	}
}

// TestLastWriterWinsConverges: the same set of changes applied in any order,
// any number of times, leaves the same final state: the maximum.
func TestLastWriterWinsConverges(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	for trial := range 2000 {
		n := 1 + r.IntN(8)
		changes := make([]State, n)
		for i := range changes {
			changes[i] = randomState(r)
		}
		var want State
		for _, c := range changes {
			if want.Less(c) {
				want = c
			}
		}
		for range 5 {
			seq := append([]State(nil), changes...)
			for range r.IntN(4) { // duplicates (replays)
				seq = append(seq, changes[r.IntN(n)])
			}
			r.Shuffle(len(seq), func(i, j int) { seq[i], seq[j] = seq[j], seq[i] })
			var cur State
			for _, c := range seq {
				if LastWriterWins(cur, c) == Apply {
					cur = c
				}
			}
			if !cur.Equal(want) {
				t.Fatalf("trial %d: order %v ends at %+v, want %+v", trial, seq, cur, want)
			}
		}
	}
}

func TestApplyRemote(t *testing.T) {
	a, b := Hash{1}, Hash{2}
	for _, tc := range []struct {
		cur, before *Hash
		conflict    bool
	}{
		{nil, nil, false}, {&a, &a, false}, {&a, &b, true}, {nil, &a, true}, {&a, nil, true},
	} {
		if o, c := ApplyRemote(tc.cur, tc.before); o != Apply || c != tc.conflict {
			t.Errorf("ApplyRemote(%v, %v) = %v, %v", tc.cur, tc.before, o, c)
		}
	}
	if !HomeAllows("east", "east") || HomeAllows("east", "west") {
		t.Error("HomeAllows")
	}
}

func FuzzVersionCompare(f *testing.F) {
	f.Add("2024-01-01 00:00:00.5", "2024-01-01 00:00:00.499999", int64(1), int64(2))
	f.Add("2024-01-01 00:00:00", "2024-01-01 00:00:00.000000", int64(-1), int64(-1))
	f.Fuzz(func(t *testing.T, s1, s2 string, n1, n2 int64) {
		vs := []any{source.DateTime(s1), source.Timestamp(s2), n1, n2}
		var parsed []Version
		for _, v := range vs {
			if p, err := ParseVersion(v); err == nil {
				parsed = append(parsed, p)
			}
		}
		for _, a := range parsed {
			if a.Compare(a) != 0 {
				t.Fatalf("%v != itself", a)
			}
			for _, b := range parsed {
				if a.Compare(b) != -b.Compare(a) {
					t.Fatalf("Compare(%v,%v) not antisymmetric", a, b)
				}
				for _, c := range parsed {
					if a.Compare(b) < 0 && b.Compare(c) < 0 && a.Compare(c) >= 0 {
						t.Fatalf("not transitive: %v %v %v", a, b, c)
					}
				}
			}
		}
		// Six digits of fraction or fewer compare like the instants they are.
		if p1, err := ParseVersion(source.DateTime(s1)); err == nil {
			p2, _ := ParseVersion(source.DateTime(p1.String()))
			if p1.Compare(p2) != 0 {
				t.Fatalf("%q and its normal form %q differ", s1, p1.String())
			}
		}
	})
}

func TestVersionEncode(t *testing.T) {
	for _, v := range []any{int64(-5), int64(1 << 40), source.DateTime("2024-02-29 01:02:03.4")} {
		x := ver(t, v)
		y, err := DecodeVersion(x.Encode())
		if err != nil || y.Compare(x) != 0 || y.Encode() != x.Encode() {
			t.Errorf("%v: encode %q decode %v, %v", v, x.Encode(), y, err)
		}
	}
	if _, err := DecodeVersion("x:1"); err == nil {
		t.Error("bad prefix accepted")
	}
}
