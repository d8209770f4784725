package postgres

import (
	"errors"
	"fmt"
	"math"
	"runtime"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/regiond/regiond/source"
)

func TestConvert(t *testing.T) {
	tests := []struct {
		kind      kind
		precision int32
		text      string
		want      any
		wantErr   error // errUnrepresentable, or errAny for any error
	}{
		{kindInt, -1, "-9223372036854775808", int64(math.MinInt64), nil},
		{kindInt, -1, "4294967295", int64(4294967295), nil},
		{kindInt, -1, "1.5", nil, errAny},
		{kindFloat32, -1, "0.1", float32(0.1), nil},
		{kindFloat32, -1, "3.4028235e+38", float32(math.MaxFloat32), nil},
		{kindFloat32, -1, "-Infinity", float32(math.Inf(-1)), nil},
		{kindFloat64, -1, "Infinity", math.Inf(1), nil},
		{kindFloat64, -1, "1e-320", 1e-320, nil},
		{kindFloat64, -1, "x", nil, errAny},
		{kindDecimal, -1, "-0.000100", source.Decimal("-0.000100"), nil},
		{kindDecimal, -1, "NaN", nil, errUnrepresentable},
		{kindDecimal, -1, "Infinity", nil, errUnrepresentable},
		{kindBool, -1, "t", true, nil},
		{kindBool, -1, "f", false, nil},
		{kindBool, -1, "true", nil, errAny},
		{kindBytes, -1, `\x`, []byte{}, nil},
		{kindBytes, -1, `\x00ff10`, []byte{0, 0xff, 0x10}, nil},
		{kindBytes, -1, `\x0`, nil, errAny},
		{kindBytes, -1, `a\\b\000\377`, []byte{'a', '\\', 'b', 0, 0xff}, nil},
		{kindBytes, -1, `\9`, nil, errAny},
		{kindDate, -1, "2024-02-29", source.Date("2024-02-29"), nil},
		{kindDate, -1, "10000-01-01", source.Date("10000-01-01"), nil},
		{kindDate, -1, "infinity", nil, errUnrepresentable},
		{kindDate, -1, "0001-01-01 BC", nil, errUnrepresentable},
		{kindDate, -1, "01/02/2024", nil, errAny},
		{kindDateTime, -1, "2024-02-29 12:34:56", source.DateTime("2024-02-29 12:34:56"), nil},
		{kindDateTime, -1, "2024-02-29 12:34:56.5", source.DateTime("2024-02-29 12:34:56.5"), nil},
		{kindDateTime, 6, "2024-02-29 12:34:56.5", source.DateTime("2024-02-29 12:34:56.500000"), nil},
		{kindDateTime, 3, "2024-02-29 12:34:56", source.DateTime("2024-02-29 12:34:56.000"), nil},
		{kindDateTime, 0, "2024-02-29 12:34:56", source.DateTime("2024-02-29 12:34:56"), nil},
		{kindDateTime, 6, "-infinity", nil, errUnrepresentable},
		{kindDateTime, 6, "2024-02-29", nil, errAny},
		{kindTimestamp, 6, "2024-02-29 12:34:56.123456+00", source.Timestamp("2024-02-29 12:34:56.123456"), nil},
		{kindTimestamp, -1, "2024-02-29 12:34:56+00", source.Timestamp("2024-02-29 12:34:56"), nil},
		{kindTimestamp, 6, "2024-02-29 12:34:56+00", source.Timestamp("2024-02-29 12:34:56.000000"), nil},
		// Another session time zone would still give UTC.
		{kindTimestamp, -1, "2024-03-01 01:04:56.5+05:30", source.Timestamp("2024-02-29 19:34:56.5"), nil},
		{kindTimestamp, -1, "2024-02-29 23:00:00-02", source.Timestamp("2024-03-01 01:00:00"), nil},
		{kindTimestamp, -1, "1900-01-01 00:00:00+00:09:21", source.Timestamp("1899-12-31 23:50:39"), nil},
		{kindTimestamp, -1, "2024-02-29 12:34:56", nil, errAny},
		{kindTimestamp, -1, "infinity", nil, errUnrepresentable},
		{kindTimestamp, -1, "0044-03-15 12:00:00+00 BC", nil, errUnrepresentable},
		{kindTime, -1, "23:59:59.999999", source.Time("23:59:59.999999"), nil},
		{kindTime, 2, "00:00:00", source.Time("00:00:00.00"), nil},
		{kindTime, -1, "24:00:00", source.Time("24:00:00"), nil},
		{kindTime, -1, "1:00", nil, errAny},
		{kindJSON, -1, `{"a": [1, "é"]}`, source.JSON(`{"a": [1, "é"]}`), nil},
		{kindBits, -1, "", source.Bits(""), nil},
		{kindBits, -1, "0101", source.Bits("0101"), nil},
		{kindBits, -1, "012", nil, errAny},
		{kindString, -1, "", "", nil},
		{kindString, -1, "{1,2,NULL}", "{1,2,NULL}", nil},
		{kindString, -1, "12:00:00+02", "12:00:00+02", nil},
	}
	// With and without an arena; the input is overwritten after each
	// conversion, as the stream reuses its message buffers.
	var a arena
	for n, tc := range tests {
		ar := &a
		if n%2 == 0 {
			ar = nil
		}
		in := []byte(tc.text)
		got, err := convert(ar, tc.kind, tc.precision, in)
		for i := range in {
			in[i] = '#'
		}
		switch {
		case tc.wantErr == errAny && err != nil:
		case tc.wantErr != nil && errors.Is(err, tc.wantErr):
		case tc.wantErr == nil && err == nil:
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("convert(%d, %d, %q) (-want +got):\n%s", tc.kind, tc.precision, tc.text, diff)
			}
			if b, ok := got.([]byte); ok && b == nil {
				t.Errorf("convert(%d, %d, %q) = nil []byte, want non-nil", tc.kind, tc.precision, tc.text)
			}
		default:
			t.Errorf("convert(%d, %d, %q) = %v, %v; want %v, error %v", tc.kind, tc.precision, tc.text, got, err, tc.want, tc.wantErr)
		}
	}
}

