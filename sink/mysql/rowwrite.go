package mysql

import (
	"context"
	"database/sql"

	"github.com/regiond/regiond/source"
)

// Execer runs a statement: a *sql.Tx, *sql.Conn or *sql.DB of a MySQL or
// MariaDB region opened like the applier's connections.
type Execer interface {
	ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error)
}

// UpsertRows writes canonical rows of t (full row images in t's column
// order, no source.Unchanged values) with the applier's own statement,
// INSERT … ON DUPLICATE KEY UPDATE, in multi-row statements. regiond's other
// writers (verify --repair) use it so that a row is written exactly as a
// pipeline would write it. The caller owns the transaction and its marker
// write.
func UpsertRows(ctx context.Context, ex Execer, t *source.Table, rows []source.Row) error {
	return execRows(ctx, ex, newTableSQL(t), t, rows, modeUpsert, 1000, 4<<20)
}

// InsertRows writes rows with a plain INSERT: a row whose key is present
// fails the statement with a duplicate-key error (1062), so a caller that
// expects the key to be absent writes nothing over a row it has not seen.
func InsertRows(ctx context.Context, ex Execer, t *source.Table, rows []source.Row) error {
	return execRows(ctx, ex, newTableSQL(t), t, rows, modeInsert, 1000, 4<<20)
}

// DeleteRows deletes the rows with the keys of rows (only their key columns
// are read).
func DeleteRows(ctx context.Context, ex Execer, t *source.Table, rows []source.Row) error {
	return execRows(ctx, ex, newTableSQL(t), t, rows, modeDelete, 1000, 4<<20)
}

// IsDuplicateKey reports a duplicate-key error (1062).
func IsDuplicateKey(err error) bool { return mysqlconnDuplicate(err) }
