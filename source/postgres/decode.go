package postgres

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"time"

	"github.com/jackc/pglogrepl"

	"github.com/regiond/regiond/checkpoint"
	"github.com/regiond/regiond/pipeline"
	"github.com/regiond/regiond/source"
)

// Replica identity settings as a relation message carries them.
const (
	identDefault = 'd'
	identNothing = 'n'
	identFull    = 'f'
	identIndex   = 'i'
)

// relation is the decoded definition of a relation message.
type relation struct {
	sig    string // the whole message: a changed definition gets a new relation
	name   string
	keep   bool // a configured table of the configured schema
	marker bool // regiond_checkpoints of the configured schema
	ident  byte

	// For kept relations only.
	err       error // why its changes cannot be read
	table     *source.Table
	kinds     []kind
	precision []int32 // fractional-second precision per column, or -1
}

// decoder turns pgoutput messages into transactions. It holds the state of
// the transaction being read.
type decoder struct {
	region string
	schema string
	tables map[string]bool
	chunk  int
	from   checkpoint.LSN
	logger *slog.Logger
	rels   map[uint32]*relation
	lookup func(ctx context.Context, relID uint32, name string, typeOIDs []uint32) (relationMeta, error)
	emit   func(ctx context.Context, txn source.Txn) error

	inTxn   bool
	old     bool // the transaction ends at or before from: drop it
	decided bool // its first change was seen
	marker  bool // it is regiond's own (its first change is on the marker table)
	commit  time.Time
	changes []source.Change
	txnID   string // the transaction's commit LSN, for Change.TxnID
	// arena holds the decoded rows and their text.
	arena arena
	// sizeHint is the number of changes of the last transaction (or chunk)
	// that had any: the capacity the next one starts with.
	sizeHint int
}

// open reports whether a transaction has begun and not yet committed.
func (d *decoder) open() bool { return d.inTxn }

func (d *decoder) handle(ctx context.Context, msg pglogrepl.Message) error {
	switch m := msg.(type) {
	case *pglogrepl.BeginMessage:
		// FinalLSN is where the commit record starts; the transaction ends
		// after it, so it ends at or before from exactly when it starts
		// before from.
		d.inTxn, d.decided, d.marker = true, false, false
		d.old = checkpoint.LSN(m.FinalLSN) < d.from
		d.commit = m.CommitTime.UTC()
		d.txnID = checkpoint.LSN(m.FinalLSN).String()
		d.changes = nil
	case *pglogrepl.CommitMessage:
		return d.commitTxn(ctx, m)
	case *pglogrepl.RelationMessageV2:
		return d.relation(ctx, &m.RelationMessage)
	case *pglogrepl.RelationMessage:
		return d.relation(ctx, m)
	case *pglogrepl.InsertMessageV2:
		return d.insert(ctx, &m.InsertMessage)
	case *pglogrepl.InsertMessage:
		return d.insert(ctx, m)
	case *pglogrepl.UpdateMessageV2:
		return d.update(ctx, &m.UpdateMessage)
	case *pglogrepl.UpdateMessage:
		return d.update(ctx, m)
	case *pglogrepl.DeleteMessageV2:
		return d.delete(ctx, &m.DeleteMessage)
	case *pglogrepl.DeleteMessage:
		return d.delete(ctx, m)
	case *pglogrepl.TruncateMessageV2:
		d.truncate(&m.TruncateMessage)
	case *pglogrepl.TruncateMessage:
		d.truncate(m)
	case *pglogrepl.OriginMessage:
		d.logger.Debug("transaction replayed from a replication origin", "region", d.region, "origin", m.Name)
	case *pglogrepl.TypeMessageV2, *pglogrepl.TypeMessage,
		*pglogrepl.LogicalDecodingMessageV2, *pglogrepl.LogicalDecodingMessage:
		// Type names are not needed (the catalog resolves domains); logical
		// decoding messages are not replicated.
	case *pglogrepl.StreamStartMessageV2, *pglogrepl.StreamStopMessageV2,
		*pglogrepl.StreamCommitMessageV2, *pglogrepl.StreamAbortMessageV2:
		return fmt.Errorf("region %s: the server streams in-progress transactions, which regiond did not ask for", d.region)
	}
	return nil
}

