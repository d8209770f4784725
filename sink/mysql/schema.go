package mysql

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"

	"github.com/regiond/regiond/pipeline"
)

// CheckpointTable holds, per pipeline into this region, the source position
// applied so far (written in the same transaction as the rows), a sequence
// bumped on every write so that the marker write always changes the row,
// and the fencing epoch. Its rows are also regiond's loop-prevention marker:
// every transaction regiond writes begins with a write to it.
const CheckpointTable = "regiond_checkpoints"

const createCheckpoints = "CREATE TABLE IF NOT EXISTS `" + CheckpointTable + "` (" +
	"`pipeline` VARCHAR(191) NOT NULL COMMENT 'source->target, or a marker name'," +
	"`kind` VARCHAR(16) NOT NULL DEFAULT 'pipeline' COMMENT 'pipeline | marker'," +
	"`source_region` VARCHAR(64) NOT NULL DEFAULT ''," +
	"`position` TEXT NOT NULL COMMENT 'source position after the last applied transaction'," +
	"`seq` BIGINT UNSIGNED NOT NULL DEFAULT 0 COMMENT 'bumped by every write'," +
	"`epoch` BIGINT UNSIGNED NOT NULL DEFAULT 0 COMMENT 'fencing epoch of the applying process'," +
	"`updated_at` DATETIME(6) NOT NULL," +
	"PRIMARY KEY (`pipeline`)" +
	") ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin COMMENT='regiond replication checkpoints and loop-prevention marker'"

// TombstoneTable holds, per deleted last_writer_wins row, the version and
// image hash of the delete, so that an older write arriving later does not
// bring the row back.
const TombstoneTable = "regiond_tombstones"

const createTombstones = "CREATE TABLE IF NOT EXISTS `" + TombstoneTable + "` (" +
	"`table_name` VARCHAR(64) NOT NULL," +
	"`pk_hash` BINARY(16) NOT NULL COMMENT 'hash of pk, the canonical JSON of the key'," +
	"`pk` TEXT NOT NULL COMMENT 'the primary key as canonical JSON'," +
	"`version` VARCHAR(40) NOT NULL COMMENT 'i:<integer> or t:<UTC date-time>'," +
	"`image_hash` BINARY(16) NOT NULL COMMENT 'canonical hash of the deleted row image'," +
	"`origin` VARCHAR(64) NOT NULL COMMENT 'region the delete was made in'," +
	"`deleted_at` DATETIME(6) NOT NULL COMMENT 'when this region recorded it (UTC)'," +
	"PRIMARY KEY (`table_name`, `pk_hash`)," +
	"KEY `deleted_at` (`deleted_at`)" +
	") ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin COMMENT='regiond last_writer_wins delete tombstones'"

// ConflictTable is the conflict log: every change a rule discarded here,
// with both row images.
const ConflictTable = "regiond_conflicts"

const createConflicts = "CREATE TABLE IF NOT EXISTS `" + ConflictTable + "` (" +
	"`id` BIGINT UNSIGNED NOT NULL AUTO_INCREMENT," +
	"`detected_at` DATETIME(6) NOT NULL COMMENT 'UTC'," +
	"`pipeline` VARCHAR(191) NOT NULL," +
	"`table_name` VARCHAR(64) NOT NULL," +
	"`pk` TEXT NOT NULL COMMENT 'primary key as canonical JSON'," +
	"`rule` VARCHAR(32) NOT NULL," +
	"`winner_region` VARCHAR(64) NOT NULL," +
	"`loser_region` VARCHAR(64) NOT NULL," +
	"`kept_image` LONGTEXT NULL COMMENT 'the state kept, as JSON (NULL: no row)'," +
	"`lost_image` LONGTEXT NULL COMMENT 'the discarded change, as JSON'," +
	"`reason` TEXT NOT NULL," +
	"`source_position` TEXT NOT NULL COMMENT 'position of the discarded change''s transaction in the loser''s log'," +
	"PRIMARY KEY (`id`)," +
	"KEY `detected_at` (`detected_at`)," +
	"KEY `table_detected` (`table_name`, `detected_at`)" +
	") ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin COMMENT='regiond conflict log'"

// ensureTables creates regiond's own tables when they are missing. It asks
// first, so that a restart writes no DDL into the binlog.
func ensureTables(ctx context.Context, db *sql.DB) error {
	for _, t := range []struct{ name, ddl string }{
		{CheckpointTable, createCheckpoints},
		{TombstoneTable, createTombstones},
		{ConflictTable, createConflicts},
	} {
		var n int
		err := db.QueryRowContext(ctx,
			"SELECT COUNT(*) FROM information_schema.TABLES WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = ?",
			t.name).Scan(&n)
		if err != nil {
			return err
		}
		if n > 0 {
			continue
		}
		if _, err := db.ExecContext(ctx, t.ddl); err != nil {
			return fmt.Errorf("create %s: %w", t.name, err)
		}
	}
	return nil
}

// checkTables verifies that every configured table exists in the target
// and has a primary key. A failure is permanent for the pipeline: nothing is
// written until the operator fixes the table.
func checkTables(ctx context.Context, db *sql.DB, region string, tables []string) error {
	var problems []string
	for _, t := range tables {
		var exists, pk int
		err := db.QueryRowContext(ctx, `SELECT COUNT(*),
			(SELECT COUNT(*) FROM information_schema.TABLE_CONSTRAINTS c
			  WHERE c.TABLE_SCHEMA = DATABASE() AND c.TABLE_NAME = ? AND c.CONSTRAINT_TYPE = 'PRIMARY KEY')
			FROM information_schema.TABLES WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = ?`, t, t).Scan(&exists, &pk)
		if err != nil {
			return fmt.Errorf("region %s: look up table %s: %w", region, t, err)
		}
		switch {
		case exists == 0:
			problems = append(problems, fmt.Sprintf("table %s does not exist: create it with the same definition as in the other regions", t))
		case pk == 0:
			problems = append(problems, fmt.Sprintf("table %s has no primary key: ALTER TABLE %s ADD PRIMARY KEY (...) in every region", t, t))
		}
	}
	if len(problems) > 0 {
		return pipeline.Permanent(fmt.Errorf("region %s: %s", region, strings.Join(problems, "; ")))
	}
	return nil
}

// quote returns a backtick-quoted identifier.
func quote(name string) string {
	return "`" + strings.ReplaceAll(name, "`", "``") + "`"
}

// errCheckpointMissing means the pipeline's checkpoint row vanished while the
// pipeline ran: someone deleted it, and resuming would guess a position.
var errCheckpointMissing = errors.New("checkpoint row missing")
