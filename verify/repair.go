package verify

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/stdlib"

	"github.com/regiond/regiond/config"
	"github.com/regiond/regiond/conflict"
	"github.com/regiond/regiond/internal/pgconn"
	mysqlsink "github.com/regiond/regiond/sink/mysql"
	pgsink "github.com/regiond/regiond/sink/postgres"
	"github.com/regiond/regiond/snapshot"
	"github.com/regiond/regiond/source"
)

// RepairMarker names the marker row (kind 'marker') in regiond_checkpoints
// that opens every repair transaction, so that no reader replicates a
// repair (DESIGN.md §Loop prevention). Its seq changes with every write.
const RepairMarker = "verify-repair"

// RepairReport is what --repair did to one table.
type RepairReport struct {
	Table       string         `json:"table"`
	Rule        string         `json:"rule"`
	Repaired    []RepairAction `json:"repaired"`
	NotRepaired []RepairAction `json:"not_repaired"`
}

// RepairAction is one write (or skipped write) of a repair.
type RepairAction struct {
	Key    string `json:"key"`
	Region string `json:"region"`           // the region written
	Action string `json:"action"`           // insert, update or delete
	From   string `json:"from,omitempty"`   // the region whose row won
	Reason string `json:"reason,omitempty"` // why it was not repaired
}

// Repair compares the tables, fixes every difference by the table's rule
// and compares again. source names the region whose rows win for
// apply_remote tables; it is required when one of the tables is
// apply_remote (ErrRefused otherwise, naming the table).
func Repair(ctx context.Context, opts Options, sourceRegion string) (*Report, error) {
	v, err := newVerifier(ctx, opts)
	if err != nil {
		return nil, err
	}
	defer v.close()
	src := -1
	if sourceRegion != "" {
		for i, r := range v.regions {
			if r.name == sourceRegion {
				src = i
			}
		}
		if src < 0 {
			return nil, fmt.Errorf("%w: --source %s is not one of the compared regions (%s)", ErrRefused, sourceRegion, strings.Join(v.regionNames(), ","))
		}
	}
	for _, t := range v.tables {
		if t.Rule == config.RuleApplyRemote && src < 0 {
			return nil, fmt.Errorf("%w: table %s is apply_remote: --repair needs --source REGION naming the region whose rows are right", ErrRefused, t.Name)
		}
	}
	rep := &Report{Regions: v.regionNames()}
	for _, t := range v.tables {
		res, err := v.compare(ctx, t)
		if err != nil {
			return nil, err
		}
		rep.Before = append(rep.Before, res.TableReport)
		if len(res.diffs) == 0 {
			continue
		}
		rr, err := v.repairTable(ctx, t, res.diffs, src)
		if err != nil {
			return nil, err
		}
		rep.Repairs = append(rep.Repairs, *rr)
	}
	for _, t := range v.tables {
		res, err := v.compare(ctx, t)
		if err != nil {
			return nil, err
		}
		rep.Tables = append(rep.Tables, res.TableReport)
	}
	return rep, nil
}

// fix is the write one region needs for one difference.
type fix struct {
	d      *Difference
	want   source.Row // the winning row, in the layout of region from; nil: no row
	from   int        // region index of the winning row
	expect source.Row // the region's row as verify read it; nil: no row
}

func (f fix) action() string {
	switch {
	case f.want == nil:
		return "delete"
	case f.expect == nil:
		return "insert"
	}
	return "update"
}

// repairTable decides each difference by t's rule and writes the winners.
func (v *verifier) repairTable(ctx context.Context, t *table, diffs []*Difference, src int) (*RepairReport, error) {
	rr := &RepairReport{Table: t.Name, Rule: t.Rule, Repaired: []RepairAction{}, NotRepaired: []RepairAction{}}
	perRegion := make([][]fix, len(v.regions))
	for _, d := range diffs {
		from, reason := v.winner(t, d, src)
		if from < 0 {
			for _, r := range v.regions {
				rr.NotRepaired = append(rr.NotRepaired, RepairAction{Key: d.Key, Region: r.name, Reason: reason})
			}
			continue
		}
		want := d.images[v.regions[from].name]
		for ri, r := range v.regions {
			have := d.images[r.name]
			if (want == nil) == (have == nil) && (want == nil || len(t.differingColumns(from, want, ri, have)) == 0) {
				continue
			}
			perRegion[ri] = append(perRegion[ri], fix{d: d, want: want, from: from, expect: have})
		}
	}
	for ri, fixes := range perRegion {
		if len(fixes) == 0 {
			continue
		}
		done, skipped, err := v.writeFixes(ctx, t, ri, fixes)
		if err != nil {
			return nil, err
		}
		rr.Repaired = append(rr.Repaired, done...)
		rr.NotRepaired = append(rr.NotRepaired, skipped...)
	}
	return rr, nil
}

