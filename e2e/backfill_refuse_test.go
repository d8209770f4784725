package e2e

import (
	"errors"
	"os/exec"
	"strings"
	"testing"
)

// TestBackfillRefuses: backfill refuses, with exit code 2 and a message
// naming the table, column or region, tables it cannot copy, and writes
// nothing; without the pipeline started it fails (exit 1) saying to start
// `regiond run` first.
func TestBackfillRefuses(t *testing.T) {
	rs := mariaRegions(t, []string{"east", "west"})
	east, west := rs[0], rs[1]
	for _, q := range []string{
		"CREATE TABLE ok (id INT PRIMARY KEY, v INT)",
		"CREATE TABLE onlyeast (id INT PRIMARY KEY)",
		"CREATE TABLE keys2 (a INT, b INT, PRIMARY KEY (a, b))",
		"CREATE TABLE cols (id INT PRIMARY KEY, extra INT)",
		"CREATE TABLE types (id INT PRIMARY KEY, at DATETIME(6))",
	} {
		if _, err := east.db.Exec(q); err != nil {
			t.Fatal(err)
		}
	}
	for _, q := range []string{
		"CREATE TABLE ok (id INT PRIMARY KEY, v INT)",
		"CREATE TABLE keys2 (a INT, b INT, PRIMARY KEY (b, a))",
		"CREATE TABLE cols (id INT PRIMARY KEY)",
		"CREATE TABLE types (id INT PRIMARY KEY, at INT)",
	} {
		if _, err := west.db.Exec(q); err != nil {
			t.Fatal(err)
		}
	}
	cfg := writeConfig(t, rs, []string{"ok", "onlyeast", "keys2", "cols", "types"}, "")
	bin := regiondBinary(t)
	run := func(args ...string) (int, string) {
		out, err := exec.Command(bin, append([]string{"backfill", "--config", cfg}, args...)...).CombinedOutput()
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			return ee.ExitCode(), string(out)
		}
		if err != nil {
			t.Fatal(err)
		}
		return 0, string(out)
	}
	for _, c := range []struct {
		name string
		args []string
		code int
		want []string
	}{
		{"missing table", []string{"--from", "east", "--to", "west", "--table", "onlyeast"}, 2, []string{"region west", "onlyeast", "does not exist"}},
		{"primary keys differ", []string{"--from", "east", "--to", "west", "--table", "keys2"}, 2, []string{"keys2", "primary key (a, b)", "(b, a)"}},
		{"column missing", []string{"--from", "east", "--to", "west", "--table", "cols"}, 2, []string{"cols", "column extra", "not in region west"}},
		{"types do not map", []string{"--from", "east", "--to", "west", "--table", "types"}, 2, []string{"types column at", "datetime(6)", "int"}},
		{"unknown region", []string{"--from", "east", "--to", "north"}, 2, []string{"--to north", "no such region"}},
		{"same region", []string{"--from", "east", "--to", "east"}, 2, []string{"both name region east"}},
		{"unknown table", []string{"--from", "east", "--to", "west", "--table", "nope"}, 2, []string{"--table nope", "not a configured table"}},
		{"pipeline not started", []string{"--from", "east", "--to", "west", "--table", "ok"}, 1, []string{"east->west", "regiond run"}},
	} {
		code, out := run(c.args...)
		if code != c.code {
			t.Errorf("%s: exit code %d, want %d:\n%s", c.name, code, c.code, out)
		}
		for _, w := range c.want {
			if !strings.Contains(out, w) {
				t.Errorf("%s: output does not mention %q:\n%s", c.name, w, out)
			}
		}
	}
	// Nothing was written into the target.
	var n int
	if err := west.db.QueryRow("SELECT COUNT(*) FROM information_schema.TABLES WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME LIKE 'regiond%'").Scan(&n); err != nil {
		t.Fatal(err)
	}
	if n != 0 {
		t.Errorf("%d regiond tables created in the target by refused backfills", n)
	}
}
