package backfill

import (
	"context"
	"database/sql"
	"fmt"
	"strings"

	"github.com/regiond/regiond/config"
	"github.com/regiond/regiond/snapshot"
)

// progressTable holds, in the target region, the plan of each backfill
// (source->target, table) and which chunks are done. Chunk -1 marks a
// complete plan.
const progressTable = "regiond_backfill"

var readCommitted = &sql.TxOptions{Isolation: sql.LevelReadCommitted}

const createMySQL = "CREATE TABLE IF NOT EXISTS `" + progressTable + "` (" +
	"`pair` VARCHAR(140) NOT NULL COMMENT 'source->target'," +
	"`table_name` VARCHAR(64) NOT NULL," +
	"`chunk` INT NOT NULL COMMENT '-1: the plan is complete'," +
	"`lo` TEXT NULL COMMENT 'primary key the chunk starts after (JSON), NULL: open'," +
	"`hi` TEXT NULL COMMENT 'last primary key of the chunk (JSON)'," +
	"`planned` BIGINT NOT NULL COMMENT 'rows at planning'," +
	"`done` TINYINT NOT NULL DEFAULT 0," +
	"`rows_copied` BIGINT NOT NULL DEFAULT 0," +
	"`rows_skipped` BIGINT NOT NULL DEFAULT 0 COMMENT 'rows the target held newer'," +
	"`updated_at` DATETIME(6) NOT NULL," +
	"PRIMARY KEY (`pair`, `table_name`, `chunk`)" +
	") ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin COMMENT='regiond backfill progress'"

const createPostgres = `CREATE TABLE IF NOT EXISTS %s (
	pair text NOT NULL,
	table_name text NOT NULL,
	chunk integer NOT NULL,
	lo text,
	hi text,
	planned bigint NOT NULL,
	done boolean NOT NULL DEFAULT false,
	rows_copied bigint NOT NULL DEFAULT 0,
	rows_skipped bigint NOT NULL DEFAULT 0,
	updated_at timestamptz NOT NULL,
	PRIMARY KEY (pair, table_name, chunk))`

type progressStore struct {
	db   *snapshot.DB
	pair string
}

type chunkRow struct {
	n       int
	rng     snapshot.Range
	planned int64
	done    bool
	rows    int64
}

func (s *progressStore) pg() bool { return s.db.Engine == config.EnginePostgres }

func (s *progressStore) ensure(ctx context.Context) error {
	var exists bool
	if s.pg() {
		if err := s.db.SQL.QueryRowContext(ctx, "SELECT to_regclass($1) IS NOT NULL", s.db.Ident(progressTable)).Scan(&exists); err != nil {
			return err
		}
	} else {
		var n int
		if err := s.db.SQL.QueryRowContext(ctx, "SELECT COUNT(*) FROM information_schema.TABLES WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = ?", progressTable).Scan(&n); err != nil {
			return err
		}
		exists = n > 0
	}
	if exists {
		return nil
	}
	q := createMySQL
	if s.pg() {
		q = fmt.Sprintf(createPostgres, s.db.Ident(progressTable))
	}
	_, err := s.db.SQL.ExecContext(ctx, q)
	return err
}

// reset forgets the plan of table, so the next plan starts over.
func (s *progressStore) reset(ctx context.Context, table string) error {
	_, err := s.db.SQL.ExecContext(ctx, "DELETE FROM "+s.db.Ident(progressTable)+" WHERE pair = "+s.db.Param(1)+" AND table_name = "+s.db.Param(2), s.pair, table)
	return err
}

// plan returns the stored chunks of t, planning them first (from the
// source's current rows, n per chunk) when no complete plan is stored.
func (s *progressStore) plan(ctx context.Context, src *snapshot.DB, t *snapshot.Table, n int) ([]chunkRow, error) {
	chunks, complete, err := s.load(ctx, t)
	if err != nil || complete {
		return chunks, err
	}
	ranges, err := t.Bounds(ctx, src.SQL, n)
	if err != nil {
		return nil, err
	}
	tx, err := s.db.SQL.BeginTx(ctx, nil)
	if err != nil {
		return nil, err
	}
	defer tx.Rollback()
	tbl := s.db.Ident(progressTable)
	if _, err := tx.ExecContext(ctx, "DELETE FROM "+tbl+" WHERE pair = "+s.db.Param(1)+" AND table_name = "+s.db.Param(2), s.pair, t.Def.Name); err != nil {
		return nil, err
	}
	now := "UTC_TIMESTAMP(6)"
	if s.pg() {
		now = "now()"
	}
	insert := func(rows [][]any) error {
		if len(rows) == 0 {
			return nil
		}
		var b strings.Builder
		b.WriteString("INSERT INTO " + tbl + " (pair, table_name, chunk, lo, hi, planned, updated_at) VALUES ")
		var args []any
		for i, r := range rows {
			if i > 0 {
				b.WriteByte(',')
			}
			k := len(args)
			fmt.Fprintf(&b, "(%s, %s, %s, %s, %s, %s, %s)", s.db.Param(k+1), s.db.Param(k+2), s.db.Param(k+3), s.db.Param(k+4), s.db.Param(k+5), s.db.Param(k+6), now)
			args = append(args, r...)
		}
		_, err := tx.ExecContext(ctx, b.String(), args...)
		return err
	}
	var batch [][]any
	chunks = chunks[:0]
	for i, r := range ranges {
		planned := int64(n)
		if i == len(ranges)-1 {
			rows, err := t.Read(ctx, src.SQL, r, false)
			if err != nil {
				return nil, err
			}
			planned = int64(len(rows))
		}
		lo, err := encodeKey(r.Lo)
		if err != nil {
			return nil, err
		}
		hi, err := encodeKey(r.Hi)
		if err != nil {
			return nil, err
		}
		batch = append(batch, []any{s.pair, t.Def.Name, i, lo, hi, planned})
		chunks = append(chunks, chunkRow{n: i, rng: r, planned: planned})
		if len(batch) == 500 {
			if err := insert(batch); err != nil {
				return nil, err
			}
			batch = batch[:0]
		}
	}
	batch = append(batch, []any{s.pair, t.Def.Name, -1, nil, nil, 0})
	if err := insert(batch); err != nil {
		return nil, err
	}
	return chunks, tx.Commit()
}

