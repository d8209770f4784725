package check

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"net"
	"sort"
	"strconv"
	"strings"
	"syscall"

	"github.com/regiond/regiond/config"
	"github.com/regiond/regiond/internal/mysqlconn"
)

// oneDay is the binlog retention below which Run warns: a region that is
// down for a weekend would lose its position.
const oneDay = 24 * 60 * 60

// suggestedRetention is the binlog retention the fixes suggest, in seconds.
const suggestedRetention = 7 * oneDay

// mysqlInspector inspects one mysql region. Every statement it sends is a
// SELECT or a SHOW.
type mysqlInspector struct {
	res      *regionResult
	db       *sql.DB
	dsn      config.MySQLDSN
	flavor   string // config.FlavorMySQL or config.FlavorMariaDB
	version  string
	user     string // CURRENT_USER(), e.g. "regiond@%"
	canRead  bool   // the user may SELECT in the database (false: unknown tables may just be invisible)
	tableCfg map[string]config.Table
	tables   []string // configured table names, sorted
}

// inspectMySQL connects to a mysql region and checks everything replication
// needs from it. It returns facts only when it could connect.
func inspectMySQL(ctx context.Context, r config.Region, tableCfg map[string]config.Table, tables []string) *regionResult {
	res := &regionResult{name: r.Name}
	d, err := config.ParseMySQLDSN(r.DSN)
	if err != nil {
		res.add("", Error, "the dsn is not valid: "+err.Error(), "fix the region's dsn in the config")
		return res
	}
	db, err := mysqlconn.Open(mysqlconn.Params{
		Host: d.Host, Port: d.Port, User: d.User, Password: d.Password,
		Database: d.Database, Extra: d.Params,
	})
	if err != nil {
		res.add("", Error, scrub(fmt.Sprintf("cannot connect to %s: %v", d.Addr(), err), d.Password), "fix the region's dsn in the config")
		return res
	}
	defer db.Close()
	db.SetMaxOpenConns(1)

	cctx, cancel := context.WithTimeout(ctx, ConnectTimeout)
	err = db.PingContext(cctx)
	cancel()
	if err != nil {
		problem, fix := describeConnectError(err, d)
		res.add("", Error, scrub(problem, d.Password), fix)
		return res
	}

	in := &mysqlInspector{res: res, db: db, dsn: d, tableCfg: tableCfg, tables: tables, canRead: true}
	facts, err := in.inspect(ctx, r)
	if err != nil {
		res.add("", Error, scrub(fmt.Sprintf("inspecting the server at %s failed: %v", d.Addr(), err), d.Password),
			"make sure the server stays reachable and the dsn user may read server variables and information_schema, then run check again")
		return res
	}
	res.facts = facts
	return res
}

// describeConnectError turns a failed connection into a problem naming the
// address and a fix. It never includes the DSN.
func describeConnectError(err error, d config.MySQLDSN) (problem, fix string) {
	addr := d.Addr()
	prefix := fmt.Sprintf("cannot connect to %s as user %s: ", addr, d.User)
	var dnsErr *net.DNSError
	var netErr net.Error
	switch n := mysqlconn.ErrorNumber(err); {
	case n == 1045:
		if d.Password == "" {
			return prefix + "access denied (the dsn has no password)",
				"add the password to the dsn, like mysql://user:${PASSWORD}@host:port/db (URL-escape special characters)"
		}
		return prefix + "access denied for user " + d.User,
			"check the password in the dsn (or the ${VAR} it comes from), and that the user may connect from this host"
	case n == 1044:
		return prefix + "access denied to database " + d.Database,
			fmt.Sprintf("GRANT SELECT, INSERT, UPDATE, DELETE, CREATE ON %s.* TO '%s'@'<host>'; (or fix the database in the dsn)", quoteIdent(d.Database), sqlString(d.User))
	case n == 1049:
		return prefix + "database " + d.Database + " does not exist",
			"fix the database in the dsn, or create it with the replicated tables: CREATE DATABASE " + quoteIdent(d.Database)
	case n == 1130:
		return prefix + "the server does not allow user " + d.User + " to connect from this host",
			fmt.Sprintf("create the user for this host: CREATE USER '%s'@'<this host>' IDENTIFIED BY '...'; then grant it what regiond needs (run check again)", sqlString(d.User))
	case n != 0:
		return prefix + err.Error(), "fix the server or the dsn"
	case errors.Is(err, syscall.ECONNREFUSED):
		return prefix + "connection refused: nothing listens there",
			"start the server, or fix the host and port in the dsn"
	case errors.As(err, &dnsErr):
		return prefix + "cannot resolve host " + d.Host,
			"fix the host in the dsn"
	case errors.Is(err, context.DeadlineExceeded), errors.As(err, &netErr) && netErr.Timeout():
		return prefix + fmt.Sprintf("no answer within %s", ConnectTimeout),
			"check that the server is up and that no firewall blocks this host from reaching " + addr
	}
	return prefix + err.Error(), "check the host, port and TLS settings in the dsn, and that the server is up"
}

