package gateway

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"runtime"
	"sync"
	"syscall"
	"time"
)

// h1Transport sends idempotent requests without a body to a pool's
// servers over HTTP/1.1 connections it keeps itself, writing the request
// and reading the response header in the caller's goroutine.
//
// net/http's Transport hands every request to a writer and a reader
// goroutine of its connection and waits on channels for both; with the
// gateway on one core those hand-offs and their allocations cost about a
// third of the CPU a proxied request takes (bench/RESULTS.md). Anything
// else (a body, an upgrade, a request asking to close) still goes through
// the Transport, which also owns retrying non-idempotent requests safely.
type h1Transport struct {
	dialer        *net.Dialer
	headerTimeout time.Duration // for the response header; 0: none
	maxIdle       int           // idle connections kept per server
	idleTimeout   time.Duration
	now           func() time.Time

	mu     sync.Mutex
	idle   map[string][]*h1Conn // per server address, newest last
	closed bool
}

type h1Conn struct {
	net.Conn
	br            *bufio.Reader // reads through (*h1Wire)(c)
	bw            *bufio.Writer // writes through (*h1Wire)(c)
	idleSince     time.Time
	headerTimeout time.Duration

	// tryRead reads without waiting (nil where the connection offers no
	// raw access; every exchange is then armed from its start).
	tryRead func(p []byte) (n int, wouldBlock bool, err error)

	// One exchange's state. It is armed (the request's cancellation
	// hooked to the connection, the header deadline set) only once a read
	// would wait or a write could: the common small answer is already
	// there when read, and hooking and unhooking both, twice a request,
	// cost more CPU than the rest of the transport.
	ctx     context.Context
	armed   bool
	inHead  bool // the response head is being read: the header deadline applies
	written int  // bytes of this request written so far
	stop    func() bool
	// unblock makes the connection's reads and writes return at once;
	// made once per connection, not once per arming.
	unblock func()
}

// h1Wire is the connection as its buffers see it: reads and writes arm the
// exchange before they could wait.
type h1Wire h1Conn

// writeArmLimit: writes of an exchange up to this many bytes cannot wait
// on a connection whose last answer was read to the end (a socket's send
// buffer holds at least this much on Linux), so they need no arming.
const writeArmLimit = 16 << 10

func (w *h1Wire) Read(p []byte) (int, error) {
	c := (*h1Conn)(w)
	if !c.armed && c.tryRead != nil && len(p) > 0 {
		n, wouldBlock, err := c.tryRead(p)
		if !wouldBlock {
			return n, err
		}
	}
	c.arm()
	return c.Conn.Read(p)
}

func (w *h1Wire) Write(p []byte) (int, error) {
	c := (*h1Conn)(w)
	if c.written += len(p); c.written > writeArmLimit {
		c.arm()
	}
	return c.Conn.Write(p)
}

// arm hooks the request's cancellation to the connection (a cancelled
// request unblocks its reads and writes at once) and, while the head is
// read, sets the header deadline.
func (c *h1Conn) arm() {
	if c.armed {
		return
	}
	c.armed = true
	if c.inHead && c.headerTimeout > 0 {
		c.SetReadDeadline(time.Now().Add(c.headerTimeout))
	}
	c.stop = context.AfterFunc(c.ctx, c.unblock)
}

// disarm unhooks the cancellation; false if it has fired (the connection's
// deadline is then in the past).
func (c *h1Conn) disarm() bool {
	if !c.armed {
		return true
	}
	c.armed = false
	return c.stop()
}

// outgoing is a request as the fast path sends it. An interface, not
// callbacks: a pointer in an interface costs no allocation per request.
type outgoing interface {
	writeTo(*bufio.Writer) error
	interim(code int, h http.Header)
	// scratch holds what the exchange fills for the response.
	scratch() *exchangeScratch
}

// exchangeScratch is the response and bodies of one exchange, allocated
// with the request's other state rather than one by one.
type exchangeScratch struct {
	resp   http.Response
	body   h1Body
	length lengthBody
	// rawDst, set by the caller, takes a final head raw (see rawHead);
	// raw says the exchange did, and the response then has no Header.
	rawDst *rawHead
	raw    bool
}

