package mysql

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"

	"github.com/regiond/regiond/checkpoint"
)

// binlogCoord is a place in a server's binlog: file and byte offset.
type binlogCoord struct {
	file string
	pos  uint32
}

// maxEnds bounds how many transaction ends the reader remembers the binlog
// coordinates of: enough for everything read and not yet applied (the
// pipeline's buffer and a batch).
const maxEnds = 1 << 15

// ends maps recent transaction end positions (GTID state text) to where they
// end in the binlog, so that the distance from an applied GTID position to
// the end of the binlog can be told in bytes. GTID sets alone do not say
// where in the binlog they are.
type ends struct {
	mu    sync.Mutex
	at    map[string]binlogCoord
	order []string // FIFO of at's keys
}

func (e *ends) add(pos string, c binlogCoord) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.at == nil {
		e.at = map[string]binlogCoord{}
	}
	if _, ok := e.at[pos]; ok {
		return
	}
	e.at[pos] = c
	e.order = append(e.order, pos)
	if len(e.order) > maxEnds {
		delete(e.at, e.order[0])
		e.order = e.order[1:]
	}
}

func (e *ends) get(pos string) (binlogCoord, bool) {
	e.mu.Lock()
	defer e.mu.Unlock()
	c, ok := e.at[pos]
	return c, ok
}

// errUnknownCoord means the position was not read by this reader (yet).
var errUnknownCoord = errors.New("binlog coordinates of the position are not known yet")

// LagBytes returns how many bytes the source's binlog holds beyond pos, a
// transaction end this reader delivered: the rest of pos's binlog file and
// every later file, from SHOW BINARY LOGS (needs BINLOG MONITOR or
// REPLICATION CLIENT, which reading the binlog needs anyway).
func (r *Reader) LagBytes(ctx context.Context, pos checkpoint.Position) (int64, error) {
	if pos == nil {
		return 0, errUnknownCoord
	}
	c, ok := r.ends.get(pos.String())
	if !ok {
		return 0, errUnknownCoord
	}
	rows, err := r.db.QueryContext(ctx, "SHOW BINARY LOGS")
	if err != nil {
		return 0, fmt.Errorf("region %s: SHOW BINARY LOGS: %w", r.cfg.Region, err)
	}
	defer rows.Close()
	cols, err := rows.Columns()
	if err != nil {
		return 0, err
	}
	var (
		total int64
		seen  bool
	)
	for rows.Next() {
		// Log_name, File_size (and Encrypted on MySQL 8).
		vals := make([]any, len(cols))
		var (
			name string
			size int64
		)
		vals[0], vals[1] = &name, &size
		for i := 2; i < len(vals); i++ {
			vals[i] = new(any)
		}
		if err := rows.Scan(vals...); err != nil {
			return 0, err
		}
		switch {
		case name == c.file:
			seen = true
			total += max(size-int64(c.pos), 0)
		case seen || strings.Compare(name, c.file) > 0:
			// Binlog file names sort in order (base name, zero-padded
			// sequence number).
			seen = true
			total += size
		}
	}
	if err := rows.Err(); err != nil {
		return 0, err
	}
	return total, nil
}
