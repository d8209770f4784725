// Package verify compares the configured tables across regions and repairs
// what differs.
//
// A table is compared in primary-key chunks (snapshot.Bounds of the first
// region, plus an open chunk above its highest key). Each chunk is
// checksummed inside every region's database: with the engine's own row
// text and fast hash when all regions run the same engine (MySQL
// BIT_XOR(CRC32(CONCAT_WS(...))), PostgreSQL bit_xor(hashtextextended(row
// text))), and with per-column canonical text expressions and MD5 on both
// engines when they differ. Only chunks whose checksums differ are read row
// by row (snapshot.Read, canonical values) and compared value by value
// through the cross-engine mapping (conflict.Normalize). Tables whose column
// types have no common SQL text across engines (floats, JSON) are compared
// row by row throughout.
//
// Writes continue while verify runs, so a differing row may only be in
// flight. Verify records every region's log position after reading, waits
// until every pipeline into the compared regions has passed those positions
// (settle.go), and reads the differing rows again: rows now equal, or whose
// regions have all held one same state across the two reads, were in
// flight; rows unchanged and still differing are differences; rows that keep
// changing are reported as unsettled after a number of rounds.
package verify

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/regiond/regiond/config"
	"github.com/regiond/regiond/conflict"
	"github.com/regiond/regiond/snapshot"
	"github.com/regiond/regiond/source"
)

// ErrRefused means verify cannot compare a table: missing in a region, a
// different primary key, or columns that do not map. It is the caller's to
// fix (exit code 2).
var ErrRefused = errors.New("cannot compare")

// Table is a configured table and its conflict rule.
type Table struct {
	Name          string
	Rule          string // config.Rule*
	VersionColumn string
	HomeColumn    string
}

// Options says what to compare.
type Options struct {
	// Config is the deployment: every region (compared or not, for the
	// pipelines into the compared ones) and the tables' rules.
	Config *config.Config
	// Regions are the names of the regions to compare (two or more).
	Regions []string
	// Tables are the names of the tables to compare (all when empty).
	Tables []string
	// ChunkRows is the number of rows per chunk (default 10000).
	ChunkRows int
	// Parallel is how many chunks are checksummed at once (default 2).
	Parallel int
	// SettleTimeout bounds the wait for pipelines to pass the positions at
	// which differing rows were read (default 2 minutes).
	SettleTimeout time.Duration
	// SettleRounds is how many times differing rows that keep changing are
	// read again before they are reported as unsettled (default 10).
	SettleRounds int
	// CompareRows reads and compares every chunk's rows in regiond instead
	// of checksumming chunks in the databases (the benchmark measures both).
	CompareRows bool
	// Progress, when set, is told the rows checksummed so far and the
	// estimated total, after every chunk.
	Progress func(table string, done, total int64)
	Logger   *slog.Logger
}

// Report is the outcome of one comparison.
type Report struct {
	Regions []string      `json:"regions"`
	Tables  []TableReport `json:"tables"`
	// Repaired holds what --repair did, when it ran; Tables then describe
	// the comparison after the repair.
	Repairs []RepairReport `json:"repairs,omitempty"`
	Before  []TableReport  `json:"before_repair,omitempty"`
}

// Identical reports whether no table differs and no row is unsettled.
func (r *Report) Identical() bool {
	for _, t := range r.Tables {
		if len(t.Differences) > 0 || len(t.Unsettled) > 0 {
			return false
		}
	}
	return true
}

// TableReport is the comparison of one table.
type TableReport struct {
	Table           string `json:"table"`
	Rule            string `json:"rule"`
	Method          string `json:"method"` // how chunks were checksummed
	RowsCompared    int64  `json:"rows_compared"`
	Chunks          int    `json:"chunks"`
	ChunksDiffering int    `json:"chunks_differing"`
	// Differences are the rows that differ once every pipeline into the
	// compared regions passed the positions they were read at.
	Differences []Difference `json:"differences"`
	// Unsettled are rows that differed but kept changing (or the pipelines
	// did not catch up) within the settle rounds: not judged.
	Unsettled []Difference `json:"unsettled"`
	// InFlight counts rows that differed when first read and were equal
	// once the pipelines had passed the positions they were read at.
	InFlight int     `json:"in_flight"`
	Seconds  float64 `json:"seconds"`
}

// Difference is one differing primary key.
type Difference struct {
	// Key is the primary key as a JSON object, columns in key order.
	Key string `json:"key"`
	// Missing lists the regions without the row.
	Missing []string `json:"missing,omitempty"`
	// Columns lists the columns whose values differ among the regions that
	// have the row.
	Columns []string `json:"columns,omitempty"`
	// Values holds, per region, the differing columns' values (all columns
	// when the row is missing somewhere); null for a region without the row.
	Values map[string]map[string]any `json:"values"`

	key    snapshot.Key
	images map[string]source.Row // per region, nil: no row
	// history holds every image read per region while settling.
	history map[string][]source.Row
}

