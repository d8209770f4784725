package check

import (
	"database/sql"
	"encoding/json"
	"fmt"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/regiond/regiond/config"
	"github.com/regiond/regiond/internal/dbtest"
	"github.com/regiond/regiond/internal/testenv"
)

func TestParseGrants(t *testing.T) {
	tests := []struct {
		name       string
		flavor     string
		db         string
		lines      []string
		wantGlobal []string
		wantDB     []string
		wantRoles  bool
	}{
		{
			name:   "all privileges",
			flavor: config.FlavorMariaDB, db: "app",
			lines: []string{"GRANT ALL PRIVILEGES ON *.* TO `root`@`127.0.0.1` WITH GRANT OPTION", "GRANT PROXY ON ``@`%` TO `root`@`127.0.0.1` WITH GRANT OPTION"},
		},
		{
			name:   "mariadb names, database grant",
			flavor: config.FlavorMariaDB, db: "app",
			lines: []string{
				"GRANT REPLICATION SLAVE, BINLOG MONITOR ON *.* TO `u`@`%` IDENTIFIED BY PASSWORD '*D821809F681A40A6E379B50D0463EFAE20BDD122'",
				"GRANT SELECT, INSERT, UPDATE, DELETE, CREATE ON `app`.* TO `u`@`%`",
			},
		},
		{
			name:   "mysql names",
			flavor: config.FlavorMySQL, db: "app",
			lines: []string{
				"GRANT REPLICATION SLAVE, REPLICATION CLIENT ON *.* TO `u`@`%`",
				"GRANT ALL PRIVILEGES ON `app`.* TO `u`@`%`",
			},
		},
		{
			name:   "nothing but usage",
			flavor: config.FlavorMariaDB, db: "app",
			lines:      []string{"GRANT USAGE ON *.* TO `u`@`%`"},
			wantGlobal: []string{"REPLICATION SLAVE", "BINLOG MONITOR"},
			wantDB:     []string{"SELECT", "INSERT", "UPDATE", "DELETE", "CREATE"},
		},
		{
			name:   "mysql names the client privilege its own way",
			flavor: config.FlavorMySQL, db: "app",
			lines:      []string{"GRANT REPLICATION SLAVE ON *.* TO `u`@`%`", "GRANT SELECT, INSERT, UPDATE, DELETE, CREATE ON *.* TO `u`@`%`"},
			wantGlobal: []string{"REPLICATION CLIENT"},
		},
		{
			name:   "all on the database does not give replication",
			flavor: config.FlavorMariaDB, db: "app",
			lines:      []string{"GRANT ALL PRIVILEGES ON `app`.* TO `u`@`%`"},
			wantGlobal: []string{"REPLICATION SLAVE", "BINLOG MONITOR"},
		},
		{
			name:   "another database, table and column grants do not count",
			flavor: config.FlavorMariaDB, db: "app",
			lines: []string{
				"GRANT REPLICATION SLAVE, BINLOG MONITOR ON *.* TO `u`@`%`",
				"GRANT SELECT, INSERT, UPDATE, DELETE, CREATE ON `other`.* TO `u`@`%`",
				"GRANT SELECT, INSERT ON `app`.`accounts` TO `u`@`%`",
				"GRANT SELECT (`a`), UPDATE (`a`, `b`) ON `app`.`t` TO `u`@`%`",
			},
			wantDB: []string{"SELECT", "INSERT", "UPDATE", "DELETE", "CREATE"},
		},
		{
			name:   "wildcard database and role privileges",
			flavor: config.FlavorMariaDB, db: "app_1",
			lines: []string{
				"GRANT `r1` TO `u`@`%`",
				"GRANT REPLICATION REPLICA, REPLICATION CLIENT ON *.* TO `u`@`%`",
				"GRANT SELECT, INSERT ON `app\\_%`.* TO `u`@`%`",
				"GRANT UPDATE, DELETE ON `app_1`.* TO `r1`",
				"SET DEFAULT ROLE `r1` FOR `u`@`%`",
			},
			wantDB:    []string{"CREATE"},
			wantRoles: true,
		},
		{
			name:   "escaped underscore matches only an underscore",
			flavor: config.FlavorMariaDB, db: "appx1",
			lines:      []string{"GRANT ALL ON *.* TO `u`@`%`", "GRANT SELECT ON `app\\_1`.* TO `v`@`%`"},
			wantGlobal: nil,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			g := parseGrants(tt.lines)
			gotGlobal, gotDB := g.missing(tt.flavor, tt.db)
			if diff := cmp.Diff(tt.wantGlobal, gotGlobal); diff != "" {
				t.Errorf("missing global privileges (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff(tt.wantDB, gotDB); diff != "" {
				t.Errorf("missing database privileges (-want +got):\n%s", diff)
			}
			if g.roles != tt.wantRoles {
				t.Errorf("roles = %v, want %v", g.roles, tt.wantRoles)
			}
		})
	}
}

