package main

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/coreos/go-systemd/v22/daemon"

	"github.com/regiond/regiond/pipeline"
)

// readyTimeout is how long `run` waits for every pipeline to stream before
// it tells systemd it is ready anyway: a region that is down must not keep
// the others' service from starting (its pipelines go on retrying).
const readyTimeout = 60 * time.Second

// notifier speaks systemd's sd_notify protocol on $NOTIFY_SOCKET (a no-op
// without it): READY=1 once every pipeline streams or stands by, WATCHDOG=1
// at half the watchdog interval while no pipeline is stuck, STATUS= with a
// short summary, STOPPING=1 on shutdown.
type notifier struct {
	set    []*pipeline.Pipeline
	logger *slog.Logger
	// watchdog is systemd's WatchdogSec (0: none).
	watchdog time.Duration
	// progress remembers, per pipeline, its last progress count and when
	// it changed.
	progress map[string]progressMark
	status   string
}

type progressMark struct {
	count uint64
	at    time.Time
}

func newNotifier(set []*pipeline.Pipeline, logger *slog.Logger) *notifier {
	wd, err := daemon.SdWatchdogEnabled(false)
	if err != nil {
		logger.Warn("ignoring systemd watchdog settings", "error", err)
		wd = 0
	}
	return &notifier{set: set, logger: logger, watchdog: wd, progress: map[string]progressMark{}}
}

func (n *notifier) notify(state string) {
	if _, err := daemon.SdNotify(false, state); err != nil {
		n.logger.Debug("sd_notify", "error", err)
	}
}

// run notifies systemd until ctx ends, then sends STOPPING=1.
func (n *notifier) run(ctx context.Context) {
	start := time.Now()
	tick := time.Second
	if n.watchdog > 0 {
		tick = min(tick, n.watchdog/2)
	}
	t := time.NewTicker(tick)
	defer t.Stop()
	ready := false
	lastPing := time.Time{}
	var stuckLogged bool
	for {
		now := time.Now()
		summary, allUp := n.summary()
		if !ready && (allUp || now.Sub(start) >= readyTimeout) {
			ready = true
			if !allUp {
				n.logger.Warn("ready although some pipelines do not stream yet (they go on retrying)", "status", summary)
			}
			n.notify("READY=1\nSTATUS=" + summary)
			n.status = summary
		} else if summary != n.status {
			n.notify("STATUS=" + summary)
			n.status = summary
		}
		if n.watchdog > 0 && now.Sub(lastPing) >= n.watchdog/2 {
			if stuck := n.stuck(now); len(stuck) == 0 {
				n.notify("WATCHDOG=1")
				lastPing = now
				stuckLogged = false
			} else if !stuckLogged {
				n.logger.Error("pipelines make no progress although transactions wait; not pinging the systemd watchdog, which will restart regiond",
					"stuck", strings.Join(stuck, ", "))
				stuckLogged = true
			}
		}
		select {
		case <-ctx.Done():
			n.notify("STOPPING=1\nSTATUS=stopping")
			return
		case <-t.C:
		}
	}
}

// summary is the STATUS= line: how many pipelines stream, and the others
// with their state. allUp reports that every pipeline streams or stands by.
func (n *notifier) summary() (string, bool) {
	streaming, standby := 0, 0
	var others []string
	for _, p := range n.set {
		s := p.Status()
		switch s.State {
		case pipeline.Streaming:
			streaming++
		case pipeline.Standby:
			standby++
		default:
			others = append(others, fmt.Sprintf("%s %s", s.Name, s.State))
		}
	}
	out := fmt.Sprintf("%d/%d pipelines streaming", streaming, len(n.set))
	if standby > 0 {
		out += fmt.Sprintf(", %d standing by", standby)
	}
	if len(others) > 0 {
		out += "; " + strings.Join(others, ", ")
	}
	return out, len(others) == 0
}

// stuck lists the pipelines that stream, have transactions waiting, and
// made no progress for a whole watchdog interval. A pipeline that retries
// or waits for a region is not stuck: restarting regiond would not help it.
func (n *notifier) stuck(now time.Time) []string {
	var out []string
	for _, p := range n.set {
		s := p.Status()
		m, ok := n.progress[s.Name]
		if !ok || m.count != s.Progress {
			n.progress[s.Name] = progressMark{s.Progress, now}
			continue
		}
		if s.State == pipeline.Streaming && s.Pending > 0 && now.Sub(m.at) >= n.watchdog {
			out = append(out, s.Name)
		}
	}
	return out
}
