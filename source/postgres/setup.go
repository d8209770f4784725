package postgres

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"
	pgxconn "github.com/jackc/pgx/v5/pgconn"

	"github.com/regiond/regiond/checkpoint"
	"github.com/regiond/regiond/internal/pgconn"
	"github.com/regiond/regiond/pipeline"
)

type querier = *pgx.Conn

// connect opens a regular connection with regiond's session settings.
func (r *Reader) connect(ctx context.Context) (*pgx.Conn, error) {
	conn, err := pgconn.Connect(ctx, r.cfg.DSN)
	if err != nil {
		return nil, fmt.Errorf("region %s: connect: %w", r.cfg.Region, err)
	}
	return conn, nil
}

// serverInfo is what setup learned about the server.
type serverInfo struct {
	version          int // server_version_num
	protoVersion     int // pgoutput protocol version to ask for
	walSenderTimeout time.Duration
}

// setup runs the preflight checks and, only when they pass, makes sure
// regiond_checkpoints and the publication exist as they should.
func (r *Reader) setup(ctx context.Context, conn querier) (serverInfo, error) {
	info, err := r.preflight(ctx, conn)
	if err != nil {
		return info, err
	}
	if err := pgconn.EnsureCheckpointTable(ctx, conn, r.cfg.Schema); err != nil {
		return info, r.classifySetup(fmt.Errorf("region %s: create %s.%s: %w", r.cfg.Region, r.cfg.Schema, MarkerTable, err))
	}
	if err := r.ensurePublication(ctx, conn, info); err != nil {
		return info, err
	}
	return info, nil
}

// preflight checks what logical capture needs, before anything is written,
// and reports every problem at once with its fix.
func (r *Reader) preflight(ctx context.Context, conn querier) (serverInfo, error) {
	var (
		info      serverInfo
		walLevel  string
		timeoutMS int64
		role      string
		canRepl   bool
	)
	err := conn.QueryRow(ctx, `SELECT current_setting('wal_level'), current_setting('server_version_num')::int,
			COALESCE((SELECT setting::bigint FROM pg_settings WHERE name = 'wal_sender_timeout'), 0),
			current_user, (SELECT rolsuper OR rolreplication FROM pg_roles WHERE rolname = current_user)`).
		Scan(&walLevel, &info.version, &timeoutMS, &role, &canRepl)
	if err != nil {
		return info, fmt.Errorf("region %s: read server settings: %w", r.cfg.Region, err)
	}
	info.walSenderTimeout = time.Duration(timeoutMS) * time.Millisecond
	info.protoVersion = 1
	if info.version >= 140000 {
		info.protoVersion = 2
	}
	var problems []string
	if info.version < 100000 {
		problems = append(problems, fmt.Sprintf("PostgreSQL %d is too old: logical replication with pgoutput needs PostgreSQL 10 or later", info.version))
	}
	if walLevel != "logical" {
		problems = append(problems, fmt.Sprintf("wal_level is %s: run ALTER SYSTEM SET wal_level = logical and restart the server", walLevel))
	}
	if !canRepl {
		problems = append(problems, fmt.Sprintf("role %s may not open replication connections: ALTER ROLE %s REPLICATION (or connect as a superuser)", role, pgconn.Ident(role)))
	}

	names := make([]string, 0, len(r.cfg.Tables))
	for t, ok := range r.cfg.Tables {
		if ok {
			names = append(names, t)
		}
	}
	slices.Sort(names)
	type tableInfo struct {
		kind, ident string
		hasPK       bool
	}
	found := map[string]tableInfo{}
	rows, err := conn.Query(ctx, `SELECT c.relname, c.relkind::text, c.relreplident::text,
			EXISTS (SELECT 1 FROM pg_index i WHERE i.indrelid = c.oid AND i.indisprimary)
		FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
		WHERE n.nspname = $1 AND c.relname = ANY($2)`, r.cfg.Schema, names)
	if err != nil {
		return info, fmt.Errorf("region %s: read table definitions: %w", r.cfg.Region, err)
	}
	for rows.Next() {
		var name string
		var ti tableInfo
		if err := rows.Scan(&name, &ti.kind, &ti.ident, &ti.hasPK); err != nil {
			rows.Close()
			return info, fmt.Errorf("region %s: read table definitions: %w", r.cfg.Region, err)
		}
		found[name] = ti
	}
	if err := rows.Err(); err != nil {
		return info, fmt.Errorf("region %s: read table definitions: %w", r.cfg.Region, err)
	}
	for _, name := range names {
		qn := pgconn.Ident(r.cfg.Schema, name)
		ti, ok := found[name]
		switch {
		case !ok:
			problems = append(problems, fmt.Sprintf("table %s does not exist: create it (or remove %s from the config)", qn, name))
		case ti.kind == "p":
			problems = append(problems, fmt.Sprintf("table %s is partitioned, which regiond does not capture yet", qn))
		case ti.kind != "r":
			problems = append(problems, fmt.Sprintf("%s is not a table (relkind %s)", qn, ti.kind))
		case !ti.hasPK:
			problems = append(problems, fmt.Sprintf("table %s has no primary key: ALTER TABLE %s ADD PRIMARY KEY (...)", qn, qn))
		case ti.ident == "n":
			problems = append(problems, fmt.Sprintf("table %s has REPLICA IDENTITY NOTHING, so its updates and deletes carry no key: ALTER TABLE %s REPLICA IDENTITY FULL (or DEFAULT)", qn, qn))
		case ti.ident == "i":
			problems = append(problems, fmt.Sprintf("table %s has REPLICA IDENTITY USING INDEX, so its deletes do not carry the primary key: ALTER TABLE %s REPLICA IDENTITY FULL (or DEFAULT)", qn, qn))
		}
	}
	if len(problems) > 0 {
		return info, pipeline.Permanent(fmt.Errorf("region %s: postgres is not ready for logical replication: %s",
			r.cfg.Region, strings.Join(problems, "; ")))
	}
	return info, nil
}

