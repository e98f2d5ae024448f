package gateway

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"runtime"
	"runtime/debug"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/VictoriaMetrics/metrics"
)

// Server serves the proxy listener's HTTP/1.x connections with a loop of
// its own: one goroutine per connection, pooled buffers, the request head
// parsed in place, and on keep-alive connections the same http.Request and
// header map reused from request to request. net/http's server costs, per
// request, a background read goroutine, a context, a response and a
// request with their maps and buffers; for a small proxied answer that was
// about as much CPU as nginx takes for the whole request (bench/RESULTS.md).
//
// What the loop does not serve itself it hands to a net/http server on
// the same connection, with the bytes read so far replayed: upgrades
// (WebSocket), chunked request bodies, Expect, HTTP/2 with prior
// knowledge, absolute-form targets, and input net/http answers with an
// error of its own. Once handed over, a connection stays with net/http.
type Server struct {
	handler  http.Handler
	cfg      ServerConfig
	fallback *http.Server
	handover *handoverListener
	log      *slog.Logger

	badRequests, tooLarge, handedOver, served *metrics.Counter

	readers, writers sync.Pool

	mu        sync.Mutex
	listeners map[net.Listener]struct{}
	conns     map[*serverConn]struct{}
	shutting  atomic.Bool
	done      chan struct{} // closed when the last connection ends while shutting
}

// ServerConfig sets a Server's limits.
type ServerConfig struct {
	// ReadHeaderTimeout bounds the time from a request's first byte (or
	// the connection's start) to the end of its header; IdleTimeout how
	// long a keep-alive connection may wait for its next request (0:
	// ReadHeaderTimeout). 0 for both: no limit. The idle deadline moves
	// at most once every IdleTimeout/8, and after an answer whose body
	// came with the upstream's head it counts from when that head came,
	// so an idle connection may close up to IdleTimeout/8 plus the time
	// of writing that answer early.
	ReadHeaderTimeout, IdleTimeout time.Duration
	// MaxHeaderBytes bounds the request line and header (default 1 MiB,
	// net/http's). Heads over 8 KiB are handed to net/http, which applies
	// the same bound.
	MaxHeaderBytes int
	// MaxHeaderFields bounds the header lines of a request (default 200);
	// more are answered with 431.
	MaxHeaderFields int
	// WatchAfter: a request still in flight after this long gets a read
	// on its connection to notice the client going away (its context is
	// then cancelled); one in flight between WatchAfter/2 and WatchAfter
	// may get it too. Default 5ms; shorter requests skip that read.
	WatchAfter time.Duration
	Log        *slog.Logger
	Metrics    *metrics.Set
}

// readBufferSize is the fast path's limit on a request head.
const readBufferSize = 8 << 10

// maxDrainBytes is how much of an unread request body is read away to
// keep the connection; past that it is closed (net/http's figure).
const maxDrainBytes = 256 << 10

// NewServer returns a server that calls handler for every request.
func NewServer(handler http.Handler, cfg ServerConfig) *Server {
	if cfg.MaxHeaderBytes <= 0 {
		cfg.MaxHeaderBytes = http.DefaultMaxHeaderBytes
	}
	if cfg.MaxHeaderFields <= 0 {
		cfg.MaxHeaderFields = 200
	}
	if cfg.IdleTimeout <= 0 {
		cfg.IdleTimeout = cfg.ReadHeaderTimeout
	}
	if cfg.WatchAfter <= 0 {
		cfg.WatchAfter = 5 * time.Millisecond
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.NewTextHandler(os.Stderr, nil))
	}
	if cfg.Metrics == nil {
		cfg.Metrics = metrics.NewSet()
	}
	s := &Server{handler: handler, cfg: cfg, log: cfg.Log,
		listeners: map[net.Listener]struct{}{}, conns: map[*serverConn]struct{}{}}
	s.readers.New = func() any { return bufio.NewReaderSize(nil, readBufferSize) }
	s.writers.New = func() any { return bufio.NewWriterSize(nil, 4<<10) }
	s.badRequests = cfg.Metrics.GetOrCreateCounter(`opskit_ratelimit_proxy_bad_requests_total`)
	s.tooLarge = cfg.Metrics.GetOrCreateCounter(`opskit_ratelimit_proxy_header_too_large_total`)
	s.handedOver = cfg.Metrics.GetOrCreateCounter(`opskit_ratelimit_proxy_handed_over_connections_total`)
	s.served = cfg.Metrics.GetOrCreateCounter(`opskit_ratelimit_proxy_fast_requests_total`)
	s.handover = newHandoverListener()
	s.fallback = &http.Server{Handler: handler, ReadHeaderTimeout: cfg.ReadHeaderTimeout, IdleTimeout: cfg.IdleTimeout,
		MaxHeaderBytes: cfg.MaxHeaderBytes, ErrorLog: slog.NewLogLogger(cfg.Log.Handler(), slog.LevelWarn)}
	// HTTP/2 without TLS (prior knowledge) as well as HTTP/1.1.
	s.fallback.Protocols = new(http.Protocols)
	s.fallback.Protocols.SetHTTP1(true)
	s.fallback.Protocols.SetUnencryptedHTTP2(true)
	go s.fallback.Serve(s.handover)
	return s
}

