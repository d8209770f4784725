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
	keys   map[*source.Table]*keyIndex
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
	a := &Absence{rules: rules, keys: map[*source.Table]*keyIndex{}}
	if rules != nil && rules.Local {
		return a
	}
	a.states = make([]keyState, 0, len(changes))
	// rest bounds the checks still to come: a table's are sized by it.
	rest := 0
	for i := range changes {
		if changes[i].Op != source.Insert {
			rest++
		}
	}
	for i := range changes {
		c := &changes[i]
		if rules != nil && rules.rule(c.Table.Name).Name != "apply_remote" {
			continue
		}
		key := c.Before
		if c.Op == source.Insert {
			key = c.After
		} else {
			rest--
		}
		m := a.keys[c.Table]
		if m == nil {
			m = &keyIndex{size: len(changes) - i}
			a.keys[c.Table] = m
			a.tables = append(a.tables, c.Table)
		}
		if !m.add(c.Table, key, int32(len(a.states)), &a.kb) {
			continue
		}
		var st keyState
		if c.Op == source.Insert {
			st.insert = c
		} else {
			if a.checks == nil {
				a.checks = map[*source.Table][]remoteCheck{}
			}
			cs := a.checks[c.Table]
			if cs == nil {
				cs = make([]remoteCheck, 0, rest+1)
			}
			a.checks[c.Table] = append(cs, remoteCheck{change: *c, key: key})
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
		m = &keyIndex{}
		a.keys[s.Table] = m
	}
	// state returns the key's state, adding one for a key no change keyed
	// (the new key of an update that changes it).
	state := func(row source.Row) *keyState {
		i := int32(len(a.states))
		if m.add(s.Table, row, i, &a.kb) {
			a.states = append(a.states, keyState{})
		} else {
			i = m.at
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

// keyIndex maps the keys of one table to int32s. A key of one int64
// column (the common case) is indexed by its value, without key bytes of
// its own, as Segments does; a key is int64 in every row of a table or in
// none (a column's values have one kind).
type keyIndex struct {
	strs map[string]int32
	ints map[int64]int32
	size int // expected keys, for the first map made
	at   int32
}

// add indexes row's key as i and reports true, or, when the key is
// indexed already, sets at to its index and reports false. kb is scratch
// space for the key bytes.
func (x *keyIndex) add(t *source.Table, row source.Row, i int32, kb *[]byte) bool {
	if len(t.PK) == 1 {
		if v, ok := row[t.PK[0]].(int64); ok {
			if x.ints == nil {
				x.ints = make(map[int64]int32, x.size)
			}
			if j, ok := x.ints[v]; ok {
				x.at = j
				return false
			}
			x.ints[v] = i
			return true
		}
	}
	if x.strs == nil {
		x.strs = make(map[string]int32, x.size)
	}
	*kb = AppendKey((*kb)[:0], t, row)
	if j, ok := x.strs[string(*kb)]; ok {
		x.at = j
		return false
	}
	x.strs[string(*kb)] = i
	return true
}
