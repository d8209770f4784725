package postgres

import (
	"context"
	"io"
	"log/slog"
	"strconv"
	"testing"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5/pgtype"

	"github.com/regiond/regiond/checkpoint"
	"github.com/regiond/regiond/source"
)

// fakeDecoder returns a decoder over synthetic messages: relation 1 is
// public.items (id int4 key, v text), relation 2 is the marker table.
func fakeDecoder(chunk int, from checkpoint.LSN) (*decoder, *[]source.Txn) {
	var got []source.Txn
	d := &decoder{
		region: "east", schema: "public", tables: map[string]bool{"items": true},
		chunk: chunk, from: from,
		logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
		rels:   map[uint32]*relation{},
		lookup: func(context.Context, uint32, string, []uint32) (relationMeta, error) {
			return relationMeta{pk: []string{"id"}}, nil
		},
		emit: func(_ context.Context, txn source.Txn) error {
			got = append(got, txn)
			return nil
		},
	}
	feed(d,
		&pglogrepl.RelationMessageV2{RelationMessage: pglogrepl.RelationMessage{
			RelationID: 1, Namespace: "public", RelationName: "items", ReplicaIdentity: identDefault,
			Columns: []*pglogrepl.RelationMessageColumn{
				{Flags: 1, Name: "id", DataType: pgtype.Int4OID, TypeModifier: -1},
				{Name: "v", DataType: pgtype.TextOID, TypeModifier: -1},
			}}},
		&pglogrepl.RelationMessageV2{RelationMessage: pglogrepl.RelationMessage{
			RelationID: 2, Namespace: "public", RelationName: MarkerTable, ReplicaIdentity: identDefault,
			Columns: []*pglogrepl.RelationMessageColumn{{Flags: 1, Name: "pipeline", DataType: pgtype.TextOID, TypeModifier: -1}}}},
	)
	return d, &got
}

func feed(d *decoder, msgs ...pglogrepl.Message) {
	for _, m := range msgs {
		if err := d.handle(context.Background(), m); err != nil {
			panic(err)
		}
	}
}

func text(s string) *pglogrepl.TupleDataColumn {
	return &pglogrepl.TupleDataColumn{DataType: pglogrepl.TupleDataTypeText, Data: []byte(s)}
}

func insertItem(id int) pglogrepl.Message {
	return &pglogrepl.InsertMessageV2{InsertMessage: pglogrepl.InsertMessage{RelationID: 1,
		Tuple: &pglogrepl.TupleData{Columns: []*pglogrepl.TupleDataColumn{text(strconv.Itoa(id)), text("v")}}}}
}

// txn returns the messages of one transaction committed at lsn with n
// inserts.
func txn(lsn pglogrepl.LSN, n int) []pglogrepl.Message {
	at := time.Date(2024, 2, 29, 12, 0, 0, 0, time.UTC)
	msgs := []pglogrepl.Message{&pglogrepl.BeginMessage{FinalLSN: lsn, CommitTime: at}}
	for i := range n {
		msgs = append(msgs, insertItem(i))
	}
	return append(msgs, &pglogrepl.CommitMessage{CommitLSN: lsn, TransactionEndLSN: lsn + 8, CommitTime: at})
}

func TestDecoderChunks(t *testing.T) {
	tests := []struct {
		changes int
		want    []int // changes per chunk
	}{
		{0, []int{0}},
		{1, []int{1}},
		{3, []int{3}},
		{4, []int{3, 1}},
		{6, []int{3, 3}},
		{7, []int{3, 3, 1}},
	}
	for _, tc := range tests {
		d, got := fakeDecoder(3, 0x100)
		feed(d, txn(0x200, tc.changes)...)
		if len(*got) != len(tc.want) {
			t.Fatalf("%d changes: %d chunks, want %d", tc.changes, len(*got), len(tc.want))
		}
		for i, c := range *got {
			last := i == len(tc.want)-1
			if len(c.Changes) != tc.want[i] || c.More == last || (c.End != nil) != last {
				t.Errorf("%d changes: chunk %d has %d changes, More %v, End %v", tc.changes, i, len(c.Changes), c.More, c.End)
			}
			if !c.Commit.Equal(time.Date(2024, 2, 29, 12, 0, 0, 0, time.UTC)) || c.Origin != "east" {
				t.Errorf("chunk %d: Commit %v Origin %q", i, c.Commit, c.Origin)
			}
		}
		if end := (*got)[len(*got)-1].End; end != checkpoint.LSN(0x208) {
			t.Errorf("End = %v, want the commit's end LSN 0/208", end)
		}
	}
}

