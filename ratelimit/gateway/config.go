package gateway

import (
	"errors"
	"fmt"
	"net"
	"net/http"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/opskit/opskit/internal/kit"
	"github.com/opskit/opskit/ratelimit/adaptive"
	"github.com/opskit/opskit/ratelimit/bucket"
	"github.com/opskit/opskit/ratelimit/nginx"
)

// Config is the routes file.
type Config struct {
	// TrustedProxies are CIDRs whose X-Forwarded-For names the client.
	TrustedProxies []string `yaml:"trusted_proxies"`
	// Zones are the rate limits, by name, shared by the routes using them.
	Zones map[string]ZoneConfig `yaml:"zones"`
	// Upstreams are the server pools, by name.
	Upstreams map[string]UpstreamConfig `yaml:"upstreams"`
	// Routes are tried in order; the first that matches serves.
	Routes []RouteConfig `yaml:"routes"`
}

// ZoneConfig is one limit zone (nginx's limit_req_zone).
type ZoneConfig struct {
	// Mode: nginx (limit_req arithmetic, the default) or bucket
	// (x/time/rate token bucket).
	Mode string `yaml:"mode"`
	// Rate: nginx mode Nr/s or Nr/m; bucket mode also N/s, N/m, N/h with
	// fractions.
	Rate string `yaml:"rate"`
	// Burst is the bucket size in bucket mode (nginx mode sets burst per
	// route limit).
	Burst int `yaml:"burst"`
	// Key says what is counted, e.g. "ip" or "header:X-Api-Key+route".
	Key KeySpec `yaml:"key"`
	// Memory bounds the zone's key table, e.g. "10MB"; translated into a
	// key count at load.
	Memory ByteSize `yaml:"memory"`
	// WhenFull: reject (nginx) or pass, for a new key the zone cannot hold.
	WhenFull string `yaml:"when_full"`
	// IdleExpiry drops bucket-mode keys unseen this long.
	IdleExpiry time.Duration `yaml:"idle_expiry"`
}

// UpstreamConfig is a pool of servers.
type UpstreamConfig struct {
	Servers []string `yaml:"servers"`
	// Balance: round_robin (default), least_conn or hash (on HashKey).
	Balance string  `yaml:"balance"`
	HashKey KeySpec `yaml:"hash_key"`
	// HealthCheck polls each server; without it a server is taken out
	// for FailTimeout after a failed connection.
	HealthCheck *HealthCheckConfig `yaml:"health_check"`
	FailTimeout time.Duration      `yaml:"fail_timeout"`
	// ConnectTimeout and Timeout (until response headers) bound an attempt.
	ConnectTimeout time.Duration `yaml:"connect_timeout"`
	Timeout        time.Duration `yaml:"timeout"`
	// Retries is how many other servers an idempotent request without a
	// body is tried on after a connection failure.
	Retries int `yaml:"retries"`
	// Adaptive turns on adaptive concurrency for the pool.
	Adaptive *AdaptiveConfig `yaml:"adaptive"`
}

// HealthCheckConfig is an active health check.
type HealthCheckConfig struct {
	Path     string        `yaml:"path"`
	Interval time.Duration `yaml:"interval"`
	Timeout  time.Duration `yaml:"timeout"`
	// Fails consecutive failures take a server out, Passes successes
	// bring it back.
	Fails  int `yaml:"fails"`
	Passes int `yaml:"passes"`
}

// AdaptiveConfig selects and tunes an adaptive concurrency limiter.
type AdaptiveConfig struct {
	// Algorithm: auto (brpc), seed (brpc's first formula) or gradient2.
	Algorithm string `yaml:"algorithm"`
	// InitialLimit and the bounds of the limit.
	InitialLimit int `yaml:"initial_limit"`
	MinLimit     int `yaml:"min_limit"`
	MaxLimit     int `yaml:"max_limit"`
	// QueueTimeout > 0 lets a request over the limit wait this long in a
	// LIFO queue instead of failing at once.
	QueueTimeout time.Duration `yaml:"queue_timeout"`
	QueueSize    int           `yaml:"queue_size"`
}

func (a *AdaptiveConfig) limiterConfig() adaptive.Config {
	return adaptive.Config{Algorithm: a.Algorithm, InitialLimit: a.InitialLimit, MinLimit: a.MinLimit, MaxLimit: a.MaxLimit,
		QueueTimeout: a.QueueTimeout, QueueSize: a.QueueSize}
}

// RouteConfig matches requests and says where they go and what limits them.
type RouteConfig struct {
	Name string `yaml:"name"`
	// Match: all given must hold. Host is exact (port ignored), PathPrefix
	// a prefix, Methods any of, Headers exact values.
	Host       string            `yaml:"host"`
	PathPrefix string            `yaml:"path_prefix"`
	Methods    []string          `yaml:"methods"`
	Headers    map[string]string `yaml:"headers"`
	Upstream   string            `yaml:"upstream"`
	// Limits are counted together, in order, committed like nginx's
	// limit_req directives: a request refused by one is charged to none.
	Limits []LimitConfig `yaml:"limits"`
	// DryRun counts and reports but never delays or refuses.
	DryRun bool `yaml:"dry_run"`
	// Status answers a refused request (default 429; nginx uses 503).
	Status int `yaml:"status"`
	// Dye marks matching requests with X-Opskit-Dye and logs them in full.
	Dye *DyeConfig `yaml:"dye"`
}

