// Command regiond is a change-data-capture replication daemon for
// multi-region active-active databases. See README.md.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/regiond/regiond/config"
	"github.com/regiond/regiond/internal/mysqlconn"
)

// Exit codes, part of the CLI's interface.
const (
	exitOK      = 0
	exitFailure = 1 // a failure, or differences found
	exitUsage   = 2 // invalid config or usage
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

// usageError marks errors that are the caller's to fix (exit code 2).
type usageError struct{ err error }

func (e usageError) Error() string { return e.err.Error() }
func (e usageError) Unwrap() error { return e.err }

func usagef(format string, args ...any) error {
	return usageError{fmt.Errorf(format, args...)}
}

func exitCode(err error) int {
	var ue usageError
	switch {
	case err == nil:
		return exitOK
	case errors.As(err, &ue), errors.Is(err, config.ErrInvalid):
		return exitUsage
	}
	return exitFailure
}

func newRoot() *cobra.Command {
	root := &cobra.Command{
		Use:           "regiond",
		Short:         "Change-data-capture replication for multi-region active-active databases",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return usageError{err} })
	root.AddCommand(newRunCmd(), newCheckCmd(), newConflictsCmd(), newVersionCmd())
	root.AddCommand(newBackfillCmd())
	return root
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	mysqlconn.QuietDriverLogs()
	root := newRoot()
	err := root.ExecuteContext(ctx)
	var silent silentError
	if err != nil && !errors.As(err, &silent) {
		fmt.Fprintln(os.Stderr, "regiond:", err)
		var ue usageError
		if errors.As(err, &ue) && !errors.Is(err, config.ErrInvalid) {
			fmt.Fprintln(os.Stderr, "Run 'regiond --help' for usage.")
		}
	}
	os.Exit(exitCode(err))
}

// newLogger logs JSON when stderr is not a terminal (journald, files), text
// for a person otherwise.
func newLogger(w io.Writer, level slog.Level) *slog.Logger {
	opts := &slog.HandlerOptions{Level: level}
	if f, ok := w.(*os.File); ok {
		if fi, err := f.Stat(); err == nil && fi.Mode()&os.ModeCharDevice != 0 {
			return slog.New(slog.NewTextHandler(w, opts))
		}
	}
	return slog.New(slog.NewJSONHandler(w, opts))
}

func loadConfig(path string) (*config.Config, error) {
	if path == "" {
		return nil, usagef("--config is required: regiond --config /etc/regiond/regiond.yaml ...")
	}
	return config.Load(path)
}

func newVersionCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Print regiond's version",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			fmt.Fprintln(cmd.OutOrStdout(), "regiond", version)
			return nil
		},
	}
}