// ensurePublication makes the publication hold exactly the configured
// tables and regiond_checkpoints, with every change kind and no row filter
// or column list. It writes nothing when that is already so.
func (r *Reader) ensurePublication(ctx context.Context, conn querier, info serverInfo) error {
	want := []string{MarkerTable}
	for t, ok := range r.cfg.Tables {
		if ok && t != MarkerTable {
			want = append(want, t)
		}
	}
	slices.Sort(want)
	idents := make([]string, len(want))
	for i, t := range want {
		idents[i] = pgconn.Ident(r.cfg.Schema, t)
	}
	list := strings.Join(idents, ", ")
	pub := pgconn.Ident(r.cfg.Publication)

	for attempt := 0; ; attempt++ {
		var all, ins, upd, del bool
		err := conn.QueryRow(ctx, "SELECT puballtables, pubinsert, pubupdate, pubdelete FROM pg_publication WHERE pubname = $1",
			r.cfg.Publication).Scan(&all, &ins, &upd, &del)
		if errors.Is(err, pgx.ErrNoRows) {
			_, err = conn.Exec(ctx, "CREATE PUBLICATION "+pub+" FOR TABLE "+list)
			if isCode(err, "42710") && attempt == 0 {
				continue // created concurrently by another pipeline
			}
			if err != nil {
				return r.classifySetup(fmt.Errorf("region %s: create publication %s: %w", r.cfg.Region, r.cfg.Publication, err))
			}
			r.logger.Info("created publication", "region", r.cfg.Region, "publication", r.cfg.Publication, "tables", strings.Join(want, ","))
			return nil
		}
		if err != nil {
			return fmt.Errorf("region %s: read publication %s: %w", r.cfg.Region, r.cfg.Publication, err)
		}
		if !ins || !upd || !del {
			if _, err := conn.Exec(ctx, "ALTER PUBLICATION "+pub+" SET (publish = 'insert, update, delete, truncate')"); err != nil {
				return r.classifySetup(fmt.Errorf("region %s: alter publication %s: %w", r.cfg.Region, r.cfg.Publication, err))
			}
		}
		if all {
			// FOR ALL TABLES holds what regiond needs; changes of other
			// tables are dropped by the reader.
			return nil
		}
		var have []string
		rows, err := conn.Query(ctx, "SELECT schemaname::text, tablename::text FROM pg_publication_tables WHERE pubname = $1", r.cfg.Publication)
		if err != nil {
			return fmt.Errorf("region %s: read publication %s: %w", r.cfg.Region, r.cfg.Publication, err)
		}
		for rows.Next() {
			var s, t string
			if err := rows.Scan(&s, &t); err != nil {
				rows.Close()
				return fmt.Errorf("region %s: read publication %s: %w", r.cfg.Region, r.cfg.Publication, err)
			}
			if s == r.cfg.Schema {
				have = append(have, t)
			} else {
				have = append(have, s+"."+t)
			}
		}
		if err := rows.Err(); err != nil {
			return fmt.Errorf("region %s: read publication %s: %w", r.cfg.Region, r.cfg.Publication, err)
		}
		slices.Sort(have)
		filtered := false
		if info.version >= 150000 {
			err := conn.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM pg_publication_rel pr JOIN pg_publication p ON p.oid = pr.prpubid
				WHERE p.pubname = $1 AND (pr.prqual IS NOT NULL OR pr.prattrs IS NOT NULL))
				OR EXISTS (SELECT 1 FROM pg_publication_namespace pn JOIN pg_publication p ON p.oid = pn.pnpubid WHERE p.pubname = $1)`,
				r.cfg.Publication).Scan(&filtered)
			if err != nil {
				return fmt.Errorf("region %s: read publication %s: %w", r.cfg.Region, r.cfg.Publication, err)
			}
		}
		if slices.Equal(have, want) && !filtered {
			return nil
		}
		if _, err := conn.Exec(ctx, "ALTER PUBLICATION "+pub+" SET TABLE "+list); err != nil {
			return r.classifySetup(fmt.Errorf("region %s: alter publication %s: %w", r.cfg.Region, r.cfg.Publication, err))
		}
		r.logger.Info("updated publication", "region", r.cfg.Region, "publication", r.cfg.Publication,
			"tables", strings.Join(want, ","), "previous", strings.Join(have, ","))
		return nil
	}
}

// classifySetup makes a missing privilege a permanent error: retrying
// does not grant it.
func (r *Reader) classifySetup(err error) error {
	if isCode(err, "42501") {
		return pipeline.Permanent(fmt.Errorf("%w (regiond's role must own the configured tables, or be a superuser, to manage publication %s; or create it yourself: CREATE PUBLICATION %s FOR TABLE ...)",
			err, r.cfg.Publication, r.cfg.Publication))
	}
	return err
}

func isCode(err error, code string) bool {
	var pe *pgxconn.PgError
	return errors.As(err, &pe) && pe.Code == code
}

// slotInfo is the slot's row in pg_replication_slots.
type slotInfo struct {
	exists    bool
	plugin    string
	slotType  string
	sameDB    bool
	walStatus string // "" before PostgreSQL 13
	confirmed string // confirmed_flush_lsn, "" while being created
	activePID int64
}

func (r *Reader) slot(ctx context.Context, conn querier) (slotInfo, error) {
	var s slotInfo
	var plugin, wal, confirmed *string
	var pid *int64
	err := conn.QueryRow(ctx, `SELECT plugin::text, slot_type, database = current_database(),
			to_jsonb(s)->>'wal_status', confirmed_flush_lsn::text, active_pid::bigint
		FROM pg_replication_slots s WHERE slot_name = $1`, r.cfg.Slot).
		Scan(&plugin, &s.slotType, &s.sameDB, &wal, &confirmed, &pid)
	if errors.Is(err, pgx.ErrNoRows) {
		return s, nil
	}
	if err != nil {
		return s, fmt.Errorf("region %s: read replication slot %s: %w", r.cfg.Region, r.cfg.Slot, err)
	}
	s.exists = true
	if plugin != nil {
		s.plugin = *plugin
	}
	if wal != nil {
		s.walStatus = *wal
	}
	if confirmed != nil {
		s.confirmed = *confirmed
	}
	if pid != nil {
		s.activePID = *pid
	}
	return s, nil
}

// checkSlot rejects a slot of the same name that is not this pipeline's
// kind of slot.
func (r *Reader) checkSlot(s slotInfo) error {
	if s.slotType != "logical" || s.plugin != "pgoutput" || !s.sameDB {
		return pipeline.Permanent(fmt.Errorf("region %s: replication slot %s exists but is not a pgoutput logical slot of this database (type %s, plugin %q): drop it (SELECT pg_drop_replication_slot('%s')) or configure another slot name",
			r.cfg.Region, r.cfg.Slot, s.slotType, s.plugin, r.cfg.Slot))
	}
	return nil
}

var errSlotExists = errors.New("replication slot exists")

// createSlot creates the pipeline's slot and returns its consistent point.
func (r *Reader) createSlot(ctx context.Context) (checkpoint.LSN, error) {
	repl, err := pgconn.ConnectReplication(ctx, r.cfg.DSN)
	if err != nil {
		return 0, fmt.Errorf("region %s: open replication connection: %w", r.cfg.Region, err)
	}
	defer repl.Close(context.WithoutCancel(ctx))
	res, err := pglogrepl.CreateReplicationSlot(ctx, repl, r.cfg.Slot, "pgoutput", pglogrepl.CreateReplicationSlotOptions{
		Mode:           pglogrepl.LogicalReplication,
		SnapshotAction: "NOEXPORT_SNAPSHOT",
	})
	switch {
	case isCode(err, "42710"):
		return 0, errSlotExists
	case isCode(err, "53400"):
		return 0, pipeline.Permanent(fmt.Errorf("region %s: create replication slot %s: %w (raise max_replication_slots, or drop unused slots)", r.cfg.Region, r.cfg.Slot, err))
	case isCode(err, "42501"):
		return 0, pipeline.Permanent(fmt.Errorf("region %s: create replication slot %s: %w (ALTER ROLE ... REPLICATION)", r.cfg.Region, r.cfg.Slot, err))
	case err != nil:
		return 0, fmt.Errorf("region %s: create replication slot %s: %w", r.cfg.Region, r.cfg.Slot, err)
	}
	pos, err := checkpoint.ParseLSN(res.ConsistentPoint)
	if err != nil {
		return 0, fmt.Errorf("region %s: create replication slot %s: %w", r.cfg.Region, r.cfg.Slot, err)
	}
	return pos, nil
}

// startReplication sends START_REPLICATION for the slot at from.
func (r *Reader) startReplication(ctx context.Context, repl *pgxconn.PgConn, from checkpoint.LSN, proto int) error {
	err := pglogrepl.StartReplication(ctx, repl, r.cfg.Slot, pglogrepl.LSN(from), pglogrepl.StartReplicationOptions{
		Mode: pglogrepl.LogicalReplication,
		PluginArgs: []string{
			fmt.Sprintf("proto_version '%d'", proto),
			fmt.Sprintf("publication_names '%s'", r.cfg.Publication),
		},
	})
	if err != nil {
		return r.classify(fmt.Errorf("region %s: start replication from slot %s at %s: %w", r.cfg.Region, r.cfg.Slot, from, err))
	}
	return nil
}

// classify turns the server's "this slot cannot give you that" errors into
// a lost position, and other conditions retrying cannot fix into permanent
// errors. Anything else (connection trouble, a slot in use by another
// process) is retried by the pipeline.
func (r *Reader) classify(err error) error {
	var pe *pgxconn.PgError
	if !errors.As(err, &pe) {
		return err
	}
	msg := pe.Message + " " + pe.Detail
	switch {
	case pe.Code == "42704" && strings.Contains(msg, "replication slot"):
		return r.lost(fmt.Sprintf("replication slot %s does not exist (%s)", r.cfg.Slot, pe.Message))
	case strings.Contains(msg, "invalidated") || strings.Contains(msg, "can no longer get changes"):
		return r.lost(fmt.Sprintf("replication slot %s was invalidated (%s)", r.cfg.Slot, strings.TrimSpace(msg)))
	case strings.Contains(msg, "has already been removed"):
		return r.lost(fmt.Sprintf("the WAL slot %s needs was removed (%s)", r.cfg.Slot, pe.Message))
	case pe.Code == "42704" && strings.Contains(msg, "publication"):
		return pipeline.Permanent(fmt.Errorf("%w; the publication did not exist when the WAL at the pipeline's position was written (it was dropped and re-created): run `regiond backfill` into the target with a new slot", err))
	}
	return err
}

// relationMeta is what the catalog says about a relation the WAL names.
type relationMeta struct {
	pk    []string // primary key columns in key order; nil if none found
	kinds map[uint32]kind
}

// lookupRelation reads the primary key of a relation (by its OID, or by
// name if that OID is gone) and the kinds of its non-builtin column types
// (domains take their base type's kind). It opens a short-lived
// connection: relation messages come once per table per stream.
func (r *Reader) lookupRelation(ctx context.Context, relID uint32, name string, typeOIDs []uint32) (relationMeta, error) {
	meta := relationMeta{kinds: map[uint32]kind{}}
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	conn, err := r.connect(ctx)
	if err != nil {
		return meta, err
	}
	defer conn.Close(context.WithoutCancel(ctx))
	rows, err := conn.Query(ctx, `SELECT a.attname::text
		FROM pg_index i
		CROSS JOIN LATERAL unnest(i.indkey::int2[]) WITH ORDINALITY AS k(attnum, ord)
		JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum
		WHERE i.indisprimary
		  AND i.indrelid = COALESCE((SELECT oid FROM pg_class WHERE oid = $1::oid), to_regclass($2))
		ORDER BY k.ord`, relID, pgconn.Ident(r.cfg.Schema, name))
	if err != nil {
		return meta, fmt.Errorf("region %s: read primary key of %s: %w", r.cfg.Region, name, err)
	}
	meta.pk, err = pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return meta, fmt.Errorf("region %s: read primary key of %s: %w", r.cfg.Region, name, err)
	}

	// Resolve domains to their base types, level by level.
	var todo []uint32
	for _, oid := range typeOIDs {
		if !isBuiltin(oid) && !slices.Contains(todo, oid) {
			todo = append(todo, oid)
		}
	}
	base := map[uint32]uint32{} // type → its base so far
	for _, oid := range todo {
		base[oid] = oid
	}
	for depth := 0; len(todo) > 0 && depth < 16; depth++ {
		rows, err := conn.Query(ctx, "SELECT oid::int8, typbasetype::int8 FROM pg_type WHERE typtype = 'd' AND oid = ANY($1::oid[])", todo)
		if err != nil {
			return meta, fmt.Errorf("region %s: read column types of %s: %w", r.cfg.Region, name, err)
		}
		next := map[uint32]uint32{}
		for rows.Next() {
			var dom, b int64
			if err := rows.Scan(&dom, &b); err != nil {
				rows.Close()
				return meta, fmt.Errorf("region %s: read column types of %s: %w", r.cfg.Region, name, err)
			}
			next[uint32(dom)] = uint32(b)
		}
		if err := rows.Err(); err != nil {
			return meta, fmt.Errorf("region %s: read column types of %s: %w", r.cfg.Region, name, err)
		}
		todo = todo[:0]
		for t, cur := range base {
			if b, ok := next[cur]; ok {
				base[t] = b
				if !isBuiltin(b) {
					todo = append(todo, b)
				}
			}
		}
	}
	for t, b := range base {
		meta.kinds[t] = builtinKinds[b] // kindString when not listed
	}
	return meta, nil
}
