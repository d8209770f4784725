package check

import (
	"context"
	"errors"
	"fmt"
	pgsource "github.com/regiond/regiond/source/postgres"
	"net"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"syscall"

	"github.com/jackc/pgx/v5"
	pgconnlib "github.com/jackc/pgx/v5/pgconn"

	"github.com/regiond/regiond/config"
	"github.com/regiond/regiond/internal/pgconn"
)

// Postgres facts regiond relies on.
const (
	// pgMinVersion is PostgreSQL 10, the first with pgoutput.
	pgMinVersion = 100000
	// pgPublication is the publication regiond's readers stream.
	pgPublication = "regiond"
	// slotPrefix starts every replication slot regiond creates:
	// regiond_<source>_<target>, '-' in region names turned into '_'.
	slotPrefix = "regiond_"
	// gib: a slot retaining more WAL than this is a warning.
	gib = int64(1) << 30
	// suggestedSlotKeep is the max_slot_wal_keep_size the fixes suggest.
	suggestedSlotKeep = "100GB"
)

// pgSlotName is the replication slot of the pipeline from source to
// target.
func pgSlotName(source, target string) string { return pgsource.SlotName(source, target) }

// pgFacts are what a postgres region is compared with the others on.
type pgFacts struct {
	schema  string
	tables  map[string]*tableInfo // configured tables that exist
	pkNames map[string]string     // each table's primary key constraint name
}

// pgInspector inspects one postgres region. Its session runs with
// default_transaction_read_only = on and every statement it sends is a
// SELECT, so it cannot write even by mistake.
type pgInspector struct {
	res      *regionResult
	conn     *pgx.Conn
	cfg      *config.Config
	region   config.Region
	tables   []string // configured table names, sorted
	password string

	version    int    // server_version_num, e.g. 150004
	versionStr string // server_version, e.g. "15.4"
	user       string // current_user
	db         string // current_database()
	super      bool
	schema     string
	schemaOK   bool // the schema exists
}

// inspectPostgres connects to a postgres region and checks everything
// replication needs from it. It returns facts only when it could connect.
func inspectPostgres(ctx context.Context, r config.Region, cfg *config.Config) *regionResult {
	res := &regionResult{name: r.Name}
	pcfg, err := pgconn.Config(r.DSN)
	if err != nil {
		// pgx redacts the password in its errors; scrub it anyway.
		pw := ""
		if u, uerr := url.Parse(r.DSN); uerr == nil {
			pw, _ = u.User.Password()
		}
		res.add("", Error, scrub("the dsn is not valid: "+err.Error(), pw), "fix the region's dsn in the config")
		return res
	}
	addr := pgAddr(pcfg.Host, pcfg.Port)
	password := pcfg.Password
	// Belt and braces: whatever this package sends, the server refuses to
	// write in this session.
	pcfg.RuntimeParams["default_transaction_read_only"] = "on"
	pcfg.ConnectTimeout = ConnectTimeout

	cctx, cancel := context.WithTimeout(ctx, ConnectTimeout)
	conn, err := pgx.ConnectConfig(cctx, pcfg)
	cancel()
	if err != nil {
		problem, fix := describePGConnectError(err, addr, pcfg.User, pcfg.Database, password)
		res.add("", Error, scrub(problem, password), fix)
		return res
	}
	defer conn.Close(context.WithoutCancel(ctx))

	schema := r.Schema
	if schema == "" {
		schema = config.DefaultPostgresSchema
	}
	in := &pgInspector{res: res, conn: conn, cfg: cfg, region: r, tables: cfg.TableNames(),
		password: password, schema: schema}
	facts, err := in.inspect(ctx)
	if err != nil {
		res.add("", Error, scrub(fmt.Sprintf("inspecting the server at %s failed: %v", addr, err), password),
			"make sure the server stays reachable and the dsn user may read the pg_catalog views, then run check again")
		return res
	}
	res.pg = facts
	return res
}

// pgAddr returns host:port, or the socket directory for a unix socket.
func pgAddr(host string, port uint16) string {
	if strings.HasPrefix(host, "/") {
		return host
	}
	return net.JoinHostPort(host, strconv.Itoa(int(port)))
}

// describePGConnectError turns a failed connection into a problem naming
// the address and a fix. It never includes the DSN or the password.
func describePGConnectError(err error, addr, user, db, password string) (problem, fix string) {
	prefix := fmt.Sprintf("cannot connect to %s as user %s: ", addr, user)
	var pgErr *pgconnlib.PgError
	var dnsErr *net.DNSError
	var netErr net.Error
	switch {
	case errors.As(err, &pgErr):
		switch pgErr.Code {
		case "28P01":
			if password == "" {
				return prefix + "password authentication failed (the dsn has no password)",
					"add the password to the dsn, like postgres://user:${PASSWORD}@host:5432/db (URL-escape special characters)"
			}
			return prefix + "password authentication failed for user " + user,
				"check the password in the dsn (or the ${VAR} it comes from)"
		case "28000":
			return prefix + "the server refuses the connection: " + pgErr.Message,
				fmt.Sprintf("allow user %s to connect to database %s from this host in the server's pg_hba.conf (then SELECT pg_reload_conf();), or fix the user in the dsn", user, db)
		case "3D000":
			return prefix + "database " + db + " does not exist",
				"fix the database in the dsn, or create it with the replicated tables: CREATE DATABASE " + pgconn.Ident(db)
		case "42501":
			return prefix + pgErr.Message,
				fmt.Sprintf("GRANT CONNECT ON DATABASE %s TO %s;", pgconn.Ident(db), pgconn.Ident(user))
		case "53300":
			return prefix + "the server has no free connection slot (" + pgErr.Message + ")",
				"raise max_connections on the server, or close idle connections"
		case "57P03":
			return prefix + "the server is not accepting connections yet (" + pgErr.Message + ")",
				"wait until the server has started, then run check again"
		}
		return prefix + pgErr.Message + " (SQLSTATE " + pgErr.Code + ")", "fix the server or the dsn"
	case errors.Is(err, syscall.ECONNREFUSED):
		return prefix + "connection refused: nothing listens there",
			"start the server, or fix the host and port in the dsn"
	case errors.As(err, &dnsErr):
		return prefix + "cannot resolve host " + dnsErr.Name,
			"fix the host in the dsn"
	case errors.Is(err, context.DeadlineExceeded), errors.As(err, &netErr) && netErr.Timeout():
		return prefix + fmt.Sprintf("no answer within %s", ConnectTimeout),
			"check that the server is up and that no firewall blocks this host from reaching " + addr
	}
	return prefix + err.Error(), "check the host, port and sslmode in the dsn, and that the server is up"
}

