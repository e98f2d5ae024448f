// Package gateway is ratelimit's HTTP gateway: a reverse proxy that matches
// requests to routes, counts them against the routes' limit zones (nginx
// limit_req arithmetic or x/time/rate token buckets), protects upstream
// pools with adaptive concurrency, and sends them on to a pool's servers.
//
// The configuration is one YAML document (see Config); Load swaps it in
// while requests flow, keeping the state of every zone whose definition did
// not change, so a reload does not hand out a fresh burst.
package gateway

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net/http"
	"net/http/httputil"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/VictoriaMetrics/metrics"

	"github.com/opskit/opskit/internal/dye"
	"github.com/opskit/opskit/internal/hop"
	"github.com/opskit/opskit/ratelimit/adaptive"
	"github.com/opskit/opskit/ratelimit/bucket"
	"github.com/opskit/opskit/ratelimit/nginx"
)

// DyeHeader marks a request to be traced through the gateway; it is passed
// on upstream.
const DyeHeader = "X-Opskit-Dye"

// Limit statuses beyond nginx's: the pool's concurrency limit refused the
// request.
const statusOverloaded = "OVERLOADED"

// concurrencyLimiter guards an upstream pool.
type concurrencyLimiter interface {
	// Acquire admits the request or returns an error (over the limit, or
	// its deadline is shorter than the current latency). done reports the
	// outcome once the upstream has answered.
	Acquire(ctx context.Context) (done func(failed bool), err error)
	// Snapshot describes the limiter for /admin/limits.
	Snapshot() any
	Close()
}

// Options are a Gateway's dependencies.
type Options struct {
	Log     *slog.Logger
	Metrics *metrics.Set
	// AccessLog logs every request (dyed requests are always logged).
	AccessLog bool
	// Hops counts the requests each upstream server answered, with their
	// response time (see internal/hop); Dye keeps trace records of dyed
	// requests. Both optional.
	Hops *hop.Set
	Dye  *dye.Tracer
	// NginxClock and Now replace the clocks (tests).
	NginxClock nginx.Clock
	Now        func() time.Time
}

// Gateway serves the proxy.
type Gateway struct {
	opts    Options
	log     *slog.Logger
	metrics *metrics.Set
	proxy   *httputil.ReverseProxy
	buffers bufferPool

	loadMu sync.Mutex
	state  atomic.Pointer[state]

	seenZones sync.Map // zone names with metrics registered
	share     atomic.Int32

	// The nginx zones' clock. With no clock given, every zone shares one
	// origin, and a request's decision takes its time from the reading
	// that also starts its upstream attempt (ngOrigin.At), not from a
	// reading of its own.
	ngClock  nginx.Clock
	ngOrigin nginx.Origin
	ngGiven  bool
}

type state struct {
	cfg     *Config
	trusted TrustedProxies
	zones   map[string]*zone
	pools   map[string]*pool
	routes  []*route
}

type zone struct {
	name        string
	fingerprint string
	cfg         ZoneConfig
	ng          *nginx.Zone
	bk          *bucket.Zone
}

type route struct {
	cfg     RouteConfig
	headers map[string]string
	pool    *pool
	zones   []*zone
	nset    *nginx.Set
	bset    *bucket.Set
	status  int
	policy  []policy
	counts  map[string]*metrics.Counter
	delayed *metrics.Histogram
	wouldDe *metrics.Histogram
}

// policy is a limit's advertised quota (RateLimit-Policy): q requests per
// w seconds.
type policy struct {
	name string
	q    int64
	w    int64
	// the header texts, made once
	quoted, header, limit string
	// The last answer's header values: a hot key's remaining count and
	// reset change seldom from one request to the next, so they are
	// usually the same and cost no allocation.
	last *atomic.Pointer[limitValues]
}

// limitValues are the five values limitHeaders sets.
type limitValues struct {
	remaining, reset int64
	values           [5]string
}

