package mysql

import (
	"reflect"
	"strconv"
	"testing"

	"github.com/regiond/regiond/source"
)

// TestCanonicalIntegers checks canonical's digit fast path against strconv
// on the edges of both paths.
func TestCanonicalIntegers(t *testing.T) {
	for _, s := range []string{"0", "-0", "7", "-7", "255", "256", "999999999999999999", "-999999999999999999",
		"1000000000000000000", "9223372036854775807", "-9223372036854775808", "9223372036854775808",
		"18446744073709551615", "18446744073709551616", "+5", "007", "-", "", "1a", "1.5", " 1"} {
		gotI, errI := targetColumn{kind: "int"}.canonical([]byte(s))
		wantI, werrI := strconv.ParseInt(s, 10, 64)
		if (errI != nil) != (werrI != nil) || errI == nil && gotI != wantI {
			t.Errorf("int %q: got %v, %v, want %v, %v", s, gotI, errI, wantI, werrI)
		}
		gotU, errU := targetColumn{kind: "uint"}.canonical([]byte(s))
		wantU, werrU := strconv.ParseUint(s, 10, 64)
		if (errU != nil) != (werrU != nil) || errU == nil && gotU != wantU {
			t.Errorf("uint %q: got %v, %v, want %v, %v", s, gotU, errU, wantU, werrU)
		}
	}
}

// TestFromTextMatchesCanonical checks that readRows' shared-string path
// gives what canonical gives, for every textual kind.
func TestFromTextMatchesCanonical(t *testing.T) {
	kinds := []string{"decimal", "date", "datetime", "timestamp", "time", "json", "char", "varchar", "text", "enum", "set",
		"int", "uint", "float", "double", "bit", "binary", "varbinary", "blob"}
	for _, k := range kinds {
		c := targetColumn{kind: k}
		if !c.textual() {
			continue
		}
		for _, s := range []string{"", "abc", "12.50", "2024-01-02 03:04:05.000006", "{\"a\": 1}"} {
			want, err := c.canonical([]byte(s))
			if err != nil {
				t.Fatal(err)
			}
			if got := c.fromText(s); !reflect.DeepEqual(got, want) || reflect.TypeOf(got) != reflect.TypeOf(want) {
				t.Errorf("%s %q: fromText %#v, canonical %#v", k, s, got, want)
			}
		}
	}
}

// TestKeyIndexMatchesKeyJSON checks that keyIndex finds a row's key
// exactly where equal KeyJSON texts do, int64 fast path or not.
func TestKeyIndexMatchesKeyJSON(t *testing.T) {
	one := &source.Table{Name: "t", Columns: []source.Column{{Name: "id"}}, PK: []int{0}}
	keySets := [][]source.Row{
		{{int64(1)}, {int64(-2)}, {int64(300)}},
		{{int64(1)}, {uint64(2)}, {"3"}},
		{{"1"}, {source.Decimal("2")}, {nil}},
	}
	probes := []source.Row{{int64(1)}, {int64(2)}, {uint64(2)}, {uint64(300)}, {int64(-2)}, {"3"}, {"1"}, {source.Decimal("2")}, {nil}, {int64(4)}}
	for _, keys := range keySets {
		x := keyIndex{t: one, keys: keys}
		for _, p := range probes {
			want, wantOK := -1, false
			for i, k := range keys {
				if source.KeyJSON(one, k) == source.KeyJSON(one, p) {
					want, wantOK = i, true
				}
			}
			got, ok := x.find(p)
			if ok != wantOK || ok && got != want {
				t.Errorf("keys %v, row %v: got %d, %v, want %d, %v", keys, p, got, ok, want, wantOK)
			}
		}
	}
}
