package verify

import (
	"context"
	"log/slog"
	"strings"
	"testing"

	"github.com/regiond/regiond/config"
	"github.com/regiond/regiond/internal/pgconn"
	"github.com/regiond/regiond/internal/testenv"
	mysqlsink "github.com/regiond/regiond/sink/mysql"
)

// TestRepairOnlyWhatVerifyRead: a repair writes the winning rows through the
// marker into a MariaDB and a PostgreSQL region, but leaves alone a row that
// changed after verify read it, and reports it as not repaired.
func TestRepairOnlyWhatVerifyRead(t *testing.T) {
	ctx := context.Background()
	m := testenv.MariaDB(t, 1)
	p := testenv.Postgres(t)
	cfg := &config.Config{
		Regions: []config.Region{
			{Name: "m", Engine: config.EngineMySQL, DSN: m.URL("app")},
			{Name: "p", Engine: config.EnginePostgres, DSN: p.URL("app")},
			{Name: "q", Engine: config.EnginePostgres, DSN: p.URL("app2")},
		},
		Tables: map[string]config.Table{"t": {}},
	}
	v, err := newVerifier(ctx, Options{Config: cfg, Regions: []string{"m", "p"}})
	if err == nil {
		t.Fatal("newVerifier accepted a table missing in both regions")
	}
	exec(t, openDB(t, cfg.Regions[0]), "CREATE TABLE t (id BIGINT PRIMARY KEY, v VARCHAR(20), flag TINYINT(1))",
		"INSERT INTO t VALUES (1, 'a', 0), (2, 'b', 1), (3, 'c', 0), (4, 'd', 1)")
	pdb := openDB(t, cfg.Regions[1])
	exec(t, pdb, "CREATE TABLE t (id bigint PRIMARY KEY, v varchar(20), flag boolean)",
		"INSERT INTO t VALUES (1, 'a', false), (2, 'B', true), (3, 'c', true), (5, 'e', false)")
	// regiond's own tables, as the first pipeline into each region makes them.
	a, err := mysqlsink.New(mysqlsink.Config{Pipeline: "x", Target: "m", Conn: mysqlParams(mustDSN(t, m.URL("app"))), Tables: []string{"t"}}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	if _, err := a.Open(ctx); err != nil {
		t.Fatal(err)
	}
	pc, err := pgconn.Connect(ctx, p.URL("app"))
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close(ctx)
	if err := pgconn.EnsureTables(ctx, pc, "public"); err != nil {
		t.Fatal(err)
	}

	v, err = newVerifier(ctx, Options{Config: cfg, Regions: []string{"m", "p"}})
	if err != nil {
		t.Fatal(err)
	}
	defer v.close()
	res, err := v.compare(ctx, v.tables[0])
	if err != nil {
		t.Fatal(err)
	}
	var keys []string
	for _, d := range res.diffs {
		keys = append(keys, d.Key)
	}
	if got := strings.Join(keys, " "); got != `{"id":2} {"id":3} {"id":4} {"id":5}` {
		t.Fatalf("differences %s", got)
	}
	// After verify read them: row 3 changes in p, row 4 appears in p.
	exec(t, pdb, "UPDATE t SET v = 'late' WHERE id = 3", "INSERT INTO t VALUES (4, 'late', false)")
	rr, err := v.repairTable(ctx, v.tables[0], res.diffs, 0) // m's rows win
	if err != nil {
		t.Fatal(err)
	}
	var done, skipped []string
	for _, a := range rr.Repaired {
		done = append(done, a.Key+" "+a.Action)
	}
	for _, a := range rr.NotRepaired {
		skipped = append(skipped, a.Key)
	}
	if got := strings.Join(done, ", "); got != `{"id":2} update, {"id":5} delete` {
		t.Errorf("repaired %s", got)
	}
	if got := strings.Join(skipped, ", "); got != `{"id":3}, {"id":4}` {
		t.Errorf("not repaired %s", got)
	}
	var val string
	if err := pdb.QueryRow("SELECT v FROM t WHERE id = 3").Scan(&val); err != nil || val != "late" {
		t.Errorf("row 3 in p: %q %v, want the late write kept", val, err)
	}
	var seq int64
	if err := pdb.QueryRow("SELECT seq FROM regiond_checkpoints WHERE pipeline = $1 AND kind = 'marker'", RepairMarker).Scan(&seq); err != nil || seq < 1 {
		t.Errorf("repair marker in p: seq %d, %v", seq, err)
	}
	res, err = v.compare(ctx, v.tables[0])
	if err != nil {
		t.Fatal(err)
	}
	keys = keys[:0]
	for _, d := range res.diffs {
		keys = append(keys, d.Key)
	}
	if got := strings.Join(keys, " "); got != `{"id":3} {"id":4}` {
		t.Errorf("after the repair: differences %s, want the two rows written late", got)
	}
}

func mustDSN(t *testing.T, dsn string) config.MySQLDSN {
	t.Helper()
	d, err := config.ParseMySQLDSN(dsn)
	if err != nil {
		t.Fatal(err)
	}
	return d
}
