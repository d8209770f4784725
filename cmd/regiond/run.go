package main

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/spf13/cobra"

	"github.com/regiond/regiond/config"
)

func newRunCmd() *cobra.Command {
	var (
		cfgPath string
		region  string
		debug   bool
	)
	cmd := &cobra.Command{
		Use:   "run --config FILE [--region NAME]",
		Short: "Run the replication pipelines (foreground daemon)",
		Long: `Run the replication pipelines until SIGTERM or SIGINT.

With --region NAME, runs the pipelines that apply into region NAME from
every other region (one process per region). Without it, runs every
pipeline of the configuration in this one process.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := loadConfig(cfgPath)
			if err != nil {
				return err
			}
			level := slog.LevelInfo
			if debug {
				level = slog.LevelDebug
			}
			logger := newLogger(cmd.ErrOrStderr(), level)
			return run(cmd.Context(), cfg, region, logger)
		},
	}
	cmd.Flags().StringVarP(&cfgPath, "config", "c", "", "config file (YAML)")
	cmd.Flags().StringVar(&region, "region", "", "run only the pipelines into this region")
	cmd.Flags().BoolVar(&debug, "debug", false, "log at debug level")
	return cmd
}

// run runs the pipelines until ctx ends. A pipeline that fails is retried or
// stopped on its own; only invalid config or usage make run fail.
func run(ctx context.Context, cfg *config.Config, region string, logger *slog.Logger) error {
	set, err := buildPipelines(cfg, region, logger)
	if err != nil {
		return err
	}
	defer set.Close()
	if len(set.pipelines) == 0 {
		return usagef("nothing to run: the config has a single region; regiond replicates between two or more regions")
	}
	logger.Info("regiond starting", "version", version, "pipelines", len(set.pipelines), "region", region)
	var wg sync.WaitGroup
	for _, p := range set.pipelines {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_ = p.Run(ctx) // a permanent failure is logged and stays in its status
		}()
	}
	for _, p := range set.pruners {
		wg.Add(1)
		go func() {
			defer wg.Done()
			p.Run(ctx)
		}()
	}
	<-ctx.Done()
	logger.Info("regiond stopping: abandoning in-flight batches (they are replayed from the checkpoints)")
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(4 * time.Second):
		logger.Warn("pipelines did not stop in time; exiting anyway (no batch was committed half-way: each is one transaction)")
	}
	logger.Info("regiond stopped")
	return nil
}

// checkRegionFlag returns a usage error when name is set but not a region.
func checkRegionFlag(cfg *config.Config, name string) error {
	if name == "" {
		return nil
	}
	if _, ok := cfg.Region(name); ok {
		return nil
	}
	names := ""
	for i, r := range cfg.Regions {
		if i > 0 {
			names += ", "
		}
		names += r.Name
	}
	return usagef("--region %q is not a region of the config; regions: %s", name, names)
}

var _ = fmt.Sprintf
