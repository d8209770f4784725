package main

import (
	"database/sql"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/regiond/regiond/internal/dbtest"
	"github.com/regiond/regiond/internal/testenv"
)

// TestBadInput runs the regiond binary as a new user would, with one
// mistake at a time, and checks that it fails with the right exit code and
// one clear message naming the mistake, and that nothing was written to
// any database.
func TestBadInput(t *testing.T) {
	bin := buildRegiond(t)

	good := testenv.MariaDB(t, 1)
	goodDB := dbtest.Open(t, good)
	dbtest.Exec(t, goodDB,
		"CREATE TABLE accounts (id BIGINT PRIMARY KEY, owner VARCHAR(100) NOT NULL)",
		"CREATE TABLE events (at DATETIME(6) NOT NULL, what VARCHAR(100))",
		"CREATE USER 'pwuser'@'%' IDENTIFIED BY 'Corr3ct-Horse'",
		"GRANT ALL PRIVILEGES ON *.* TO 'pwuser'@'%'",
	)
	t.Setenv("MARIADB_EXTRA_ARGS", "--binlog-format=STATEMENT")
	stmt := testenv.MariaDB(t, 2)
	stmtDB := dbtest.Open(t, stmt)
	dbtest.Exec(t, stmtDB, "CREATE TABLE accounts (id BIGINT PRIMARY KEY, owner VARCHAR(100) NOT NULL)")

	dbs := map[string]*sql.DB{"good": goodDB, "statement": stmtDB}
	before := map[string]string{}
	for name, db := range dbs {
		before[name] = dbState(t, db)
	}
	// Each case must leave every server as it was.
	checkUnchanged := func(t *testing.T) {
		t.Helper()
		for name, db := range dbs {
			if after := dbState(t, db); after != before[name] {
				t.Errorf("server %s changed: before %s, after %s", name, before[name], after)
			}
		}
	}

	dir := t.TempDir()
	writeConfig := func(t *testing.T, yaml string) string {
		t.Helper()
		yaml = strings.NewReplacer("GOOD", good.Addr(), "STMT", stmt.Addr()).Replace(yaml)
		path := filepath.Join(dir, strings.NewReplacer("/", "_", " ", "_").Replace(t.Name())+".yaml")
		if err := os.WriteFile(path, []byte(yaml), 0o600); err != nil {
			t.Fatal(err)
		}
		return path
	}

	const twoRegions = `
  - name: east
    engine: mysql
    dsn: mysql://root@GOOD/app
  - name: west
    engine: mysql
    dsn: mysql://root@STMT/app
`
	configCases := []struct {
		name  string
		yaml  string
		thing string   // named on exactly one line of the output
		want  []string // also in the output
	}{
		{
			name:  "unknown key",
			yaml:  "regionz:" + twoRegions + "tables:\n  accounts: {}\n",
			thing: "regionz",
			want:  []string{".yaml:1: regionz: unknown key", "did you mean regions?"},
		},
		{
			name:  "misspelt rule",
			yaml:  "regions:" + twoRegions + "tables:\n  accounts: {conflict: last_writer_win}\n",
			thing: `"last_writer_win"`,
			want:  []string{"tables.accounts.conflict", "valid rules: apply_remote, last_writer_wins, home_region"},
		},
		{
			name:  "missing dsn",
			yaml:  "regions:\n  - name: east\n    engine: mysql\n  - name: west\n    engine: mysql\n    dsn: mysql://root@STMT/app\ntables:\n  accounts: {}\n",
			thing: "regions[0].dsn",
			want:  []string{"required"},
		},
	}
	for _, cmd := range []string{"run", "check"} {
		for _, tc := range configCases {
			t.Run(cmd+"/"+tc.name, func(t *testing.T) {
				path := writeConfig(t, tc.yaml)
				stdout, stderr, code := runRegiond(t, bin, time.Minute, cmd, "--config", path)
				out := stdout + stderr
				if code != exitUsage {
					t.Errorf("exit code %d, want %d\n%s", code, exitUsage, out)
				}
				if n := linesWith(out, tc.thing); n != 1 {
					t.Errorf("%q is on %d lines of the output, want 1:\n%s", tc.thing, n, out)
				}
				for _, w := range tc.want {
					if !strings.Contains(out, w) {
						t.Errorf("output lacks %q:\n%s", w, out)
					}
				}
				checkUnchanged(t)
			})
		}
	}

	t.Run("check/unknown format", func(t *testing.T) {
		path := writeConfig(t, "regions:\n  - {name: east, engine: mysql, dsn: mysql://root@GOOD/app}\ntables:\n  accounts: {}\n")
		stdout, stderr, code := runRegiond(t, bin, time.Minute, "check", "--config", path, "--format", "yaml")
		if code != exitUsage || linesWith(stdout+stderr, "--format") != 1 {
			t.Errorf("exit code %d, want %d, with one message naming --format:\n%s%s", code, exitUsage, stdout, stderr)
		}
		checkUnchanged(t)
	})

	checkCases := []struct {
		name   string
		env    map[string]string
		yaml   string
		thing  string   // on the one ERROR line
		want   []string // also on it
		secret string   // nowhere in the output
	}{
		{
			name:  "table without primary key",
			yaml:  "regions:\n  - {name: east, engine: mysql, dsn: mysql://root@GOOD/app}\ntables:\n  accounts: {}\n  events: {}\n",
			thing: "table events",
			want:  []string{"ERROR region east table events:", "primary key"},
		},
		{
			name:  "statement binlog",
			yaml:  "regions:\n  - {name: east, engine: mysql, dsn: mysql://root@STMT/app}\ntables:\n  accounts: {}\n",
			thing: "binlog_format",
			want:  []string{"ERROR region east:", "STATEMENT"},
		},
		{
			name:   "wrong password",
			env:    map[string]string{"EAST_PASSWORD": "Wr0ng-Battery"},
			yaml:   "regions:\n  - {name: east, engine: mysql, dsn: 'mysql://pwuser:${EAST_PASSWORD}@GOOD/app'}\ntables:\n  accounts: {}\n",
			thing:  "region east",
			want:   []string{good.Addr(), "access denied"},
			secret: "Wr0ng-Battery",
		},
	}
	for _, tc := range checkCases {
		t.Run("check/"+tc.name, func(t *testing.T) {
			for k, v := range tc.env {
				t.Setenv(k, v)
			}
			path := writeConfig(t, tc.yaml)
			stdout, stderr, code := runRegiond(t, bin, time.Minute, "check", "--config", path)
			out := stdout + stderr
			if code != exitFailure {
				t.Errorf("exit code %d, want %d\n%s", code, exitFailure, out)
			}
			if stderr != "" {
				t.Errorf("stderr is not empty (the report is all there is to say):\n%s", stderr)
			}
			var errLines []string
			for _, l := range strings.Split(stdout, "\n") {
				if strings.HasPrefix(l, "ERROR ") {
					errLines = append(errLines, l)
				}
			}
			if len(errLines) != 1 {
				t.Fatalf("want exactly one ERROR line, got %d:\n%s", len(errLines), out)
			}
			for _, w := range append([]string{tc.thing}, tc.want...) {
				if !strings.Contains(errLines[0], w) {
					t.Errorf("the ERROR line lacks %q: %s", w, errLines[0])
				}
			}
			if !strings.Contains(stdout, "\n      fix: ") || !strings.Contains(stdout, "\n1 error, ") {
				t.Errorf("want a fix line and a summary line \"1 error, ...\":\n%s", stdout)
			}
			if tc.secret != "" && strings.Contains(out, tc.secret) {
				t.Errorf("the output shows the password:\n%s", out)
			}
			checkUnchanged(t)
		})
	}

	t.Run("check/json", func(t *testing.T) {
		path := writeConfig(t, "regions:\n  - {name: east, engine: mysql, dsn: mysql://root@GOOD/app}\ntables:\n  accounts: {}\n  events: {}\n")
		stdout, stderr, code := runRegiond(t, bin, time.Minute, "check", "--config", path, "--format", "json")
		if code != exitFailure || stderr != "" {
			t.Errorf("exit code %d, want %d, and empty stderr: %s", code, exitFailure, stderr)
		}
		var rep struct {
			Findings []struct {
				Region, Table, Severity, Problem, Fix string
			}
			Errors, Warnings int
		}
		if err := json.Unmarshal([]byte(stdout), &rep); err != nil {
			t.Fatalf("stdout is not JSON: %v\n%s", err, stdout)
		}
		found := false
		for _, f := range rep.Findings {
			found = found || f.Severity == "error" && f.Region == "east" && f.Table == "events" && f.Fix != ""
		}
		if rep.Errors != 1 || !found {
			t.Errorf("want one error, for table events in region east, got %+v", rep)
		}
		checkUnchanged(t)
	})

	t.Run("check/good setup", func(t *testing.T) {
		path := writeConfig(t, "regions:\n  - {name: east, engine: mysql, dsn: 'mysql://pwuser:${EAST_PASSWORD}@GOOD/app'}\ntables:\n  accounts: {}\n")
		t.Setenv("EAST_PASSWORD", "Corr3ct-Horse")
		stdout, stderr, code := runRegiond(t, bin, time.Minute, "check", "--config", path)
		if code != exitOK || !strings.Contains(stdout, "\n0 errors, ") || strings.Contains(stdout+stderr, "Corr3ct-Horse") {
			t.Errorf("exit code %d, want 0 with \"0 errors\" and no password:\n%s%s", code, stdout, stderr)
		}
		checkUnchanged(t)
	})
}

// dbState is what a command given bad input must not change: the binlog
// position, and which regiond_* tables exist.
func dbState(t *testing.T, db *sql.DB) string {
	t.Helper()
	rows, err := db.Query("SELECT CONCAT(TABLE_SCHEMA, '.', TABLE_NAME) FROM information_schema.TABLES WHERE TABLE_NAME LIKE 'regiond\\_%' ORDER BY 1")
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var tables []string
	for rows.Next() {
		var s string
		if err := rows.Scan(&s); err != nil {
			t.Fatal(err)
		}
		tables = append(tables, s)
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return fmt.Sprintf("gtid_binlog_pos=%q regiond_tables=%v", dbtest.GTIDPos(t, db), tables)
}

// linesWith counts the lines of out that contain s.
func linesWith(out, s string) int {
	n := 0
	for _, l := range strings.Split(out, "\n") {
		if strings.Contains(l, s) {
			n++
		}
	}
	return n
}
