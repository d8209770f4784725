// Package demo is `regiond demo`: throwaway local regions (MariaDB and
// PostgreSQL servers started by the project's own scripts/testdb.sh), a
// config for them, and a workload of concurrent, conflicting writes in every
// region. The command in cmd/regiond runs the pipelines in-process on top of
// it and proves that the regions converge.
package demo

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	_ "github.com/go-sql-driver/mysql" // database/sql driver for the MariaDB regions
	_ "github.com/jackc/pgx/v5/stdlib" // database/sql driver "pgx" for the PostgreSQL regions

	"github.com/regiond/regiond/internal/testenv"
)

// regionNames names the demo's regions in order; --regions takes a prefix.
var regionNames = []string{"east", "west", "south", "north", "central", "pacific", "atlantic", "arctic"}

// MaxRegions is the most regions a demo runs.
var MaxRegions = len(regionNames)

// Region is one demo region: a private database server and a connection.
type Region struct {
	Name   string
	Engine string // "mysql" (MariaDB) or "postgres"
	Server *testenv.Server
	DB     *sql.DB
}

// Cluster is the demo's regions and the config file that connects them.
type Cluster struct {
	Dir        string // holds every server's data, the config, state and logs
	Regions    []*Region
	ConfigPath string
}

// tables is the demo schema, one table per conflict rule.
var tables = map[string][]string{
	"mysql": {
		"CREATE TABLE accounts (id BIGINT NOT NULL PRIMARY KEY, home VARCHAR(16) NOT NULL, owner VARCHAR(64) NOT NULL, balance DECIMAL(20,2) NOT NULL, updated_at DATETIME(6) NOT NULL)",
		"CREATE TABLE profiles (id BIGINT NOT NULL PRIMARY KEY, name VARCHAR(64) NOT NULL, city VARCHAR(64) NOT NULL, v BIGINT NOT NULL)",
		"CREATE TABLE orders (id BIGINT NOT NULL PRIMARY KEY, region VARCHAR(16) NOT NULL, item VARCHAR(64) NOT NULL, qty INT NOT NULL, placed_at DATETIME(6) NOT NULL)",
	},
	"postgres": {
		"CREATE TABLE accounts (id bigint PRIMARY KEY, home varchar(16) NOT NULL, owner varchar(64) NOT NULL, balance numeric(20,2) NOT NULL, updated_at timestamp(6) NOT NULL)",
		"ALTER TABLE accounts REPLICA IDENTITY FULL",
		"CREATE TABLE profiles (id bigint PRIMARY KEY, name varchar(64) NOT NULL, city varchar(64) NOT NULL, v bigint NOT NULL)",
		"ALTER TABLE profiles REPLICA IDENTITY FULL",
		"CREATE TABLE orders (id bigint PRIMARY KEY, region varchar(16) NOT NULL, item varchar(64) NOT NULL, qty integer NOT NULL, placed_at timestamp(6) NOT NULL)",
	},
}

// configTables is the tables block of the demo config.
const configTables = `tables:
  accounts: {conflict: home_region, home_column: home}
  profiles: {conflict: last_writer_wins, version_column: v}
  orders: {}
`

// engineFor picks region i's engine: every third region is PostgreSQL, so
// three regions are two MariaDB and one PostgreSQL.
func engineFor(i int) string {
	if i%3 == 2 {
		return testenv.EnginePostgres
	}
	return testenv.EngineMySQL
}

