package mysql

import (
	"encoding/binary"
	"fmt"
	"math"
	"strconv"
	"time"
	"unsafe"

	gomysql "github.com/go-mysql-org/go-mysql/mysql"
	"github.com/go-mysql-org/go-mysql/replication"
	"golang.org/x/text/encoding"

	"github.com/regiond/regiond/internal/box"
	"github.com/regiond/regiond/source"
)

// Row images are decoded here rather than by go-mysql, for the column types
// that make up nearly every table, because go-mysql's decoding was most of
// the reader's CPU: it boxes every value in a go-mysql type, formats every
// DATETIME with fmt.Sprintf, rebuilds the table's signedness map for every
// row, and convert then boxes each value a second time.
//
// The fast path is defined as "exactly what go-mysql's decoding followed by
// tableDef.convert returns", not by MySQL's documentation: each case below
// repeats go-mysql v1.16's arithmetic and formatting (ParseTime off,
// TimestampStringLocation UTC, UseDecimal off) and then what convert does
// with the result. Anything it does not handle in exactly that way — a
// column type not listed in fastColumn, a value outside what the server
// writes (a fraction of more than six digits, a decimal group above
// 999,999,999), a partial row image, a compressed event — makes it decline,
// and the event is decoded by go-mysql and convert as before.
// TestFastDecodeMatchesGoMySQL (fastdecode_test.go) reads the same binlog
// both ways, over every type and the edge values of each, and fails on any
// difference in a value or its Go type.

// rawImages carries a rows event's undecoded row images from go-mysql's
// parsing goroutine to the reader. It is the only element of the event's
// Rows until the reader decodes them.
type rawImages struct {
	data []byte // the event's body: post-header, payload, no checksum
	pos  int    // where the first row image starts in data
}

// deferRowsDecode is go-mysql's RowsEventDecodeFunc: it decodes only the
// header, which resolves the table map (go-mysql keeps its table maps in the
// parsing goroutine), and leaves the row images to the reader. The reader
// then decodes only the events of configured tables, and those of
// transactions it does not skip. data is the event's own buffer (go-mysql
// reads every packet into a new one), so keeping it is safe.
func deferRowsDecode(e *replication.RowsEvent, data []byte) error {
	pos, err := e.DecodeHeader(data)
	if err != nil {
		return err
	}
	// One allocation for the images and the one-row Rows that carries them
	// (boxing rawImages and building [][]any{{…}} took three).
	d := &deferredRows{img: rawImages{data: data, pos: pos}}
	d.row[0] = &d.img
	d.rows[0] = d.row[:]
	e.Rows = d.rows[:]
	return nil
}

// deferredRows is what deferRowsDecode leaves in a rows event.
type deferredRows struct {
	img  rawImages
	row  [1]any
	rows [1][]any
}

// takeImages returns the raw images deferRowsDecode left in e.
func takeImages(e *replication.RowsEvent) (rawImages, bool) {
	if len(e.Rows) != 1 || len(e.Rows[0]) != 1 {
		return rawImages{}, false
	}
	raw, ok := e.Rows[0][0].(*rawImages)
	if !ok {
		return rawImages{}, false
	}
	return *raw, true
}

// fastOp is how fastImage decodes one column.
type fastOp uint8

const (
	opInt        fastOp = iota + 1 // signed little-endian integer of size bytes
	opUint                         // unsigned little-endian integer of size bytes
	opYear                         // one byte, years since 1900 (0 stays 0)
	opFloat                        // float32
	opDouble                       // float64
	opDecimal                      // NEWDECIMAL(prec, scale)
	opDate                         // 3-byte DATE
	opDateTime2                    // DATETIME(dec), 5.6 format
	opTimestamp2                   // TIMESTAMP(dec), 5.6 format
	opTime2                        // TIME(dec), 5.6 format
	opString                       // length-prefixed bytes (size: prefix bytes)
	opEnum                         // ENUM index of size bytes
	opSet                          // SET bits of size bytes
	opBit                          // BIT, big-endian in size bytes
)

// fastCol is the plan for one column of a fast-decodable table.
type fastCol struct {
	op   fastOp
	size int // value width, or length-prefix width for opString
	// dec is the fractional digits of a temporal type, the scale of a
	// decimal.
	dec, prec int
	bits      int // BIT width
	// text: character data, returned as a UTF-8 string (through conv when
	// the charset is not UTF-8); otherwise binary, []byte padded to pad.
	text  bool
	conv  *encoding.Decoder
	pad   int
	names []string // ENUM/SET value names
}

