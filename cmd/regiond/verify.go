package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/schollz/progressbar/v3"
	"github.com/spf13/cobra"
	"golang.org/x/term"

	"github.com/regiond/regiond/config"
	"github.com/regiond/regiond/verify"
)

// exitError ends a command with a given exit code; main prints err unless
// it is a silentError.
type exitError struct {
	err  error
	code int
}

func (e exitError) Error() string { return e.err.Error() }
func (e exitError) Unwrap() error { return e.err }
func (e exitError) ExitCode() int { return e.code }

func newVerifyCmd() *cobra.Command {
	var (
		cfgPath, regions, format, sourceRegion string
		tables                                 []string
		repair, compareRows                    bool
		chunk, parallel, rounds                int
		settle                                 time.Duration
	)
	cmd := &cobra.Command{
		Use:   "verify --config FILE [--table T]... [--regions A,B,...] [--format text|json] [--repair [--source R]]",
		Short: "Compare the tables across regions (and repair what differs by each table's rule)",
		Long: `verify compares the configured tables across regions in primary-key chunks,
checksummed inside each database; only rows of differing chunks are compared
one by one. Rows that differ while writes continue are read again once every
pipeline into the compared regions has passed the position they were read at;
rows that keep changing are reported as unsettled, apart from differences.

--repair writes, for each difference, the row the table's rule picks
(last_writer_wins: the highest version; home_region: the home region's row;
apply_remote: the row of --source) into the other regions, through regiond's
marker so that nothing echoes, only where the row is still what verify read;
then it compares again.

Exit codes: 0 identical, 1 differences or unsettled rows, 2 error or usage.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if format != "text" && format != "json" {
				return exitError{fmt.Errorf("--format %q: use text or json", format), exitUsage}
			}
			if sourceRegion != "" && !repair {
				return exitError{errors.New("--source only applies with --repair"), exitUsage}
			}
			cfg, err := loadConfig(cfgPath)
			if err != nil {
				return exitError{err, exitUsage}
			}
			opts := verify.Options{
				Config:        cfg,
				Tables:        tables,
				ChunkRows:     chunk,
				Parallel:      parallel,
				SettleTimeout: settle,
				SettleRounds:  rounds,
				CompareRows:   compareRows,
				Logger:        newLogger(cmd.ErrOrStderr(), slog.LevelWarn),
			}
			if regions != "" {
				for _, r := range strings.Split(regions, ",") {
					if r = strings.TrimSpace(r); r != "" {
						opts.Regions = append(opts.Regions, r)
					}
				}
			}
			for _, t := range tables {
				if _, ok := cfg.Tables[t]; !ok {
					return exitError{fmt.Errorf("--table %s is not a table of the config (tables: %s)", t, strings.Join(cfg.TableNames(), ", ")), exitUsage}
				}
			}
			prog := newProgress(cmd.ErrOrStderr())
			opts.Progress = prog.update
			var rep *verify.Report
			if repair {
				rep, err = verify.Repair(cmd.Context(), opts, sourceRegion)
			} else {
				rep, err = verify.Run(cmd.Context(), opts)
			}
			prog.finish()
			if err != nil {
				if errors.Is(err, verify.ErrRefused) || errors.Is(err, config.ErrInvalid) {
					return exitError{err, exitUsage}
				}
				return exitError{fmt.Errorf("verify: %w", err), exitUsage}
			}
			out := cmd.OutOrStdout()
			if format == "json" {
				enc := json.NewEncoder(out)
				enc.SetIndent("", "  ")
				if err := enc.Encode(struct {
					*verify.Report
					Identical bool `json:"identical"`
				}{rep, rep.Identical()}); err != nil {
					return exitError{err, exitUsage}
				}
			} else {
				verify.WriteText(out, rep)
			}
			if !rep.Identical() {
				return silentError{errors.New("regions differ")}
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVarP(&cfgPath, "config", "c", "", "config file (YAML)")
	f.StringArrayVar(&tables, "table", nil, "table to compare (repeatable; default: every configured table)")
	f.StringVar(&regions, "regions", "", "regions to compare, comma-separated (default: all)")
	f.StringVar(&format, "format", "text", "report format: text or json")
	f.BoolVar(&repair, "repair", false, "fix every difference by the table's rule, then compare again")
	f.StringVar(&sourceRegion, "source", "", "with --repair: the region whose rows win for apply_remote tables")
	f.IntVar(&chunk, "chunk-rows", 10000, "rows per checksummed chunk")
	f.IntVar(&parallel, "parallel", 2, "chunks checksummed at once")
	f.DurationVar(&settle, "settle-timeout", 2*time.Minute, "how long to wait for pipelines to pass the positions at which differing rows were read")
	f.BoolVar(&compareRows, "compare-rows", false, "read every row into regiond and compare there, instead of checksumming chunks in the databases")
	f.IntVar(&rounds, "settle-rounds", 10, "how often rows that keep changing are read again before they are reported as unsettled")
	return cmd
}

// progress reports rows checksummed per second and the time left: a
// progress bar on a terminal (the same library as backfill's), a plain line
// every 10 s otherwise.
type progress struct {
	mu    sync.Mutex
	w     io.Writer
	bar   *progressbar.ProgressBar
	start time.Time
	last  time.Time
	table string
}

func newProgress(w io.Writer) *progress {
	p := &progress{w: w, start: time.Now(), last: time.Now()}
	if f, ok := w.(*os.File); ok && term.IsTerminal(int(f.Fd())) {
		p.bar = progressbar.NewOptions64(-1,
			progressbar.OptionSetWriter(w),
			progressbar.OptionShowCount(),
			progressbar.OptionShowIts(),
			progressbar.OptionSetItsString("rows"),
			progressbar.OptionSetPredictTime(true),
			progressbar.OptionFullWidth(),
			progressbar.OptionThrottle(100*time.Millisecond),
			progressbar.OptionClearOnFinish(),
		)
	}
	return p
}

func (p *progress) update(table string, done, total int64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if table != p.table {
		p.table, p.start = table, time.Now()
		if p.bar != nil {
			p.bar.Reset()
			p.bar.Describe("verify " + table)
		}
	}
	if p.bar != nil {
		if m := max(total, done, 1); p.bar.GetMax64() != m {
			p.bar.ChangeMax64(m)
		}
		_ = p.bar.Set64(done)
		return
	}
	if time.Since(p.last) < 10*time.Second {
		return
	}
	p.last = time.Now()
	rate := float64(done) / max(time.Since(p.start).Seconds(), 1e-3)
	line := fmt.Sprintf("verify %s: %d rows, %.0f rows/s", table, done, rate)
	if total > done && rate > 0 {
		line += fmt.Sprintf(", ETA %s", time.Duration(float64(total-done)/rate*float64(time.Second)).Round(time.Second))
	}
	fmt.Fprintln(p.w, line)
}

func (p *progress) finish() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.bar != nil {
		_ = p.bar.Finish()
	}
}
