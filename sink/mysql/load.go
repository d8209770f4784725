package mysql

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"sync/atomic"
	"unsafe"

	"github.com/go-sql-driver/mysql"

	"github.com/regiond/regiond/internal/mysqlconn"
	"github.com/regiond/regiond/source"
)

// Rows the log says are absent (see writeAbsent) can be written with LOAD
// DATA LOCAL INFILE instead of a multi-row INSERT: the server parses a
// tab-separated stream, not SQL, and the client sends the rows without
// building a statement. The stream comes from an io.Reader registered with
// the driver under a name of the writer's own (no file).
//
// LOAD DATA LOCAL behaves as LOAD DATA IGNORE on MariaDB and MySQL (the
// server cannot stop the client's upload halfway): a duplicate key skips the
// row and a bad value is stored clipped, each with a warning, even in strict
// mode. So every load is checked: the rows it inserted must be all the rows
// sent, and it must have left no warning. A load that fails that check has
// written something the plain INSERT would have refused, so the target
// transaction, which then holds only its marker write and the loads of the
// same Exec, is rolled back and the Exec is done again with plain INSERTs
// (see writer.Exec). That redo is the only way out: a SAVEPOINT would be
// logged to the binlog as a statement of its own inside regiond's
// transaction.

// errLoadRefused marks a load that the INSERT path must redo.
var errLoadRefused = errors.New("LOAD DATA skipped or changed rows")

// loadNames numbers the readers registered with the driver.
var loadNames atomic.Uint64

// loader is a writer's LOAD DATA state: the name its reader is registered
// under and the buffer the rows are encoded into.
type loader struct {
	name string
	buf  []byte
	rd   bytes.Reader
}

// newLoader registers a reader for one connection's loads.
func newLoader() *loader {
	l := &loader{name: "regiond-load-" + strconv.FormatUint(loadNames.Add(1), 10)}
	mysql.RegisterReaderHandler(l.name, func() io.Reader {
		l.rd.Reset(l.buf)
		return &l.rd
	})
	return l
}

// close deregisters the reader.
func (l *loader) close() { mysql.DeregisterReaderHandler(l.name) }

// statement is the LOAD DATA statement of t's columns, whose targets are
// cols. The stream is read as utf8mb4, the connection's character set, so
// that a field is converted to its column's character set as a string
// literal of the INSERT path is; when every column is a utf8mb4 (or binary
// or not a string) column, where nothing is converted, the stream is read
// as binary instead, which spares the server the multi-byte character
// scan of every field (the columns still check the text is well-formed
// utf8mb4).
func (l *loader) statement(t *source.Table, cols []targetColumn) string {
	cs := "binary"
	for _, c := range cols {
		if c.charset != "" && c.charset != "utf8mb4" && c.charset != "binary" {
			cs = "utf8mb4"
		}
	}
	var b strings.Builder
	b.WriteString("LOAD DATA LOCAL INFILE 'Reader::")
	b.WriteString(l.name)
	b.WriteString("' INTO TABLE ")
	b.WriteString(quote(t.Name))
	b.WriteString(" CHARACTER SET " + cs + " FIELDS TERMINATED BY '\\t' ESCAPED BY '\\\\' LINES TERMINATED BY '\\n' (")
	for i, c := range t.Columns {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(quote(c.Name))
	}
	b.WriteByte(')')
	return b.String()
}

// encode makes the buffer the load of rows' first rows, at most maxBytes
// bytes (at least one row), and returns how many rows it holds. It stops
// (more false) before a row with a value that has no load form that the
// server reads as it reads the INSERT path's argument (see
// appendLoadValue).
func (l *loader) encode(cols []targetColumn, rows []source.Row, maxBytes int) (n int, more bool) {
	b := l.buf[:0]
	for ; n < len(rows) && (n == 0 || len(b) < maxBytes); n++ {
		start := len(b)
		for i, v := range rows[n] {
			if i > 0 {
				b = append(b, '\t')
			}
			var ok bool
			if b, ok = appendLoadValue(b, v, cols[i]); !ok {
				l.buf = b[:start]
				return n, false
			}
		}
		b = append(b, '\n')
	}
	l.buf = b
	return n, true
}

