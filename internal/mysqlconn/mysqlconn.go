// Package mysqlconn opens database/sql connections to a MySQL or MariaDB
// region with the session settings every regiond connection relies on.
package mysqlconn

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"strconv"
	"strings"
	"time"

	"github.com/go-sql-driver/mysql"
)

// Params says how to reach a server.
type Params struct {
	Host     string
	Port     int
	User     string
	Password string
	Database string
	// Extra holds DSN parameters from the config (e.g. tls=true).
	Extra map[string]string
}

// Addr is host:port.
func (p Params) Addr() string { return net.JoinHostPort(p.Host, strconv.Itoa(p.Port)) }

// Open returns a pool whose every connection uses UTC for TIMESTAMP values,
// utf8mb4, and client-side parameter interpolation (one round trip per
// statement, no server-side prepare: batches are large multi-row statements).
func Open(p Params) (*sql.DB, error) {
	cfg := mysql.NewConfig()
	cfg.Net = "tcp"
	cfg.Addr = p.Addr()
	cfg.User = p.User
	cfg.Passwd = p.Password
	cfg.DBName = p.Database
	cfg.InterpolateParams = true
	cfg.ParseTime = false
	cfg.Loc = time.UTC
	cfg.Timeout = 5 * time.Second
	cfg.ReadTimeout = 5 * time.Minute
	cfg.WriteTimeout = 5 * time.Minute
	cfg.MultiStatements = false
	// RowsAffected counts matched rows, also when a write changed nothing.
	cfg.ClientFoundRows = true
	cfg.Params = map[string]string{"time_zone": "'+00:00'"}
	if err := cfg.Apply(mysql.Charset("utf8mb4", "utf8mb4_bin")); err != nil {
		return nil, err
	}
	for k, v := range p.Extra {
		switch k {
		case "tls":
			cfg.TLSConfig = v
		default:
			cfg.Params[k] = v
		}
	}
	conn, err := mysql.NewConnector(cfg)
	if err != nil {
		return nil, fmt.Errorf("mysql connector for %s: %w", p.Addr(), err)
	}
	db := sql.OpenDB(conn)
	db.SetConnMaxIdleTime(5 * time.Minute)
	db.SetMaxIdleConns(4)
	return db, nil
}

// QuietDriverLogs stops go-sql-driver from printing its own log lines
// ("closing bad idle connection") on stderr, outside regiond's structured
// logs; the errors that matter reach regiond as return values.
func QuietDriverLogs() {
	_ = mysql.SetLogger(log.New(io.Discard, "", 0))
}

// Flavor returns "mariadb" or "mysql" for the server behind db.
func Flavor(ctx context.Context, db *sql.DB) (string, error) {
	var v string
	if err := db.QueryRowContext(ctx, "SELECT VERSION()").Scan(&v); err != nil {
		return "", err
	}
	if strings.Contains(strings.ToLower(v), "mariadb") {
		return "mariadb", nil
	}
	return "mysql", nil
}

// ErrorNumber returns the server error number of err, or 0.
func ErrorNumber(err error) uint16 {
	var me *mysql.MySQLError
	if errors.As(err, &me) {
		return me.Number
	}
	return 0
}

// IsLockError reports a deadlock or lock wait timeout: the transaction was
// rolled back (1213) or the statement timed out (1205) and the whole
// transaction should simply be tried again.
func IsLockError(err error) bool {
	n := ErrorNumber(err)
	return n == 1213 || n == 1205
}

// IsServerError reports an error the server answered with (a rejected
// statement), as opposed to a connection or client failure.
func IsServerError(err error) bool {
	return ErrorNumber(err) != 0
}
