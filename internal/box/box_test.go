package box

import (
	"fmt"
	"math"
	"reflect"
	"runtime"
	"testing"
)

type named string

// Boxed values are indistinguishable from values boxed by the language:
// same dynamic type, equal, same printing, and they survive garbage
// collection while the slab has moved on.
func TestBoxedValuesBehaveAsUsual(t *testing.T) {
	var (
		strs  Slab[string]
		ints  Slab[int64]
		uints Slab[uint64]
	)
	var got, want []any
	for i := range 3 * slabLen {
		s := fmt.Sprintf("value %d ☃", i)
		got = append(got, String(&strs, s), String(&strs, named(s)), Int64(&ints, int64(i)*1_000_003-7_000_000),
			Uint64(&uints, uint64(i)*math.MaxUint32))
		want = append(want, s, named(s), int64(i)*1_000_003-7_000_000, uint64(i)*math.MaxUint32)
	}
	got = append(got, String(&strs, ""), String(&strs, named("")), Int64(&ints, 5), Int64(&ints, math.MinInt64), Uint64(&uints, math.MaxUint64))
	want = append(want, "", named(""), int64(5), int64(math.MinInt64), uint64(math.MaxUint64))
	runtime.GC()
	for i := range got {
		if got[i] != want[i] || reflect.TypeOf(got[i]) != reflect.TypeOf(want[i]) || fmt.Sprint(got[i]) != fmt.Sprint(want[i]) {
			t.Fatalf("value %d: got %#v (%T), want %#v (%T)", i, got[i], got[i], want[i], want[i])
		}
	}
	if _, ok := got[1].(named); !ok {
		t.Fatalf("a named string boxed as %T", got[1])
	}
	if _, ok := got[0].(named); ok {
		t.Fatal("a string boxed as named")
	}
}

func TestOneAllocationPerSlab(t *testing.T) {
	var strs Slab[string]
	s := "a string of some length"
	allocs := testing.AllocsPerRun(10, func() {
		for range slabLen {
			_ = String(&strs, s)
		}
	})
	if allocs > 1 {
		t.Fatalf("%v allocations for %d strings, want 1", allocs, slabLen)
	}
}

// Strings from a Text keep their bytes when the source is overwritten and
// after many more strings filled new buffers.
func TestTextStringsStay(t *testing.T) {
	var text Text
	src := make([]byte, 0, 64)
	var got, want []string
	for i := range 20_000 {
		src = fmt.Appendf(src[:0], "value %d", i)
		if i%1000 == 0 {
			src = append(src, make([]byte, textLen/4)...) // a long one
		}
		got = append(got, text.String(src))
		want = append(want, string(src))
		src[0] = 'X'
	}
	runtime.GC()
	for i := range got {
		if got[i] != want[i] {
			t.Fatalf("string %d: got %.30q, want %.30q", i, got[i], want[i])
		}
	}
	var none *Text
	if s := none.String([]byte("abc")); s != "abc" {
		t.Fatalf("nil Text: %q", s)
	}
}

func TestValuesRowsApart(t *testing.T) {
	var vals Values
	var rows [][]any
	for i := range 500 {
		n := i%70 + 1
		r := vals.Take(n)
		if len(r) != n || cap(r) != n {
			t.Fatalf("row of %d: len %d cap %d", n, len(r), cap(r))
		}
		for j := range r {
			if r[j] != nil {
				t.Fatalf("row %d value %d not nil", i, j)
			}
			r[j] = i
		}
		rows = append(rows, r)
	}
	for i, r := range rows {
		for j, v := range r {
			if v != i {
				t.Fatalf("row %d value %d = %v: another row wrote it", i, j, v)
			}
		}
	}
}