var errAny = errors.New("any error")

// FuzzConvert checks that no text makes a conversion panic, and that what
// converts to a temporal value has the canonical shape.
func FuzzConvert(f *testing.F) {
	for _, s := range []string{"2024-02-29 12:34:56.5+05:30", "-1", `\x00`, "NaN", "24:00:00", "0044-03-15 BC", "1-1-1 1:1:1+"} {
		f.Add(uint8(kindTimestamp), int32(6), s)
	}
	f.Fuzz(func(t *testing.T, k uint8, precision int32, text string) {
		v, err := convert(nil, kind(k%(uint8(kindBits)+1)), precision, []byte(text))
		if err != nil {
			return
		}
		switch x := v.(type) {
		case source.Timestamp:
			d, c, ok := cut(string(x))
			if !ok || !isDate(d) || !isClock(c) {
				t.Errorf("convert(%q) = Timestamp %q: not YYYY-MM-DD HH:MM:SS[.f]", text, x)
			}
		case source.DateTime:
			d, c, ok := cut(string(x))
			if !ok || !isDate(d) || !isClock(c) {
				t.Errorf("convert(%q) = DateTime %q: not YYYY-MM-DD HH:MM:SS[.f]", text, x)
			}
		}
	})
}

func cut(s string) (string, string, bool) {
	for i := 0; i < len(s); i++ {
		if s[i] == ' ' {
			return s[:i], s[i+1:], true
		}
	}
	return s, "", false
}

// TestArenaValues: values boxed by the arena are equal to, switch like and
// key maps like the values Go boxes itself, and survive the arena's slabs
// filling up.
func TestArenaValues(t *testing.T) {
	var a arena
	want := []any{"", "x", source.Decimal("1.5"), source.Date("2024-01-01"), source.DateTime("2024-01-01 00:00:00"),
		source.Timestamp("2024-01-01 00:00:00.5"), source.Time("12:00:00"), source.JSON(`{"a":1}`), source.Bits("0101"),
		int64(0), int64(255), int64(256), int64(-1), int64(math.MaxInt64)}
	// Each value is boxed by the arena as the type it has.
	boxers := []func(*arena, any) (any, bool){
		boxAs[string], boxAs[source.Decimal], boxAs[source.Date], boxAs[source.DateTime], boxAs[source.Timestamp],
		boxAs[source.Time], boxAs[source.JSON], boxAs[source.Bits],
		func(a *arena, v any) (any, bool) { n, ok := v.(int64); return a.int(n), ok },
	}
	boxed := func(v any) any {
		for _, box := range boxers {
			if b, ok := box(&a, v); ok {
				return b
			}
		}
		panic(v)
	}
	var all []any
	for range 2000 { // several slabs
		for _, w := range want {
			all = append(all, boxed(w))
		}
	}
	runtime.GC()
	seen := map[any]int{}
	for i, got := range all {
		w := want[i%len(want)]
		if got != w || fmt.Sprintf("%T %v", got, got) != fmt.Sprintf("%T %v", w, w) {
			t.Fatalf("value %d: got %T %v, want %T %v", i, got, got, w, w)
		}
		seen[got]++
	}
	for _, w := range want {
		if seen[w] != 2000 {
			t.Errorf("map key %T %v: %d, want 2000", w, w, seen[w])
		}
	}
}

// boxAs boxes v through the arena when it is a T.
func boxAs[T ~string](a *arena, v any) (any, bool) {
	x, ok := v.(T)
	if !ok {
		return nil, false
	}
	return boxString(a, x), true
}