// Serve accepts connections on ln until it is closed or the server shuts
// down; it returns http.ErrServerClosed then, as net/http does.
func (s *Server) Serve(ln net.Listener) error {
	s.mu.Lock()
	if s.shutting.Load() {
		s.mu.Unlock()
		return http.ErrServerClosed
	}
	s.listeners[ln] = struct{}{}
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		delete(s.listeners, ln)
		s.mu.Unlock()
	}()
	var backoff time.Duration
	for {
		nc, err := ln.Accept()
		if err != nil {
			if s.shutting.Load() {
				return http.ErrServerClosed
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() || errors.Is(err, syscall.EMFILE) || errors.Is(err, syscall.ENFILE) {
				// Out of descriptors or a passing error: wait and retry,
				// as net/http does.
				backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
				s.log.Warn("proxy accept", "err", err, "retry_in", backoff)
				time.Sleep(backoff)
				continue
			}
			return err
		}
		backoff = 0
		c := s.newConn(nc)
		if c == nil {
			nc.Close()
			continue
		}
		go c.serve()
	}
}

// Shutdown stops accepting, closes idle connections, lets requests in
// flight finish (their connections then close) and waits for them, or
// for ctx.
func (s *Server) Shutdown(ctx context.Context) error {
	s.mu.Lock()
	s.shutting.Store(true)
	for ln := range s.listeners {
		ln.Close()
	}
	if s.done == nil {
		s.done = make(chan struct{})
		if len(s.conns) == 0 {
			close(s.done)
		}
	}
	for c := range s.conns {
		c.closeIfIdle()
	}
	done := s.done
	s.mu.Unlock()
	fallbackErr := make(chan error, 1)
	go func() {
		err := s.fallback.Shutdown(ctx)
		s.handover.Close() // also when Shutdown came before the fallback's Serve
		fallbackErr <- err
	}()
	select {
	case <-done:
	case <-ctx.Done():
		return ctx.Err()
	}
	return <-fallbackErr
}

// Close closes every listener and connection at once.
func (s *Server) Close() error {
	s.mu.Lock()
	s.shutting.Store(true)
	for ln := range s.listeners {
		ln.Close()
	}
	for c := range s.conns {
		c.rwc.Close()
	}
	s.mu.Unlock()
	err := s.fallback.Close()
	s.handover.Close()
	return err
}

func (s *Server) newConn(nc net.Conn) *serverConn {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.shutting.Load() {
		return nil
	}
	c := &serverConn{s: s, rwc: nc, remoteAddr: nc.RemoteAddr().String()}
	c.peer = parsePeer(c.remoteAddr)
	c.ctx, c.cancel = context.WithCancel(context.Background())
	s.conns[c] = struct{}{}
	return c
}

func (s *Server) forget(c *serverConn) {
	s.mu.Lock()
	delete(s.conns, c)
	if s.done != nil && len(s.conns) == 0 {
		select {
		case <-s.done:
		default:
			close(s.done)
		}
	}
	s.mu.Unlock()
}

// Connection states, for Shutdown.
const (
	connIdle int32 = iota
	connActive
	connClosed
)