// plainRequest sends an outbound request as net/http writes it and drops
// interim answers (ReverseProxy, which made it, has no way to pass them
// on from here).
type plainRequest struct{ *http.Request }

func (r plainRequest) writeTo(w *bufio.Writer) error { return r.Write(w) }
func (plainRequest) interim(int, http.Header)        {}
func (plainRequest) scratch() *exchangeScratch       { return new(exchangeScratch) }

// errUnexpectedSwitch is a 101 answer to a request that asked for no
// upgrade.
var errUnexpectedSwitch = errors.New("upstream switched protocols without an upgrade request")

// inThePast makes blocked reads and writes return at once.
var inThePast = time.Unix(1, 0)

func newH1Transport(dialer *net.Dialer, headerTimeout time.Duration, maxIdle int, idleTimeout time.Duration) *h1Transport {
	return &h1Transport{dialer: dialer, headerTimeout: headerTimeout, maxIdle: maxIdle, idleTimeout: idleTimeout, now: time.Now, idle: map[string][]*h1Conn{}}
}

// handles says whether the request takes the fast path.
func (t *h1Transport) handles(req *http.Request) bool {
	if req.Close || req.ContentLength != 0 || (req.Body != nil && req.Body != http.NoBody) || !idempotent(req) {
		return false
	}
	_, upgrade := req.Header["Upgrade"]
	return !upgrade
}

// roundTrip sends req to addr. A reused connection that turns out closed
// by the server (EOF or reset before any answer) is dropped with the other
// idle ones to that server, and the request is sent once more on a new
// connection: it is idempotent and has no body.
//
// out puts the request on the connection and is told of 1xx answers
// before the response; req gives the method (for HEAD) and is the
// response's Request; now is the time (for the idle connections' age).
func (t *h1Transport) roundTrip(ctx context.Context, addr string, req *http.Request, out outgoing, now time.Time) (*http.Response, error) {
	x := out.scratch()
	for retried := false; ; retried = true {
		c, reused, err := t.get(ctx, addr, retried, now)
		if err != nil {
			return nil, err
		}
		resp, err := t.exchange(ctx, c, req, addr, out, x)
		if err == nil {
			return resp, nil
		}
		c.Close()
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		if !reused || retried || !stale(err) {
			return nil, err
		}
		t.dropIdle(addr)
	}
}

func stale(err error) bool {
	return errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE)
}

// exchange writes the request and reads the response header; the body is
// read by the caller and gives the connection back at its end.
func (t *h1Transport) exchange(ctx context.Context, c *h1Conn, req *http.Request, addr string, out outgoing, x *exchangeScratch) (*http.Response, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	x.raw = false
	c.ctx, c.armed, c.inHead, c.written = ctx, false, true, 0
	if c.tryRead == nil {
		c.arm()
	}
	fail := func(err error) (*http.Response, error) {
		c.disarm()
		return nil, err
	}
	if err := out.writeTo(c.bw); err != nil {
		return fail(err)
	}
	if err := c.bw.Flush(); err != nil {
		return fail(err)
	}
	if c.br.Buffered() == 0 {
		// The answer is rarely back yet: let other requests run first,
		// so that the read below usually finds it instead of failing,
		// parking and being woken by the poller.
		runtime.Gosched()
	}
	var resp *http.Response
	for {
		var err error
		resp, err = readResponse(c.br, req, x)
		if err != nil {
			return fail(err)
		}
		if resp.StatusCode < 100 || resp.StatusCode >= 200 || resp.StatusCode == http.StatusSwitchingProtocols {
			break
		}
		// An interim answer (103 Early Hints): pass it on, then read on
		// for the response.
		if resp.StatusCode != http.StatusContinue {
			out.interim(resp.StatusCode, resp.Header)
		}
	}
	if resp.StatusCode == http.StatusSwitchingProtocols {
		return fail(fmt.Errorf("%s: %w", addr, errUnexpectedSwitch))
	}
	c.inHead = false
	if c.armed && t.headerTimeout > 0 {
		c.SetReadDeadline(time.Time{})
	}
	b := &x.body
	*b = h1Body{rc: resp.Body, c: c, t: t, addr: addr, reuse: !resp.Close}
	if resp.Body == http.NoBody {
		b.finish(true)
		return resp, nil
	}
	resp.Body = b
	return resp, nil
}

