// Package check inspects a configuration's regions for what replication
// needs, like nginx -t.
//
// Run connects to every region with the region's own DSN, reads server
// variables, the DSN user's grants and the configured tables' definitions,
// and reports every problem it finds as a Finding that says what is wrong
// and how to fix it. It only reads: it never writes anything to any
// database (not even regiond's own tables), so it is safe to run against
// production servers at any time.
package check

import (
	"context"
	"encoding/json"
	"fmt"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/regiond/regiond/config"
)

// ConnectTimeout bounds the connection to each region; regions are checked
// concurrently, so an unreachable region costs at most this long.
const ConnectTimeout = 5 * time.Second

// regionTimeout bounds everything Run does in one region once connected.
const regionTimeout = 30 * time.Second

// Severity says whether a finding stops replication.
type Severity int

const (
	// Error: replication cannot work, or loses or corrupts data, until fixed.
	Error Severity = iota + 1
	// Warning: replication works, but something is risky or not recommended.
	Warning
	// Info: a fact the operator should know (e.g. how long binlogs are kept).
	// It counts neither as an error nor as a warning.
	Info
)

// String returns "error", "warning" or "info".
func (s Severity) String() string {
	switch s {
	case Error:
		return "error"
	case Warning:
		return "warning"
	case Info:
		return "info"
	}
	return fmt.Sprintf("severity(%d)", int(s))
}

// MarshalText implements encoding.TextMarshaler, so JSON shows "error".
func (s Severity) MarshalText() ([]byte, error) {
	switch s {
	case Error, Warning, Info:
		return []byte(s.String()), nil
	}
	return nil, fmt.Errorf("invalid severity %d", int(s))
}

// UnmarshalText implements encoding.TextUnmarshaler.
func (s *Severity) UnmarshalText(b []byte) error {
	switch string(b) {
	case "error":
		*s = Error
	case "warning":
		*s = Warning
	case "info":
		*s = Info
	default:
		return fmt.Errorf("invalid severity %q; use error, warning or info", b)
	}
	return nil
}

// Finding is one thing Run found. Messages never contain a password.
type Finding struct {
	// Region names the region the finding is about.
	Region string `json:"region"`
	// Table names the table, when the finding is about one.
	Table    string   `json:"table,omitempty"`
	Severity Severity `json:"severity"`
	// Problem says what is wrong and why it matters.
	Problem string `json:"problem"`
	// Fix says how to fix it, often as the exact statement to run; empty
	// for Info findings.
	Fix string `json:"fix,omitempty"`
}

// String formats the finding on one line:
// "error: region east table accounts: problem (fix: ...)".
func (f Finding) String() string {
	var b strings.Builder
	b.WriteString(f.Severity.String())
	b.WriteString(": ")
	b.WriteString(f.Subject())
	b.WriteString(": ")
	b.WriteString(f.Problem)
	if f.Fix != "" {
		b.WriteString(" (fix: ")
		b.WriteString(f.Fix)
		b.WriteString(")")
	}
	return b.String()
}

// Subject returns "region east" or "region east table accounts".
func (f Finding) Subject() string {
	s := "region " + f.Region
	if f.Table != "" {
		s += " table " + f.Table
	}
	return s
}

// Report is everything Run found, grouped by region in config order.
type Report struct {
	Findings []Finding `json:"findings"`
}

// Errors returns the number of Error findings.
func (r Report) Errors() int { return r.count(Error) }

// Warnings returns the number of Warning findings.
func (r Report) Warnings() int { return r.count(Warning) }

func (r Report) count(s Severity) int {
	n := 0
	for _, f := range r.Findings {
		if f.Severity == s {
			n++
		}
	}
	return n
}

