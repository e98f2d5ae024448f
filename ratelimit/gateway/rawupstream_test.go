package gateway

import (
	"bufio"
	"net"
	"net/http"
	"sync/atomic"
	"testing"
)

// rawUpstream is an upstream that writes its answers as raw bytes, so a
// test controls every byte (and a benchmark's upstream costs little). Each
// request read from a connection is handed to answer, which writes to c;
// answer returning false closes the connection. The listener is closed when
// the test ends.
type rawUpstream struct {
	addr  string
	conns atomic.Int64 // connections accepted
}

func newRawUpstream(tb testing.TB, answer func(c net.Conn, req *http.Request) bool) *rawUpstream {
	tb.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { ln.Close() })
	u := &rawUpstream{addr: ln.Addr().String()}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			u.conns.Add(1)
			go func() {
				defer c.Close()
				br := bufio.NewReader(c)
				for {
					req, err := http.ReadRequest(br)
					if err != nil || !answer(c, req) {
						return
					}
				}
			}()
		}
	}()
	return u
}
