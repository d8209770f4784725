package main

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	_ "github.com/jackc/pgx/v5/stdlib" // database/sql driver "pgx", to read Postgres regions' conflict logs
	"github.com/spf13/cobra"

	"github.com/regiond/regiond/config"
	"github.com/regiond/regiond/internal/mysqlconn"
	"github.com/regiond/regiond/internal/pgconn"
)

// conflictRow is one row of a region's regiond_conflicts, as `conflicts`
// reports it.
type conflictRow struct {
	Region     string          `json:"region"`
	ID         int64           `json:"id"`
	DetectedAt time.Time       `json:"detected_at"`
	Pipeline   string          `json:"pipeline"`
	Table      string          `json:"table"`
	Key        json.RawMessage `json:"key"`
	Rule       string          `json:"rule"`
	Winner     string          `json:"winner_region"`
	Loser      string          `json:"loser_region"`
	Kept       json.RawMessage `json:"kept_image"`
	Lost       json.RawMessage `json:"lost_image"`
	Reason     string          `json:"reason"`
	Position   string          `json:"source_position"`
}

func newConflictsCmd() *cobra.Command {
	var (
		cfgPath, table, region, format string
		since                          time.Duration
		limit                          int
	)
	cmd := &cobra.Command{
		Use:   "conflicts --config FILE [--since 24h] [--table T] [--region R] [--format text|json]",
		Short: "List the changes conflict rules discarded (regiond_conflicts of every region)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if format != "text" && format != "json" {
				return usagef("--format %q: use text or json", format)
			}
			cfg, err := loadConfig(cfgPath)
			if err != nil {
				return err
			}
			if err := checkRegionFlag(cfg, region); err != nil {
				return err
			}
			if table != "" {
				if _, ok := cfg.Tables[table]; !ok {
					return usagef("--table %q is not a table of the config", table)
				}
			}
			var all []conflictRow
			var failed []string
			for _, r := range cfg.Regions {
				if region != "" && r.Name != region {
					continue
				}
				rows, err := readConflicts(cmd.Context(), r, time.Now().Add(-since), table, limit)
				if err != nil {
					failed = append(failed, fmt.Sprintf("region %s: %v", r.Name, err))
					continue
				}
				all = append(all, rows...)
			}
			if err := printConflicts(cmd.OutOrStdout(), format, all); err != nil {
				return err
			}
			if len(failed) > 0 {
				return fmt.Errorf("could not read every region's conflicts:\n  %s", strings.Join(failed, "\n  "))
			}
			return nil
		},
	}
	cmd.Flags().StringVarP(&cfgPath, "config", "c", "", "config file (YAML)")
	cmd.Flags().DurationVar(&since, "since", 24*time.Hour, "only conflicts detected within this long")
	cmd.Flags().StringVar(&table, "table", "", "only this table")
	cmd.Flags().StringVar(&region, "region", "", "only the conflicts recorded in this region")
	cmd.Flags().StringVar(&format, "format", "text", "text or json")
	cmd.Flags().IntVar(&limit, "limit", 1000, "at most this many per region (newest first)")
	return cmd
}

// readConflicts reads one region's conflict log. A region whose log does
// not exist yet (no pipeline ran into it) has no conflicts.
func readConflicts(ctx context.Context, r config.Region, since time.Time, table string, limit int) ([]conflictRow, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	var (
		db   *sql.DB
		err  error
		ph   = func(int) string { return "?" }
		name = "`regiond_conflicts`"
	)
	switch r.Engine {
	case config.EngineMySQL:
		p, perr := mysqlParams(r)
		if perr != nil {
			return nil, perr
		}
		db, err = mysqlconn.Open(p)
	case config.EnginePostgres:
		db, err = sql.Open("pgx", r.DSN)
		ph = func(i int) string { return fmt.Sprintf("$%d", i) }
		name = pgconn.Ident(r.Schema, "regiond_conflicts")
	}
	if err != nil {
		return nil, err
	}
	defer db.Close()
	q := "SELECT id, detected_at, pipeline, table_name, pk, rule, winner_region, loser_region, kept_image, lost_image, reason, source_position FROM " +
		name + " WHERE detected_at >= " + ph(1)
	args := []any{since.UTC().Format("2006-01-02 15:04:05.000000")}
	if table != "" {
		q += " AND table_name = " + ph(2)
		args = append(args, table)
	}
	q += fmt.Sprintf(" ORDER BY id DESC LIMIT %d", limit)
	rows, err := db.QueryContext(ctx, q, args...)
	if err != nil {
		if strings.Contains(err.Error(), "doesn't exist") || strings.Contains(err.Error(), "does not exist") {
			return nil, nil
		}
		return nil, err
	}
	defer rows.Close()
	var out []conflictRow
	for rows.Next() {
		var (
			c          conflictRow
			at         any
			key        string
			kept, lost sql.NullString
		)
		if err := rows.Scan(&c.ID, &at, &c.Pipeline, &c.Table, &key, &c.Rule, &c.Winner, &c.Loser, &kept, &lost, &c.Reason, &c.Position); err != nil {
			return nil, err
		}
		c.Region = r.Name
		c.DetectedAt = parseTime(at)
		c.Key = json.RawMessage(key)
		c.Kept, c.Lost = rawJSON(kept), rawJSON(lost)
		out = append(out, c)
	}
	return out, rows.Err()
}

func parseTime(v any) time.Time {
	switch x := v.(type) {
	case time.Time:
		return x.UTC()
	case []byte:
		t, _ := time.Parse("2006-01-02 15:04:05.999999", string(x))
		return t
	case string:
		t, _ := time.Parse("2006-01-02 15:04:05.999999", x)
		return t
	}
	return time.Time{}
}

func rawJSON(s sql.NullString) json.RawMessage {
	if !s.Valid || !json.Valid([]byte(s.String)) {
		return json.RawMessage("null")
	}
	return json.RawMessage(s.String)
}

func printConflicts(w io.Writer, format string, rows []conflictRow) error {
	if format == "json" {
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		if rows == nil {
			rows = []conflictRow{}
		}
		return enc.Encode(rows)
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "DETECTED (UTC)\tREGION\tTABLE\tKEY\tRULE\tKEPT FROM\tDISCARDED FROM\tPOSITION\tREASON")
	for _, c := range rows {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", c.DetectedAt.Format("2006-01-02 15:04:05.000"), c.Region, c.Table,
			string(c.Key), c.Rule, c.Winner, c.Loser, c.Position, c.Reason)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	_, err := fmt.Fprintf(w, "%d conflicts\n", len(rows))
	return err
}