func (d *decoder) commitTxn(ctx context.Context, m *pglogrepl.CommitMessage) error {
	if !d.inTxn {
		return fmt.Errorf("region %s: commit at %s without begin", d.region, m.CommitLSN)
	}
	d.inTxn = false
	end := checkpoint.LSN(m.TransactionEndLSN)
	changes := d.changes
	d.changes = nil
	if len(changes) > 0 {
		d.sizeHint = len(changes)
	}
	if d.old || end <= d.from {
		// Resent from the slot's confirmed_flush_lsn: the sinks hold it.
		return nil
	}
	if d.marker {
		changes = nil
	}
	return d.emit(ctx, source.Txn{Changes: changes, End: end, Commit: m.CommitTime.UTC(), Origin: d.region})
}

// relation records a relation definition. Definitions come before the
// first change of a relation in each stream and again after DDL.
func (d *decoder) relation(ctx context.Context, m *pglogrepl.RelationMessage) error {
	var sig strings.Builder
	fmt.Fprintf(&sig, "%d\x00%s\x00%s\x00%c", m.RelationID, m.Namespace, m.RelationName, m.ReplicaIdentity)
	for _, c := range m.Columns {
		fmt.Fprintf(&sig, "\x00%s\x00%d\x00%d\x00%d", c.Name, c.DataType, c.TypeModifier, c.Flags)
	}
	if old, ok := d.rels[m.RelationID]; ok && old.sig == sig.String() {
		return nil
	}
	rel := &relation{
		sig:    sig.String(),
		name:   m.RelationName,
		ident:  m.ReplicaIdentity,
		keep:   m.Namespace == d.schema && d.tables[m.RelationName],
		marker: m.Namespace == d.schema && m.RelationName == MarkerTable,
	}
	if rel.keep {
		if err := d.define(ctx, rel, m); err != nil {
			if !pipeline.IsPermanent(err) {
				return err
			}
			// Fail on the first change that needs the definition, not
			// in a transaction the reader drops anyway.
			rel.err = err
		}
	}
	d.rels[m.RelationID] = rel
	return nil
}

// define builds the source.Table of a configured relation.
func (d *decoder) define(ctx context.Context, rel *relation, m *pglogrepl.RelationMessage) error {
	qn := m.Namespace + "." + m.RelationName
	switch rel.ident {
	case identNothing:
		return pipeline.Permanent(fmt.Errorf("region %s: table %s has REPLICA IDENTITY NOTHING in the WAL: ALTER TABLE %s REPLICA IDENTITY FULL (or DEFAULT)", d.region, qn, qn))
	case identIndex:
		return pipeline.Permanent(fmt.Errorf("region %s: table %s has REPLICA IDENTITY USING INDEX in the WAL, so deletes do not carry its primary key: ALTER TABLE %s REPLICA IDENTITY FULL (or DEFAULT)", d.region, qn, qn))
	}
	t := &source.Table{Name: m.RelationName, Columns: make([]source.Column, len(m.Columns)), KeyOnlyBefore: rel.ident != identFull}
	oids := make([]uint32, len(m.Columns))
	var flagged []string
	for i, c := range m.Columns {
		t.Columns[i] = source.Column{Name: c.Name}
		oids[i] = c.DataType
		if c.Flags&1 != 0 {
			flagged = append(flagged, c.Name)
		}
	}
	meta, err := d.lookup(ctx, m.RelationID, m.RelationName, oids)
	if err != nil {
		return err
	}
	// With REPLICA IDENTITY DEFAULT the flagged columns are the primary key
	// as the WAL was written: the catalog only gives their key order. With
	// FULL every column is flagged and the catalog names the key.
	pk := meta.pk
	if rel.ident == identDefault {
		if !sameSet(pk, flagged) {
			pk = flagged
		}
	}
	for _, name := range pk {
		i := slices.IndexFunc(t.Columns, func(c source.Column) bool { return c.Name == name })
		if i < 0 {
			return pipeline.Permanent(fmt.Errorf("region %s: table %s: primary key column %s is not in the WAL's definition of the table", d.region, qn, name))
		}
		t.PK = append(t.PK, i)
	}
	if len(t.PK) == 0 {
		return pipeline.Permanent(fmt.Errorf("region %s: table %s has no primary key: ALTER TABLE %s ADD PRIMARY KEY (...)", d.region, qn, qn))
	}
	rel.table = t
	rel.kinds = make([]kind, len(m.Columns))
	rel.precision = make([]int32, len(m.Columns))
	for i, c := range m.Columns {
		if isBuiltin(c.DataType) {
			rel.kinds[i] = builtinKinds[c.DataType]
		} else {
			rel.kinds[i] = meta.kinds[c.DataType]
		}
		rel.precision[i] = -1
		switch rel.kinds[i] {
		case kindTime, kindDateTime, kindTimestamp:
			if isBuiltin(c.DataType) && c.TypeModifier >= 0 {
				rel.precision[i] = c.TypeModifier
			}
		}
	}
	return nil
}

