package batch

import (
	"context"

	"github.com/regiond/regiond/source"
)

// Absence tells which rows of a batch's apply_remote upsert segments the
// source's log says have no row in the target when their segment is
// written: the key's first change in the batch is an insert, or the key's
// previous segment in the batch deleted it. An engine may write such rows
// with a plain INSERT, which needs no locking read before it: if the
// INSERT succeeds, no row was there, so there was nothing to compare and
// no conflict to record, exactly what CheckRemote would have found. If it
// fails on a present key, the engine reads those rows under lock and
// decides them with DecideRemote (Check says which need it) before it
// upserts them, as CheckRemote and the upsert would have done.
//
// One Absence serves one call of an engine's Exec: Next must see every
// segment of Plan's steps, in order.
type Absence struct {
	rules *Rules
	// first holds the keys whose first change in the batch is an insert,
	// with that insert, by table; they are not read by CheckRemote.
	first map[*source.Table]map[string]source.Change
	// deleted holds the keys an earlier segment wrote: true when it
	// deleted them.
	deleted map[*source.Table]map[string]bool
	// tables and checks are the other first changes, for CheckRemote.
	tables []*source.Table
	checks map[*source.Table][]remoteCheck
	kb     []byte
}

// NewAbsence prepares the Absence of changes. With nil rules (the
// apply_remote check turned off) every table counts as apply_remote, and
// nothing is checked.
func NewAbsence(rules *Rules, changes []source.Change) *Absence {
	a := &Absence{rules: rules, first: map[*source.Table]map[string]source.Change{}, deleted: map[*source.Table]map[string]bool{}}
	all := rules
	if all == nil {
		all = &Rules{}
	}
	a.tables, a.checks = remoteChecks(all, changes)
	for _, t := range a.tables {
		rest := a.checks[t][:0]
		for _, c := range a.checks[t] {
			if c.change.Op != source.Insert {
				rest = append(rest, c)
				continue
			}
			m := a.first[t]
			if m == nil {
				m = map[string]source.Change{}
				a.first[t] = m
			}
			a.kb = AppendKey(a.kb[:0], t, c.key)
			m[string(a.kb)] = c.change
		}
		a.checks[t] = rest
	}
	return a
}

// CheckRemote is CheckRemote for the batch's changes, except for the keys
// whose first change is an insert: their rows are checked when they are
// written (see Absence).
func (a *Absence) CheckRemote(ctx context.Context, rt RemoteTarget) ([]Conflict, error) {
	if a.rules == nil || a.rules.Local {
		return nil, nil
	}
	return checkRemote(ctx, rt, a.rules, a.tables, a.checks)
}

// Next takes the next segment in write order. For an upsert segment of an
// apply_remote table it returns, for each of its rows, whether the log says
// the key has no row in the target now (absent), and for those whose
// conflict a present row would be (the key's first change in the batch is
// an insert), that insert (check; nil: none, the row was deleted earlier in
// this batch, and a row found there now is no change of the source's).
// For other segments it returns nil slices.
func (a *Absence) Next(s *Segment) (absent []bool, check []*source.Change) {
	if a.rules != nil && (a.rules.Local || a.rules.rule(s.Table.Name).Name != "apply_remote") {
		return nil, nil
	}
	seen := a.deleted[s.Table]
	if seen == nil {
		seen = map[string]bool{}
		a.deleted[s.Table] = seen
	}
	if s.Delete {
		for _, r := range s.Rows {
			a.kb = AppendKey(a.kb[:0], s.Table, r)
			seen[string(a.kb)] = true
		}
		return nil, nil
	}
	absent = make([]bool, len(s.Rows))
	check = make([]*source.Change, len(s.Rows))
	first := a.first[s.Table]
	for i, r := range s.Rows {
		a.kb = AppendKey(a.kb[:0], s.Table, r)
		if del, ok := seen[string(a.kb)]; ok {
			absent[i] = del
		} else if c, ok := first[string(a.kb)]; ok {
			absent[i], check[i] = true, &c
		}
		seen[string(a.kb)] = false
	}
	return absent, check
}
