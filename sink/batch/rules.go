package batch

import (
	"context"
	"fmt"
	"time"

	"github.com/regiond/regiond/conflict"
	"github.com/regiond/regiond/pipeline"
	"github.com/regiond/regiond/source"
)

// Rule is a table's conflict rule, as configured.
type Rule struct {
	Name          string // conflict.* rule name: apply_remote, last_writer_wins, home_region
	VersionColumn string // last_writer_wins
	HomeColumn    string // home_region
}

// Rules tells a sink how each table resolves conflicts and who is writing.
type Rules struct {
	// Tables maps table names to their rule; a table not listed is
	// apply_remote.
	Tables map[string]Rule
	// Pipeline, Origin and Target name the pipeline, the region its changes
	// were made in, and the region they are applied to, for the records.
	Pipeline, Origin, Target string
	// Local is set for a region's local pipeline, which reads the region's
	// own log and applies to the same region what only that region can do:
	// tombstones for its own last_writer_wins deletes (so that an older
	// write arriving later cannot bring the row back). Everything else in
	// its log is already applied there.
	Local bool
}

func (r *Rules) rule(t string) Rule {
	if r == nil {
		return Rule{Name: "apply_remote"}
	}
	if x, ok := r.Tables[t]; ok && x.Name != "" {
		return x
	}
	return Rule{Name: "apply_remote"}
}

// LWW reports whether table t is under last_writer_wins.
func (r *Rules) LWW(t string) bool { return r.rule(t).Name == "last_writer_wins" }

// Conflict is one discarded change, as recorded in regiond_conflicts.
type Conflict struct {
	Pipeline string
	Table    *source.Table
	Key      source.Row // a row holding the key (the other columns are not used)
	Rule     string
	// Winner is the region whose state was kept, Loser the region whose
	// change was discarded.
	Winner, Loser string
	// Kept is the state that won (nil: no row, e.g. a tombstone), Lost the
	// discarded change's image (after image; before image for a delete).
	Kept, Lost source.Row
	Reason     string
	Position   string // the discarded change's source transaction (Change.TxnID)
}

// Tombstone is what regiond_tombstones holds for a deleted
// last_writer_wins row.
type Tombstone struct {
	Version conflict.Version
	Hash    conflict.Hash
	Origin  string
}

// Current is the target's state of one key, read under lock.
type Current struct {
	Row  source.Row // nil when there is no row
	Tomb *Tombstone // nil when there is no tombstone
}

// Resolved is the guarded write of one step under last_writer_wins.
type Resolved struct {
	// Insert holds rows whose keys had no row at Lock time: a plain INSERT,
	// so that a row a local transaction inserted meanwhile makes the
	// statement fail (and the batch retry) instead of being overwritten.
	Insert []source.Row
	// Update holds rows whose keys had a (now locked) row.
	Update []source.Row
	// Delete holds keys whose (locked) row goes.
	Delete []source.Row
	// PutTombs and DropTombs write and remove tombstones.
	PutTombs  []TombRow
	DropTombs []source.Row
}

// TombRow is a tombstone and the key it is for.
type TombRow struct {
	Key  source.Row
	Tomb Tombstone
}

// RuleTarget is what an engine's Target offers for tables under a conflict
// rule, inside the open target transaction.
type RuleTarget interface {
	// Lock reads the current row and tombstone of each key (rows holding
	// the keys), locking them until the transaction ends, in keys' order.
	// Row values are canonical (source/values.go), as a reader of the
	// target's log would produce them, so their hashes compare.
	Lock(ctx context.Context, t *source.Table, keys []source.Row) ([]Current, error)
	// Write performs a resolved step.
	Write(ctx context.Context, t *source.Table, r *Resolved) error
	// Record writes conflict records.
	Record(ctx context.Context, cs []Conflict) error
	// Recorded returns the records the target already holds of one
	// source transaction (position) under pipeline and rule, detected at
	// or after since, by RecordKey of their table and key.
	Recorded(ctx context.Context, pipeline, rule, position string, since time.Time) (map[string]bool, error)
}

// RecordKey identifies a conflict record of one source transaction by its
// table and its key as canonical JSON (source.KeyJSON).
func RecordKey(table, keyJSON string) string { return table + "\x00" + keyJSON }

