//go:build !unix

package gateway

import "net"

// nonblockingReader: no raw reads here, so every exchange is armed.
func nonblockingReader(net.Conn) func(p []byte) (n int, wouldBlock bool, err error) { return nil }
