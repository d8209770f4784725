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
	// keys holds, by table, the index in states of each key's state.
	keys   map[*source.Table]map[string]int32
	states []keyState
	// tables and checks are the first changes that are not inserts, for
	// CheckRemote.
	tables []*source.Table
	checks map[*source.Table][]remoteCheck
	kb     []byte
}

// keyState is what an Absence knows of one key.
type keyState struct {
	// insert is the key's first change in the batch when it is an insert
	// (nil: it is not), until a segment writes the key.
	insert *source.Change
	// written: a segment wrote the key; deleted: the last one deleted it.
	written, deleted bool
}

// NewAbsence prepares the Absence of changes. With nil rules (the
// apply_remote check turned off) every table counts as apply_remote, and
// nothing is checked. The first change of each key is picked as
// CheckRemote picks it.
func NewAbsence(rules *Rules, changes []source.Change) *Absence {
	a := &Absence{rules: rules, keys: map[*source.Table]map[string]int32{}}
	if rules != nil && rules.Local {
		return a
	}
	a.states = make([]keyState, 0, len(changes))
	for i := range changes {
		c := &changes[i]
		if rules != nil && rules.rule(c.Table.Name).Name != "apply_remote" {
			continue
		}
		key := c.Before
		if c.Op == source.Insert {
			key = c.After
		}
		m := a.keys[c.Table]
		if m == nil {
			m = make(map[string]int32, len(changes)-i)
			a.keys[c.Table] = m
			a.tables = append(a.tables, c.Table)
		}
		a.kb = AppendKey(a.kb[:0], c.Table, key)
		if _, ok := m[string(a.kb)]; ok {
			continue
		}
		m[string(a.kb)] = int32(len(a.states))
		var st keyState
		if c.Op == source.Insert {
			st.insert = c
		} else {
			if a.checks == nil {
				a.checks = map[*source.Table][]remoteCheck{}
			}
			a.checks[c.Table] = append(a.checks[c.Table], remoteCheck{change: *c, key: key})
		}
		a.states = append(a.states, st)
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
	m := a.keys[s.Table]
	if m == nil {
		m = map[string]int32{}
		a.keys[s.Table] = m
	}
	// state returns the key's state, adding one for a key no change keyed
	// (the new key of an update that changes it).
	state := func(row source.Row) *keyState {
		a.kb = AppendKey(a.kb[:0], s.Table, row)
		i, ok := m[string(a.kb)]
		if !ok {
			i = int32(len(a.states))
			m[string(a.kb)] = i
			a.states = append(a.states, keyState{})
		}
		return &a.states[i]
	}
	if s.Delete {
		for _, r := range s.Rows {
			st := state(r)
			st.insert, st.written, st.deleted = nil, true, true
		}
		return nil, nil
	}
	absent = make([]bool, len(s.Rows))
	check = make([]*source.Change, len(s.Rows))
	for i, r := range s.Rows {
		st := state(r)
		switch {
		case st.written:
			absent[i] = st.deleted
		case st.insert != nil:
			absent[i], check[i] = true, st.insert
		}
		st.insert, st.written, st.deleted = nil, true, false
	}
	return absent, check
}
