package main

import (
	"encoding/json"
	"fmt"
	"io"
	"strings"

	"github.com/spf13/cobra"

	"github.com/regiond/regiond/check"
)

func newCheckCmd() *cobra.Command {
	var cfgPath, format string
	cmd := &cobra.Command{
		Use:   "check --config FILE [--format text|json]",
		Short: "Validate the config and every region's server setup",
		Long: `Validate the config, then connect to every region and check what
replication needs: row-based binlog with full row images and metadata,
GTIDs, binlog retention, the DSN user's privileges, and that every
configured table exists with the same columns and primary key in every
region, like nginx -t. It only reads; it never writes to any database.

Exit code 0 when nothing is wrong (warnings allowed), 1 when anything is,
2 when the config itself is invalid.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if format != "text" && format != "json" {
				return usagef("--format %q: use text or json", format)
			}
			cfg, err := loadConfig(cfgPath)
			if err != nil {
				return err
			}
			rep := check.Run(cmd.Context(), cfg)
			out := cmd.OutOrStdout()
			if format == "json" {
				enc := json.NewEncoder(out)
				enc.SetIndent("", "  ")
				if err := enc.Encode(rep); err != nil {
					return err
				}
			} else {
				writeReport(out, rep)
			}
			if n := rep.Errors(); n > 0 {
				// The report has said everything; main prints nothing more.
				return silentError{fmt.Errorf("check found %s", plural(n, "error"))}
			}
			return nil
		},
	}
	cmd.Flags().StringVarP(&cfgPath, "config", "c", "", "config file (YAML)")
	cmd.Flags().StringVar(&format, "format", "text", "output format: text or json")
	return cmd
}

// writeReport prints one line per finding, its fix indented below it, and a
// summary line.
func writeReport(w io.Writer, rep check.Report) {
	for _, f := range rep.Findings {
		fmt.Fprintf(w, "%s %s: %s\n", strings.ToUpper(f.Severity.String()), f.Subject(), f.Problem)
		if f.Fix != "" {
			fmt.Fprintf(w, "      fix: %s\n", f.Fix)
		}
	}
	fmt.Fprintf(w, "%s, %s\n", plural(rep.Errors(), "error"), plural(rep.Warnings(), "warning"))
}

func plural(n int, noun string) string {
	if n == 1 {
		return "1 " + noun
	}
	return fmt.Sprintf("%d %ss", n, noun)
}

// silentError fails a command with exit code 1 after the command has
// already told the user why: main prints nothing for it.
type silentError struct{ err error }

func (e silentError) Error() string { return e.err.Error() }
func (e silentError) Unwrap() error { return e.err }