func (in *pgInspector) add(table string, sev Severity, problem, fix string) {
	in.res.add(table, sev, scrub(problem, in.password), fix)
}

// role is the DSN user, quoted for a fix statement.
func (in *pgInspector) role() string { return pgconn.Ident(in.user) }

// qualified is schema.table, quoted.
func (in *pgInspector) qualified(table string) string { return pgconn.Ident(in.schema, table) }

func (in *pgInspector) inspect(ctx context.Context) (*pgFacts, error) {
	var replication, standby bool
	err := in.conn.QueryRow(ctx, `SELECT current_setting('server_version_num')::int, current_setting('server_version'),
		current_user::text, current_database()::text, r.rolsuper, r.rolreplication, pg_is_in_recovery()
		FROM pg_roles r WHERE r.rolname = current_user`).
		Scan(&in.version, &in.versionStr, &in.user, &in.db, &in.super, &replication, &standby)
	if err != nil {
		return nil, err
	}
	if f := strings.Fields(in.versionStr); len(f) > 0 {
		in.versionStr = f[0] // "15.4 (Debian 15.4-1)" → "15.4"
	}
	if in.version < pgMinVersion {
		in.add("", Error, fmt.Sprintf("the server is PostgreSQL %s: regiond reads changes with the pgoutput plugin, which PostgreSQL 10 and later have", in.versionStr),
			"upgrade the server to PostgreSQL 10 or later (17 or later is best: see the other findings)")
		return nil, nil
	}
	if standby {
		in.add("", Error, "the server is a standby (in recovery): regiond must write to the region's primary server",
			"point the region's dsn at the primary server")
	}
	in.checkVersion()

	slots, err := in.readSlots(ctx)
	if err != nil {
		return nil, fmt.Errorf("read replication slots: %w", err)
	}
	if err := in.checkSettings(ctx, slots); err != nil {
		return nil, fmt.Errorf("read server settings: %w", err)
	}
	in.checkSlots(slots)

	if err := in.checkRole(ctx, replication); err != nil {
		return nil, fmt.Errorf("read the user's privileges: %w", err)
	}
	if err := in.checkSchema(ctx); err != nil {
		return nil, fmt.Errorf("read the schema's privileges: %w", err)
	}
	facts := &pgFacts{schema: in.schema, tables: map[string]*tableInfo{}, pkNames: map[string]string{}}
	owned := map[string]bool{}
	if in.schemaOK {
		if owned, err = in.checkTables(ctx, facts); err != nil {
			return nil, fmt.Errorf("read table definitions: %w", err)
		}
	}
	if err := in.checkPublication(ctx, facts, owned); err != nil {
		return nil, fmt.Errorf("read publication %s: %w", pgPublication, err)
	}
	return facts, nil
}

// checkVersion reports what this server's version means for replication.
func (in *pgInspector) checkVersion() {
	if in.version < 160000 {
		in.add("", Info, fmt.Sprintf("PostgreSQL %s has no origin filter for logical decoding (it came in 16): regiond tells its own writes apart by its marker in %s, which publication %s must include", in.versionStr, pgconn.CheckpointTable, pgPublication), "")
	}
	if in.version < 170000 {
		in.add("", Info, fmt.Sprintf("logical replication slots do not survive a failover to a standby before PostgreSQL 17 (this is %s): after a failover in this region, its pipelines report position lost and need a backfill", in.versionStr), "")
	}
}

// pgSlot is a row of pg_replication_slots.
type pgSlot struct {
	name, plugin, typ, database, walStatus string
	active                                 bool
	retained                               *int64 // bytes of WAL the slot holds; nil when unknown (lost)
}

func (in *pgInspector) readSlots(ctx context.Context) ([]pgSlot, error) {
	walStatus := "''"
	if in.version >= 130000 {
		walStatus = "COALESCE(wal_status, '')"
	}
	rows, err := in.conn.Query(ctx, `SELECT slot_name::text, COALESCE(plugin::text, ''), slot_type, COALESCE(database::text, ''), active, `+walStatus+`,
		pg_wal_lsn_diff(CASE WHEN pg_is_in_recovery() THEN pg_last_wal_replay_lsn() ELSE pg_current_wal_lsn() END, restart_lsn)::bigint
		FROM pg_replication_slots ORDER BY slot_name`)
	if err != nil {
		return nil, err
	}
	return pgx.CollectRows(rows, func(row pgx.CollectableRow) (pgSlot, error) {
		var s pgSlot
		err := row.Scan(&s.name, &s.plugin, &s.typ, &s.database, &s.active, &s.walStatus, &s.retained)
		return s, err
	})
}

// pipelineSlots returns the slots of this config's pipelines out of this
// region, mapped to their target region. With a last_writer_wins or
// home_region table, the region's local pipeline (its own log, applied to
// itself) needs one too, and so does the pipeline to Kafka when the config
// has a kafka block.
func (in *pgInspector) pipelineSlots() map[string]string {
	local := false
	for _, t := range in.cfg.Tables {
		local = local || t.Rule() == config.RuleLastWriterWins || t.Rule() == config.RuleHomeRegion
	}
	m := map[string]string{}
	for _, o := range in.cfg.Regions {
		if o.Name != in.region.Name || local {
			m[pgSlotName(in.region.Name, o.Name)] = o.Name
		}
	}
	if in.cfg.Kafka != nil {
		// The region's own log to Kafka: a pipeline and a slot of its own.
		m[pgSlotName(in.region.Name, config.ReservedRegionName)] = config.ReservedRegionName
	}
	return m
}

type pgSetting struct {
	value, unit    string
	pendingRestart bool
}

