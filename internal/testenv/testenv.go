// Package testenv starts private, throwaway database servers for regiond's
// tests and benchmarks.
//
// Each server is a MariaDB 10.11 or PostgreSQL 15 instance that lives entirely
// in its own directory (by default a fresh one under os.TempDir()) and listens
// on a free TCP port on 127.0.0.1, so any number of test processes can run at
// once and the system servers on 3306 and 5432 are never touched. The servers
// are managed by scripts/testdb.sh at the repository root, which this package
// wraps; the script documents the exact server settings (MariaDB: ROW binlog
// with FULL row image and metadata, GTID strict mode; PostgreSQL:
// wal_level=logical). A new server has an empty database named "app"; root
// (MariaDB, empty password) and postgres (PostgreSQL, trust) can log in from
// 127.0.0.1. A new MariaDB server's binlog holds no transactions.
//
// The core API takes a context and returns errors, so a benchmark command can
// use it; MariaDB and Postgres are the helpers for tests.
//
// Servers run detached from the calling process: a test binary that is killed
// before its cleanup runs leaves them running. Stop them with
// "scripts/testdb.sh stop DIR".
package testenv

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/regiond/regiond/scripts"
)

// Engine names, as used in Server.Engine and in regiond's DSN schemes.
const (
	EngineMySQL    = "mysql"
	EnginePostgres = "postgres"
)

const (
	// helperStartTimeout bounds a start in the test helpers. It is generous
	// because the first start may install mariadb-server (~20 s).
	helperStartTimeout = 3 * time.Minute
	// stopTimeout bounds Stop, Kill and Destroy; the script itself waits at
	// most 30 s for a clean shutdown before it sends SIGKILL.
	stopTimeout = 2 * time.Minute
	// maxErrOutput is how much of the script's stderr an error carries.
	maxErrOutput = 4096
)

// Server is a private database server started by this package.
type Server struct {
	Engine   string // EngineMySQL ("mysql", a MariaDB server) or EnginePostgres ("postgres")
	Dir      string // directory holding the server's data, socket, logs and port file
	Port     int    // TCP port on 127.0.0.1
	ServerID int    // MariaDB only: the server_id it runs with
}

// StartMariaDB starts a MariaDB server with the given server_id (0 means 1)
// in dir, running "scripts/testdb.sh start-mariadb dir serverID". If dir is
// empty, a new directory is created under os.TempDir(). If dir already holds a
// stopped server's data, that server is started again on its previous port.
// Extra mariadbd flags can be passed in the MARIADB_EXTRA_ARGS environment
// variable (space separated).
func StartMariaDB(ctx context.Context, dir string, serverID int) (*Server, error) {
	if serverID < 0 {
		return nil, fmt.Errorf("testenv: invalid MariaDB server id %d", serverID)
	}
	if serverID == 0 {
		serverID = 1
	}
	dir, err := prepareDir(dir, "regiond-mariadb-")
	if err != nil {
		return nil, err
	}
	s := &Server{Engine: EngineMySQL, Dir: dir, ServerID: serverID}
	if err := s.start(ctx); err != nil {
		return nil, err
	}
	return s, nil
}

// StartPostgres starts a PostgreSQL 15 server in dir, running
// "scripts/testdb.sh start-postgres dir". If dir is empty, a new directory is
// created under os.TempDir(). The script hands dir to the postgres OS user
// (mode 0700), so dir's parents must be searchable by that user. If dir
// already holds a stopped server's data, that server is started again on its
// previous port.
func StartPostgres(ctx context.Context, dir string) (*Server, error) {
	dir, err := prepareDir(dir, "regiond-postgres-")
	if err != nil {
		return nil, err
	}
	s := &Server{Engine: EnginePostgres, Dir: dir}
	if err := s.start(ctx); err != nil {
		return nil, err
	}
	return s, nil
}

// Stop shuts the server down cleanly and keeps its data, so Restart can start
// it again. Stopping a server that is not running succeeds.
func (s *Server) Stop() error {
	ctx, cancel := context.WithTimeout(context.Background(), stopTimeout)
	defer cancel()
	_, err := runScript(ctx, "stop", s.Dir)
	return err
}

// Kill sends SIGKILL to the server (for PostgreSQL, to the postmaster and all
// its children), simulating a crash; Restart then runs crash recovery. Killing
// a server that is not running succeeds.
func (s *Server) Kill() error {
	ctx, cancel := context.WithTimeout(context.Background(), stopTimeout)
	defer cancel()
	_, err := runScript(ctx, "kill", s.Dir)
	return err
}

// Restart starts a stopped or killed server again on the same directory,
// data and port. It fails if the server is still running.
func (s *Server) Restart(ctx context.Context) error {
	return s.start(ctx)
}