// appendLoadValue appends v, for a target column c, in the load's text
// form, or returns false when the server would store that text otherwise
// than it stores the INSERT path's argument (arg(v)). NULL goes as \N.
// Text (also decimals, dates, times and JSON, which the INSERT path sends
// as text) goes as its bytes, with backslash, tab, newline and NUL escaped:
// the server stores a field as it stores a string literal of the stream's
// character set, utf8mb4, the connection's. Where a literal of another
// kind takes another way, only the columns that store it as they store its
// text take it:
//   - an integer: numeric and text columns, as its decimal text (but the
//     text "0" is the year 2000 in a YEAR column, where the number 0 is
//     0000); a BIT column stores a field's bytes as the bit value, so there
//     it goes as eight big-endian bytes;
//   - a float: numeric columns but YEAR (a text column would print the
//     server's own form of the number);
//   - binary data: binary and BIT columns (a text column would convert the
//     bytes from utf8mb4, where the INSERT path's binary literal is copied).
func appendLoadValue(b []byte, v any, c targetColumn) ([]byte, bool) {
	// The kinds that arg passes as text, without boxing that text again.
	switch x := v.(type) {
	case source.Decimal:
		return appendEscaped(b, string(x)), true
	case source.Date:
		return appendEscaped(b, string(x)), true
	case source.DateTime:
		return appendEscaped(b, string(x)), true
	case source.Timestamp:
		return appendEscaped(b, string(x)), true
	case source.Time:
		return appendEscaped(b, string(x)), true
	case source.JSON:
		return appendEscaped(b, string(x)), true
	}
	switch x := arg(v).(type) {
	case nil:
		return append(b, '\\', 'N'), true
	case string:
		return appendEscaped(b, x), true
	case int64:
		switch {
		case c.kind == "bit" && x >= 0:
			return appendEscaped(b, bytesText(binary.BigEndian.AppendUint64(nil, uint64(x)))), true
		case c.year && x == 0:
			return append(b, "0000"...), true
		case c.numeric() || c.text():
			return strconv.AppendInt(b, x, 10), true
		}
	case uint64:
		switch {
		case c.kind == "bit":
			return appendEscaped(b, bytesText(binary.BigEndian.AppendUint64(nil, x))), true
		case c.year && x == 0:
			return append(b, "0000"...), true
		case c.numeric() || c.text():
			return strconv.AppendUint(b, x, 10), true
		}
	case float64:
		if c.numeric() && !c.year {
			return strconv.AppendFloat(b, x, 'g', -1, 64), true
		}
	case float32:
		// database/sql passes a float32 argument as float64.
		if c.numeric() && !c.year {
			return strconv.AppendFloat(b, float64(x), 'g', -1, 64), true
		}
	case []byte:
		if c.binary() || c.kind == "bit" {
			return appendEscaped(b, bytesText(x)), true
		}
	}
	return b, false
}

// numeric reports a column that reads a number from text as it reads a
// numeric literal.
func (c targetColumn) numeric() bool {
	switch c.kind {
	case "int", "uint", "decimal", "float", "double":
		return true
	}
	return false
}

// text reports a character column.
func (c targetColumn) text() bool {
	switch c.kind {
	case "char", "varchar", "tinytext", "text", "mediumtext", "longtext":
		return true
	}
	return false
}

// binary reports a binary string column.
func (c targetColumn) binary() bool {
	switch c.kind {
	case "binary", "varbinary", "tinyblob", "blob", "mediumblob", "longblob":
		return true
	}
	return false
}

// appendEscaped appends s with the load's escapes.
func appendEscaped(b []byte, s string) []byte {
	// Most values hold none of the four bytes: four vectorised scans cost
	// less than one loop over the bytes.
	if strings.IndexByte(s, '\\') < 0 && strings.IndexByte(s, '\t') < 0 &&
		strings.IndexByte(s, '\n') < 0 && strings.IndexByte(s, 0) < 0 {
		return append(b, s...)
	}
	start := 0
	for i := 0; i < len(s); i++ {
		var e byte
		switch s[i] {
		case '\\':
			e = '\\'
		case '\t':
			e = 't'
		case '\n':
			e = 'n'
		case 0:
			e = '0'
		default:
			continue
		}
		b = append(b, s[start:i]...)
		b = append(b, '\\', e)
		start = i + 1
	}
	return append(b, s[start:]...)
}

// loadRows writes a prefix of rows of t, which the log says are absent,
// with LOAD DATA in the open transaction, in loads of about maxBytes, and
// returns how many it wrote: it stops before a row that has no load form,
// which the caller writes with INSERTs. A load that skipped a row (a
// present key) or left a warning (a value the INSERT would have refused or
// changed) returns errLoadRefused; the transaction must then be rolled
// back.
func (w *writer) loadRows(ctx context.Context, t *source.Table, rows []source.Row, maxBytes int) (int, error) {
	cols, err := w.columnsOf(ctx, t)
	if err != nil {
		return 0, err
	}
	l := w.load
	q := l.statement(t, cols)
	w.a.lastLoad.Store(&q)
	done := 0
	for done < len(rows) {
		n, more := l.encode(cols, rows[done:], maxBytes)
		if n == 0 {
			break
		}
		w.a.loads.Add(1)
		res, err := w.tx.ExecContext(ctx, q)
		if n := mysqlconn.ErrorNumber(err); n == 1148 || n == 3948 || n == 4166 {
			// LOAD DATA LOCAL is not allowed after all (a proxy, a
			// changed setting): INSERTs from now on.
			w.a.noLoad.Store(true)
			w.a.logger.Warn("the target refuses LOAD DATA LOCAL INFILE; rows are written with INSERT", "error", err)
			return done, fmt.Errorf("%w: %w", errLoadRefused, err)
		}
		if err != nil {
			return done, err
		}
		loaded, err := res.RowsAffected()
		if err != nil {
			return done, err
		}
		var warnings int64
		if err := w.tx.QueryRowContext(ctx, "SELECT @@warning_count").Scan(&warnings); err != nil {
			return done, err
		}
		if loaded != int64(n) || warnings != 0 {
			return done, fmt.Errorf("%w: table %s: %d rows sent, %d inserted, %d warnings", errLoadRefused, t.Name, n, loaded, warnings)
		}
		done += n
		w.a.loaded.Add(int64(n))
		if !more {
			break
		}
	}
	return done, nil
}

// bytesText is b as a string, without a copy, for appendEscaped, which
// only reads it.
func bytesText(b []byte) string { return unsafe.String(unsafe.SliceData(b), len(b)) }
