// Package e2e tests the regiond binary end to end, as an operator runs it:
// real MariaDB servers, a config file, `regiond run`, SIGKILL.
package e2e

import (
	"bytes"
	"database/sql"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/regiond/regiond/internal/dbtest"
	"github.com/regiond/regiond/internal/testenv"
)

var (
	buildOnce sync.Once
	binPath   string
	buildErr  error
)

// TestMain removes the regiond binary the tests built (39 MB in the
// system's temporary directory per run of the package, left behind before).
func TestMain(m *testing.M) {
	code := m.Run()
	if binPath != "" {
		os.RemoveAll(filepath.Dir(binPath))
	}
	os.Exit(code)
}

// regiondBinary builds cmd/regiond once per test process.
func regiondBinary(t *testing.T) string {
	t.Helper()
	buildOnce.Do(func() {
		root, err := testenv.RepoRoot()
		if err != nil {
			buildErr = err
			return
		}
		dir, err := os.MkdirTemp("", "regiond-bin-")
		if err != nil {
			buildErr = err
			return
		}
		binPath = filepath.Join(dir, "regiond")
		cmd := exec.Command("go", "build", "-o", binPath, "./cmd/regiond")
		cmd.Dir = root
		if out, err := cmd.CombinedOutput(); err != nil {
			buildErr = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return binPath
}

// region is one test region: a private MariaDB or PostgreSQL server.
type region struct {
	name string
	srv  *testenv.Server
	db   *sql.DB
	// settings are more keys of the region's config entry, one per line
	// ("apply_connections: 2").
	settings []string
}

// engine is "mysql" or "postgres".
func (r *region) engine() string { return r.srv.Engine }

// canon is the region for dbtest's cross-engine comparison.
func (r *region) canon() dbtest.Region {
	return dbtest.Region{Name: r.name, Engine: r.engine(), DB: r.db}
}

// writeConfig writes a config for the regions and tables; extra is appended
// verbatim (more regions, options).
func writeConfig(t *testing.T, regions []*region, tables []string, extra string) string {
	t.Helper()
	var b strings.Builder
	b.WriteString("regions:\n")
	for _, r := range regions {
		fmt.Fprintf(&b, "  - name: %s\n    engine: %s\n    dsn: %s\n", r.name, r.engine(), r.srv.URL("app"))
		for _, kv := range r.settings {
			fmt.Fprintf(&b, "    %s\n", kv)
		}
	}
	b.WriteString(extra)
	if len(tables) > 0 {
		b.WriteString("tables:\n")
		for _, tb := range tables {
			fmt.Fprintf(&b, "  %s: {}\n", tb)
		}
	}
	path := filepath.Join(t.TempDir(), "regiond.yaml")
	if err := os.WriteFile(path, []byte(b.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// daemon is a `regiond run` process that the test starts, kills and restarts.
type daemon struct {
	t    *testing.T
	bin  string
	args []string
	env  []string // added to the environment, e.g. NOTIFY_SOCKET=...
	log  *os.File
	cmd  *exec.Cmd
	done chan error
}

func newDaemon(t *testing.T, args ...string) *daemon {
	t.Helper()
	log, err := os.Create(filepath.Join(t.TempDir(), "regiond.log"))
	if err != nil {
		t.Fatal(err)
	}
	d := &daemon{t: t, bin: regiondBinary(t), args: args, log: log}
	t.Cleanup(func() {
		d.kill()
		if t.Failed() || os.Getenv("REGIOND_TEST_LOG") != "" {
			d.dumpLog()
		}
		log.Close()
	})
	return d
}

func (d *daemon) start() {
	d.t.Helper()
	fmt.Fprintf(d.log, "=== start %s\n", time.Now().Format(time.RFC3339Nano))
	d.cmd = exec.Command(d.bin, d.args...)
	if len(d.env) > 0 {
		d.cmd.Env = append(os.Environ(), d.env...)
	}
	d.cmd.Stdout = d.log
	d.cmd.Stderr = d.log
	if err := d.cmd.Start(); err != nil {
		d.t.Fatal(err)
	}
	d.done = make(chan error, 1)
	go func(c *exec.Cmd, done chan error) { done <- c.Wait() }(d.cmd, d.done)
}

// kill sends SIGKILL and waits for the process to be gone.
func (d *daemon) kill() {
	if d.cmd == nil {
		return
	}
	_ = d.cmd.Process.Signal(syscall.SIGKILL)
	<-d.done
	fmt.Fprintf(d.log, "=== killed %s\n", time.Now().Format(time.RFC3339Nano))
	d.cmd = nil
}

// term sends SIGTERM and returns how long the process took to exit and its
// exit code.
func (d *daemon) term(timeout time.Duration) (time.Duration, int) {
	d.t.Helper()
	start := time.Now()
	_ = d.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-d.done:
	case <-time.After(timeout):
		d.kill()
		d.t.Fatalf("regiond did not exit within %v of SIGTERM", timeout)
	}
	code := d.cmd.ProcessState.ExitCode()
	d.cmd = nil
	return time.Since(start), code
}

func (d *daemon) dumpLog() {
	b, err := os.ReadFile(d.log.Name())
	if err != nil {
		return
	}
	if len(b) > 20000 && os.Getenv("REGIOND_TEST_LOG") == "" {
		b = append([]byte("...\n"), b[len(b)-20000:]...)
	}
	d.t.Logf("regiond log:\n%s", bytes.TrimSpace(b))
}

// mariaRegions starts a MariaDB region per name (server ids 1, 2, ...) and
// runs ddl in each.
func mariaRegions(t *testing.T, names []string, ddl ...string) []*region {
	t.Helper()
	rs := make([]*region, len(names))
	for i, n := range names {
		rs[i] = &region{name: n, srv: testenv.MariaDB(t, i+1)}
		rs[i].db = dbtest.Open(t, rs[i].srv)
		dbtest.Exec(t, rs[i].db, ddl...)
	}
	return rs
}

// waitMesh waits until every pipeline between the regions stored its start
// position: from then on every write replicates.
func waitMesh(t *testing.T, rs ...*region) {
	t.Helper()
	for _, dst := range rs {
		for _, src := range rs {
			if src != dst {
				dbtest.WaitCheckpoint(t, dst.db, src.name+"->"+dst.name)
			}
		}
	}
}

// assertNoRemoteConflicts fails when any region recorded an apply_remote
// conflict: with one writer per key there is none, so any record is a
// false alarm (a row read back from a target that does not compare equal
// to the log image of the same stored row).
func assertNoRemoteConflicts(t *testing.T, rs ...*region) {
	t.Helper()
	for _, r := range rs {
		rows, err := r.db.Query("SELECT table_name, pk, reason, COALESCE(kept_image, ''), COALESCE(lost_image, '') FROM regiond_conflicts WHERE rule = 'apply_remote' ORDER BY id")
		if err != nil {
			t.Fatalf("%s: read regiond_conflicts: %v", r.name, err)
		}
		n := 0
		for rows.Next() {
			var table, pk, reason, kept, lost string
			if err := rows.Scan(&table, &pk, &reason, &kept, &lost); err != nil {
				t.Fatal(err)
			}
			if n < 5 {
				t.Errorf("%s: false apply_remote conflict on %s %s: %s\n  incoming: %s\n  target:   %s", r.name, table, pk, reason, kept, lost)
			}
			n++
		}
		rows.Close()
		if n > 0 {
			t.Errorf("%s: %d apply_remote conflicts recorded, want 0 (one writer per key)", r.name, n)
		}
	}
}
