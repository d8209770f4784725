package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"slices"
	"sync"
	"time"

	"github.com/schollz/progressbar/v3"
	"github.com/spf13/cobra"
	"golang.org/x/term"

	"github.com/regiond/regiond/backfill"
	"github.com/regiond/regiond/config"
	"github.com/regiond/regiond/snapshot"
)

func newBackfillCmd() *cobra.Command {
	var (
		configPath, from, to string
		tables               []string
		chunk, parallel      int
		restart              bool
	)
	cmd := &cobra.Command{
		Use:   "backfill --config FILE --from A --to B [--table T]... [--chunk-size N] [--parallel P]",
		Short: "Copy the existing rows of the tables from region A into region B, online",
		Long: `backfill copies every row of the configured tables (or those named with
--table) from region A into region B in primary-key chunks, while 'regiond run'
keeps streaming and applications keep writing; B ends holding what A holds.
Start 'regiond run' first: the pipeline A->B must have started. Each chunk is
written in one transaction ordered with the pipelines' appliers into B, carrying
regiond's marker (nothing echoes). Progress is stored in B's regiond_backfill
table: run the same command again after an interruption to continue.

With --to kafka, the rows of region A are published to Kafka as events with
op "r" (see README, Kafka); each chunk's rows stay share-locked in A until
the brokers acknowledged them, so every later change to them is published
after them. Progress is stored in state_dir: run the same command again
after an interruption to continue (at most the chunk in flight is published
twice); --restart publishes every row again.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := loadConfig(configPath)
			if err != nil {
				return err
			}
			if to == config.ReservedRegionName {
				return runBackfillKafka(cmd.Context(), cfg, from, tables, chunk, restart, cmd.OutOrStdout(), cmd.ErrOrStderr())
			}
			src, dst, names, err := backfillArgs(cfg, from, to, tables, chunk, parallel)
			if err != nil {
				return err
			}
			return runBackfill(cmd.Context(), cfg, src, dst, names, chunk, parallel, restart, cmd.OutOrStdout(), cmd.ErrOrStderr())
		},
	}
	f := cmd.Flags()
	f.StringVar(&configPath, "config", "", "config file (YAML)")
	f.StringVar(&from, "from", "", "region to copy from")
	f.StringVar(&to, "to", "", "region to copy into, or kafka to publish the rows as op \"r\" events")
	f.StringArrayVar(&tables, "table", nil, "table to copy (repeatable; default: every configured table)")
	f.IntVar(&chunk, "chunk-size", 5000, "rows per chunk")
	f.IntVar(&parallel, "parallel", 4, "chunks copied at once")
	f.BoolVar(&restart, "restart", false, "forget the stored progress of these tables and copy them again from the start")
	return cmd
}

// backfillArgs checks the command line against the config.
func backfillArgs(cfg *config.Config, from, to string, tables []string, chunk, parallel int) (src, dst config.Region, names []string, err error) {
	find := func(flag, name string) (config.Region, error) {
		if name == "" {
			return config.Region{}, usagef("--%s is required: name a region of the config", flag)
		}
		for _, r := range cfg.Regions {
			if r.Name == name {
				return r, nil
			}
		}
		var known []string
		for _, r := range cfg.Regions {
			known = append(known, r.Name)
		}
		return config.Region{}, usagef("--%s %s: no such region in the config (regions: %v)", flag, name, known)
	}
	if src, err = find("from", from); err != nil {
		return
	}
	if dst, err = find("to", to); err != nil {
		return
	}
	if src.Name == dst.Name {
		return src, dst, nil, usagef("--from and --to both name region %s: backfill copies between two regions", from)
	}
	if chunk <= 0 {
		return src, dst, nil, usagef("--chunk-size %d: must be at least 1", chunk)
	}
	if parallel <= 0 {
		return src, dst, nil, usagef("--parallel %d: must be at least 1", parallel)
	}
	if len(tables) == 0 {
		names = cfg.TableNames()
		slices.Sort(names)
		return src, dst, names, nil
	}
	for _, t := range tables {
		if _, ok := cfg.Tables[t]; !ok {
			return src, dst, nil, usagef("--table %s: not a configured table; add it under tables: in the config first", t)
		}
		if !slices.Contains(names, t) {
			names = append(names, t)
		}
	}
	return src, dst, names, nil
}

func runBackfill(ctx context.Context, cfg *config.Config, src, dst config.Region, tables []string, chunk, parallel int, restart bool, stdout, stderr io.Writer) error {
	logger := newLogger(stderr, slog.LevelWarn)
	sdb, err := snapshot.Open(src)
	if err != nil {
		return err
	}
	defer sdb.Close()
	tdb, err := snapshot.Open(dst)
	if err != nil {
		return err
	}
	defer tdb.Close()

	name := pipelineName(src.Name, dst.Name)
	var guard []string
	for _, r := range cfg.Regions {
		if r.Name != dst.Name {
			guard = append(guard, pipelineName(r.Name, dst.Name))
		}
	}
	rules := rulesFor(cfg, "backfill "+name, src.Name, dst.Name)
	for t, r := range rules.Tables {
		// Chunk rows are the source's state, not a change made there: a
		// home_region row is copied whatever its home.
		if r.Name == config.RuleHomeRegion {
			delete(rules.Tables, t)
		}
	}
	if restart {
		if err := backfill.Reset(ctx, tdb, src.Name, dst.Name, tables); err != nil {
			return fmt.Errorf("region %s: %w", dst.Name, err)
		}
	}
	show := newProgressView(stderr, name)
	res, err := backfill.Run(ctx, backfill.Config{
		From: src.Name, To: dst.Name, Source: sdb, Target: tdb, Tables: tables,
		Pipeline: name, Guard: guard, ChunkRows: chunk, Parallel: parallel,
		NewWriter: func(int) (backfill.Writer, error) {
			return backfill.NewSinkWriter(dst, "backfill "+name, src.Name, cfg.TableNames(), rules, logger)
		},
		Progress: show.update,
		Logger:   logger,
	})
	show.finish()
	switch {
	case errors.Is(err, backfill.ErrMismatch):
		return usageError{fmt.Errorf("backfill %s: %w", name, err)}
	case err != nil && ctx.Err() != nil:
		return fmt.Errorf("backfill %s interrupted after %d of %d chunks; run the same command again to continue", name, res.Chunks, res.AllChunks)
	case err != nil:
		return fmt.Errorf("backfill %s: %w", name, err)
	}
	copied := res.Rows - res.Resumed
	rate := float64(copied) / max(res.Elapsed.Seconds(), 1e-9)
	fmt.Fprintf(stdout, "backfill %s: %d rows of %d tables copied in %s (%.0f rows/s)", name, copied, len(tables), res.Elapsed.Round(time.Millisecond), rate)
	if res.Resumed > 0 {
		fmt.Fprintf(stdout, ", %d copied before", res.Resumed)
	}
	fmt.Fprintf(stdout, "; chunk time: %s waiting for the appliers into %s, %s reading %s, %s writing",
		res.Wait.Round(time.Millisecond), dst.Name, res.Read.Round(time.Millisecond), src.Name, res.Write.Round(time.Millisecond))
	if res.Retries > 0 {
		fmt.Fprintf(stdout, ", %d chunk writes retried", res.Retries)
	}
	if res.Skipped > 0 {
		fmt.Fprintf(stdout, ", %d kept newer in %s", res.Skipped, dst.Name)
	}
	fmt.Fprintln(stdout)
	return nil
}

// progressView shows a run's progress: a bar with rows/s and ETA on a
// terminal, a plain line every few seconds otherwise.
type progressView struct {
	mu    sync.Mutex
	w     io.Writer
	name  string
	bar   *progressbar.ProgressBar
	start time.Time
	last  time.Time
	p     backfill.Progress
}

func newProgressView(w io.Writer, name string) *progressView {
	v := &progressView{w: w, name: name, start: time.Now(), last: time.Now()}
	if f, ok := w.(*os.File); ok && term.IsTerminal(int(f.Fd())) {
		v.bar = progressbar.NewOptions64(-1,
			progressbar.OptionSetWriter(w),
			progressbar.OptionSetDescription("backfill "+name),
			progressbar.OptionShowCount(),
			progressbar.OptionShowIts(),
			progressbar.OptionSetItsString("rows"),
			progressbar.OptionSetPredictTime(true),
			progressbar.OptionFullWidth(),
			progressbar.OptionThrottle(100*time.Millisecond),
		)
	}
	return v
}

func (v *progressView) update(p backfill.Progress) {
	v.mu.Lock()
	defer v.mu.Unlock()
	v.p = p
	if v.bar != nil {
		if v.bar.GetMax64() != p.Total-p.Resumed {
			v.bar.ChangeMax64(max(p.Total-p.Resumed, 1))
		}
		_ = v.bar.Set64(min(p.Rows-p.Resumed, v.bar.GetMax64()))
		return
	}
	if time.Since(v.last) >= 5*time.Second {
		v.last = time.Now()
		v.line()
	}
}

func (v *progressView) line() {
	p := v.p
	el := time.Since(v.start).Seconds()
	rate := float64(p.Rows-p.Resumed) / max(el, 1e-9)
	eta := "?"
	if rate > 0 && p.Total > p.Rows {
		eta = (time.Duration(float64(p.Total-p.Rows)/rate) * time.Second).Round(time.Second).String()
	} else if p.Total <= p.Rows {
		eta = "0s"
	}
	pct := 100.0
	if p.Total > 0 {
		pct = 100 * float64(p.Rows) / float64(p.Total)
	}
	fmt.Fprintf(v.w, "backfill %s: %d/%d rows (%.1f%%), chunks %d/%d, %.0f rows/s, ETA %s\n", v.name, p.Rows, p.Total, pct, p.Chunks, p.AllChunks, rate, eta)
}

func (v *progressView) finish() {
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.bar != nil {
		_ = v.bar.Finish()
		fmt.Fprintln(v.w)
		return
	}
	v.line()
}