// New returns a gateway with no routes (every request gets 404).
func New(opts Options) *Gateway {
	if opts.Log == nil {
		opts.Log = slog.New(slog.NewTextHandler(os.Stderr, nil))
	}
	if opts.Metrics == nil {
		opts.Metrics = metrics.NewSet()
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	g := &Gateway{opts: opts, log: opts.Log, metrics: opts.Metrics, ngClock: opts.NginxClock}
	if g.ngClock == nil {
		g.ngOrigin, g.ngGiven = nginx.NewOrigin(), true
		g.ngClock = g.ngOrigin.Clock()
	}
	g.buffers = bufferPool{&sync.Pool{New: func() any { b := make([]byte, 32<<10); return &b }}}
	g.proxy = &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.SetXForwarded()
			pr.Out.Host = pr.In.Host
			pr.Out.URL.Scheme = "http"
			pr.Out.URL.Host = "upstream"
		},
		Transport:    poolTransport{},
		BufferPool:   g.buffers,
		ErrorHandler: g.proxyError,
		ErrorLog:     slog.NewLogLogger(opts.Log.Handler(), slog.LevelWarn),
	}
	g.state.Store(&state{zones: map[string]*zone{}, pools: map[string]*pool{}})
	return g
}

// LoadFile reads, checks and swaps in a routes file. On error the rules in
// force stay.
func (g *Gateway) LoadFile(path string) error {
	data, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("routes: %w", err)
	}
	cfg, err := Parse(path, data)
	if err != nil {
		return err
	}
	return g.Load(cfg)
}

// Load swaps in cfg (already validated by Parse or Validate). Zones whose
// definition is unchanged keep their keys and counts; pools whose
// definition is unchanged keep their health and connections.
func (g *Gateway) Load(cfg *Config) error {
	if err := cfg.Validate(); err != nil {
		return err
	}
	g.loadMu.Lock()
	defer g.loadMu.Unlock()
	old := g.state.Load()
	trusted, _ := ParseTrustedProxies(cfg.TrustedProxies)
	st := &state{cfg: cfg, trusted: trusted, zones: map[string]*zone{}, pools: map[string]*pool{}}
	var fresh []*pool
	fail := func(err error) error {
		for _, p := range fresh {
			p.close()
		}
		return err
	}
	for name, zc := range cfg.Zones {
		fp := fmt.Sprintf("%q|%q|%d|%s|%d|%q|%v", zc.Mode, zc.Rate, zc.Burst, zc.Key, zc.maxKeys(), zc.WhenFull, zc.IdleExpiry)
		if z, ok := old.zones[name]; ok && z.fingerprint == fp {
			st.zones[name] = z
			continue
		}
		z, err := g.newZone(name, fp, zc)
		if err != nil {
			return fail(err)
		}
		if _, ok := old.zones[name]; ok {
			g.log.Info("zone redefined; its keys start afresh", "zone", name)
		} else {
			g.log.Info("zone", "zone", name, "mode", modeOf(zc), "rate", zc.Rate, "max_keys", zc.maxKeys(), "memory_bytes", zc.maxKeys()*BytesPerKey)
		}
		st.zones[name] = z
		g.zoneMetrics(name)
	}
	for name, uc := range cfg.Upstreams {
		fp := fmt.Sprintf("%#v|%#v|%#v", uc, uc.HealthCheck, uc.Adaptive)
		if p, ok := old.pools[name]; ok && p.fingerpr == fp {
			st.pools[name] = p
			continue
		}
		p := newPool(name, uc, g.log)
		p.fingerpr = fp
		p.errors = g.metrics.GetOrCreateCounter(fmt.Sprintf(`opskit_ratelimit_upstream_errors_total{upstream=%q}`, name))
		if uc.Adaptive != nil {
			lim, err := adaptive.New(uc.Adaptive.limiterConfig())
			if err != nil {
				return fail(fmt.Errorf("upstream %q: %w", name, err))
			}
			p.limiter = adaptiveLimiter{lim}
		}
		p.start()
		fresh = append(fresh, p)
		st.pools[name] = p
	}
	for _, rc := range cfg.Routes {
		r, err := g.newRoute(rc, st)
		if err != nil {
			return fail(fmt.Errorf("route %q: %w", rc.Name, err))
		}
		st.routes = append(st.routes, r)
	}
	g.state.Store(st)
	g.applyShare(st)
	for name, p := range old.pools {
		if st.pools[name] != p {
			p.close()
			if p.limiter != nil {
				p.limiter.Close()
			}
		}
	}
	return nil
}

// SetShare makes this gateway enforce 1/n of every zone's rate: n gateways
// behind one load balancer then enforce the configured rate together.
func (g *Gateway) SetShare(n int) {
	if n < 1 {
		n = 1
	}
	g.loadMu.Lock()
	defer g.loadMu.Unlock()
	g.share.Store(int32(n))
	g.applyShare(g.state.Load())
}

