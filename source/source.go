// Package source defines what a region's change-log reader produces:
// committed transactions of row changes, in commit order, each ending at a
// checkpoint position. One reader per engine lives in a subpackage; readers
// know nothing about targets.
package source

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/regiond/regiond/checkpoint"
)

// Op is the kind of a row change.
type Op uint8

// The row change kinds.
const (
	Insert Op = iota + 1
	Update
	Delete
)

func (o Op) String() string {
	switch o {
	case Insert:
		return "insert"
	case Update:
		return "update"
	case Delete:
		return "delete"
	}
	return fmt.Sprintf("op(%d)", o)
}

// Row holds one row image: a value per column of its Table, in the Table's
// column order. A nil value is SQL NULL.
//
// Values are those of the reader's engine, normalised so that they can be
// written back as SQL parameters: integers as int64/uint64 (and narrower),
// DECIMAL as string, FLOAT/DOUBLE as float32/float64, character data as
// string, binary data and JSON as []byte, temporal values as strings in the
// server's text form (times in UTC), ENUM and SET as their string values,
// BIT as int64.
type Row []any

// Column describes one column of a table as the log describes it.
type Column struct {
	Name string
	// Type is the engine's type code (for MySQL the binlog column type).
	Type byte
	// Unsigned is set for unsigned integer columns.
	Unsigned bool
}

// Table describes a table as it was when the change was logged. The same
// *Table is shared by every change read under the same definition.
type Table struct {
	Name    string // bare table name, as in the config
	Columns []Column
	// PK lists the indexes in Columns of the primary key, in key order.
	PK []int
	// KeyOnlyBefore says that the before images of updates and deletes
	// hold only the primary key (the other values are nil): a PostgreSQL
	// table with REPLICA IDENTITY DEFAULT.
	KeyOnlyBefore bool
}

// Key returns the primary key values of row.
func (t *Table) Key(row Row) []any {
	k := make([]any, len(t.PK))
	for i, c := range t.PK {
		k[i] = row[c]
	}
	return k
}

// FormatKey renders the primary key of row for error messages and logs,
// e.g. "{id=42}". Keys identify rows; they are not row contents.
func (t *Table) FormatKey(row Row) string {
	var b strings.Builder
	b.WriteByte('{')
	for i, c := range t.PK {
		if i > 0 {
			b.WriteString(", ")
		}
		fmt.Fprintf(&b, "%s=%v", t.Columns[c].Name, printable(row[c]))
	}
	b.WriteByte('}')
	return b.String()
}

func printable(v any) any {
	if b, ok := v.([]byte); ok {
		return fmt.Sprintf("0x%x", b)
	}
	return v
}

// Change is one row change of a committed transaction.
type Change struct {
	Table  *Table
	Op     Op
	Before Row // nil for Insert
	After  Row // nil for Delete
	// TxnID identifies the source transaction in its region's log (MySQL:
	// its GTID; Postgres: the LSN of its commit record), for conflict
	// records and consumers.
	TxnID string
}

// Txn is a committed source transaction, or a chunk of one.
//
// Large transactions are not held whole in memory: the reader sends them as
// several Txn values with More set on all but the last. A sink applies all
// chunks of one source transaction inside one target transaction and commits
// only at a chunk without More.
type Txn struct {
	Changes []Change
	// More is set when further chunks of the same source transaction follow.
	More bool
	// End is the position just after the transaction. Set on the last chunk
	// only; checkpoints only ever point at an End.
	End checkpoint.Position
	// Commit is the source commit time (whole seconds on MySQL/MariaDB).
	Commit time.Time
	// Origin is the region the transaction was written in.
	Origin string
}

// Source reads one region's change log.
type Source interface {
	// CurrentPosition returns the position after the newest transaction the
	// source has logged: where a pipeline starts the first time it runs.
	CurrentPosition(ctx context.Context) (checkpoint.Position, error)
	// ParsePosition parses the text form of a position this source produced.
	ParsePosition(s string) (checkpoint.Position, error)
	// Read sends every committed transaction after from to out, in commit
	// order, until ctx ends or an error occurs; it never returns nil.
	// Transactions written by regiond itself (they carry the marker) and
	// transactions that touch no configured table are sent with no Changes,
	// so that the position still advances. It returns an error wrapping
	// checkpoint.ErrPositionLost when the log no longer holds from.
	Read(ctx context.Context, from checkpoint.Position, out chan<- Txn) error
	// Ack tells the source that every transaction up to pos is durable in
	// every sink of the pipeline, so it may release the log up to there.
	Ack(ctx context.Context, pos checkpoint.Position) error
}
