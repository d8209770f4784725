//go:build linux && (amd64 || arm64)

package postgres

import (
	"net"
	"syscall"
	"unsafe"
)

// siocinq is SIOCINQ (FIONREAD) on these architectures.
const siocinq = 0x541B

type tcpLowat struct{ rc syscall.RawConn }

func newLowatSocket(conn net.Conn) lowatSocket {
	tc, ok := conn.(*net.TCPConn)
	if !ok {
		return nil
	}
	rc, err := tc.SyscallConn()
	if err != nil {
		return nil
	}
	return tcpLowat{rc}
}

// setLowat sets SO_RCVLOWAT; Linux wakes a reader waiting on the socket
// right away if the new mark is met.
func (s tcpLowat) setLowat(n int) error {
	var serr error
	if err := s.rc.Control(func(fd uintptr) {
		serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVLOWAT, n)
	}); err != nil {
		return err
	}
	return serr
}

func (s tcpLowat) waiting() (int, error) {
	var (
		n    int32
		serr error
	)
	if err := s.rc.Control(func(fd uintptr) {
		if _, _, e := syscall.Syscall(syscall.SYS_IOCTL, fd, siocinq, uintptr(unsafe.Pointer(&n))); e != 0 {
			serr = e
		}
	}); err != nil {
		return 0, err
	}
	return int(n), serr
}