// checkSettings checks wal_level, the slot and sender limits and the WAL
// a slot may keep.
func (in *pgInspector) checkSettings(ctx context.Context, slots []pgSlot) error {
	rows, err := in.conn.Query(ctx, `SELECT name::text, setting, COALESCE(unit, ''), pending_restart FROM pg_settings
		WHERE name IN ('wal_level', 'max_replication_slots', 'max_wal_senders', 'max_slot_wal_keep_size')`)
	if err != nil {
		return err
	}
	settings := map[string]pgSetting{}
	var name string
	var s pgSetting
	_, err = pgx.ForEachRow(rows, []any{&name, &s.value, &s.unit, &s.pendingRestart}, func() error {
		settings[name] = s
		return nil
	})
	if err != nil {
		return err
	}
	var senders int
	if err := in.conn.QueryRow(ctx, "SELECT count(*) FROM pg_stat_replication").Scan(&senders); err != nil {
		return err
	}

	restartNote := func(s pgSetting) string {
		if s.pendingRestart {
			return " (a new value is set but takes effect only after a restart)"
		}
		return ""
	}
	if wl := settings["wal_level"]; wl.value != "logical" {
		in.add("", Error, fmt.Sprintf("wal_level is %s, not logical%s: the server writes no logical WAL, so regiond cannot capture its changes", orNone(wl.value), restartNote(wl)),
			"ALTER SYSTEM SET wal_level = logical; then restart the server (wal_level cannot change without a restart)")
	}

	// This config's pipelines out of this region each take a slot and, while
	// they run, a WAL sender; slots that are not theirs are in use by others.
	pipelines := in.pipelineSlots()
	others, activeOurs := 0, 0
	for _, sl := range slots {
		if _, ok := pipelines[sl.name]; ok {
			if sl.active {
				activeOurs++
			}
			continue
		}
		others++
	}
	need := len(pipelines) + others
	needSenders := len(pipelines) + max(others, senders-activeOurs)
	usage := func(what string, n int) string {
		per := "one per other region"
		if in.cfg.Kafka != nil {
			per += ", one to Kafka"
		}
		s := fmt.Sprintf("%d for this config's pipelines out of region %s (%s)", len(pipelines), in.region.Name, per)
		if n > 0 {
			s += fmt.Sprintf(" plus %d already in use by others (%s)", n, what)
		}
		return s
	}
	if v, ok := settings["max_replication_slots"]; ok {
		if n, _ := strconv.Atoi(v.value); n < need {
			in.add("", Error, fmt.Sprintf("max_replication_slots is %d%s, but %d slots are needed: %s", n, restartNote(v), need, usage("existing slots not of this config", others)),
				fmt.Sprintf("ALTER SYSTEM SET max_replication_slots = %d; then restart the server (more leaves room for regions added later)", need))
		}
	}
	if v, ok := settings["max_wal_senders"]; ok {
		if n, _ := strconv.Atoi(v.value); n < needSenders {
			in.add("", Error, fmt.Sprintf("max_wal_senders is %d%s, but %d are needed: %s", n, restartNote(v), needSenders, usage("their slots or running WAL senders", max(others, senders-activeOurs))),
				fmt.Sprintf("ALTER SYSTEM SET max_wal_senders = %d; then restart the server (more leaves room for regions added later)", needSenders))
		}
	}

	keepFix := fmt.Sprintf("ALTER SYSTEM SET max_slot_wal_keep_size = '%s'; SELECT pg_reload_conf(); (choose more than the WAL this region writes during the longest outage a region should come back from without a backfill)", suggestedSlotKeep)
	switch v, ok := settings["max_slot_wal_keep_size"]; {
	case !ok:
		in.add("", Warning, fmt.Sprintf("PostgreSQL %s cannot bound the WAL a slot keeps (max_slot_wal_keep_size came in 13): a lost target region makes WAL grow here without limit, until the disk fills", in.versionStr),
			"upgrade the server to PostgreSQL 13 or later; meanwhile watch pg_replication_slots and drop the slot of a region that is gone for good")
	case v.value == "-1":
		in.add("", Warning, "max_slot_wal_keep_size is -1 (unlimited): a lost target region makes its slot keep WAL here without limit, until the disk fills", keepFix)
	default:
		in.add("", Info, fmt.Sprintf("replication slots keep at most %s of WAL (max_slot_wal_keep_size = %s%s): a target region that is down while this region writes more than that loses its position and needs a backfill",
			pgSize(v.value, v.unit), v.value, v.unit), "")
	}
	return nil
}

// pgSize formats a pg_settings value with its unit ("MB", "kB", "8kB"...)
// as bytes in a readable unit.
func pgSize(value, unit string) string {
	n, err := strconv.ParseInt(value, 10, 64)
	if err != nil {
		return value + unit
	}
	mult := int64(1)
	u := unit
	if i := strings.IndexFunc(u, func(r rune) bool { return r < '0' || r > '9' }); i > 0 {
		m, _ := strconv.ParseInt(u[:i], 10, 64)
		mult, u = m, u[i:]
	}
	switch u {
	case "kB":
		mult *= 1 << 10
	case "MB":
		mult *= 1 << 20
	case "GB":
		mult *= 1 << 30
	case "TB":
		mult *= 1 << 40
	}
	return humanBytes(n * mult)
}

// humanBytes formats n bytes as "512 bytes", "16 MiB", "1.5 GiB".
func humanBytes(n int64) string {
	units := []string{"KiB", "MiB", "GiB", "TiB"}
	if n < 1024 {
		return fmt.Sprintf("%d bytes", n)
	}
	f, u := float64(n)/1024, units[0]
	for _, next := range units[1:] {
		if f < 1024 {
			break
		}
		f, u = f/1024, next
	}
	if f == float64(int64(f)) {
		return fmt.Sprintf("%d %s", int64(f), u)
	}
	return fmt.Sprintf("%.1f %s", f, u)
}

