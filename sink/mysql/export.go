package mysql

// ColumnReader reads one MySQL/MariaDB column as text and converts it into
// the canonical value (source/values.go) the binlog reader produces for
// it. Backfill and verify read rows with it, the rules' locking read does
// the same, so rows read in any of these ways compare and hash alike.
type ColumnReader struct{ c targetColumn }

// NewColumnReader returns the reader of column name, given its
// information_schema.COLUMNS DATA_TYPE and COLUMN_TYPE.
func NewColumnReader(name, dataType, columnType string) ColumnReader {
	return ColumnReader{readColumn(quote(name), dataType, columnType)}
}

// Expr is the select expression that reads the column as text.
func (r ColumnReader) Expr() string { return r.c.expr }

// Canonical converts the text the expression returned (nil: NULL).
func (r ColumnReader) Canonical(b []byte) (any, error) { return r.c.canonical(b) }

// Arg turns a canonical value into a go-sql-driver/mysql argument, as the
// applier writes it.
func Arg(v any) any { return arg(v) }

// Quote returns a backtick-quoted identifier.
func Quote(name string) string { return quote(name) }