// Start starts n regions' servers under dir (which must not exist yet or be
// empty), creates the demo tables in each and writes the config. progress
// gets one line per server started. On error, whatever started is removed.
func Start(ctx context.Context, dir string, n int, progress func(string)) (_ *Cluster, err error) {
	if n < 2 || n > MaxRegions {
		return nil, fmt.Errorf("demo: %d regions: choose 2 to %d", n, MaxRegions)
	}
	c := &Cluster{Dir: dir}
	defer func() {
		if err != nil {
			_ = c.Close()
		}
	}()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	// PostgreSQL runs as the postgres OS user, which must reach its directory.
	if err := os.Chmod(dir, 0o755); err != nil {
		return nil, err
	}
	for i := range n {
		r := &Region{Name: regionNames[i], Engine: engineFor(i)}
		sdir := filepath.Join(dir, r.Name)
		if r.Engine == testenv.EnginePostgres {
			r.Server, err = testenv.StartPostgres(ctx, sdir)
		} else {
			r.Server, err = testenv.StartMariaDB(ctx, sdir, i+1)
		}
		if err != nil {
			return nil, fmt.Errorf("starting region %s: %w", r.Name, err)
		}
		c.Regions = append(c.Regions, r)
		if r.DB, err = open(r); err != nil {
			return nil, fmt.Errorf("region %s: %w", r.Name, err)
		}
		if err := createSchema(ctx, r, i, n); err != nil {
			return nil, fmt.Errorf("region %s: %w", r.Name, err)
		}
		progress(fmt.Sprintf("region %-8s %s on %s", r.Name, engineLabel(r.Engine), r.Server.Addr()))
	}
	c.ConfigPath = filepath.Join(dir, "regiond.yaml")
	if err := os.WriteFile(c.ConfigPath, []byte(c.config()), 0o600); err != nil {
		return nil, err
	}
	return c, nil
}

func engineLabel(engine string) string {
	if engine == testenv.EnginePostgres {
		return "PostgreSQL"
	}
	return "MariaDB"
}

func open(r *Region) (*sql.DB, error) {
	driver, dsn := "mysql", r.Server.DriverDSN("app")
	if r.Engine == testenv.EnginePostgres {
		driver, dsn = "pgx", r.Server.DriverDSN("app")+"&timezone=UTC"
	}
	db, err := sql.Open(driver, dsn)
	if err != nil {
		return nil, err
	}
	db.SetMaxOpenConns(4)
	return db, nil
}

// createSchema creates the demo tables; on MariaDB it also gives the region
// its own auto-increment sequence, as `regiond check` asks.
func createSchema(ctx context.Context, r *Region, i, n int) error {
	stmts := tables[r.Engine]
	if r.Engine == testenv.EngineMySQL {
		stmts = append([]string{fmt.Sprintf("SET GLOBAL auto_increment_increment = %d, GLOBAL auto_increment_offset = %d", n, i+1)}, stmts...)
	}
	for _, s := range stmts {
		if _, err := r.DB.ExecContext(ctx, s); err != nil {
			return fmt.Errorf("%s: %w", s, err)
		}
	}
	return nil
}

// config is the regiond config for the cluster.
func (c *Cluster) config() string {
	var b strings.Builder
	b.WriteString("# written by regiond demo\nregions:\n")
	for _, r := range c.Regions {
		fmt.Fprintf(&b, "  - name: %s\n    engine: %s\n    dsn: %s\n", r.Name, r.Engine, r.Server.URL("app"))
	}
	b.WriteString(configTables)
	fmt.Fprintf(&b, "state_dir: %s\n", filepath.Join(c.Dir, "state"))
	return b.String()
}

// WaitPipelines waits until every pipeline into every region (local ones
// included) stored its start position: from then on every write replicates.
func (c *Cluster) WaitPipelines(ctx context.Context, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	for _, dst := range c.Regions {
		for _, src := range c.Regions {
			name := src.Name + "->" + dst.Name
			for {
				var n int
				err := dst.DB.QueryRowContext(ctx, "SELECT COUNT(*) FROM regiond_checkpoints WHERE pipeline = '"+name+"'").Scan(&n)
				if err == nil && n == 1 {
					break
				}
				select {
				case <-ctx.Done():
					return fmt.Errorf("pipeline %s did not start within %v (see the log)", name, timeout)
				case <-time.After(100 * time.Millisecond):
				}
			}
		}
	}
	return nil
}

// Close closes the connections, stops every server and removes Dir.
func (c *Cluster) Close() error {
	var errs []error
	for _, r := range c.Regions {
		if r.DB != nil {
			r.DB.Close()
		}
		if r.Server != nil {
			errs = append(errs, r.Server.Destroy())
		}
	}
	errs = append(errs, os.RemoveAll(c.Dir))
	return errors.Join(errs...)
}