func (g *Gateway) applyShare(st *state) {
	n := max(int(g.share.Load()), 1)
	for _, z := range st.zones {
		if z.ng != nil {
			rate, _ := nginx.ParseRate(z.cfg.Rate)
			z.ng.SetRate(rate / nginx.Rate(n))
		} else {
			rate, _ := bucket.ParseRate(z.cfg.Rate)
			z.bk.SetRate(rate / float64(n))
		}
	}
}

// Close stops the pools' health checks.
func (g *Gateway) Close() {
	g.loadMu.Lock()
	defer g.loadMu.Unlock()
	for _, p := range g.state.Load().pools {
		p.close()
		if p.limiter != nil {
			p.limiter.Close()
		}
	}
	g.state.Store(&state{zones: map[string]*zone{}, pools: map[string]*pool{}})
}

func modeOf(zc ZoneConfig) string {
	if zc.Mode == "" {
		return "nginx"
	}
	return zc.Mode
}

func (g *Gateway) newZone(name, fp string, zc ZoneConfig) (*zone, error) {
	z := &zone{name: name, fingerprint: fp, cfg: zc}
	var err error
	if modeOf(zc) == "nginx" {
		rate, _ := nginx.ParseRate(zc.Rate)
		z.ng, err = nginx.NewZone(nginx.ZoneConfig{Name: name, Rate: rate, MaxKeys: zc.maxKeys(), FailOpen: zc.WhenFull == "pass"}, g.ngClock)
	} else {
		rate, _ := bucket.ParseRate(zc.Rate)
		z.bk, err = bucket.NewZone(bucket.Config{Name: name, Rate: rate, Burst: zc.Burst, MaxKeys: zc.maxKeys(), IdleExpiry: zc.IdleExpiry}, g.opts.Now)
	}
	if err != nil {
		return nil, fmt.Errorf("zone %q: %w", name, err)
	}
	return z, nil
}

// zoneMetrics registers a zone's gauges once per name; they read whatever
// zone has that name now.
func (g *Gateway) zoneMetrics(name string) {
	if _, loaded := g.seenZones.LoadOrStore(name, true); loaded {
		return
	}
	stat := func(pick func(keys, maxKeys int, expired, evicted, full uint64) float64) func() float64 {
		return func() float64 {
			z := g.state.Load().zones[name]
			switch {
			case z == nil:
				return 0
			case z.ng != nil:
				s := z.ng.Stats()
				return pick(s.Keys, s.MaxKeys, s.Expired, s.Evicted, s.Full)
			default:
				s := z.bk.Stats()
				return pick(s.Keys, s.MaxKeys, s.Expired, s.Evicted, 0)
			}
		}
	}
	g.metrics.NewGauge(fmt.Sprintf(`opskit_ratelimit_zone_keys{zone=%q}`, name), stat(func(k, _ int, _, _, _ uint64) float64 { return float64(k) }))
	g.metrics.NewGauge(fmt.Sprintf(`opskit_ratelimit_zone_max_keys{zone=%q}`, name), stat(func(_, m int, _, _, _ uint64) float64 { return float64(m) }))
	g.metrics.NewGauge(fmt.Sprintf(`opskit_ratelimit_zone_expired_keys{zone=%q}`, name), stat(func(_, _ int, e, _, _ uint64) float64 { return float64(e) }))
	g.metrics.NewGauge(fmt.Sprintf(`opskit_ratelimit_zone_evicted_keys{zone=%q}`, name), stat(func(_, _ int, _, e, _ uint64) float64 { return float64(e) }))
	g.metrics.NewGauge(fmt.Sprintf(`opskit_ratelimit_zone_full_refusals{zone=%q}`, name), stat(func(_, _ int, _, _, f uint64) float64 { return float64(f) }))
}

