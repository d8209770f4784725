package mysql

import (
	"log/slog"
	"math"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/regiond/regiond/checkpoint"
	"github.com/regiond/regiond/internal/dbtest"
	"github.com/regiond/regiond/internal/testenv"
	"github.com/regiond/regiond/source"
)

// TestPreparedUpsertWritesWhatTextWrites: rows of every type (and values
// of other kinds than their columns': floats in text, decimal and integer
// columns, text in numbers) upserted through the prepared statement, as
// new rows and over present rows, are stored exactly as the text
// statement stores them.
func TestPreparedUpsertWritesWhatTextWrites(t *testing.T) {
	srv := testenv.MariaDB(t, 1)
	db := dbtest.Open(t, srv)
	dbtest.Exec(t, db, "DROP TABLE IF EXISTS prepared, texted, regiond_checkpoints", "CREATE TABLE prepared"+typesTable, "CREATE TABLE texted"+typesTable)
	ctx := t.Context()
	// First, every row of typesRows with only the values a prepared
	// statement takes (the others NULL), in pairs, as the prepared
	// statements of two rows take them; then the rows as they are.
	var rows []source.Row
	for _, r := range typesRows() {
		p := append(source.Row{}, r...)
		p[0] = r[0].(int64) + 100
		for i, v := range p {
			if !plainArgs([]any{arg(v)}) {
				p[i] = nil
			}
		}
		rows = append(rows, p)
	}
	if len(rows)%2 == 1 {
		rows = rows[:len(rows)-1]
	}
	rows = append(rows, typesRows()...)
	for i, v := range []any{float64(0.1), float64(100), float64(1e20), float32(0.1), float64(2.5), float64(-3.5), float64(1) / 3, "12.5", float64(math.MaxFloat32)} {
		r := make(source.Row, len(typesColumns))
		r[0] = int64(20 + i)
		// vc (text), dec1, i32, u16, f, d, yr, tx
		r[15], r[11], r[7], r[4], r[12], r[13], r[16] = v, v, v, v, v, v, v
		if f, ok := v.(float64); ok && (f > 1e10 || f < 0) {
			r[7], r[4], r[11] = nil, nil, nil // out of range of the column, for both
		}
		rows = append(rows, r)
	}
	// Bytes in text columns, a latin1 one among them.
	r := make(source.Row, len(typesColumns))
	r[0], r[15], r[17] = int64(40), []byte("h\xc3\xa9llo"), []byte("caf\xc3\xa9")
	rows = append(rows, r)
	if len(rows)%2 == 1 {
		rows = rows[:len(rows)-1]
	}
	shifted := make([]source.Row, len(rows))
	for i := range rows {
		shifted[i] = append(source.Row{rows[i][0]}, rows[(i+1)%len(rows)][1:]...)
	}
	for _, x := range []struct {
		table string
		rows  int
	}{{"prepared", 2}, {"texted", 1000}} {
		name := "east->" + x.table
		a, err := New(Config{Pipeline: name, Source: "east", Target: "west", Conn: dbtest.Params(srv), Tables: []string{x.table},
			StatementRows: x.rows, Lanes: 1, NoLoadData: true}, slog.New(slog.DiscardHandler))
		if err != nil {
			t.Fatal(err)
		}
		defer a.Close()
		if _, err := a.Open(ctx); err != nil {
			t.Fatal(err)
		}
		if _, err := a.Init(ctx, "0-1-1"); err != nil {
			t.Fatal(err)
		}
		tbl := typesSourceTable(x.table)
		// Updates, without the apply_remote check: every row is upserted,
		// first where none is, then over the rows.
		in := make(chan source.Txn, 2)
		for n, images := range [][]source.Row{rows, shifted} {
			p := []string{"0-1-2", "0-1-3"}[n]
			txn := source.Txn{End: pos(p), Origin: "east"}
			for _, r := range images {
				txn.Changes = append(txn.Changes, source.Change{Table: tbl, Op: source.Update, Before: r, After: r, TxnID: p})
			}
			in <- txn
		}
		close(in)
		if err := a.Apply(ctx, in, func(checkpoint.Position, bool) {}); err != nil {
			t.Fatalf("Apply to %s: %v", x.table, err)
		}
		st, ok := a.upserts[tbl]
		if prepared := ok && st != nil; prepared != (x.table == "prepared") {
			t.Errorf("%s: upserts prepared: %v", x.table, prepared)
		}
	}
	if diff := cmp.Diff(dump(t, db, "texted"), dump(t, db, "prepared")); diff != "" {
		t.Errorf("rows (-text +prepared):\n%s", diff)
	}
	if a, b := checksum(t, db, "texted"), checksum(t, db, "prepared"); a != b {
		t.Errorf("CHECKSUM TABLE: text %d, prepared %d", a, b)
	}
	var n int
	if err := db.QueryRow("SELECT COUNT(*) FROM prepared").Scan(&n); err != nil || n != len(rows) {
		t.Errorf("prepared holds %d rows (%v); want %d", n, err, len(rows))
	}
}