// fastColumns returns the plan for every column of def's table map, or nil
// when a column is of a type the fast path leaves to go-mysql.
func (def *tableDef) fastColumns(tm *replication.TableMapEvent, unsigned map[int]bool) []fastCol {
	cols := make([]fastCol, len(tm.ColumnType))
	for i, tp := range tm.ColumnType {
		c, ok := def.fastColumn(i, tp, tm.ColumnMeta[i], unsigned[i])
		if !ok {
			return nil
		}
		cols[i] = c
	}
	return cols
}

func (def *tableDef) fastColumn(i int, tp byte, meta uint16, unsigned bool) (fastCol, bool) {
	op := opInt
	if unsigned {
		op = opUint
	}
	switch tp {
	case gomysql.MYSQL_TYPE_TINY:
		return fastCol{op: op, size: 1}, true
	case gomysql.MYSQL_TYPE_SHORT:
		return fastCol{op: op, size: 2}, true
	case gomysql.MYSQL_TYPE_INT24:
		return fastCol{op: op, size: 3}, true
	case gomysql.MYSQL_TYPE_LONG:
		return fastCol{op: op, size: 4}, true
	case gomysql.MYSQL_TYPE_LONGLONG:
		return fastCol{op: op, size: 8}, true
	case gomysql.MYSQL_TYPE_YEAR:
		return fastCol{op: opYear, size: 1}, true
	case gomysql.MYSQL_TYPE_FLOAT:
		return fastCol{op: opFloat, size: 4}, true
	case gomysql.MYSQL_TYPE_DOUBLE:
		return fastCol{op: opDouble, size: 8}, true
	case gomysql.MYSQL_TYPE_NEWDECIMAL:
		prec, scale := int(meta>>8), int(meta&0xff)
		if prec < 1 || prec > 65 || scale > 30 || scale > prec {
			return fastCol{}, false
		}
		return fastCol{op: opDecimal, prec: prec, dec: scale}, true
	case gomysql.MYSQL_TYPE_DATE:
		return fastCol{op: opDate, size: 3}, true
	case gomysql.MYSQL_TYPE_DATETIME2, gomysql.MYSQL_TYPE_TIMESTAMP2, gomysql.MYSQL_TYPE_TIME2:
		if meta > 6 {
			return fastCol{}, false
		}
		dec := int(meta)
		switch tp {
		case gomysql.MYSQL_TYPE_DATETIME2:
			return fastCol{op: opDateTime2, size: 5 + (dec+1)/2, dec: dec}, true
		case gomysql.MYSQL_TYPE_TIMESTAMP2:
			return fastCol{op: opTimestamp2, size: 4 + (dec+1)/2, dec: dec}, true
		}
		return fastCol{op: opTime2, size: 3 + (dec+1)/2, dec: dec}, true
	case gomysql.MYSQL_TYPE_BIT:
		nbits := int(meta>>8)*8 + int(meta&0xff)
		n := (nbits + 7) / 8
		if nbits < 1 || n > 8 || nbits != def.bits[i] {
			return fastCol{}, false
		}
		return fastCol{op: opBit, size: n, bits: nbits}, true
	case gomysql.MYSQL_TYPE_VARCHAR, gomysql.MYSQL_TYPE_VAR_STRING:
		return def.stringColumn(i, int(meta))
	case gomysql.MYSQL_TYPE_BLOB:
		if meta < 1 || meta > 4 {
			return fastCol{}, false
		}
		c, ok := def.stringColumn(i, 0)
		c.size = int(meta)
		return c, ok
	case gomysql.MYSQL_TYPE_STRING:
		// go-mysql's unpacking of the real type and the maximum length.
		real, length := tp, int(meta)
		if meta >= 256 {
			b0, b1 := uint8(meta>>8), uint8(meta&0xff)
			if b0&0x30 != 0x30 {
				length = int(uint16(b1) | uint16((b0&0x30)^0x30)<<4)
				real = b0 | 0x30
			} else {
				length = int(meta & 0xff)
				real = b0
			}
		}
		switch real {
		case gomysql.MYSQL_TYPE_STRING:
			return def.stringColumn(i, length)
		case gomysql.MYSQL_TYPE_ENUM:
			names, ok := def.enums[i]
			n := int(meta & 0xff)
			if !ok || (n != 1 && n != 2) {
				return fastCol{}, false
			}
			return fastCol{op: opEnum, size: n, names: names}, true
		case gomysql.MYSQL_TYPE_SET:
			names, ok := def.sets[i]
			n := int(meta & 0xff)
			if !ok || n < 1 || n > 8 {
				return fastCol{}, false
			}
			return fastCol{op: opSet, size: n, names: names}, true
		}
	}
	return fastCol{}, false
}