func TestLikeMatch(t *testing.T) {
	tests := []struct {
		pattern, name string
		want          bool
	}{
		{"app", "app", true},
		{"app", "apps", false},
		{"app%", "apps", true},
		{"app%", "ap", false},
		{"a_p", "axp", true},
		{`a\_p`, "axp", false},
		{`a\_p`, "a_p", true},
		{"%", "", true},
		{"", "", true},
	}
	for _, tt := range tests {
		if got := likeMatch(tt.pattern, tt.name); got != tt.want {
			t.Errorf("likeMatch(%q, %q) = %v, want %v", tt.pattern, tt.name, got, tt.want)
		}
	}
}

func TestAutoIncCollide(t *testing.T) {
	tests := []struct {
		inc1, off1, inc2, off2 uint64
		want                   bool
	}{
		{1, 1, 1, 1, true},   // the default everywhere
		{2, 1, 2, 2, false},  // odd and even
		{2, 1, 2, 1, true},   // equal offsets
		{3, 1, 3, 2, false},  // three regions
		{2, 1, 4, 3, true},   // 3 is odd
		{2, 2, 4, 1, false},  // evens and 1 mod 4
		{10, 1, 1, 1, true},  // one region left at the default
		{2, 5, 2, 1, true},   // an offset above the increment is ignored: 1
		{4, 2, 6, 4, true},   // gcd 2: both even
		{4, 1, 6, 2, false},  // gcd 2: odd and even
		{0, 0, 2, 2, true},   // unset reads as 1/1
		{5, 5, 5, 1, false},  // offset == increment is allowed
		{5, 5, 10, 5, true},  // 5, 10, 15 ... and 5, 15, 25 ...
		{7, 3, 11, 3, true},  // coprime increments always meet
		{7, 3, 11, 10, true}, // coprime increments always meet
	}
	for _, tt := range tests {
		got := autoIncCollide(tt.inc1, tt.off1, tt.inc2, tt.off2)
		if got != tt.want {
			t.Errorf("autoIncCollide(%d, %d, %d, %d) = %v, want %v", tt.inc1, tt.off1, tt.inc2, tt.off2, got, tt.want)
		}
		if rev := autoIncCollide(tt.inc2, tt.off2, tt.inc1, tt.off1); rev != got {
			t.Errorf("autoIncCollide is not symmetric for %+v", tt)
		}
	}
}

func TestHumanSeconds(t *testing.T) {
	for s, want := range map[uint64]string{1: "1 second", 90: "90 seconds", 3600: "1 hour", 7200: "2 hours", 86400: "1 day", 604800: "7 days", 2592000: "30 days", 120: "2 minutes"} {
		if got := humanSeconds(s); got != want {
			t.Errorf("humanSeconds(%d) = %q, want %q", s, got, want)
		}
	}
}

