package postgres

import (
	"context"
	"net"
	"sync/atomic"
	"time"
)

// Reading a busy stream in bulk.
//
// The WAL sender writes every message (one per row) to the socket by
// itself. A reader that keeps up sleeps on the socket after each one, so
// the kernel wakes it once per row: the WAL sender pays for that wake-up in
// its send, the reader for a read system call and for parking and waking
// its goroutine. While the stream is busy, the receiving socket's low-water
// mark (SO_RCVLOWAT) is raised, so that the kernel wakes the reader only
// once that many bytes are waiting; a read still returns whatever is there.
//
// Every busy tick the mark is checked: when the reader handled no message
// in a tick while fewer bytes than the mark wait in the socket (the tail of
// a burst, a lone transaction, a keepalive), the mark goes back to 1 byte,
// which wakes the reader at once. So a message waits at most about two
// busy ticks. After idleAfter busy ticks with nothing waiting and nothing
// handled, the ticks slow down until the stream is busy again.
//
// The mark's size was measured with the reader alone draining 200,000
// inserts (100-row transactions) from a local server, three times each:
// the WAL sender used 1.03–1.30 CPU s with no mark, 0.74–1.09 with 16 KB,
// 0.66–0.72 with 64 KB and 0.67–0.73 with 128 KB (PostgreSQL's own apply
// worker, a slow reader, costs it 0.57–0.66). A larger mark delays
// nothing more at lower rates: when less than the mark arrives in a tick,
// the tick that finds the reader waiting lowers it, as above.
const (
	bulkLowat    = 64 << 10              // bytes the kernel waits for while the stream is busy
	bulkTick     = time.Millisecond      // how often the mark is checked while the stream is busy
	idleTick     = 50 * time.Millisecond // and while it is not (an idle pipeline wakes 20 times a second)
	idleAfter    = 10                    // empty busy ticks before the stream counts as idle
	bulkMessages = 500                   // messages in an idle tick that make the stream busy (10,000/s)
)

// lowatControl raises and lowers the low-water mark of the replication
// socket by the receiving goroutine's pace (messages, counted by it).
type lowatControl struct {
	sock     lowatSocket
	messages *atomic.Uint64
}

// lowatSocket is the socket's side (lowat_linux.go).
type lowatSocket interface {
	setLowat(n int) error
	waiting() (int, error) // bytes received and not yet read
}

// newLowatControl returns nil when conn's socket has no usable low-water
// mark (a Unix socket's readiness ignores it; TLS, other systems).
func newLowatControl(conn net.Conn, messages *atomic.Uint64) *lowatControl {
	sock := newLowatSocket(conn)
	if sock == nil {
		return nil
	}
	return &lowatControl{sock: sock, messages: messages}
}

// run adjusts the mark until ctx ends or the socket refuses, and leaves it
// at 1 byte.
func (l *lowatControl) run(ctx context.Context) {
	t := time.NewTicker(idleTick)
	defer t.Stop()
	var (
		busy   bool // ticking every bulkTick
		raised bool // the mark is bulkLowat
		empty  int  // busy ticks in a row with nothing handled or waiting
	)
	set := func(up bool) bool {
		if up == raised {
			return true
		}
		n := 1
		if up {
			n = bulkLowat
		}
		if l.sock.setLowat(n) != nil {
			return false
		}
		raised = up
		return true
	}
	defer set(false)
	last := l.messages.Load()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		n := l.messages.Load()
		handled := n - last
		last = n
		if !busy {
			if handled >= bulkMessages {
				busy, empty = true, 0
				t.Reset(bulkTick)
				if !set(true) {
					return
				}
			}
			continue
		}
		if handled > 0 {
			empty = 0
			if !set(true) {
				return
			}
			continue
		}
		w, err := l.sock.waiting()
		if err != nil {
			return
		}
		switch {
		case w >= bulkLowat:
			// The reader is behind, not waiting for the mark.
		case w > 0:
			// The reader may be waiting for bytes that are not coming.
			if !set(false) {
				return
			}
		default:
			if empty++; empty >= idleAfter {
				busy = false
				t.Reset(idleTick)
				if !set(false) {
					return
				}
			}
		}
	}
}