// serverConn is one client connection served by the loop.
type serverConn struct {
	s          *Server
	rwc        net.Conn
	remoteAddr string
	ctx        context.Context // cancelled when the client is seen gone
	cancel     context.CancelFunc
	state      atomic.Int32

	br      *bufio.Reader
	bw      *bufio.Writer
	in      peekReader // under br: gives back a byte the watcher read
	brk     bool       // a write to the client failed
	refused bool       // an error answer was sent: linger on close

	head     requestHead
	body     bodyReader
	detached *detachedBody // the body of the request in flight, if the handler got a copy
	req      *http.Request // reused for requests the fast path forwards
	header   http.Header
	values   []string
	url      url.URL
	resp     response

	// The watcher: a read started on a request still in flight after
	// WatchAfter, to see the client go away. The timer is not stopped
	// when a request ends and is moved only when it would fire less than
	// WatchAfter/2 into the next one (as the idle deadline, once every
	// while rather than twice a request); a request is watched when the
	// timer finds it in flight for at least WatchAfter/2.
	watchMu    sync.Mutex
	watchTimer *time.Timer
	watchAt    time.Time // when the timer fires; zero if it is not set
	inFlight   bool
	started    time.Time // the request in flight's start
	watching   bool
	watchDone  chan struct{}

	// now is the clock reading taken as the request in flight started;
	// the gateway's handler takes it as the request's time.
	now time.Time

	deadline time.Time // the read deadline set, zero if none
	peer     peer      // remoteAddr taken apart
	// answeredAt, when set by the handler, is a clock reading taken as
	// the request's answer was ready with all its bytes at hand: the idle
	// deadline that follows counts from it instead of reading the clock.
	answeredAt time.Time

	// upstreamHead takes the head of the answer the request in flight
	// gets, when the fast path passes it on raw; its buffer is reused.
	upstreamHead rawHead
	// px is the gateway's state for the request in flight on the fast
	// path, reused from request to request.
	px proxied

	dateSec int64
	date    []byte
}

func (c *serverConn) closeIfIdle() {
	if c.state.CompareAndSwap(connIdle, connClosed) {
		c.rwc.Close()
	}
}

// peekReader reads the connection, first giving back the byte a watcher
// read while a request was in flight.
type peekReader struct {
	c       net.Conn
	b       [1]byte
	hasByte bool
}

func (p *peekReader) Read(b []byte) (int, error) {
	if p.hasByte && len(b) > 0 {
		b[0] = p.b[0]
		p.hasByte = false
		return 1, nil
	}
	return p.c.Read(b)
}

func (c *serverConn) serve() {
	s := c.s
	handedOver := false
	defer func() {
		if v := recover(); v != nil && v != http.ErrAbortHandler {
			s.log.Error("proxy: panic serving a request", "client", c.remoteAddr, "panic", v, "stack", string(debug.Stack()))
		}
		c.cancel()
		if c.watchTimer != nil {
			c.watchTimer.Stop()
		}
		if !handedOver {
			c.bw.Flush() // what was written before a panic, as net/http does
			if c.refused {
				c.lingerClose()
			}
			c.rwc.Close()
		}
		if c.br != nil {
			c.br.Reset(nil)
			s.readers.Put(c.br)
			c.bw.Reset(nil)
			s.writers.Put(c.bw)
		}
		s.forget(c)
	}()
	c.in.c = c.rwc
	c.br = s.readers.Get().(*bufio.Reader)
	c.br.Reset(&c.in)
	c.bw = s.writers.Get().(*bufio.Writer)
	c.bw.Reset(c.rwc)
	c.resp.c = c
	c.header = http.Header{}
	c.req = (&http.Request{}).WithContext(c.ctx)
	c.watchTimer = time.AfterFunc(time.Hour, c.watch)
	c.watchTimer.Stop()

	first := true
	for {
		next, err := c.readRequest(first)
		first = false
		switch {
		case err == errHandOver:
			handedOver = c.handOver()
			return
		case err != nil:
			return
		}
		keep := c.serveRequest(next)
		if !keep || c.brk || s.shutting.Load() {
			return
		}
		c.state.Store(connIdle)
		if s.shutting.Load() && c.state.CompareAndSwap(connIdle, connClosed) {
			return
		}
	}
}