// LimitConfig applies a zone to a route (nginx's limit_req).
type LimitConfig struct {
	Zone    string `yaml:"zone" json:"zone"`
	Burst   uint64 `yaml:"burst" json:"burst"`
	Delay   uint64 `yaml:"delay" json:"delay,omitempty"`
	NoDelay bool   `yaml:"nodelay" json:"nodelay,omitempty"`
}

// DyeConfig marks requests whose Key is one of Values (any non-empty value
// when Values is empty).
type DyeConfig struct {
	Key    KeySpec  `yaml:"key"`
	Values []string `yaml:"values"`
}

// ByteSize is a size such as 64k, 10MB or 1048576.
type ByteSize int64

// ParseByteSize reads a whole number with an optional k, m, g (or kb, mb,
// gb, any case) suffix, in powers of 1024.
func ParseByteSize(s string) (ByteSize, error) {
	t := strings.ToLower(strings.TrimSpace(s))
	t = strings.TrimSuffix(t, "b")
	mult := int64(1)
	switch {
	case strings.HasSuffix(t, "k"):
		mult, t = 1<<10, t[:len(t)-1]
	case strings.HasSuffix(t, "m"):
		mult, t = 1<<20, t[:len(t)-1]
	case strings.HasSuffix(t, "g"):
		mult, t = 1<<30, t[:len(t)-1]
	}
	n, err := strconv.ParseInt(t, 10, 64)
	if err != nil || n < 0 || n > (1<<62)/mult {
		return 0, fmt.Errorf("size %q: want e.g. 64k, 10MB or a byte count", s)
	}
	return ByteSize(n * mult), nil
}

// UnmarshalYAML reads a size.
func (b *ByteSize) UnmarshalYAML(unmarshal func(any) error) error {
	var s string
	if err := unmarshal(&s); err != nil {
		return err
	}
	v, err := ParseByteSize(s)
	if err != nil {
		return err
	}
	*b = v
	return nil
}

// BytesPerKey is what one key costs a zone, measured with
// BenchmarkZoneMemory (a million IPv4 keys), rounded up: the budget in
// bytes over this is the zone's key count.
const BytesPerKey = 128

// DefaultZoneMemory is a zone's budget when none is given.
const DefaultZoneMemory = 10 << 20

// Parse reads a routes file strictly; file only labels errors.
func Parse(file string, data []byte) (*Config, error) {
	var c Config
	if err := kit.ParseStrict(file, data, &c); err != nil {
		return nil, err
	}
	if err := c.Validate(); err != nil {
		return nil, fmt.Errorf("%s: %w", file, err)
	}
	return &c, nil
}

// Validate checks everything that can be checked without building.
func (c *Config) Validate() error {
	var errs []error
	if _, err := ParseTrustedProxies(c.TrustedProxies); err != nil {
		errs = append(errs, err)
	}
	for _, name := range sortedKeys(c.Zones) {
		if err := c.Zones[name].validate(); err != nil {
			errs = append(errs, fmt.Errorf("zone %q: %w", name, err))
		}
	}
	for _, name := range sortedKeys(c.Upstreams) {
		if err := c.Upstreams[name].validate(); err != nil {
			errs = append(errs, fmt.Errorf("upstream %q: %w", name, err))
		}
	}
	names := map[string]bool{}
	for i, r := range c.Routes {
		label := fmt.Sprintf("routes[%d]", i)
		if r.Name != "" {
			label = fmt.Sprintf("route %q", r.Name)
		}
		if r.Name == "" {
			errs = append(errs, fmt.Errorf("%s: name is required", label))
		} else if names[r.Name] {
			errs = append(errs, fmt.Errorf("%s: name used twice", label))
		}
		names[r.Name] = true
		if err := c.validateRoute(r); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", label, err))
		}
	}
	return errors.Join(errs...)
}

func (z ZoneConfig) validate() error {
	if z.Key.IsZero() {
		return errors.New("key is required")
	}
	if z.Memory < 0 || (z.Memory != 0 && z.Memory < BytesPerKey) {
		return fmt.Errorf("memory %d: less than one key (%d bytes)", z.Memory, BytesPerKey)
	}
	switch z.WhenFull {
	case "", "reject", "pass":
	default:
		return fmt.Errorf("when_full %q: want reject or pass", z.WhenFull)
	}
	switch z.Mode {
	case "", "nginx":
		if _, err := nginx.ParseRate(z.Rate); err != nil {
			return err
		}
		if z.Burst != 0 {
			return errors.New("burst belongs to each route's limit in nginx mode")
		}
		if z.IdleExpiry != 0 {
			return errors.New("idle_expiry is for bucket mode (nginx mode drops keys idle a minute with no excess)")
		}
	case "bucket":
		r, err := bucket.ParseRate(z.Rate)
		if err != nil {
			return err
		}
		if z.WhenFull == "pass" {
			return errors.New("when_full: bucket mode always makes room by dropping the least recently used key")
		}
		_, err = bucket.NewZone(bucket.Config{Rate: r, Burst: z.Burst, MaxKeys: 1, IdleExpiry: z.IdleExpiry}, nil)
		return err
	default:
		return fmt.Errorf("mode %q: want nginx or bucket", z.Mode)
	}
	return nil
}

