// Package box puts strings and integers into interface values (the row
// model's []any) without an allocation per value.
//
// Go copies a string header or a large integer put into an interface to a
// heap object of its own: a decoded row of six columns cost up to six small
// allocations, and their garbage collection, in a reader that decodes
// hundreds of thousands of rows a second. A Slab stores the values in a
// shared array instead, and each interface points into it: one allocation
// per slabLen values.
//
// The interface is built as the runtime builds it for any value that is not
// itself a pointer (a type word and a pointer to the value), so type
// switches, assertions, comparison and printing all behave as for a value
// boxed the usual way. Array elements once handed out are never written
// again, which keeps boxed values immutable; an array stays alive as long as
// any of its values does.
package box

import "unsafe"

const slabLen = 256

// eface is the layout of an interface{} value.
type eface struct {
	typ  unsafe.Pointer
	data unsafe.Pointer
}

// Slab boxes values whose underlying type is E.
type Slab[E any] struct{ free []E }

func (s *Slab[E]) put(v E) unsafe.Pointer {
	if len(s.free) == 0 {
		s.free = make([]E, slabLen)
	}
	p := &s.free[0]
	*p = v
	s.free = s.free[1:]
	return unsafe.Pointer(p)
}

// String returns v as an interface holding a T.
func String[T ~string](s *Slab[string], v T) any {
	var x any = T("") // the empty string is boxed without an allocation
	if v == "" {
		return x
	}
	(*eface)(unsafe.Pointer(&x)).data = s.put(string(v))
	return x
}

// Int64 returns v as an interface holding an int64.
func Int64(s *Slab[int64], v int64) any {
	if 0 <= v && v < 256 {
		return v // the runtime boxes these without an allocation
	}
	var x any = int64(0)
	(*eface)(unsafe.Pointer(&x)).data = s.put(v)
	return x
}

// Uint64 returns v as an interface holding a uint64.
func Uint64(s *Slab[uint64], v uint64) any {
	if v < 256 {
		return v
	}
	var x any = uint64(0)
	(*eface)(unsafe.Pointer(&x)).data = s.put(v)
	return x
}

// Text hands out strings whose bytes sit in a shared append-only buffer:
// one allocation per textLen bytes of values instead of one per value.
// Bytes once handed out are never written again (a full buffer is
// replaced, never reused), which keeps the strings immutable as Go
// requires; a buffer lives as long as any of its strings. Values longer
// than textLen/8 get an allocation of their own, so that a long value does
// not pin a buffer of short ones, nor waste one.
type Text struct{ buf []byte }

const textLen = 32 << 10

// String returns b as a string; b may be changed afterwards. A nil Text
// allocates the string.
func (t *Text) String(b []byte) string {
	if len(b) == 0 {
		return ""
	}
	if t == nil || len(b) > textLen/8 {
		return string(b)
	}
	if cap(t.buf)-len(t.buf) < len(b) {
		t.buf = make([]byte, 0, textLen)
	}
	start := len(t.buf)
	t.buf = append(t.buf, b...)
	return unsafe.String(&t.buf[start], len(b))
}

// Values hands out rows: zeroed []any of a given length cut from a shared
// array, one allocation per valuesLen values instead of one per row. Each
// row's capacity is its length, so that appending to one cannot write into
// the next; slots once handed out are never handed out again. Rows longer
// than valuesLen/16 get an array of their own.
type Values struct{ free []any }

const valuesLen = 1024

// Take returns a row of n nil values.
func (v *Values) Take(n int) []any {
	if n > valuesLen/16 {
		return make([]any, n)
	}
	if len(v.free) < n {
		v.free = make([]any, valuesLen)
	}
	r := v.free[:n:n]
	v.free = v.free[n:]
	return r
}