// scrub removes password from s, a last line of defence for messages that
// quote driver errors.
func scrub(s, password string) string {
	if len(password) < 3 {
		return s
	}
	return strings.ReplaceAll(s, password, "xxxxx")
}

func (in *mysqlInspector) add(table string, sev Severity, problem, fix string) {
	in.res.add(table, sev, scrub(problem, in.dsn.Password), fix)
}

func (in *mysqlInspector) inspect(ctx context.Context, r config.Region) (*mysqlFacts, error) {
	if err := in.db.QueryRowContext(ctx, "SELECT VERSION(), CURRENT_USER()").Scan(&in.version, &in.user); err != nil {
		return nil, err
	}
	in.flavor = config.FlavorMySQL
	if strings.Contains(strings.ToLower(in.version), "mariadb") {
		in.flavor = config.FlavorMariaDB
	}
	if r.Flavor != "" && r.Flavor != in.flavor {
		in.add("", Error, fmt.Sprintf("the config says flavor: %s, but the server is %s %s; regiond would misread its GTID positions", r.Flavor, flavorName(in.flavor), in.version),
			fmt.Sprintf("set flavor: %s in the region's config, or leave flavor out to detect it", in.flavor))
	}

	vars, err := in.variables(ctx)
	if err != nil {
		return nil, fmt.Errorf("read server variables: %w", err)
	}
	facts := &mysqlFacts{flavor: in.flavor, tables: map[string]*tableInfo{}}
	facts.serverID, _ = strconv.ParseUint(vars["server_id"], 10, 64)
	facts.aiIncrement, _ = strconv.ParseUint(vars["auto_increment_increment"], 10, 64)
	facts.aiOffset, _ = strconv.ParseUint(vars["auto_increment_offset"], 10, 64)

	in.checkBinlog(vars)
	if facts.serverID == 0 {
		in.add("", Error, "server_id is 0: the server cannot serve its binlog to regiond",
			"SET GLOBAL server_id = <a number unique among all regions' servers>; and server_id = <the same number> under [mysqld] in my.cnf")
	}
	if isOn(vars["log_bin"]) {
		in.checkBinlogFilters(ctx)
	}
	in.checkGrants(ctx)
	if err := in.checkTables(ctx, facts); err != nil {
		return nil, fmt.Errorf("read table definitions: %w", err)
	}
	return facts, nil
}

func flavorName(flavor string) string {
	if flavor == config.FlavorMariaDB {
		return "MariaDB"
	}
	return "MySQL"
}

