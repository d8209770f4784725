// Package checkpoint defines the positions regiond records in a region's
// change log, and how they are compared.
//
// A position always points just after a committed source transaction: never
// inside one. Sinks store the text form of a position in the target in the
// same transaction as the rows it covers; sources parse it back to resume.
package checkpoint

import (
	"errors"
	"fmt"

	gomysql "github.com/go-mysql-org/go-mysql/mysql"
)

// Position is a point in one region's change log, just after a committed
// transaction. Implementations are immutable values.
type Position interface {
	// String is the durable text form. The source that produced the
	// position parses it back.
	String() string
}

// ErrPositionLost means the source no longer holds the log at a checkpoint's
// position (binlog purged, slot dropped): the pipeline cannot resume without
// a backfill.
var ErrPositionLost = errors.New("source position lost")

// GTID is a MySQL or MariaDB GTID state: for MariaDB the last sequence number
// of every replication domain, for MySQL the executed GTID set.
type GTID struct {
	flavor string
	set    gomysql.GTIDSet
}

var _ Position = GTID{}

// ParseGTID parses a GTID state of the given flavor ("mysql" or "mariadb").
// The empty string is the empty state.
func ParseGTID(flavor, s string) (GTID, error) {
	if flavor != gomysql.MySQLFlavor && flavor != gomysql.MariaDBFlavor {
		return GTID{}, fmt.Errorf("parse gtid %q: unknown flavor %q", s, flavor)
	}
	set, err := gomysql.ParseGTIDSet(flavor, s)
	if err != nil {
		return GTID{}, fmt.Errorf("parse %s gtid %q: %v", flavor, s, err)
	}
	return GTID{flavor: flavor, set: set}, nil
}

// NewGTID wraps a go-mysql GTID set; the set is cloned.
func NewGTID(flavor string, set gomysql.GTIDSet) GTID {
	return GTID{flavor: flavor, set: set.Clone()}
}

// Flavor is "mysql" or "mariadb".
func (g GTID) Flavor() string { return g.flavor }

// Set returns a copy of the underlying go-mysql GTID set.
func (g GTID) Set() gomysql.GTIDSet {
	if g.set == nil {
		s, _ := gomysql.ParseGTIDSet(g.flavor, "")
		return s
	}
	return g.set.Clone()
}

// String is the server's own text form, e.g. "0-1-42,1-2-7" (MariaDB) or
// "3e11fa47-71ca-11e1-9e33-c80aa9429562:1-5" (MySQL).
func (g GTID) String() string {
	if g.set == nil {
		return ""
	}
	return g.set.String()
}

// IsZero reports whether g is the empty state.
func (g GTID) IsZero() bool { return g.set == nil || g.set.IsEmpty() }

// Contains reports whether every transaction covered by o is covered by g.
// For MariaDB this compares sequence numbers per domain.
func (g GTID) Contains(o GTID) bool {
	if o.IsZero() {
		return true
	}
	if g.IsZero() || g.flavor != o.flavor {
		return false
	}
	if g.flavor == gomysql.MariaDBFlavor {
		a := g.set.(*gomysql.MariadbGTIDSet)
		b := o.set.(*gomysql.MariadbGTIDSet)
		for dom, want := range b.Sets {
			have, ok := a.Sets[dom]
			if !ok || have.SequenceNumber < want.SequenceNumber {
				return false
			}
		}
		return true
	}
	return g.set.Contain(o.set)
}

// LSN is a PostgreSQL WAL position: the end LSN of a committed transaction.
type LSN uint64

var _ Position = LSN(0)

// ParseLSN parses the server's text form, e.g. "16/B374D848".
func ParseLSN(s string) (LSN, error) {
	var hi, lo uint32
	if _, err := fmt.Sscanf(s, "%X/%X", &hi, &lo); err != nil {
		return 0, fmt.Errorf("parse lsn %q: %v", s, err)
	}
	return LSN(uint64(hi)<<32 | uint64(lo)), nil
}

// String is the server's text form, "HI/LO" in hex.
func (l LSN) String() string { return fmt.Sprintf("%X/%X", uint32(l>>32), uint32(l)) }