// checkSlots reports on regiond's existing slots: lost positions, the WAL
// each retains, slots of no pipeline of this config.
func (in *pgInspector) checkSlots(slots []pgSlot) {
	pipelines := in.pipelineSlots()
	for _, s := range slots {
		if !strings.HasPrefix(s.name, slotPrefix) {
			continue
		}
		target, ours := pipelines[s.name]
		what := fmt.Sprintf("replication slot %s", s.name)
		backfill := "copy the rows again with regiond backfill, which gives the pipeline a new position"
		if ours {
			what += fmt.Sprintf(" (pipeline %s → %s)", in.region.Name, target)
			backfill = fmt.Sprintf("regiond backfill --from %s --to %s (it copies the rows again and gives the pipeline a new position)", in.region.Name, target)
		}
		drop := fmt.Sprintf("SELECT pg_drop_replication_slot('%s');", strings.ReplaceAll(s.name, "'", "''"))

		if ours {
			switch {
			case s.typ != "logical":
				in.add("", Error, fmt.Sprintf("%s is a %s slot, not a logical one: regiond cannot stream changes from it", what, s.typ),
					drop+" then "+backfill)
				continue
			case s.plugin != "pgoutput":
				in.add("", Error, fmt.Sprintf("%s uses plugin %s, not pgoutput: regiond cannot read its changes", what, s.plugin),
					drop+" then "+backfill)
				continue
			case s.database != in.db:
				in.add("", Error, fmt.Sprintf("%s belongs to database %s, not %s: it streams the other database's changes", what, s.database, in.db),
					fmt.Sprintf("if that slot is not needed there: %s (in database %s), then %s", drop, s.database, backfill))
				continue
			}
		}
		switch s.walStatus {
		case "lost":
			in.add("", Error, what+" has lost WAL it still needed (wal_status = lost, max_slot_wal_keep_size was exceeded): the pipeline's position is lost and it cannot resume", backfill)
			continue
		case "unreserved":
			in.add("", Warning, what+" is about to lose WAL it still needs (wal_status = unreserved): if its reader does not catch up before the next checkpoint, the pipeline's position is lost",
				fmt.Sprintf("run the pipeline's reader now so it catches up (regiond run), or raise max_slot_wal_keep_size: %s", fmt.Sprintf("ALTER SYSTEM SET max_slot_wal_keep_size = '%s'; SELECT pg_reload_conf();", suggestedSlotKeep)))
			continue
		}

		var facts []string
		if !ours {
			facts = append(facts, "belongs to no pipeline of this config (left by a removed region or another config?)")
		}
		if s.active {
			facts = append(facts, "is in use")
		} else {
			facts = append(facts, "is not in use (no reader is connected)")
		}
		if s.retained != nil {
			facts = append(facts, "retains "+humanBytes(*s.retained)+" of WAL")
		}
		problem := what + " " + joinAnd(facts)
		if s.retained != nil && *s.retained > gib {
			fix := fmt.Sprintf("run region %s's pipelines (regiond run) so it catches up; if region %s is gone for good: %s", target, target, drop)
			if !ours {
				fix = "if no regiond reads this slot any more: " + drop
			}
			in.add("", Warning, problem+": WAL it retains stays on this server's disk until the slot's reader confirms it", fix)
			continue
		}
		in.add("", Info, problem, "")
	}
}

func joinAnd(s []string) string {
	switch len(s) {
	case 0:
		return ""
	case 1:
		return s[0]
	}
	return strings.Join(s[:len(s)-1], ", ") + " and " + s[len(s)-1]
}

// checkRole checks the role attributes and parameter privileges regiond
// needs: REPLICATION for the slots, SET session_replication_role for the
// applier.
func (in *pgInspector) checkRole(ctx context.Context, replication bool) error {
	if !in.super && !replication {
		in.add("", Error, fmt.Sprintf("user %s has no REPLICATION attribute: regiond needs it to create replication slots and stream changes", in.user),
			fmt.Sprintf("ALTER ROLE %s REPLICATION;", in.role()))
	}
	if in.super {
		return nil
	}
	if in.version < 150000 {
		in.add("", Error, fmt.Sprintf("user %s is not a superuser: before PostgreSQL 15 only superusers can SET session_replication_role = replica, which regiond's applier runs with so triggers do not fire twice (this is %s)", in.user, in.versionStr),
			fmt.Sprintf("upgrade to PostgreSQL 15 or later and GRANT SET ON PARAMETER session_replication_role TO %s; (or ALTER ROLE %s SUPERUSER;)", in.role(), in.role()))
		return nil
	}
	var canSet bool
	if err := in.conn.QueryRow(ctx, "SELECT has_parameter_privilege(current_user, 'session_replication_role', 'SET')").Scan(&canSet); err != nil {
		return err
	}
	if !canSet {
		in.add("", Error, fmt.Sprintf("user %s may not set session_replication_role: regiond's applier runs with session_replication_role = replica so triggers do not fire twice", in.user),
			fmt.Sprintf("GRANT SET ON PARAMETER session_replication_role TO %s;", in.role()))
	}
	return nil
}

// checkSchema checks that the schema exists and that regiond may create
// its regiond_* tables in it.
func (in *pgInspector) checkSchema(ctx context.Context) error {
	var usage, create bool
	err := in.conn.QueryRow(ctx, "SELECT has_schema_privilege(oid, 'USAGE'), has_schema_privilege(oid, 'CREATE') FROM pg_namespace WHERE nspname = $1", in.schema).Scan(&usage, &create)
	if errors.Is(err, pgx.ErrNoRows) {
		fix := "fix schema: in the region's config"
		if in.region.Schema == "" || in.region.Schema == config.DefaultPostgresSchema {
			fix = fmt.Sprintf("set schema: to the schema holding the tables in the region's config, or CREATE SCHEMA %s", pgconn.Ident(in.schema))
		}
		in.add("", Error, fmt.Sprintf("schema %s does not exist in database %s", in.schema, in.db), fix)
		return nil
	}
	if err != nil {
		return err
	}
	in.schemaOK = true
	var miss []string
	if !usage {
		miss = append(miss, "USAGE")
	}
	if !create {
		miss = append(miss, "CREATE")
	}
	if len(miss) > 0 {
		in.add("", Error, fmt.Sprintf("user %s lacks %s on schema %s, which regiond needs to reach the tables and to create its regiond_* tables there", in.user, strings.Join(miss, ", "), in.schema),
			fmt.Sprintf("GRANT %s ON SCHEMA %s TO %s;", strings.Join(miss, ", "), pgconn.Ident(in.schema), in.role()))
	}
	return nil
}