// variables returns the global variables checks look at, keyed by
// lowercase name. A variable the server does not have is absent.
func (in *mysqlInspector) variables(ctx context.Context) (map[string]string, error) {
	names := []string{
		"log_bin", "binlog_format", "binlog_row_image", "binlog_row_metadata",
		"gtid_strict_mode", "gtid_mode", "enforce_gtid_consistency",
		"binlog_expire_logs_seconds", "expire_logs_days", "binlog_expire_logs_auto_purge",
		"server_id", "auto_increment_increment", "auto_increment_offset",
		"binlog_transaction_compression", "binlog_row_value_options",
	}
	q := "SHOW GLOBAL VARIABLES WHERE Variable_name IN (" + strings.TrimSuffix(strings.Repeat("?,", len(names)), ",") + ")"
	args := make([]any, len(names))
	for i, n := range names {
		args[i] = n
	}
	rows, err := in.db.QueryContext(ctx, q, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	vars := map[string]string{}
	for rows.Next() {
		var k, v string
		if err := rows.Scan(&k, &v); err != nil {
			return nil, err
		}
		vars[strings.ToLower(k)] = v
	}
	return vars, rows.Err()
}

func isOn(v string) bool {
	switch strings.ToUpper(v) {
	case "ON", "1", "YES", "TRUE":
		return true
	}
	return false
}

// setFix is the fix for a dynamic global variable that must be value.
func setFix(name, value string, quoted bool) string {
	v := value
	if quoted {
		v = "'" + value + "'"
	}
	return fmt.Sprintf("SET GLOBAL %s = %s; and %s = %s under [mysqld] in my.cnf so it survives a restart", name, v, name, value)
}

// checkBinlog checks the binlog settings regiond reads changes with.
func (in *mysqlInspector) checkBinlog(vars map[string]string) {
	if !isOn(vars["log_bin"]) {
		in.add("", Error, "log_bin is OFF: the server writes no binlog, so regiond cannot capture its changes",
			"add log_bin = binlog (and a server_id unique among the regions) under [mysqld] in my.cnf and restart the server; log_bin cannot be set at runtime")
	}
	// binlog_format etc. also matter with log_bin off: they take effect
	// once it is turned on.
	if v := vars["binlog_format"]; !strings.EqualFold(v, "ROW") {
		in.add("", Error, fmt.Sprintf("binlog_format is %s, not ROW: regiond reads row images from the binlog, which statement-based logging does not write", orNone(v)),
			setFix("binlog_format", "ROW", true)+" (sessions already open keep the old format until they reconnect)")
	}
	if v := vars["binlog_row_image"]; !strings.EqualFold(v, "FULL") {
		in.add("", Error, fmt.Sprintf("binlog_row_image is %s, not FULL: regiond needs every column of the row before and after each change to resolve conflicts", orNone(v)),
			setFix("binlog_row_image", "FULL", true))
	}
	switch v, ok := vars["binlog_row_metadata"]; {
	case !ok:
		in.add("", Error, fmt.Sprintf("the server (%s) has no binlog_row_metadata setting: regiond needs column names in the binlog, which MariaDB 10.5+ and MySQL 8.0+ write", in.version),
			"upgrade the server to MariaDB 10.5 or later, or MySQL 8.0 or later, and set binlog_row_metadata = FULL")
	case !strings.EqualFold(v, "FULL"):
		in.add("", Error, fmt.Sprintf("binlog_row_metadata is %s, not FULL: regiond needs the column names in the binlog to read changes made before a schema change correctly", v),
			setFix("binlog_row_metadata", "FULL", true))
	}

	if in.flavor == config.FlavorMariaDB {
		if !isOn(vars["gtid_strict_mode"]) {
			in.add("", Warning, "gtid_strict_mode is OFF: it is recommended, so an out-of-order GTID is refused instead of making positions ambiguous",
				setFix("gtid_strict_mode", "ON", false))
		}
	} else {
		if v := vars["gtid_mode"]; !strings.EqualFold(v, "ON") {
			in.add("", Error, fmt.Sprintf("gtid_mode is %s, not ON: regiond's MySQL positions are GTID sets", orNone(v)),
				"SET GLOBAL enforce_gtid_consistency = ON; SET GLOBAL gtid_mode = OFF_PERMISSIVE; SET GLOBAL gtid_mode = ON_PERMISSIVE; wait until SHOW STATUS LIKE 'Ongoing_anonymous_transaction_count' is 0; SET GLOBAL gtid_mode = ON; and gtid_mode = ON, enforce_gtid_consistency = ON under [mysqld] in my.cnf")
		}
		if v := vars["enforce_gtid_consistency"]; !strings.EqualFold(v, "ON") {
			in.add("", Error, fmt.Sprintf("enforce_gtid_consistency is %s, not ON: gtid_mode = ON requires it", orNone(v)),
				setFix("enforce_gtid_consistency", "ON", false))
		}
		// MySQL 8.0.20+ only (MariaDB has no such variable; its own
		// log_bin_compress is read fine). A compressed transaction arrives
		// as one TRANSACTION_PAYLOAD_EVENT, which the reader refuses rather
		// than skip, so the pipeline would stop at the first one.
		if isOn(vars["binlog_transaction_compression"]) {
			in.add("", Error, "binlog_transaction_compression is ON: regiond cannot read compressed binlog transactions yet, and its pipeline from this region stops at the first one",
				setFix("binlog_transaction_compression", "OFF", false)+" (sessions already open keep compressing until they reconnect)")
		}
		// MySQL 8.0.3+: with PARTIAL_JSON an update of a JSON column may be
		// logged as a diff (PARTIAL_UPDATE_ROWS_EVENT), which the reader
		// refuses.
		if v := vars["binlog_row_value_options"]; strings.Contains(strings.ToUpper(v), "PARTIAL_JSON") {
			in.add("", Error, "binlog_row_value_options is PARTIAL_JSON: updates of JSON columns are logged as diffs, which regiond cannot apply, and its pipeline from this region stops at the first one",
				setFix("binlog_row_value_options", "", true)+" (sessions already open keep it until they reconnect)")
		}
	}

	if isOn(vars["log_bin"]) {
		in.checkRetention(vars)
	}
}

// checkRetention reports how long binlogs are kept: a region that is down
// longer than that loses its position.
func (in *mysqlInspector) checkRetention(vars map[string]string) {
	name := "binlog_expire_logs_seconds"
	if _, ok := vars[name]; !ok {
		name = "expire_logs_days" // MariaDB before 10.6
	}
	secs, _ := strconv.ParseUint(vars["binlog_expire_logs_seconds"], 10, 64)
	if secs == 0 {
		days, _ := strconv.ParseFloat(vars["expire_logs_days"], 64)
		secs = uint64(days * oneDay)
	}
	suggested := strconv.Itoa(suggestedRetention)
	if name == "expire_logs_days" {
		suggested = strconv.Itoa(suggestedRetention / oneDay)
	}
	fix := setFix(name, suggested, false) + " (7 days; choose longer than the longest outage a region should come back from without a backfill)"
	switch {
	case strings.EqualFold(vars["binlog_expire_logs_auto_purge"], "OFF"):
		in.add("", Warning, "binlog_expire_logs_auto_purge is OFF: binlogs are never purged, so they fill the disk over time",
			setFix("binlog_expire_logs_auto_purge", "ON", false)+" and keep "+name+" at 7 days or more")
	case secs == 0:
		in.add("", Warning, fmt.Sprintf("binlogs are never purged (%s = 0): they fill the disk over time", name), fix)
	case secs < oneDay:
		in.add("", Warning, fmt.Sprintf("binlogs are kept only %s (%s = %s): a region down longer than that loses its position and needs a backfill", humanSeconds(secs), name, vars[name]), fix)
	default:
		in.add("", Info, fmt.Sprintf("binlogs are kept %s (%s = %s): a region down longer than that loses its position and needs a backfill", humanSeconds(secs), name, vars[name]), "")
	}
}

// humanSeconds formats a retention such as "7 days", "6 hours", "90 seconds".
func humanSeconds(s uint64) string {
	unit := func(n uint64, name string) string {
		if n == 1 {
			return "1 " + name
		}
		return fmt.Sprintf("%d %ss", n, name)
	}
	switch {
	case s%oneDay == 0:
		return unit(s/oneDay, "day")
	case s%3600 == 0:
		return unit(s/3600, "hour")
	case s%60 == 0:
		return unit(s/60, "minute")
	}
	return unit(s, "second")
}

func orNone(v string) string {
	if v == "" {
		return "not set"
	}
	return v
}

// checkBinlogFilters reports binlog-do-db / binlog-ignore-db settings that
// keep the DSN's database (and with it regiond's marker table) out of the
// binlog. It needs BINLOG MONITOR; without it, checkGrants reports that.
func (in *mysqlInspector) checkBinlogFilters(ctx context.Context) {
	var doDB, ignoreDB string
	found := false
	for _, q := range []string{"SHOW MASTER STATUS", "SHOW BINARY LOG STATUS"} {
		rows, err := in.db.QueryContext(ctx, q)
		if err != nil {
			continue
		}
		cols, _ := rows.Columns()
		vals := make([]sql.NullString, len(cols))
		ptrs := make([]any, len(cols))
		for i := range vals {
			ptrs[i] = &vals[i]
		}
		if rows.Next() && rows.Scan(ptrs...) == nil {
			found = true
			for i, c := range cols {
				switch strings.ToLower(c) {
				case "binlog_do_db":
					doDB = vals[i].String
				case "binlog_ignore_db":
					ignoreDB = vals[i].String
				}
			}
		}
		rows.Close()
		if found {
			break
		}
	}
	db := in.dsn.Database
	if doDB != "" && !containsName(doDB, db) {
		in.add("", Error, fmt.Sprintf("binlog_do_db is set to %s, which leaves database %s out of the binlog: regiond would see none of its changes", doDB, db),
			fmt.Sprintf("add binlog_do_db = %s under [mysqld] in my.cnf (or remove every binlog_do_db line) and restart the server", db))
	}
	if containsName(ignoreDB, db) {
		in.add("", Error, fmt.Sprintf("binlog_ignore_db includes database %s, so its changes are not in the binlog: regiond would see none of them", db),
			fmt.Sprintf("remove binlog_ignore_db = %s from my.cnf and restart the server", db))
	}
}

func containsName(list, name string) bool {
	for _, s := range strings.Split(list, ",") {
		if strings.TrimSpace(s) == name {
			return true
		}
	}
	return false
}

// checkGrants checks that the DSN user holds every privilege regiond needs.
func (in *mysqlInspector) checkGrants(ctx context.Context) {
	rows, err := in.db.QueryContext(ctx, "SHOW GRANTS")
	if err != nil {
		in.add("", Warning, "cannot read the user's grants (SHOW GRANTS failed: "+err.Error()+"); privileges were not checked", "run SHOW GRANTS as the dsn user to see why")
		return
	}
	var lines []string
	for rows.Next() {
		var l string
		if err := rows.Scan(&l); err != nil {
			break
		}
		lines = append(lines, l)
	}
	rows.Close()
	g := parseGrants(lines)
	missGlobal, missDB := g.missing(in.flavor, in.dsn.Database)
	in.canRead = !contains(missDB, "SELECT")

	user, host := splitUser(in.user)
	grantee := fmt.Sprintf("'%s'@'%s'", sqlString(user), sqlString(host))
	sev, note := Error, ""
	if g.roles && in.flavor == config.FlavorMySQL {
		// MySQL's SHOW GRANTS does not expand roles, which may hold them.
		sev, note = Warning, " (it has roles, whose privileges were not counted: check them with SHOW GRANTS FOR "+grantee+" USING <role>)"
	}
	if len(missGlobal) > 0 {
		in.add("", sev, fmt.Sprintf("user %s lacks %s, which regiond needs to read the binlog and its position%s", in.user, strings.Join(missGlobal, ", "), note),
			fmt.Sprintf("GRANT %s ON *.* TO %s;", strings.Join(missGlobal, ", "), grantee))
	}
	if len(missDB) > 0 {
		in.add("", sev, fmt.Sprintf("user %s lacks %s on database %s, which regiond needs to apply changes and keep its regiond_* tables there%s", in.user, strings.Join(missDB, ", "), in.dsn.Database, note),
			fmt.Sprintf("GRANT %s ON %s.* TO %s;", strings.Join(missDB, ", "), quoteIdent(in.dsn.Database), grantee))
	}
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// splitUser splits CURRENT_USER()'s "user@host" at the last @.
func splitUser(s string) (user, host string) {
	i := strings.LastIndexByte(s, '@')
	if i < 0 {
		return s, "%"
	}
	return s[:i], s[i+1:]
}

// sqlString escapes s for a single-quoted SQL string.
func sqlString(s string) string {
	return strings.NewReplacer(`\`, `\\`, `'`, `''`).Replace(s)
}

// checkTables checks every configured table and records its definition in
// facts.
func (in *mysqlInspector) checkTables(ctx context.Context, facts *mysqlFacts) error {
	type tableRow struct{ typ, engine string }
	existing := map[string]tableRow{}
	lower := map[string]string{}
	rows, err := in.db.QueryContext(ctx, "SELECT TABLE_NAME, TABLE_TYPE, IFNULL(ENGINE, '') FROM information_schema.TABLES WHERE TABLE_SCHEMA = DATABASE()")
	if err != nil {
		return err
	}
	for rows.Next() {
		var name string
		var t tableRow
		if err := rows.Scan(&name, &t.typ, &t.engine); err != nil {
			rows.Close()
			return err
		}
		existing[name] = t
		lower[strings.ToLower(name)] = name
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return err
	}

	var present []string
	for _, name := range in.tables {
		t, ok := existing[name]
		switch {
		case !ok:
			problem := fmt.Sprintf("table %s does not exist in database %s", name, in.dsn.Database)
			fix := fmt.Sprintf("create it with the same definition as in the other regions (SHOW CREATE TABLE %s where it exists), or fix the name under tables: in the config", quoteIdent(name))
			if other, ok := lower[strings.ToLower(name)]; ok {
				problem += fmt.Sprintf(" (there is a table %s: table names are case-sensitive)", other)
				fix = fmt.Sprintf("write the name as %s under tables: in the config, or rename the table in every region", other)
			}
			if !in.canRead {
				problem += fmt.Sprintf(", or user %s may not see it", in.user)
			}
			in.add(name, Error, problem, fix)
		case t.typ != "BASE TABLE":
			in.add(name, Error, fmt.Sprintf("%s is a %s, not a table: regiond replicates base tables only", name, strings.ToLower(t.typ)),
				"replicate the tables it reads from instead, and remove it from tables: in the config")
		default:
			present = append(present, name)
			if nonTransactional[strings.ToUpper(t.engine)] {
				in.add(name, Error, fmt.Sprintf("the table uses engine %s, which has no transactions: regiond applies each source transaction and its checkpoint atomically", t.engine),
					fmt.Sprintf("ALTER TABLE %s ENGINE = InnoDB", quoteIdent(name)))
			}
		}
	}
	if len(present) == 0 {
		return nil
	}
	for _, name := range present {
		facts.tables[name] = &tableInfo{}
	}
	if err := in.readColumns(ctx, present, facts); err != nil {
		return err
	}
	uniques, err := in.readKeys(ctx, present, facts)
	if err != nil {
		return err
	}

	for _, name := range present {
		t := facts.tables[name]
		keys := uniques[name]
		if t.pk == nil {
			cols := "..."
			for _, k := range keys {
				if k.allNotNull(t) {
					cols = quoteIdents(k.columns)
					break
				}
			}
			in.add(name, Error, "no primary key: regiond matches rows between regions by their primary key",
				fmt.Sprintf("ALTER TABLE %s ADD PRIMARY KEY (%s)", quoteIdent(name), cols))
		} else {
			for _, k := range keys {
				in.add(name, Warning, fmt.Sprintf("unique key %s (%s) besides the primary key: two regions writing the same %s value to different rows collide, and the collision stops replication of the table (MySQL ON DUPLICATE KEY UPDATE fires on any unique key)",
					k.name, strings.Join(k.columns, ", "), strings.Join(k.columns, ", ")),
					fmt.Sprintf("make sure no two regions ever write the same value (e.g. include the region in it), or drop the key: ALTER TABLE %s DROP INDEX %s", quoteIdent(name), quoteIdent(k.name)))
			}
		}
		in.checkRuleColumns(name, t)
		for _, c := range t.columns {
			if c.autoInc {
				facts.autoIncTables = append(facts.autoIncTables, name)
				break
			}
		}
	}
	sort.Strings(facts.autoIncTables)
	return nil
}

// nonTransactional lists storage engines without transactions.
var nonTransactional = map[string]bool{
	"MYISAM": true, "MRG_MYISAM": true, "ARIA": true, "MEMORY": true,
	"CSV": true, "ARCHIVE": true, "BLACKHOLE": true, "FEDERATED": true,
}

// checkRuleColumns checks the columns a table's conflict rule names.
func (in *mysqlInspector) checkRuleColumns(name string, t *tableInfo) {
	tc := in.tableCfg[name]
	switch tc.Rule() {
	case config.RuleLastWriterWins:
		c, ok := t.column(tc.VersionColumn)
		if !ok {
			in.add(name, Error, fmt.Sprintf("version_column %s is not a column of the table", tc.VersionColumn),
				fmt.Sprintf("fix tables.%s.version_column in the config, or add the column: ALTER TABLE %s ADD COLUMN %s DATETIME(6) NOT NULL", name, quoteIdent(name), quoteIdent(tc.VersionColumn)))
			return
		}
		typ := strings.ToLower(c.typ)
		if !(typ == "datetime(6)" || typ == "timestamp(6)" || strings.HasPrefix(typ, "bigint")) {
			in.add(name, Warning, fmt.Sprintf("version_column %s is %s: with less than microsecond precision two writes can carry the same version", tc.VersionColumn, c.typ),
				fmt.Sprintf("ALTER TABLE %s MODIFY COLUMN %s DATETIME(6) NOT NULL (or BIGINT), in every region", quoteIdent(name), quoteIdent(tc.VersionColumn)))
		}
	case config.RuleHomeRegion:
		if _, ok := t.column(tc.HomeColumn); !ok {
			in.add(name, Error, fmt.Sprintf("home_column %s is not a column of the table", tc.HomeColumn),
				fmt.Sprintf("fix tables.%s.home_column in the config, or add the column: ALTER TABLE %s ADD COLUMN %s VARCHAR(32) NOT NULL", name, quoteIdent(name), quoteIdent(tc.HomeColumn)))
		}
	}
}

// inArgs returns "?,?,?" and the arguments for names.
func inArgs(names []string) (string, []any) {
	args := make([]any, len(names))
	for i, n := range names {
		args[i] = n
	}
	return strings.TrimSuffix(strings.Repeat("?,", len(names)), ","), args
}

func (in *mysqlInspector) readColumns(ctx context.Context, tables []string, facts *mysqlFacts) error {
	marks, args := inArgs(tables)
	rows, err := in.db.QueryContext(ctx, "SELECT TABLE_NAME, COLUMN_NAME, COLUMN_TYPE, IS_NULLABLE, EXTRA FROM information_schema.COLUMNS "+
		"WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME IN ("+marks+") ORDER BY TABLE_NAME, ORDINAL_POSITION", args...)
	if err != nil {
		return err
	}
	defer rows.Close()
	for rows.Next() {
		var table, name, typ, nullable, extra string
		if err := rows.Scan(&table, &name, &typ, &nullable, &extra); err != nil {
			return err
		}
		t, ok := facts.tables[table]
		if !ok {
			continue
		}
		t.columns = append(t.columns, column{
			name: name, typ: typ, nullable: nullable == "YES",
			autoInc: strings.Contains(strings.ToLower(extra), "auto_increment"),
		})
	}
	return rows.Err()
}

// uniqueKey is a UNIQUE index other than the primary key.
type uniqueKey struct {
	name    string
	columns []string
}

func (k uniqueKey) allNotNull(t *tableInfo) bool {
	for _, name := range k.columns {
		if c, ok := t.column(name); !ok || c.nullable {
			return false
		}
	}
	return true
}

// readKeys records each table's primary key in facts and returns its other
// unique keys, in index name order.
func (in *mysqlInspector) readKeys(ctx context.Context, tables []string, facts *mysqlFacts) (map[string][]uniqueKey, error) {
	marks, args := inArgs(tables)
	rows, err := in.db.QueryContext(ctx, "SELECT TABLE_NAME, INDEX_NAME, COLUMN_NAME FROM information_schema.STATISTICS "+
		"WHERE TABLE_SCHEMA = DATABASE() AND NON_UNIQUE = 0 AND TABLE_NAME IN ("+marks+") ORDER BY TABLE_NAME, INDEX_NAME, SEQ_IN_INDEX", args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	uniques := map[string][]uniqueKey{}
	for rows.Next() {
		var table, index string
		var col sql.NullString // NULL for an index on an expression
		if err := rows.Scan(&table, &index, &col); err != nil {
			return nil, err
		}
		t, ok := facts.tables[table]
		if !ok {
			continue
		}
		name := col.String
		if !col.Valid {
			name = "(expression)"
		}
		if index == "PRIMARY" {
			t.pk = append(t.pk, name)
			continue
		}
		keys := uniques[table]
		if n := len(keys); n > 0 && keys[n-1].name == index {
			keys[n-1].columns = append(keys[n-1].columns, name)
		} else {
			keys = append(keys, uniqueKey{name: index, columns: []string{name}})
		}
		uniques[table] = keys
	}
	return uniques, rows.Err()
}

// grants is what SHOW GRANTS says the current user (and its active role,
// on MariaDB) may do.
type grants struct {
	global    map[string]bool // privileges ON *.*
	globalAll bool            // ALL PRIVILEGES ON *.*
	dbs       []dbGrant
	roles     bool // a role is granted to the user
}

// dbGrant is a grant ON `db`.*; pattern may hold LIKE wildcards.
type dbGrant struct {
	pattern string
	privs   map[string]bool
	all     bool
}

// Privileges regiond needs, under the names MySQL uses; MariaDB calls
// REPLICATION CLIENT "BINLOG MONITOR" (10.5+) and accepts both.
var (
	globalPrivs = []string{"REPLICATION SLAVE", "REPLICATION CLIENT"}
	dbPrivs     = []string{"SELECT", "INSERT", "UPDATE", "DELETE", "CREATE"}
)

// privAliases maps privilege names to the names used above.
var privAliases = map[string]string{
	"REPLICATION REPLICA": "REPLICATION SLAVE",
	"BINLOG MONITOR":      "REPLICATION CLIENT",
}

// missing returns the global and database privileges regiond needs on
// database db that the grants do not give, as the flavor names them.
func (g grants) missing(flavor, db string) (global, database []string) {
	name := func(p string) string {
		if p == "REPLICATION CLIENT" && flavor == config.FlavorMariaDB {
			return "BINLOG MONITOR"
		}
		return p
	}
	if g.globalAll {
		return nil, nil
	}
	for _, p := range globalPrivs {
		if !g.global[p] {
			global = append(global, name(p))
		}
	}
	for _, p := range dbPrivs {
		if g.global[p] {
			continue
		}
		ok := false
		for _, d := range g.dbs {
			if (d.all || d.privs[p]) && likeMatch(d.pattern, db) {
				ok = true
				break
			}
		}
		if !ok {
			database = append(database, p)
		}
	}
	return global, database
}

// parseGrants reads the lines of SHOW GRANTS. Table, column and routine
// grants are ignored: regiond needs database-wide privileges, for its own
// tables too.
func parseGrants(lines []string) grants {
	g := grants{global: map[string]bool{}}
	for _, l := range lines {
		l = strings.TrimSpace(l)
		if len(l) < 6 || !strings.EqualFold(l[:6], "GRANT ") {
			continue
		}
		body := l[6:]
		on := topLevelIndex(body, " ON ")
		if on < 0 {
			if topLevelIndex(body, " TO ") >= 0 {
				g.roles = true // GRANT `role` TO user
			}
			continue
		}
		privs := splitTopLevel(body[:on])
		obj := body[on+4:]
		if to := topLevelIndex(obj, " TO "); to >= 0 {
			obj = obj[:to]
		}
		obj = strings.TrimSpace(obj)
		dbName, table, ok := splitObject(obj)
		if !ok || table != "*" {
			continue // a table, a routine, or PROXY ON a user
		}
		all := false
		set := map[string]bool{}
		for _, p := range privs {
			p = strings.ToUpper(strings.Join(strings.Fields(p), " "))
			if strings.Contains(p, "(") {
				continue // column privilege
			}
			if p == "ALL" || p == "ALL PRIVILEGES" {
				all = true
				continue
			}
			if a, ok := privAliases[p]; ok {
				p = a
			}
			set[p] = true
		}
		if dbName == "*" {
			g.globalAll = g.globalAll || all
			for p := range set {
				g.global[p] = true
			}
			continue
		}
		g.dbs = append(g.dbs, dbGrant{pattern: dbName, privs: set, all: all})
	}
	return g
}

// topLevelIndex returns the index of sep (matched case-insensitively) in s
// outside quotes, backticks and parentheses, or -1.
func topLevelIndex(s, sep string) int {
	depth := 0
	var quote byte
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case quote != 0:
			if c == quote {
				quote = 0
			}
		case c == '`' || c == '\'' || c == '"':
			quote = c
		case c == '(':
			depth++
		case c == ')':
			depth--
		case depth == 0 && i+len(sep) <= len(s) && strings.EqualFold(s[i:i+len(sep)], sep):
			return i
		}
	}
	return -1
}

// splitTopLevel splits a privilege list at commas outside parentheses.
func splitTopLevel(s string) []string {
	var out []string
	for {
		i := topLevelIndex(s, ",")
		if i < 0 {
			return append(out, strings.TrimSpace(s))
		}
		out = append(out, strings.TrimSpace(s[:i]))
		s = s[i+1:]
	}
}

// splitObject splits a grant object such as *.*, `app`.* or `app`.`t` into
// its database and table parts, unquoted ("*" for a wildcard).
func splitObject(obj string) (db, table string, ok bool) {
	db, rest, ok := readIdent(obj)
	if !ok || !strings.HasPrefix(rest, ".") {
		return "", "", false
	}
	table, rest, ok = readIdent(rest[1:])
	if !ok || rest != "" {
		return "", "", false
	}
	return db, table, true
}

// readIdent reads a backtick-quoted identifier, a bare one, or *.
func readIdent(s string) (ident, rest string, ok bool) {
	if s == "" {
		return "", "", false
	}
	if s[0] == '`' {
		var b strings.Builder
		for i := 1; i < len(s); i++ {
			if s[i] != '`' {
				b.WriteByte(s[i])
				continue
			}
			if i+1 < len(s) && s[i+1] == '`' {
				b.WriteByte('`')
				i++
				continue
			}
			return b.String(), s[i+1:], true
		}
		return "", "", false
	}
	i := strings.IndexAny(s, ". ")
	if i < 0 {
		i = len(s)
	}
	if i == 0 {
		return "", "", false
	}
	return s[:i], s[i:], true
}

// likeMatch matches name against a grant's database pattern, in which % and
// _ are wildcards unless escaped with a backslash.
func likeMatch(pattern, name string) bool {
	if pattern == "" {
		return name == ""
	}
	switch c := pattern[0]; c {
	case '%':
		for i := 0; i <= len(name); i++ {
			if likeMatch(pattern[1:], name[i:]) {
				return true
			}
		}
		return false
	case '_':
		return name != "" && likeMatch(pattern[1:], name[1:])
	case '\\':
		if len(pattern) > 1 {
			return name != "" && name[0] == pattern[1] && likeMatch(pattern[2:], name[1:])
		}
	}
	return name != "" && name[0] == pattern[0] && likeMatch(pattern[1:], name[1:])
}