// stringColumn plans a character or binary column whose values carry a
// length prefix of one byte when its maximum length is below 256, else two.
func (def *tableDef) stringColumn(i, maxLen int) (fastCol, bool) {
	if _, ok := def.enums[i]; ok {
		return fastCol{}, false
	}
	if _, ok := def.sets[i]; ok {
		return fastCol{}, false
	}
	c := fastCol{op: opString, size: 1}
	if maxLen >= 256 {
		c.size = 2
	}
	conv, text := def.text[i]
	c.text, c.conv, c.pad = text, conv, def.pad[i]
	return c, true
}

// fastRows decodes the images of e with def's plan. ok is false when the
// event is not one the plan covers; err is a value convert would reject too
// (a character that is invalid in its column's charset).
func (def *tableDef) fastRows(et replication.EventType, e *replication.RowsEvent, raw rawImages, a *arena) (rows []source.Row, ok bool, err error) {
	switch et {
	case replication.WRITE_ROWS_EVENTv1, replication.WRITE_ROWS_EVENTv2,
		replication.UPDATE_ROWS_EVENTv1, replication.UPDATE_ROWS_EVENTv2,
		replication.DELETE_ROWS_EVENTv1, replication.DELETE_ROWS_EVENTv2:
	default:
		return nil, false, nil // compressed, partial or v0 events
	}
	n := len(def.fast)
	if int(e.ColumnCount) != n || !allSet(e.ColumnBitmap1, n) {
		return nil, false, nil
	}
	update := e.Type() == replication.EnumRowsEventTypeUpdate
	if update && !allSet(e.ColumnBitmap2, n) {
		return nil, false, nil
	}
	defer func() {
		// Truncated data: go-mysql decides what that is.
		if recover() != nil {
			rows, ok, err = nil, false, nil
		}
	}()
	data := raw.data[raw.pos:]
	img := &imageReader{data: data, arena: a}
	rows = a.events[:0]
	for img.pos < len(data) {
		row := source.Row(a.rows.Take(n))
		ok, err := def.fastImage(img, row)
		if !ok || err != nil {
			return nil, ok, err
		}
		rows = append(rows, row)
	}
	if update && len(rows)%2 != 0 {
		return nil, false, nil
	}
	a.events = rows[:0]
	return rows, true, nil
}

// allSet reports whether the first n bits of bitmap are set: the image
// carries every column (binlog_row_image=FULL).
func allSet(bitmap []byte, n int) bool {
	if len(bitmap) < (n+7)/8 {
		return false
	}
	for i := range n {
		if bitmap[i>>3]&(1<<(uint(i)&7)) == 0 {
			return false
		}
	}
	return true
}

// imageReader walks the row images of one event.
type imageReader struct {
	data  []byte
	pos   int
	arena *arena
}

// arena is what the fast decoder's rows are made of, so that a value costs
// no allocation of its own (see package box): the text of formatted values
// (dates, times, decimals), the slabs the values' interfaces point into,
// and the rows themselves.
type arena struct {
	text  box.Text
	strs  box.Slab[string]
	ints  box.Slab[int64]
	uints box.Slab[uint64]
	rows  box.Values
	// events is the slice fastRows returns an event's rows in, used again
	// for the next event's: the caller keeps the rows, not the slice.
	events []source.Row
}

func (a *arena) str(b []byte) string { return a.text.String(b) }

// substr returns data[from:to] as a string without copying it. That is
// sound because the event's buffer is its own (go-mysql reads each packet
// into a new slice) and nothing writes to it after it was read: go-mysql's
// own decoding returns strings that alias the same buffer in the same way,
// which is what the reader kept before this decoder existed.
func (r *imageReader) substr(from, to int) string {
	if from == to {
		return ""
	}
	return unsafe.String(&r.data[from], to-from)
}