// ResolveLWW decides a step of last_writer_wins changes (distinct keys, in
// source order) against the current states, and returns the guarded write
// and the conflicts. rules names the version column.
func ResolveLWW(rules *Rules, t *source.Table, changes []source.Change, cur []Current) (*Resolved, []Conflict, error) {
	rule := rules.rule(t.Name)
	vcol := columnIndex(t, rule.VersionColumn)
	if vcol < 0 {
		return nil, nil, pipeline.Permanent(fmt.Errorf("table %s: version column %q is not in the change (the source table lacks it)", t.Name, rule.VersionColumn))
	}
	res := &Resolved{}
	var conflicts []Conflict
	for i, c := range changes {
		var in conflict.State
		var img source.Row
		if c.Op == source.Delete {
			img = c.Before
			in.Kind = conflict.Tombstone
		} else {
			img = c.After
			in.Kind = conflict.Row
		}
		v, err := conflict.ParseVersion(img[vcol])
		if err != nil {
			if c.Op == source.Delete && img[vcol] == nil {
				return nil, nil, pipeline.Permanent(fmt.Errorf("table %s row %s: the delete carries no %s (a Postgres source needs REPLICA IDENTITY FULL for last_writer_wins tables): %w",
					t.Name, t.FormatKey(img), rule.VersionColumn, err))
			}
			return nil, nil, pipeline.Permanent(fmt.Errorf("table %s row %s column %s: %w", t.Name, t.FormatKey(img), rule.VersionColumn, err))
		}
		in.Version, in.Hash = v, conflict.RowHash(t, img)

		now, err := stateOf(t, vcol, cur[i])
		if err != nil {
			return nil, nil, err
		}
		switch conflict.LastWriterWins(now, in) {
		case conflict.Same:
			continue
		case conflict.Discard:
			if rules.Local {
				// A newer write replaced the region's own delete already.
				continue
			}
			conflicts = append(conflicts, Conflict{
				Pipeline: rules.Pipeline, Table: t, Key: img, Rule: "last_writer_wins",
				Winner: rules.Target, Loser: rules.Origin,
				Kept: cur[i].Row, Lost: img, Position: c.TxnID,
				Reason: fmt.Sprintf("incoming version %s lost to %s", in.Version, describe(now)),
			})
			continue
		}
		if in.Kind == conflict.Row {
			if cur[i].Row != nil {
				res.Update = append(res.Update, img)
			} else {
				res.Insert = append(res.Insert, img)
			}
			if cur[i].Tomb != nil {
				res.DropTombs = append(res.DropTombs, img)
			}
			continue
		}
		if cur[i].Row != nil {
			res.Delete = append(res.Delete, img)
		}
		res.PutTombs = append(res.PutTombs, TombRow{Key: img, Tomb: Tombstone{Version: in.Version, Hash: in.Hash, Origin: rules.Origin}})
	}
	return res, conflicts, nil
}

func describe(s conflict.State) string {
	switch s.Kind {
	case conflict.Row:
		return "the target row at version " + s.Version.String()
	case conflict.Tombstone:
		return "the target's delete at version " + s.Version.String()
	}
	return "nothing"
}

// stateOf is the last_writer_wins state of the target's current row (or
// tombstone) for a key. A row wins over a tombstone of the same key only
// when it is above it (a row written after the delete, which dropped it).
func stateOf(t *source.Table, vcol int, c Current) (conflict.State, error) {
	var s conflict.State
	if c.Row != nil {
		v, err := conflict.ParseVersion(c.Row[vcol])
		if err != nil {
			return s, pipeline.Permanent(fmt.Errorf("table %s row %s in the target, column %s: %w", t.Name, t.FormatKey(c.Row), t.Columns[vcol].Name, err))
		}
		s = conflict.State{Kind: conflict.Row, Version: v, Hash: conflict.RowHash(t, c.Row)}
	}
	if c.Tomb != nil {
		ts := conflict.State{Kind: conflict.Tombstone, Version: c.Tomb.Version, Hash: c.Tomb.Hash}
		if s.Less(ts) {
			s = ts
		}
	}
	return s, nil
}

func columnIndex(t *source.Table, name string) int {
	for i, c := range t.Columns {
		if c.Name == name {
			return i
		}
	}
	return -1
}

