package mysql

import (
	"errors"
	"io"
	"log/slog"
	"strings"
	"testing"

	gomysql "github.com/go-mysql-org/go-mysql/mysql"
	"github.com/go-mysql-org/go-mysql/replication"

	"github.com/regiond/regiond/internal/mysqlconn"
	"github.com/regiond/regiond/pipeline"
)

// mysql8Decoder is a decoder of a MySQL region east whose configured table
// is accounts, for events built in memory.
func mysql8Decoder(t *testing.T) *decoder {
	set, err := gomysql.ParseMysqlGTIDSet("")
	if err != nil {
		t.Fatal(err)
	}
	return &decoder{
		cfg:    &Config{Region: "east", Conn: mysqlconn.Params{Database: "app"}, Tables: map[string]bool{"accounts": true}, ChunkChanges: 4096},
		flavor: gomysql.MySQLFlavor,
		cur:    set,
		tables: map[uint64]*tableDef{},
		logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
		reader: &Reader{},
	}
}

// gtid is a MySQL GTID event of transaction gno.
func gtid(gno int64) *replication.BinlogEvent {
	return &replication.BinlogEvent{Header: &replication.EventHeader{EventType: replication.GTID_EVENT},
		Event: &replication.GTIDEvent{SID: []byte("0123456789abcdef"), GNO: gno}}
}

// TestTransactionPayloadStops: a MySQL 8 compressed transaction (one
// TRANSACTION_PAYLOAD_EVENT holding its table map, rows and XID) must stop
// the reader with a permanent error naming the region and the fix. Were the
// event skipped, the transaction's rows would be lost and the next commit
// would store a position past it.
func TestTransactionPayloadStops(t *testing.T) {
	d := mysql8Decoder(t)
	xid := &replication.BinlogEvent{Header: &replication.EventHeader{EventType: replication.XID_EVENT},
		Event: &replication.XIDEvent{}}

	// An uncompressed transaction commits and advances the position: the
	// decoder is set up to work, so the error below is the payload's.
	if _, send, err := d.event(gtid(1)); send || err != nil {
		t.Fatalf("gtid event: send %v, err %v", send, err)
	}
	txn, send, err := d.event(xid)
	if err != nil || !send {
		t.Fatalf("xid event: send %v, err %v; want a committed transaction", send, err)
	}
	if got, want := txn.End.String(), "30313233-3435-3637-3839-616263646566:1"; got != want {
		t.Fatalf("position after the plain transaction %s, want %s", got, want)
	}

	// The compressed transaction: GTID outside, everything else inside.
	tm := &replication.TableMapEvent{TableID: 7, Schema: []byte("app"), Table: []byte("accounts"), ColumnCount: 1,
		ColumnType: []byte{gomysql.MYSQL_TYPE_LONG}, ColumnMeta: []uint16{0}, ColumnName: [][]byte{[]byte("id")}, PrimaryKey: []uint64{0}}
	payload := &replication.BinlogEvent{
		Header: &replication.EventHeader{EventType: replication.TRANSACTION_PAYLOAD_EVENT},
		Event: &replication.TransactionPayloadEvent{CompressionType: replication.ZSTD, Events: []*replication.BinlogEvent{
			{Header: &replication.EventHeader{EventType: replication.TABLE_MAP_EVENT}, Event: tm},
			{Header: &replication.EventHeader{EventType: replication.WRITE_ROWS_EVENTv2},
				Event: &replication.RowsEvent{TableID: 7, Table: tm, ColumnCount: 1, Rows: [][]any{{int32(1)}}}},
			xid,
		}},
	}
	if _, send, err := d.event(gtid(2)); send || err != nil {
		t.Fatalf("gtid event: send %v, err %v", send, err)
	}
	txn, send, err = d.event(payload)
	if err == nil {
		t.Fatalf("a transaction payload event was accepted (send %v, %d changes): its rows would be lost", send, len(txn.Changes))
	}
	if send {
		t.Errorf("a transaction was sent along with the error: %+v", txn)
	}
	if !errors.Is(err, ErrUnsupported) || !errors.Is(err, pipeline.ErrPermanent) {
		t.Errorf("error %q is not ErrUnsupported and permanent: the pipeline would retry forever", err)
	}
	for _, want := range []string{"region east", "binlog_transaction_compression = OFF", ":2", "regiond backfill --from east"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not say %q", err, want)
		}
	}
}

// TestPartialJSONUpdateStops: a PARTIAL_UPDATE_ROWS_EVENT (MySQL's
// binlog_row_value_options = PARTIAL_JSON) of a configured table stops the
// reader with a permanent error naming the fix, sending nothing; go-mysql
// would hand it over as an update whose JSON after image is a diff.
func TestPartialJSONUpdateStops(t *testing.T) {
	d := mysql8Decoder(t)
	tm := &replication.TableMapEvent{TableID: 7, Schema: []byte("app"), Table: []byte("accounts"), ColumnCount: 2,
		ColumnType: []byte{gomysql.MYSQL_TYPE_LONG, gomysql.MYSQL_TYPE_JSON}, ColumnMeta: []uint16{0, 4},
		ColumnName: [][]byte{[]byte("id"), []byte("doc")}, PrimaryKey: []uint64{0}, NullBitmap: []byte{0}}
	if _, send, err := d.event(gtid(3)); send || err != nil {
		t.Fatalf("gtid event: send %v, err %v", send, err)
	}
	if _, send, err := d.event(&replication.BinlogEvent{Header: &replication.EventHeader{EventType: replication.TABLE_MAP_EVENT}, Event: tm}); send || err != nil {
		t.Fatalf("table map event: send %v, err %v", send, err)
	}
	partial := &replication.BinlogEvent{Header: &replication.EventHeader{EventType: replication.PARTIAL_UPDATE_ROWS_EVENT},
		Event: &replication.RowsEvent{TableID: 7, Table: tm, ColumnCount: 2}}
	txn, send, err := d.event(partial)
	if err == nil {
		t.Fatalf("a partial update was accepted (send %v, %d changes)", send, len(txn.Changes))
	}
	if send {
		t.Errorf("a transaction was sent along with the error: %+v", txn)
	}
	if !errors.Is(err, ErrUnsupported) || !errors.Is(err, pipeline.ErrPermanent) {
		t.Errorf("error %q is not ErrUnsupported and permanent: the pipeline would retry forever", err)
	}
	for _, want := range []string{"region east", "table accounts", "binlog_row_value_options = ''", ":3", "regiond backfill --from east"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not say %q", err, want)
		}
	}
}
