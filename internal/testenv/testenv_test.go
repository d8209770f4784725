package testenv_test

import (
	"context"
	"database/sql"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	_ "github.com/go-sql-driver/mysql"

	"github.com/regiond/regiond/internal/testenv"
)

func TestRepoRoot(t *testing.T) {
	root, err := testenv.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{"go.mod", "scripts/testdb.sh"} {
		if _, err := os.Stat(filepath.Join(root, f)); err != nil {
			t.Errorf("RepoRoot() = %s, which has no %s: %v", root, f, err)
		}
	}
}

func TestDSNs(t *testing.T) {
	my := &testenv.Server{Engine: testenv.EngineMySQL, Port: 33061, ServerID: 1}
	pg := &testenv.Server{Engine: testenv.EnginePostgres, Port: 54321}
	for _, c := range []struct{ got, want string }{
		{my.URL("app"), "mysql://root@127.0.0.1:33061/app"},
		{my.DriverDSN("app"), "root@tcp(127.0.0.1:33061)/app?multiStatements=true&interpolateParams=true"},
		{pg.URL("app"), "postgres://postgres@127.0.0.1:54321/app?sslmode=disable"},
		{pg.DriverDSN("app"), "postgres://postgres@127.0.0.1:54321/app?sslmode=disable"},
	} {
		if c.got != c.want {
			t.Errorf("got %q, want %q", c.got, c.want)
		}
	}
}

func TestStopKillWithoutServer(t *testing.T) {
	s := &testenv.Server{Engine: testenv.EngineMySQL, Dir: filepath.Join(t.TempDir(), "none")}
	if err := s.Stop(); err != nil {
		t.Errorf("Stop: %v", err)
	}
	if err := s.Kill(); err != nil {
		t.Errorf("Kill: %v", err)
	}
	if err := s.Destroy(); err != nil {
		t.Errorf("Destroy: %v", err)
	}
}