// readRequest waits for the next request head, parses it and sets up
// c.req (or a fresh request for what the handler may keep). Errors end
// the connection, after an answer where one is due; errHandOver asks for
// net/http.
func (c *serverConn) readRequest(first bool) (*http.Request, error) {
	s := c.s
	answeredAt := c.answeredAt
	c.answeredAt = time.Time{}
	if c.br.Buffered() == 0 {
		// Waiting for the next request: the idle timeout (the first
		// request's header timeout runs from the connection's start).
		if first {
			c.setReadDeadline(s.cfg.ReadHeaderTimeout, 0)
		} else {
			c.setReadDeadlineFrom(answeredAt, s.cfg.IdleTimeout, s.cfg.IdleTimeout/8)
			// The next request is rarely here yet: let other connections
			// run first (see h1Transport.exchange).
			runtime.Gosched()
		}
		if _, err := c.br.Peek(1); err != nil {
			return nil, err
		}
	}
	if !c.state.CompareAndSwap(connIdle, connActive) {
		return nil, net.ErrClosed // closed by Shutdown
	}
	headerTimed := first
	var buf []byte
	end := -1
	for {
		buf, _ = c.br.Peek(c.br.Buffered())
		if end = headEnd(buf); end >= 0 {
			break
		}
		if len(buf) >= readBufferSize {
			if s.cfg.MaxHeaderBytes > readBufferSize {
				return nil, errHandOver // net/http reads longer heads
			}
			c.tooLarge()
			return nil, errTooManyHeaders
		}
		// More bytes are due: from now the header timeout applies (a
		// head that came whole, nearly every one, never needs it).
		if !headerTimed {
			c.setReadDeadline(s.cfg.ReadHeaderTimeout, 0)
			headerTimed = true
		}
		if _, err := c.br.Peek(len(buf) + 1); err != nil {
			return nil, err
		}
	}
	if end > s.cfg.MaxHeaderBytes {
		c.tooLarge()
		return nil, errTooManyHeaders
	}
	h := &c.head
	switch err := parseHead(string(buf[:end]), h, s.cfg.MaxHeaderFields); err {
	case nil:
	case errTooManyHeaders:
		c.tooLarge()
		return nil, err
	case errBadRequestLine, errBadHeaderLine:
		s.badRequests.Inc()
		c.writeError(http.StatusBadRequest, "400 Bad Request: "+err.Error())
		return nil, err
	default:
		return nil, err
	}
	u, err := parseTarget(h.target, &c.url)
	if err != nil {
		return nil, errHandOver // net/http answers 400 in its words
	}
	c.br.Discard(end)

	c.values = h.fillHeader(c.header, c.values)

	req := c.req
	req.Method = h.method
	req.URL = u
	req.Proto, req.ProtoMajor, req.ProtoMinor = "HTTP/1.1", 1, h.minor
	if h.minor == 0 {
		req.Proto = "HTTP/1.0"
	}
	req.Header = c.header
	req.Host = h.host
	req.RemoteAddr = c.remoteAddr
	req.RequestURI = h.target
	req.Close = h.connClose || (h.minor == 0 && !h.connKeepAlive)
	req.ContentLength = max(h.contentLength, 0)
	req.Body = http.NoBody
	req.GetBody, req.Form, req.PostForm, req.MultipartForm, req.Trailer, req.TransferEncoding, req.Pattern = nil, nil, nil, nil, nil, nil, ""
	if req.ContentLength > 0 {
		c.body = bodyReader{c: c, left: req.ContentLength}
		req.Body = &c.body
		c.clearReadDeadline() // the body may take its time, as with net/http
	}
	c.detached = nil
	if !forwardable(req) {
		// The handler passes it to ReverseProxy and the Transport, which
		// may hold it past the handler's return: its own copy.
		fresh := new(http.Request)
		*fresh = *req
		if u == &c.url {
			fresh.URL = new(url.URL)
			*fresh.URL = c.url
		}
		fresh.Header = c.header.Clone()
		if req.ContentLength > 0 {
			c.detached = &detachedBody{b: &c.body}
			fresh.Body = c.detached
		}
		return fresh, nil
	}
	return req, nil
}

// lingerClose ends the connection after an error answer sent while the
// client may still be sending: closing with unread bytes would reset it and
// could destroy the answer before the client reads it, so the write side
// closes first and what arrives is read away for a moment (as net/http).
func (c *serverConn) lingerClose() {
	type closeWriter interface{ CloseWrite() error }
	cw, ok := c.rwc.(closeWriter)
	if !ok {
		return
	}
	cw.CloseWrite()
	c.rwc.SetReadDeadline(time.Now().Add(500 * time.Millisecond))
	io.Copy(io.Discard, c.rwc)
}

func (c *serverConn) tooLarge() {
	c.s.tooLarge.Inc()
	c.writeError(http.StatusRequestHeaderFieldsTooLarge, "431 Request Header Fields Too Large")
}

// writeError answers a request the loop refuses, and the connection then
// closes.
func (c *serverConn) writeError(code int, body string) {
	c.refused = true
	fmt.Fprintf(c.bw, "HTTP/1.1 %d %s\r\nContent-Type: text/plain; charset=utf-8\r\nConnection: close\r\nContent-Length: %d\r\n\r\n%s",
		code, http.StatusText(code), len(body), body)
	c.bw.Flush()
}

// handOver gives the connection to net/http with the bytes read and not
// yet served.
func (c *serverConn) handOver() bool {
	if c.bw.Flush() != nil {
		return false
	}
	c.rwc.SetReadDeadline(time.Time{})
	var pending []byte
	if n := c.br.Buffered(); n > 0 {
		b, _ := c.br.Peek(n)
		pending = append([]byte(nil), b...)
	}
	if c.in.hasByte {
		pending = append(pending, c.in.b[0])
	}
	if !c.s.handover.give(&replayConn{Conn: c.rwc, pending: pending}) {
		return false
	}
	c.s.handedOver.Inc()
	return true
}

