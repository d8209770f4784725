package mysql

import (
	"errors"
	"net"
	"os"
	"testing"
	"time"
)

// A connection that keeps delivering stays up for longer than the timeout;
// once it goes quiet, the next read fails with a deadline error.
func TestIdleConnFailsOnlyWhenQuiet(t *testing.T) {
	const timeout = 400 * time.Millisecond
	client, server := net.Pipe()
	defer server.Close()
	c := &idleConn{Conn: client, timeout: timeout}
	defer c.Close()
	go func() {
		for end := time.Now().Add(3 * timeout); time.Now().Before(end); {
			if _, err := server.Write([]byte{1}); err != nil {
				return
			}
			time.Sleep(timeout / 20)
		}
	}()
	start := time.Now()
	var buf [1]byte
	for time.Since(start) < 2*timeout {
		if _, err := c.Read(buf[:]); err != nil {
			t.Fatalf("read %v after the start, while data kept coming: %v", time.Since(start), err)
		}
	}
	// The writer stops within a write or two; then nothing arrives.
	for {
		_, err := c.Read(buf[:])
		if err == nil {
			continue
		}
		if !errors.Is(err, os.ErrDeadlineExceeded) {
			t.Fatalf("quiet connection: got %v, want a deadline error", err)
		}
		return
	}
}