func (g *Gateway) newRoute(rc RouteConfig, st *state) (*route, error) {
	r := &route{cfg: rc, headers: canonicalHeaders(rc.Headers), pool: st.pools[rc.Upstream], status: rc.Status}
	if r.status == 0 {
		r.status = http.StatusTooManyRequests
	}
	var ngLimits []nginx.Limit
	var bkZones []*bucket.Zone
	for _, lc := range rc.Limits {
		z := st.zones[lc.Zone]
		r.zones = append(r.zones, z)
		if z.ng != nil {
			ngLimits = append(ngLimits, nginx.Limit{Zone: z.ng, Burst: lc.Burst, Delay: lc.Delay, NoDelay: lc.NoDelay})
			rate := uint64(z.ng.Rate())
			r.policy = append(r.policy, quota(z.name, float64(rate)/1000))
		} else {
			bkZones = append(bkZones, z.bk)
			r.policy = append(r.policy, quota(z.name, z.bk.Config().Rate))
		}
	}
	var err error
	if len(ngLimits) > 0 {
		r.nset, err = nginx.NewSet(ngLimits, rc.DryRun)
	} else if len(bkZones) > 0 {
		r.bset, err = bucket.NewSet(bkZones)
	}
	if err != nil {
		return nil, err
	}
	r.counts = map[string]*metrics.Counter{}
	for _, s := range []string{"", "PASSED", "DELAYED", "REJECTED", "DELAYED_DRY_RUN", "REJECTED_DRY_RUN", statusOverloaded} {
		r.counts[s] = g.metrics.GetOrCreateCounter(fmt.Sprintf(`opskit_ratelimit_requests_total{route=%q,limit_status=%q}`, rc.Name, s))
	}
	r.delayed = g.metrics.GetOrCreateHistogram(fmt.Sprintf(`opskit_ratelimit_delay_seconds{route=%q}`, rc.Name))
	r.wouldDe = g.metrics.GetOrCreateHistogram(fmt.Sprintf(`opskit_ratelimit_dry_run_delay_seconds{route=%q}`, rc.Name))
	return r, nil
}

// quota states a rate as q requests per w seconds with whole numbers:
// q per second from 1/s up, else 1 per ⌈1/rate⌉ seconds (nginx's 1r/m is
// 16 thousandths a second: one per 63 s, not 60).
func quota(name string, perSecond float64) policy {
	p := policy{name: name, q: 1, w: int64(math.Ceil(1/perSecond - 1e-9))}
	if perSecond >= 1 {
		p.q, p.w = int64(math.Floor(perSecond)), 1
	}
	p.quoted = strconv.Quote(name)
	p.header = fmt.Sprintf("%s;q=%d;w=%d", p.quoted, p.q, p.w)
	p.limit = strconv.FormatInt(p.q, 10)
	p.last = new(atomic.Pointer[limitValues])
	return p
}

func (r *route) matches(req *http.Request) bool {
	c := &r.cfg
	if c.Host != "" {
		host := req.Host
		if i := strings.LastIndexByte(host, ':'); i >= 0 && !strings.HasSuffix(host, "]") {
			host = host[:i]
		}
		if !strings.EqualFold(host, c.Host) {
			return false
		}
	}
	if c.PathPrefix != "" && !strings.HasPrefix(req.URL.Path, c.PathPrefix) {
		return false
	}
	if len(c.Methods) > 0 {
		found := false
		for _, m := range c.Methods {
			if m == req.Method {
				found = true
				break
			}
		}
		if !found {
			return false
		}
	}
	for h, v := range r.headers {
		if req.Header.Get(h) != v {
			return false
		}
	}
	return true
}

// outcome is a request's limit decision, for headers and the log.
type outcome struct {
	status     string
	delay      time.Duration
	refuse     bool
	retryAfter time.Duration
	tightest   int
	remaining  int64
	reset      time.Duration
	zone       string
	excess     string
}

// decide asks the route's limits; now is the request's time on the
// nginx zones' clock when given.
func (r *route) decide(keys []string, now uint64, given bool) outcome {
	switch {
	case r.nset != nil:
		var d nginx.Decision
		if given {
			d = r.nset.DecideAt(keys, now)
		} else {
			d = r.nset.Decide(keys)
		}
		o := outcome{status: d.Status.String(), tightest: d.Tightest, remaining: d.Remaining, reset: d.Reset}
		if d.Zone >= 0 {
			o.zone = r.zones[d.Zone].name
			o.excess = fmt.Sprintf("%d.%03d", d.Excess/1000, d.Excess%1000)
		}
		switch d.Status {
		case nginx.Rejected:
			o.refuse, o.retryAfter = true, d.RetryAfter
		case nginx.Delayed:
			o.delay = d.Delay
			r.delayed.Update(d.Delay.Seconds())
		case nginx.DelayedDryRun:
			r.wouldDe.Update(d.Delay.Seconds())
		}
		return o
	case r.bset != nil:
		d := r.bset.Decide(keys)
		o := outcome{tightest: d.Tightest, remaining: d.Remaining, reset: d.Reset}
		switch {
		case !d.Counted:
		case d.Allowed:
			o.status = "PASSED"
		default:
			o.zone = r.zones[d.Zone].name
			o.status = "REJECTED"
			o.refuse, o.retryAfter = true, d.RetryAfter
			if r.cfg.DryRun {
				o.status, o.refuse = "REJECTED_DRY_RUN", false
			}
		}
		return o
	}
	return outcome{tightest: -1}
}

