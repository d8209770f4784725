//go:build linux && (amd64 || arm64)

package postgres

import (
	"context"
	"io"
	"net"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// TestLowatTail: after a busy stream raised the socket's low-water mark, a
// few bytes sent alone (the tail of a burst, a keepalive) still reach the
// reader within a few ticks, and the mark is back at 1 byte once the
// control stops.
func TestLowatTail(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	sender, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer sender.Close()
	conn, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()

	var messages atomic.Uint64
	l := newLowatControl(conn, &messages)
	if l == nil {
		t.Fatal("no low-water mark control for a TCP connection")
	}
	mark := func() int {
		var n int
		var gerr error
		if err := l.sock.(tcpLowat).rc.Control(func(fd uintptr) {
			n, gerr = syscall.GetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVLOWAT)
		}); err != nil || gerr != nil {
			t.Fatal(err, gerr)
		}
		return n
	}
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	done := make(chan struct{})
	go func() {
		defer close(done)
		l.run(ctx)
	}()

	// The reader: counts messages (100-byte writes) as they arrive.
	got := make(chan int, 1<<16)
	go func() {
		buf := make([]byte, 100)
		for {
			if _, err := io.ReadFull(conn, buf); err != nil {
				close(got)
				return
			}
			messages.Add(1)
			got <- int(buf[0])
		}
	}()
	msg := make([]byte, 100)
	send := func(b byte) {
		msg[0] = b
		if _, err := sender.Write(msg); err != nil {
			t.Fatal(err)
		}
	}
	// A busy stream for a few idle ticks: the control raises the mark.
	raised := false
	for end := time.Now().Add(4 * idleTick); time.Now().Before(end); {
		for range 20 {
			send(1)
		}
		raised = raised || mark() == bulkLowat
		time.Sleep(100 * time.Microsecond)
	}
	if !raised {
		t.Errorf("the mark was never raised to %d during a busy stream", bulkLowat)
	}
	// Drain, then one message alone.
	time.Sleep(20 * time.Millisecond)
	for len(got) > 0 {
		<-got
	}
	start := time.Now()
	send(2)
	select {
	case b := <-got:
		if b != 2 {
			t.Fatalf("got message %d, want 2", b)
		}
	case <-time.After(2 * time.Second):
		t.Fatal("a lone message did not reach the reader within 2 s")
	}
	if d := time.Since(start); d > 100*time.Millisecond {
		t.Errorf("a lone message took %v to reach the reader, want a few busy ticks (%v each)", d, bulkTick)
	}
	cancel()
	<-done
	if n := mark(); n != 1 {
		t.Errorf("the mark is %d after the control stopped, want 1", n)
	}
}
