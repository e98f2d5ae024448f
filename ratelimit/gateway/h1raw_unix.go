//go:build unix

package gateway

import (
	"io"
	"net"
	"os"
	"syscall"
)

// nonblockingReader returns a read that never waits for nc: it reports
// wouldBlock where a read through nc would park on the poller. nil when
// nc offers no raw access.
func nonblockingReader(nc net.Conn) func(p []byte) (n int, wouldBlock bool, err error) {
	sc, ok := nc.(syscall.Conn)
	if !ok {
		return nil
	}
	raw, err := sc.SyscallConn()
	if err != nil {
		return nil
	}
	r := &rawReader{raw: raw, nc: nc}
	r.readOnce = r.read // one method value for the connection's life, not one per read
	return r.tryRead
}

type rawReader struct {
	raw      syscall.RawConn
	nc       net.Conn
	readOnce func(fd uintptr) bool
	buf      []byte
	n        int
	err      error
}

func (r *rawReader) read(fd uintptr) bool {
	for {
		n, err := syscall.Read(int(fd), r.buf)
		if err == syscall.EINTR {
			continue
		}
		r.n, r.err = max(n, 0), err
		return true // never wait: the caller does, through the connection
	}
}

func (r *rawReader) tryRead(p []byte) (int, bool, error) {
	r.buf = p
	err := r.raw.Read(r.readOnce)
	r.buf = nil
	switch {
	case err != nil: // closed, or its deadline passed
		return 0, false, err
	case r.err == syscall.EAGAIN:
		return 0, true, nil
	case r.err != nil:
		return 0, false, &net.OpError{Op: "read", Net: r.nc.LocalAddr().Network(), Source: r.nc.LocalAddr(), Addr: r.nc.RemoteAddr(), Err: os.NewSyscallError("read", r.err)}
	case r.n == 0:
		return 0, false, io.EOF
	}
	return r.n, false, nil
}
