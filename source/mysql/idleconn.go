package mysql

import (
	"context"
	"net"
	"time"
)

// readIdleTimeout is how long the binlog connection may deliver nothing
// before the read fails and the pipeline reconnects. The server sends a
// heartbeat every heartbeatPeriod when it has no event to send, so only a
// dead server or network trips it.
const (
	readIdleTimeout = 30 * time.Second
	heartbeatPeriod = 5 * time.Second
)

// idleConn fails a read once the connection has delivered nothing for
// about timeout. go-mysql's own ReadTimeout sets a socket deadline before
// every packet, twice; at 300,000 changes/s that was 6% of the reader's CPU.
// idleConn moves the deadline only when a quarter of the timeout has passed
// since it last did, so a read blocks for at least 3/4 of the timeout and
// at most the whole of it before it fails.
type idleConn struct {
	net.Conn
	timeout time.Duration
	moved   time.Time // when the deadline was last set (now + timeout)
}

func (c *idleConn) Read(p []byte) (int, error) {
	if now := time.Now(); now.Sub(c.moved) >= c.timeout/4 {
		if err := c.Conn.SetReadDeadline(now.Add(c.timeout)); err != nil {
			return 0, err
		}
		c.moved = now
	}
	return c.Conn.Read(p)
}

// dialIdle returns a dialer for go-mysql whose connections are idleConns.
func dialIdle(timeout time.Duration) func(ctx context.Context, network, addr string) (net.Conn, error) {
	var d net.Dialer
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		conn, err := d.DialContext(ctx, network, addr)
		if err != nil {
			return nil, err
		}
		return &idleConn{Conn: conn, timeout: timeout}, nil
	}
}