// Destroy stops the server (killing it if a clean stop fails) and removes Dir.
// Destroying a destroyed server succeeds.
func (s *Server) Destroy() error {
	if err := s.Stop(); err != nil {
		if kerr := s.Kill(); kerr != nil {
			return errors.Join(err, kerr)
		}
	}
	if err := os.RemoveAll(s.Dir); err != nil {
		return fmt.Errorf("testenv: removing %s: %w", s.Dir, err)
	}
	return nil
}

// Addr returns the server's TCP address, "127.0.0.1:PORT".
func (s *Server) Addr() string {
	return net.JoinHostPort("127.0.0.1", strconv.Itoa(s.Port))
}

// URL returns a DSN for database db in regiond's configuration form:
// "mysql://root@127.0.0.1:PORT/db" or
// "postgres://postgres@127.0.0.1:PORT/db?sslmode=disable".
func (s *Server) URL(db string) string {
	if s.Engine == EnginePostgres {
		return fmt.Sprintf("postgres://postgres@%s/%s?sslmode=disable", s.Addr(), db)
	}
	return fmt.Sprintf("mysql://root@%s/%s", s.Addr(), db)
}

// DriverDSN returns a connection string for database db in the form the Go
// drivers take. For MariaDB it is a github.com/go-sql-driver/mysql DSN,
// "root@tcp(127.0.0.1:PORT)/db?multiStatements=true&interpolateParams=true".
// For PostgreSQL it is a URL that pgx (and psql) accept, equal to URL(db);
// append "&replication=database" for a logical replication connection.
func (s *Server) DriverDSN(db string) string {
	if s.Engine == EnginePostgres {
		return s.URL(db)
	}
	return fmt.Sprintf("root@tcp(%s)/%s?multiStatements=true&interpolateParams=true", s.Addr(), db)
}

// MariaDB starts a MariaDB server with the given server_id (0 means 1) in a
// new directory under os.TempDir() and registers a cleanup that destroys it.
// It fails the test, with a hint on how to start the server by hand, if the
// server does not start.
func MariaDB(t testing.TB, serverID int) *Server {
	t.Helper()
	if serverID == 0 {
		serverID = 1
	}
	return startForTest(t, "regiond-mariadb-", func(ctx context.Context, dir string) (*Server, error) {
		return StartMariaDB(ctx, dir, serverID)
	}, func(dir string) string {
		return fmt.Sprintf("is mariadb-server installed? run: apt-get install -y mariadb-server\n"+
			"to start the server by hand: scripts/testdb.sh start-mariadb %s %d (logs in %s/error.log; stop with: scripts/testdb.sh stop %s)",
			dir, serverID, dir, dir)
	})
}

// Postgres starts a PostgreSQL server in a new directory under os.TempDir()
// and registers a cleanup that destroys it. It fails the test, with a hint on
// how to start the server by hand, if the server does not start.
func Postgres(t testing.TB) *Server {
	t.Helper()
	return startForTest(t, "regiond-postgres-", func(ctx context.Context, dir string) (*Server, error) {
		return StartPostgres(ctx, dir)
	}, func(dir string) string {
		return fmt.Sprintf("is PostgreSQL 15 installed? run: apt-get install -y postgresql-15\n"+
			"to start the server by hand: scripts/testdb.sh start-postgres %s (logs in %s/server.log; stop with: scripts/testdb.sh stop %s)",
			dir, dir, dir)
	})
}

// startForTest is the body of the test helpers. The directory is made here,
// not by t.TempDir: the server (and, for PostgreSQL, the postgres OS user who
// owns the files) must be gone before the directory is removed, which Destroy
// guarantees. On failure the directory is kept for its logs.
func startForTest(t testing.TB, pattern string, start func(context.Context, string) (*Server, error), hint func(dir string) string) *Server {
	t.Helper()
	dir, err := os.MkdirTemp("", pattern)
	if err != nil {
		t.Fatalf("testenv: creating a server directory: %v", err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), helperStartTimeout)
	defer cancel()
	s, err := start(ctx, dir)
	if err != nil {
		t.Fatalf("%v\n%s", err, hint(dir))
	}
	t.Cleanup(func() {
		if err := s.Destroy(); err != nil {
			t.Errorf("testenv: destroying the %s server in %s: %v", s.Engine, s.Dir, err)
		}
	})
	return s
}