// pgTable is a relation in the schema named like a configured table or
// one of regiond's.
type pgTable struct {
	oid      uint32
	name     string
	kind     string // relkind
	ident    string // relreplident
	owner    string
	owned    bool // the user has its owner's privileges
	sel, ins bool
	upd, del bool
}

var relkindNames = map[string]string{"v": "view", "m": "materialized view", "f": "foreign table"}

// pgIndex is a unique index (or the replica identity index) of a table.
type pgIndex struct {
	name       string
	primary    bool
	replIdent  bool
	partial    bool
	columns    []string
	constraint string // the constraint it backs, "" for a bare index
}

// checkTables checks every configured table and records its definition in
// facts. It returns which configured tables the user owns.
func (in *pgInspector) checkTables(ctx context.Context, facts *pgFacts) (map[string]bool, error) {
	lower := make([]string, len(in.tables))
	for i, t := range in.tables {
		lower[i] = strings.ToLower(t)
	}
	rows, err := in.conn.Query(ctx, `SELECT c.oid, c.relname::text, c.relkind::text, c.relreplident::text, pg_get_userbyid(c.relowner)::text,
		pg_has_role(c.relowner, 'USAGE'),
		has_table_privilege(c.oid, 'SELECT'), has_table_privilege(c.oid, 'INSERT'),
		has_table_privilege(c.oid, 'UPDATE'), has_table_privilege(c.oid, 'DELETE')
		FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
		WHERE n.nspname = $1 AND c.relkind IN ('r', 'p', 'v', 'm', 'f')
		AND (lower(c.relname) = ANY($2) OR c.relname LIKE 'regiond\_%')`, in.schema, lower)
	if err != nil {
		return nil, err
	}
	byName := map[string]pgTable{}
	byLower := map[string]string{}
	var own []pgTable // regiond's own tables
	var t pgTable
	_, err = pgx.ForEachRow(rows, []any{&t.oid, &t.name, &t.kind, &t.ident, &t.owner, &t.owned, &t.sel, &t.ins, &t.upd, &t.del}, func() error {
		byName[t.name] = t
		byLower[strings.ToLower(t.name)] = t.name
		if strings.HasPrefix(t.name, "regiond_") {
			own = append(own, t)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}

	owned := map[string]bool{}
	var present []pgTable
	for _, name := range in.tables {
		t, ok := byName[name]
		switch {
		case !ok:
			problem := fmt.Sprintf("table %s does not exist in schema %s of database %s", name, in.schema, in.db)
			fix := "create it with the same columns and primary key as in the other regions, or fix the name under tables: in the config (or schema: in the region's config)"
			if other, ok := byLower[strings.ToLower(name)]; ok {
				problem += fmt.Sprintf(" (there is a table %s: table names are case-sensitive)", other)
				fix = fmt.Sprintf("write the name as %s under tables: in the config, or rename the table in every region", other)
			}
			in.add(name, Error, problem, fix)
		case relkindNames[t.kind] != "":
			in.add(name, Error, fmt.Sprintf("%s is a %s, not a table: regiond replicates tables only", name, relkindNames[t.kind]),
				"replicate the tables it reads from instead, and remove it from tables: in the config")
		case t.kind == "p":
			in.add(name, Error, "the table is partitioned, which regiond does not capture yet",
				"replicate a plain table instead, and remove it from tables: in the config")
		default:
			present = append(present, t)
			owned[name] = t.owned
		}
	}
	for _, t := range append(present, own...) {
		in.checkTablePrivileges(t)
	}
	if len(present) == 0 {
		return owned, nil
	}

	oids := make([]uint32, len(present))
	byOID := map[uint32]string{}
	for i, t := range present {
		oids[i] = t.oid
		byOID[t.oid] = t.name
		facts.tables[t.name] = &tableInfo{}
	}
	if err := in.readColumns(ctx, oids, byOID, facts); err != nil {
		return nil, err
	}
	indexes, err := in.readIndexes(ctx, oids, byOID)
	if err != nil {
		return nil, err
	}
	for _, t := range present {
		in.checkKeys(t, facts, indexes[t.name])
		in.checkRuleColumns(t.name, facts.tables[t.name])
	}
	return owned, nil
}

// checkTablePrivileges checks that the user may read and write table t.
func (in *pgInspector) checkTablePrivileges(t pgTable) {
	var miss []string
	for _, p := range []struct {
		name string
		ok   bool
	}{{"SELECT", t.sel}, {"INSERT", t.ins}, {"UPDATE", t.upd}, {"DELETE", t.del}} {
		if !p.ok {
			miss = append(miss, p.name)
		}
	}
	if len(miss) == 0 {
		return
	}
	in.add(t.name, Error, fmt.Sprintf("user %s lacks %s on table %s.%s, which regiond needs to apply changes and read rows", in.user, strings.Join(miss, ", "), in.schema, t.name),
		fmt.Sprintf("GRANT %s ON %s TO %s;", strings.Join(miss, ", "), in.qualified(t.name), in.role()))
}

func (in *pgInspector) readColumns(ctx context.Context, oids []uint32, byOID map[uint32]string, facts *pgFacts) error {
	rows, err := in.conn.Query(ctx, `SELECT a.attrelid, a.attname::text, format_type(a.atttypid, a.atttypmod), NOT a.attnotnull
		FROM pg_attribute a WHERE a.attrelid = ANY($1::oid[]) AND a.attnum > 0 AND NOT a.attisdropped
		ORDER BY a.attrelid, a.attnum`, oids)
	if err != nil {
		return err
	}
	var oid uint32
	var c column
	_, err = pgx.ForEachRow(rows, []any{&oid, &c.name, &c.typ, &c.nullable}, func() error {
		if t, ok := facts.tables[byOID[oid]]; ok {
			t.columns = append(t.columns, c)
		}
		return nil
	})
	return err
}

// readIndexes returns each table's unique indexes and replica identity
// index, the primary key first, then by name.
func (in *pgInspector) readIndexes(ctx context.Context, oids []uint32, byOID map[uint32]string) (map[string][]pgIndex, error) {
	keyAtts := "i.indnkeyatts"
	if in.version < 110000 {
		keyAtts = "i.indnatts"
	}
	rows, err := in.conn.Query(ctx, `SELECT i.indrelid, ic.relname::text, i.indisprimary, i.indisreplident, i.indpred IS NOT NULL,
		ARRAY(SELECT COALESCE(a.attname::text, '(expression)')
			FROM unnest(i.indkey::int2[]) WITH ORDINALITY k(attnum, ord)
			LEFT JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum
			WHERE k.ord <= `+keyAtts+` ORDER BY k.ord),
		COALESCE(con.conname::text, '')
		FROM pg_index i JOIN pg_class ic ON ic.oid = i.indexrelid
		LEFT JOIN pg_constraint con ON con.conindid = i.indexrelid AND con.conrelid = i.indrelid AND con.contype IN ('p', 'u')
		WHERE i.indrelid = ANY($1::oid[]) AND (i.indisunique OR i.indisreplident)
		ORDER BY i.indrelid, i.indisprimary DESC, ic.relname`, oids)
	if err != nil {
		return nil, err
	}
	out := map[string][]pgIndex{}
	var oid uint32
	var ix pgIndex
	_, err = pgx.ForEachRow(rows, []any{&oid, &ix.name, &ix.primary, &ix.replIdent, &ix.partial, &ix.columns, &ix.constraint}, func() error {
		name := byOID[oid]
		out[name] = append(out[name], ix)
		return nil
	})
	return out, err
}

// checkKeys checks a table's primary key, replica identity and other
// unique indexes, and records the primary key in facts.
func (in *pgInspector) checkKeys(t pgTable, facts *pgFacts, indexes []pgIndex) {
	info := facts.tables[t.name]
	var pk *pgIndex
	var uniques []pgIndex
	for i := range indexes {
		// A replica identity index is unique too.
		if ix := &indexes[i]; ix.primary {
			pk = ix
		} else {
			uniques = append(uniques, *ix)
		}
	}
	q := in.qualified(t.name)
	if pk == nil {
		cols := "..."
		for _, u := range uniques {
			if !u.partial && allNotNull(info, u.columns) {
				cols = pgIdents(u.columns)
				break
			}
		}
		in.add(t.name, Error, "no primary key: regiond matches rows between regions by their primary key (and once the table is in a publication, PostgreSQL refuses its UPDATEs and DELETEs without a replica identity)",
			fmt.Sprintf("ALTER TABLE %s ADD PRIMARY KEY (%s);", q, cols))
	} else {
		info.pk = pk.columns
		facts.pkNames[t.name] = pk.constraint
	}

	if rule := in.cfg.Tables[t.name].Rule(); t.ident != "f" && (rule == config.RuleLastWriterWins || rule == config.RuleHomeRegion) {
		in.add(t.name, Error, fmt.Sprintf("%s needs whole before images (the version or home of the row an UPDATE or DELETE changes), but REPLICA IDENTITY is not FULL", rule),
			fmt.Sprintf("ALTER TABLE %s REPLICA IDENTITY FULL;", q))
	}
	switch t.ident {
	case "n":
		in.add(t.name, Error, "REPLICA IDENTITY NOTHING: the WAL carries no key for its UPDATEs and DELETEs, so regiond cannot match them to rows, and once the table is in the publication PostgreSQL refuses them",
			fmt.Sprintf("ALTER TABLE %s REPLICA IDENTITY DEFAULT;", q))
	case "f":
		in.add(t.name, Info, "REPLICA IDENTITY FULL: the WAL carries whole old rows, which helps regiond detect conflicts (at the cost of more WAL)", "")
	case "i":
		// Even an identity index on the primary key's columns is refused:
		// regiond's reader takes the key from DEFAULT or FULL identities.
		name := "an index"
		for _, ix := range indexes {
			if ix.replIdent {
				name = fmt.Sprintf("index %s (%s)", ix.name, strings.Join(ix.columns, ", "))
			}
		}
		in.add(t.name, Error, fmt.Sprintf("REPLICA IDENTITY USING %s: the WAL carries only that index's columns for UPDATEs and DELETEs, and regiond reads the primary key from a DEFAULT or FULL replica identity", name),
			fmt.Sprintf("ALTER TABLE %s REPLICA IDENTITY DEFAULT; (or FULL)", q))
	}

	if pk == nil {
		return
	}
	for _, u := range uniques {
		fix := fmt.Sprintf("make sure no two regions ever write the same value (e.g. include the region in it), or drop it: DROP INDEX %s;", pgconn.Ident(in.schema, u.name))
		if u.constraint != "" {
			fix = fmt.Sprintf("make sure no two regions ever write the same value (e.g. include the region in it), or drop it: ALTER TABLE %s DROP CONSTRAINT %s;", q, pgconn.Ident(u.constraint))
		}
		in.add(t.name, Warning, fmt.Sprintf("unique index %s (%s) besides the primary key: two regions writing the same %s value to different rows collide, and the collision stops replication of the table (INSERT ... ON CONFLICT on the primary key raises on any other unique index)",
			u.name, strings.Join(u.columns, ", "), strings.Join(u.columns, ", ")), fix)
	}
}

func allNotNull(t *tableInfo, cols []string) bool {
	for _, name := range cols {
		if c, ok := t.column(name); !ok || c.nullable {
			return false
		}
	}
	return true
}

func pgIdents(names []string) string {
	q := make([]string, len(names))
	for i, n := range names {
		q[i] = pgconn.Ident(n)
	}
	return strings.Join(q, ", ")
}

// checkRuleColumns checks the columns a table's conflict rule names.
func (in *pgInspector) checkRuleColumns(name string, t *tableInfo) {
	tc := in.cfg.Tables[name]
	q := in.qualified(name)
	switch tc.Rule() {
	case config.RuleLastWriterWins:
		c, ok := t.column(tc.VersionColumn)
		if !ok {
			in.add(name, Error, fmt.Sprintf("version_column %s is not a column of the table", tc.VersionColumn),
				fmt.Sprintf("fix tables.%s.version_column in the config, or add the column: ALTER TABLE %s ADD COLUMN %s timestamp(6) NOT NULL;", name, q, pgconn.Ident(tc.VersionColumn)))
			return
		}
		switch c.typ {
		case "bigint", "timestamp without time zone", "timestamp with time zone", "timestamp(6) without time zone", "timestamp(6) with time zone":
		default:
			in.add(name, Warning, fmt.Sprintf("version_column %s is %s: regiond orders writes by it, and without microsecond timestamps or a bigint two writes can carry the same version", tc.VersionColumn, c.typ),
				fmt.Sprintf("ALTER TABLE %s ALTER COLUMN %s TYPE timestamp(6); (or bigint), in every region", q, pgconn.Ident(tc.VersionColumn)))
		}
	case config.RuleHomeRegion:
		if _, ok := t.column(tc.HomeColumn); !ok {
			in.add(name, Error, fmt.Sprintf("home_column %s is not a column of the table", tc.HomeColumn),
				fmt.Sprintf("fix tables.%s.home_column in the config, or add the column: ALTER TABLE %s ADD COLUMN %s text NOT NULL;", name, q, pgconn.Ident(tc.HomeColumn)))
		}
	}
}

// checkPublication checks publication regiond if it exists (its owner, what
// it publishes, that it holds regiond_checkpoints and every configured
// table), and otherwise that the user may create it. owned says which
// configured tables the user owns.
func (in *pgInspector) checkPublication(ctx context.Context, facts *pgFacts, owned map[string]bool) error {
	truncate := "p.pubtruncate"
	if in.version < 110000 {
		truncate = "true"
	}
	var owner string
	var isOwner, allTables, ins, upd, del, trunc bool
	err := in.conn.QueryRow(ctx, `SELECT pg_get_userbyid(p.pubowner)::text, pg_has_role(p.pubowner, 'USAGE'), p.puballtables,
		p.pubinsert, p.pubupdate, p.pubdelete, `+truncate+` FROM pg_publication p WHERE p.pubname = $1`, pgPublication).
		Scan(&owner, &isOwner, &allTables, &ins, &upd, &del, &trunc)
	if errors.Is(err, pgx.ErrNoRows) {
		in.checkCanCreatePublication(ctx, facts, owned)
		return nil
	}
	if err != nil {
		return err
	}

	if !isOwner {
		in.add("", Error, fmt.Sprintf("publication %s is owned by %s, and user %s is not a member of that role: regiond cannot add tables to it", pgPublication, owner, in.user),
			fmt.Sprintf("ALTER PUBLICATION %s OWNER TO %s;", pgconn.Ident(pgPublication), in.role()))
	}
	var off []string
	for _, p := range []struct {
		name string
		on   bool
	}{{"insert", ins}, {"update", upd}, {"delete", del}} {
		if !p.on {
			off = append(off, p.name)
		}
	}
	publishFix := fmt.Sprintf("ALTER PUBLICATION %s SET (publish = 'insert, update, delete, truncate');", pgconn.Ident(pgPublication))
	if len(off) > 0 {
		in.add("", Error, fmt.Sprintf("publication %s does not publish %s: regiond would never see those changes", pgPublication, joinAnd(off)), publishFix)
	}
	if !trunc {
		in.add("", Warning, fmt.Sprintf("publication %s does not publish truncate: regiond cannot report a TRUNCATE in this region, and the other regions silently keep the rows", pgPublication), publishFix)
	}
	if allTables {
		return nil
	}

	rows, err := in.conn.Query(ctx, "SELECT tablename::text FROM pg_publication_tables WHERE pubname = $1 AND schemaname = $2", pgPublication, in.schema)
	if err != nil {
		return err
	}
	members, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return err
	}
	in.checkPublicationTables(members, facts)
	return nil
}

// checkPublicationTables checks that the publication, listing members of
// the schema, holds regiond_checkpoints and every configured table.
func (in *pgInspector) checkPublicationTables(members []string, facts *pgFacts) {
	set := map[string]bool{}
	for _, m := range members {
		set[m] = true
	}
	addFix := func(table string) string {
		return fmt.Sprintf("ALTER PUBLICATION %s ADD TABLE %s;", pgconn.Ident(pgPublication), in.qualified(table))
	}
	note := fmt.Sprintf(" (as the owner of the publication and the table; regiond's reader does the same when it starts if user %s owns both)", in.user)
	if !set[pgconn.CheckpointTable] {
		in.add("", Error, fmt.Sprintf("publication %s does not include %s.%s: readers would not see regiond's marker, so every change regiond applies here would be captured again and echo between the regions", pgPublication, in.schema, pgconn.CheckpointTable),
			addFix(pgconn.CheckpointTable)+note)
	}
	for _, name := range in.tables {
		if _, ok := facts.tables[name]; ok && !set[name] {
			in.add(name, Error, fmt.Sprintf("publication %s does not include table %s.%s: its changes in this region would not be captured", pgPublication, in.schema, name),
				addFix(name)+note)
		}
	}
}

// checkCanCreatePublication checks that the user may create publication
// regiond on the configured tables: CREATE on the database and ownership
// of each table.
func (in *pgInspector) checkCanCreatePublication(ctx context.Context, facts *pgFacts, owned map[string]bool) {
	var create bool
	if err := in.conn.QueryRow(ctx, "SELECT has_database_privilege(current_database(), 'CREATE')").Scan(&create); err != nil {
		in.add("", Warning, scrub("cannot read the user's privileges on the database: "+err.Error(), in.password), "run check again")
		return
	}
	if !create {
		in.add("", Error, fmt.Sprintf("user %s lacks CREATE on database %s, which regiond needs to create publication %s (it does not exist yet)", in.user, in.db, pgPublication),
			fmt.Sprintf("GRANT CREATE ON DATABASE %s TO %s;", pgconn.Ident(in.db), in.role()))
	}
	var notOwned []string
	for _, name := range in.tables {
		if own, ok := owned[name]; ok && !own {
			notOwned = append(notOwned, name)
		}
	}
	sort.Strings(notOwned)
	for _, name := range notOwned {
		in.add(name, Error, fmt.Sprintf("user %s does not own table %s.%s: regiond creates publication %s on the configured tables, and only a table's owner may add it to a publication", in.user, in.schema, name, pgPublication),
			fmt.Sprintf("ALTER TABLE %s OWNER TO %s; (or, as the tables' owner, CREATE PUBLICATION %s FOR TABLE <the configured tables and %s>; ALTER PUBLICATION %s OWNER TO %s;)",
				in.qualified(name), in.role(), pgconn.Ident(pgPublication), pgconn.CheckpointTable, pgconn.Ident(pgPublication), in.role()))
	}
}

// regionTable is one region's definition of a table, for comparing regions
// of either engine.
type regionTable struct {
	res      *regionResult
	t        *tableInfo
	postgres bool
}

// compareAcrossEngines compares postgres regions' tables with the other
// regions': column names and primary key columns in every case, column
// types only between postgres regions (mapping types between engines is
// the sinks' job). compareTables compares mysql regions with each other.
//
// Every region is compared with the first region in config order that has
// the table, except that mysql regions other than the first mysql one are
// left to compareTables, so each difference is reported once.
func compareAcrossEngines(tables []string, results []*regionResult) []Finding {
	var out []Finding
	for _, name := range tables {
		var have []regionTable
		anyPG := false
		for _, r := range results {
			switch {
			case r.facts != nil:
				if t, ok := r.facts.tables[name]; ok {
					have = append(have, regionTable{res: r, t: t})
				}
			case r.pg != nil:
				if t, ok := r.pg.tables[name]; ok {
					have = append(have, regionTable{res: r, t: t, postgres: true})
					anyPG = true
				}
			}
		}
		if !anyPG || len(have) < 2 {
			continue
		}
		ref := have[0]
		firstMySQL := true
		for _, o := range have[1:] {
			if !o.postgres {
				if !ref.postgres || !firstMySQL {
					continue
				}
				firstMySQL = false
			}
			out = append(out, compareTablePair(name, ref, o)...)
		}
	}
	return out
}

// compareTablePair reports how region o's table differs from ref's.
func compareTablePair(name string, ref, o regionTable) []Finding {
	var out []Finding
	f := func(sev Severity, problem, fix string) {
		out = append(out, Finding{Region: o.res.name, Table: name, Severity: sev, Problem: problem, Fix: fix})
	}
	missing := func(c column, from, in regionTable) {
		problem := fmt.Sprintf("column %s is in region %s but not in region %s; the tables must have the same columns in every region", c.name, from.res.name, in.res.name)
		if other, ok := columnFold(in.t, c.name); ok {
			problem += fmt.Sprintf(" (region %s has a column %s: column names must match exactly, case included)", in.res.name, other)
		}
		f(Error, problem, fmt.Sprintf("in region %s: %s (or drop it in region %s)", in.res.name, addColumnSQL(name, c, from, in), from.res.name))
	}
	for _, c := range ref.t.columns {
		if _, ok := o.t.column(c.name); !ok {
			missing(c, ref, o)
		}
	}
	for _, c := range o.t.columns {
		rc, ok := ref.t.column(c.name)
		if !ok {
			missing(c, o, ref)
			continue
		}
		if ref.postgres && o.postgres && rc.typ != c.typ {
			f(Warning, fmt.Sprintf("column %s is %s in region %s but %s in region %s; values that fit one may not fit the other", c.name, c.typ, o.res.name, rc.typ, ref.res.name),
				fmt.Sprintf("give column %s the same type in every region (ALTER TABLE %s ALTER COLUMN %s TYPE %s;)", c.name, pgconn.Ident(o.res.pg.schema, name), pgconn.Ident(c.name), rc.typ))
		}
	}
	if ref.t.pk != nil && o.t.pk != nil && !equalStrings(ref.t.pk, o.t.pk) {
		var fix string
		if o.postgres {
			drop := "DROP CONSTRAINT " + pgconn.Ident(o.res.pg.pkNames[name]) + ", "
			if o.res.pg.pkNames[name] == "" {
				drop = ""
			}
			fix = fmt.Sprintf("make the primary key the same in every region, e.g. in region %s: ALTER TABLE %s %sADD PRIMARY KEY (%s);", o.res.name, pgconn.Ident(o.res.pg.schema, name), drop, pgIdents(ref.t.pk))
		} else {
			fix = fmt.Sprintf("make the primary key the same in every region, e.g. in region %s: ALTER TABLE %s DROP PRIMARY KEY, ADD PRIMARY KEY (%s)", o.res.name, quoteIdent(name), quoteIdents(ref.t.pk))
		}
		f(Error, fmt.Sprintf("the primary key is (%s) in region %s but (%s) in region %s%s; rows are matched between regions by their primary key",
			strings.Join(o.t.pk, ", "), o.res.name, strings.Join(ref.t.pk, ", "), ref.res.name, pkDifference(ref.t.pk, o.t.pk)), fix)
	}
	return out
}

// columnFold finds a column whose name equals name but for case.
func columnFold(t *tableInfo, name string) (string, bool) {
	for _, c := range t.columns {
		if strings.EqualFold(c.name, name) {
			return c.name, true
		}
	}
	return "", false
}

// addColumnSQL is the statement adding column c (as defined in region
// from) to table name in region in. Between engines the type is left for
// the operator to choose.
func addColumnSQL(name string, c column, from, in regionTable) string {
	typ := c.typ
	switch {
	case from.postgres && !in.postgres:
		typ = "<the MySQL type for PostgreSQL " + c.typ + ">"
	case !from.postgres && in.postgres:
		typ = "<the PostgreSQL type for MySQL " + c.typ + ">"
	}
	if in.postgres {
		notNull := ""
		if !c.nullable {
			notNull = " NOT NULL"
		}
		return fmt.Sprintf("ALTER TABLE %s ADD COLUMN %s %s%s;", pgconn.Ident(in.res.pg.schema, name), pgconn.Ident(c.name), typ, notNull)
	}
	return fmt.Sprintf("ALTER TABLE %s ADD COLUMN %s %s%s", quoteIdent(name), quoteIdent(c.name), typ, nullSQL(c.nullable))
}