// TestBinlogEncodingsTheReaderRefuses: MySQL settings that make the binlog
// carry changes the reader refuses rather than skip (a compressed
// transaction payload, partial JSON diffs) are errors with the fix when
// they are on; off is fine, and MariaDB, which has neither variable, gets
// no finding about them.
func TestBinlogEncodingsTheReaderRefuses(t *testing.T) {
	good := map[string]string{
		"log_bin": "ON", "binlog_format": "ROW", "binlog_row_image": "FULL", "binlog_row_metadata": "FULL",
		"gtid_mode": "ON", "enforce_gtid_consistency": "ON", "gtid_strict_mode": "ON",
		"binlog_expire_logs_seconds": "604800", "server_id": "1",
	}
	const (
		compression = "binlog_transaction_compression"
		valueOpts   = "binlog_row_value_options"
	)
	for _, tc := range []struct {
		name, flavor, variable, value string // value "" leaves the variable out
		fix                           string // "": no finding
	}{
		{"compression on", config.FlavorMySQL, compression, "ON", "SET GLOBAL binlog_transaction_compression = OFF"},
		{"compression on as 1", config.FlavorMySQL, compression, "1", "SET GLOBAL binlog_transaction_compression = OFF"},
		{"compression off", config.FlavorMySQL, compression, "OFF", ""},
		{"mysql 8.0.19, no compression variable", config.FlavorMySQL, compression, "", ""},
		{"mariadb, no compression variable", config.FlavorMariaDB, compression, "", ""},
		{"partial json", config.FlavorMySQL, valueOpts, "PARTIAL_JSON", "SET GLOBAL binlog_row_value_options = ''"},
		{"partial json, lower case", config.FlavorMySQL, valueOpts, "partial_json", "SET GLOBAL binlog_row_value_options = ''"},
		{"no row value options", config.FlavorMySQL, valueOpts, " ", ""},
		{"mariadb, no row value options variable", config.FlavorMariaDB, valueOpts, "", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			vars := map[string]string{}
			for k, v := range good {
				vars[k] = v
			}
			if tc.value != "" {
				vars[tc.variable] = strings.TrimSpace(tc.value)
			}
			res := &regionResult{name: "east"}
			in := &mysqlInspector{res: res, flavor: tc.flavor, version: "8.0.36"}
			in.checkBinlog(vars)
			var got []Finding
			for _, f := range res.findings {
				if strings.Contains(f.Problem, tc.variable) {
					got = append(got, f)
				}
			}
			if tc.fix == "" {
				if len(got) != 0 {
					t.Errorf("findings %+v, want none about %s", got, tc.variable)
				}
				return
			}
			if len(got) != 1 {
				t.Fatalf("findings %+v, want one about %s", res.findings, tc.variable)
			}
			if f := got[0]; f.Severity != Error || f.Region != "east" || !strings.Contains(f.Fix, tc.fix) {
				t.Errorf("finding %+v: want an error for east whose fix says %s", f, tc.fix)
			}
		})
	}
}

func TestReportJSON(t *testing.T) {
	rep := Report{Findings: []Finding{
		{Region: "east", Table: "accounts", Severity: Error, Problem: "no primary key", Fix: "ALTER TABLE"},
		{Region: "west", Severity: Warning, Problem: "never purged", Fix: "SET GLOBAL"},
		{Region: "west", Severity: Info, Problem: "kept 7 days"},
	}}
	b, err := json.Marshal(rep)
	if err != nil {
		t.Fatal(err)
	}
	want := `{"findings":[` +
		`{"region":"east","table":"accounts","severity":"error","problem":"no primary key","fix":"ALTER TABLE"},` +
		`{"region":"west","severity":"warning","problem":"never purged","fix":"SET GLOBAL"},` +
		`{"region":"west","severity":"info","problem":"kept 7 days"}],"errors":1,"warnings":1}`
	if string(b) != want {
		t.Errorf("JSON:\n got %s\nwant %s", b, want)
	}
	var back struct{ Findings []Finding }
	if err := json.Unmarshal(b, &back); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(rep.Findings, back.Findings); diff != "" {
		t.Errorf("round trip (-want +got):\n%s", diff)
	}
	empty, _ := json.Marshal(Report{})
	if string(empty) != `{"findings":[],"errors":0,"warnings":0}` {
		t.Errorf("empty report: %s", empty)
	}
}

// region is one test region: a private MariaDB server and its pool.
type region struct {
	name string
	srv  *testenv.Server
	db   *sql.DB
}

// newRegion starts a server with settings that pass every check: distinct
// server ids and AUTO_INCREMENT offsets (of 2 regions) and a week of binlog
// retention.
func newRegion(t *testing.T, name string, serverID int) *region {
	t.Helper()
	srv := testenv.MariaDB(t, serverID)
	r := &region{name: name, srv: srv, db: dbtest.Open(t, srv)}
	dbtest.Exec(t, r.db,
		"SET GLOBAL auto_increment_increment = 2",
		fmt.Sprintf("SET GLOBAL auto_increment_offset = %d", serverID),
		"SET GLOBAL binlog_expire_logs_seconds = 604800",
	)
	return r
}

func (r *region) cfg() config.Region {
	return config.Region{Name: r.name, Engine: config.EngineMySQL, DSN: r.srv.URL("app")}
}