// ServeHTTP routes, limits and proxies one request.
func (g *Gateway) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	// The start is read only for a request that is logged.
	var start time.Time
	if g.opts.AccessLog {
		start = g.opts.Now()
	}
	st := g.state.Load()
	var rt *route
	for _, r := range st.routes {
		if r.matches(req) {
			rt = r
			break
		}
	}
	if rt == nil {
		http.Error(w, "no route for this request", http.StatusNotFound)
		return
	}
	// The loop's connection has its peer's address taken apart already.
	var pr *peer
	if lw, ok := w.(*response); ok && req.RemoteAddr == lw.c.remoteAddr {
		pr = &lw.c.peer
	} else {
		p := parsePeer(req.RemoteAddr)
		pr = &p
	}
	ri := requestInfo{r: req, ip: st.trusted.clientIP(pr, req.Header.Values("X-Forwarded-For")), route: rt.cfg.Name}
	dye := req.Header.Get(DyeHeader)
	if dye == "" && rt.cfg.Dye != nil {
		if v := rt.cfg.Dye.Key.key(&ri); v != "" && (len(rt.cfg.Dye.Values) == 0 || contains(rt.cfg.Dye.Values, v)) {
			dye = v
			req.Header.Set(DyeHeader, dye)
		}
	}
	if dye != "" {
		if start.IsZero() {
			start = g.opts.Now()
		}
		g.log.Info("dyed request: routed", "dye", dye, "route", rt.cfg.Name, "method", req.Method, "uri", req.RequestURI, "host", req.Host, "client", ri.ip, "headers", req.Header)
	}

	// One clock reading serves the client-gone watcher, the nginx zones'
	// decision and, when the request waits for nothing in between, the
	// upstream attempt's first try (its server pick, idle connection age
	// and response time): the loop's, taken as the request started.
	var now time.Time
	if lw, ok := w.(*response); ok {
		now = lw.c.now
	}
	if now.IsZero() {
		now = time.Now()
	}
	var o outcome
	if len(rt.zones) > 0 {
		var keyBuf [4]string
		keys := keyBuf[:0]
		for _, z := range rt.zones {
			keys = append(keys, z.cfg.Key.key(&ri))
		}
		var ngNow uint64
		if g.ngGiven {
			ngNow = g.ngOrigin.At(now)
		}
		o = rt.decide(keys, ngNow, g.ngGiven)
		if dye != "" {
			g.log.Info("dyed request: limits", "dye", dye, "route", rt.cfg.Name, "limit_status", o.status, "zone", o.zone, "excess", o.excess, "delay", o.delay)
		}
		g.limitHeaders(w, rt, o)
	} else {
		o.tightest = -1
	}
	rt.counts[o.status].Inc()
	if o.refuse {
		secs := int64(math.Ceil(o.retryAfter.Seconds()))
		if secs < 1 {
			secs = 1
		}
		w.Header().Set("Retry-After", strconv.FormatInt(secs, 10))
		http.Error(w, "too many requests", rt.status)
		g.access(req, rt, &ri, o.status, rt.status, "", start, dye)
		return
	}
	if o.delay > 0 {
		t := time.NewTimer(o.delay)
		select {
		case <-t.C:
		case <-req.Context().Done():
			t.Stop()
			g.access(req, rt, &ri, o.status, 499, "", start, dye)
			return
		}
	}

	p := rt.pool
	if d, ok := requestTimeout(req); ok {
		ctx, cancel := context.WithTimeout(req.Context(), d)
		defer cancel()
		req = req.WithContext(ctx)
	}
	var done func(failed bool)
	if p.limiter != nil {
		var err error
		done, err = p.limiter.Acquire(req.Context())
		if err != nil {
			rt.counts[statusOverloaded].Inc()
			w.Header().Set("Retry-After", "1")
			http.Error(w, "upstream overloaded: "+err.Error(), http.StatusServiceUnavailable)
			g.access(req, rt, &ri, statusOverloaded, http.StatusServiceUnavailable, "", start, dye)
			return
		}
	}
	// The attempt, the status writer and the fast path's exchange: the
	// loop's connection keeps one for the requests the fast path
	// forwards (nothing holds it once the handler returns); others get
	// theirs in one allocation (ReverseProxy's Transport may hold on).
	fast := forwardable(req)
	var px *proxied
	if lw, ok := w.(*response); ok && fast {
		px = &lw.c.px
		*px = proxied{}
	} else {
		px = new(proxied)
	}
	px.at.pool, px.at.hops, px.sw.ResponseWriter = p, g.opts.Hops, w
	if o.delay == 0 && p.limiter == nil {
		px.at.start = now // no wait since the reading
	}
	at, sw := &px.at, &px.sw
	if p.cfg.Balance == "hash" {
		at.hashKey = p.cfg.HashKey.key(&ri)
	}
	// ReverseProxy panics with http.ErrAbortHandler when a body is cut
	// short, and so do we: the limiter's slot must be given back then too.
	answered := false
	if done != nil {
		defer func() {
			if !answered {
				done(true)
			}
		}()
	}
	if fast {
		if cut := g.forward(sw, req, at, &px.fwd); cut {
			g.access(req, rt, &ri, o.status, sw.code, at.server, start, dye)
			panic(http.ErrAbortHandler) // the client must see the body cut short
		}
	} else {
		g.proxy.ServeHTTP(sw, req.WithContext(context.WithValue(req.Context(), attemptKey, at)))
	}
	answered = true
	if done != nil {
		done(sw.code >= 500 || sw.code == 0)
	}
	if dye != "" && g.opts.Dye != nil {
		g.opts.Dye.Hop(dye, "proxy "+at.server, fmt.Sprintf("%s %s %s -> %d (upstream %s)", rt.cfg.Name, req.Method, req.RequestURI, sw.code, at.took.Round(time.Microsecond)), g.opts.Now().Sub(start))
	}
	g.access(req, rt, &ri, o.status, sw.code, at.server, start, dye)
}