// winner returns the index of the region whose row (or absence) wins under
// t's rule, or -1 and why none can be chosen.
func (v *verifier) winner(t *table, d *Difference, src int) (int, string) {
	switch t.Rule {
	case config.RuleApplyRemote:
		return src, ""
	case config.RuleLastWriterWins:
		best, bestState := -1, conflict.State{}
		for ri, r := range v.regions {
			img := d.images[r.name]
			if img == nil {
				continue
			}
			def := t.per[ri].Def
			vc := indexOfColumn(t.per[ri], t.VersionColumn)
			ver, err := conflict.ParseVersion(img[vc])
			if err != nil {
				return -1, fmt.Sprintf("region %s: version column %s: %v", r.name, t.VersionColumn, err)
			}
			st := conflict.State{Kind: conflict.Row, Version: ver, Hash: conflict.RowHash(def, img)}
			if best < 0 || bestState.Less(st) {
				best, bestState = ri, st
			}
		}
		return best, ""
	case config.RuleHomeRegion:
		// The home is what the home region's own row says; a region whose
		// row names another home is not the row's home.
		home := -1
		named := map[string]bool{}
		for ri, r := range v.regions {
			img := d.images[r.name]
			if img == nil {
				continue
			}
			h, _ := conflict.Normalize(img[indexOfColumn(t.per[ri], t.HomeColumn)])
			named[h] = true
			if h == r.name {
				if home >= 0 {
					return -1, "two regions each hold the row with themselves as its home"
				}
				home = ri
			}
		}
		if home >= 0 {
			return home, ""
		}
		if len(named) == 1 {
			for h := range named {
				for ri, r := range v.regions {
					if r.name == h {
						return ri, "" // the home has no row: the row goes
					}
				}
				return -1, fmt.Sprintf("home region %s is not compared: add it to --regions", h)
			}
		}
		return -1, "the regions' rows name different homes and none is its own home"
	}
	return -1, "unknown rule " + t.Rule
}

// writeFixes writes fixes into region ri in one transaction that begins
// with the repair marker; each write happens only when the region's row is
// still what verify read (checked under a row lock), else it is reported
// as not repaired.
func (v *verifier) writeFixes(ctx context.Context, t *table, ri int, fixes []fix) (done, skipped []RepairAction, err error) {
	reg := v.regions[ri]
	st := t.per[ri]
	conn, err := reg.db.SQL.Conn(ctx)
	if err != nil {
		return nil, nil, fmt.Errorf("region %s: connect: %w", reg.name, err)
	}
	defer conn.Close()
	var pgStmts map[int]*pgsink.RowStatements
	if reg.engine == config.EnginePostgres {
		if pgStmts, err = v.pgStatements(ctx, conn, t, ri, fixes); err != nil {
			return nil, nil, err
		}
		if _, err := conn.ExecContext(ctx, "SET session_replication_role = replica"); err != nil {
			return nil, nil, fmt.Errorf("region %s: SET session_replication_role = replica (repairs are written like the appliers' writes, without firing triggers): %w; make the user a superuser or GRANT SET ON PARAMETER session_replication_role", reg.name, err)
		}
		defer conn.ExecContext(context.WithoutCancel(ctx), "RESET session_replication_role")
	} else {
		if _, err := conn.ExecContext(ctx, "SET SESSION sql_mode = 'STRICT_ALL_TABLES,NO_AUTO_VALUE_ON_ZERO,NO_ENGINE_SUBSTITUTION'"); err != nil {
			return nil, nil, fmt.Errorf("region %s: %w", reg.name, err)
		}
	}
	tx, err := conn.BeginTx(ctx, &sql.TxOptions{Isolation: sql.LevelReadCommitted})
	if err != nil {
		return nil, nil, fmt.Errorf("region %s: begin: %w", reg.name, err)
	}
	defer tx.Rollback()
	if err := writeMarker(ctx, tx, reg.db); err != nil {
		return nil, nil, err
	}
	keys := make([]snapshot.Key, len(fixes))
	for i, f := range fixes {
		keys[i] = f.d.key
	}
	current, err := st.ReadKeys(ctx, tx, keys, true)
	if err != nil {
		return nil, nil, err
	}
	now := map[string]source.Row{}
	for _, row := range current {
		now[keyString(st.KeyOf(row))] = row
	}
	for _, f := range fixes {
		act := RepairAction{Key: f.d.Key, Region: reg.name, Action: f.action(), From: v.regions[f.from].name}
		cur := now[keyString(f.d.key)]
		if (cur == nil) != (f.expect == nil) || cur != nil && len(t.differingColumns(ri, cur, ri, f.expect)) > 0 {
			act.Reason = "the row changed since verify read it (unsettled)"
			skipped = append(skipped, act)
			continue
		}
		ok, err := v.writeFix(ctx, tx, t, ri, f, cur, pgStmts)
		if err != nil {
			return nil, nil, fmt.Errorf("region %s: table %s: repair %s: %w", reg.name, t.Name, f.d.Key, err)
		}
		if !ok {
			act.Reason = "the row appeared since verify read it (unsettled)"
			skipped = append(skipped, act)
			continue
		}
		done = append(done, act)
	}
	if err := tx.Commit(); err != nil {
		return nil, nil, fmt.Errorf("region %s: table %s: commit repair: %w", reg.name, t.Name, err)
	}
	return done, skipped, nil
}

