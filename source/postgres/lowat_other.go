//go:build !(linux && (amd64 || arm64))

package postgres

import "net"

func newLowatSocket(net.Conn) lowatSocket { return nil }
