package mysql

import (
	"fmt"
	"testing"
)

// TestAppendPadded compares appendPadded and appendFrac with the fmt
// formats go-mysql uses, at every width the decoder asks for and around
// each power of ten.
func TestAppendPadded(t *testing.T) {
	var vals []uint64
	for p := uint64(1); p < 1e12; p *= 10 {
		vals = append(vals, p-1, p, p+1, 2*p+3, 9*p)
	}
	vals = append(vals, 0, 59, 99, 123456, 999999, 1<<40, ^uint64(0))
	for _, width := range []int{1, 2, 3, 4, 5, 6, 7, 8, 9, 10} {
		for _, v := range vals {
			got := string(appendPadded([]byte("x"), v, width))
			if want := fmt.Sprintf("x%0*d", width, v); got != want {
				t.Errorf("appendPadded(%d, %d) = %q, want %q", v, width, got, want)
			}
		}
	}
	for dec := range 7 {
		for _, v := range vals {
			if v >= 1e6 {
				continue
			}
			got := string(appendFrac(nil, v, dec))
			want := ""
			if dec > 0 {
				want = "." + fmt.Sprintf("%06d", v)[:dec]
			}
			if got != want {
				t.Errorf("appendFrac(%d, %d) = %q, want %q", v, dec, got, want)
			}
		}
	}
}
