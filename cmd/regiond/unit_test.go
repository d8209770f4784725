package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestUnitFileVerifies runs `systemd-analyze verify` on deploy/regiond.service
// with its ExecStart pointing at a freshly built regiond. Without
// systemd-analyze the test is skipped, except in CI (.ci/run sets
// REGIOND_CI=1 and installs systemd), where it fails.
func TestUnitFileVerifies(t *testing.T) {
	analyze, err := exec.LookPath("systemd-analyze")
	if err != nil {
		if os.Getenv("REGIOND_CI") != "" {
			t.Fatal("systemd-analyze not found: apt-get install -y systemd")
		}
		t.Skip("systemd-analyze not installed (apt-get install -y systemd)")
	}
	unit, err := os.ReadFile(filepath.Join("..", "..", "deploy", "regiond.service"))
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"Type=notify", "WatchdogSec=", "Restart=on-failure", "RestartPreventExitStatus=2", "NoNewPrivileges=yes", "ProtectSystem=strict", "StateDirectory=regiond"} {
		if !strings.Contains(string(unit), "\n"+want) {
			t.Errorf("unit file lacks %s", want)
		}
	}
	dir := t.TempDir()
	bin := filepath.Join(dir, "regiond")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	path := filepath.Join(dir, "regiond.service")
	if err := os.WriteFile(path, []byte(strings.ReplaceAll(string(unit), "/usr/local/bin/regiond", bin)), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(analyze, "verify", path).CombinedOutput()
	if err != nil || len(strings.TrimSpace(string(out))) > 0 {
		t.Fatalf("systemd-analyze verify: %v\n%s", err, out)
	}
}
