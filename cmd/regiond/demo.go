package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/spf13/cobra"

	"github.com/regiond/regiond/config"
	"github.com/regiond/regiond/demo"
	"github.com/regiond/regiond/internal/metrics"
)

func newDemoCmd() *cobra.Command {
	var (
		regions  int
		duration time.Duration
		keep     bool
		pause    time.Duration
	)
	cmd := &cobra.Command{
		Use:   "demo [--regions 3] [--duration 30s]",
		Short: "Run a throwaway multi-region deployment with conflicting writes and prove it converges",
		Long: `Start throwaway local database servers (two MariaDB and one PostgreSQL for
three regions; every third region is PostgreSQL), write a config for them, run
every pipeline in this process, and write concurrently in every region, with
conflicts on purpose: a last_writer_wins table whose rows every region
updates, a home_region table in which a write now and then touches a row
owned by another region, and an apply_remote table. Live progress shows
writes/s, changes applied/s, replication lag and conflicts. After --duration
the writers stop and verify compares the regions row by row.

Exit code 0 iff every region ends identical. The servers and their
directory are removed at the end, also on Ctrl-C (--keep keeps them, with
the config and regiond's log, for a look).`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if regions < 2 || regions > demo.MaxRegions {
				return usagef("--regions %d: choose 2 to %d", regions, demo.MaxRegions)
			}
			if duration <= 0 {
				return usagef("--duration %v: give a positive duration such as 30s", duration)
			}
			return runDemo(cmd.Context(), cmd.OutOrStdout(), demoOptions{
				regions: regions, duration: duration, keep: keep, pause: pause,
			})
		},
	}
	cmd.Flags().IntVar(&regions, "regions", 3, "number of regions (2 to 8; every third is PostgreSQL)")
	cmd.Flags().DurationVar(&duration, "duration", 30*time.Second, "how long the writers run")
	cmd.Flags().BoolVar(&keep, "keep", false, "keep the servers' directory (config, data, log) afterwards")
	cmd.Flags().DurationVar(&pause, "pause", 5*time.Millisecond, "pause of each region's writer between transactions")
	return cmd
}

type demoOptions struct {
	regions  int
	duration time.Duration
	keep     bool
	pause    time.Duration
}

// convergeTimeout bounds the wait for the regions to converge once the
// writers stop.
const convergeTimeout = 2 * time.Minute

func runDemo(ctx context.Context, out io.Writer, o demoOptions) (err error) {
	dir, err := os.MkdirTemp("", "regiond-demo-")
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "regiond demo: %d regions in %s\n", o.regions, dir)
	cluster, err := demo.Start(ctx, dir, o.regions, func(line string) { fmt.Fprintln(out, "  started", line) })
	if err != nil {
		os.RemoveAll(dir)
		return err
	}
	defer func() {
		if o.keep {
			fmt.Fprintf(out, "kept %s (config %s, log %s); stop the servers with scripts/testdb.sh stop DIR\n",
				dir, cluster.ConfigPath, filepath.Join(dir, "regiond.log"))
			return
		}
		fmt.Fprintln(out, "removing the servers...")
		if cerr := cluster.Close(); cerr != nil && err == nil {
			err = cerr
		}
	}()
	cfg, err := config.Load(cluster.ConfigPath)
	if err != nil {
		return err
	}
	logFile, err := os.Create(filepath.Join(dir, "regiond.log"))
	if err != nil {
		return err
	}
	defer logFile.Close()
	logger := slog.New(slog.NewJSONHandler(logFile, nil))

	runCtx, stopRun := context.WithCancel(ctx)
	runDone := make(chan error, 1)
	go func() { runDone <- run(runCtx, cfg, runOptions{}, logger) }()
	defer func() {
		stopRun()
		<-runDone
	}()
	if err := cluster.WaitPipelines(ctx, time.Minute); err != nil {
		return err
	}
	fmt.Fprintf(out, "regiond is streaming: %d pipelines (log: %s)\n", o.regions*o.regions, logFile.Name())

	w := &demo.Workload{Regions: cluster.Regions, Pause: o.pause}
	workCtx, stopWork := context.WithTimeout(ctx, o.duration)
	defer stopWork()
	workDone := make(chan error, 1)
	go func() { workDone <- w.Run(workCtx) }()
	start := time.Now()
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	var last progressSample
	fmt.Fprintln(out, "writing in every region for", o.duration)
	for running := true; running; {
		select {
		case err := <-workDone:
			if err != nil {
				return fmt.Errorf("workload: %w", err)
			}
			running = false
		case <-tick.C:
			s := sampleProgress(w, time.Since(start))
			fmt.Fprintln(out, " ", s.line(last))
			last = s
		}
	}
	if ctx.Err() != nil {
		return errors.New("interrupted; removing the servers")
	}
	st := w.Stats()
	fmt.Fprintf(out, "writers stopped: %d transactions (%d touched a row owned by another region), %d deadlock retries\n",
		st.Writes, st.Violations, st.Retries)
	fmt.Fprintln(out, "waiting for the regions to converge, then verifying...")
	return demoConverge(ctx, out, cfg, logger)
}

// progressSample is the demo's counters at one moment.
type progressSample struct {
	at        time.Duration
	writes    int64
	applied   float64
	lag       float64
	conflicts float64
}

func sampleProgress(w *demo.Workload, at time.Duration) progressSample {
	s := progressSample{at: at, writes: w.Stats().Writes, lag: -1, applied: -1}
	families, err := metrics.Registry.Gather()
	if err != nil {
		return s
	}
	for _, f := range families {
		switch f.GetName() {
		case "regiond_changes_applied_total":
			s.applied = sumMetric(f)
		case "regiond_replication_lag_seconds":
			s.lag = maxMetric(f)
		case "regiond_conflicts_total":
			s.conflicts = sumMetric(f)
		}
	}
	return s
}

func sumMetric(f *dto.MetricFamily) float64 {
	var n float64
	for _, m := range f.GetMetric() {
		n += m.GetCounter().GetValue() + m.GetGauge().GetValue()
	}
	return n
}

func maxMetric(f *dto.MetricFamily) float64 {
	var n float64
	for _, m := range f.GetMetric() {
		n = max(n, m.GetGauge().GetValue())
	}
	return n
}

// line renders s, with rates since prev.
func (s progressSample) line(prev progressSample) string {
	secs := (s.at - prev.at).Seconds()
	l := fmt.Sprintf("%4.0fs  writes %7d (%5.0f/s)", s.at.Seconds(), s.writes, float64(s.writes-prev.writes)/secs)
	if s.applied >= 0 {
		l += fmt.Sprintf("  applied %8.0f (%5.0f/s)", s.applied, max(0, s.applied-prev.applied)/secs)
	}
	if s.lag >= 0 {
		l += fmt.Sprintf("  lag %5.2fs", s.lag)
	}
	return l + fmt.Sprintf("  conflicts %5.0f", s.conflicts)
}

var errNotConverged = errors.New("the regions did not converge")
