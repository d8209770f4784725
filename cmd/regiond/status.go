package main

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/regiond/regiond/config"
	"github.com/regiond/regiond/internal/mysqlconn"
	"github.com/regiond/regiond/internal/pgconn"
)

// statusRow is one pipeline in `regiond status`: what its target region's
// database stores, and what a running daemon says, when one answers.
type statusRow struct {
	Pipeline  string     `json:"pipeline"`
	Source    string     `json:"source"`
	Target    string     `json:"target"`
	Position  string     `json:"position"` // stored in the target ("" when none yet)
	Epoch     int64      `json:"epoch"`    // fencing epoch stored with it
	UpdatedAt *time.Time `json:"checkpoint_updated_at,omitempty"`
	// Conflicts1h counts the pipeline's conflicts recorded in the last hour.
	Conflicts1h int `json:"conflicts_last_hour"`
	// From the daemon (absent when none answered).
	State      string   `json:"state,omitempty"`
	Leader     *bool    `json:"leader,omitempty"`
	LagSeconds *float64 `json:"lag_seconds,omitempty"`
	LagBytes   *float64 `json:"source_lag_bytes,omitempty"`
	LastError  string   `json:"last_error,omitempty"`
	// Problem says why the target's database could not be read.
	Problem string `json:"problem,omitempty"`
}

// statusReport is the whole `regiond status --format json` output.
type statusReport struct {
	Daemons   []string    `json:"daemons"` // metrics addresses that answered
	Pipelines []statusRow `json:"pipelines"`
	Problems  []string    `json:"problems,omitempty"`
}

