package source

import (
	"encoding/base64"
	"encoding/json"
	"math"
	"strconv"
	"strings"
)

// AppendJSONValue appends v in regiond's JSON mapping of canonical values:
// integers as JSON numbers (unsigned values above 2^53 as strings, so no
// consumer rounds them), floats as numbers (non-finite ones as strings),
// decimals as strings, binary data as base64 strings, booleans, text as
// strings, date-times as ISO-8601 strings with microseconds ("Z" for
// Timestamp), dates and times as strings, JSON as the JSON itself, bit
// strings as strings, NULL as null.
func AppendJSONValue(b []byte, v any) []byte {
	switch x := v.(type) {
	case nil:
		return append(b, "null"...)
	case int64:
		return strconv.AppendInt(b, x, 10)
	case uint64:
		if x > 1<<53 {
			return strconv.AppendQuote(b, strconv.FormatUint(x, 10))
		}
		return strconv.AppendUint(b, x, 10)
	case bool:
		return strconv.AppendBool(b, x)
	case float32:
		if math.IsInf(float64(x), 0) || math.IsNaN(float64(x)) {
			return strconv.AppendQuote(b, strconv.FormatFloat(float64(x), 'g', -1, 32))
		}
		return strconv.AppendFloat(b, float64(x), 'g', -1, 32)
	case float64:
		if math.IsInf(x, 0) || math.IsNaN(x) {
			return strconv.AppendQuote(b, strconv.FormatFloat(x, 'g', -1, 64))
		}
		return strconv.AppendFloat(b, x, 'g', -1, 64)
	case []byte:
		b = append(b, '"')
		b = base64.StdEncoding.AppendEncode(b, x)
		return append(b, '"')
	case DateTime:
		return appendJSONString(b, isoTime(string(x), ""))
	case Timestamp:
		return appendJSONString(b, isoTime(string(x), "Z"))
	case JSON:
		if json.Valid([]byte(x)) {
			return append(b, x...)
		}
		return appendJSONString(b, string(x))
	case unchanged:
		return append(b, `{"unchanged":true}`...)
	}
	s, _ := Text(v)
	return appendJSONString(b, s)
}

// isoTime turns "YYYY-MM-DD HH:MM:SS[.f]" into ISO-8601 with six
// fractional digits and the given zone suffix.
func isoTime(s, zone string) string {
	if len(s) < 19 {
		return s
	}
	frac := ""
	if len(s) > 20 && s[19] == '.' {
		frac = s[20:]
	}
	frac += strings.Repeat("0", max(0, 6-len(frac)))
	return s[:10] + "T" + s[11:19] + "." + frac + zone
}

func appendJSONString(b []byte, s string) []byte {
	out, _ := json.Marshal(s)
	return append(b, out...)
}

// RowJSON renders a row image as a JSON object, columns in table order,
// values in the mapping of AppendJSONValue. A nil row is null.
func RowJSON(t *Table, row Row) []byte {
	if row == nil {
		return []byte("null")
	}
	b := []byte{'{'}
	for i, c := range t.Columns {
		if i > 0 {
			b = append(b, ',')
		}
		b = appendJSONString(b, c.Name)
		b = append(b, ':')
		if i < len(row) {
			b = AppendJSONValue(b, row[i])
		} else {
			b = append(b, "null"...)
		}
	}
	return append(b, '}')
}

// KeyJSON renders the primary key of row as a JSON array of its values in
// key order: the canonical text identity of a row across engines.
func KeyJSON(t *Table, row Row) string {
	return string(AppendKeyJSON(nil, t, row))
}

// AppendKeyJSON appends KeyJSON(t, row) to b: for callers that look keys up
// in a map without allocating a string per lookup.
func AppendKeyJSON(b []byte, t *Table, row Row) []byte {
	b = append(b, '[')
	for i, c := range t.PK {
		if i > 0 {
			b = append(b, ',')
		}
		b = AppendJSONValue(b, row[c])
	}
	return append(b, ']')
}