func TestMariaDB(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()

	start := time.Now()
	s := testenv.MariaDB(t, 7)
	t.Logf("MariaDB started in %v on port %d in %s", time.Since(start).Round(time.Millisecond), s.Port, s.Dir)
	if s.Engine != testenv.EngineMySQL || s.ServerID != 7 || s.Port <= 0 {
		t.Fatalf("unexpected server %+v", s)
	}
	if b, err := os.ReadFile(filepath.Join(s.Dir, "port")); err != nil || strings.TrimSpace(string(b)) != fmt.Sprint(s.Port) {
		t.Errorf("port file: %q, %v; want %d", b, err, s.Port)
	}

	db := openMySQL(t, s)
	var (
		logBin                int
		format, meta, binlog  string
		serverID, strictGTIDs int
	)
	err := db.QueryRowContext(ctx, "SELECT @@log_bin, @@binlog_format, @@binlog_row_metadata, @@server_id, @@gtid_strict_mode, @@gtid_binlog_pos").
		Scan(&logBin, &format, &meta, &serverID, &strictGTIDs, &binlog)
	if err != nil {
		t.Fatal(err)
	}
	if logBin != 1 || format != "ROW" || meta != "FULL" || serverID != 7 || strictGTIDs != 1 {
		t.Errorf("log_bin, binlog_format, binlog_row_metadata, server_id, gtid_strict_mode = %d, %s, %s, %d, %d; want 1, ROW, FULL, 7, 1",
			logBin, format, meta, serverID, strictGTIDs)
	}
	if binlog != "" {
		t.Errorf("a new server's gtid_binlog_pos = %q, want empty (setup must not be binlogged)", binlog)
	}

	// multiStatements and interpolateParams together: the ? is filled in by
	// the client, so it may appear in a later statement.
	_, err = db.ExecContext(ctx, "CREATE TABLE kv (k INT PRIMARY KEY, v VARCHAR(20)); INSERT INTO kv VALUES (1, ?)", "before-kill")
	if err != nil {
		t.Fatal(err)
	}
	if err := db.QueryRowContext(ctx, "SELECT @@gtid_binlog_pos").Scan(&binlog); err != nil {
		t.Fatal(err)
	}
	if binlog == "" {
		t.Fatal("gtid_binlog_pos is empty after two binlogged statements")
	}
	db.Close()

	port := s.Port
	if err := s.Kill(); err != nil {
		t.Fatal(err)
	}
	if c, err := net.DialTimeout("tcp", s.Addr(), time.Second); err == nil {
		c.Close()
		t.Fatalf("%s still accepts connections after Kill", s.Addr())
	}
	if err := s.Kill(); err != nil {
		t.Errorf("second Kill: %v", err)
	}

	start = time.Now()
	if err := s.Restart(ctx); err != nil {
		t.Fatal(err)
	}
	t.Logf("MariaDB restarted after SIGKILL in %v", time.Since(start).Round(time.Millisecond))
	if s.Port != port {
		t.Errorf("restarted on port %d, want %d", s.Port, port)
	}
	db = openMySQL(t, s)
	var v, binlogAfter string
	if err := db.QueryRowContext(ctx, "SELECT v FROM kv WHERE k = 1").Scan(&v); err != nil || v != "before-kill" {
		t.Errorf("after restart: v = %q, %v; want before-kill", v, err)
	}
	if err := db.QueryRowContext(ctx, "SELECT @@gtid_binlog_pos").Scan(&binlogAfter); err != nil || binlogAfter != binlog {
		t.Errorf("after restart: gtid_binlog_pos = %q, %v; want %q", binlogAfter, err, binlog)
	}
	db.Close()

	if err := s.Restart(ctx); err == nil {
		t.Error("Restart of a running server succeeded, want an error")
	}

	if err := s.Destroy(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(s.Dir); !os.IsNotExist(err) {
		t.Errorf("Dir %s still exists after Destroy: %v", s.Dir, err)
	}
	if c, err := net.DialTimeout("tcp", s.Addr(), time.Second); err == nil {
		c.Close()
		t.Errorf("%s still accepts connections after Destroy", s.Addr())
	}
	// The cleanup registered by MariaDB destroys it again, which must succeed.
}

func TestPostgres(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()

	start := time.Now()
	s := testenv.Postgres(t)
	t.Logf("PostgreSQL started in %v on port %d in %s", time.Since(start).Round(time.Millisecond), s.Port, s.Dir)
	if s.Engine != testenv.EnginePostgres || s.Port <= 0 {
		t.Fatalf("unexpected server %+v", s)
	}

	origPort := s.Port
	port := strconv.Itoa(origPort)
	psql := func(args ...string) (string, error) {
		cmd := exec.CommandContext(ctx, "psql", append([]string{"-X", "-A", "-t", "-v", "ON_ERROR_STOP=1"}, args...)...)
		cmd.Env = append(os.Environ(), "PGCONNECT_TIMEOUT=5")
		out, err := cmd.CombinedOutput()
		if err != nil {
			return "", fmt.Errorf("psql %s: %w: %s", strings.Join(args, " "), err, out)
		}
		return strings.TrimSpace(string(out)), nil
	}
	query := func(q string) string {
		t.Helper()
		out, err := psql("-h", "127.0.0.1", "-p", port, "-U", "postgres", "-d", "app", "-c", q)
		if err != nil {
			t.Fatal(err)
		}
		return out
	}

	if got := query("select 1"); got != "1" {
		t.Errorf("select 1 = %q", got)
	}
	if got := query("SHOW wal_level"); got != "logical" {
		t.Errorf("wal_level = %q, want logical", got)
	}
	// A logical replication connection, as pglogrepl makes, over TCP.
	if _, err := psql(s.DriverDSN("app")+"&replication=database", "-c", "IDENTIFY_SYSTEM"); err != nil {
		t.Errorf("replication connection: %v", err)
	}

	query("CREATE TABLE kv (k int PRIMARY KEY, v text); INSERT INTO kv VALUES (1, 'before-kill')")
	if err := s.Kill(); err != nil {
		t.Fatal(err)
	}
	if err := s.Restart(ctx); err != nil {
		t.Fatal(err)
	}
	if s.Port != origPort {
		t.Errorf("restarted on port %d, want %d", s.Port, origPort)
	}
	if got := query("SELECT v FROM kv WHERE k = 1"); got != "before-kill" {
		t.Errorf("after kill and restart: v = %q, want before-kill", got)
	}

	query("INSERT INTO kv VALUES (2, 'before-stop')")
	if err := s.Stop(); err != nil {
		t.Fatal(err)
	}
	if err := s.Stop(); err != nil {
		t.Errorf("second Stop: %v", err)
	}
	if err := s.Restart(ctx); err != nil {
		t.Fatal(err)
	}
	if got := query("SELECT count(*) FROM kv"); got != "2" {
		t.Errorf("after stop and restart: %s rows, want 2", got)
	}
}

func openMySQL(t *testing.T, s *testenv.Server) *sql.DB {
	t.Helper()
	db, err := sql.Open("mysql", s.DriverDSN("app"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	if err := db.PingContext(ctx); err != nil {
		t.Fatalf("connecting to %s: %v", s.DriverDSN("app"), err)
	}
	return db
}
