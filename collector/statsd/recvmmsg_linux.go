package statsd

import (
	"context"
	"errors"
	"net"
	"syscall"
	"time"
	"unsafe"
)

// batchSize is how many datagrams one recvmmsg(2) call may return.
const batchSize = 32

// mmsghdr is struct mmsghdr: a msghdr and the length received.
type mmsghdr struct {
	hdr syscall.Msghdr
	n   uint32
}

// readBatch reads up to batchSize datagrams per system call with
// recvmmsg(2), which is what lets one core take several hundred thousand
// datagrams a second. It falls back to one read per call if the socket
// does not give access to its descriptor.
func (a *Aggregator) readBatch(ctx context.Context, c *net.UDPConn, s *Shard) error {
	rc, err := c.SyscallConn()
	if err != nil {
		return a.readPlain(ctx, c, s)
	}
	bufs := make([][]byte, batchSize)
	iovs := make([]syscall.Iovec, batchSize)
	msgs := make([]mmsghdr, batchSize)
	for i := range msgs {
		bufs[i] = make([]byte, maxDatagram)
		iovs[i].Base = &bufs[i][0]
		iovs[i].SetLen(maxDatagram)
		msgs[i].hdr.Iov = &iovs[i]
		msgs[i].hdr.Iovlen = 1
	}
	for {
		var got int
		var callErr syscall.Errno
		err := rc.Read(func(fd uintptr) bool {
			r, _, errno := syscall.Syscall6(syscall.SYS_RECVMMSG, fd, uintptr(unsafe.Pointer(&msgs[0])), batchSize, syscall.MSG_DONTWAIT, 0, 0)
			if errno == syscall.EAGAIN || errno == syscall.EWOULDBLOCK {
				return false // wait for the poller
			}
			got, callErr = int(r), errno
			return true
		})
		if err != nil {
			if ctx.Err() != nil || errors.Is(err, net.ErrClosed) {
				return nil
			}
			return err
		}
		if callErr != 0 {
			if callErr == syscall.EINTR || callErr == syscall.ECONNREFUSED {
				continue
			}
			if ctx.Err() != nil {
				return nil
			}
			time.Sleep(10 * time.Millisecond)
			continue
		}
		now := time.Now().UnixNano()
		s.mu.Lock()
		for i := range got {
			s.datagrams++
			Lines(bufs[i][:msgs[i].n], func(line []byte) { s.addLocked(line, now) })
			msgs[i].hdr.Flags = 0
		}
		s.mu.Unlock()
	}
}