// proxied is a request's state on its way upstream.
type proxied struct {
	at  attempt
	sw  statusWriter
	fwd forwarding
}

// RequestTimeoutHeader carries a client's deadline ("250ms" or a number of
// milliseconds): the upstream attempt is bounded by it, and with adaptive
// concurrency a request whose deadline is shorter than the upstream's
// current latency is refused at once.
const RequestTimeoutHeader = "Request-Timeout"

func requestTimeout(req *http.Request) (time.Duration, bool) {
	v := req.Header.Get(RequestTimeoutHeader)
	if v == "" {
		return 0, false
	}
	if ms, err := strconv.ParseInt(v, 10, 64); err == nil && ms > 0 && ms < 1<<40 {
		return time.Duration(ms) * time.Millisecond, true
	}
	if d, err := time.ParseDuration(v); err == nil && d > 0 {
		return d, true
	}
	return 0, false
}

// adaptiveLimiter adapts adaptive.Limiter to the pool's needs.
type adaptiveLimiter struct{ l *adaptive.Limiter }

func (a adaptiveLimiter) Acquire(ctx context.Context) (func(bool), error) {
	tok, err := a.l.Acquire(ctx)
	if err != nil {
		return nil, err
	}
	return tok.Done, nil
}

func (a adaptiveLimiter) Snapshot() any { return a.l.Snapshot() }
func (a adaptiveLimiter) Close()        {}

func contains(list []string, v string) bool {
	for _, s := range list {
		if s == v {
			return true
		}
	}
	return false
}