// start runs the script's start command for s and records the port. If ctx
// ends mid-start, whatever the script had launched is killed.
func (s *Server) start(ctx context.Context) error {
	args := []string{"start-postgres", s.Dir}
	if s.Engine == EngineMySQL {
		args = []string{"start-mariadb", s.Dir, strconv.Itoa(s.ServerID)}
	}
	out, err := runScript(ctx, args...)
	if err != nil {
		if ctx.Err() != nil {
			_ = s.Kill() // best effort; the start's error says what happened
		}
		return err
	}
	port, err := parsePort(out)
	if err != nil {
		return fmt.Errorf("testenv: scripts/testdb.sh %s: %w", strings.Join(args, " "), err)
	}
	if s.Port != 0 && port != s.Port {
		return fmt.Errorf("testenv: the server in %s came back on port %d, not %d", s.Dir, port, s.Port)
	}
	s.Port = port
	return nil
}

// parsePort finds the "PORT=<port>" line in the script's output.
func parsePort(out []byte) (int, error) {
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		v, ok := strings.CutPrefix(strings.TrimSpace(sc.Text()), "PORT=")
		if !ok {
			continue
		}
		port, err := strconv.Atoi(v)
		if err != nil || port <= 0 || port > 65535 {
			return 0, fmt.Errorf("bad port line %q", sc.Text())
		}
		return port, nil
	}
	return 0, fmt.Errorf("no PORT= line in output %q", out)
}

// runScript runs scripts/testdb.sh with args and returns its stdout. The
// script runs in its own process group so that cancelling ctx also stops the
// commands it is waiting on; the servers it starts detach into their own
// sessions and are not affected.
func runScript(ctx context.Context, args ...string) ([]byte, error) {
	script, done, err := scriptPath()
	if err != nil {
		return nil, err
	}
	defer done()
	cmd := exec.CommandContext(ctx, "bash", append([]string{script}, args...)...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = 5 * time.Second
	if err := cmd.Run(); err != nil {
		if ctxErr := ctx.Err(); ctxErr != nil {
			err = fmt.Errorf("%w (%w)", ctxErr, err)
		}
		return nil, fmt.Errorf("testenv: scripts/testdb.sh %s failed: %w%s",
			strings.Join(args, " "), err, formatStderr(stderr.Bytes()))
	}
	return stdout.Bytes(), nil
}

// scriptPath returns scripts/testdb.sh of the checkout the working directory
// is in, or, outside a checkout (an installed regiond running `demo`), a
// temporary copy of the script embedded in the binary; done removes that
// copy once the script has run.
func scriptPath() (path string, done func(), err error) {
	if root, err := RepoRoot(); err == nil {
		p := filepath.Join(root, "scripts", "testdb.sh")
		if _, err := os.Stat(p); err == nil {
			return p, func() {}, nil
		}
	}
	f, err := os.CreateTemp("", "regiond-testdb-*.sh")
	if err != nil {
		return "", nil, fmt.Errorf("testenv: writing the embedded testdb.sh: %w", err)
	}
	done = func() { os.Remove(f.Name()) }
	_, err = f.Write(scripts.TestDB)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		done()
		return "", nil, fmt.Errorf("testenv: writing the embedded testdb.sh: %w", err)
	}
	return f.Name(), done, nil
}

// formatStderr returns the tail of the script's stderr for an error message.
func formatStderr(b []byte) string {
	b = bytes.TrimSpace(b)
	if len(b) == 0 {
		return ""
	}
	if len(b) > maxErrOutput {
		b = b[len(b)-maxErrOutput:]
		if i := bytes.IndexByte(b, '\n'); i >= 0 {
			b = b[i+1:]
		}
		return "; stderr (tail):\n" + string(b)
	}
	return "; stderr:\n" + string(b)
}

// prepareDir returns dir as an absolute path, creating it with mode 0700; an
// empty dir means a new directory under os.TempDir() named after pattern.
func prepareDir(dir, pattern string) (string, error) {
	if dir == "" {
		d, err := os.MkdirTemp("", pattern)
		if err != nil {
			return "", fmt.Errorf("testenv: creating a server directory: %w", err)
		}
		return d, nil
	}
	abs, err := filepath.Abs(dir)
	if err != nil {
		return "", fmt.Errorf("testenv: %w", err)
	}
	if err := os.MkdirAll(abs, 0o700); err != nil {
		return "", fmt.Errorf("testenv: creating %s: %w", abs, err)
	}
	return abs, nil
}

// RepoRoot returns the repository root: the nearest directory at or above the
// working directory that holds a go.mod file. It lets the script be found from
// any package's test, since go test runs each test in its package directory.
func RepoRoot() (string, error) {
	wd, err := os.Getwd()
	if err != nil {
		return "", fmt.Errorf("testenv: %w", err)
	}
	for dir := wd; ; {
		if fi, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil && !fi.IsDir() {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", fmt.Errorf("testenv: no go.mod in %s or any parent directory", wd)
		}
		dir = parent
	}
}
