package e2e

import (
	"bytes"
	"errors"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/regiond/regiond/internal/dbtest"
)

// TestDemo runs `regiond demo --duration 15s` as the README tells a
// newcomer to: it must exit 0 (the regions converged, by verify), having
// shown live progress, and leave no server or directory behind.
func TestDemo(t *testing.T) {
	out, err := runDemo(t, "", "demo", "--duration", "15s")
	if err != nil {
		t.Fatalf("regiond demo: %v\n%s", err, out)
	}
	for _, want := range []string{"3 regions", "PostgreSQL", "MariaDB", "writes", "conflicts", "identical"} {
		if !strings.Contains(out, want) {
			t.Errorf("demo output lacks %q:\n%s", want, out)
		}
	}
	if n := strings.Count(out, "/s)"); n < 10 {
		t.Errorf("demo showed %d progress lines, want one a second:\n%s", n, out)
	}
	assertDemoCleanedUp(t, out)
}

// TestDemoInterrupted: Ctrl-C in the middle of the workload stops the demo
// and still removes its servers and directory.
func TestDemoInterrupted(t *testing.T) {
	out, err := runDemo(t, "writes", "demo", "--duration", "60s")
	var ee *exec.ExitError
	if err == nil || !errors.As(err, &ee) {
		t.Fatalf("interrupted demo: err %v, want a non-zero exit\n%s", err, out)
	}
	assertDemoCleanedUp(t, out)
}

// runDemo runs the binary with args; with interruptOn set, it sends SIGINT
// once the output shows that text (a second later).
func runDemo(t *testing.T, interruptOn string, args ...string) (string, error) {
	t.Helper()
	cmd := exec.Command(regiondBinary(t), args...)
	cmd.Dir = t.TempDir() // not the checkout: the demo must work from its embedded script
	buf := &dbtest.Buffer{}
	cmd.Stdout, cmd.Stderr = buf, buf
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	var err error
	if interruptOn == "" {
		err = <-done
	} else {
	wait:
		for {
			select {
			case err = <-done:
				break wait
			case <-time.After(200 * time.Millisecond):
				if strings.Contains(buf.String(), interruptOn) {
					time.Sleep(time.Second)
					_ = cmd.Process.Signal(syscall.SIGINT)
					err = <-done
					break wait
				}
			}
		}
	}
	t.Logf("regiond %s:\n%s", strings.Join(args, " "), buf.String())
	return buf.String(), err
}

var demoDir = regexp.MustCompile(`regions in (\S+)`)

func assertDemoCleanedUp(t *testing.T, out string) {
	t.Helper()
	m := demoDir.FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("demo output names no directory:\n%s", out)
	}
	if _, err := os.Stat(m[1]); !os.IsNotExist(err) {
		t.Errorf("demo left %s behind (stat: %v)", m[1], err)
	}
	ps, _ := exec.Command("pgrep", "-af", m[1]).Output()
	if len(bytes.TrimSpace(ps)) > 0 {
		t.Errorf("demo left servers running:\n%s", ps)
	}
}
