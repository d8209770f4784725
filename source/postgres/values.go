package postgres

import (
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5/pgtype"

	"github.com/regiond/regiond/internal/box"
	"github.com/regiond/regiond/source"
)

// kind is how a column's text value (pgoutput sends text-format tuples)
// becomes a canonical value of source/values.go.
type kind uint8

const (
	kindString kind = iota // anything else, incl. enums, arrays, uuid, inet, interval, timetz
	kindInt
	kindFloat32
	kindFloat64
	kindDecimal
	kindBool
	kindBytes
	kindDate
	kindDateTime
	kindTimestamp
	kindTime
	kindJSON
	kindBits
)

// builtinKinds maps the type OIDs that do not become plain strings.
// User-defined types (enums, composites, extension types such as citext)
// are strings; domains take the kind of their base type (resolved from the
// catalog, see stream.typeKinds).
var builtinKinds = map[uint32]kind{
	pgtype.Int2OID:        kindInt,
	pgtype.Int4OID:        kindInt,
	pgtype.Int8OID:        kindInt,
	pgtype.OIDOID:         kindInt,
	pgtype.Float4OID:      kindFloat32,
	pgtype.Float8OID:      kindFloat64,
	pgtype.NumericOID:     kindDecimal,
	pgtype.BoolOID:        kindBool,
	pgtype.ByteaOID:       kindBytes,
	pgtype.DateOID:        kindDate,
	pgtype.TimestampOID:   kindDateTime,
	pgtype.TimestamptzOID: kindTimestamp,
	pgtype.TimeOID:        kindTime,
	pgtype.JSONOID:        kindJSON,
	pgtype.JSONBOID:       kindJSON,
	pgtype.BitOID:         kindBits,
	pgtype.VarbitOID:      kindBits,
}

// isBuiltin reports whether oid is one of PostgreSQL's own types, whose
// kind needs no catalog lookup (they are never domains).
func isBuiltin(oid uint32) bool {
	const firstNormalObjectID = 16384
	return oid < firstNormalObjectID
}

// errUnrepresentable marks a value that exists in PostgreSQL but has no
// canonical form (NaN numeric, infinite timestamps, BC dates).
var errUnrepresentable = errors.New("not representable in regiond's value model")

// convert turns one text-format value into its canonical value. precision
// is the column's declared fractional-second precision for time and
// timestamp types (the attribute's typmod), or -1.
//
// a, when not nil, holds the string values' text (see arena); nil
// allocates each string of its own.
func convert(a *arena, k kind, precision int32, text []byte) (any, error) {
	// Numbers and booleans are parsed from text without a string of their
	// own (the conversions below do not escape): one allocation less per
	// value, per row.
	switch k {
	case kindInt:
		v, err := strconv.ParseInt(string(text), 10, 64)
		if err != nil {
			return nil, fmt.Errorf("integer %q: %v", text, err)
		}
		return a.int(v), nil
	case kindFloat32:
		v, err := strconv.ParseFloat(string(text), 32)
		if err != nil {
			return nil, fmt.Errorf("real %q: %v", text, err)
		}
		return float32(v), nil
	case kindFloat64:
		v, err := strconv.ParseFloat(string(text), 64)
		if err != nil {
			return nil, fmt.Errorf("double precision %q: %v", text, err)
		}
		return v, nil
	case kindBool:
		switch string(text) {
		case "t":
			return true, nil
		case "f":
			return false, nil
		}
		return nil, fmt.Errorf("boolean %q: want t or f", text)
	}
	s := a.str(text)
	switch k {
	case kindDecimal:
		switch s {
		case "NaN", "Infinity", "-Infinity":
			return nil, fmt.Errorf("numeric %s: %w (no other engine stores it)", s, errUnrepresentable)
		}
		if s == "" {
			return nil, fmt.Errorf("numeric: empty text")
		}
		return boxString(a, source.Decimal(s)), nil
	case kindBytes:
		return decodeBytea(s)
	case kindDate:
		if err := checkFinite("date", s); err != nil {
			return nil, err
		}
		if !isDate(s) {
			return nil, fmt.Errorf("date %q: want YYYY-MM-DD (DateStyle ISO)", s)
		}
		return boxString(a, source.Date(s)), nil
	case kindDateTime:
		if err := checkFinite("timestamp", s); err != nil {
			return nil, err
		}
		d, t, ok := strings.Cut(s, " ")
		if !ok || !isDate(d) || !isClock(t) {
			return nil, fmt.Errorf("timestamp %q: want YYYY-MM-DD HH:MM:SS[.ffffff]", s)
		}
		if p := padFraction(t, precision); p != t {
			return boxString(a, source.DateTime(d+" "+p)), nil
		}
		return boxString(a, source.DateTime(s)), nil
	case kindTimestamp:
		if err := checkFinite("timestamptz", s); err != nil {
			return nil, err
		}
		v, err := timestampUTC(s)
		if err != nil {
			return nil, err
		}
		d, t, _ := strings.Cut(v, " ")
		if p := padFraction(t, precision); p != t {
			return boxString(a, source.Timestamp(d+" "+p)), nil
		}
		return boxString(a, source.Timestamp(v)), nil
	case kindTime:
		if !isClock(s) {
			return nil, fmt.Errorf("time %q: want HH:MM:SS[.ffffff]", s)
		}
		return boxString(a, source.Time(padFraction(s, precision))), nil
	case kindJSON:
		return boxString(a, source.JSON(s)), nil
	case kindBits:
		for i := 0; i < len(s); i++ {
			if s[i] != '0' && s[i] != '1' {
				return nil, fmt.Errorf("bit string %q: want 0s and 1s", s)
			}
		}
		return boxString(a, source.Bits(s)), nil
	}
	return boxString(a, s), nil
}