func sameSet(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for _, x := range a {
		if !slices.Contains(b, x) {
			return false
		}
	}
	return true
}

// change looks up the relation of a row change and decides whether the
// transaction's changes are kept.
func (d *decoder) change(relID uint32) (*relation, bool, error) {
	if !d.inTxn {
		return nil, false, fmt.Errorf("region %s: row change outside a transaction", d.region)
	}
	rel, ok := d.rels[relID]
	if !ok {
		return nil, false, fmt.Errorf("region %s: row change of unknown relation %d", d.region, relID)
	}
	if !d.decided {
		d.decided = true
		d.marker = rel.marker
	}
	keep := rel.keep && !d.marker && !d.old
	if keep && rel.err != nil {
		return nil, false, rel.err
	}
	return rel, keep, nil
}

// add appends a change, first sending the changes held so far as a chunk
// when the transaction outgrows ChunkChanges.
func (d *decoder) add(ctx context.Context, c source.Change) error {
	if len(d.changes) >= d.chunk {
		chunk := source.Txn{Changes: d.changes, More: true, Commit: d.commit, Origin: d.region}
		d.changes = make([]source.Change, 0, d.chunk)
		if err := d.emit(ctx, chunk); err != nil {
			return err
		}
	}
	c.TxnID = d.txnID
	if d.changes == nil {
		// Sized like the last transaction: transactions of one application
		// tend to look alike, and growing the slice change by change copies
		// it over and over.
		d.changes = make([]source.Change, 0, min(max(d.sizeHint, 1), d.chunk))
	}
	d.changes = append(d.changes, c)
	return nil
}

func (d *decoder) insert(ctx context.Context, m *pglogrepl.InsertMessage) error {
	rel, keep, err := d.change(m.RelationID)
	if !keep || err != nil {
		return err
	}
	after, err := d.row(rel, m.Tuple, "new")
	if err != nil {
		return err
	}
	return d.add(ctx, source.Change{Table: rel.table, Op: source.Insert, After: after})
}

func (d *decoder) delete(ctx context.Context, m *pglogrepl.DeleteMessage) error {
	rel, keep, err := d.change(m.RelationID)
	if !keep || err != nil {
		return err
	}
	if m.OldTuple == nil {
		return fmt.Errorf("region %s: table %s: delete without old key", d.region, rel.name)
	}
	before, err := d.row(rel, m.OldTuple, "old")
	if err != nil {
		return err
	}
	if err := d.noUnchanged(rel, before); err != nil {
		return err
	}
	return d.add(ctx, source.Change{Table: rel.table, Op: source.Delete, Before: before})
}

