package e2e

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/regiond/regiond/internal/dbtest"
)

// freeAddr returns a 127.0.0.1 address with a port free right now.
func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// notifySocket is a unixgram socket standing in for systemd's
// NOTIFY_SOCKET; it collects every message sent to it.
type notifySocket struct {
	path string
	mu   sync.Mutex
	msgs []string
}

func newNotifySocket(t *testing.T) *notifySocket {
	t.Helper()
	ns := &notifySocket{path: filepath.Join(t.TempDir(), "notify.sock")}
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: ns.path, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	go func() {
		buf := make([]byte, 4096)
		for {
			n, err := conn.Read(buf)
			if err != nil {
				return
			}
			ns.mu.Lock()
			ns.msgs = append(ns.msgs, string(buf[:n]))
			ns.mu.Unlock()
		}
	}()
	return ns
}

// count returns how many messages carried the line want (e.g. "READY=1").
func (ns *notifySocket) count(want string) int {
	ns.mu.Lock()
	defer ns.mu.Unlock()
	n := 0
	for _, m := range ns.msgs {
		for _, l := range strings.Split(m, "\n") {
			if l == want {
				n++
			}
		}
	}
	return n
}

func (ns *notifySocket) all() string {
	ns.mu.Lock()
	defer ns.mu.Unlock()
	return strings.Join(ns.msgs, " | ")
}

func waitFor(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// httpGet returns the status code and body of GET http://addr/path.
func httpGet(addr, path string) (int, string, error) {
	c := http.Client{Timeout: 5 * time.Second}
	resp, err := c.Get("http://" + addr + path)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), err
}

// scrape returns every sample of /metrics as "name{labels}" -> value.
func scrape(t *testing.T, addr string) map[string]float64 {
	t.Helper()
	code, body, err := httpGet(addr, "/metrics")
	if err != nil || code != 200 {
		t.Fatalf("GET /metrics: %d %v", code, err)
	}
	out := map[string]float64{}
	sc := bufio.NewScanner(strings.NewReader(body))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err != nil {
			t.Fatalf("metrics line %q: %v", line, err)
		}
		out[line[:i]] = v
	}
	return out
}