// maxKeys is the key count the memory budget allows.
func (z ZoneConfig) maxKeys() int {
	m := int64(z.Memory)
	if m == 0 {
		m = DefaultZoneMemory
	}
	return int(m / BytesPerKey)
}

func (u UpstreamConfig) validate() error {
	if len(u.Servers) == 0 {
		return errors.New("no servers")
	}
	for _, s := range u.Servers {
		if _, _, err := net.SplitHostPort(s); err != nil {
			return fmt.Errorf("server %q: want host:port", s)
		}
	}
	switch u.Balance {
	case "", "round_robin", "least_conn":
		if !u.HashKey.IsZero() {
			return errors.New("hash_key needs balance: hash")
		}
	case "hash":
		if u.HashKey.IsZero() {
			return errors.New("balance hash needs hash_key")
		}
	default:
		return fmt.Errorf("balance %q: want round_robin, least_conn or hash", u.Balance)
	}
	if u.Retries < 0 || u.ConnectTimeout < 0 || u.Timeout < 0 || u.FailTimeout < 0 {
		return errors.New("negative retries or timeout")
	}
	if h := u.HealthCheck; h != nil {
		if !strings.HasPrefix(h.Path, "/") {
			return fmt.Errorf("health_check path %q: want an absolute path", h.Path)
		}
		if h.Interval < 0 || h.Timeout < 0 || h.Fails < 0 || h.Passes < 0 {
			return errors.New("health_check: negative value")
		}
	}
	if a := u.Adaptive; a != nil {
		if a.InitialLimit < 0 || a.MinLimit < 0 || a.MaxLimit < 0 || a.QueueSize < 0 || a.QueueTimeout < 0 {
			return errors.New("adaptive: negative value")
		}
		if _, err := adaptive.New(a.limiterConfig()); err != nil {
			return err
		}
	}
	return nil
}

func (c *Config) validateRoute(r RouteConfig) error {
	if r.Upstream == "" {
		return errors.New("upstream is required")
	}
	if _, ok := c.Upstreams[r.Upstream]; !ok {
		return fmt.Errorf("upstream %q is not defined", r.Upstream)
	}
	if r.PathPrefix != "" && !strings.HasPrefix(r.PathPrefix, "/") {
		return fmt.Errorf("path_prefix %q: want an absolute path", r.PathPrefix)
	}
	for _, m := range r.Methods {
		if m == "" || strings.ToUpper(m) != m {
			return fmt.Errorf("method %q: want upper case, e.g. GET", m)
		}
	}
	for h := range r.Headers {
		if h == "" {
			return errors.New("empty header name in match")
		}
	}
	if r.Status != 0 && (r.Status < 400 || r.Status > 599) {
		return fmt.Errorf("status %d: want 4xx or 5xx", r.Status)
	}
	mode := ""
	seen := map[string]bool{}
	for i, l := range r.Limits {
		z, ok := c.Zones[l.Zone]
		if !ok {
			return fmt.Errorf("limits[%d]: zone %q is not defined", i, l.Zone)
		}
		if seen[l.Zone] {
			return fmt.Errorf("limits[%d]: zone %q used twice", i, l.Zone)
		}
		seen[l.Zone] = true
		m := z.Mode
		if m == "" {
			m = "nginx"
		}
		if mode != "" && m != mode {
			return fmt.Errorf("limits[%d]: zone %q is %s mode, the route's others %s: one route uses one mode", i, l.Zone, m, mode)
		}
		mode = m
		if m == "bucket" && (l.Burst != 0 || l.Delay != 0 || l.NoDelay) {
			return fmt.Errorf("limits[%d]: burst, delay and nodelay are nginx mode; a bucket zone has its own burst", i)
		}
		if l.NoDelay && l.Delay != 0 {
			return fmt.Errorf("limits[%d]: delay and nodelay together", i)
		}
		if l.Delay > l.Burst && !l.NoDelay {
			// nginx accepts it; it is the same as nodelay. Say so.
			return fmt.Errorf("limits[%d]: delay %d above burst %d is nodelay; write nodelay", i, l.Delay, l.Burst)
		}
	}
	if r.Dye != nil && r.Dye.Key.IsZero() {
		return errors.New("dye: key is required")
	}
	return nil
}

func sortedKeys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// canonicalHeaders returns the match headers with canonical names.
func canonicalHeaders(h map[string]string) map[string]string {
	out := make(map[string]string, len(h))
	for k, v := range h {
		out[http.CanonicalHeaderKey(k)] = v
	}
	return out
}