// get takes the newest idle connection to addr that has not been idle too
// long, or dials one (always, when fresh).
func (t *h1Transport) get(ctx context.Context, addr string, fresh bool, now time.Time) (*h1Conn, bool, error) {
	if !fresh {
		var expired []*h1Conn
		t.mu.Lock()
		list := t.idle[addr]
		var c *h1Conn
		for len(list) > 0 {
			last := list[len(list)-1]
			list = list[:len(list)-1]
			if t.idleTimeout > 0 && now.Sub(last.idleSince) > t.idleTimeout {
				expired = append(expired, last)
				continue
			}
			c = last
			break
		}
		t.idle[addr] = list
		t.mu.Unlock()
		for _, e := range expired {
			e.Close()
		}
		if c != nil {
			return c, true, nil
		}
	}
	nc, err := t.dialer.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, false, err
	}
	c := &h1Conn{Conn: nc, headerTimeout: t.headerTimeout, tryRead: nonblockingReader(nc)}
	c.unblock = func() { c.SetDeadline(inThePast) }
	c.br = bufio.NewReaderSize((*h1Wire)(c), 4<<10)
	c.bw = bufio.NewWriterSize((*h1Wire)(c), 4<<10)
	return c, false, nil
}

// put keeps a connection for the next request, unless the transport is
// closed or holds enough; idle ones past their time are closed from the
// oldest end. now is the time it goes idle (zero: read the clock).
func (t *h1Transport) put(addr string, c *h1Conn, now time.Time) {
	if now.IsZero() {
		now = t.now()
	}
	var drop []*h1Conn
	t.mu.Lock()
	list := t.idle[addr]
	for len(list) > 0 && t.idleTimeout > 0 && now.Sub(list[0].idleSince) > t.idleTimeout {
		drop = append(drop, list[0])
		list = list[1:]
	}
	if t.closed || len(list) >= t.maxIdle {
		drop = append(drop, c)
	} else {
		c.idleSince = now
		list = append(list, c)
	}
	t.idle[addr] = list
	t.mu.Unlock()
	for _, d := range drop {
		d.Close()
	}
}

// dropIdle closes the idle connections to addr (its server went away).
func (t *h1Transport) dropIdle(addr string) {
	t.mu.Lock()
	list := t.idle[addr]
	delete(t.idle, addr)
	t.mu.Unlock()
	for _, c := range list {
		c.Close()
	}
}

// closeIdle closes the idle connections; with final, connections given
// back later are closed too.
func (t *h1Transport) closeIdle(final bool) {
	t.mu.Lock()
	idle := t.idle
	t.idle = map[string][]*h1Conn{}
	t.closed = t.closed || final
	t.mu.Unlock()
	for _, list := range idle {
		for _, c := range list {
			c.Close()
		}
	}
}

// h1Body is a response body that gives its connection back once read to
// the end, and closes it if the reader stops early.
type h1Body struct {
	rc    io.ReadCloser
	c     *h1Conn
	t     *h1Transport
	addr  string
	reuse bool
	done  bool
	// idleFrom, when set, is the time the answer's head came (the
	// attempt's reading): the connection's idle time counts from there
	// when it goes back, so no clock is read for it. Its idle age is then
	// overstated by the time the body took, and it may be closed that
	// much before the idle timeout.
	idleFrom time.Time
}

func (b *h1Body) Read(p []byte) (int, error) {
	if b.done {
		return 0, io.EOF
	}
	n, err := b.rc.Read(p)
	switch {
	case err == io.EOF:
		b.finish(true)
	case err != nil:
		b.finish(false)
	}
	return n, err
}

// Close ends the body; unread, the connection cannot be reused.
func (b *h1Body) Close() error {
	if b.done {
		return nil
	}
	// Unblock and stop reading first: net/http's body would otherwise
	// read the rest of an unread response on close.
	b.c.SetDeadline(inThePast)
	b.rc.Close()
	b.finish(false)
	return nil
}

func (b *h1Body) finish(readToEnd bool) {
	if b.done {
		return
	}
	b.done = true
	// disarm is false once the request's cancellation has fired and set
	// the connection's deadline in the past.
	if b.c.disarm() && readToEnd && b.reuse {
		b.t.put(b.addr, b.c, b.idleFrom)
		return
	}
	b.c.Close()
}
