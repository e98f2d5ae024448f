package server

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"slices"
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
	conn    *rehomedConn
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
	// reading holds the connections waiting for their next request
	// outside net/http (see rewatch), closed on shutdown.
	reading map[*rehomedConn]time.Time // since when
	closed  bool
	// heads are rewatch's read buffers.
	heads sync.Pool
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
		if idle > 0 {
			go h.sweep(idle, h.ln.done)
		}
	}
	return h.srv, h.ln
}

// track records c as waiting for its next request, or forgets it. It
// reports false when c is not to be used: shut down, or (when forgetting)
// already closed by the idle sweep or the shutdown.
func (h *rehome) track(c *rehomedConn, reading bool) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	if !reading {
		_, ok := h.reading[c]
		delete(h.reading, c)
		return ok
	}
	if h.closed {
		return false
	}
	if h.reading == nil {
		h.reading = map[*rehomedConn]time.Time{}
	}
	h.reading[c] = time.Now()
	return true
}

// sweep closes the connections left waiting for a request longer than
// idle. One sweep for all of them costs less than a read deadline set and
// cleared around every request.
func (h *rehome) sweep(idle time.Duration, done <-chan struct{}) {
	tick := time.NewTicker(max(idle/8, 10*time.Millisecond))
	defer tick.Stop()
	for {
		select {
		case <-done:
			return
		case now := <-tick.C:
			h.mu.Lock()
			for c, since := range h.reading {
				if now.Sub(since) >= idle {
					c.Close()
					delete(h.reading, c)
				}
			}
			h.mu.Unlock()
		}
	}
}

func (h *rehome) shutdown(ctx context.Context) {
	h.mu.Lock()
	srv := h.srv
	h.closed = true
	for c := range h.reading {
		c.Close()
	}
	h.reading = nil
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
// back after every answer. pending holds request bytes already read from
// the connection when it is handed to net/http.
type rehomedConn struct {
	net.Conn
	remote  *fixedAddr
	pending []byte
}

func (c *rehomedConn) RemoteAddr() net.Addr { return c.remote }

func (c *rehomedConn) Read(b []byte) (int, error) {
	if len(c.pending) > 0 {
		n := copy(b, c.pending)
		c.pending = c.pending[n:]
		return n, nil
	}
	return c.Conn.Read(b)
}

type fixedAddr struct{ network, addr string }

func (a *fixedAddr) Network() string { return a.network }
func (a *fixedAddr) String() string  { return a.addr }

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
	rc, ok := conn.(*rehomedConn)
	if !ok {
		ra := conn.RemoteAddr()
		rc = &rehomedConn{Conn: conn, remote: &fixedAddr{network: ra.Network(), addr: ra.String()}}
	}
	handler, _ := s.rehome.server(orig, conn.LocalAddr())
	p := &parked{s: s, conn: rc, w: wt, check: check, close: r.Close, handler: handler}
	if brw.Reader.Buffered() > 0 || len(rc.pending) > 0 {
		// A pipelined request is already buffered: answer this watch now
		// (no change yet; the client polls again) and close.
		p.close = true
		p.finish(http.StatusNotModified, nil)
		return true
	}
	p.wait(timeout)
	return true
}

