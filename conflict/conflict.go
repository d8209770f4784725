// Package conflict holds regiond's conflict rules as pure code: given an
// incoming change and the target's current state for the same primary key,
// decide whether the change applies, is discarded (and recorded), or is a
// no-op. No I/O: the sinks read the current rows, ask here, and write.
//
// The rules must make every region converge whatever order changes arrive
// in: for last_writer_wins each possible state of a row has a place in one
// strict total order, and a change applies exactly when it moves the row up
// that order, so the final state is the maximum of all writes, the same in
// every region.
package conflict

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"hash/fnv"
	"math"
	"sort"
	"strconv"
	"strings"

	"github.com/regiond/regiond/source"
)

// Outcome is what a rule decided for one incoming change.
type Outcome uint8

const (
	// Apply: write the change.
	Apply Outcome = iota + 1
	// Discard: the change lost; record it as a conflict.
	Discard
	// Same: the target already holds exactly this state; nothing to do.
	Same
)

func (o Outcome) String() string {
	switch o {
	case Apply:
		return "apply"
	case Discard:
		return "discard"
	case Same:
		return "same"
	}
	return fmt.Sprintf("outcome(%d)", o)
}

// Version is the value of a last_writer_wins version column, comparable
// across engines: integers by value, date-times (DATETIME(6), TIMESTAMP(6),
// timestamp, timestamptz) by their UTC text with six fractional digits.
type Version struct {
	isTime bool
	n      int64
	t      string
}

// ParseVersion reads a version from a canonical value. NULL is an error:
// a last_writer_wins row must carry a version.
func ParseVersion(v any) (Version, error) {
	switch x := v.(type) {
	case int64:
		return Version{n: x}, nil
	case uint64:
		if x > math.MaxInt64 {
			return Version{}, fmt.Errorf("version %d does not fit a signed 64-bit integer", x)
		}
		return Version{n: int64(x)}, nil
	case source.DateTime:
		return timeVersion(string(x))
	case source.Timestamp:
		return timeVersion(string(x))
	case source.Decimal:
		n, err := strconv.ParseInt(string(x), 10, 64)
		if err != nil {
			return Version{}, fmt.Errorf("version %q is not an integer", string(x))
		}
		return Version{n: n}, nil
	case nil:
		return Version{}, fmt.Errorf("version is NULL")
	}
	return Version{}, fmt.Errorf("version of type %T is not supported: use BIGINT, DATETIME(6), TIMESTAMP(6) or timestamptz", v)
}

// timeVersion normalises "YYYY-MM-DD HH:MM:SS[.f…]" to six fractional
// digits, so that text order is time order.
func timeVersion(s string) (Version, error) {
	if len(s) < 19 || s[4] != '-' || s[10] != ' ' || s[13] != ':' {
		return Version{}, fmt.Errorf("version %q is not a date-time", s)
	}
	base, frac := s[:19], ""
	if len(s) > 19 {
		if s[19] != '.' {
			return Version{}, fmt.Errorf("version %q is not a date-time", s)
		}
		frac = s[20:]
	}
	if len(frac) > 6 {
		return Version{}, fmt.Errorf("version %q has more than microsecond precision", s)
	}
	for _, c := range frac {
		if c < '0' || c > '9' {
			return Version{}, fmt.Errorf("version %q is not a date-time", s)
		}
	}
	return Version{isTime: true, t: base + "." + frac + strings.Repeat("0", 6-len(frac))}, nil
}

// Compare returns -1, 0 or +1. A date-time version sorts above every
// integer one (a table's version column has one type, so this only keeps
// the order total).
func (v Version) Compare(o Version) int {
	if v.isTime != o.isTime {
		if v.isTime {
			return 1
		}
		return -1
	}
	if v.isTime {
		return strings.Compare(v.t, o.t)
	}
	switch {
	case v.n < o.n:
		return -1
	case v.n > o.n:
		return 1
	}
	return 0
}

func (v Version) String() string {
	if v.isTime {
		return v.t
	}
	return strconv.FormatInt(v.n, 10)
}

// Hash is the canonical hash of a row image: the same row has the same hash
// whichever engine it was read from.
type Hash [16]byte

