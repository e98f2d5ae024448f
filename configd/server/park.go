package server

import (
	"context"
	"encoding/json"

	"net"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// Parking keeps a waiting watch cheap. net/http holds a goroutine (two,
// with its background reader), a read buffer and a write buffer per
// request in progress: over 20 KB for a request that mostly waits. A parked
// watch is the bare connection, a timer and the check to run on a change;
// when it answers, the connection is handed to a second http.Server with
// the same handler so the client's keep-alive connection carries on.

// parked is one watch waiting without a goroutine.
type parked struct {
	s       *Server
	conn    net.Conn
	w       *waiter
	check   func() ([]byte, bool, error)
	timerMu sync.Mutex
	timer   *time.Timer
	close   bool // the client asked for Connection: close
	handler *http.Server
	done    atomic.Bool
}

// rehome serves connections handed back after a parked watch answers.
type rehome struct {
	// idle closes a handed-back connection the client leaves unused this
	// long (an agent sends its next watch at once).
	idle time.Duration
	mu   sync.Mutex
	srv  *http.Server
	ln   *chanListener
}

type chanListener struct {
	ch   chan net.Conn
	done chan struct{}
	once sync.Once
	addr net.Addr
}

func (l *chanListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.ch:
		return c, nil
	case <-l.done:
		return nil, net.ErrClosed
	}
}

func (l *chanListener) Close() error   { l.once.Do(func() { close(l.done) }); return nil }
func (l *chanListener) Addr() net.Addr { return l.addr }

// server returns the http.Server that takes connections back, started on
// first use with the handler and timeouts of the one that served orig.
func (h *rehome) server(orig *http.Server, addr net.Addr) (*http.Server, *chanListener) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.srv == nil {
		// Buffered so that waking a batch of watchers does not wait for the
		// accept loop after each answer.
		h.ln = &chanListener{ch: make(chan net.Conn, 4096), done: make(chan struct{}), addr: addr}
		idle := orig.IdleTimeout
		if idle <= 0 || (h.idle > 0 && h.idle < idle) {
			idle = h.idle
		}
		h.srv = &http.Server{Handler: orig.Handler, ReadHeaderTimeout: orig.ReadHeaderTimeout, IdleTimeout: idle, ErrorLog: orig.ErrorLog}
		go h.srv.Serve(h.ln)
	}
	return h.srv, h.ln
}

func (h *rehome) shutdown(ctx context.Context) {
	h.mu.Lock()
	srv := h.srv
	h.mu.Unlock()
	if srv != nil {
		// Handed-back connections the client has not used yet count as
		// active for Shutdown; past the grace period, close them.
		if srv.Shutdown(ctx) != nil {
			srv.Close()
		}
	}
}

// rehomedConn keeps the peer's address formatted once: net/http formats
// it for every connection it is given, and a watcher's connection is given
// back after every answer.
type rehomedConn struct {
	net.Conn
	remote fixedAddr
}

func (c *rehomedConn) RemoteAddr() net.Addr { return c.remote }

type fixedAddr struct{ network, addr string }

func (a fixedAddr) Network() string { return a.network }
func (a fixedAddr) String() string  { return a.addr }

