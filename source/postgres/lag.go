package postgres

import (
	"context"
	"fmt"
	"time"

	"github.com/regiond/regiond/checkpoint"
	"github.com/regiond/regiond/internal/pgconn"
)

// LagBytes returns how many bytes of WAL the server has written beyond pos
// (pg_current_wal_lsn() - pos), for the regiond_source_position_lag_bytes
// metric. It opens a short-lived regular connection: it is called rarely.
func (r *Reader) LagBytes(ctx context.Context, pos checkpoint.Position) (int64, error) {
	lsn, err := asLSN(pos)
	if err != nil {
		return 0, err
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	conn, err := pgconn.Connect(ctx, r.cfg.DSN)
	if err != nil {
		return 0, fmt.Errorf("region %s: connect: %w", r.cfg.Region, err)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	var n int64
	if err := conn.QueryRow(ctx, "SELECT (pg_current_wal_lsn() - $1::pg_lsn)::bigint", lsn.String()).Scan(&n); err != nil {
		return 0, fmt.Errorf("region %s: pg_current_wal_lsn: %w", r.cfg.Region, err)
	}
	return max(n, 0), nil
}