// MarshalJSON writes {"findings": [...], "errors": N, "warnings": M};
// findings is [] rather than null when there are none.
func (r Report) MarshalJSON() ([]byte, error) {
	findings := r.Findings
	if findings == nil {
		findings = []Finding{}
	}
	return json.Marshal(struct {
		Findings []Finding `json:"findings"`
		Errors   int       `json:"errors"`
		Warnings int       `json:"warnings"`
	}{findings, r.Errors(), r.Warnings()})
}

// Run checks every region of cfg concurrently and returns what it found.
// It connects to each region with ConnectTimeout and never writes anything
// to any database. cfg is expected to be valid (config.Load validates it);
// a region whose DSN cannot be parsed is reported as an Error finding.
func Run(ctx context.Context, cfg *config.Config) Report {
	tables := cfg.TableNames()
	results := make([]*regionResult, len(cfg.Regions))
	var wg sync.WaitGroup
	nMySQL := 0
	for i, r := range cfg.Regions {
		if r.Engine == config.EngineMySQL {
			nMySQL++
		}
		pos := nMySQL
		wg.Add(1)
		go func() {
			defer wg.Done()
			switch r.Engine {
			case config.EngineMySQL:
				rctx, cancel := context.WithTimeout(ctx, regionTimeout)
				defer cancel()
				results[i] = inspectMySQL(rctx, r, cfg.Tables, tables)
				results[i].mysqlPos = pos
			case config.EnginePostgres:
				rctx, cancel := context.WithTimeout(ctx, regionTimeout)
				defer cancel()
				results[i] = inspectPostgres(rctx, r, cfg)
			default:
				results[i] = &regionResult{name: r.Name}
				results[i].add("", Error, fmt.Sprintf("engine %q is not supported", r.Engine), "use engine mysql or postgres")
			}
		}()
	}
	wg.Wait()

	var rep Report
	for _, res := range results {
		rep.Findings = append(rep.Findings, res.findings...)
	}
	rep.Findings = append(rep.Findings, compareRegions(tables, nMySQL, results)...)

	// Group by region in config order; within a region, the region's own
	// findings come before those from comparing it with the others.
	order := map[string]int{}
	for i, r := range cfg.Regions {
		order[r.Name] = i
	}
	sort.SliceStable(rep.Findings, func(i, j int) bool {
		return order[rep.Findings[i].Region] < order[rep.Findings[j].Region]
	})
	return rep
}

// regionResult is what inspecting one region found: its findings, and the
// facts comparing regions needs (nil facts when the region could not be
// inspected).
type regionResult struct {
	name     string
	mysqlPos int // 1-based position among the config's mysql regions
	findings []Finding
	facts    *mysqlFacts
	pg       *pgFacts // a postgres region's facts
}

func (r *regionResult) add(table string, sev Severity, problem, fix string) {
	r.findings = append(r.findings, Finding{Region: r.name, Table: table, Severity: sev, Problem: problem, Fix: fix})
}

// mysqlFacts are what regions are compared on.
type mysqlFacts struct {
	serverID      uint64
	aiIncrement   uint64
	aiOffset      uint64
	flavor        string
	tables        map[string]*tableInfo // configured tables that exist
	autoIncTables []string              // configured tables with an AUTO_INCREMENT column, sorted
}

// tableInfo describes one configured table in one region.
type tableInfo struct {
	columns []column // in ordinal order
	pk      []string // primary key columns in key order; nil without one
}

type column struct {
	name     string
	typ      string // COLUMN_TYPE, e.g. "bigint(20) unsigned"
	nullable bool
	autoInc  bool
}

func (t *tableInfo) column(name string) (column, bool) {
	for _, c := range t.columns {
		if c.name == name {
			return c, true
		}
	}
	return column{}, false
}

// compareRegions checks what must agree between mysql regions: table
// definitions, server ids and AUTO_INCREMENT settings.
func compareRegions(tables []string, nMySQL int, results []*regionResult) []Finding {
	var inspected []*regionResult
	for _, r := range results {
		if r.facts != nil {
			inspected = append(inspected, r)
		}
	}
	var out []Finding
	out = append(out, compareTables(tables, inspected)...)
	out = append(out, compareAcrossEngines(tables, results)...)
	out = append(out, compareServerIDs(inspected)...)
	out = append(out, compareAutoIncrement(inspected, nMySQL)...)
	return out
}