// checkFinite rejects the special values and BC dates of PostgreSQL's
// date/time types, which no other engine (and no canonical form) has.
func checkFinite(typ, s string) error {
	switch {
	case s == "infinity" || s == "-infinity":
		return fmt.Errorf("%s %s: %w (no other engine stores it)", typ, s, errUnrepresentable)
	case strings.HasSuffix(s, " BC"):
		return fmt.Errorf("%s %q: %w (dates before year 1 exist only in PostgreSQL)", typ, s, errUnrepresentable)
	}
	return nil
}

// isDate reports whether s is YYYY-MM-DD (with four or more year digits).
func isDate(s string) bool {
	y, rest, ok := strings.Cut(s, "-")
	if !ok || len(y) < 4 || !digits(y) || len(rest) != 5 || rest[2] != '-' {
		return false
	}
	return digits(rest[:2]) && digits(rest[3:])
}

// isClock reports whether s is HH:MM:SS[.f...].
func isClock(s string) bool {
	if len(s) < 8 || s[2] != ':' || s[5] != ':' || !digits(s[:2]) || !digits(s[3:5]) || !digits(s[6:8]) {
		return false
	}
	if len(s) == 8 {
		return true
	}
	return s[8] == '.' && len(s) > 9 && digits(s[9:])
}

func digits(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return s != ""
}

// padFraction writes the fractional seconds of clock (HH:MM:SS[.f...]) with
// exactly precision digits when the column declares a precision of 1 to 6,
// as MySQL prints DATETIME(fsp): PostgreSQL trims trailing zeros. Without a
// declared precision (-1), or with precision 0, the text is left as it is.
func padFraction(clock string, precision int32) string {
	if precision < 1 || precision > 6 {
		return clock
	}
	base, frac, _ := strings.Cut(clock, ".")
	if len(frac) >= int(precision) {
		return clock
	}
	return base + "." + frac + strings.Repeat("0", int(precision)-len(frac))
}

// timestampUTC turns timestamptz text ("YYYY-MM-DD HH:MM:SS[.f]+00", the
// offset being the session TimeZone's, which regiond pins to UTC) into
// "YYYY-MM-DD HH:MM:SS[.f]" in UTC.
func timestampUTC(s string) (string, error) {
	i := strings.LastIndexAny(s, "+-")
	if i < 0 || i < strings.IndexByte(s, ' ') {
		return "", fmt.Errorf("timestamptz %q: no UTC offset", s)
	}
	base, off := s[:i], s[i:]
	d, t, ok := strings.Cut(base, " ")
	if !ok || !isDate(d) || !isClock(t) {
		return "", fmt.Errorf("timestamptz %q: want YYYY-MM-DD HH:MM:SS[.ffffff]+00", s)
	}
	secs, err := parseOffset(off)
	if err != nil {
		return "", fmt.Errorf("timestamptz %q: %v", s, err)
	}
	if secs == 0 {
		return base, nil
	}
	// Not UTC: the session's TimeZone was not regiond's. Convert.
	clock, frac, _ := strings.Cut(t, ".")
	tm, err := time.Parse("2006-01-02 15:04:05", d+" "+clock)
	if err != nil {
		return "", fmt.Errorf("timestamptz %q: %v", s, err)
	}
	tm = tm.Add(-time.Duration(secs) * time.Second)
	if tm.Year() < 1 {
		return "", fmt.Errorf("timestamptz %q: %w (before year 1 in UTC)", s, errUnrepresentable)
	}
	out := tm.Format("2006-01-02 15:04:05")
	if frac != "" {
		out += "." + frac
	}
	return out, nil
}

