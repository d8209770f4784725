package kafka

import (
	"strconv"
	"testing"
	"time"

	"github.com/regiond/regiond/source"
)

// referenceAppendValue is the envelope encoder as it was before the
// per-table parts were built once (tableJSON): every name and the source
// block escaped for every event. The envelope must not change by a byte.
func referenceAppendValue(o Origin, b []byte, e *Event, now time.Time) []byte {
	row := func(b []byte, r source.Row) []byte {
		if r == nil {
			return append(b, "null"...)
		}
		b = append(b, '{')
		for i, c := range e.Table.Columns {
			if i > 0 {
				b = append(b, ',')
			}
			b = appendText(b, c.Name)
			b = append(b, ':')
			if i < len(r) {
				b = appendValue(b, r[i])
			} else {
				b = append(b, "null"...)
			}
		}
		return append(b, '}')
	}
	b = append(b, `{"before":`...)
	b = row(b, e.Before)
	b = append(b, `,"after":`...)
	b = row(b, e.After)
	b = append(b, `,"source":{"region":`...)
	b = appendText(b, o.Region)
	b = append(b, `,"engine":`...)
	b = appendText(b, o.Engine)
	b = append(b, `,"db":`...)
	b = appendText(b, o.DB)
	b = append(b, `,"table":`...)
	b = appendText(b, e.Table.Name)
	b = append(b, `,"pos":`...)
	b = appendText(b, e.TxID+"#"+strconv.Itoa(e.Index))
	b = append(b, `,"ts_ms":`...)
	b = strconv.AppendInt(b, e.Commit.UnixMilli(), 10)
	b = append(b, `,"txid":`...)
	b = appendText(b, e.TxID)
	b = append(b, `},"op":"`...)
	b = append(b, e.Op...)
	b = append(b, `","ts_ms":`...)
	b = strconv.AppendInt(b, now.UnixMilli(), 10)
	return append(b, '}')
}

func TestAppendValueUnchanged(t *testing.T) {
	odd := &source.Table{Name: "odd \"t\"\n", Columns: []source.Column{{Name: "a\"b"}, {Name: "\u2028"}, {Name: ""}}, PK: []int{0}}
	origins := []Origin{{Region: "east", Engine: "mysql", DB: "app"}, {Region: "w\"e\\st\x01", Engine: "postgres", DB: "db\n"}}
	row := source.Row{int64(42), source.Decimal("-1.50"), []byte{0, 1}, source.DateTime("2024-01-02 03:04:05.5"), nil, "n\"ote\u2028"}
	events := []Event{
		{Table: items, Op: OpCreate, After: row, TxID: "0-1-5", Index: 0},
		{Table: items, Op: OpUpdate, Before: row, After: source.Row{int64(42), nil, nil, source.Timestamp("2024-01-02 03:04:05"), true, ""}, TxID: "0-1-6", Index: 3},
		{Table: items, Op: OpDelete, Before: row[:3], TxID: "x", Index: 1},
		{Table: odd, Op: OpSnapshot, After: source.Row{"k", source.Unchanged, uint64(1) << 62}, TxID: "backfill-1", Index: 7},
		{Table: odd, Op: OpDelete, Before: source.Row{"k"}, TxID: "t\"x\\\u2028", Index: 12345},
	}
	commit := time.Date(2026, 11, 27, 1, 2, 3, 456789000, time.UTC)
	now := commit.Add(time.Second)
	for _, o := range origins {
		for _, e := range events {
			e.Commit = commit
			want := string(referenceAppendValue(o, []byte("prefix"), &e, now))
			if got := string(o.AppendValue([]byte("prefix"), &e, now)); got != want {
				t.Errorf("AppendValue = %s\nwant          %s", got, want)
			}
			tj := o.tableJSON(e.Table)
			if got := string(tj.appendValue([]byte("prefix"), &e, now)); got != want {
				t.Errorf("tableJSON.appendValue = %s\nwant                  %s", got, want)
			}
		}
	}
}
