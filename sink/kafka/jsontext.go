package kafka

import (
	"strconv"
	"unicode/utf8"

	"github.com/regiond/regiond/source"
)

// appendValue appends v in the JSON mapping of source.AppendJSONValue,
// with the text kinds (by far the most common) written without going
// through encoding/json.
func appendValue(b []byte, v any) []byte {
	switch x := v.(type) {
	case string:
		return appendText(b, x)
	case int64:
		return strconv.AppendInt(b, x, 10)
	case source.Decimal:
		return appendText(b, string(x))
	case source.Date:
		return appendText(b, string(x))
	case source.Time:
		return appendText(b, string(x))
	case source.Bits:
		return appendText(b, string(x))
	case source.DateTime:
		return appendISO(b, string(x), "")
	case source.Timestamp:
		return appendISO(b, string(x), "Z")
	}
	return source.AppendJSONValue(b, v)
}

// appendISO turns "YYYY-MM-DD HH:MM:SS[.f]" into the JSON string of its
// ISO-8601 form with six fractional digits and zone.
func appendISO(b []byte, s, zone string) []byte {
	if len(s) < 19 || s[10] != ' ' {
		return appendText(b, s)
	}
	b = append(b, '"')
	b = append(b, s[:10]...)
	b = append(b, 'T')
	b = append(b, s[11:19]...)
	b = append(b, '.')
	frac := ""
	if len(s) > 20 && s[19] == '.' {
		frac = s[20:]
	}
	if len(frac) > 6 {
		frac = frac[:6]
	}
	b = append(b, frac...)
	for range 6 - len(frac) {
		b = append(b, '0')
	}
	b = append(b, zone...)
	return append(b, '"')
}

const hexDigits = "0123456789abcdef"

// appendText appends s as a JSON string: control characters, quote and
// backslash escaped, invalid UTF-8 replaced by U+FFFD, U+2028 and U+2029
// escaped (JavaScript consumers choke on them raw).
func appendText(b []byte, s string) []byte {
	b = append(b, '"')
	start := 0
	for i := 0; i < len(s); {
		// Skip runs of plain ASCII eight bytes at a time: most text is.
		for i+8 <= len(s) && plain8(s[i:i+8]) {
			i += 8
		}
		if i >= len(s) {
			break
		}
		c := s[i]
		if c < utf8.RuneSelf {
			if c >= 0x20 && c != '"' && c != '\\' {
				i++
				continue
			}
			b = append(b, s[start:i]...)
			switch c {
			case '"', '\\':
				b = append(b, '\\', c)
			case '\n':
				b = append(b, '\\', 'n')
			case '\r':
				b = append(b, '\\', 'r')
			case '\t':
				b = append(b, '\\', 't')
			default:
				b = append(b, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xf])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			b = append(b, s[start:i]...)
			b = append(b, `\ufffd`...)
			i += size
			start = i
			continue
		}
		if r == '\u2028' || r == '\u2029' {
			b = append(b, s[start:i]...)
			b = append(b, '\\', 'u', '2', '0', '2', hexDigits[r&0xf])
			i += size
			start = i
			continue
		}
		i += size
	}
	b = append(b, s[start:]...)
	return append(b, '"')
}

// plain8 reports whether each of the 8 bytes of s is ASCII that a JSON
// string holds as it is: not below 0x20, not '"', not '\\', not >= 0x80.
// The tests for "some byte below n" and "some byte zero" are exact as
// yes/no answers for the word as a whole, which is all that is asked.
func plain8(s string) bool {
	const ones, highs = 0x0101010101010101, 0x8080808080808080
	w := uint64(s[0]) | uint64(s[1])<<8 | uint64(s[2])<<16 | uint64(s[3])<<24 |
		uint64(s[4])<<32 | uint64(s[5])<<40 | uint64(s[6])<<48 | uint64(s[7])<<56
	control := (w - 0x20*ones) &^ w
	q := w ^ ('"' * ones)
	quote := (q - ones) &^ q
	bs := w ^ ('\\' * ones)
	backslash := (bs - ones) &^ bs
	return (control|quote|backslash|w)&highs == 0
}
