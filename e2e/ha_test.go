package e2e

import (
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/regiond/regiond/internal/dbtest"
)

// haMember is one of two `regiond run --region west` processes.
type haMember struct {
	name string
	d    *daemon
	addr string // its --metrics-addr
}

// leads reports whether the member's /status says it applies pipeline.
func (m *haMember) leads(pipeline string) (bool, error) {
	code, body, err := httpGet(m.addr, "/status")
	if err != nil {
		return false, err
	}
	if code != 200 {
		return false, fmt.Errorf("/status: %d", code)
	}
	var ds struct {
		Pipelines []struct {
			Pipeline string
			State    string
			Leader   bool
		}
	}
	if err := json.Unmarshal([]byte(body), &ds); err != nil {
		return false, err
	}
	for _, p := range ds.Pipelines {
		if p.Pipeline == pipeline {
			return p.Leader && p.State == "streaming", nil
		}
	}
	return false, fmt.Errorf("no pipeline %s in /status", pipeline)
}

// TestHAPair runs two processes for region west (and one for east) under a
// workload on east: exactly one west process applies east->west; the
// leader is SIGKILLed several times, and once paused (SIGSTOP) with its
// lease's session killed, so that the standby takes over while the old
// leader still holds a batch; resumed, the old leader must not commit
// (epoch fencing). Afterwards the regions are equal and no transaction was
// applied twice.
func TestHAPair(t *testing.T) {
	rs := mariaRegions(t, []string{"east", "west"}, itemsTable, txlogTable)
	east, west := rs[0], rs[1]
	dbtest.Exec(t, west.db, txlogCounter, "INSERT INTO txlog_attempts VALUES (0)", txlogTrigger)
	cfg := writeConfig(t, []*region{east, west}, []string{"items", "txlog"}, "")
	de := newDaemon(t, "run", "--config", cfg, "--region", "east")
	de.start()
	members := []*haMember{{name: "w1"}, {name: "w2"}}
	for _, m := range members {
		m.addr = freeAddr(t)
		m.d = newDaemon(t, "run", "--config", cfg, "--region", "west", "--metrics-addr", m.addr)
		m.d.start()
	}
	waitMesh(t, east, west)
	const pipe = "east->west"

	// leader waits until exactly one member applies and returns it.
	leader := func(timeout time.Duration) (*haMember, time.Duration) {
		t.Helper()
		start := time.Now()
		for {
			var leaders []*haMember
			for _, m := range members {
				if m.d.cmd == nil {
					continue
				}
				if ok, err := m.leads(pipe); err == nil && ok {
					leaders = append(leaders, m)
				}
			}
			if len(leaders) == 1 {
				return leaders[0], time.Since(start)
			}
			if len(leaders) > 1 {
				t.Fatalf("both west processes say they apply %s", pipe)
			}
			if time.Since(start) > timeout {
				t.Fatalf("no west process applies %s after %v", pipe, timeout)
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	first, _ := leader(time.Minute)
	t.Logf("%s applies first", first.name)

	seed := uint64(time.Now().UnixNano())
	t.Logf("workload seed %d", seed)
	var (
		txns, rowOps atomic.Int64
		wg           sync.WaitGroup
		running      atomic.Bool
	)
	running.Store(true)
	// The writers run until every takeover is done (however fast this
	// machine is), at most 100,000 transactions each.
	stop := make(chan struct{})
	for w := range 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := workloadUntil(t.Context(), stop, east.db, w, 100_000, seed+uint64(w), &rowOps, &txns); err != nil {
				t.Errorf("worker %d: %v", w, err)
			}
		}()
	}
	go func() { wg.Wait(); running.Store(false) }()

	rng := rand.New(rand.NewPCG(seed, 11))
	var takeovers []time.Duration
	for kill := 1; kill <= 3; kill++ {
		time.Sleep(time.Duration(300+rng.IntN(1200)) * time.Millisecond)
		old, _ := leader(2 * time.Minute)
		old.d.kill()
		killedAt := time.Now()
		next, _ := leader(2 * time.Minute)
		took := time.Since(killedAt)
		takeovers = append(takeovers, took)
		t.Logf("kill %d: SIGKILLed %s after %d transactions; %s streams as leader %v later", kill, old.name, txns.Load(), next.name, took.Round(time.Millisecond))
		old.d.start()
	}

	// Pause the leader and end its lease's session: the standby takes over
	// while the paused process may hold a batch; resumed, it must stand by
	// without committing.
	old, _ := leader(2 * time.Minute)
	if err := old.d.cmd.Process.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	// kill(2) returns before every thread has stopped: on a busy machine
	// the process once answered /status after it (CI).
	pid := old.d.cmd.Process.Pid
	waitFor(t, 10*time.Second, "the paused process to stop", func() bool { return stopped(pid) })
	var connID int64
	if err := west.db.QueryRow("SELECT IS_USED_LOCK('regiond:app:east->west')").Scan(&connID); err != nil {
		t.Fatalf("lease lock holder: %v", err)
	}
	dbtest.Exec(t, west.db, fmt.Sprintf("KILL CONNECTION %d", connID))
	pausedAt := time.Now()
	next, _ := leader(3 * time.Minute)
	if next == old {
		t.Fatal("the paused process still counts as leader")
	}
	t.Logf("paused %s (its lease session killed); %s took over %v later", old.name, next.name, time.Since(pausedAt).Round(time.Millisecond))
	time.Sleep(2 * time.Second)
	if err := old.d.cmd.Process.Signal(syscall.SIGCONT); err != nil {
		t.Fatal(err)
	}
	waitFor(t, time.Minute, "the resumed old leader to stand by", func() bool {
		ok, err := old.leads(pipe)
		return err == nil && !ok
	})

	if !running.Load() {
		t.Errorf("the workload ended before the last takeover: make it longer so that every takeover happens mid-workload")
	}
	time.Sleep(time.Second) // the new leader applies under load, too
	close(stop)
	wg.Wait()
	t.Logf("workload done: %d transactions, %d row changes", txns.Load(), rowOps.Load())
	assertAppliedOnce(t, east, west, txns.Load())
	final, _ := leader(time.Minute)
	var epoch int64
	if err := west.db.QueryRow("SELECT epoch FROM regiond_checkpoints WHERE pipeline = 'east->west'").Scan(&epoch); err != nil {
		t.Fatal(err)
	}
	if epoch < 5 {
		t.Errorf("epoch %d after 4 takeovers, want at least 5", epoch)
	}
	t.Logf("takeovers after SIGKILL: %v; %s leads at epoch %d", takeovers, final.name, epoch)
	for _, m := range append(members, &haMember{d: de}) {
		if _, code := m.d.term(5 * time.Second); code != 0 {
			t.Errorf("exit code %d after SIGTERM", code)
		}
	}
}

// stopped reports whether every thread of process pid is stopped by a
// signal (state T in /proc/<pid>/task/<tid>/stat, after the command name in
// parentheses).
func stopped(pid int) bool {
	dir := fmt.Sprintf("/proc/%d/task", pid)
	tasks, err := os.ReadDir(dir)
	if err != nil || len(tasks) == 0 {
		return false
	}
	for _, task := range tasks {
		b, err := os.ReadFile(dir + "/" + task.Name() + "/stat")
		if err != nil {
			return false
		}
		s := string(b)
		i := strings.LastIndexByte(s, ')')
		if i < 0 || i+2 >= len(s) || s[i+2] != 'T' {
			return false
		}
	}
	return true
}