// serveRequest runs the handler and finishes the response; it reports
// whether the connection may carry another request.
func (c *serverConn) serveRequest(req *http.Request) (keep bool) {
	c.s.served.Inc()
	w := &c.resp
	w.reset(req, c.head.minor)
	c.now = time.Now()
	c.startWatch(req, c.now)
	defer func() {
		if v := recover(); v != nil {
			c.stopWatch()
			panic(v) // serve closes the connection; the client sees it cut
		}
	}()
	c.s.handler.ServeHTTP(w, req)
	c.stopWatch()
	if d := c.detached; d != nil {
		d.Close() // the connection's bytes are no longer the Transport's to read
	}
	w.finish()
	if req.ContentLength > 0 && c.body.left > 0 {
		if c.body.left > maxDrainBytes || c.brk {
			return false
		}
		if _, err := io.Copy(io.Discard, &c.body); err != nil {
			return false
		}
	}
	return !w.closeAfter && !c.brk && c.bw.Flush() == nil
}

// startWatch arms the watcher for a request started at now with no
// unread body and nothing pipelined behind it (whose bytes the watcher
// must not take). A timer set to fire at least WatchAfter/2 from now is
// left as it is.
func (c *serverConn) startWatch(req *http.Request, now time.Time) {
	after := c.s.cfg.WatchAfter
	c.watchMu.Lock()
	c.inFlight = req.ContentLength == 0 && c.br.Buffered() == 0
	c.started = now
	if c.inFlight && (c.watchAt.IsZero() || c.watchAt.Sub(now) < after/2) {
		c.watchAt = now.Add(after)
		c.watchTimer.Reset(after)
	}
	c.watchMu.Unlock()
}

// watch runs on the timer's goroutine. For a request in flight for at
// least WatchAfter/2 it starts a read that returns only when the client
// sends more (kept for the next request), closes (the request's context
// is cancelled) or stopWatch ends it; a younger one gets the timer set
// for its WatchAfter; with none in flight the timer rests.
func (c *serverConn) watch() {
	c.watchMu.Lock()
	if !c.inFlight || c.watching {
		c.watchAt = time.Time{}
		c.watchMu.Unlock()
		return
	}
	after := c.s.cfg.WatchAfter
	if now := time.Now(); now.Sub(c.started) < after/2 {
		c.watchAt = c.started.Add(after)
		c.watchTimer.Reset(c.watchAt.Sub(now))
		c.watchMu.Unlock()
		return
	}
	c.watchAt = time.Time{}
	c.watching = true
	c.watchDone = make(chan struct{})
	c.rwc.SetReadDeadline(time.Time{})
	c.watchMu.Unlock()
	n, err := c.rwc.Read(c.in.b[:])
	if n == 1 {
		c.in.hasByte = true
	} else if ne, ok := err.(net.Error); !ok || !ne.Timeout() {
		c.cancel() // the client is gone
	}
	close(c.watchDone)
}

func (c *serverConn) stopWatch() {
	if !c.inFlight {
		return
	}
	c.watchMu.Lock()
	c.inFlight = false
	watching := c.watching
	if watching {
		c.rwc.SetReadDeadline(inThePast)
	}
	c.watchMu.Unlock()
	if watching {
		<-c.watchDone
		c.watching = false
		c.deadline = time.Time{}
		c.rwc.SetReadDeadline(time.Time{})
	}
}

// setReadDeadline sets the read deadline to now + d (none for d = 0).
// A deadline already set within slack of that is kept: on a busy
// keep-alive connection the idle deadline then moves once every slack,
// not once a request (each move is a timer update in the runtime).
func (c *serverConn) setReadDeadline(d, slack time.Duration) {
	c.setReadDeadlineFrom(time.Time{}, d, slack)
}

// setReadDeadlineFrom is setReadDeadline counting from now, a reading of
// the clock already made (zero: read it).
func (c *serverConn) setReadDeadlineFrom(now time.Time, d, slack time.Duration) {
	if d <= 0 {
		c.clearReadDeadline()
		return
	}
	if now.IsZero() {
		now = time.Now()
	}
	want := now.Add(d)
	if !c.deadline.IsZero() && !c.deadline.After(want) && c.deadline.After(want.Add(-slack)) {
		return
	}
	c.deadline = want
	c.rwc.SetReadDeadline(want)
}

func (c *serverConn) clearReadDeadline() {
	if !c.deadline.IsZero() {
		c.deadline = time.Time{}
		c.rwc.SetReadDeadline(time.Time{})
	}
}