// compareTables reports columns and primary keys that differ from the first
// region (in config order) that has the table.
func compareTables(tables []string, regions []*regionResult) []Finding {
	var out []Finding
	for _, name := range tables {
		var ref *regionResult
		var refT *tableInfo
		for _, r := range regions {
			t, ok := r.facts.tables[name]
			if !ok {
				continue
			}
			if ref == nil {
				ref, refT = r, t
				continue
			}
			f := func(sev Severity, problem, fix string) {
				out = append(out, Finding{Region: r.name, Table: name, Severity: sev, Problem: problem, Fix: fix})
			}
			for _, c := range refT.columns {
				if _, ok := t.column(c.name); !ok {
					f(Error, fmt.Sprintf("column %s is in region %s but not in region %s; the tables must have the same columns in every region", c.name, ref.name, r.name),
						fmt.Sprintf("in region %s: ALTER TABLE %s ADD COLUMN %s %s%s (or drop it in region %s)", r.name, quoteIdent(name), quoteIdent(c.name), c.typ, nullSQL(c.nullable), ref.name))
				}
			}
			for _, c := range t.columns {
				rc, ok := refT.column(c.name)
				if !ok {
					f(Error, fmt.Sprintf("column %s is in region %s but not in region %s; the tables must have the same columns in every region", c.name, r.name, ref.name),
						fmt.Sprintf("in region %s: ALTER TABLE %s ADD COLUMN %s %s%s (or drop it in region %s)", ref.name, quoteIdent(name), quoteIdent(c.name), c.typ, nullSQL(c.nullable), r.name))
					continue
				}
				if !strings.EqualFold(rc.typ, c.typ) {
					f(Warning, fmt.Sprintf("column %s is %s in region %s but %s in region %s; values that fit one may not fit the other", c.name, c.typ, r.name, rc.typ, ref.name),
						fmt.Sprintf("give column %s the same type in every region (ALTER TABLE %s MODIFY COLUMN ...)", c.name, quoteIdent(name)))
				}
			}
			if refT.pk != nil && t.pk != nil && !equalStrings(refT.pk, t.pk) {
				f(Error, fmt.Sprintf("the primary key is (%s) in region %s but (%s) in region %s%s; rows are matched between regions by their primary key",
					strings.Join(t.pk, ", "), r.name, strings.Join(refT.pk, ", "), ref.name, pkDifference(refT.pk, t.pk)),
					fmt.Sprintf("make the primary key the same in every region, e.g. in region %s: ALTER TABLE %s DROP PRIMARY KEY, ADD PRIMARY KEY (%s)", r.name, quoteIdent(name), quoteIdents(refT.pk)))
			}
		}
	}
	return out
}

// pkDifference names the first primary key column that differs.
func pkDifference(ref, other []string) string {
	for i := 0; i < len(ref) || i < len(other); i++ {
		switch {
		case i >= len(other):
			return fmt.Sprintf(" (column %s is missing from it)", ref[i])
		case i >= len(ref):
			return fmt.Sprintf(" (column %s is extra)", other[i])
		case ref[i] != other[i]:
			return fmt.Sprintf(" (column %d is %s, not %s)", i+1, other[i], ref[i])
		}
	}
	return ""
}

// compareServerIDs reports regions whose servers share a server_id.
func compareServerIDs(regions []*regionResult) []Finding {
	var out []Finding
	seen := map[uint64]string{}
	for _, r := range regions {
		id := r.facts.serverID
		if first, dup := seen[id]; dup {
			out = append(out, Finding{Region: r.name, Severity: Error,
				Problem: fmt.Sprintf("the server's server_id is %d, the same as region %s's; equal server ids break GTIDs and binlog streaming between them", id, first),
				Fix:     fmt.Sprintf("give each region's server its own server_id: SET GLOBAL server_id = <unique number>; and server_id = <the same number> under [mysqld] in my.cnf (region %s keeps %d)", first, id)})
			continue
		}
		seen[id] = r.name
	}
	return out
}