// state is what must not change when check runs: the binlog position and
// the set of regiond_* tables.
func (r *region) state(t *testing.T) string {
	t.Helper()
	var n int
	if err := r.db.QueryRow("SELECT COUNT(*) FROM information_schema.TABLES WHERE TABLE_NAME LIKE 'regiond\\_%'").Scan(&n); err != nil {
		t.Fatal(err)
	}
	return fmt.Sprintf("gtid_binlog_pos=%q regiond_tables=%d", dbtest.GTIDPos(t, r.db), n)
}

// runCheck runs Run on cfg and fails the test if any region's state changed.
func runCheck(t *testing.T, cfg *config.Config, regions ...*region) Report {
	t.Helper()
	before := make([]string, len(regions))
	for i, r := range regions {
		before[i] = r.state(t)
	}
	rep := Run(t.Context(), cfg)
	for i, r := range regions {
		if after := r.state(t); after != before[i] {
			t.Errorf("check changed region %s: before %s, after %s", r.name, before[i], after)
		}
	}
	for _, f := range rep.Findings {
		t.Logf("%v", f)
	}
	return rep
}

func tables(names ...string) map[string]config.Table {
	m := map[string]config.Table{}
	for _, n := range names {
		m[n] = config.Table{}
	}
	return m
}

// errorsFor returns the Error findings of region (any region when empty)
// whose problem contains all of words.
func errorsFor(rep Report, region string, words ...string) []Finding {
	var out []Finding
next:
	for _, f := range rep.Findings {
		if f.Severity != Error || region != "" && f.Region != region {
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

func TestRunMariaDB(t *testing.T) {
	east := newRegion(t, "east", 1)
	west := newRegion(t, "west", 2)
	for _, r := range []*region{east, west} {
		dbtest.Exec(t, r.db,
			"CREATE TABLE accounts (id BIGINT AUTO_INCREMENT PRIMARY KEY, owner VARCHAR(100) NOT NULL, balance DECIMAL(12,2) NOT NULL)",
			"CREATE TABLE events (at DATETIME(6) NOT NULL, what VARCHAR(100))",
			"CREATE TABLE users (id BIGINT PRIMARY KEY, email VARCHAR(200) NOT NULL, UNIQUE KEY email (email))",
		)
	}
	dbtest.Exec(t, east.db, "CREATE TABLE widgets (id INT PRIMARY KEY, color VARCHAR(10))")
	dbtest.Exec(t, west.db, "CREATE TABLE widgets (id INT PRIMARY KEY, colour VARCHAR(10))")
	dbtest.Exec(t, east.db, "CREATE TABLE orders (id INT, line INT, PRIMARY KEY (id, line))")
	dbtest.Exec(t, west.db, "CREATE TABLE orders (id INT, line INT, PRIMARY KEY (line, id))")
	both := func(tbls map[string]config.Table) *config.Config {
		return &config.Config{Regions: []config.Region{east.cfg(), west.cfg()}, Tables: tbls}
	}

	t.Run("good setup", func(t *testing.T) {
		rep := runCheck(t, both(tables("accounts")), east, west)
		if rep.Errors() != 0 || rep.Warnings() != 0 {
			t.Fatalf("got %d errors, %d warnings, want none", rep.Errors(), rep.Warnings())
		}
		// The retention is reported as a fact.
		if len(rep.Findings) != 2 || !strings.Contains(rep.Findings[0].Problem, "7 days") {
			t.Errorf("want one Info finding about 7 days of binlog per region, got %v", rep.Findings)
		}
	})

	t.Run("table without primary key", func(t *testing.T) {
		rep := runCheck(t, both(tables("accounts", "events")), east, west)
		if rep.Errors() != 2 {
			t.Fatalf("got %d errors, want 2 (one per region)", rep.Errors())
		}
		for _, r := range []string{"east", "west"} {
			got := errorsFor(rep, r, "no primary key")
			if len(got) != 1 || got[0].Table != "events" || !strings.Contains(got[0].Fix, "ALTER TABLE `events` ADD PRIMARY KEY") {
				t.Errorf("region %s: want one error about events' primary key with an ALTER TABLE fix, got %v", r, got)
			}
		}
	})

	t.Run("missing table", func(t *testing.T) {
		rep := runCheck(t, both(tables("accounts", "ghosts")), east, west)
		for _, r := range []string{"east", "west"} {
			got := errorsFor(rep, r, "ghosts", "does not exist")
			if len(got) != 1 || got[0].Table != "ghosts" {
				t.Errorf("region %s: want one error naming table ghosts, got %v", r, got)
			}
		}
		if rep.Errors() != 2 {
			t.Errorf("got %d errors, want 2", rep.Errors())
		}
	})

	t.Run("columns differ", func(t *testing.T) {
		rep := runCheck(t, both(tables("widgets")), east, west)
		color := errorsFor(rep, "west", "column color")
		colour := errorsFor(rep, "west", "column colour")
		if len(color) != 1 || len(colour) != 1 || color[0].Table != "widgets" {
			t.Errorf("want an error for column color and one for colour in region west, got %v", rep.Findings)
		}
		if rep.Errors() != 2 {
			t.Errorf("got %d errors, want 2", rep.Errors())
		}
	})

	t.Run("primary keys differ", func(t *testing.T) {
		rep := runCheck(t, both(tables("orders")), east, west)
		got := errorsFor(rep, "west", "primary key is (line, id)")
		if len(got) != 1 || got[0].Table != "orders" || rep.Errors() != 1 {
			t.Errorf("want one error about orders' primary key in region west, got %v", rep.Findings)
		}
	})

	t.Run("secondary unique key", func(t *testing.T) {
		rep := runCheck(t, both(tables("users")), east, west)
		if rep.Errors() != 0 || rep.Warnings() != 2 {
			t.Fatalf("got %d errors, %d warnings, want 0 and 2", rep.Errors(), rep.Warnings())
		}
		for _, f := range rep.Findings {
			if f.Severity == Warning && (f.Table != "users" || !strings.Contains(f.Problem, "unique key email")) {
				t.Errorf("unexpected warning %v", f)
			}
		}
	})

	t.Run("equal auto_increment settings", func(t *testing.T) {
		dbtest.Exec(t, west.db, "SET GLOBAL auto_increment_offset = 1")
		defer dbtest.Exec(t, west.db, "SET GLOBAL auto_increment_offset = 2")
		rep := runCheck(t, both(tables("accounts")), east, west)
		for _, r := range []string{"east", "west"} {
			got := errorsFor(rep, r, "AUTO_INCREMENT values can collide", "accounts")
			if len(got) != 1 || !strings.Contains(got[0].Fix, "auto_increment_increment") || !strings.Contains(got[0].Fix, "auto_increment_offset") {
				t.Errorf("region %s: want one auto_increment error with a fix, got %v", r, got)
			}
		}
		if rep.Errors() != 2 {
			t.Errorf("got %d errors, want 2", rep.Errors())
		}
		// Without AUTO_INCREMENT columns, the settings do not matter.
		if rep := runCheck(t, both(tables("users")), east, west); rep.Errors() != 0 {
			t.Errorf("tables without AUTO_INCREMENT: got %d errors, want 0", rep.Errors())
		}
	})

	t.Run("equal server ids", func(t *testing.T) {
		dbtest.Exec(t, west.db, "SET GLOBAL server_id = 1")
		defer dbtest.Exec(t, west.db, "SET GLOBAL server_id = 2")
		rep := runCheck(t, both(tables("accounts")), east, west)
		if got := errorsFor(rep, "west", "server_id is 1"); len(got) != 1 || rep.Errors() != 1 {
			t.Errorf("want one server_id error in region west, got %v", rep.Findings)
		}
	})

	t.Run("wrong password", func(t *testing.T) {
		dbtest.Exec(t, east.db,
			"CREATE USER 'pwuser'@'%' IDENTIFIED BY 'Corr3ct-Horse'",
			"GRANT ALL PRIVILEGES ON *.* TO 'pwuser'@'%'",
		)
		defer dbtest.Exec(t, east.db, "DROP USER 'pwuser'@'%'")
		r := east.cfg()
		r.DSN = fmt.Sprintf("mysql://pwuser:Wr0ng-Battery@%s/app", east.srv.Addr())
		rep := runCheck(t, &config.Config{Regions: []config.Region{r}, Tables: tables("accounts")}, east)
		got := errorsFor(rep, "east", east.srv.Addr(), "access denied")
		if len(got) != 1 || rep.Errors() != 1 || len(rep.Findings) != 1 {
			t.Fatalf("want exactly one access denied error naming %s, got %v", east.srv.Addr(), rep.Findings)
		}
		if !strings.Contains(got[0].Fix, "password") {
			t.Errorf("fix %q does not mention the password", got[0].Fix)
		}
		if s := got[0].String(); strings.Contains(s, "Wr0ng-Battery") || strings.Contains(s, "Corr3ct-Horse") {
			t.Errorf("finding shows the password: %s", s)
		}

		// With the right password, the check goes on.
		r.DSN = fmt.Sprintf("mysql://pwuser:Corr3ct-Horse@%s/app", east.srv.Addr())
		if rep := runCheck(t, &config.Config{Regions: []config.Region{r}, Tables: tables("accounts")}, east); rep.Errors() != 0 {
			t.Errorf("right password: got %d errors, want 0", rep.Errors())
		}
	})

	t.Run("missing privileges", func(t *testing.T) {
		dbtest.Exec(t, east.db,
			"CREATE USER 'reader'@'%' IDENTIFIED BY 'reader-pw'",
			"GRANT SELECT, INSERT ON app.* TO 'reader'@'%'",
		)
		defer dbtest.Exec(t, east.db, "DROP USER 'reader'@'%'")
		r := east.cfg()
		r.DSN = fmt.Sprintf("mysql://reader:reader-pw@%s/app", east.srv.Addr())
		rep := runCheck(t, &config.Config{Regions: []config.Region{r}, Tables: tables("accounts")}, east)
		global := errorsFor(rep, "east", "REPLICATION SLAVE, BINLOG MONITOR")
		db := errorsFor(rep, "east", "UPDATE, DELETE, CREATE on database app")
		if len(global) != 1 || len(db) != 1 || rep.Errors() != 2 {
			t.Fatalf("want one error for the replication privileges and one for the database ones, got %v", rep.Findings)
		}
		if want := "GRANT REPLICATION SLAVE, BINLOG MONITOR ON *.* TO 'reader'@'%';"; global[0].Fix != want {
			t.Errorf("fix = %q, want %q", global[0].Fix, want)
		}
		if want := "GRANT UPDATE, DELETE, CREATE ON `app`.* TO 'reader'@'%';"; db[0].Fix != want {
			t.Errorf("fix = %q, want %q", db[0].Fix, want)
		}
	})

	t.Run("unreachable region and postgres region", func(t *testing.T) {
		cfg := both(tables("accounts"))
		cfg.Regions = append(cfg.Regions,
			config.Region{Name: "gone", Engine: config.EngineMySQL, DSN: "mysql://root:secret-pw@127.0.0.1:1/app"},
			config.Region{Name: "pg", Engine: config.EnginePostgres, DSN: "postgres://x@127.0.0.1:1/app"},
		)
		rep := runCheck(t, cfg, east, west)
		got := errorsFor(rep, "gone", "127.0.0.1:1", "refused")
		if len(got) != 1 {
			t.Errorf("want one connection error for region gone, got %v", rep.Findings)
		}
		pg := errorsFor(rep, "pg", "127.0.0.1:1", "refused")
		if len(pg) != 1 || rep.Errors() != 2 || rep.Warnings() != 0 || rep.Findings[len(rep.Findings)-1].Region != "pg" {
			t.Errorf("want one connection error for region pg, last, and no other error or warning; got %v", rep.Findings)
		}
	})
}

func TestRunStatementBinlog(t *testing.T) {
	t.Setenv("MARIADB_EXTRA_ARGS", "--binlog-format=STATEMENT")
	r := newRegion(t, "east", 1)
	dbtest.Exec(t, r.db, "CREATE TABLE accounts (id BIGINT PRIMARY KEY)")
	rep := runCheck(t, &config.Config{Regions: []config.Region{r.cfg()}, Tables: tables("accounts")}, r)
	got := errorsFor(rep, "east", "binlog_format is STATEMENT")
	if len(got) != 1 || rep.Errors() != 1 {
		t.Fatalf("want exactly one error about binlog_format, got %v", rep.Findings)
	}
	if !strings.Contains(got[0].Fix, "SET GLOBAL binlog_format = 'ROW'") || !strings.Contains(got[0].Fix, "my.cnf") {
		t.Errorf("fix %q lacks the SET GLOBAL statement or the my.cnf setting", got[0].Fix)
	}
}