func newStatusCmd() *cobra.Command {
	var (
		cfgPath, format string
		addrs           []string
	)
	cmd := &cobra.Command{
		Use:   "status --config FILE [--format text|json] [--metrics-addr HOST:PORT ...]",
		Short: "Show every pipeline's position, lag, last error and recent conflicts",
		Long: `Show, per pipeline, the position stored in its target region, the
conflicts recorded in the last hour, and, from a running regiond that
answers at metrics_addr (or each --metrics-addr), its state, lag and last
error. Exit code 1 when a region cannot be read or a running pipeline
neither streams nor stands by.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if format != "text" && format != "json" {
				return usagef("--format %q: use text or json", format)
			}
			cfg, err := loadConfig(cfgPath)
			if err != nil {
				return err
			}
			if len(addrs) == 0 && cfg.MetricsAddr != "" {
				addrs = []string{cfg.MetricsAddr}
			}
			rep := collectStatus(cmd.Context(), cfg, addrs)
			if err := printStatus(cmd.OutOrStdout(), format, rep); err != nil {
				return err
			}
			bad := len(rep.Problems)
			for _, r := range rep.Pipelines {
				if r.Problem != "" || r.State != "" && r.State != "streaming" && r.State != "standby" {
					bad++
				}
			}
			if bad > 0 {
				return silentError{fmt.Errorf("status: %d problems", bad)}
			}
			return nil
		},
	}
	cmd.Flags().StringVarP(&cfgPath, "config", "c", "", "config file (YAML)")
	cmd.Flags().StringVar(&format, "format", "text", "text or json")
	cmd.Flags().StringSliceVar(&addrs, "metrics-addr", nil, "ask the regiond serving here (default: metrics_addr); repeat for one process per region")
	return cmd
}

// expectedPipelines lists the pipelines `run` would run for cfg: from every
// region into every other, and each region's own when a rule needs it.
func expectedPipelines(cfg *config.Config) []statusRow {
	needLocal := false
	for _, t := range cfg.Tables {
		needLocal = needLocal || t.Rule() == config.RuleLastWriterWins || t.Rule() == config.RuleHomeRegion
	}
	var out []statusRow
	for _, dst := range cfg.Regions {
		for _, src := range cfg.Regions {
			if src.Name == dst.Name && !needLocal {
				continue
			}
			out = append(out, statusRow{Pipeline: pipelineName(src.Name, dst.Name), Source: src.Name, Target: dst.Name})
		}
	}
	return out
}

func collectStatus(ctx context.Context, cfg *config.Config, addrs []string) statusReport {
	rows := expectedPipelines(cfg)
	rep := statusReport{Daemons: []string{}}
	byName := map[string]*statusRow{}
	for i := range rows {
		byName[rows[i].Pipeline] = &rows[i]
	}
	for _, r := range cfg.Regions {
		cps, conflicts, err := readRegionStatus(ctx, r)
		for i := range rows {
			if rows[i].Target != r.Name {
				continue
			}
			if err != nil {
				rows[i].Problem = fmt.Sprintf("region %s: %v", r.Name, err)
				continue
			}
			if cp, ok := cps[rows[i].Pipeline]; ok {
				rows[i].Position, rows[i].Epoch = cp.position, cp.epoch
				at := cp.updated
				rows[i].UpdatedAt = &at
			}
			rows[i].Conflicts1h = conflicts[rows[i].Pipeline]
		}
	}
	for _, addr := range addrs {
		ds, err := askDaemon(ctx, addr)
		if err != nil {
			rep.Problems = append(rep.Problems, fmt.Sprintf("no regiond answers at %s: %v", addr, err))
			continue
		}
		rep.Daemons = append(rep.Daemons, addr)
		for _, p := range ds.Pipelines {
			row := byName[p.Pipeline]
			if row == nil {
				continue
			}
			// With two processes for a region (HA), the leader's view wins.
			if row.Leader != nil && *row.Leader && !p.Leader {
				continue
			}
			leader := p.Leader
			row.State, row.Leader, row.LagSeconds, row.LagBytes, row.LastError = p.State, &leader, p.LagSeconds, p.LagBytes, p.LastError
		}
	}
	rep.Pipelines = rows
	return rep
}

type storedCheckpoint struct {
	position string
	epoch    int64
	updated  time.Time
}

// readRegionStatus reads a region's checkpoints and its conflicts of the
// last hour per pipeline. A region regiond never wrote to has neither.
func readRegionStatus(ctx context.Context, r config.Region) (map[string]storedCheckpoint, map[string]int, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	var (
		db          *sql.DB
		err         error
		cpT, confT  = "`regiond_checkpoints`", "`regiond_conflicts`"
		placeholder = "?"
	)
	switch r.Engine {
	case config.EngineMySQL:
		p, perr := mysqlParams(r)
		if perr != nil {
			return nil, nil, perr
		}
		db, err = mysqlconn.Open(p)
	case config.EnginePostgres:
		db, err = sql.Open("pgx", r.DSN)
		cpT, confT = pgconn.Ident(r.Schema, pgconn.CheckpointTable), pgconn.Ident(r.Schema, pgconn.ConflictTable)
		placeholder = "$1"
	default:
		return nil, nil, fmt.Errorf("unknown engine %q", r.Engine)
	}
	if err != nil {
		return nil, nil, err
	}
	defer db.Close()
	cps := map[string]storedCheckpoint{}
	rows, err := db.QueryContext(ctx, "SELECT pipeline, position, epoch, updated_at FROM "+cpT+" WHERE kind = 'pipeline'")
	if err != nil {
		if missingTable(err) {
			return cps, map[string]int{}, nil
		}
		return nil, nil, err
	}
	for rows.Next() {
		var (
			name string
			cp   storedCheckpoint
			at   any
		)
		if err := rows.Scan(&name, &cp.position, &cp.epoch, &at); err != nil {
			rows.Close()
			return nil, nil, err
		}
		cp.updated = parseTime(at)
		cps[name] = cp
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, nil, err
	}
	conflicts := map[string]int{}
	since := time.Now().Add(-time.Hour).UTC().Format("2006-01-02 15:04:05.000000")
	rows, err = db.QueryContext(ctx, "SELECT pipeline, COUNT(*) FROM "+confT+" WHERE detected_at >= "+placeholder+" GROUP BY pipeline", since)
	if err != nil {
		if missingTable(err) {
			return cps, conflicts, nil
		}
		return nil, nil, err
	}
	defer rows.Close()
	for rows.Next() {
		var (
			name string
			n    int
		)
		if err := rows.Scan(&name, &n); err != nil {
			return nil, nil, err
		}
		conflicts[name] = n
	}
	return cps, conflicts, rows.Err()
}

func missingTable(err error) bool {
	return strings.Contains(err.Error(), "doesn't exist") || strings.Contains(err.Error(), "does not exist")
}

// askDaemon reads a running regiond's /status.
func askDaemon(ctx context.Context, addr string) (*daemonStatus, error) {
	ctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	host := addr
	if strings.HasPrefix(host, ":") {
		host = "127.0.0.1" + host
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+host+"/status", nil)
	if err != nil {
		return nil, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("/status answered %s", resp.Status)
	}
	var ds daemonStatus
	if err := json.NewDecoder(io.LimitReader(resp.Body, 4<<20)).Decode(&ds); err != nil {
		return nil, fmt.Errorf("/status: %w", err)
	}
	return &ds, nil
}

func printStatus(w io.Writer, format string, rep statusReport) error {
	sort.SliceStable(rep.Pipelines, func(i, j int) bool { return rep.Pipelines[i].Pipeline < rep.Pipelines[j].Pipeline })
	if format == "json" {
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		return enc.Encode(rep)
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "PIPELINE\tSTATE\tLEADER\tPOSITION\tLAG\tLAST WRITE\tCONFLICTS 1H\tLAST ERROR")
	now := time.Now()
	for _, r := range rep.Pipelines {
		state, leader, lag, last, errText := "?", "-", "-", "-", r.LastError
		if r.State != "" {
			state = r.State
		}
		if r.Leader != nil {
			leader = "no"
			if *r.Leader {
				leader = fmt.Sprintf("yes (epoch %d)", r.Epoch)
			}
		}
		if r.LagSeconds != nil {
			lag = (time.Duration(*r.LagSeconds * float64(time.Second))).Round(time.Millisecond).String()
		}
		if r.UpdatedAt != nil {
			last = now.Sub(*r.UpdatedAt).Round(time.Second).String() + " ago"
		}
		pos := r.Position
		if pos == "" {
			pos = "(none yet)"
		}
		if r.Problem != "" {
			state, errText = "unreadable", r.Problem
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%d\t%s\n", r.Pipeline, state, leader, pos, lag, last, r.Conflicts1h, oneLine(errText))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if len(rep.Daemons) == 0 && len(rep.Problems) == 0 {
		fmt.Fprintln(w, "(no metrics_addr configured: state, lag and errors come from a running regiond; pass --metrics-addr)")
	}
	for _, p := range rep.Problems {
		fmt.Fprintln(w, "problem:", p)
	}
	return nil
}

// oneLine keeps a table row on one line.
func oneLine(s string) string {
	s = strings.ReplaceAll(s, "\n", " ")
	if len(s) > 160 {
		s = s[:157] + "..."
	}
	return s
}
