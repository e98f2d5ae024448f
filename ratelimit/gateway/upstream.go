package gateway

import (
	"context"
	"errors"
	"hash/fnv"
	"io"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/VictoriaMetrics/metrics"

	"github.com/opskit/opskit/internal/hop"
)

// Defaults of an upstream pool.
const (
	defaultConnectTimeout = 5 * time.Second
	defaultTimeout        = 60 * time.Second
	defaultFailTimeout    = 10 * time.Second
	defaultCheckInterval  = 5 * time.Second
	defaultCheckTimeout   = 2 * time.Second
	idleConnsPerServer    = 1024
	idleConnTimeout       = 90 * time.Second
)

// errNoServer is a pool with no server to try.
var errNoServer = errors.New("no live upstream server")

// server is one member of a pool.
type server struct {
	addr     string
	inflight atomic.Int64
	// healthy is the active check's verdict; downUntil (unix ns) takes a
	// server out after a failed connection.
	healthy   atomic.Bool
	downUntil atomic.Int64
	checks    int // consecutive results of the same kind, for the checker
}

func (s *server) live(now int64) bool { return s.healthy.Load() && now >= s.downUntil.Load() }

// pool is a named upstream: servers, balancing, health, transport.
type pool struct {
	name      string
	cfg       UpstreamConfig
	fingerpr  string
	servers   []*server
	rr        atomic.Uint64
	transport *http.Transport
	h1        *h1Transport       // the fast path for idempotent requests without a body
	limiter   concurrencyLimiter // nil without adaptive concurrency
	log       *slog.Logger
	errors    *metrics.Counter
	// lastErrLog (unix ns) paces the pool's error log lines.
	lastErrLog atomic.Int64

	stop context.CancelFunc
	done chan struct{}
}

func newPool(name string, cfg UpstreamConfig, log *slog.Logger) *pool {
	p := &pool{name: name, cfg: cfg, log: log, done: make(chan struct{}), errors: new(metrics.Counter)}
	for _, a := range cfg.Servers {
		s := &server{addr: a}
		s.healthy.Store(true)
		p.servers = append(p.servers, s)
	}
	connect := cfg.ConnectTimeout
	if connect == 0 {
		connect = defaultConnectTimeout
	}
	timeout := cfg.Timeout
	if timeout == 0 {
		timeout = defaultTimeout
	}
	dialer := &net.Dialer{Timeout: connect, KeepAlive: 30 * time.Second}
	p.transport = &http.Transport{
		DialContext:           dialer.DialContext,
		MaxIdleConns:          0,
		MaxIdleConnsPerHost:   idleConnsPerServer,
		IdleConnTimeout:       idleConnTimeout,
		ResponseHeaderTimeout: timeout,
		ForceAttemptHTTP2:     false,
		// A proxy passes the client's Accept-Encoding on and the body as
		// it comes: the Transport must not ask for gzip and unpack it.
		DisableCompression: true,
	}
	p.h1 = newH1Transport(dialer, timeout, idleConnsPerServer, idleConnTimeout)
	return p
}

// start runs the active health checks, if configured.
func (p *pool) start() {
	ctx, cancel := context.WithCancel(context.Background())
	p.stop = cancel
	h := p.cfg.HealthCheck
	if h == nil {
		close(p.done)
		return
	}
	go func() {
		defer close(p.done)
		interval := h.Interval
		if interval == 0 {
			interval = defaultCheckInterval
		}
		t := time.NewTicker(interval)
		defer t.Stop()
		for {
			p.checkAll(ctx)
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
		}
	}()
}

// close stops the health checks and, once the requests in flight end,
// the idle connections.
func (p *pool) close() {
	if p.stop != nil {
		p.stop()
	}
	<-p.done
	go func() {
		// Requests in flight keep their connections; idle ones go now and
		// again once the stragglers should be done.
		p.transport.CloseIdleConnections()
		p.h1.closeIdle(true)
		time.Sleep(p.cfg.Timeout + defaultTimeout)
		p.transport.CloseIdleConnections()
	}()
}

func (p *pool) checkAll(ctx context.Context) {
	h := p.cfg.HealthCheck
	timeout := h.Timeout
	if timeout == 0 {
		timeout = defaultCheckTimeout
	}
	fails, passes := max(h.Fails, 1), max(h.Passes, 1)
	var wg sync.WaitGroup
	for _, s := range p.servers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			cctx, cancel := context.WithTimeout(ctx, timeout)
			defer cancel()
			ok := p.check(cctx, s)
			if ctx.Err() != nil {
				return
			}
			was := s.healthy.Load()
			if ok == was {
				s.checks = 0
				return
			}
			s.checks++
			if (ok && s.checks >= passes) || (!ok && s.checks >= fails) {
				s.healthy.Store(ok)
				s.checks = 0
				if ok {
					s.downUntil.Store(0)
				}
				p.log.Warn("upstream server health changed", "upstream", p.name, "server", s.addr, "healthy", ok)
			}
		}()
	}
	wg.Wait()
}

func (p *pool) check(ctx context.Context, s *server) bool {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+s.addr+p.cfg.HealthCheck.Path, nil)
	if err != nil {
		return false
	}
	resp, err := p.transport.RoundTrip(req)
	if err != nil {
		return false
	}
	io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	resp.Body.Close()
	return resp.StatusCode >= 200 && resp.StatusCode < 400
}

// markFailed takes a server out after a failed connection.
func (p *pool) markFailed(s *server) {
	ft := p.cfg.FailTimeout
	if ft == 0 {
		ft = defaultFailTimeout
	}
	s.downUntil.Store(time.Now().Add(ft).UnixNano())
	p.log.Warn("upstream server failed; out of rotation", "upstream", p.name, "server", s.addr, "for", ft)
}