// load reads the stored chunks of t and whether the plan is complete.
func (s *progressStore) load(ctx context.Context, t *snapshot.Table) ([]chunkRow, bool, error) {
	rows, err := s.db.SQL.QueryContext(ctx, "SELECT chunk, lo, hi, planned, done, rows_copied FROM "+s.db.Ident(progressTable)+
		" WHERE pair = "+s.db.Param(1)+" AND table_name = "+s.db.Param(2)+" ORDER BY chunk", s.pair, t.Def.Name)
	if err != nil {
		return nil, false, err
	}
	defer rows.Close()
	var (
		out      []chunkRow
		complete bool
	)
	for rows.Next() {
		var (
			c      chunkRow
			lo, hi sql.NullString
		)
		if err := rows.Scan(&c.n, &lo, &hi, &c.planned, &c.done, &c.rows); err != nil {
			return nil, false, err
		}
		if c.n < 0 {
			complete = true
			continue
		}
		if c.rng.Lo, err = decodeKey(lo); err != nil {
			return nil, false, fmt.Errorf("%s chunk %d: %w", progressTable, c.n, err)
		}
		if c.rng.Hi, err = decodeKey(hi); err != nil {
			return nil, false, fmt.Errorf("%s chunk %d: %w", progressTable, c.n, err)
		}
		out = append(out, c)
	}
	return out, complete, rows.Err()
}

// doneSQL is the statement that records a chunk as copied.
func (s *progressStore) doneSQL(table string, chunk int, rows, skipped int64) (string, []any) {
	now, done := "UTC_TIMESTAMP(6)", "1"
	if s.pg() {
		now, done = "now()", "true"
	}
	return "UPDATE " + s.db.Ident(progressTable) + " SET done = " + done + ", rows_copied = " + s.db.Param(1) +
			", rows_skipped = " + s.db.Param(2) + ", updated_at = " + now +
			" WHERE pair = " + s.db.Param(3) + " AND table_name = " + s.db.Param(4) + " AND chunk = " + s.db.Param(5),
		[]any{rows, skipped, s.pair, table, chunk}
}

// positions reads the stored positions of pipelines in the target (none
// when regiond never applied there).
func positions(ctx context.Context, db *snapshot.DB, pipelines []string) (map[string]string, error) {
	out := map[string]string{}
	var exists bool
	if db.Engine == config.EnginePostgres {
		if err := db.SQL.QueryRowContext(ctx, "SELECT to_regclass($1) IS NOT NULL", db.Ident("regiond_checkpoints")).Scan(&exists); err != nil {
			return nil, err
		}
	} else {
		var n int
		if err := db.SQL.QueryRowContext(ctx, "SELECT COUNT(*) FROM information_schema.TABLES WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = 'regiond_checkpoints'").Scan(&n); err != nil {
			return nil, err
		}
		exists = n > 0
	}
	if !exists {
		return out, nil
	}
	for _, p := range pipelines {
		var pos string
		err := db.SQL.QueryRowContext(ctx, "SELECT position FROM "+db.Ident("regiond_checkpoints")+" WHERE pipeline = "+db.Param(1), p).Scan(&pos)
		if err == sql.ErrNoRows {
			continue
		}
		if err != nil {
			return nil, err
		}
		out[p] = pos
	}
	return out, nil
}

// encodeKey stores a key as snapshot.EncodeKey does; nil stays NULL.
func encodeKey(k snapshot.Key) (any, error) {
	if k == nil {
		return nil, nil
	}
	return snapshot.EncodeKey(k)
}

func decodeKey(s sql.NullString) (snapshot.Key, error) {
	if !s.Valid {
		return nil, nil
	}
	return snapshot.DecodeKey(s.String)
}

// Reset forgets the stored plan and progress of tables for the backfill
// from->to, so that the next run copies them again from the start.
func Reset(ctx context.Context, db *snapshot.DB, from, to string, tables []string) error {
	s := &progressStore{db: db, pair: from + "->" + to}
	if err := s.ensure(ctx); err != nil {
		return err
	}
	for _, t := range tables {
		if err := s.reset(ctx, t); err != nil {
			return err
		}
	}
	return nil
}