// wait parks p until a change or the timeout.
func (p *parked) wait(timeout time.Duration) {
	p.timerMu.Lock()
	p.timer = time.AfterFunc(timeout, func() {
		if p.finish(http.StatusNotModified, nil) {
			p.s.watchTimeouts.Inc()
		}
	})
	p.timerMu.Unlock()
	p.w.park.Store(p)
	// A change may have come between the first check and now.
	select {
	case <-p.w.ch:
		p.wake()
	default:
	}
	// Shutdown answers every parked watch it finds; one parked while it
	// looked answers itself.
	if p.s.stopping.Load() {
		p.finish(http.StatusNotModified, nil)
	}
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
	closing := p.close || p.s.stopping.Load()
	head := make([]byte, 0, 192)
	head = append(head, "HTTP/1.1 "...)
	head = strconv.AppendInt(head, int64(status), 10)
	head = append(head, ' ')
	head = append(head, http.StatusText(status)...)
	head = append(head, "\r\nCache-Control: no-store\r\nDate: "...)
	head = time.Now().UTC().AppendFormat(head, http.TimeFormat)
	head = append(head, "\r\n"...)
	if closing {
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
	raw := p.conn.Conn // the TCP connection does writev; the wrapper would not
	raw.SetWriteDeadline(time.Now().Add(5 * time.Second))
	_, err := bufs.WriteTo(raw)
	raw.SetWriteDeadline(time.Time{})
	if err != nil || closing {
		p.conn.Close()
		return err == nil
	}
	go p.s.rewatch(p.conn, p.handler)
	return true
}

// closeParked answers every parked watch (no change) and closes their
// connections, on shutdown.
func (s *Server) closeParked(ctx context.Context) {
	s.stopping.Store(true)
	for _, w := range s.hub.all() {
		if p := w.park.Load(); p != nil {
			p.finish(http.StatusNotModified, nil)
		}
	}
	s.rehome.shutdown(ctx)
}

// rewatchHeadMax bounds the request head rewatch reads itself; a longer
// one (a watch of very many namespaces) goes to net/http.
const rewatchHeadMax = 2048

// rewatch serves the next request on a connection whose watch has just
// been answered. An agent sends its next watch at once, so every watcher of
// a change comes back within the fan-out: when that request is a plain
// namespace watch with no change to answer, it is parked again straight
// from here, without net/http's per-connection state, response writer and
// hijack. Anything else — another endpoint, a change already waiting, an
// error to report, an unknown token, a pipelined request — is handed with
// the bytes read so far to the http.Server that serves handed-back
// connections, which runs the same handler.
func (s *Server) rewatch(c *rehomedConn, handler *http.Server) {
	if !s.rehome.track(c, true) {
		c.Close()
		return
	}
	bufp, _ := s.rehome.heads.Get().(*[]byte)
	if bufp == nil {
		// Most heads fit: a watcher's request is a few hundred bytes, and
		// every watcher of a change holds a buffer until it sends its next.
		b := make([]byte, 0, 512)
		bufp = &b
	}
	defer s.rehome.heads.Put(bufp)
	head, complete, err := readHead(c.Conn, (*bufp)[:0], handler.ReadHeaderTimeout)
	kept := s.rehome.track(c, false)
	*bufp = head[:0]
	if err != nil || !kept {
		c.Close() // idle past the timeout, or gone
		return
	}
	if s.stopping.Load() {
		c.Close()
		return
	}
	if complete {
		if req := parseRewatch(head); req != nil && s.parkRewatch(c, req, handler) {
			return
		}
	}
	c.pending = append([]byte(nil), head...)
	_, ln := s.rehome.server(handler, nil)
	select {
	case ln.ch <- c:
	case <-ln.done:
		c.Close()
	}
}

// readHead reads into buf (growing it up to rewatchHeadMax) until the end
// of a request head. It stops early, with complete false, as soon as the
// bytes cannot begin a watch request or the head is longer than that. Once
// a head has begun, the rest must come within headerTimeout, as with
// net/http's ReadHeaderTimeout; the wait for it to begin is bounded by the
// idle sweep.
func readHead(conn io.Reader, buf []byte, headerTimeout time.Duration) (head []byte, complete bool, err error) {
	deadlined := false
	for {
		n, err := conn.Read(buf[len(buf):cap(buf)])
		buf = buf[:len(buf)+n]
		if err != nil {
			return buf, false, err
		}
		const watchLine = "GET /v1/watch?"
		if l := min(len(buf), len(watchLine)); string(buf[:l]) != watchLine[:l] {
			return buf, false, nil
		}
		if i := bytes.Index(buf, []byte("\r\n\r\n")); i >= 0 {
			// Bytes past the head are a pipelined request: net/http's job.
			return buf, i+4 == len(buf), nil
		}
		if len(buf) == cap(buf) {
			if cap(buf) >= rewatchHeadMax {
				return buf, false, nil
			}
			buf = slices.Grow(buf, rewatchHeadMax-len(buf))
		}
		// Only a head split over several reads pays for a deadline.
		if d, ok := conn.(interface{ SetReadDeadline(time.Time) error }); ok && headerTimeout > 0 && !deadlined {
			d.SetReadDeadline(time.Now().Add(headerTimeout))
			defer d.SetReadDeadline(time.Time{})
			deadlined = true
		}
	}
}

// parseRewatch parses a request head read by readHead. It returns nil for
// a request rewatch leaves to net/http: anything but a body-less HTTP/1.1
// GET /v1/watch with a Host header.
func parseRewatch(head []byte) *http.Request {
	req, err := http.ReadRequest(bufio.NewReaderSize(bytes.NewReader(head), len(head)))
	if err != nil || req.Method != http.MethodGet || req.URL.Path != "/v1/watch" || req.ProtoMajor != 1 || req.ProtoMinor != 1 ||
		req.Host == "" || req.ContentLength != 0 || len(req.TransferEncoding) > 0 || req.Header.Get("Expect") != "" {
		return nil
	}
	return req
}

// parkRewatch parks req's watch on c if the caller may read, the watch is
// a well-formed namespace watch and nothing has changed for it yet. It
// reports false, having changed nothing, otherwise.
func (s *Server) parkRewatch(c *rehomedConn, req *http.Request, handler *http.Server) bool {
	if _, ok := s.auth.Load().Identify(req); !ok {
		return false
	}
	q := req.URL.Query()
	if q.Has("rev") {
		return false
	}
	timeout, err := s.watchTimeoutOf(q)
	if err != nil {
		return false
	}
	wt, check, err := s.namespaceWatch(q)
	if err != nil {
		return false
	}
	if _, changed, err := check(); err != nil || changed {
		s.hub.unsubscribe(wt)
		return false
	}
	p := &parked{s: s, conn: c, w: wt, check: check, close: req.Close, handler: handler}
	p.wait(timeout)
	return true
}