func (d *decoder) update(ctx context.Context, m *pglogrepl.UpdateMessage) error {
	rel, keep, err := d.change(m.RelationID)
	if !keep || err != nil {
		return err
	}
	after, err := d.row(rel, m.NewTuple, "new")
	if err != nil {
		return err
	}
	var before source.Row
	if m.OldTuple != nil {
		if before, err = d.row(rel, m.OldTuple, "old"); err != nil {
			return err
		}
		if err := d.noUnchanged(rel, before); err != nil {
			return err
		}
		if m.OldTupleType == pglogrepl.UpdateMessageTupleTypeOld {
			// REPLICA IDENTITY FULL: the old row has every value, also the
			// TOASTed ones the update left alone.
			for i, v := range after {
				if v == source.Unchanged {
					after[i] = before[i]
				}
			}
		}
	} else {
		// No old tuple: the key did not change. Sinks find the row by the
		// before image's key.
		before = d.arena.row(len(after))
		for _, k := range rel.table.PK {
			if after[k] == source.Unchanged {
				return pipeline.Permanent(fmt.Errorf("region %s: table %s: update without old key leaves key column %s as an unchanged TOASTed value: ALTER TABLE %s REPLICA IDENTITY FULL",
					d.region, rel.name, rel.table.Columns[k].Name, rel.name))
			}
			before[k] = after[k]
		}
	}
	return d.add(ctx, source.Change{Table: rel.table, Op: source.Update, Before: before, After: after})
}

// noUnchanged rejects a before image with values the WAL did not carry;
// PostgreSQL inlines TOASTed values in old keys and old rows, so this
// does not happen.
func (d *decoder) noUnchanged(rel *relation, before source.Row) error {
	for i, v := range before {
		if v == source.Unchanged {
			return fmt.Errorf("region %s: table %s row %s: the old row lacks column %s (unchanged TOAST value in a before image)",
				d.region, rel.name, rel.table.FormatKey(before), rel.table.Columns[i].Name)
		}
	}
	return nil
}

// row converts a text-format tuple into a canonical row. A value that has
// no canonical form is a permanent error naming table, key and column.
func (d *decoder) row(rel *relation, tup *pglogrepl.TupleData, image string) (source.Row, error) {
	if tup == nil {
		return nil, fmt.Errorf("region %s: table %s: missing %s tuple", d.region, rel.name, image)
	}
	if len(tup.Columns) != len(rel.kinds) {
		return nil, fmt.Errorf("region %s: table %s: %s tuple has %d columns, the relation %d", d.region, rel.name, image, len(tup.Columns), len(rel.kinds))
	}
	row := d.arena.row(len(tup.Columns))
	bad, badErr := -1, error(nil)
	for i, c := range tup.Columns {
		switch c.DataType {
		case pglogrepl.TupleDataTypeNull:
		case pglogrepl.TupleDataTypeToast:
			row[i] = source.Unchanged
		case pglogrepl.TupleDataTypeText:
			v, err := convert(&d.arena, rel.kinds[i], rel.precision[i], c.Data)
			if err != nil {
				if bad < 0 {
					bad, badErr = i, err
				}
				continue
			}
			row[i] = v
		default:
			if bad < 0 {
				bad, badErr = i, fmt.Errorf("unexpected tuple value format %c", c.DataType)
			}
		}
	}
	if bad >= 0 {
		err := fmt.Errorf("region %s: table %s row %s column %s: %w", d.region, rel.name, rel.table.FormatKey(row), rel.table.Columns[bad].Name, badErr)
		if errors.Is(badErr, errUnrepresentable) {
			err = fmt.Errorf("%w; change or delete the row in region %s, or leave the table out of the config", err, d.region)
		}
		return nil, pipeline.Permanent(err)
	}
	return row, nil
}

func (d *decoder) truncate(m *pglogrepl.TruncateMessage) {
	for _, id := range m.RelationIDs {
		if rel, ok := d.rels[id]; ok && rel.keep && !d.old {
			d.logger.Warn("TRUNCATE is not replicated; the table now differs between regions until you truncate it everywhere or run `regiond backfill`",
				"region", d.region, "table", rel.name)
		}
	}
}
