// Package pgconn opens connections to a PostgreSQL region with the session
// settings every regiond connection relies on, and holds regiond's own table
// definitions for Postgres.
package pgconn

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// CheckpointTable is regiond's table of pipeline positions and markers; see
// sink/mysql for its meaning. Every transaction regiond writes into a region
// begins with a write to it, and readers skip transactions that do.
const CheckpointTable = "regiond_checkpoints"

// settings pins what text values look like: UTC, ISO dates, floats that
// read back exactly.
var settings = map[string]string{
	"TimeZone":           "UTC",
	"DateStyle":          "ISO, YMD",
	"IntervalStyle":      "postgres",
	"extra_float_digits": "3",
	"client_encoding":    "UTF8",
	"bytea_output":       "hex",
	"application_name":   "regiond",
}

// Config parses dsn (postgres:// URL) and applies regiond's settings.
func Config(dsn string) (*pgx.ConnConfig, error) {
	cfg, err := pgx.ParseConfig(dsn)
	if err != nil {
		return nil, err
	}
	for k, v := range settings {
		cfg.RuntimeParams[k] = v
	}
	return cfg, nil
}

// Connect opens a regular connection.
func Connect(ctx context.Context, dsn string) (*pgx.Conn, error) {
	cfg, err := Config(dsn)
	if err != nil {
		return nil, err
	}
	return pgx.ConnectConfig(ctx, cfg)
}

// ConnectReplication opens a logical replication connection
// (replication=database) for pglogrepl.
func ConnectReplication(ctx context.Context, dsn string) (*pgconn.PgConn, error) {
	cfg, err := pgconn.ParseConfig(dsn)
	if err != nil {
		return nil, err
	}
	for k, v := range settings {
		cfg.RuntimeParams[k] = v
	}
	cfg.RuntimeParams["replication"] = "database"
	return pgconn.ConnectConfig(ctx, cfg)
}

// Ident quotes a (schema-qualified) identifier.
func Ident(parts ...string) string { return pgx.Identifier(parts).Sanitize() }

// EnsureCheckpointTable creates regiond_checkpoints in schema when missing.
// It asks first, so a restart writes nothing.
func EnsureCheckpointTable(ctx context.Context, conn *pgx.Conn, schema string) error {
	var exists bool
	err := conn.QueryRow(ctx,
		"SELECT EXISTS (SELECT 1 FROM information_schema.tables WHERE table_schema = $1 AND table_name = $2)",
		schema, CheckpointTable).Scan(&exists)
	if err != nil {
		return err
	}
	if exists {
		return nil
	}
	_, err = conn.Exec(ctx, `CREATE TABLE IF NOT EXISTS `+Ident(schema, CheckpointTable)+` (
		pipeline text PRIMARY KEY,
		kind text NOT NULL DEFAULT 'pipeline',
		source_region text NOT NULL DEFAULT '',
		position text NOT NULL,
		seq bigint NOT NULL DEFAULT 0,
		epoch bigint NOT NULL DEFAULT 0,
		updated_at timestamptz NOT NULL
	)`)
	if err != nil {
		return fmt.Errorf("create %s: %w", CheckpointTable, err)
	}
	_, err = conn.Exec(ctx, "COMMENT ON TABLE "+Ident(schema, CheckpointTable)+
		" IS 'regiond replication checkpoints and loop-prevention marker'")
	return err
}
