package e2e

import (
	"os/exec"
	"strings"
	"testing"
)

// TestVerifyRefuses: verify exits 2, writing nothing, with one message
// naming the table, column or region, for what it cannot compare: a table
// missing in a region, different primary keys, columns missing or of types
// that do not map, --repair of an apply_remote table without --source.
func TestVerifyRefuses(t *testing.T) {
	rs := mariaRegions(t, []string{"east", "west"})
	east, west := rs[0], rs[1]
	ddl := func(r *region, stmts ...string) {
		for _, q := range stmts {
			if _, err := r.db.Exec(q); err != nil {
				t.Fatal(err)
			}
		}
	}
	ddl(east,
		"CREATE TABLE only_east (id INT PRIMARY KEY)",
		"CREATE TABLE pkeys (a INT, b INT, PRIMARY KEY (a, b))",
		"CREATE TABLE types (id INT PRIMARY KEY, n INT)",
		"CREATE TABLE cols (id INT PRIMARY KEY, extra INT)",
		"CREATE TABLE fine (id INT PRIMARY KEY, v VARCHAR(8))",
	)
	ddl(west,
		"CREATE TABLE pkeys (a INT, b INT, PRIMARY KEY (a))",
		"CREATE TABLE types (id INT PRIMARY KEY, n VARBINARY(8))",
		"CREATE TABLE cols (id INT PRIMARY KEY)",
		"CREATE TABLE fine (id INT PRIMARY KEY, v VARCHAR(8))",
	)
	cfg := writeConfig(t, rs, []string{"only_east", "pkeys", "types", "cols", "fine"}, "")
	for _, c := range []struct {
		args []string
		want []string
	}{
		{[]string{"--table", "only_east"}, []string{"only_east", "west", "does not exist"}},
		{[]string{"--table", "pkeys"}, []string{"pkeys", "primary key (a, b)", "(a)"}},
		{[]string{"--table", "types"}, []string{"column n", "int", "varbinary(8)", "do not map"}},
		{[]string{"--table", "cols"}, []string{"column extra", "not in region west"}},
		{[]string{"--table", "nosuch"}, []string{"nosuch", "not a table of the config"}},
		{[]string{"--table", "fine", "--regions", "east,north"}, []string{"region north"}},
		{[]string{"--table", "fine", "--repair"}, []string{"table fine is apply_remote", "--source"}},
		{[]string{"--table", "fine", "--format", "yaml"}, []string{"--format"}},
		{[]string{"--table", "fine", "--source", "east"}, []string{"--source only applies with --repair"}},
	} {
		cmd := exec.Command(regiondBinary(t), append([]string{"verify", "--config", cfg}, c.args...)...)
		out, err := cmd.CombinedOutput()
		code := 0
		if ee, ok := err.(*exec.ExitError); ok {
			code = ee.ExitCode()
		}
		if code != 2 {
			t.Errorf("verify %v: exit %d, want 2:\n%s", c.args, code, out)
			continue
		}
		t.Logf("verify %v: %s", c.args, strings.TrimSpace(string(out)))
		for _, w := range c.want {
			if !strings.Contains(string(out), w) {
				t.Errorf("verify %v: message lacks %q:\n%s", c.args, w, out)
			}
		}
	}
	// Nothing was written: no marker, no regiond table.
	for _, r := range rs {
		var n int
		if err := r.db.QueryRow("SELECT COUNT(*) FROM information_schema.TABLES WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME LIKE 'regiond%'").Scan(&n); err != nil {
			t.Fatal(err)
		}
		if n != 0 {
			t.Errorf("%s: verify created %d regiond tables", r.name, n)
		}
	}
}