// fastImage decodes one row image (null bitmap, then the non-null values)
// into row.
func (def *tableDef) fastImage(r *imageReader, row source.Row) (bool, error) {
	n := len(def.fast)
	var tmp [80]byte // a formatted value, before it goes to r.arena
	nulls := r.data[r.pos : r.pos+(n+7)/8]
	r.pos += (n + 7) / 8
	for i := range def.fast {
		if nulls[i>>3]&(1<<(uint(i)&7)) != 0 {
			row[i] = nil
			continue
		}
		c := &def.fast[i]
		d := r.data[r.pos:]
		var v any
		size := c.size
		switch c.op {
		case opInt:
			v = box.Int64(&r.arena.ints, leInt(d, c.size))
		case opUint:
			v = box.Uint64(&r.arena.uints, leUint(d, c.size))
		case opYear:
			y := int64(d[0])
			if y != 0 {
				y += 1900
			}
			v = box.Int64(&r.arena.ints, y)
		case opFloat:
			v = math.Float32frombits(binary.LittleEndian.Uint32(d))
		case opDouble:
			v = math.Float64frombits(binary.LittleEndian.Uint64(d))
		case opDecimal:
			s, m, ok := decodeDecimal(tmp[:0], d, c.prec, c.dec)
			if !ok {
				return false, nil
			}
			v, size = box.String(&r.arena.strs, source.Decimal(r.arena.str(s))), m
		case opDate:
			u := uint64(d[0]) | uint64(d[1])<<8 | uint64(d[2])<<16
			if u == 0 {
				v = source.Date("0000-00-00")
				break
			}
			out := appendPadded(tmp[:0], u/(16*32), 4)
			out = append(out, '-')
			out = appendPadded(out, u/32%16, 2)
			out = append(out, '-')
			out = appendPadded(out, u%32, 2)
			v = box.String(&r.arena.strs, source.Date(r.arena.str(out)))
		case opDateTime2:
			s, ok := decodeDateTime2(tmp[:0], d, c.dec)
			if !ok {
				return false, nil
			}
			v = box.String(&r.arena.strs, source.DateTime(r.arena.str(s)))
		case opTimestamp2:
			s, ok := decodeTimestamp2(tmp[:0], d, c.dec)
			if !ok {
				return false, nil
			}
			v = box.String(&r.arena.strs, source.Timestamp(r.arena.str(s)))
		case opTime2:
			s, ok := decodeTime2(tmp[:0], d, c.dec)
			if !ok {
				return false, nil
			}
			v = box.String(&r.arena.strs, source.Time(r.arena.str(s)))
		case opBit:
			var u uint64
			for _, x := range d[:c.size] {
				u = u<<8 | uint64(x)
			}
			v = source.BitsFromUint(u, c.bits)
		case opEnum:
			v = enumName(c.names, int64(leUint(d, c.size)))
		case opSet:
			v = setNames(c.names, int64(leUint(d, c.size)))
		case opString:
			var l int
			switch c.size {
			case 1:
				l = int(d[0])
			case 2:
				l = int(binary.LittleEndian.Uint16(d))
			case 3:
				l = int(d[0]) | int(d[1])<<8 | int(d[2])<<16
			case 4:
				l = int(binary.LittleEndian.Uint32(d))
			}
			b := d[c.size : c.size+l]
			size = c.size + l
			switch {
			case !c.text:
				// An empty value stays non-nil: nil would be NULL.
				v = padBinary(append(make([]byte, 0, max(l, c.pad)), b...), c.pad)
			case c.conv == nil:
				start := r.pos + c.size
				v = box.String(&r.arena.strs, r.substr(start, start+l))
			default:
				s, err := decodeText(c.conv, b)
				if err != nil {
					return true, fmt.Errorf("table %s column %s: %w", def.table.Name, def.table.Columns[i].Name, err)
				}
				v = box.String(&r.arena.strs, s)
			}
		}
		row[i] = v
		r.pos += size
	}
	return true, nil
}

func leUint(d []byte, size int) uint64 {
	switch size {
	case 1:
		return uint64(d[0])
	case 2:
		return uint64(binary.LittleEndian.Uint16(d))
	case 3:
		return uint64(d[0]) | uint64(d[1])<<8 | uint64(d[2])<<16
	case 4:
		return uint64(binary.LittleEndian.Uint32(d))
	}
	var u uint64
	for i := size - 1; i >= 0; i-- {
		u = u<<8 | uint64(d[i])
	}
	return u
}

func leInt(d []byte, size int) int64 {
	switch size {
	case 1:
		return int64(int8(d[0]))
	case 2:
		return int64(int16(binary.LittleEndian.Uint16(d)))
	case 3:
		u := uint32(d[0]) | uint32(d[1])<<8 | uint32(d[2])<<16
		if u&0x800000 != 0 {
			u |= 0xff000000
		}
		return int64(int32(u))
	case 4:
		return int64(int32(binary.LittleEndian.Uint32(d)))
	}
	return int64(binary.LittleEndian.Uint64(d))
}

