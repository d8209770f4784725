package source

import (
	"fmt"
	"strconv"
	"strings"
)

// The canonical values a Row holds, the same whatever engine a change was
// read from, so that any sink can write them and a row looks the same in
// every region:
//
//	nil        SQL NULL
//	int64      signed integers of any width; YEAR
//	uint64     unsigned integers (MySQL UNSIGNED columns)
//	bool       booleans (PostgreSQL boolean)
//	float32    single precision (MySQL FLOAT, PostgreSQL real)
//	float64    double precision
//	Decimal    exact numerics, as their decimal text
//	string     character data, UTF-8; ENUM and SET by name(s)
//	[]byte     binary data (BINARY, VARBINARY, BLOB, bytea); never nil
//	Date       "YYYY-MM-DD"
//	DateTime   "YYYY-MM-DD HH:MM:SS[.ffffff]", no time zone
//	Timestamp  an instant, in UTC, same text form as DateTime
//	Time       "[-]HH:MM:SS[.ffffff]", a time of day or (MySQL) a duration
//	JSON       JSON text
//	Bits       a bit string of '0' and '1', most significant first
//	Unchanged  (After images only) a value the log did not carry because it
//	           did not change: PostgreSQL's unchanged TOASTed values
//
// The named string types keep the kind of a value that travels as text, so
// a sink can map it to the target column without looking at the source.
type (
	// Decimal is an exact numeric in decimal text, e.g. "-12.3400".
	Decimal string
	// Date is a calendar date, "YYYY-MM-DD". MySQL's zero date
	// "0000-00-00" can occur; PostgreSQL cannot store it.
	Date string
	// DateTime is a zone-less date and time, "YYYY-MM-DD HH:MM:SS[.ffffff]".
	DateTime string
	// Timestamp is an instant in UTC, "YYYY-MM-DD HH:MM:SS[.ffffff]".
	Timestamp string
	// Time is "[-]HH:MM:SS[.ffffff]"; MySQL TIME ranges over ±838 hours.
	Time string
	// JSON is JSON text.
	JSON string
	// Bits is a bit string, e.g. "0101", as long as the column is wide.
	Bits string
)

// unchanged is the type of Unchanged.
type unchanged struct{}

// Unchanged stands in an After image for a column whose value the log did
// not carry because the change left it as it was. A sink must leave that
// column of the target row alone.
var Unchanged any = unchanged{}

// BitsFromUint formats the low n bits of v, most significant first.
func BitsFromUint(v uint64, n int) Bits {
	if n <= 0 || n > 64 {
		n = 64
	}
	b := make([]byte, n)
	for i := range n {
		if v&(1<<uint(n-1-i)) != 0 {
			b[i] = '1'
		} else {
			b[i] = '0'
		}
	}
	return Bits(b)
}

// Uint returns the bit string as an unsigned integer; it fails for strings
// longer than 64 bits or with other characters than 0 and 1.
func (b Bits) Uint() (uint64, error) {
	s := strings.TrimLeft(string(b), "0")
	if len(s) > 64 {
		return 0, fmt.Errorf("bit string of %d significant bits does not fit 64", len(s))
	}
	if s == "" {
		if strings.Trim(string(b), "0") != "" {
			return 0, fmt.Errorf("invalid bit string %q", string(b))
		}
		return 0, nil
	}
	return strconv.ParseUint(s, 2, 64)
}

// Text returns the value in the canonical text form used to compare rows
// across engines and to write them as text: integers and decimals in
// decimal, floats in the shortest form that reads back the same, booleans as
// "true"/"false", binary data in hex with a "\x" prefix. ok is false for NULL
// and Unchanged.
func Text(v any) (s string, ok bool) {
	switch x := v.(type) {
	case nil:
		return "", false
	case int64:
		return strconv.FormatInt(x, 10), true
	case uint64:
		return strconv.FormatUint(x, 10), true
	case int:
		return strconv.Itoa(x), true
	case int32:
		return strconv.FormatInt(int64(x), 10), true
	case int16:
		return strconv.FormatInt(int64(x), 10), true
	case int8:
		return strconv.FormatInt(int64(x), 10), true
	case uint32:
		return strconv.FormatUint(uint64(x), 10), true
	case uint16:
		return strconv.FormatUint(uint64(x), 10), true
	case uint8:
		return strconv.FormatUint(uint64(x), 10), true
	case bool:
		return strconv.FormatBool(x), true
	case float32:
		return strconv.FormatFloat(float64(x), 'g', -1, 32), true
	case float64:
		return strconv.FormatFloat(x, 'g', -1, 64), true
	case string:
		return x, true
	case []byte:
		const hex = "0123456789abcdef"
		out := make([]byte, 2+2*len(x))
		out[0], out[1] = '\\', 'x'
		for i, c := range x {
			out[2+2*i] = hex[c>>4]
			out[3+2*i] = hex[c&0xf]
		}
		return string(out), true
	case Decimal:
		return string(x), true
	case Date:
		return string(x), true
	case DateTime:
		return string(x), true
	case Timestamp:
		return string(x), true
	case Time:
		return string(x), true
	case JSON:
		return string(x), true
	case Bits:
		return string(x), true
	case unchanged:
		return "", false
	}
	return fmt.Sprint(v), true
}
