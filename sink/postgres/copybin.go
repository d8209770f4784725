package postgres

import (
	"encoding/binary"
	"math"

	"github.com/regiond/regiond/source"
)

// COPY's binary format for the inserts of the fast path (copy.go), for
// tables whose written columns all have a type below: the server then
// reads each value with the type's receive function instead of parsing
// text with its input function, which costs it a quarter less per row in
// the bench's table, and regiond builds the data without escaping text.
//
// A value goes in binary only when its binary form stores exactly what the
// text that encode gives it would: the receive functions apply the
// column's modifier as the input functions do (character(n) padding and
// length, timestamp(n) rounding, domain constraints), and text is checked
// for its encoding either way. A value that the text path might store
// differently or that the server might reject (an integer out of the
// column's range, a zero date, a year past 9999, a leap second, NaN) makes
// the whole COPY go as text, so the server parses and rejects exactly what
// it did before.

// Base type OIDs with a binary form here (pg_type.dat).
const (
	oidInt8    = 20
	oidInt2    = 21
	oidInt4    = 23
	oidText    = 25
	oidFloat4  = 700
	oidFloat8  = 701
	oidBPChar  = 1042
	oidVarchar = 1043
	oidDate    = 1082
	oidTS      = 1114
)

// binaryCopyable reports whether every column in cols has a binary form.
func binaryCopyable(p *plan, cols []int) bool {
	for _, i := range cols {
		switch p.cols[i].oid {
		case oidInt8, oidInt2, oidInt4, oidText, oidBPChar, oidVarchar, oidFloat4, oidFloat8,
			oidBool, oidBytea, oidDate, oidTS, oidTimestamptz:
		default:
			return false
		}
	}
	return true
}

// pgEpochDays is 2000-01-01, PostgreSQL's epoch, in days since 1970-01-01.
const pgEpochDays = 10957

// appendBinaryHeader appends the signature, flags and header extension
// length of binary COPY data.
func appendBinaryHeader(b []byte) []byte {
	b = append(b, "PGCOPY\n\xff\r\n\x00"...)
	return append(b, 0, 0, 0, 0, 0, 0, 0, 0)
}

// appendBinaryTrailer appends the end marker of binary COPY data.
func appendBinaryTrailer(b []byte) []byte { return append(b, 0xff, 0xff) }

// appendBinaryRow appends row's written columns as one tuple of binary
// COPY data; ok is false when a value has no binary form that is certain
// to store what its text would (b is then to be discarded).
func appendBinaryRow(b []byte, p *plan, row source.Row) ([]byte, bool) {
	b = binary.BigEndian.AppendUint16(b, uint16(len(p.written)))
	for _, i := range p.written {
		var ok bool
		if b, ok = appendBinaryValue(b, row[i], p.cols[i]); !ok {
			return b, false
		}
	}
	return b, true
}

func appendBinaryValue(b []byte, v any, c *column) ([]byte, bool) {
	if v == nil {
		return binary.BigEndian.AppendUint32(b, math.MaxUint32), true // -1: NULL
	}
	switch c.oid {
	case oidInt8, oidInt4, oidInt2:
		var n int64
		switch x := v.(type) {
		case int64:
			n = x
		case uint64:
			if x > math.MaxInt64 {
				return b, false
			}
			n = int64(x)
		default:
			return b, false
		}
		switch c.oid {
		case oidInt8:
			b = binary.BigEndian.AppendUint32(b, 8)
			return binary.BigEndian.AppendUint64(b, uint64(n)), true
		case oidInt4:
			if n < math.MinInt32 || n > math.MaxInt32 {
				return b, false
			}
			b = binary.BigEndian.AppendUint32(b, 4)
			return binary.BigEndian.AppendUint32(b, uint32(int32(n))), true
		default:
			if n < math.MinInt16 || n > math.MaxInt16 {
				return b, false
			}
			b = binary.BigEndian.AppendUint32(b, 2)
			return binary.BigEndian.AppendUint16(b, uint16(int16(n))), true
		}
	case oidText, oidVarchar, oidBPChar:
		// The bytes of the text the INSERT would send: text's binary form.
		if s, ok := v.(string); ok {
			return appendBinaryBytes(b, s), true
		}
		t := encode(v, c)
		if !t.Valid {
			return b, false
		}
		return appendBinaryBytes(b, t.String), true
	case oidBool:
		x, ok := v.(bool)
		if !ok {
			return b, false
		}
		b = binary.BigEndian.AppendUint32(b, 1)
		if x {
			return append(b, 1), true
		}
		return append(b, 0), true
	case oidFloat8:
		x, ok := v.(float64)
		if !ok || math.IsNaN(x) {
			return b, false
		}
		b = binary.BigEndian.AppendUint32(b, 8)
		return binary.BigEndian.AppendUint64(b, math.Float64bits(x)), true
	case oidFloat4:
		x, ok := v.(float32)
		if !ok || x != x {
			return b, false
		}
		b = binary.BigEndian.AppendUint32(b, 4)
		return binary.BigEndian.AppendUint32(b, math.Float32bits(x)), true
	case oidBytea:
		switch x := v.(type) {
		case []byte:
			return appendBinaryBytes(b, x), true
		case string:
			return appendBinaryBytes(b, x), true
		}
		return b, false
	case oidDate:
		d, ok := v.(source.Date)
		if !ok {
			return b, false
		}
		days, ok := parseDate(string(d))
		if !ok {
			return b, false
		}
		b = binary.BigEndian.AppendUint32(b, 4)
		return binary.BigEndian.AppendUint32(b, uint32(int32(days-pgEpochDays))), true
	case oidTS, oidTimestamptz:
		// timestamp: a zone-less date and time, as its text would be read;
		// timestamptz: only the UTC instants of Timestamp (encode adds
		// "+00"), not zone-less text the session's zone would place.
		var s string
		switch x := v.(type) {
		case source.DateTime:
			if c.oid != oidTS {
				return b, false
			}
			s = string(x)
		case source.Timestamp:
			s = string(x)
		default:
			return b, false
		}
		us, ok := parseDateTime(s)
		if !ok {
			return b, false
		}
		b = binary.BigEndian.AppendUint32(b, 8)
		return binary.BigEndian.AppendUint64(b, uint64(us)), true
	}
	return b, false
}