func beUint(d []byte) uint64 {
	var u uint64
	for _, x := range d {
		u = u<<8 | uint64(x)
	}
	return u
}

// appendPadded appends v in decimal with at least width digits, as
// fmt's %0<width>d does for a non-negative value. The widths the temporal
// and decimal formats use (2, 4, 6, 9) are written digit by digit into
// place: strconv and a copy cost more than the digits themselves, and a
// DATETIME has seven such fields.
func appendPadded(b []byte, v uint64, width int) []byte {
	switch {
	case width == 2 && v < 100:
		return append(b, byte('0'+v/10), byte('0'+v%10))
	case width <= 9 && v < pow10[width]:
		n := len(b)
		b = append(b, "000000000"[:width]...)
		for i := n + width - 1; v > 0; i-- {
			b[i] = byte('0' + v%10)
			v /= 10
		}
		return b
	}
	var tmp [20]byte
	s := strconv.AppendUint(tmp[:0], v, 10)
	for range width - len(s) {
		b = append(b, '0')
	}
	return append(b, s...)
}

// appendFrac appends "." and the first dec of frac's six digits, as
// go-mysql does (format %06d, then cut); frac must be below 10^6.
func appendFrac(b []byte, frac uint64, dec int) []byte {
	if dec == 0 {
		return b
	}
	return appendPadded(append(b, '.'), frac/pow10[6-dec], dec)
}

// fracOf reads a temporal value's fractional part as go-mysql does:
// microseconds, from 0, 1, 2 or 3 big-endian bytes by dec.
func fracOf(d []byte, dec int) uint64 {
	switch dec {
	case 1, 2:
		return uint64(d[0]) * 10000
	case 3, 4:
		return uint64(binary.BigEndian.Uint16(d)) * 100
	case 5, 6:
		return beUint(d[:3])
	}
	return 0
}

// decodeDateTime2 is go-mysql's decodeDatetime2 with ParseTime off.
func decodeDateTime2(b []byte, d []byte, dec int) ([]byte, bool) {
	intPart := int64(beUint(d[:5])) - 0x8000000000
	frac := fracOf(d[5:], dec)
	if frac > 999999 || intPart < 0 {
		return nil, false
	}
	if intPart == 0 {
		return appendFrac(append(b, "0000-00-00 00:00:00"...), frac, dec), true
	}
	ymd := uint64(intPart) >> 17
	ym := ymd >> 5
	hms := uint64(intPart) % (1 << 17)
	out := appendPadded(b, ym/13, 4)
	out = append(out, '-')
	out = appendPadded(out, ym%13, 2)
	out = append(out, '-')
	out = appendPadded(out, ymd%(1<<5), 2)
	out = append(out, ' ')
	out = appendPadded(out, hms>>12, 2)
	out = append(out, ':')
	out = appendPadded(out, (hms>>6)%(1<<6), 2)
	out = append(out, ':')
	out = appendPadded(out, hms%(1<<6), 2)
	return appendFrac(out, frac, dec), true
}

// decodeTimestamp2 is go-mysql's decodeTimestamp2, formatted in UTC as
// its fracTime does (time.Format truncates to dec digits).
func decodeTimestamp2(b []byte, d []byte, dec int) ([]byte, bool) {
	sec := int64(binary.BigEndian.Uint32(d))
	usec := fracOf(d[4:], dec)
	if usec > 999999 {
		return nil, false
	}
	if sec == 0 {
		return appendFrac(append(b, "0000-00-00 00:00:00"...), usec, dec), true
	}
	t := time.Unix(sec, int64(usec)*1000).UTC()
	year, month, day := t.Date()
	hour, minute, second := t.Clock()
	out := appendPadded(b, uint64(year), 4)
	out = append(out, '-')
	out = appendPadded(out, uint64(month), 2)
	out = append(out, '-')
	out = appendPadded(out, uint64(day), 2)
	out = append(out, ' ')
	out = appendPadded(out, uint64(hour), 2)
	out = append(out, ':')
	out = appendPadded(out, uint64(minute), 2)
	out = append(out, ':')
	out = appendPadded(out, uint64(second), 2)
	return appendFrac(out, uint64(t.Nanosecond()/1000), dec), true
}