// parseOffset parses a UTC offset as PostgreSQL prints it: +HH[:MM[:SS]].
func parseOffset(off string) (int, error) {
	sign := 1
	if off[0] == '-' {
		sign = -1
	}
	parts := strings.Split(off[1:], ":")
	if len(parts) > 3 {
		return 0, fmt.Errorf("bad UTC offset %q", off)
	}
	secs, mult := 0, 3600
	for _, p := range parts {
		if len(p) != 2 || !digits(p) {
			return 0, fmt.Errorf("bad UTC offset %q", off)
		}
		n, _ := strconv.Atoi(p)
		secs += n * mult
		mult /= 60
	}
	return sign * secs, nil
}

// decodeBytea decodes bytea text output: hex ("\x0102", regiond's
// bytea_output) or, should a server send it, the escape format. The result
// is never nil, so that an empty value is not mistaken for NULL.
func decodeBytea(s string) ([]byte, error) {
	if h, ok := strings.CutPrefix(s, `\x`); ok {
		b := make([]byte, len(h)/2)
		if _, err := hex.Decode(b, []byte(h)); err != nil {
			return nil, fmt.Errorf("bytea: %v", err)
		}
		return b, nil
	}
	b := make([]byte, 0, len(s))
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c != '\\' {
			b = append(b, c)
			continue
		}
		switch {
		case i+1 < len(s) && s[i+1] == '\\':
			b = append(b, '\\')
			i++
		case i+3 < len(s) && s[i+1] >= '0' && s[i+1] <= '3' && isOctal(s[i+2]) && isOctal(s[i+3]):
			b = append(b, (s[i+1]-'0')<<6|(s[i+2]-'0')<<3|(s[i+3]-'0'))
			i += 3
		default:
			return nil, fmt.Errorf("bytea: bad escape at byte %d", i)
		}
	}
	return b, nil
}

func isOctal(c byte) bool { return c >= '0' && c <= '7' }

// Canonical converts one value in PostgreSQL's text output (as pgoutput
// sends it, under regiond's session settings) into the canonical value this
// reader produces for a column of type oid with type modifier typmod
// (pg_attribute.atttypid and atttypmod). For a column of a domain type,
// pass the domain's (fully resolved) base type and typmod -1, as the reader
// treats domains. Types that are not PostgreSQL's own become strings.
// Sinks use it to read target rows back exactly as a reader of the
// target's log would, so that row hashes compare.
func Canonical(oid uint32, typmod int32, text string) (any, error) {
	k := kindString
	if isBuiltin(oid) {
		k = builtinKinds[oid]
	}
	precision := int32(-1)
	switch k {
	case kindTime, kindDateTime, kindTimestamp:
		if isBuiltin(oid) && typmod >= 0 {
			precision = typmod
		}
	}
	return convert(nil, k, precision, []byte(text))
}

// arena holds what the decoder's values are made of, so that a value costs
// no allocation of its own: the text of string values (box.Text), the
// string headers and integers their interfaces point to (box.Slab), and
// rows (a slab of values). A nil arena allocates each value as Go does.
type arena struct {
	text box.Text
	strs box.Slab[string]
	ints box.Slab[int64]
	rows box.Values
}

// str returns b as a string.
func (a *arena) str(b []byte) string {
	if a == nil {
		return string(b)
	}
	return a.text.String(b)
}

// int returns n in an interface.
func (a *arena) int(n int64) any {
	if a == nil {
		return n
	}
	return box.Int64(&a.ints, n)
}

// boxString returns s in an interface.
func boxString[T ~string](a *arena, s T) any {
	if a == nil {
		return s
	}
	return box.String(&a.strs, s)
}

// row returns a row of n nil values.
func (a *arena) row(n int) source.Row { return a.rows.Take(n) }