// TestDaemonLifecycle runs `regiond run` as systemd would, with metrics:
// READY=1 and watchdog pings on NOTIFY_SOCKET, plausible metrics during a
// workload, /healthz 503 while a region's server is down and 200 after it
// returns, `regiond status`, and SIGTERM mid-workload: exit 0 within 5 s,
// STOPPING=1, and after a restart nothing lost and nothing applied twice.
func TestDaemonLifecycle(t *testing.T) {
	rs := mariaRegions(t, []string{"east", "west"}, itemsTable, txlogTable)
	east, west := rs[0], rs[1]
	dbtest.Exec(t, west.db, txlogCounter, "INSERT INTO txlog_attempts VALUES (0)", txlogTrigger)
	addr := freeAddr(t)
	cfg := writeConfig(t, []*region{east, west}, []string{"items", "txlog"}, "metrics_addr: "+addr+"\n")
	ns := newNotifySocket(t)
	d := newDaemon(t, "run", "--config", cfg)
	d.env = []string{"NOTIFY_SOCKET=" + ns.path, "WATCHDOG_USEC=2000000"}
	d.start()

	waitFor(t, 90*time.Second, "READY=1 on NOTIFY_SOCKET", func() bool { return ns.count("READY=1") == 1 })
	waitMesh(t, east, west)
	waitFor(t, 30*time.Second, "WATCHDOG=1", func() bool { return ns.count("WATCHDOG=1") >= 2 })
	if code, body, err := httpGet(addr, "/healthz"); err != nil || code != 200 {
		t.Fatalf("/healthz after READY: %d %q %v", code, body, err)
	}

	// A workload, scraped while it runs.
	var (
		txns, rowOps atomic.Int64
		wg           sync.WaitGroup
	)
	seed := uint64(time.Now().UnixNano())
	t.Logf("workload seed %d", seed)
	runWorkload := func(ctx context.Context, worker, n int) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := workload(ctx, east.db, worker, n, seed+uint64(worker), &rowOps, &txns); err != nil && ctx.Err() == nil {
				t.Errorf("workload: %v", err)
			}
		}()
	}
	runWorkload(t.Context(), 0, 600)
	inserted := `regiond_changes_applied_total{op="insert",pipeline="east->west",table="items"}`
	var m1 map[string]float64
	waitFor(t, time.Minute, "changes applied during the workload", func() bool {
		m1 = scrape(t, addr)
		return m1[inserted] > 50
	})
	time.Sleep(time.Second)
	m2 := scrape(t, addr)
	wg.Wait()
	if v, ok := m2[`regiond_source_position_lag_bytes{pipeline="east->west"}`]; ok && (v < 0 || v > 1<<30) {
		t.Errorf("source log lag %v bytes during the workload: implausible", v)
	}
	for name, check := range map[string]func(float64) bool{
		inserted: func(v float64) bool { return v >= m1[inserted] },
		`regiond_changes_applied_total{op="insert",pipeline="east->west",table="txlog"}`: func(v float64) bool { return v > 0 },
		`regiond_batches_total{pipeline="east->west"}`:                                   func(v float64) bool { return v > 0 },
		`regiond_apply_duration_seconds_count{pipeline="east->west"}`:                    func(v float64) bool { return v > 0 && v == m2[`regiond_batches_total{pipeline="east->west"}`] },
		`regiond_apply_duration_seconds_sum{pipeline="east->west"}`:                      func(v float64) bool { return v > 0 && v < 600 },
		`regiond_replication_lag_seconds{pipeline="east->west"}`:                         func(v float64) bool { return v >= 0 && v < 120 },
		`regiond_pipeline_up{pipeline="east->west"}`:                                     func(v float64) bool { return v == 1 },
		`regiond_pipeline_up{pipeline="west->east"}`:                                     func(v float64) bool { return v == 1 },
		`regiond_pipeline_leader{pipeline="east->west"}`:                                 func(v float64) bool { return v == 1 },
	} {
		v, ok := m2[name]
		if !ok || !check(v) {
			t.Errorf("metric %s = %v (present %v): implausible", name, v, ok)
		}
	}
	for name := range m2 {
		if strings.HasPrefix(name, `regiond_changes_applied_total{`) && strings.Contains(name, `pipeline="west->east"`) {
			t.Errorf("%s: west had no writes of its own, so nothing should apply west->east", name)
		}
	}
	t.Logf("during the workload: %v items inserted east->west, %v batches, lag %vs, source log lag %v bytes", m2[inserted],
		m2[`regiond_batches_total{pipeline="east->west"}`], m2[`regiond_replication_lag_seconds{pipeline="east->west"}`],
		m2[`regiond_source_position_lag_bytes{pipeline="east->west"}`])
	dbtest.WaitEqual(t, 2*time.Minute, "items", []string{"east", "west"}, east.db, west.db)

	// regiond status reads the checkpoints and the daemon.
	out, err := exec.Command(d.bin, "status", "--config", cfg, "--format", "json").Output()
	if err != nil {
		t.Fatalf("regiond status: %v\n%s", err, out)
	}
	var rep struct {
		Daemons   []string
		Pipelines []struct {
			Pipeline, Position, State string
			Leader                    *bool
			LagSeconds                *float64 `json:"lag_seconds"`
		}
	}
	if err := json.Unmarshal(out, &rep); err != nil {
		t.Fatalf("status JSON: %v\n%s", err, out)
	}
	if len(rep.Daemons) != 1 || len(rep.Pipelines) != 2 {
		t.Fatalf("status: %s", out)
	}
	for _, p := range rep.Pipelines {
		if p.Position == "" || p.State != "streaming" || p.Leader == nil || !*p.Leader || p.LagSeconds == nil {
			t.Errorf("status of %s: %+v", p.Pipeline, p)
		}
	}
	if text, err := exec.Command(d.bin, "status", "--config", cfg).Output(); err != nil || !strings.Contains(string(text), "east->west") {
		t.Errorf("regiond status (text): %v\n%s", err, text)
	} else {
		t.Logf("regiond status:\n%s", text)
	}

	// Caught up: the source log lag in bytes (sampled every 10 s) drops to 0.
	lagBytes := `regiond_source_position_lag_bytes{pipeline="east->west"}`
	waitFor(t, time.Minute, "regiond_source_position_lag_bytes 0 once caught up", func() bool {
		v, ok := scrape(t, addr)[lagBytes]
		return ok && v == 0
	})

	// West's server goes down: /healthz says which pipelines fail; it comes
	// back: /healthz is 200 again.
	if err := west.srv.Stop(); err != nil {
		t.Fatal(err)
	}
	var body string
	waitFor(t, 2*time.Minute, "/healthz 503 with west down", func() bool {
		code, b, err := httpGet(addr, "/healthz")
		body = b
		return err == nil && code == 503 && strings.Contains(b, "west->east")
	})
	t.Logf("/healthz with west down: %s", strings.TrimSpace(body))
	if err := west.srv.Restart(t.Context()); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 3*time.Minute, "/healthz 200 after west returned", func() bool {
		code, _, err := httpGet(addr, "/healthz")
		return err == nil && code == 200
	})

	// SIGHUP: log_level applies at once; another change is reported as
	// needing a restart; an invalid file is ignored.
	orig, err := os.ReadFile(cfg)
	if err != nil {
		t.Fatal(err)
	}
	logHas := func(what string) func() bool {
		return func() bool {
			b, _ := os.ReadFile(d.log.Name())
			return strings.Contains(string(b), what)
		}
	}
	hup := func(content string) {
		t.Helper()
		if err := os.WriteFile(cfg, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := d.cmd.Process.Signal(syscall.SIGHUP); err != nil {
			t.Fatal(err)
		}
	}
	hup(string(orig) + "log_level: debug\n")
	waitFor(t, 30*time.Second, "log level change on SIGHUP", logHas(`"msg":"SIGHUP: log level changed","from":"INFO","to":"DEBUG"`))
	hup(string(orig) + "log_level: debug\nstate_dir: " + t.TempDir() + "\n")
	waitFor(t, 30*time.Second, "restart-needed warning on SIGHUP", logHas(`"changed":"state_dir"`))
	hup(string(orig) + "log_level: loud\n")
	waitFor(t, 30*time.Second, "invalid config ignored on SIGHUP", logHas(`SIGHUP: the config file is invalid; keeping the running config`))
	hup(string(orig))
	waitFor(t, 30*time.Second, "log level back to info", logHas(`"to":"INFO"`))
	if code, _, err := httpGet(addr, "/healthz"); err != nil || code != 200 {
		t.Fatalf("/healthz after SIGHUPs: %d %v", code, err)
	}

	// SIGTERM mid-workload: exit 0 within 5 s, STOPPING=1.
	ctx, cancel := context.WithCancel(t.Context())
	runWorkload(ctx, 1, 100000)
	waitFor(t, time.Minute, "the second workload to run", func() bool { return txns.Load() > 700 })
	took, code := d.term(5 * time.Second)
	if code != 0 {
		t.Fatalf("exit code %d after SIGTERM, want 0", code)
	}
	t.Logf("SIGTERM mid-workload: exited 0 in %v", took.Round(time.Millisecond))
	if ns.count("STOPPING=1") != 1 {
		t.Errorf("no STOPPING=1 on NOTIFY_SOCKET; got %s", ns.all())
	}
	time.Sleep(time.Second)
	cancel()
	wg.Wait()

	// Nothing lost, nothing applied twice.
	d.start()
	assertAppliedOnce(t, east, west, txns.Load())
	t.Logf("%d transactions, %d row changes: all applied once", txns.Load(), rowOps.Load())
}
