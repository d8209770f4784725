// Package pgconn opens connections to a PostgreSQL region with the session
// settings every regiond connection relies on, and holds regiond's own table
// definitions for Postgres.
package pgconn

import (
	"context"
	"fmt"
	"strings"

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

// TombstoneTable holds, per deleted last_writer_wins row, the version and
// image hash of the delete, so that an older write arriving later does not
// bring the row back; see sink/mysql.
const TombstoneTable = "regiond_tombstones"

// ConflictTable is the conflict log: every change a rule discarded in the
// region, with both row images as JSON.
const ConflictTable = "regiond_conflicts"

// ownTable is one of regiond's tables: the statements that create it, run
// in one transaction (%s stands for the schema-qualified table name).
type ownTable struct {
	name  string
	stmts []string
}

var (
	checkpointDef = ownTable{CheckpointTable, []string{
		`CREATE TABLE IF NOT EXISTS %s (
		pipeline text PRIMARY KEY,
		kind text NOT NULL DEFAULT 'pipeline',
		source_region text NOT NULL DEFAULT '',
		position text NOT NULL,
		seq bigint NOT NULL DEFAULT 0,
		epoch bigint NOT NULL DEFAULT 0,
		updated_at timestamptz NOT NULL
	)`,
		"COMMENT ON TABLE %s IS 'regiond replication checkpoints and loop-prevention marker'",
	}}
	tombstoneDef = ownTable{TombstoneTable, []string{
		`CREATE TABLE IF NOT EXISTS %s (
		table_name text NOT NULL,
		pk_hash bytea NOT NULL,
		pk text NOT NULL,
		version text NOT NULL,
		image_hash bytea NOT NULL,
		origin text NOT NULL,
		deleted_at timestamptz NOT NULL,
		PRIMARY KEY (table_name, pk_hash)
	)`,
		"CREATE INDEX IF NOT EXISTS regiond_tombstones_deleted_at ON %s (deleted_at)",
		"COMMENT ON TABLE %s IS 'regiond last_writer_wins delete tombstones'",
		"COMMENT ON COLUMN %s.pk_hash IS 'hash of pk, the canonical JSON of the key'",
		"COMMENT ON COLUMN %s.version IS 'i:<integer> or t:<UTC date-time>'",
		"COMMENT ON COLUMN %s.image_hash IS 'canonical hash of the deleted row image'",
		"COMMENT ON COLUMN %s.origin IS 'region the delete was made in'",
	}}
	conflictDef = ownTable{ConflictTable, []string{
		`CREATE TABLE IF NOT EXISTS %s (
		id bigserial PRIMARY KEY,
		detected_at timestamptz NOT NULL,
		pipeline text NOT NULL,
		table_name text NOT NULL,
		pk text NOT NULL,
		rule text NOT NULL,
		winner_region text NOT NULL,
		loser_region text NOT NULL,
		kept_image text,
		lost_image text,
		reason text NOT NULL,
		source_position text NOT NULL
	)`,
		"CREATE INDEX IF NOT EXISTS regiond_conflicts_detected_at ON %s (detected_at)",
		"CREATE INDEX IF NOT EXISTS regiond_conflicts_table_detected ON %s (table_name, detected_at)",
		"COMMENT ON TABLE %s IS 'regiond conflict log'",
		"COMMENT ON COLUMN %s.kept_image IS 'the state kept, as JSON (NULL: no row)'",
		"COMMENT ON COLUMN %s.lost_image IS 'the discarded change, as JSON'",
		"COMMENT ON COLUMN %s.source_position IS 'position of the discarded change''s transaction in the loser''s log'",
	}}
)

// EnsureCheckpointTable creates regiond_checkpoints in schema when missing.
// It asks first, so a restart writes nothing.
func EnsureCheckpointTable(ctx context.Context, conn *pgx.Conn, schema string) error {
	return ensure(ctx, conn, schema, checkpointDef)
}

// EnsureTables creates regiond's tables in schema when missing:
// regiond_checkpoints, regiond_tombstones and regiond_conflicts. It asks
// first, so a restart writes nothing.
func EnsureTables(ctx context.Context, conn *pgx.Conn, schema string) error {
	return ensure(ctx, conn, schema, checkpointDef, tombstoneDef, conflictDef)
}

func ensure(ctx context.Context, conn *pgx.Conn, schema string, tables ...ownTable) error {
	for _, t := range tables {
		exists, err := tableExists(ctx, conn, schema, t.name)
		if err != nil {
			return err
		}
		if exists {
			continue
		}
		if err := create(ctx, conn, schema, t); err != nil {
			// Another process (a pipeline starting at the same time) may
			// have created it meanwhile: concurrent CREATE TABLE IF NOT
			// EXISTS can fail on the catalog's unique indexes.
			if again, err2 := tableExists(ctx, conn, schema, t.name); err2 == nil && again {
				continue
			}
			return fmt.Errorf("create %s: %w", t.name, err)
		}
	}
	return nil
}

func tableExists(ctx context.Context, conn *pgx.Conn, schema, name string) (bool, error) {
	var exists bool
	err := conn.QueryRow(ctx,
		"SELECT EXISTS (SELECT 1 FROM information_schema.tables WHERE table_schema = $1 AND table_name = $2)",
		schema, name).Scan(&exists)
	return exists, err
}

// create runs t's statements in one transaction, so that a table never
// exists without its indexes.
func create(ctx context.Context, conn *pgx.Conn, schema string, t ownTable) error {
	tx, err := conn.Begin(ctx)
	if err != nil {
		return err
	}
	defer tx.Rollback(context.WithoutCancel(ctx))
	ident := Ident(schema, t.name)
	for _, q := range t.stmts {
		if _, err := tx.Exec(ctx, strings.ReplaceAll(q, "%s", ident)); err != nil {
			return err
		}
	}
	return tx.Commit(ctx)
}