// httpDate is the Date header's value, formatted once a second.
func (c *serverConn) httpDate() []byte {
	now := time.Now()
	if sec := now.Unix(); sec != c.dateSec || c.date == nil {
		c.dateSec = sec
		c.date = now.UTC().AppendFormat(c.date[:0], http.TimeFormat)
	}
	return c.date
}

// bodyReader reads a request body of known length from the connection.
type bodyReader struct {
	c    *serverConn
	left int64
}

func (b *bodyReader) Read(p []byte) (int, error) {
	if b.left <= 0 {
		return 0, io.EOF
	}
	if int64(len(p)) > b.left {
		p = p[:b.left]
	}
	n, err := b.c.br.Read(p)
	b.left -= int64(n)
	if err == io.EOF && b.left > 0 {
		err = io.ErrUnexpectedEOF
	}
	if b.left == 0 && err == nil {
		err = io.EOF
	}
	return n, err
}

func (b *bodyReader) Close() error { return nil }

// detachedBody is the body given to a request the Transport may still
// read after the handler returned: it reads until closed, then never again
// (the connection has moved on).
type detachedBody struct {
	mu     sync.Mutex
	b      *bodyReader
	closed bool
}

func (d *detachedBody) Read(p []byte) (int, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		return 0, http.ErrBodyReadAfterClose
	}
	return d.b.Read(p)
}

func (d *detachedBody) Close() error {
	d.mu.Lock()
	d.closed = true
	d.mu.Unlock()
	return nil
}

// response is the loop's http.ResponseWriter, reused on a connection.
// The header is encoded when the status is set (later changes are not
// sent, as with net/http); the framing is chosen when the handler ends
// or the body outgrows the buffer: Content-Length for a short answer,
// else chunked (HTTP/1.1) or close-delimited (HTTP/1.0).
type response struct {
	c      *serverConn
	req    *http.Request
	minor  int
	header http.Header

	status     int
	statusSet  bool
	committed  bool // the header is on the wire
	head       []byte
	length     int64 // declared Content-Length, -1 if none
	sniff      bool  // no Content-Type: sniff the body's
	trailers   []string
	chunked    bool
	closeAfter bool
	bodyOK     bool // the status allows a body
	isHead     bool // a HEAD request: the body is counted, not sent
	written    int64
	buf        []byte // body held before the header goes out
	// raw, while WriteHeader runs, is the upstream head whose lines are
	// passed on after the header map's (see rawHead).
	raw *rawHead
	// extra are header lines the gateway adds (its RateLimit headers),
	// written before the header map's: as lines they cost no map entries
	// to set, walk and clear.
	extra []byte
}

func (w *response) reset(req *http.Request, minor int) {
	if w.header == nil {
		w.header = http.Header{}
	} else {
		clear(w.header)
	}
	*w = response{c: w.c, req: req, minor: minor, header: w.header, head: w.head[:0], buf: w.buf[:0], trailers: w.trailers[:0], extra: w.extra[:0], length: -1,
		closeAfter: req.Close}
}

func (w *response) Header() http.Header { return w.header }

func (w *response) WriteHeader(code int) {
	if w.statusSet || w.committed {
		return
	}
	if code < 100 || code > 999 {
		panic(fmt.Sprintf("invalid WriteHeader code %v", code))
	}
	if code >= 100 && code <= 199 && code != http.StatusSwitchingProtocols {
		w.writeInterim(code)
		return
	}
	w.status, w.statusSet = code, true
	w.encodeHeader()
}

// writeInterim sends a 1xx answer with the header as it is now.
func (w *response) writeInterim(code int) {
	bw := w.c.bw
	writeStatusLine(bw, w.minor, code)
	bw.Write(w.extra)
	for k, vv := range w.header {
		for _, v := range vv {
			writeHeaderLine(bw, k, v)
		}
	}
	bw.WriteString("\r\n")
	if bw.Flush() != nil {
		w.c.brk = true
	}
}

func writeStatusLine(bw *bufio.Writer, minor, code int) {
	if minor == 0 {
		bw.WriteString("HTTP/1.0 ")
	} else {
		bw.WriteString("HTTP/1.1 ")
	}
	var b [3]byte
	bw.Write(strconv.AppendInt(b[:0], int64(code), 10))
	bw.WriteByte(' ')
	bw.WriteString(http.StatusText(code))
	bw.WriteString("\r\n")
}

