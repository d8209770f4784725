package check

import (
	"context"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/regiond/regiond/config"
	"github.com/regiond/regiond/internal/dbtest"
	"github.com/regiond/regiond/internal/pgconn"
	"github.com/regiond/regiond/internal/testenv"
)

// pgRegion is one test region: a private PostgreSQL server and a superuser
// connection to its database app.
type pgRegion struct {
	name string
	srv  *testenv.Server
	conn *pgx.Conn
}

// newPGRegion starts a server whose settings pass every check. Autovacuum
// is off so that nothing but the test assigns transaction ids, which state
// compares.
func newPGRegion(t *testing.T, name string) *pgRegion {
	t.Helper()
	srv := testenv.Postgres(t)
	r := &pgRegion{name: name, srv: srv}
	r.connect(t)
	r.setSystem(t, "autovacuum", "off")
	r.setSystem(t, "max_slot_wal_keep_size", "10GB")
	return r
}

func (r *pgRegion) connect(t *testing.T) {
	t.Helper()
	conn, err := pgconn.Connect(t.Context(), r.srv.URL("app"))
	if err != nil {
		t.Fatal(err)
	}
	r.conn = conn
	t.Cleanup(func() { conn.Close(context.Background()) })
}

func (r *pgRegion) exec(t *testing.T, stmts ...string) {
	t.Helper()
	for _, q := range stmts {
		if _, err := r.conn.Exec(t.Context(), q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
}

// setSystem runs ALTER SYSTEM SET name = value and reloads the
// configuration, waiting until the server uses the new value.
func (r *pgRegion) setSystem(t *testing.T, name, value string) {
	t.Helper()
	r.exec(t, fmt.Sprintf("ALTER SYSTEM SET %s = '%s'", name, value), "SELECT pg_reload_conf()")
	r.waitFor(t, fmt.Sprintf("SELECT current_setting('%s') = $1", name), value)
}

// waitFor polls query (with args) on a new connection until it returns
// true, for up to 10 seconds.
func (r *pgRegion) waitFor(t *testing.T, query string, args ...any) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		var ok bool
		conn, err := pgconn.Connect(t.Context(), r.srv.URL("app"))
		if err == nil {
			err = conn.QueryRow(t.Context(), query, args...).Scan(&ok)
			conn.Close(context.Background())
		}
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("waiting for %s: still false (last error: %v)", query, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func (r *pgRegion) cfg() config.Region {
	return config.Region{Name: r.name, Engine: config.EnginePostgres, DSN: r.srv.URL("app"), Schema: config.DefaultPostgresSchema}
}

// dsnAs is the region's DSN for another user.
func (r *pgRegion) dsnAs(user, password string) string {
	return fmt.Sprintf("postgres://%s:%s@%s/app?sslmode=disable", user, password, r.srv.Addr())
}

// state is what must not change when check runs: the next transaction id
// (any write would take one), regiond's tables, the slots and their
// positions, the publications.
func (r *pgRegion) state(t *testing.T) string {
	t.Helper()
	var s string
	err := r.conn.QueryRow(t.Context(), `SELECT format('xmax=%s tables=%s slots=%s publications=%s',
		pg_snapshot_xmax(pg_current_snapshot()),
		(SELECT count(*) FROM pg_class WHERE relname LIKE 'regiond\_%'),
		(SELECT string_agg(slot_name || ':' || COALESCE(confirmed_flush_lsn::text, '-'), ',' ORDER BY slot_name) FROM pg_replication_slots),
		(SELECT string_agg(pubname || ':' || pubowner::regrole::text, ',' ORDER BY pubname) FROM pg_publication))`).Scan(&s)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// stateful is a test region of either engine.
type stateful interface {
	state(t *testing.T) string
}

// runChecks runs Run on cfg and fails the test if any region's state
// changed.
func runChecks(t *testing.T, cfg *config.Config, regions ...stateful) Report {
	t.Helper()
	before := make([]string, len(regions))
	for i, r := range regions {
		before[i] = r.state(t)
	}
	rep := Run(t.Context(), cfg)
	for i, r := range regions {
		if after := r.state(t); after != before[i] {
			t.Errorf("check changed a region: before %s, after %s", before[i], after)
		}
	}
	for _, f := range rep.Findings {
		t.Logf("%v", f)
	}
	return rep
}

// findings returns the findings of region with severity sev whose problem
// contains all of words.
func findings(rep Report, region string, sev Severity, words ...string) []Finding {
	var out []Finding
next:
	for _, f := range rep.Findings {
		if f.Severity != sev || f.Region != region {
			continue
		}
		for _, w := range words {
			if !strings.Contains(f.Problem, w) {
				continue next
			}
		}
		out = append(out, f)
	}
	return out
}

func countFor(rep Report, region string, sev Severity) int {
	return len(findings(rep, region, sev))
}

// wantOne fails unless exactly one finding of region with severity sev
// mentions words, on table (when not empty), with a fix containing fix.
func wantOne(t *testing.T, rep Report, region, table string, sev Severity, fix string, words ...string) {
	t.Helper()
	got := findings(rep, region, sev, words...)
	if len(got) != 1 {
		t.Errorf("region %s: want one %v finding mentioning %q, got %v", region, sev, words, got)
		return
	}
	if got[0].Table != table {
		t.Errorf("finding %v: table %q, want %q", got[0], got[0].Table, table)
	}
	if !strings.Contains(got[0].Fix, fix) {
		t.Errorf("finding %v: fix %q does not contain %q", got[0], got[0].Fix, fix)
	}
}

func TestRunPostgres(t *testing.T) {
	west := newPGRegion(t, "west")
	west.exec(t,
		"CREATE TABLE accounts (id bigint PRIMARY KEY, owner text NOT NULL, balance numeric(12,2) NOT NULL)",
		"CREATE TABLE events (at timestamptz NOT NULL, what text)",
		"CREATE TABLE quiet (id int PRIMARY KEY, v text)",
		"ALTER TABLE quiet REPLICA IDENTITY NOTHING",
		"CREATE TABLE loud (id int PRIMARY KEY, v text)",
		"ALTER TABLE loud REPLICA IDENTITY FULL",
		"CREATE TABLE users (id bigint PRIMARY KEY, email text NOT NULL UNIQUE)",
		"CREATE TABLE profiles (id bigint PRIMARY KEY, updated_at timestamptz(6) NOT NULL, home text NOT NULL)",
		"CREATE VIEW rich AS SELECT * FROM accounts WHERE balance > 1000",
		"CREATE TABLE byindex (id int PRIMARY KEY, code text NOT NULL UNIQUE)",
		"ALTER TABLE byindex REPLICA IDENTITY USING INDEX byindex_code_key",
		"CREATE TABLE parted (id int PRIMARY KEY) PARTITION BY RANGE (id)",
	)
	if err := pgconn.EnsureCheckpointTable(t.Context(), west.conn, "public"); err != nil {
		t.Fatal(err)
	}
	one := func(tbls map[string]config.Table, more ...config.Region) *config.Config {
		return &config.Config{Regions: append([]config.Region{west.cfg()}, more...), Tables: tbls}
	}

	t.Run("good setup", func(t *testing.T) {
		rep := runChecks(t, one(tables("accounts")), west)
		if rep.Errors() != 0 || rep.Warnings() != 0 {
			t.Fatalf("got %d errors, %d warnings, want none", rep.Errors(), rep.Warnings())
		}
		for _, words := range [][]string{{"max_slot_wal_keep_size = 10240MB", "10 GiB"}, {"no origin filter"}, {"do not survive a failover"}} {
			if got := findings(rep, "west", Info, words...); len(got) != 1 {
				t.Errorf("want one Info finding mentioning %q, got %v", words, got)
			}
		}
	})

	t.Run("rule columns", func(t *testing.T) {
		tbls := map[string]config.Table{
			"profiles": {Conflict: config.RuleLastWriterWins, VersionColumn: "updated_at"},
			"users":    {Conflict: config.RuleHomeRegion, HomeColumn: "home"},
		}
		rep := runChecks(t, one(tbls), west)
		wantOne(t, rep, "west", "users", Error, `ADD COLUMN "home" text NOT NULL`, "home_column home")
		// Both rules need whole before images.
		wantOne(t, rep, "west", "profiles", Error, `ALTER TABLE "public"."profiles" REPLICA IDENTITY FULL;`, "last_writer_wins needs whole before images")
		if rep.Errors() != 3 {
			t.Errorf("got %d errors, want 3", rep.Errors())
		}
	})

	t.Run("table without primary key", func(t *testing.T) {
		rep := runChecks(t, one(tables("accounts", "events")), west)
		wantOne(t, rep, "west", "events", Error, `ALTER TABLE "public"."events" ADD PRIMARY KEY`, "no primary key")
		if rep.Errors() != 1 {
			t.Errorf("got %d errors, want 1", rep.Errors())
		}
	})

	t.Run("replica identity nothing", func(t *testing.T) {
		rep := runChecks(t, one(tables("quiet")), west)
		wantOne(t, rep, "west", "quiet", Error, `ALTER TABLE "public"."quiet" REPLICA IDENTITY DEFAULT;`, "REPLICA IDENTITY NOTHING")
		if rep.Errors() != 1 {
			t.Errorf("got %d errors, want 1", rep.Errors())
		}
	})

	t.Run("replica identity using index", func(t *testing.T) {
		rep := runChecks(t, one(tables("byindex")), west)
		wantOne(t, rep, "west", "byindex", Error, `ALTER TABLE "public"."byindex" REPLICA IDENTITY DEFAULT;`, "REPLICA IDENTITY USING index byindex_code_key (code)")
		if rep.Errors() != 1 {
			t.Errorf("got %d errors, want 1", rep.Errors())
		}
	})

	t.Run("replica identity full", func(t *testing.T) {
		rep := runChecks(t, one(tables("loud")), west)
		wantOne(t, rep, "west", "loud", Info, "", "REPLICA IDENTITY FULL")
		if rep.Errors() != 0 || rep.Warnings() != 0 {
			t.Errorf("got %d errors, %d warnings, want none", rep.Errors(), rep.Warnings())
		}
	})

	t.Run("missing table, view, partitioned table", func(t *testing.T) {
		rep := runChecks(t, one(tables("ghosts", "Accounts", "rich", "parted")), west)
		wantOne(t, rep, "west", "ghosts", Error, "", "ghosts", "does not exist")
		wantOne(t, rep, "west", "Accounts", Error, "write the name as accounts", "Accounts", "case-sensitive")
		wantOne(t, rep, "west", "rich", Error, "", "is a view")
		wantOne(t, rep, "west", "parted", Error, "", "partitioned")
		if rep.Errors() != 4 {
			t.Errorf("got %d errors, want 4", rep.Errors())
		}
	})

	t.Run("secondary unique index", func(t *testing.T) {
		rep := runChecks(t, one(tables("users")), west)
		wantOne(t, rep, "west", "users", Warning, `ALTER TABLE "public"."users" DROP CONSTRAINT "users_email_key";`, "unique index users_email_key (email)")
		if rep.Errors() != 0 || rep.Warnings() != 1 {
			t.Errorf("got %d errors, %d warnings, want 0 and 1", rep.Errors(), rep.Warnings())
		}
	})

	t.Run("role without privileges", func(t *testing.T) {
		west.exec(t, "CREATE ROLE plain LOGIN PASSWORD 'plain-pw'")
		r := west.cfg()
		r.DSN = west.dsnAs("plain", "plain-pw")
		cfg := &config.Config{Regions: []config.Region{r}, Tables: tables("accounts")}
		rep := runChecks(t, cfg, west)
		wantOne(t, rep, "west", "", Error, `ALTER ROLE "plain" REPLICATION;`, "no REPLICATION attribute")
		wantOne(t, rep, "west", "", Error, `GRANT SET ON PARAMETER session_replication_role TO "plain";`, "session_replication_role")
		wantOne(t, rep, "west", "", Error, `GRANT CREATE ON SCHEMA "public" TO "plain";`, "lacks CREATE on schema public")
		wantOne(t, rep, "west", "", Error, `GRANT CREATE ON DATABASE "app" TO "plain";`, "lacks CREATE on database app")
		wantOne(t, rep, "west", "accounts", Error, `GRANT SELECT, INSERT, UPDATE, DELETE ON "public"."accounts" TO "plain";`, "lacks SELECT, INSERT, UPDATE, DELETE on table public.accounts")
		wantOne(t, rep, "west", "regiond_checkpoints", Error, `ON "public"."regiond_checkpoints" TO "plain";`, "on table public.regiond_checkpoints")
		wantOne(t, rep, "west", "accounts", Error, `ALTER TABLE "public"."accounts" OWNER TO "plain";`, "does not own table public.accounts")
		if rep.Errors() != 7 {
			t.Errorf("got %d errors, want 7", rep.Errors())
		}

		// Granted everything but the tables' ownership: a publication owned
		// by someone else is still in the way, until it is handed over.
		west.exec(t,
			"ALTER ROLE plain REPLICATION",
			"GRANT SET ON PARAMETER session_replication_role TO plain",
			"GRANT CREATE ON SCHEMA public TO plain",
			"GRANT CREATE ON DATABASE app TO plain",
			"GRANT SELECT, INSERT, UPDATE, DELETE ON accounts, regiond_checkpoints TO plain",
			"CREATE PUBLICATION regiond FOR TABLE accounts, regiond_checkpoints",
		)
		defer west.exec(t, "DROP PUBLICATION regiond")
		rep = runChecks(t, cfg, west)
		wantOne(t, rep, "west", "", Error, `ALTER PUBLICATION "regiond" OWNER TO "plain";`, "publication regiond is owned by postgres")
		if rep.Errors() != 1 {
			t.Errorf("got %d errors, want 1", rep.Errors())
		}
		west.exec(t, "ALTER PUBLICATION regiond OWNER TO plain")
		if rep := runChecks(t, cfg, west); rep.Errors() != 0 {
			t.Errorf("with every privilege: got %d errors, want 0", rep.Errors())
		}
	})

	t.Run("wrong password", func(t *testing.T) {
		// The test server trusts every local connection; make it ask
		// pwuser for a password. pg_hba.conf uses the first matching line.
		west.exec(t, "CREATE ROLE pwuser LOGIN SUPERUSER PASSWORD 'Corr3ct-Horse'")
		var hba string
		if err := west.conn.QueryRow(t.Context(), "SHOW hba_file").Scan(&hba); err != nil {
			t.Fatal(err)
		}
		old, err := os.ReadFile(hba)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(hba, append([]byte("host all pwuser 127.0.0.1/32 scram-sha-256\n"), old...), 0o600); err != nil {
			t.Fatal(err)
		}
		defer func() {
			if err := os.WriteFile(hba, old, 0o600); err != nil {
				t.Error(err)
			}
			west.exec(t, "SELECT pg_reload_conf()")
		}()
		west.exec(t, "SELECT pg_reload_conf()")
		// Wait until the postmaster uses the new file.
		deadline := time.Now().Add(10 * time.Second)
		for {
			c, err := pgx.Connect(t.Context(), west.dsnAs("pwuser", "Wr0ng-Battery"))
			if err != nil {
				break
			}
			c.Close(context.Background())
			if time.Now().After(deadline) {
				t.Fatal("the server still accepts a wrong password")
			}
			time.Sleep(50 * time.Millisecond)
		}

		r := west.cfg()
		r.DSN = west.dsnAs("pwuser", "Wr0ng-Battery")
		rep := runChecks(t, &config.Config{Regions: []config.Region{r}, Tables: tables("accounts")}, west)
		got := findings(rep, "west", Error, west.srv.Addr(), "password authentication failed")
		if len(got) != 1 || len(rep.Findings) != 1 {
			t.Fatalf("want exactly one password error naming %s, got %v", west.srv.Addr(), rep.Findings)
		}
		if !strings.Contains(got[0].Fix, "password") {
			t.Errorf("fix %q does not mention the password", got[0].Fix)
		}
		if s := got[0].String(); strings.Contains(s, "Wr0ng-Battery") || strings.Contains(s, "Corr3ct-Horse") {
			t.Errorf("finding shows the password: %s", s)
		}

		r.DSN = west.dsnAs("pwuser", "Corr3ct-Horse")
		if rep := runChecks(t, &config.Config{Regions: []config.Region{r}, Tables: tables("accounts")}, west); rep.Errors() != 0 {
			t.Errorf("right password: got %d errors, want 0", rep.Errors())
		}
	})

	t.Run("unreachable region", func(t *testing.T) {
		cfg := one(tables("accounts"), config.Region{Name: "gone", Engine: config.EnginePostgres, DSN: "postgres://x:secret-pw@127.0.0.1:1/app?sslmode=disable"})
		rep := runChecks(t, cfg, west)
		got := findings(rep, "gone", Error, "127.0.0.1:1", "refused")
		if len(got) != 1 || rep.Errors() != 1 {
			t.Fatalf("want one connection error for region gone, got %v", rep.Findings)
		}
		if strings.Contains(got[0].String(), "secret-pw") {
			t.Errorf("finding shows the password: %v", got[0])
		}
	})

	t.Run("publication without regiond_checkpoints", func(t *testing.T) {
		west.exec(t, "CREATE PUBLICATION regiond FOR TABLE accounts")
		defer west.exec(t, "DROP PUBLICATION regiond")
		rep := runChecks(t, one(tables("accounts", "users")), west)
		wantOne(t, rep, "west", "", Error, `ALTER PUBLICATION "regiond" ADD TABLE "public"."regiond_checkpoints";`, "does not include public.regiond_checkpoints", "echo")
		wantOne(t, rep, "west", "users", Error, `ALTER PUBLICATION "regiond" ADD TABLE "public"."users";`, "does not include table public.users")
		if rep.Errors() != 2 {
			t.Errorf("got %d errors, want 2", rep.Errors())
		}
		west.exec(t, "ALTER PUBLICATION regiond ADD TABLE regiond_checkpoints")
		if rep := runChecks(t, one(tables("accounts")), west); rep.Errors() != 0 {
			t.Errorf("publication with regiond_checkpoints: got %d errors, want 0", rep.Errors())
		}
	})

	t.Run("slots", func(t *testing.T) {
		west.exec(t,
			"SELECT pg_create_logical_replication_slot('regiond_west_north_1', 'pgoutput')",
			"SELECT pg_create_logical_replication_slot('regiond_west_gone', 'pgoutput')",
		)
		cfg := one(tables("accounts"), config.Region{Name: "north-1", Engine: config.EnginePostgres, DSN: "postgres://x@127.0.0.1:1/app?sslmode=disable"})
		rep := runChecks(t, cfg, west)
		wantOne(t, rep, "west", "", Info, "", "regiond_west_north_1 (pipeline west → north-1)", "is not in use", "retains")
		wantOne(t, rep, "west", "", Info, "", "regiond_west_gone", "belongs to no pipeline of this config")
		if n := countFor(rep, "west", Error) + countFor(rep, "west", Warning); n != 0 {
			t.Errorf("got %d errors and warnings in region west, want none", n)
		}

		// Make the pipeline's slot lose its WAL: keep at most 1 MB, write
		// and switch WAL segments, checkpoint.
		west.exec(t, "SELECT pg_drop_replication_slot('regiond_west_gone')")
		west.setSystem(t, "max_slot_wal_keep_size", "1MB")
		defer func() {
			west.exec(t, "SELECT pg_drop_replication_slot('regiond_west_north_1')")
			west.setSystem(t, "max_slot_wal_keep_size", "10GB")
		}()
		west.exec(t, "CREATE TABLE walfill (x int)")
		for range 4 {
			west.exec(t, "INSERT INTO walfill SELECT generate_series(1, 20000)", "SELECT pg_switch_wal()")
		}
		west.exec(t, "CHECKPOINT")
		var status string
		if err := west.conn.QueryRow(t.Context(), "SELECT wal_status FROM pg_replication_slots WHERE slot_name = 'regiond_west_north_1'").Scan(&status); err != nil {
			t.Fatal(err)
		}
		if status != "lost" {
			t.Fatalf("could not make the slot lose its WAL: wal_status = %s", status)
		}
		rep = runChecks(t, cfg, west)
		wantOne(t, rep, "west", "", Error, "regiond backfill --from west --to north-1", "regiond_west_north_1", "position is lost")
		if n := countFor(rep, "west", Error); n != 1 {
			t.Errorf("got %d errors in region west, want 1", n)
		}
	})
}

// TestRunPostgresServerSettings checks a server without logical WAL and
// with too few slots and WAL senders.
func TestRunPostgresServerSettings(t *testing.T) {
	a := newPGRegion(t, "a")
	a.exec(t,
		"CREATE TABLE accounts (id bigint PRIMARY KEY)",
		"ALTER SYSTEM SET wal_level = replica",
		"ALTER SYSTEM SET max_replication_slots = 2",
		"ALTER SYSTEM SET max_wal_senders = 2",
	)
	a.conn.Close(t.Context())
	if err := a.srv.Stop(); err != nil {
		t.Fatal(err)
	}
	if err := a.srv.Restart(t.Context()); err != nil {
		t.Fatal(err)
	}
	a.connect(t)
	// A slot someone else uses (a physical standby's).
	a.exec(t, "SELECT pg_create_physical_replication_slot('standby_1')")

	cfg := &config.Config{Regions: []config.Region{
		a.cfg(),
		{Name: "b", Engine: config.EnginePostgres, DSN: "postgres://x@127.0.0.1:1/app?sslmode=disable"},
		{Name: "c", Engine: config.EngineMySQL, DSN: "mysql://x@127.0.0.1:1/app"},
	}, Tables: tables("accounts")}
	rep := runChecks(t, cfg, a)
	wantOne(t, rep, "a", "", Error, "ALTER SYSTEM SET wal_level = logical; then restart", "wal_level is replica, not logical")
	wantOne(t, rep, "a", "", Error, "ALTER SYSTEM SET max_replication_slots = 3;", "max_replication_slots is 2", "3 slots are needed", "plus 1 already in use")
	wantOne(t, rep, "a", "", Error, "ALTER SYSTEM SET max_wal_senders = 3;", "max_wal_senders is 2", "3 are needed")
	if n := countFor(rep, "a", Error); n != 3 {
		t.Errorf("got %d errors in region a, want 3", n)
	}

	// With Kafka, the region's own log to Kafka takes one more slot.
	kcfg := *cfg
	kcfg.Kafka = &config.Kafka{Brokers: []string{"127.0.0.1:1"}, TopicPrefix: "regiond"}
	kcfg.StateDir = t.TempDir()
	rep = runChecks(t, &kcfg, a)
	wantOne(t, rep, "a", "", Error, "ALTER SYSTEM SET max_replication_slots = 4;", "4 slots are needed", "one to Kafka")

	// Set but not yet in effect: the finding says a restart is pending.
	a.exec(t, "ALTER SYSTEM SET wal_level = logical", "SELECT pg_reload_conf()")
	a.waitFor(t, "SELECT pending_restart FROM pg_settings WHERE name = 'wal_level'")
	rep = runChecks(t, cfg, a)
	wantOne(t, rep, "a", "", Error, "restart", "wal_level is replica", "only after a restart")
}

// TestRunMixedEngines compares a MariaDB region's tables with a Postgres
// region's: column names and primary keys, not types.
func TestRunMixedEngines(t *testing.T) {
	east := newRegion(t, "east", 1)
	west := newPGRegion(t, "west")
	dbtest.Exec(t, east.db,
		"CREATE TABLE accounts (id BIGINT PRIMARY KEY, owner VARCHAR(100) NOT NULL, balance DECIMAL(12,2) NOT NULL)",
		"CREATE TABLE widgets (id INT PRIMARY KEY, color VARCHAR(10))",
		"CREATE TABLE orders (id INT, line INT, PRIMARY KEY (id, line))",
		"CREATE TABLE items (id INT PRIMARY KEY, Label VARCHAR(10))",
	)
	west.exec(t,
		"CREATE TABLE accounts (id bigint PRIMARY KEY, owner text NOT NULL, balance numeric(12,2) NOT NULL)",
		"CREATE TABLE widgets (id int PRIMARY KEY, colour text)",
		"CREATE TABLE orders (id int, line int, PRIMARY KEY (line, id))",
		"CREATE TABLE items (id int PRIMARY KEY, label text)",
	)
	mysqlFirst := func(tbls map[string]config.Table) *config.Config {
		return &config.Config{Regions: []config.Region{east.cfg(), west.cfg()}, Tables: tbls}
	}
	pgFirst := func(tbls map[string]config.Table) *config.Config {
		return &config.Config{Regions: []config.Region{west.cfg(), east.cfg()}, Tables: tbls}
	}

	t.Run("same columns, other types", func(t *testing.T) {
		for _, cfg := range []*config.Config{mysqlFirst(tables("accounts")), pgFirst(tables("accounts"))} {
			if rep := runChecks(t, cfg, east, west); rep.Errors() != 0 || rep.Warnings() != 0 {
				t.Errorf("got %d errors, %d warnings, want none", rep.Errors(), rep.Warnings())
			}
		}
	})

	t.Run("columns differ", func(t *testing.T) {
		rep := runChecks(t, mysqlFirst(tables("widgets")), east, west)
		wantOne(t, rep, "west", "widgets", Error, `in region west: ALTER TABLE "public"."widgets" ADD COLUMN "color" <the PostgreSQL type for MySQL varchar(10)>;`, "column color is in region east but not in region west")
		wantOne(t, rep, "west", "widgets", Error, "in region east: ALTER TABLE `widgets` ADD COLUMN `colour` <the MySQL type for PostgreSQL text> NULL", "column colour is in region west but not in region east")
		if rep.Errors() != 2 {
			t.Errorf("got %d errors, want 2", rep.Errors())
		}

		// With the postgres region first, it is the reference.
		rep = runChecks(t, pgFirst(tables("widgets")), east, west)
		wantOne(t, rep, "east", "widgets", Error, "", "column colour is in region west but not in region east")
		wantOne(t, rep, "east", "widgets", Error, "", "column color is in region east but not in region west")
		if rep.Errors() != 2 {
			t.Errorf("got %d errors, want 2", rep.Errors())
		}
	})

	t.Run("column names differ in case", func(t *testing.T) {
		rep := runChecks(t, mysqlFirst(tables("items")), east, west)
		wantOne(t, rep, "west", "items", Error, "", "column Label is in region east but not in region west", "has a column label")
	})

	t.Run("primary keys differ", func(t *testing.T) {
		rep := runChecks(t, mysqlFirst(tables("orders")), east, west)
		wantOne(t, rep, "west", "orders", Error, `ALTER TABLE "public"."orders" DROP CONSTRAINT "orders_pkey", ADD PRIMARY KEY ("id", "line");`, "primary key is (line, id) in region west but (id, line) in region east")
		if rep.Errors() != 1 {
			t.Errorf("got %d errors, want 1", rep.Errors())
		}
		rep = runChecks(t, pgFirst(tables("orders")), east, west)
		wantOne(t, rep, "east", "orders", Error, "ALTER TABLE `orders` DROP PRIMARY KEY, ADD PRIMARY KEY (`line`, `id`)", "primary key is (id, line) in region east but (line, id) in region west")
		if rep.Errors() != 1 {
			t.Errorf("got %d errors, want 1", rep.Errors())
		}
	})
}
