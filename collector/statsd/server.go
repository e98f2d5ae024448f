package statsd

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync"
	"syscall"
	"time"
)

// ListenUDP opens n UDP sockets on addr with SO_REUSEPORT, so that the
// kernel spreads senders over them (one sender always lands on the same
// socket, which keeps its gauge updates in order). With port 0 the first
// socket picks the port and the others join it.
func ListenUDP(addr string, n int, readBuffer int) ([]*net.UDPConn, error) {
	lc := net.ListenConfig{Control: func(network, address string, c syscall.RawConn) error {
		var serr error
		err := c.Control(func(fd uintptr) {
			serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, soReusePort, 1)
		})
		if err != nil {
			return err
		}
		return serr
	}}
	var conns []*net.UDPConn
	closeAll := func() {
		for _, c := range conns {
			c.Close()
		}
	}
	for i := range max(n, 1) {
		pc, err := lc.ListenPacket(context.Background(), "udp", addr)
		if err != nil {
			closeAll()
			return nil, fmt.Errorf("statsd listen %s: %w", addr, err)
		}
		c := pc.(*net.UDPConn)
		if readBuffer > 0 {
			setReadBuffer(c, readBuffer)
		}
		conns = append(conns, c)
		if i == 0 {
			addr = c.LocalAddr().String()
		}
	}
	return conns, nil
}

// soReusePort is SO_REUSEPORT on Linux.
const soReusePort = 0xf

// maxDatagram is the largest datagram read whole; a longer one is cut
// there, and its cut line refused.
const maxDatagram = 16 << 10

// setReadBuffer sets the socket's receive buffer. As root it may exceed
// net.core.rmem_max (SO_RCVBUFFORCE); otherwise the kernel caps it there.
func setReadBuffer(c *net.UDPConn, size int) {
	rc, err := c.SyscallConn()
	if err == nil {
		var serr error
		rc.Control(func(fd uintptr) {
			serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUFFORCE, size)
		})
		if serr == nil {
			return
		}
	}
	c.SetReadBuffer(size)
}

// Serve reads datagrams from conns (one goroutine each, each with its own
// shard) until ctx ends, then closes them.
func (a *Aggregator) Serve(ctx context.Context, conns []*net.UDPConn) error {
	var wg sync.WaitGroup
	errs := make([]error, len(conns))
	for i, c := range conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = a.readBatch(ctx, c, a.Shard(i))
		}()
	}
	<-ctx.Done()
	for _, c := range conns {
		c.Close()
	}
	wg.Wait()
	return errors.Join(errs...)
}

// readPlain reads one datagram per system call; readBatch (Linux) is the
// faster path, this is its fallback.
func (a *Aggregator) readPlain(ctx context.Context, c *net.UDPConn, s *Shard) error {
	buf := make([]byte, maxDatagram)
	for {
		n, err := c.Read(buf)
		if err != nil {
			if ctx.Err() != nil || errors.Is(err, net.ErrClosed) {
				return nil
			}
			// A transient error (e.g. ICMP feedback): go on reading.
			continue
		}
		s.AddDatagram(buf[:n], time.Now().UnixNano())
	}
}