// Compare orders hashes bytewise.
func (h Hash) Compare(o Hash) int { return bytes.Compare(h[:], o[:]) }

func (h Hash) String() string { return fmt.Sprintf("%x", h[:]) }

// RowHash hashes a row image over its columns in name order, each value in
// its normalised text (see Normalize), so that column order and engine do
// not matter.
func RowHash(t *source.Table, row source.Row) Hash {
	idx := make([]int, len(t.Columns))
	for i := range idx {
		idx[i] = i
	}
	sort.Slice(idx, func(a, b int) bool { return t.Columns[idx[a]].Name < t.Columns[idx[b]].Name })
	h := fnv.New128a()
	var n [8]byte
	for _, i := range idx {
		name := t.Columns[i].Name
		binary.BigEndian.PutUint64(n[:], uint64(len(name)))
		h.Write(n[:])
		h.Write([]byte(name))
		s, ok := Normalize(row[i])
		if !ok {
			h.Write([]byte{0})
			continue
		}
		h.Write([]byte{1})
		binary.BigEndian.PutUint64(n[:], uint64(len(s)))
		h.Write(n[:])
		h.Write([]byte(s))
	}
	var out Hash
	copy(out[:], h.Sum(nil))
	return out
}

// Normalize returns the text by which two values are equal across engines:
// booleans as 1/0 (MySQL TINYINT(1) vs PostgreSQL boolean), decimals without
// trailing fractional zeros, date-times with six fractional digits, floats in
// their shortest form, JSON re-encoded with sorted keys. ok is false for
// NULL.
func Normalize(v any) (string, bool) {
	switch x := v.(type) {
	case nil:
		return "", false
	case bool:
		if x {
			return "1", true
		}
		return "0", true
	case source.Decimal:
		return normDecimal(string(x)), true
	case source.DateTime:
		if tv, err := timeVersion(string(x)); err == nil {
			return tv.t, true
		}
	case source.Timestamp:
		if tv, err := timeVersion(string(x)); err == nil {
			return tv.t, true
		}
	case source.Time:
		return normTime(string(x)), true
	case source.JSON:
		return normJSON(string(x)), true
	case float32:
		return strconv.FormatFloat(float64(x), 'g', -1, 32), true
	}
	return source.Text(v)
}

func normDecimal(s string) string {
	if i := strings.IndexByte(s, '.'); i >= 0 {
		s = strings.TrimRight(s, "0")
		s = strings.TrimSuffix(s, ".")
	}
	if s == "-0" || s == "" {
		return "0"
	}
	return s
}

func normTime(s string) string {
	i := strings.IndexByte(s, '.')
	if i < 0 {
		return s + ".000000"
	}
	frac := s[i+1:]
	if len(frac) < 6 {
		frac += strings.Repeat("0", 6-len(frac))
	}
	return s[:i] + "." + frac
}

func normJSON(s string) string {
	d := json.NewDecoder(strings.NewReader(s))
	d.UseNumber()
	var v any
	if err := d.Decode(&v); err != nil {
		return s
	}
	b, err := json.Marshal(v)
	if err != nil {
		return s
	}
	return string(b)
}

// Encode is the stored text form of a version: "i:<integer>" or
// "t:YYYY-MM-DD HH:MM:SS.ffffff".
func (v Version) Encode() string {
	if v.isTime {
		return "t:" + v.t
	}
	return "i:" + strconv.FormatInt(v.n, 10)
}

// DecodeVersion parses the text Encode produced.
func DecodeVersion(s string) (Version, error) {
	switch {
	case strings.HasPrefix(s, "i:"):
		n, err := strconv.ParseInt(s[2:], 10, 64)
		if err != nil {
			return Version{}, fmt.Errorf("stored version %q: %v", s, err)
		}
		return Version{n: n}, nil
	case strings.HasPrefix(s, "t:"):
		return timeVersion(s[2:])
	}
	return Version{}, fmt.Errorf("stored version %q: unknown form", s)
}

// KeyHash identifies a primary key value across engines (the hash of its
// canonical JSON), for regiond's own tables keyed by a user table's key.
func KeyHash(keyJSON string) Hash {
	h := fnv.New128a()
	h.Write([]byte(keyJSON))
	var out Hash
	copy(out[:], h.Sum(nil))
	return out
}