// writeFix writes one fix; false when a row to be inserted is present.
func (v *verifier) writeFix(ctx context.Context, tx *sql.Tx, t *table, ri int, f fix, cur source.Row, pg map[int]*pgsink.RowStatements) (bool, error) {
	st := t.per[ri]
	wantDef := t.per[f.from].Def
	if v.regions[ri].engine == config.EnginePostgres {
		var (
			q    string
			args []any
		)
		switch f.action() {
		case "delete":
			q, args = pg[ri].Delete([]source.Row{cur})
		case "insert":
			q, args = pg[f.from].InsertNew([]source.Row{f.want})
		default:
			q, args = pg[f.from].Upsert([]source.Row{f.want})
		}
		res, err := tx.ExecContext(ctx, q, args...)
		if err != nil {
			return false, err
		}
		if f.action() == "insert" {
			n, err := res.RowsAffected()
			return n == 1, err
		}
		return true, nil
	}
	var err error
	switch f.action() {
	case "delete":
		err = mysqlsink.DeleteRows(ctx, tx, st.Def, []source.Row{cur})
	case "insert":
		err = mysqlsink.InsertRows(ctx, tx, wantDef, []source.Row{f.want})
		if mysqlsink.IsDuplicateKey(err) {
			return false, nil
		}
	default:
		err = mysqlsink.UpsertRows(ctx, tx, wantDef, []source.Row{f.want})
	}
	return err == nil, err
}

// pgStatements loads the applier's statements for the row layouts the
// fixes write into PostgreSQL region ri: per layout (region index).
func (v *verifier) pgStatements(ctx context.Context, conn *sql.Conn, t *table, ri int, fixes []fix) (map[int]*pgsink.RowStatements, error) {
	reg := v.regions[ri]
	need := map[int]bool{ri: true}
	for _, f := range fixes {
		need[f.from] = true
	}
	out := map[int]*pgsink.RowStatements{}
	err := conn.Raw(func(dc any) error {
		sc, ok := dc.(*stdlib.Conn)
		if !ok {
			return fmt.Errorf("unexpected driver connection %T", dc)
		}
		var pc *pgx.Conn = sc.Conn()
		for from := range need {
			s, err := pgsink.LoadRowStatements(ctx, pc, reg.name, reg.db.Schema, t.per[from].Def)
			if err != nil {
				return err
			}
			out[from] = s
		}
		return nil
	})
	return out, err
}

// writeMarker writes the repair marker row: the first write of the
// transaction, changing the row every time.
func writeMarker(ctx context.Context, tx *sql.Tx, db *snapshot.DB) error {
	var q string
	if db.Engine == config.EnginePostgres {
		ident := pgconn.Ident(db.Schema, pgconn.CheckpointTable)
		q = "INSERT INTO " + ident + " (pipeline, kind, source_region, position, seq, epoch, updated_at) VALUES ($1, 'marker', '', '', 1, 0, now())" +
			" ON CONFLICT (pipeline) DO UPDATE SET seq = " + ident + ".seq + 1, updated_at = now()"
	} else {
		q = "INSERT INTO `regiond_checkpoints` (`pipeline`, `kind`, `source_region`, `position`, `seq`, `epoch`, `updated_at`)" +
			" VALUES (?, 'marker', '', '', 1, 0, UTC_TIMESTAMP(6)) ON DUPLICATE KEY UPDATE `seq` = `seq` + 1, `updated_at` = UTC_TIMESTAMP(6)"
	}
	if _, err := tx.ExecContext(ctx, q, RepairMarker); err != nil {
		if isMissingTable(err) {
			return fmt.Errorf("region %s: regiond_checkpoints does not exist: run `regiond run` once so that it creates its tables (repairs carry its marker so they never echo): %w", db.Region, err)
		}
		return fmt.Errorf("region %s: write the repair marker: %w", db.Region, err)
	}
	return nil
}

// isMissingTable reports MySQL 1146 or PostgreSQL 42P01.
func isMissingTable(err error) bool {
	if err == nil {
		return false
	}
	var pe interface{ SQLState() string }
	if errors.As(err, &pe) && pe.SQLState() == "42P01" {
		return true
	}
	return strings.Contains(err.Error(), "Error 1146")
}