// Step is a unit of writing: a plain segment (apply_remote tables), or the
// changes of a rule table with distinct keys, decided together.
type Step struct {
	Segment *Segment // plain
	// Rule steps:
	Table   *source.Table
	Changes []source.Change
}

// Plan splits changes into steps in source order: plain segments for
// tables without a rule, and for last_writer_wins tables runs of changes
// with distinct keys (a key seen again starts a new step, so that each
// change is decided against the state the previous one left). An update
// that changes the key of a rule table is a delete of the old key and an
// insert of the new one.
func Plan(rules *Rules, changes []source.Change) []Step {
	var (
		steps []Step
		plain = -1 // changes[plain:] up to the current one are plain
		cur   *Step
		seen  map[string]bool
		kb    []byte
	)
	// The plain changes between two rule steps are consecutive: Segments
	// takes them as a slice of changes, not a copy.
	flushPlain := func(to int) {
		for _, s := range Segments(changes[plain:to]) {
			steps = append(steps, Step{Segment: s})
		}
		plain = -1
	}
	add := func(c source.Change, key source.Row) {
		kb = AppendKey(kb[:0], c.Table, key)
		if cur == nil || cur.Table != c.Table || seen[string(kb)] {
			steps = append(steps, Step{Table: c.Table})
			cur = &steps[len(steps)-1]
			seen = map[string]bool{}
		}
		seen[string(kb)] = true
		cur.Changes = append(cur.Changes, c)
	}
	for n, c := range changes {
		if rules != nil && rules.Local {
			// The region's own writes: only its last_writer_wins deletes
			// need work, a tombstone.
			switch {
			case !rules.LWW(c.Table.Name):
			case c.Op == source.Delete:
				add(c, c.Before)
				cur = &steps[len(steps)-1]
			case c.Op == source.Update && !SameKey(c.Table, c.Before, c.After):
				add(source.Change{Table: c.Table, Op: source.Delete, Before: c.Before, TxnID: c.TxnID}, c.Before)
				cur = &steps[len(steps)-1]
			}
			continue
		}
		if !rules.LWW(c.Table.Name) {
			if cur != nil {
				cur = nil
			}
			if plain < 0 {
				plain = n
			}
			continue
		}
		if plain >= 0 {
			flushPlain(n)
		}
		if c.Op == source.Update && !SameKey(c.Table, c.Before, c.After) {
			add(source.Change{Table: c.Table, Op: source.Delete, Before: c.Before, TxnID: c.TxnID}, c.Before)
			add(source.Change{Table: c.Table, Op: source.Insert, After: c.After, TxnID: c.TxnID}, c.After)
			continue
		}
		key := c.After
		if c.Op == source.Delete {
			key = c.Before
		}
		add(c, key)
		// cur may have moved when steps grew: re-point it.
		cur = &steps[len(steps)-1]
	}
	if plain >= 0 {
		flushPlain(len(changes))
	}
	return steps
}

// ApplyLWW runs one last_writer_wins step through rt: lock, decide, write,
// record.
func ApplyLWW(ctx context.Context, rt RuleTarget, rules *Rules, st Step) ([]Conflict, error) {
	keys := make([]source.Row, len(st.Changes))
	for i, c := range st.Changes {
		if c.Op == source.Delete {
			keys[i] = c.Before
		} else {
			keys[i] = c.After
		}
	}
	cur, err := rt.Lock(ctx, st.Table, keys)
	if err != nil {
		return nil, err
	}
	res, conflicts, err := ResolveLWW(rules, st.Table, st.Changes, cur)
	if err != nil {
		return nil, err
	}
	if err := rt.Write(ctx, st.Table, res); err != nil {
		return nil, err
	}
	if len(conflicts) > 0 {
		if err := rt.Record(ctx, conflicts); err != nil {
			return nil, err
		}
	}
	return conflicts, nil
}

// Unrecorded wraps a RuleTarget whose discarded rows are not conflicts:
// rows that backfill or repair copy and that lose to the target's newer
// state are skipped, not recorded (no region's change was lost).
type Unrecorded struct{ RuleTarget }

// Record implements RuleTarget: it records nothing.
func (Unrecorded) Record(context.Context, []Conflict) error { return nil }
