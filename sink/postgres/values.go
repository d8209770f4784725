package postgres

import (
	"math"
	"strconv"
	"strings"

	"github.com/jackc/pgx/v5/pgtype"

	"github.com/regiond/regiond/source"
)

// encode returns canonical value v as the text the server parses into
// column c (statements cast it with c.cast): the canonical text form
// (source.Text) adjusted to the target type. A value the target cannot
// hold is passed on as it is; the server's rejection names it.
func encode(v any, c *column) pgtype.Text {
	switch x := v.(type) {
	case nil:
		return pgtype.Text{}
	case string:
		if c.kind == kindBytea {
			return text(hexBytes(x))
		}
		return text(x)
	case []byte:
		if c.kind == kindBytea {
			return text(hexBytes(x))
		}
		// Binary data into a character column: the bytes as they are (the
		// server refuses what is not valid UTF-8).
		return text(string(x))
	case bool:
		switch c.kind {
		case kindNumber, kindBit, kindVarbit:
			if x {
				return text("1")
			}
			return text("0")
		}
		return text(strconv.FormatBool(x))
	case float64:
		return text(formatFloat(x, 64))
	case float32:
		return text(formatFloat(float64(x), 32))
	case source.Timestamp:
		if c.kind == kindTimestamptz {
			return text(string(x) + "+00")
		}
		return other(v, c)
	case source.Bits:
		switch c.kind {
		case kindBit, kindVarbit:
			return text(fitBits(string(x), c, false))
		case kindNumber:
			if u, err := x.Uint(); err == nil {
				return text(strconv.FormatUint(u, 10))
			}
		}
		return other(v, c)
	case int64:
		if c.kind == kindBit || c.kind == kindVarbit {
			return text(fitBits(string(source.BitsFromUint(uint64(x), 64)), c, true))
		}
	case uint64:
		if c.kind == kindBit || c.kind == kindVarbit {
			return text(fitBits(string(source.BitsFromUint(x, 64)), c, true))
		}
	}
	return other(v, c)
}

// other is the canonical text of v; into bytea, the bytes of that text.
func other(v any, c *column) pgtype.Text {
	s, ok := source.Text(v)
	if !ok {
		// Unchanged never reaches here: rows holding it are written by an
		// UPDATE that leaves those columns out.
		return pgtype.Text{}
	}
	if c.kind == kindBytea {
		s = hexBytes(s)
	}
	return text(s)
}

func text(s string) pgtype.Text { return pgtype.Text{String: s, Valid: true} }

// formatFloat is the shortest text that reads back as the same float, in the
// spelling PostgreSQL parses for the special values.
func formatFloat(f float64, bits int) string {
	switch {
	case math.IsNaN(f):
		return "NaN"
	case math.IsInf(f, 1):
		return "Infinity"
	case math.IsInf(f, -1):
		return "-Infinity"
	}
	return strconv.FormatFloat(f, 'g', -1, bits)
}

// hexBytes is bytea's hex input form, "\x" and two digits a byte.
func hexBytes[T string | []byte](b T) string {
	const digits = "0123456789abcdef"
	var sb strings.Builder
	sb.Grow(2 + 2*len(b))
	sb.WriteString(`\x`)
	for i := 0; i < len(b); i++ {
		sb.WriteByte(digits[b[i]>>4])
		sb.WriteByte(digits[b[i]&0xf])
	}
	return sb.String()
}

// fitBits makes bit string s as wide as column c: a bit(n) column is padded
// with leading zeros, and leading zeros beyond n are dropped (MySQL BIT(n)
// values and integers carry no width of their own). Significant bits beyond
// n are kept, for the server to reject. An integer into bit varying without
// a width keeps only its significant bits.
func fitBits(s string, c *column, fromInt bool) string {
	n := c.width
	if n <= 0 {
		if fromInt {
			if t := strings.TrimLeft(s, "0"); t != "" {
				return t
			}
			return "0"
		}
		return s
	}
	if len(s) > n {
		if strings.Trim(s[:len(s)-n], "0") == "" {
			return s[len(s)-n:]
		}
		return s
	}
	if len(s) < n && c.kind == kindBit {
		return strings.Repeat("0", n-len(s)) + s
	}
	return s
}