// Run compares the tables. A refusal wraps ErrRefused.
func Run(ctx context.Context, opts Options) (*Report, error) {
	v, err := newVerifier(ctx, opts)
	if err != nil {
		return nil, err
	}
	defer v.close()
	return v.run(ctx)
}

// verifier holds the open regions for one run.
type verifier struct {
	opts    Options
	log     *slog.Logger
	regions []*region // compared, in the order given
	tables  []*table
	settler *settler
}

// region is one compared region's database.
type region struct {
	name   string
	engine string
	cfg    config.Region
	db     *snapshot.DB
}

// table is one table as every compared region describes it.
type table struct {
	Table
	per    []*snapshot.Table // per compared region
	cols   [][]int           // cols[r][i]: column of region r for column i of region 0
	padded []bool            // per column of region 0: CHAR(n) in some region
	json   []bool            // per column of region 0: JSON in some region
	method string
	exprs  []string // checksum select expression per region
}

func newVerifier(ctx context.Context, opts Options) (*verifier, error) {
	if opts.ChunkRows <= 0 {
		opts.ChunkRows = 10000
	}
	if opts.Parallel <= 0 {
		opts.Parallel = 2
	}
	if opts.SettleTimeout <= 0 {
		opts.SettleTimeout = 2 * time.Minute
	}
	if opts.SettleRounds <= 0 {
		opts.SettleRounds = 10
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	cfg := opts.Config
	if len(opts.Regions) == 0 {
		for _, r := range cfg.Regions {
			opts.Regions = append(opts.Regions, r.Name)
		}
	}
	if len(opts.Regions) < 2 {
		return nil, fmt.Errorf("%w: verify needs two or more regions, got %s", ErrRefused, strings.Join(opts.Regions, ","))
	}
	v := &verifier{opts: opts, log: opts.Logger}
	seen := map[string]bool{}
	for _, name := range opts.Regions {
		rc, ok := cfg.Region(name)
		if !ok {
			v.close()
			return nil, fmt.Errorf("%w: region %s is not in the config", ErrRefused, name)
		}
		if seen[name] {
			v.close()
			return nil, fmt.Errorf("%w: region %s is named twice", ErrRefused, name)
		}
		seen[name] = true
		db, err := snapshot.Open(*rc)
		if err != nil {
			v.close()
			return nil, err
		}
		db.SQL.SetMaxOpenConns(opts.Parallel + 2)
		v.regions = append(v.regions, &region{name: name, engine: rc.Engine, cfg: *rc, db: db})
	}
	names := opts.Tables
	if len(names) == 0 {
		names = cfg.TableNames()
	}
	var problems []string
	for _, name := range names {
		tc, ok := cfg.Tables[name]
		if !ok {
			problems = append(problems, fmt.Sprintf("table %s is not in the config", name))
			continue
		}
		t, err := v.describe(ctx, Table{Name: name, Rule: tc.Rule(), VersionColumn: tc.VersionColumn, HomeColumn: tc.HomeColumn})
		if err != nil {
			if errors.Is(err, ErrRefused) {
				problems = append(problems, strings.TrimPrefix(err.Error(), ErrRefused.Error()+": "))
				continue
			}
			v.close()
			return nil, err
		}
		v.tables = append(v.tables, t)
	}
	switch len(problems) {
	case 0:
	case 1:
		v.close()
		return nil, fmt.Errorf("%w: %s", ErrRefused, problems[0])
	default:
		v.close()
		return nil, fmt.Errorf("%w:\n  %s", ErrRefused, strings.Join(problems, "\n  "))
	}
	v.settler = newSettler(cfg, v.regions, v.log)
	return v, nil
}

func (v *verifier) close() {
	for _, r := range v.regions {
		r.db.Close()
	}
	if v.settler != nil {
		v.settler.close()
	}
}

func (v *verifier) regionNames() []string {
	out := make([]string, len(v.regions))
	for i, r := range v.regions {
		out[i] = r.name
	}
	return out
}

func (v *verifier) run(ctx context.Context) (*Report, error) {
	rep := &Report{Regions: v.regionNames()}
	for _, t := range v.tables {
		tr, err := v.compare(ctx, t)
		if err != nil {
			return nil, err
		}
		rep.Tables = append(rep.Tables, tr.TableReport)
	}
	return rep, nil
}

// tableResult is a table's report with the rows behind it.
type tableResult struct {
	TableReport
	diffs []*Difference
}

// chunkSum is one region's checksum of one chunk.
type chunkSum struct {
	rows int64
	sum  uint64
}

// compare checksums t chunk by chunk, compares the rows of differing
// chunks and settles the differing rows.
func (v *verifier) compare(ctx context.Context, t *table) (*tableResult, error) {
	start := time.Now()
	ref := t.per[0]
	ranges, err := ref.Bounds(ctx, v.regions[0].db.SQL, v.opts.ChunkRows)
	if err != nil {
		return nil, err
	}
	// Rows of other regions above the first region's highest key.
	if len(ranges) == 0 {
		ranges = []snapshot.Range{{}}
	} else {
		ranges = append(ranges, snapshot.Range{Lo: ranges[len(ranges)-1].Hi})
	}
	res := &tableResult{TableReport: TableReport{Table: t.Name, Rule: t.Rule, Method: t.method, Chunks: len(ranges)}}
	total := v.estimate(ctx, t)
	var (
		done     atomic.Int64
		mu       sync.Mutex
		cands    = map[string]*Difference{}
		differ   int
		maxCount int64
	)
	jobs := make(chan snapshot.Range)
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error {
		defer close(jobs)
		for _, r := range ranges {
			select {
			case jobs <- r:
			case <-gctx.Done():
				return gctx.Err()
			}
		}
		return nil
	})
	for range v.opts.Parallel {
		g.Go(func() error {
			for r := range jobs {
				same, n, err := v.sameChunk(gctx, t, r)
				if err != nil {
					return err
				}
				var found []*Difference
				if !same {
					var read int64
					if found, read, err = v.compareRows(gctx, t, r); err != nil {
						return err
					}
					n = max(n, read)
				}
				mu.Lock()
				maxCount += n
				if !same && (t.method != methodRows || len(found) > 0) {
					differ++
				}
				if !same {
					for _, d := range found {
						if c, ok := cands[d.Key]; ok {
							for reg, img := range d.images {
								if img != nil {
									c.images[reg] = img
								}
							}
							continue
						}
						cands[d.Key] = d
					}
				}
				mu.Unlock()
				if v.opts.Progress != nil {
					v.opts.Progress(t.Name, done.Add(n), total)
				}
			}
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		return nil, err
	}
	res.RowsCompared = maxCount
	res.ChunksDiffering = differ
	var list []*Difference
	for _, d := range cands {
		if !v.describeDiff(t, d) {
			continue
		}
		list = append(list, d)
	}
	if len(list) > 0 {
		real, unsettled, err := v.settle(ctx, t, list)
		if err != nil {
			return nil, err
		}
		res.diffs = real
		res.InFlight = len(list) - len(real) - len(unsettled)
		sortDiffs(real)
		sortDiffs(unsettled)
		for _, d := range real {
			res.Differences = append(res.Differences, *d)
		}
		for _, d := range unsettled {
			res.Unsettled = append(res.Unsettled, *d)
		}
	}
	if res.Differences == nil {
		res.Differences = []Difference{}
	}
	if res.Unsettled == nil {
		res.Unsettled = []Difference{}
	}
	res.Seconds = time.Since(start).Seconds()
	return res, nil
}

func sortDiffs(ds []*Difference) {
	sort.Slice(ds, func(i, j int) bool { return lessKey(ds[i].key, ds[j].key) })
}

// lessKey orders keys by their normalised values, numerically where both
// are integers.
func lessKey(a, b snapshot.Key) bool {
	for i := range min(len(a), len(b)) {
		x, _ := conflict.Normalize(a[i])
		y, _ := conflict.Normalize(b[i])
		if x == y {
			continue
		}
		if isInt(x) && isInt(y) {
			neg := func(s string) bool { return strings.HasPrefix(s, "-") }
			if neg(x) != neg(y) {
				return neg(x)
			}
			if len(x) != len(y) {
				return (len(x) < len(y)) != neg(x)
			}
			return (x < y) != neg(x)
		}
		return x < y
	}
	return len(a) < len(b)
}

func isInt(s string) bool {
	s = strings.TrimPrefix(s, "-")
	if s == "" {
		return false
	}
	for _, c := range s {
		if c < '0' || c > '9' {
			return false
		}
	}
	return true
}

// sameChunk checksums r in every region at once; it returns whether all
// agree and the largest row count.
func (v *verifier) sameChunk(ctx context.Context, t *table, r snapshot.Range) (bool, int64, error) {
	if t.method == methodRows {
		return false, 0, nil
	}
	sums := make([]chunkSum, len(v.regions))
	g, gctx := errgroup.WithContext(ctx)
	for i := range v.regions {
		g.Go(func() error {
			s, err := v.checksum(gctx, t, i, r)
			sums[i] = s
			return err
		})
	}
	if err := g.Wait(); err != nil {
		return false, 0, err
	}
	same := true
	var n int64
	for _, s := range sums {
		n = max(n, s.rows)
		if s != sums[0] {
			same = false
		}
	}
	return same, n, nil
}

// compareRows reads r in every region and returns the keys whose rows are
// not the same everywhere (as candidates: images as read), and the largest
// number of rows a region holds in r.
func (v *verifier) compareRows(ctx context.Context, t *table, r snapshot.Range) ([]*Difference, int64, error) {
	rows := make([][]source.Row, len(v.regions))
	g, gctx := errgroup.WithContext(ctx)
	for i, reg := range v.regions {
		g.Go(func() error {
			var err error
			rows[i], err = t.per[i].Read(gctx, reg.db.SQL, r, false)
			return err
		})
	}
	if err := g.Wait(); err != nil {
		return nil, 0, err
	}
	byKey := map[string]*Difference{}
	var order []string
	var most int64
	for i, reg := range v.regions {
		most = max(most, int64(len(rows[i])))
		for _, row := range rows[i] {
			k := t.per[i].KeyOf(row)
			ks := keyString(k)
			d, ok := byKey[ks]
			if !ok {
				d = &Difference{Key: ks, key: k, images: map[string]source.Row{}}
				byKey[ks] = d
				order = append(order, ks)
			}
			d.images[reg.name] = row
		}
	}
	var out []*Difference
	for _, ks := range order {
		d := byKey[ks]
		if !v.sameImages(t, d.images) {
			out = append(out, d)
		}
	}
	return out, most, nil
}

// keyString identifies a key across engines: its normalised values.
func keyString(k snapshot.Key) string {
	parts := make([]string, len(k))
	for i, x := range k {
		s, _ := conflict.Normalize(x)
		parts[i] = s
	}
	return strings.Join(parts, "\x00")
}

// sameImages reports whether every compared region holds the same row (or
// none).
func (v *verifier) sameImages(t *table, images map[string]source.Row) bool {
	first := images[v.regions[0].name]
	for i := 1; i < len(v.regions); i++ {
		img := images[v.regions[i].name]
		if (first == nil) != (img == nil) {
			return false
		}
		if first != nil && len(t.differingColumns(0, first, i, img)) > 0 {
			return false
		}
	}
	return true
}

// differingColumns lists the columns (named as in region 0) whose values
// differ between row a of region ra and row b of region rb.
func (t *table) differingColumns(ra int, a source.Row, rb int, b source.Row) []string {
	var out []string
	for i, c := range t.per[0].Def.Columns {
		x, xok := conflict.Normalize(a[t.cols[ra][i]])
		y, yok := conflict.Normalize(b[t.cols[rb][i]])
		if t.json[i] {
			// MariaDB's JSON is LONGTEXT, read as text: compare as JSON.
			x, xok = conflict.Normalize(asJSON(a[t.cols[ra][i]]))
			y, yok = conflict.Normalize(asJSON(b[t.cols[rb][i]]))
		}
		if t.padded[i] {
			// MySQL reads CHAR(n) without its pad spaces, PostgreSQL's
			// character(n) with them: the same value either way.
			x, y = strings.TrimRight(x, " "), strings.TrimRight(y, " ")
		}
		if x != y || xok != yok {
			out = append(out, c.Name)
		}
	}
	return out
}

// asJSON types text as JSON.
func asJSON(v any) any {
	if s, ok := v.(string); ok {
		return source.JSON(s)
	}
	return v
}

// describeDiff fills in what differs; false when nothing does.
func (v *verifier) describeDiff(t *table, d *Difference) bool {
	d.Missing, d.Columns = nil, nil
	d.Values = map[string]map[string]any{}
	cols := map[string]bool{}
	base := -1
	for i, reg := range v.regions {
		img := d.images[reg.name]
		if img == nil {
			d.Missing = append(d.Missing, reg.name)
			continue
		}
		if base < 0 {
			base = i
			continue
		}
		for _, c := range t.differingColumns(base, d.images[v.regions[base].name], i, img) {
			cols[c] = true
		}
	}
	if len(d.Missing) == 0 && len(cols) == 0 {
		return false
	}
	def := t.per[0].Def
	for _, c := range def.Columns {
		if cols[c.Name] {
			d.Columns = append(d.Columns, c.Name)
		}
	}
	for i, reg := range v.regions {
		img := d.images[reg.name]
		if img == nil {
			d.Values[reg.name] = nil
			continue
		}
		vals := map[string]any{}
		for ci, c := range def.Columns {
			if len(d.Missing) > 0 || cols[c.Name] {
				vals[c.Name] = jsonValue(img[t.cols[i][ci]])
			}
		}
		d.Values[reg.name] = vals
	}
	d.Key = keyJSON(def, d.key)
	return true
}
