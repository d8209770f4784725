package postgres

import (
	"context"
	"io"
	"strconv"

	"github.com/jackc/pgx/v5"

	"github.com/regiond/regiond/sink/batch"
	"github.com/regiond/regiond/source"
)

// The insert fast path.
//
// A row the source's log says is absent in the target when its segment is
// written goes into the table by COPY, a quarter of the target's cost of
// INSERT … ON CONFLICT per row: its key's first change in what Exec
// writes is an insert (nothing written before it in the batch touched the
// key), or the key's previous change in the batch was a delete. Such a row
// needs no locking read for the apply_remote check either: the COPY runs
// inside a savepoint, and when it succeeds no row of any of its keys was
// there, so the check (which records an insert only when it meets a row)
// would have recorded nothing. When it fails with a unique violation, the
// savepoint is rolled back and those rows take the ordinary path, checked
// and recorded exactly as Exec checks a key's first change (one locking
// read, batch.DecideRemote, the conflict records) and written by the
// upsert. That check runs when the segment is written rather than when the
// batch starts, which reads the same row: no statement of the batch touched
// the key before. A row whose previous change in the batch was a delete was
// not checked by that ordinary path either (only a key's first change is);
// its fallback is the upsert alone.
//
// COPY writes through the same type input functions, column modifiers,
// triggers (session_replication_role = replica leaves only ALWAYS triggers
// on, as for the INSERT) and identity columns (COPY writes given values as
// OVERRIDING SYSTEM VALUE does) as the INSERT it replaces; only PostgreSQL
// rules (CREATE RULE … ON INSERT) are not applied by COPY.

// copySavepoints bounds the COPYs (each in a subtransaction of its own) of
// one target transaction: past 64 subtransactions every snapshot taken on
// the server while it is open has to consult pg_subtrans.
const copySavepoints = 32

// fastRows are the rows of one upsert segment that the log says are
// absent: rows to COPY, and for each the change whose check the fallback
// must run (nil: none).
type fastRows struct {
	rows   []source.Row
	checks []source.Change
	rest   []source.Row // the segment's other rows, written as before
}

// keyState is what planCopies knows of one key of the changes.
type keyState struct {
	first source.Change // the first change touching the key, if an insert
	isIns bool          // first is set
	seen  uint8         // 0, or the kind of the last segment that wrote it
	skip  bool          // written by COPY: left out of Exec's up-front check
}

// Kinds of keyState.seen.
const (
	segGone    = 1 // deleted by an earlier segment of the batch
	segWritten = 2 // written by an earlier segment
)

// keyStates indexes keyState by table and key bytes (batch.AppendKey).
type keyStates map[*source.Table]map[string]*keyState

func (m keyStates) get(t *source.Table, k []byte) *keyState {
	return m[t][string(k)]
}

func (m keyStates) add(t *source.Table, k []byte) (*keyState, bool) {
	byKey := m[t]
	if byKey == nil {
		byKey = map[string]*keyState{}
		m[t] = byKey
	}
	if s := byKey[string(k)]; s != nil {
		return s, false
	}
	s := &keyState{}
	byKey[string(k)] = s
	return s, true
}

// planCopies picks, per upsert segment of steps (by step index), the rows
// that are written by COPY, and returns the states of the keys: those whose
// first change is among them are marked skip, and Exec leaves them out of
// its up-front check. It plans at most max COPYs, each of at least minRows
// rows.
func planCopies(rules *batch.Rules, changes []source.Change, steps []batch.Step, minRows, max int) (map[int]*fastRows, keyStates) {
	if max <= 0 || rules != nil && rules.Local {
		return nil, nil
	}
	var kb []byte
	keys := keyStates{}
	touch := func(c source.Change, row source.Row, insert bool) {
		kb = batch.AppendKey(kb[:0], c.Table, row)
		if s, isNew := keys.add(c.Table, kb); isNew && insert {
			s.first, s.isIns = c, true
		}
	}
	for _, c := range changes {
		if rules.LWW(c.Table.Name) {
			continue
		}
		switch c.Op {
		case source.Insert:
			touch(c, c.After, true)
		case source.Delete:
			touch(c, c.Before, false)
		case source.Update:
			touch(c, c.Before, false)
			touch(c, c.After, false)
		}
	}
	var (
		out    map[int]*fastRows
		states []*keyState
	)
	for i, st := range steps {
		seg := st.Segment
		if seg == nil {
			continue
		}
		f := &fastRows{}
		states = states[:0]
		for _, row := range seg.Rows {
			kb = batch.AppendKey(kb[:0], seg.Table, row)
			s := keys.get(seg.Table, kb)
			if s == nil {
				// Every key of a plain segment was touched above; should
				// one not be, it takes the ordinary path.
				s = &keyState{seen: segWritten}
			}
			if seg.Delete {
				s.seen = segGone
				continue
			}
			before := s.seen
			s.seen = segWritten
			switch {
			case batch.HasUnchanged(row):
			case before == segGone:
				f.rows, f.checks = append(f.rows, row), append(f.checks, source.Change{})
				continue
			case before == 0 && s.isIns:
				f.rows, f.checks = append(f.rows, row), append(f.checks, s.first)
				states = append(states, s)
				continue
			}
			f.rest = append(f.rest, row)
		}
		if seg.Delete || len(f.rows) < minRows || len(out) >= max {
			continue
		}
		if out == nil {
			out = map[int]*fastRows{}
		}
		out[i] = f
		for _, s := range states {
			s.skip = true
		}
	}
	return out, keys
}

