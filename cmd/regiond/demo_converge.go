package main

// PROVISIONAL (demo branch only): replaced by verify before merging.

import (
	"context"
	"database/sql"
	"fmt"
	"io"
	"slices"
	"time"

	"github.com/regiond/regiond/config"
	"github.com/regiond/regiond/internal/dbtest"
)

func demoConverge(ctx context.Context, out io.Writer, cfg *config.Config) error {
	var regs []dbtest.Region
	for _, r := range cfg.Regions {
		driver, dsn := "mysql", ""
		if r.Engine == "postgres" {
			driver, dsn = "pgx", r.DSN+"&timezone=UTC"
		} else {
			d, _ := config.ParseMySQLDSN(r.DSN)
			dsn = fmt.Sprintf("%s@tcp(%s:%d)/%s", d.User, d.Host, d.Port, d.Database)
		}
		db, err := sql.Open(driver, dsn)
		if err != nil {
			return err
		}
		defer db.Close()
		regs = append(regs, dbtest.Region{Name: r.Name, Engine: r.Engine, DB: db})
	}
	deadline := time.Now().Add(convergeTimeout)
	for {
		same := true
		for _, tb := range cfg.TableNames() {
			first, err := dbtest.DumpCanonical(ctx, regs[0], tb)
			if err != nil {
				return err
			}
			for _, r := range regs[1:] {
				d, err := dbtest.DumpCanonical(ctx, r, tb)
				if err != nil {
					return err
				}
				same = same && slices.Equal(first, d)
			}
		}
		if same {
			fmt.Fprintln(out, "converged")
			return nil
		}
		if time.Now().After(deadline) {
			return errNotConverged
		}
		time.Sleep(time.Second)
	}
}
