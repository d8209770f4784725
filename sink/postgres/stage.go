package postgres

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"strconv"
	"strings"

	"github.com/jackc/pgx/v5"

	"github.com/regiond/regiond/source"
)

// stage is the session's temporary staging table of one plan: large
// segments of full rows go into it with one binary COPY of their text
// values, and into the target table with one INSERT … SELECT … ON CONFLICT
// from it, which casts each value exactly as the unnest statement does.
// COPY costs the server a fraction of decoding text arrays, and the staging
// table, being temporary, writes no WAL. It is created once per session
// (in the applier's transaction, after the marker write) and emptied at
// every commit (ON COMMIT DELETE ROWS).
type stage struct {
	name  string // pg_temp.regiond_stage_N
	ready bool   // exists: created in a committed transaction
	made  bool   // created in the open transaction
	used  bool   // holds rows in the open transaction
}

// stageFor returns p's staging table.
func (t *target) stageFor(p *plan) *stage {
	if s := t.stages[p]; s != nil {
		return s
	}
	s := &stage{name: "pg_temp.regiond_stage_" + strconv.Itoa(len(t.stages)+1)}
	t.stages[p] = s
	return s
}

// stageRows writes full rows of p through its staging table: what b holds
// (BEGIN and the marker write first, when not yet sent) is sent, then the
// COPY; the returned batch holds the INSERT from the staging table, to be
// sent with the rest of Exec.
func (t *target) stageRows(ctx context.Context, b *pgx.Batch, p *plan, rows []source.Row) (*pgx.Batch, error) {
	s := t.stageFor(p)
	if !s.ready && !s.made {
		var cols strings.Builder
		for n := range p.written {
			if n > 0 {
				cols.WriteString(", ")
			}
			cols.WriteString("v" + strconv.Itoa(n+1) + " text")
		}
		b.Queue("CREATE TEMP TABLE IF NOT EXISTS " + s.name + " (" + cols.String() + ") ON COMMIT DELETE ROWS")
		s.made = true
	}
	if s.used {
		b.Queue("DELETE FROM " + s.name)
	}
	if err := t.send(ctx, b); err != nil {
		return nil, err
	}
	if _, err := t.conn.PgConn().CopyFrom(ctx, bytes.NewReader(copyData(p, rows)),
		"COPY "+s.name+" ("+p.stageCols+") FROM STDIN (FORMAT binary)"); err != nil {
		return nil, fmt.Errorf("copy into staging table of %s: %w", p.table.name, err)
	}
	s.used = true
	nb := &pgx.Batch{}
	nb.Queue(p.stageUpsert(s.name))
	return nb, nil
}

// copyData is rows' written columns in COPY's binary format, each value the
// text encode gives it (a text column's binary form is its bytes).
func copyData(p *plan, rows []source.Row) []byte {
	size := 21
	for _, r := range rows {
		size += 2 + 4*len(p.written)
		for _, i := range p.written {
			if s, ok := r[i].(string); ok {
				size += len(s)
			} else {
				size += 24
			}
		}
	}
	buf := make([]byte, 0, size)
	buf = append(buf, "PGCOPY\n\377\r\n\000"...)
	buf = binary.BigEndian.AppendUint32(buf, 0) // flags
	buf = binary.BigEndian.AppendUint32(buf, 0) // header extension
	for _, r := range rows {
		buf = binary.BigEndian.AppendUint16(buf, uint16(len(p.written)))
		for _, i := range p.written {
			v := encode(r[i], p.cols[i])
			if !v.Valid {
				buf = binary.BigEndian.AppendUint32(buf, 0xFFFFFFFF) // -1: NULL
				continue
			}
			buf = binary.BigEndian.AppendUint32(buf, uint32(len(v.String)))
			buf = append(buf, v.String...)
		}
	}
	return binary.BigEndian.AppendUint16(buf, 0xFFFF) // trailer: -1
}

// stagesCommitted records that the open transaction committed: the staging
// tables it created exist from now on, and all are empty.
func (t *target) stagesCommitted() {
	for _, s := range t.stages {
		s.ready = s.ready || s.made
		s.made, s.used = false, false
	}
}

// stagesRolledBack records that the open transaction was rolled back: the
// staging tables it created are gone.
func (t *target) stagesRolledBack() {
	for _, s := range t.stages {
		s.made, s.used = false, false
	}
}