// withoutKeys returns changes without those whose key (as batch.CheckRemote
// picks it: the after image of an insert, the before image otherwise) is
// marked skip in keys.
func withoutKeys(changes []source.Change, keys keyStates) []source.Change {
	var (
		out []source.Change
		kb  []byte
	)
	for n, c := range changes {
		key := c.Before
		if c.Op == source.Insert {
			key = c.After
		}
		kb = batch.AppendKey(kb[:0], c.Table, key)
		if s := keys.get(c.Table, kb); s == nil || !s.skip {
			if out != nil {
				out = append(out, c)
			}
			continue
		}
		if out == nil {
			out = append(make([]source.Change, 0, len(changes)), changes[:n]...)
		}
	}
	if out == nil {
		return changes
	}
	return out
}

// copyRows writes f's rows by COPY inside a savepoint, after sending what
// b holds; on a unique violation it rolls the savepoint back and writes
// them as Exec writes any row, after checking their keys' first changes
// (see the comment at the top). It returns the batch to queue the next
// statements in.
func (t *target) copyRows(ctx context.Context, b *pgx.Batch, p *plan, f *fastRows) (*pgx.Batch, error) {
	b.Queue("SAVEPOINT regiond_copy")
	if err := t.send(ctx, b); err != nil {
		return nil, err
	}
	t.copies++
	t.copyBuf.Reset()
	for _, row := range f.rows {
		t.copyBuf.B = appendCopyRow(t.copyBuf.B, p, row)
	}
	_, err := t.conn.PgConn().CopyFrom(ctx, &t.copyBuf, p.copy)
	t.a.copies.Add(1)
	b = &pgx.Batch{}
	if err == nil {
		b.Queue("RELEASE SAVEPOINT regiond_copy")
		return b, nil
	}
	if pgCode(err) != "23505" {
		return nil, err
	}
	// A row of one of the keys is there (a replay of what is applied
	// already, a row the target region wrote, a local insert that raced
	// the batch): the ordinary path.
	t.a.copyFallbacks.Add(1)
	t.a.logger.Debug("COPY met a present row; its rows take the checked upsert", "table", p.table.name, "rows", len(f.rows), "error", err)
	// Right away: the server parses nothing else in the aborted
	// subtransaction (the batches below prepare their statements).
	if _, err := t.conn.PgConn().Exec(ctx, "ROLLBACK TO SAVEPOINT regiond_copy; RELEASE SAVEPOINT regiond_copy").ReadAll(); err != nil {
		return nil, err
	}
	t.pending = b
	var checks []source.Change
	for _, c := range f.checks {
		if c.Table != nil {
			checks = append(checks, c)
		}
	}
	remote, err := batch.CheckRemote(ctx, t, t.a.cfg.Rules, checks)
	if err != nil {
		return nil, err
	}
	if err := t.Record(ctx, remote); err != nil {
		return nil, err
	}
	b = t.take()
	t.queueRows(b, p.upsert, p, p.written, f.rows)
	return b, nil
}

// copyBuffer is the COPY data of one statement, read by CopyFrom.
type copyBuffer struct {
	B   []byte
	off int
}

func (c *copyBuffer) Reset() { c.B, c.off = c.B[:0], 0 }

func (c *copyBuffer) Read(p []byte) (int, error) {
	if c.off >= len(c.B) {
		return 0, io.EOF
	}
	n := copy(p, c.B[c.off:])
	c.off += n
	return n, nil
}

// appendCopyRow appends row's written columns as one line of COPY's text
// format: each value the text that encode gives the INSERT (the server
// parses it with the same input function), escaped, \N for NULL.
func appendCopyRow(b []byte, p *plan, row source.Row) []byte {
	for n, i := range p.written {
		if n > 0 {
			b = append(b, '\t')
		}
		c := p.cols[i]
		switch x := row[i].(type) {
		case nil:
			b = append(b, `\N`...)
			continue
		case int64:
			if c.kind != kindBit && c.kind != kindVarbit {
				b = strconv.AppendInt(b, x, 10)
				continue
			}
		case string:
			if c.kind != kindBytea {
				b = appendCopyText(b, x)
				continue
			}
		}
		v := encode(row[i], c)
		if !v.Valid {
			b = append(b, `\N`...)
			continue
		}
		b = appendCopyText(b, v.String)
	}
	return append(b, '\n')
}

// appendCopyText appends s escaped for COPY's text format: backslash and
// the delimiter and line characters are the only ones it gives a meaning.
func appendCopyText(b []byte, s string) []byte {
	for {
		i := indexSpecial(s)
		if i < 0 {
			return append(b, s...)
		}
		b = append(b, s[:i]...)
		switch s[i] {
		case '\\':
			b = append(b, `\\`...)
		case '\t':
			b = append(b, `\t`...)
		case '\n':
			b = append(b, `\n`...)
		case '\r':
			b = append(b, `\r`...)
		}
		s = s[i+1:]
	}
}

func indexSpecial(s string) int {
	for i := 0; i < len(s); i++ {
		switch s[i] {
		case '\\', '\t', '\n', '\r':
			return i
		}
	}
	return -1
}
