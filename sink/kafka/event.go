package kafka

import (
	"strconv"
	"strings"
	"time"

	"github.com/regiond/regiond/source"
)

// Origin describes where the events of a pipeline come from: the envelope's
// source block.
type Origin struct {
	Region string // region name
	Engine string // "mysql" or "postgres", as in the config
	DB     string // the database the tables live in
}

// The envelope's op values.
const (
	OpCreate   = "c"
	OpUpdate   = "u"
	OpDelete   = "d"
	OpSnapshot = "r" // a row read by backfill, not a change
)

// Event is one envelope to publish: a row change (or a row read by
// backfill) with what identifies it.
type Event struct {
	Table  *source.Table
	Op     string // OpCreate, OpUpdate, OpDelete or OpSnapshot
	Before source.Row
	After  source.Row
	// TxID identifies the source transaction; Index is the event's place
	// in it: together they are source.pos ("<txid>#<index>", see txnJSON), the same every
	// time the same transaction is read again.
	TxID  string
	Index int
	// Commit is the source commit time (the read time for snapshots).
	Commit time.Time
}

// Key renders the primary key of row as the message key: a JSON object of
// the key columns in primary-key order, with values in their canonical form
// so that the same row has the same key bytes whichever engine logged it
// (integers as plain JSON numbers whatever their width and signedness,
// decimals as strings without insignificant zeros, other values as in
// source.AppendJSONValue).
func Key(t *source.Table, row source.Row) []byte {
	return AppendKey(make([]byte, 0, 16*len(t.PK)+2), t, row)
}

// AppendKey appends Key(t, row) to b.
func AppendKey(b []byte, t *source.Table, row source.Row) []byte {
	b = append(b, '{')
	for i, c := range t.PK {
		if i > 0 {
			b = append(b, ',')
		}
		b = appendText(b, t.Columns[c].Name)
		b = append(b, ':')
		var v any
		if c < len(row) {
			v = row[c]
		}
		b = appendKeyValue(b, v)
	}
	return append(b, '}')
}

func appendKeyValue(b []byte, v any) []byte {
	switch x := v.(type) {
	case int64:
		return strconv.AppendInt(b, x, 10)
	case uint64:
		return strconv.AppendUint(b, x, 10)
	case int, int32, int16, int8, uint32, uint16, uint8:
		s, _ := source.Text(x)
		return append(b, s...)
	case source.Decimal:
		return appendText(b, normDecimal(string(x)))
	}
	return appendValue(b, v)
}

// normDecimal drops a decimal's insignificant zeros ("012.3400" → "12.34",
// "-0.00" → "0"), so that columns of different scales give the same text.
func normDecimal(s string) string {
	neg := strings.HasPrefix(s, "-")
	s = strings.TrimPrefix(strings.TrimPrefix(s, "-"), "+")
	intPart, frac, _ := strings.Cut(s, ".")
	intPart = strings.TrimLeft(intPart, "0")
	frac = strings.TrimRight(frac, "0")
	if intPart == "" {
		intPart = "0"
	}
	out := intPart
	if frac != "" {
		out += "." + frac
	}
	if neg && out != "0" {
		out = "-" + out
	}
	return out
}

// AppendValue appends the envelope of e to b, as JSON:
//
//	{"before":…,"after":…,"source":{"region","engine","db","table","pos","ts_ms","txid"},"op":…,"ts_ms":…}
//
// before and after are objects of every column in table order (null when
// the image is absent), in the value mapping of source.AppendJSONValue.
// now is the top-level ts_ms: when regiond made the event.
func (o Origin) AppendValue(b []byte, e *Event, now time.Time) []byte {
	return o.tableJSON(e.Table).appendValue(b, e, now)
}

// tableJSON holds the parts of the envelopes of one table's events that are
// the same in every event, already in JSON: the column names of the images
// and the source block up to pos. Building them once per table instead of
// once per event leaves only the values to escape.
type tableJSON struct {
	table *source.Table
	// names[i] is `"<column i>":`, after a comma for i > 0.
	names []string
	// source is `,"source":{"region":…,"engine":…,"db":…,"table":…,"pos":`.
	source string
}