// encodeHeader writes the status line and header, but for the framing
// and Content-Type, into w.head.
func (w *response) encodeHeader() {
	code := w.status
	w.bodyOK = !(code >= 100 && code <= 199) && code != http.StatusNoContent && code != http.StatusNotModified
	w.isHead = w.req.Method == http.MethodHead
	mapLength := false
	if v := w.header["Content-Length"]; len(v) > 0 {
		mapLength = true
		if n, ok := parseContentLength(v[0]); ok {
			w.length = n
		}
	}
	if hasToken(w.header["Connection"], "close") {
		w.closeAfter = true
	}
	for _, v := range w.header["Trailer"] {
		for f := range splitComma(v) {
			w.trailers = append(w.trailers, http.CanonicalHeaderKey(f))
		}
	}
	_, hasType := w.header["Content-Type"]
	w.sniff = !hasType && w.bodyOK && !w.isHead
	b := w.head[:0]
	if w.minor == 0 {
		b = append(b, "HTTP/1.0 "...)
	} else {
		b = append(b, "HTTP/1.1 "...)
	}
	b = strconv.AppendInt(b, int64(code), 10)
	b = append(b, ' ')
	b = append(b, http.StatusText(code)...)
	b = append(b, "\r\n"...)
	b = append(b, w.extra...)
	for k, vv := range w.header {
		switch k {
		case "Connection", "Transfer-Encoding", "Trailer":
			continue // written with the framing
		case "Content-Length":
			if w.length < 0 || code < 200 || code == http.StatusNoContent {
				continue
			}
		}
		for _, v := range vv {
			b = appendHeaderLine(b, k, v)
		}
	}
	_, hasDate := w.header["Date"]
	if raw := w.raw; raw != nil {
		// The upstream's lines follow the map's, as the map's values of a
		// name precede the upstream's when the two are merged. The first
		// Content-Length decides the length: the map's, else the
		// upstream's.
		b = raw.appendPassed(b, mapLength && w.length < 0)
		if !mapLength {
			w.length = raw.passedLength
		}
		hasDate = hasDate || raw.hasDate
		w.sniff = w.sniff && raw.contentType == nil
	}
	if !hasDate {
		b = append(b, "Date: "...)
		b = append(b, w.c.httpDate()...)
		b = append(b, "\r\n"...)
	}
	w.head = b
}

func appendHeaderLine(b []byte, k, v string) []byte {
	b = append(b, k...)
	b = append(b, ": "...)
	start := len(b)
	b = append(b, trimSpace(v)...)
	for i := start; i < len(b); i++ {
		if b[i] == '\r' || b[i] == '\n' {
			b[i] = ' '
		}
	}
	return append(b, "\r\n"...)
}

func trimSpace(s string) string {
	for len(s) > 0 && (s[0] == ' ' || s[0] == '\t') {
		s = s[1:]
	}
	for len(s) > 0 && (s[len(s)-1] == ' ' || s[len(s)-1] == '\t') {
		s = s[:len(s)-1]
	}
	return s
}

func (w *response) Write(p []byte) (int, error) {
	if !w.statusSet {
		w.WriteHeader(http.StatusOK)
	}
	if w.c.brk {
		return 0, errClientGone
	}
	if !w.bodyOK {
		return 0, http.ErrBodyNotAllowed
	}
	if w.isHead {
		w.written += int64(len(p))
		return len(p), nil
	}
	if w.length >= 0 && w.written+int64(len(p)) > w.length {
		return 0, http.ErrContentLength
	}
	w.written += int64(len(p))
	if !w.committed {
		if len(w.buf)+len(p) <= 4<<10 {
			w.buf = append(w.buf, p...)
			return len(p), nil
		}
		w.commit(false)
	}
	w.writeBody(p)
	if w.c.brk {
		return 0, errClientGone
	}
	return len(p), nil
}

var errClientGone = errors.New("client connection broken")

func (w *response) writeBody(p []byte) {
	if len(p) == 0 {
		return
	}
	bw := w.c.bw
	if w.chunked {
		var b [16]byte
		bw.Write(strconv.AppendInt(b[:0], int64(len(p)), 16))
		bw.WriteString("\r\n")
		bw.Write(p)
		bw.WriteString("\r\n")
	} else {
		bw.Write(p)
	}
	if err := bufferErr(bw); err != nil {
		w.c.brk = true
	}
}

// bufferErr reports a sticky write error of bw (a zero-length write
// returns it).
func bufferErr(bw *bufio.Writer) error {
	_, err := bw.Write(nil)
	return err
}