// pick chooses a live server not yet tried for this request.
func (p *pool) pick(hashKey string, tried []*server, now int64) *server {
	usable := func(s *server) bool {
		if !s.live(now) {
			return false
		}
		for _, t := range tried {
			if t == s {
				return false
			}
		}
		return true
	}
	switch {
	case p.cfg.Balance == "hash" && hashKey != "":
		// Rendezvous hashing: each key goes to the server with the highest
		// hash of (key, server), so a server leaving moves only its keys.
		var best *server
		var bestScore uint64
		for _, s := range p.servers {
			if !usable(s) {
				continue
			}
			h := fnv.New64a()
			io.WriteString(h, hashKey)
			h.Write([]byte{0})
			io.WriteString(h, s.addr)
			if score := h.Sum64(); best == nil || score > bestScore {
				best, bestScore = s, score
			}
		}
		return best
	case p.cfg.Balance == "least_conn":
		start := int(p.rr.Add(1))
		var best *server
		for i := range p.servers {
			s := p.servers[(start+i)%len(p.servers)]
			if usable(s) && (best == nil || s.inflight.Load() < best.inflight.Load()) {
				best = s
			}
		}
		return best
	default:
		start := int(p.rr.Add(1))
		for i := range p.servers {
			if s := p.servers[(start+i)%len(p.servers)]; usable(s) {
				return s
			}
		}
		return nil
	}
}

// poolTransport sends a request to the route's pool, retrying idempotent
// requests without a body on other servers after a connection failure.
type poolTransport struct{}

type ctxKey int

const attemptKey ctxKey = 0

// attempt carries the pool and hash key from ServeHTTP to RoundTrip.
type attempt struct {
	pool    *pool
	hashKey string
	server  string        // the server that answered, for the access log
	took    time.Duration // its response time (to the response header)
	hops    *hop.Set
	counted countedBody // the body of the answer, once one came
	// start, when set, is the request's clock reading, taken just before
	// with nothing waited for since: the first try uses it rather than
	// reading the clock again.
	start time.Time
}

func (poolTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	at, _ := req.Context().Value(attemptKey).(*attempt)
	if at == nil {
		return nil, errors.New("gateway: request without an upstream")
	}
	return at.send(req.Context(), idempotent(req), &viaTransport{at.pool, req})
}

// sender sends a request to one server of a pool.
type sender interface {
	// sendTo sends to addr; now is the time the try began.
	sendTo(addr string, now time.Time) (*http.Response, error)
}

// viaTransport sends a request ReverseProxy made.
type viaTransport struct {
	p   *pool
	req *http.Request
}

func (v *viaTransport) sendTo(addr string, now time.Time) (*http.Response, error) {
	v.req.URL.Scheme = "http"
	v.req.URL.Host = addr
	if v.p.h1.handles(v.req) {
		return v.p.h1.roundTrip(v.req.Context(), addr, v.req, plainRequest{v.req}, now)
	}
	return v.p.transport.RoundTrip(v.req)
}

// send picks a server and has s send the request to it, and for an
// idempotent request tries the next server after a connection failure,
// up to the pool's retries. It keeps the servers' in-flight counts and
// hop statistics.
func (at *attempt) send(ctx context.Context, idempotent bool, s sender) (*http.Response, error) {
	p := at.pool
	tries := 1
	if idempotent {
		tries += p.cfg.Retries
	}
	var triedBuf [4]*server
	tried := triedBuf[:0]
	var lastErr error = errNoServer
	// One clock reading a try serves the pick, the idle connection's age
	// and the response time.
	sent := at.start
	for i := 0; i < tries; i++ {
		if i > 0 || sent.IsZero() {
			sent = time.Now()
		}
		srv := p.pick(at.hashKey, tried, sent.UnixNano())
		if srv == nil {
			break
		}
		tried = append(tried, srv)
		srv.inflight.Add(1)
		resp, err := s.sendTo(srv.addr, sent)
		if err != nil {
			srv.inflight.Add(-1)
			at.hops.To(srv.addr).Failed()
			lastErr = err
			if ctx.Err() != nil {
				return nil, err
			}
			if isConnectError(err) {
				p.markFailed(srv)
				continue
			}
			return nil, err
		}
		at.server = srv.addr
		at.took = time.Since(sent)
		if b, ok := resp.Body.(*h1Body); ok {
			b.idleFrom = sent.Add(at.took) // the reading just made
		}
		at.hops.To(srv.addr).Acked(1, at.took)
		if resp.StatusCode == http.StatusSwitchingProtocols {
			// The body is the upgraded connection: hand it over as it is.
			srv.inflight.Add(-1)
			return resp, nil
		}
		at.counted = countedBody{ReadCloser: resp.Body, s: srv}
		resp.Body = &at.counted
		return resp, nil
	}
	return nil, lastErr
}

// idempotent requests without a body can be sent again.
func idempotent(r *http.Request) bool {
	switch r.Method {
	case http.MethodGet, http.MethodHead, http.MethodOptions, http.MethodTrace, http.MethodPut, http.MethodDelete:
		return r.Body == nil || r.Body == http.NoBody
	}
	return false
}

func isConnectError(err error) bool {
	var op *net.OpError
	return errors.As(err, &op) && op.Op == "dial"
}

// countedBody ends the server's in-flight count when the body is closed.
type countedBody struct {
	io.ReadCloser
	s    *server
	once sync.Once
}

func (b *countedBody) Close() error {
	b.once.Do(func() { b.s.inflight.Add(-1) })
	return b.ReadCloser.Close()
}
