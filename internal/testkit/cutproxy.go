package testkit

import (
	"io"
	"net"
	"sync"
	"testing"
)

// CutProxy is a TCP proxy on loopback in front of a real server, which a
// test can cut (every connection closed, new ones refused) and restore to
// play a downstream outage without stopping the server itself.
type CutProxy struct {
	ln     net.Listener
	target string
	mu     sync.Mutex
	cut    bool
	conns  []net.Conn
}

// NewCutProxy proxies a fresh loopback port to target until the test ends.
func NewCutProxy(t testing.TB, target string) *CutProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &CutProxy{ln: ln, target: target}
	t.Cleanup(func() { ln.Close(); p.SetCut(true) })
	go p.accept()
	return p
}

func (p *CutProxy) accept() {
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		p.mu.Lock()
		if p.cut {
			p.mu.Unlock()
			c.Close()
			continue
		}
		up, err := net.Dial("tcp", p.target)
		if err != nil {
			p.mu.Unlock()
			c.Close()
			continue
		}
		p.conns = append(p.conns, c, up)
		p.mu.Unlock()
		go func() { io.Copy(up, c); up.Close() }()
		go func() { io.Copy(c, up); c.Close() }()
	}
}

// Addr is the proxy's address, HOST:PORT.
func (p *CutProxy) Addr() string { return p.ln.Addr().String() }

// SetCut cuts (true: open connections closed, new ones refused) or
// restores (false) the path to the target.
func (p *CutProxy) SetCut(cut bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.cut = cut
	if cut {
		for _, c := range p.conns {
			c.Close()
		}
		p.conns = nil
	}
}