// park takes over a watch that has to wait. It returns false, leaving the
// request untouched, when the connection cannot be parked (HTTP/2, or a
// server without a known http.Server).
func (s *Server) park(w http.ResponseWriter, r *http.Request, wt *waiter, check func() ([]byte, bool, error), timeout time.Duration) bool {
	if r.ProtoMajor != 1 || s.stopping.Load() {
		return false
	}
	orig, ok := r.Context().Value(http.ServerContextKey).(*http.Server)
	if !ok || orig.Handler == nil {
		return false
	}
	hj, ok := w.(http.Hijacker)
	if !ok {
		return false
	}
	conn, brw, err := hj.Hijack()
	if err != nil {
		return false
	}
	if _, ok := conn.(*rehomedConn); !ok {
		ra := conn.RemoteAddr()
		conn = &rehomedConn{Conn: conn, remote: fixedAddr{network: ra.Network(), addr: ra.String()}}
	}
	handler, _ := s.rehome.server(orig, conn.LocalAddr())
	p := &parked{s: s, conn: conn, w: wt, check: check, close: r.Close, handler: handler}
	if brw.Reader.Buffered() > 0 {
		// A pipelined request is already buffered: answer this watch now
		// (no change yet; the client polls again) and let net/http carry on.
		p.close = true
		p.finish(http.StatusNotModified, nil)
		return true
	}
	p.timerMu.Lock()
	p.timer = time.AfterFunc(timeout, func() {
		if p.finish(http.StatusNotModified, nil) {
			s.watchTimeouts.Inc()
		}
	})
	p.timerMu.Unlock()
	wt.park.Store(p)
	// A change may have come between the first check and now.
	select {
	case <-wt.ch:
		p.wake()
	default:
	}
	return true
}

// wake runs the check after a change and answers if this watcher is concerned.
func (p *parked) wake() {
	body, changed, err := p.check()
	if err != nil {
		b, _ := json.Marshal(map[string]string{"error": err.Error()})
		p.finish(http.StatusInternalServerError, b)
		return
	}
	if changed && p.finish(http.StatusOK, body) {
		p.s.watchChanged.Inc()
	}
}

// finish answers the watch once and hands the connection back (or closes
// it). It reports whether this call was the one that answered.
func (p *parked) finish(status int, payload []byte) bool {
	if !p.done.CompareAndSwap(false, true) {
		return false
	}
	p.timerMu.Lock()
	if p.timer != nil {
		p.timer.Stop()
	}
	p.timerMu.Unlock()
	p.s.hub.unsubscribe(p.w)
	head := make([]byte, 0, 192)
	head = append(head, "HTTP/1.1 "...)
	head = strconv.AppendInt(head, int64(status), 10)
	head = append(head, ' ')
	head = append(head, http.StatusText(status)...)
	head = append(head, "\r\nCache-Control: no-store\r\nDate: "...)
	head = time.Now().UTC().AppendFormat(head, http.TimeFormat)
	head = append(head, "\r\n"...)
	if p.close {
		head = append(head, "Connection: close\r\n"...)
	}
	if status != http.StatusNotModified {
		head = append(head, "Content-Type: application/json\r\nContent-Length: "...)
		head = strconv.AppendInt(head, int64(len(payload)), 10)
		head = append(head, "\r\n"...)
	}
	head = append(head, "\r\n"...)
	// The payload is shared by every watcher of the change: write it
	// beside the head (writev) rather than copying it.
	bufs := net.Buffers{head}
	if status != http.StatusNotModified {
		bufs = append(bufs, payload)
	}
	var raw net.Conn = p.conn
	if rc, ok := raw.(*rehomedConn); ok {
		raw = rc.Conn // the TCP connection does writev; the wrapper would not
	}
	p.conn.SetWriteDeadline(time.Now().Add(5 * time.Second))
	_, err := bufs.WriteTo(raw)
	p.conn.SetWriteDeadline(time.Time{})
	if err != nil || p.close || p.s.stopping.Load() {
		p.conn.Close()
		return err == nil
	}
	_, ln := p.s.rehome.server(p.handler, nil)
	select {
	case ln.ch <- p.conn:
	case <-ln.done:
		p.conn.Close()
	}
	return true
}

// closeParked answers every parked watch (no change) and closes their
// connections, on shutdown.
func (s *Server) closeParked(ctx context.Context) {
	s.stopping.Store(true)
	for _, w := range s.hub.all() {
		if p := w.park.Load(); p != nil {
			p.close = true
			p.finish(http.StatusNotModified, nil)
		}
	}
	s.rehome.shutdown(ctx)
}