func appendBinaryBytes[T string | []byte](b []byte, s T) []byte {
	b = binary.BigEndian.AppendUint32(b, uint32(len(s)))
	return append(b, s...)
}

// parseDate parses "YYYY-MM-DD" (years 1 to 9999, a real calendar day) into
// days since 1970-01-01.
func parseDate(s string) (int64, bool) {
	if len(s) != 10 || s[4] != '-' || s[7] != '-' {
		return 0, false
	}
	y, ok1 := num(s[0:4])
	m, ok2 := num(s[5:7])
	d, ok3 := num(s[8:10])
	if !ok1 || !ok2 || !ok3 || y < 1 || m < 1 || m > 12 || d < 1 || d > daysIn(y, m) {
		return 0, false
	}
	return daysFromCivil(y, m, d), true
}

// parseDateTime parses "YYYY-MM-DD HH:MM:SS[.f]" with at most 6 fraction
// digits (hours below 24, seconds below 60) into microseconds since
// 2000-01-01 00:00:00.
func parseDateTime(s string) (int64, bool) {
	if len(s) < 19 || s[10] != ' ' || s[13] != ':' || s[16] != ':' {
		return 0, false
	}
	days, ok := parseDate(s[:10])
	if !ok {
		return 0, false
	}
	h, ok1 := num(s[11:13])
	mi, ok2 := num(s[14:16])
	sec, ok3 := num(s[17:19])
	if !ok1 || !ok2 || !ok3 || h > 23 || mi > 59 || sec > 59 {
		return 0, false
	}
	var us int64
	if frac := s[19:]; frac != "" {
		if frac[0] != '.' || len(frac) < 2 || len(frac) > 7 {
			return 0, false
		}
		f, ok := num(frac[1:])
		if !ok {
			return 0, false
		}
		for range 7 - len(frac) {
			f *= 10
		}
		us = f
	}
	secs := (days-pgEpochDays)*86400 + h*3600 + mi*60 + sec
	return secs*1_000_000 + us, true
}

// num parses a string of decimal digits.
func num(s string) (int64, bool) {
	var n int64
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c < '0' || c > '9' {
			return 0, false
		}
		n = n*10 + int64(c-'0')
	}
	return n, s != ""
}

func daysIn(y, m int64) int64 {
	switch m {
	case 2:
		if y%4 == 0 && (y%100 != 0 || y%400 == 0) {
			return 29
		}
		return 28
	case 4, 6, 9, 11:
		return 30
	}
	return 31
}

// daysFromCivil is the number of days from 1970-01-01 to the proleptic
// Gregorian date y-m-d (the calendar PostgreSQL's dates use).
func daysFromCivil(y, m, d int64) int64 {
	if m <= 2 {
		y--
	}
	era := y / 400 // y >= 0 here
	yoe := y - era*400
	mp := (m + 9) % 12
	doy := (153*mp+2)/5 + d - 1
	doe := yoe*365 + yoe/4 - yoe/100 + doy
	return era*146097 + doe - 719468
}