func (o Origin) tableJSON(t *source.Table) *tableJSON {
	tj := &tableJSON{table: t, names: make([]string, len(t.Columns))}
	for i, c := range t.Columns {
		var b []byte
		if i > 0 {
			b = append(b, ',')
		}
		b = appendText(b, c.Name)
		tj.names[i] = string(append(b, ':'))
	}
	b := append([]byte(nil), `,"source":{"region":`...)
	b = appendText(b, o.Region)
	b = append(b, `,"engine":`...)
	b = appendText(b, o.Engine)
	b = append(b, `,"db":`...)
	b = appendText(b, o.DB)
	b = append(b, `,"table":`...)
	b = appendText(b, t.Name)
	tj.source = string(append(b, `,"pos":`...))
	return tj
}

// appendValue is Origin.AppendValue for an event of tj's table.
func (tj *tableJSON) appendValue(b []byte, e *Event, now time.Time) []byte {
	var tx txnJSON
	tx.set(e.TxID, e.Commit, now)
	return tj.appendEvent(b, e, &tx)
}

// appendEvent is appendValue with the transaction's part of the envelope
// already built: tx must be set for e.TxID, e.Commit and now.
func (tj *tableJSON) appendEvent(b []byte, e *Event, tx *txnJSON) []byte {
	b = append(b, `{"before":`...)
	b = tj.appendRow(b, e.Before)
	b = append(b, `,"after":`...)
	b = tj.appendRow(b, e.After)
	b = append(b, tj.source...)
	b = append(b, tx.pos...)
	b = strconv.AppendInt(b, int64(e.Index), 10)
	b = append(b, tx.mid...)
	b = append(b, e.Op...)
	return append(b, tx.end...)
}

// txnJSON holds the parts of an envelope that are the same in every event
// of one transaction encoded at one time, already in JSON: source.pos up to
// the event's index, source.ts_ms and source.txid, and the top-level ts_ms.
// The encoder builds them once per transaction instead of once per event.
// Consumers drop an event whose region and source.pos they have seen
// before.
type txnJSON struct {
	txid          string
	commit, now   int64 // Unix milliseconds
	pos, mid, end []byte
	ok            bool
}

// set makes tx the parts of transaction txid committed at commit, encoded
// at now:
//
//	pos `"<txid>#`, then the event's index,
//	mid `","ts_ms":<commit>,"txid":"<txid>"},"op":"`, then the event's op,
//	end `","ts_ms":<now>}`.
func (tx *txnJSON) set(txid string, commit, now time.Time) {
	c, n := commit.UnixMilli(), now.UnixMilli()
	if tx.ok && txid == tx.txid && c == tx.commit && n == tx.now {
		return
	}
	tx.txid, tx.commit, tx.now, tx.ok = txid, c, n, true
	tx.pos = appendText(tx.pos[:0], txid)
	tx.pos[len(tx.pos)-1] = '#' // '#' and digits need no escaping
	tx.mid = append(tx.mid[:0], `","ts_ms":`...)
	tx.mid = strconv.AppendInt(tx.mid, c, 10)
	tx.mid = append(tx.mid, `,"txid":`...)
	tx.mid = appendText(tx.mid, txid)
	tx.mid = append(tx.mid, `},"op":"`...)
	tx.end = append(tx.end[:0], `","ts_ms":`...)
	tx.end = strconv.AppendInt(tx.end, n, 10)
	tx.end = append(tx.end, '}')
}

// appendRow is source.RowJSON without its allocations.
func (tj *tableJSON) appendRow(b []byte, row source.Row) []byte {
	if row == nil {
		return append(b, "null"...)
	}
	b = append(b, '{')
	for i, name := range tj.names {
		b = append(b, name...)
		if i < len(row) {
			b = appendValue(b, row[i])
		} else {
			b = append(b, "null"...)
		}
	}
	return append(b, '}')
}

// SnapshotTxID is the source.txid of the rows one backfill run reads: the
// run's start time, so that each run's events have positions of their own.
func SnapshotTxID(start time.Time) string {
	return "backfill-" + strconv.FormatInt(start.UnixMilli(), 10)
}