// commit puts the header on the wire with its framing. done: the handler
// has returned, so the body's length is known.
func (w *response) commit(done bool) {
	if w.committed {
		return
	}
	w.committed = true
	bw := w.c.bw
	b := w.head
	if w.sniff && len(w.buf) > 0 {
		b = appendHeaderLine(b, "Content-Type", http.DetectContentType(w.buf))
	}
	hasTrailers := len(w.trailers) > 0 || w.prefixedTrailers()
	switch {
	case !w.bodyOK, w.length >= 0:
	case w.isHead:
		if done && w.written > 0 {
			b = append(b, "Content-Length: "...)
			b = strconv.AppendInt(b, w.written, 10)
			b = append(b, "\r\n"...)
		}
	case done && !hasTrailers:
		w.length = int64(len(w.buf))
		b = append(b, "Content-Length: "...)
		b = strconv.AppendInt(b, w.length, 10)
		b = append(b, "\r\n"...)
	case w.minor >= 1:
		w.chunked = true
		b = append(b, "Transfer-Encoding: chunked\r\n"...)
		if len(w.trailers) > 0 {
			b = append(b, "Trailer: "...)
			for i, t := range w.trailers {
				if i > 0 {
					b = append(b, ", "...)
				}
				b = append(b, t...)
			}
			b = append(b, "\r\n"...)
		}
	default:
		w.closeAfter = true // HTTP/1.0 with no length: the close ends the body
	}
	if w.closeAfter || w.c.s.shutting.Load() {
		w.closeAfter = true
		b = append(b, "Connection: close\r\n"...)
	} else if w.minor == 0 {
		b = append(b, "Connection: keep-alive\r\n"...)
	}
	b = append(b, "\r\n"...)
	w.head = b
	bw.Write(b)
	buf := w.buf
	w.buf = w.buf[:0]
	w.writeBody(buf)
	w.buf = buf[:0]
}

func (w *response) prefixedTrailers() bool {
	for k := range w.header {
		if len(k) > len(http.TrailerPrefix) && k[:len(http.TrailerPrefix)] == http.TrailerPrefix {
			return true
		}
	}
	return false
}

// Flush sends what is written so far.
func (w *response) Flush() {
	if !w.statusSet {
		w.WriteHeader(http.StatusOK)
	}
	w.commit(false)
	if w.c.bw.Flush() != nil {
		w.c.brk = true
	}
}

// finish ends the response once the handler returned.
func (w *response) finish() {
	if !w.statusSet {
		w.WriteHeader(http.StatusOK)
	}
	w.commit(true)
	bw := w.c.bw
	switch {
	case w.chunked:
		bw.WriteString("0\r\n")
		for _, k := range w.trailers {
			for _, v := range w.header[k] {
				writeHeaderLine(bw, k, v)
			}
		}
		for k, vv := range w.header {
			if len(k) > len(http.TrailerPrefix) && k[:len(http.TrailerPrefix)] == http.TrailerPrefix {
				for _, v := range vv {
					writeHeaderLine(bw, k[len(http.TrailerPrefix):], v)
				}
			}
		}
		bw.WriteString("\r\n")
	case w.bodyOK && !w.isHead && w.length >= 0 && w.written < w.length:
		w.closeAfter = true // shorter than declared: the client must see it cut
	}
	if bw.Flush() != nil {
		w.c.brk = true
	}
}

// splitComma yields the trimmed, non-empty items of a comma-separated
// list.
func splitComma(v string) func(func(string) bool) {
	return func(yield func(string) bool) {
		for len(v) > 0 {
			var f string
			i := 0
			for i < len(v) && v[i] != ',' {
				i++
			}
			f, v = trimSpace(v[:i]), v[min(i+1, len(v)):]
			if f != "" && !yield(f) {
				return
			}
		}
	}
}

// handoverListener hands connections the loop gives up to net/http.
type handoverListener struct {
	conns  chan net.Conn
	closed chan struct{}
	once   sync.Once
}

func newHandoverListener() *handoverListener {
	return &handoverListener{conns: make(chan net.Conn), closed: make(chan struct{})}
}

func (l *handoverListener) give(c net.Conn) bool {
	select {
	case l.conns <- c:
		return true
	case <-l.closed:
		return false
	}
}

func (l *handoverListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.conns:
		return c, nil
	case <-l.closed:
		return nil, net.ErrClosed
	}
}

func (l *handoverListener) Close() error {
	l.once.Do(func() { close(l.closed) })
	return nil
}

func (l *handoverListener) Addr() net.Addr { return handoverAddr{} }

type handoverAddr struct{}

func (handoverAddr) Network() string { return "handover" }
func (handoverAddr) String() string  { return "handover" }

// replayConn reads back the bytes the loop had read before the
// connection's other bytes.
type replayConn struct {
	net.Conn
	pending []byte
}

func (r *replayConn) Read(b []byte) (int, error) {
	if len(r.pending) > 0 {
		n := copy(b, r.pending)
		r.pending = r.pending[n:]
		return n, nil
	}
	return r.Conn.Read(b)
}