// limitHeaders sets RateLimit-Policy and RateLimit (the IETF httpapi draft)
// and the legacy X-RateLimit-* for the tightest limit. This runs on every
// request: the loop's writer takes them as lines, other writers' header
// maps are written directly with canonical names.
func (g *Gateway) limitHeaders(w http.ResponseWriter, rt *route, o outcome) {
	if o.tightest < 0 {
		return
	}
	p := &rt.policy[o.tightest]
	remaining, reset := max(o.remaining, 0), int64(math.Ceil(o.reset.Seconds()))
	if lw, ok := w.(*response); ok {
		b := lw.extra[:0]
		b = append(b, "Ratelimit-Policy: "...)
		b = append(b, p.header...)
		b = append(b, "\r\nRatelimit: "...)
		b = append(b, p.quoted...)
		b = append(b, ";r="...)
		b = strconv.AppendInt(b, remaining, 10)
		b = append(b, ";t="...)
		b = strconv.AppendInt(b, reset, 10)
		b = append(b, "\r\nX-Ratelimit-Limit: "...)
		b = append(b, p.limit...)
		b = append(b, "\r\nX-Ratelimit-Remaining: "...)
		b = strconv.AppendInt(b, remaining, 10)
		b = append(b, "\r\nX-Ratelimit-Reset: "...)
		b = strconv.AppendInt(b, reset, 10)
		lw.extra = append(b, "\r\n"...)
		return
	}
	h := w.Header()
	lv := p.last.Load()
	if lv == nil || lv.remaining != remaining || lv.reset != reset {
		r, t := strconv.FormatInt(remaining, 10), strconv.FormatInt(reset, 10)
		lv = &limitValues{remaining: remaining, reset: reset,
			values: [5]string{p.header, p.quoted + ";r=" + r + ";t=" + t, p.limit, r, t}}
		p.last.Store(lv)
	}
	// The values are shared between answers and never written: a header
	// added to later is copied first (its slices are full).
	v := &lv.values
	h["Ratelimit-Policy"] = v[0:1:1]
	h["Ratelimit"] = v[1:2:2]
	h["X-Ratelimit-Limit"] = v[2:3:3]
	h["X-Ratelimit-Remaining"] = v[3:4:4]
	h["X-Ratelimit-Reset"] = v[4:5:5]
}

func (g *Gateway) access(req *http.Request, rt *route, ri *requestInfo, limitStatus string, code int, upstream string, start time.Time, dye string) {
	if !g.opts.AccessLog && dye == "" {
		return
	}
	attrs := []any{"route", rt.cfg.Name, "client", ri.ip, "method", req.Method, "uri", req.RequestURI,
		"status", code, "limit_req_status", limitStatus, "upstream_addr", upstream, "request_time", g.opts.Now().Sub(start)}
	if dye != "" {
		attrs = append(attrs, "dye", dye)
	}
	g.log.Info("access", attrs...)
}

func (g *Gateway) proxyError(w http.ResponseWriter, req *http.Request, err error) {
	at, _ := req.Context().Value(attemptKey).(*attempt)
	g.proxyErrorAt(w, req, at, err)
}

// proxyErrorAt answers a request the upstream did not: 503 with no server
// to try, 504 on a timeout, 499 (logged, the client is gone) when the
// client went away, 502 otherwise.
func (g *Gateway) proxyErrorAt(w http.ResponseWriter, req *http.Request, at *attempt, err error) {
	code := http.StatusBadGateway
	switch {
	case errors.Is(err, errNoServer):
		code = http.StatusServiceUnavailable
	case errors.Is(err, context.DeadlineExceeded) || strings.Contains(err.Error(), "timeout"):
		code = http.StatusGatewayTimeout
	case req.Context().Err() != nil:
		code = 499 // the client went away, as nginx logs it
	}
	if at != nil {
		at.pool.errors.Inc()
		// One line a second per pool at most: a dead upstream must not
		// turn every request into a log line.
		now := g.opts.Now().UnixNano()
		last := at.pool.lastErrLog.Load()
		if now-last >= int64(time.Second) && at.pool.lastErrLog.CompareAndSwap(last, now) {
			g.log.Warn("upstream error", "upstream", at.pool.name, "uri", req.RequestURI, "err", err,
				"errors_total", at.pool.errors.Get())
		}
	}
	w.WriteHeader(code)
}

// statusWriter remembers the status sent, for the limiter and the log.
type statusWriter struct {
	http.ResponseWriter
	code int
}

func (w *statusWriter) WriteHeader(code int) {
	if w.code == 0 && (code >= 200 || code == http.StatusSwitchingProtocols) { // not an interim 1xx
		w.code = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(b []byte) (int, error) {
	if w.code == 0 {
		w.code = http.StatusOK
	}
	return w.ResponseWriter.Write(b)
}

// Flush passes flushes on, for streamed responses.
func (w *statusWriter) Flush() {
	if f, ok := w.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

// Unwrap lets http.ResponseController reach the connection (WebSocket).
func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// bufferPool recycles the proxy's copy buffers.
type bufferPool struct{ p *sync.Pool }

func (b bufferPool) Get() []byte    { return *(b.p.Get().(*[]byte)) }
func (b bufferPool) Put(buf []byte) { b.p.Put(&buf) }