func TestDecoderDropsCoveredTransactions(t *testing.T) {
	d, got := fakeDecoder(2, 0x208)
	feed(d, txn(0x100, 5)...) // ends before from
	feed(d, txn(0x200, 5)...) // ends at from
	if len(*got) != 0 {
		t.Fatalf("transactions up to from were sent: %d", len(*got))
	}
	feed(d, txn(0x300, 1)...)
	if len(*got) != 1 || (*got)[0].End != checkpoint.LSN(0x308) {
		t.Fatalf("got %+v, want the transaction after from", *got)
	}
}

func TestDecoderMarker(t *testing.T) {
	d, got := fakeDecoder(2, 0)
	at := time.Now()
	marker := &pglogrepl.UpdateMessageV2{UpdateMessage: pglogrepl.UpdateMessage{RelationID: 2,
		NewTuple: &pglogrepl.TupleData{Columns: []*pglogrepl.TupleDataColumn{text("west->east")}}}}
	feed(d, &pglogrepl.BeginMessage{FinalLSN: 0x100, CommitTime: at}, marker,
		insertItem(1), insertItem(2), insertItem(3), insertItem(4), insertItem(5),
		&pglogrepl.CommitMessage{TransactionEndLSN: 0x108, CommitTime: at})
	if len(*got) != 1 || len((*got)[0].Changes) != 0 || (*got)[0].End != checkpoint.LSN(0x108) {
		t.Fatalf("got %+v, want one Txn without changes ending at 0/108", *got)
	}
}

// BenchmarkDecodeInsert: one insert of the bench's row (bigint key,
// integer, varchar(120), char(60), integer, timestamp(6)) from message
// bytes to a queued change, as the stream decodes it.
func BenchmarkDecodeInsert(b *testing.B) {
	d, _ := fakeDecoder(1<<30, 0)
	d.emit = func(context.Context, source.Txn) error { return nil }
	feed(d, &pglogrepl.RelationMessageV2{RelationMessage: pglogrepl.RelationMessage{
		RelationID: 3, Namespace: "public", RelationName: "items", ReplicaIdentity: identDefault,
		Columns: []*pglogrepl.RelationMessageColumn{
			{Flags: 1, Name: "id", DataType: pgtype.Int8OID, TypeModifier: -1},
			{Name: "k", DataType: pgtype.Int4OID, TypeModifier: -1},
			{Name: "c", DataType: pgtype.VarcharOID, TypeModifier: 124},
			{Name: "pad", DataType: pgtype.BPCharOID, TypeModifier: 64},
			{Name: "n", DataType: pgtype.Int4OID, TypeModifier: -1},
			{Name: "ts", DataType: pgtype.TimestampOID, TypeModifier: 6},
		}}})
	m := append([]byte("I"), 0, 0, 0, 3, 'N')
	m = append(m, tupleBytes("123456", "4242", "some text of the c column, some text of the c column, some more text of the c column, up to 120",
		"pad pad pad pad pad pad pad pad pad pad pad pad pad pad pad", nil, "2026-11-27 14:00:00.123456")...)
	var s rowScratch
	b.ReportAllocs()
	for i := range b.N {
		if i%100 == 0 {
			feed(d, &pglogrepl.BeginMessage{FinalLSN: 1 << 40})
		}
		msg, err := s.parse(m)
		if err != nil {
			b.Fatal(err)
		}
		if err := d.handle(context.Background(), msg); err != nil {
			b.Fatal(err)
		}
		if i%100 == 99 {
			feed(d, &pglogrepl.CommitMessage{TransactionEndLSN: 1<<40 + 1})
		}
	}
}
