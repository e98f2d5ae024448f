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
			// Best effort: the kernel caps it at net.core.rmem_max.
			c.SetReadBuffer(readBuffer)
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

// Serve reads datagrams from conns (one goroutine each, each with its own
// shard) until ctx ends, then closes them.
func (a *Aggregator) Serve(ctx context.Context, conns []*net.UDPConn) error {
	var wg sync.WaitGroup
	errs := make([]error, len(conns))
	for i, c := range conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = a.read(ctx, c, a.Shard(i))
		}()
	}
	<-ctx.Done()
	for _, c := range conns {
		c.Close()
	}
	wg.Wait()
	return errors.Join(errs...)
}

func (a *Aggregator) read(ctx context.Context, c *net.UDPConn, s *Shard) error {
	buf := make([]byte, 65536)
	for {
		n, _, err := c.ReadFromUDP(buf)
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
