package postgres

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5"

	"github.com/regiond/regiond/source"
)

// RowStatements are the applier's statements for writing canonical rows of
// one source table definition into a PostgreSQL table, for regiond's other
// writers (verify --repair): a row is written exactly as a pipeline would
// write it, with the same type mapping. The caller owns the transaction,
// its marker write and session_replication_role.
type RowStatements struct{ p *plan }

// LoadRowStatements reads the definition of table st.Name in schema through
// conn and maps st's columns onto it by name. It fails, naming the column or
// key, when they do not map.
func LoadRowStatements(ctx context.Context, conn *pgx.Conn, region, schema string, st *source.Table) (*RowStatements, error) {
	tb, err := loadTable(ctx, conn, schema, st.Name)
	if err != nil {
		return nil, fmt.Errorf("region %s: read definition of table %s: %w", region, st.Name, err)
	}
	if tb == nil {
		return nil, fmt.Errorf("region %s: %w: table %s does not exist in schema %s", region, errSchema, st.Name, schema)
	}
	p, err := newPlan(region, st, tb)
	if err != nil {
		return nil, err
	}
	return &RowStatements{p: p}, nil
}

// Upsert returns the INSERT … ON CONFLICT DO UPDATE of full rows and its
// arguments (one text array per written column).
func (s *RowStatements) Upsert(rows []source.Row) (string, []any) {
	return s.p.upsert, columnArrays(s.p, s.p.written, rows)
}

// InsertNew returns an INSERT of rows that writes nothing for a key already
// present (ON CONFLICT DO NOTHING): the command's row count tells how many
// were inserted.
func (s *RowStatements) InsertNew(rows []source.Row) (string, []any) {
	return s.p.insert + " ON CONFLICT (" + s.p.keyList("") + ") DO NOTHING", columnArrays(s.p, s.p.written, rows)
}

// Delete returns the DELETE of the keys of rows (only key columns are read).
func (s *RowStatements) Delete(rows []source.Row) (string, []any) {
	return s.p.delete, columnArrays(s.p, s.p.key, rows)
}
