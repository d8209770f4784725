package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/regiond/regiond/internal/testenv"
)

// TestStatusUsageAndUnreachable: bad flags are usage errors (exit 2); a
// region that cannot be read and a daemon that does not answer are
// reported per pipeline with exit code 1, in text and JSON.
func TestStatusUsageAndUnreachable(t *testing.T) {
	bin := buildRegiond(t)
	srv := testenv.MariaDB(t, 1)
	dir := t.TempDir()
	cfg := filepath.Join(dir, "regiond.yaml")
	yaml := "regions:\n  - {name: east, engine: mysql, dsn: 'mysql://root@" + srv.Addr() + "/app'}\n" +
		"  - {name: west, engine: mysql, dsn: 'mysql://root@127.0.0.1:1/app'}\ntables:\n  accounts: {}\nmetrics_addr: 127.0.0.1:1\n"
	if err := os.WriteFile(cfg, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, stderr, code := runRegiond(t, bin, time.Minute, "status", "--config", cfg, "--format", "xml"); code != exitUsage || !strings.Contains(stderr, "--format") {
		t.Errorf("--format xml: exit %d, stderr %q; want 2 naming --format", code, stderr)
	}
	if _, stderr, code := runRegiond(t, bin, time.Minute, "status"); code != exitUsage || !strings.Contains(stderr, "--config") {
		t.Errorf("no --config: exit %d, stderr %q; want 2 naming --config", code, stderr)
	}

	stdout, _, code := runRegiond(t, bin, time.Minute, "status", "--config", cfg, "--format", "json")
	if code != exitFailure {
		t.Errorf("exit code %d with west unreachable, want 1", code)
	}
	var rep statusReport
	if err := json.Unmarshal([]byte(stdout), &rep); err != nil {
		t.Fatalf("JSON: %v\n%s", err, stdout)
	}
	got := map[string]statusRow{}
	for _, r := range rep.Pipelines {
		got[r.Pipeline] = r
	}
	if len(got) != 2 {
		t.Fatalf("pipelines %v, want east->west and west->east", rep.Pipelines)
	}
	if p := got["east->west"].Problem; !strings.Contains(p, "region west") {
		t.Errorf("east->west problem %q, want region west named", p)
	}
	if r := got["west->east"]; r.Problem != "" || r.Position != "" {
		t.Errorf("west->east: %+v, want readable and without a position yet", r)
	}
	if len(rep.Problems) != 1 || !strings.Contains(rep.Problems[0], "127.0.0.1:1") {
		t.Errorf("problems %v, want the unanswering daemon", rep.Problems)
	}
	text, _, _ := runRegiond(t, bin, time.Minute, "status", "--config", cfg)
	for _, want := range []string{"PIPELINE", "east->west  unreadable", "(none yet)", "problem: no regiond answers at 127.0.0.1:1"} {
		if !strings.Contains(text, want) {
			t.Errorf("text output lacks %q:\n%s", want, text)
		}
	}
}
