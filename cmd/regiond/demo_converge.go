package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"time"

	"github.com/regiond/regiond/config"
	"github.com/regiond/regiond/verify"
)

// demoConverge runs verify over every region and table of the demo until
// the regions are identical (exit 0) or convergeTimeout passes. verify
// itself waits for the pipelines to pass the positions at which differing
// rows were read; another round is for home_region reverts that the local
// pipelines make once the discarded writes have been read.
func demoConverge(ctx context.Context, out io.Writer, cfg *config.Config, logger *slog.Logger) error {
	deadline := time.Now().Add(convergeTimeout)
	opts := verify.Options{Config: cfg, SettleTimeout: time.Minute, Logger: logger}
	for {
		start := time.Now()
		rep, err := verify.Run(ctx, opts)
		if err != nil {
			return fmt.Errorf("verify: %w", err)
		}
		if rep.Identical() || time.Now().After(deadline) {
			fmt.Fprintf(out, "verify (%.1fs):\n", time.Since(start).Seconds())
			verify.WriteText(out, rep)
			if !rep.Identical() {
				return errNotConverged
			}
			fmt.Fprintln(out, "converged: every region holds the same rows")
			return nil
		}
		differ := 0
		for _, t := range rep.Tables {
			differ += len(t.Differences) + len(t.Unsettled)
		}
		fmt.Fprintf(out, "  %d rows still differ (in flight); verifying again...\n", differ)
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(2 * time.Second):
		}
	}
}
