package main

import (
	"context"
	"log/slog"
	"os"
	"os/signal"
	"reflect"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/regiond/regiond/config"
)

func newRunCmd() *cobra.Command {
	var (
		cfgPath     string
		region      string
		debug       bool
		metricsAddr string
	)
	cmd := &cobra.Command{
		Use:   "run --config FILE [--region NAME]",
		Short: "Run the replication pipelines (foreground daemon)",
		Long: `Run the replication pipelines until SIGTERM or SIGINT.

With --region NAME, runs the pipelines that apply into region NAME from
every other region (one process per region). Without it, runs every
pipeline of the configuration in this one process. Two processes for the
same region may run at once (high availability): exactly one applies each
pipeline, the other stands by and takes over within seconds when it dies.

Under systemd (Type=notify) it reports READY=1 once every pipeline streams
or stands by, pings the watchdog while pipelines make progress, and keeps
STATUS= up to date. SIGHUP re-reads the config file: log_level takes effect
at once; any other change is reported as needing a restart.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := loadConfig(cfgPath)
			if err != nil {
				return err
			}
			if metricsAddr != "" {
				cfg.MetricsAddr = metricsAddr
			}
			level := new(slog.LevelVar)
			level.Set(logLevel(cfg.LogLevel, debug))
			logger := newLogger(cmd.ErrOrStderr(), level)
			return run(cmd.Context(), cfg, runOptions{
				region: region, cfgPath: cfgPath, level: level, debug: debug, metricsFlag: metricsAddr,
			}, logger)
		},
	}
	cmd.Flags().StringVarP(&cfgPath, "config", "c", "", "config file (YAML)")
	cmd.Flags().StringVar(&region, "region", "", "run only the pipelines into this region")
	cmd.Flags().BoolVar(&debug, "debug", false, "log at debug level (overrides log_level)")
	cmd.Flags().StringVar(&metricsAddr, "metrics-addr", "", "serve /metrics, /healthz and /status here (overrides metrics_addr)")
	return cmd
}

// runOptions are what run needs besides the config.
type runOptions struct {
	region      string
	cfgPath     string // re-read on SIGHUP ("" for none)
	level       *slog.LevelVar
	debug       bool
	metricsFlag string
}

// logLevel maps log_level (and --debug) to a slog level.
func logLevel(name string, debug bool) slog.Level {
	if debug {
		return slog.LevelDebug
	}
	switch name {
	case "debug":
		return slog.LevelDebug
	case "warn":
		return slog.LevelWarn
	case "error":
		return slog.LevelError
	}
	return slog.LevelInfo
}

// run runs the pipelines until ctx ends. A pipeline that fails is retried or
// stopped on its own; only invalid config or usage make run fail.
func run(ctx context.Context, cfg *config.Config, opts runOptions, logger *slog.Logger) error {
	if opts.level == nil {
		opts.level = new(slog.LevelVar)
	}
	// SIGHUP would end the process by default: catch it from the start.
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	set, err := buildPipelines(cfg, opts.region, logger)
	if err != nil {
		return err
	}
	defer set.Close()
	if len(set.pipelines) == 0 {
		return usagef("nothing to run: the config has a single region; regiond replicates between two or more regions")
	}
	started := time.Now()
	logger.Info("regiond starting", "version", version, "pipelines", len(set.pipelines), "region", opts.region)
	if cfg.MetricsAddr != "" {
		if err := serveHTTP(ctx, cfg.MetricsAddr, set.pipelines, opts.region, started, logger); err != nil {
			// The pipelines matter more than their metrics: say so loudly
			// and replicate anyway.
			logger.Error("cannot serve metrics; running without /metrics and /healthz", "error", err)
		}
	}
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
	nctx, stopNotify := context.WithCancel(ctx)
	notifyDone := make(chan struct{})
	go func() {
		defer close(notifyDone)
		newNotifier(set.pipelines, logger).run(nctx)
	}()
wait:
	for {
		select {
		case <-ctx.Done():
			break wait
		case <-hup:
			reload(cfg, opts, logger)
		}
	}
	logger.Info("regiond stopping: abandoning in-flight batches (they are replayed from the checkpoints)")
	stopNotify()
	<-notifyDone // STOPPING=1 is out
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

// reload re-reads the config file on SIGHUP. log_level applies at once;
// anything else that changed needs a restart, and is named.
func reload(running *config.Config, opts runOptions, logger *slog.Logger) {
	if opts.cfgPath == "" {
		return
	}
	next, err := config.Load(opts.cfgPath)
	if err != nil {
		logger.Error("SIGHUP: the config file is invalid; keeping the running config", "error", err)
		return
	}
	if opts.metricsFlag != "" {
		next.MetricsAddr = opts.metricsFlag
	}
	level := logLevel(next.LogLevel, opts.debug)
	if level != opts.level.Level() {
		logger.Info("SIGHUP: log level changed", "from", opts.level.Level().String(), "to", level.String())
		opts.level.Set(level)
	}
	var changed []string
	for _, f := range []struct {
		key  string
		a, b any
	}{
		{"regions", running.Regions, next.Regions},
		{"tables", running.Tables, next.Tables},
		{"kafka", running.Kafka, next.Kafka},
		{"metrics_addr", running.MetricsAddr, next.MetricsAddr},
		{"state_dir", running.StateDir, next.StateDir},
		{"tombstone_retention", running.TombstoneRetention, next.TombstoneRetention},
	} {
		if !reflect.DeepEqual(f.a, f.b) {
			changed = append(changed, f.key)
		}
	}
	if len(changed) > 0 {
		logger.Warn("SIGHUP: config changes that take effect only after a restart (systemctl restart regiond)", "changed", strings.Join(changed, ", "))
		return
	}
	logger.Info("SIGHUP: config re-read", "log_level", level.String())
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