// decodeTime2 is go-mysql's decodeTime2 and timeFormat.
func decodeTime2(b []byte, d []byte, dec int) ([]byte, bool) {
	const intOfs, ofs = 0x800000, 0x800000000000
	var tmp, intPart, frac int64
	switch dec {
	case 1, 2:
		intPart = int64(beUint(d[:3])) - intOfs
		frac = int64(d[3])
		if intPart < 0 && frac != 0 {
			// Negative values store the fraction reversed.
			intPart++
			frac -= 0x100
		}
		tmp = intPart<<24 + frac*10000
	case 3, 4:
		intPart = int64(beUint(d[:3])) - intOfs
		frac = int64(binary.BigEndian.Uint16(d[3:]))
		if intPart < 0 && frac != 0 {
			intPart++
			frac -= 0x10000
		}
		tmp = intPart<<24 + frac*100
	case 5, 6:
		tmp = int64(beUint(d[:6])) - ofs
	default:
		intPart = int64(beUint(d[:3])) - intOfs
		tmp = intPart << 24
	}
	if dec < 5 && intPart == 0 && frac == 0 {
		return append(b, "00:00:00"...), true
	}
	out := b
	if tmp < 0 {
		tmp = -tmp
		out = append(out, '-')
	}
	hms := tmp >> 24
	secPart := tmp % (1 << 24)
	if secPart > 999999 {
		return nil, false
	}
	out = appendPadded(out, uint64((hms>>12)%(1<<10)), 2)
	out = append(out, ':')
	out = appendPadded(out, uint64((hms>>6)%(1<<6)), 2)
	out = append(out, ':')
	out = appendPadded(out, uint64(hms%(1<<6)), 2)
	if secPart != 0 {
		if dec == 0 {
			return nil, false // go-mysql would cut the string short
		}
		out = appendFrac(out, uint64(secPart), dec)
	}
	return out, true
}

// decimalBytes is how many bytes a group of 0..9 decimal digits takes.
var decimalBytes = [10]int{0, 1, 1, 2, 2, 3, 3, 4, 4, 4}

// decodeDecimal decodes a NEWDECIMAL(prec, scale) into go-mysql's text:
// a "-" when negative, the integer part without leading zeros ("0" when
// zero), and when scale > 0 a "." and exactly scale digits. It returns the
// value's size in bytes; ok is false for a group outside its digits' range.
func decodeDecimal(b []byte, d []byte, prec, scale int) ([]byte, int, bool) {
	intDigits := prec - scale
	intFull, intRest := intDigits/9, intDigits%9
	fracFull, fracRest := scale/9, scale%9
	size := intFull*4 + decimalBytes[intRest] + fracFull*4 + decimalBytes[fracRest]
	d = d[:size]
	// The sign is the first byte's high bit (set: positive); a negative
	// value stores every byte inverted.
	var mask byte
	neg := d[0]&0x80 == 0
	if neg {
		mask = 0xff
	}
	pos := 0
	group := func(nbytes int) uint64 {
		var v uint64
		for k := range nbytes {
			x := d[pos+k] ^ mask
			if pos+k == 0 {
				x ^= 0x80
			}
			v = v<<8 | uint64(x)
		}
		pos += nbytes
		return v
	}
	out := b
	if neg {
		out = append(out, '-')
	}
	leading := true // no integer digit written yet
	if intRest > 0 {
		v := group(decimalBytes[intRest])
		if v >= pow10[intRest] {
			return nil, 0, false
		}
		if v != 0 {
			out = strconv.AppendUint(out, v, 10)
			leading = false
		}
	}
	for range intFull {
		v := group(4)
		if v > 999999999 {
			return nil, 0, false
		}
		switch {
		case !leading:
			out = appendPadded(out, v, 9)
		case v != 0:
			out = strconv.AppendUint(out, v, 10)
			leading = false
		}
	}
	if leading {
		out = append(out, '0')
	}
	if scale > 0 {
		out = append(out, '.')
		for range fracFull {
			v := group(4)
			if v > 999999999 {
				return nil, 0, false
			}
			out = appendPadded(out, v, 9)
		}
		if fracRest > 0 {
			v := group(decimalBytes[fracRest])
			if v >= pow10[fracRest] {
				return nil, 0, false
			}
			out = appendPadded(out, v, fracRest)
		}
	}
	return out, size, true
}

var pow10 = [10]uint64{1, 10, 100, 1000, 10000, 100000, 1000000, 10000000, 100000000, 1000000000}