// compareAutoIncrement reports regions whose AUTO_INCREMENT settings can
// generate the same values as another region's, when both have configured
// tables with AUTO_INCREMENT columns. nMySQL is the number of mysql regions
// in the config, the smallest safe auto_increment_increment.
func compareAutoIncrement(regions []*regionResult, nMySQL int) []Finding {
	var ai []*regionResult
	for _, r := range regions {
		if len(r.facts.autoIncTables) > 0 {
			ai = append(ai, r)
		}
	}
	if len(ai) < 2 {
		return nil
	}
	// The fix suggests increment = the number of mysql regions (or the
	// largest increment already in use, if larger) and offset = the
	// region's 1-based position among them in the config.
	inc := uint64(nMySQL)
	for _, r := range ai {
		inc = max(inc, r.facts.aiIncrement)
	}
	var out []Finding
	for i, r := range ai {
		var clashes []string
		for j, o := range ai {
			if i == j || !autoIncCollide(r.facts.aiIncrement, r.facts.aiOffset, o.facts.aiIncrement, o.facts.aiOffset) {
				continue
			}
			clashes = append(clashes, fmt.Sprintf("region %s (increment %d, offset %d)", o.name, o.facts.aiIncrement, o.facts.aiOffset))
		}
		if len(clashes) == 0 {
			continue
		}
		off := r.mysqlPos
		out = append(out, Finding{Region: r.name, Severity: Error,
			Problem: fmt.Sprintf("AUTO_INCREMENT values can collide: with auto_increment_increment = %d and auto_increment_offset = %d this region generates values that %s also generates (tables with AUTO_INCREMENT columns: %s); two regions inserting the same key stops replication",
				r.facts.aiIncrement, r.facts.aiOffset, strings.Join(clashes, " and "), strings.Join(r.facts.autoIncTables, ", ")),
			Fix: fmt.Sprintf("set auto_increment_increment to the number of regions (or more) and a distinct auto_increment_offset in each region; here: SET GLOBAL auto_increment_increment = %d; SET GLOBAL auto_increment_offset = %d; and the same two settings under [mysqld] in my.cnf",
				inc, off)})
	}
	return out
}

// autoIncCollide reports whether two servers with these settings can
// generate the same AUTO_INCREMENT value. A server generates values
// congruent to its offset modulo its increment (an offset larger than the
// increment is ignored, as if it were 1); two such residue classes meet iff
// the offsets are congruent modulo the gcd of the increments.
func autoIncCollide(inc1, off1, inc2, off2 uint64) bool {
	inc1, off1 = normAutoInc(inc1, off1)
	inc2, off2 = normAutoInc(inc2, off2)
	g := gcd(inc1, inc2)
	return off1%g == off2%g
}

func normAutoInc(inc, off uint64) (uint64, uint64) {
	if inc == 0 {
		inc = 1
	}
	if off == 0 || off > inc {
		off = 1
	}
	return inc, off
}

func gcd(a, b uint64) uint64 {
	for b != 0 {
		a, b = b, a%b
	}
	return a
}

func equalStrings(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// quoteIdent returns a backtick-quoted identifier.
func quoteIdent(name string) string {
	return "`" + strings.ReplaceAll(name, "`", "``") + "`"
}

func quoteIdents(names []string) string {
	q := make([]string, len(names))
	for i, n := range names {
		q[i] = quoteIdent(n)
	}
	return strings.Join(q, ", ")
}

func nullSQL(nullable bool) string {
	if nullable {
		return " NULL"
	}
	return " NOT NULL"
}
