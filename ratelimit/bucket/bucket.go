// Package bucket is a keyed token bucket on golang.org/x/time/rate with
// nanosecond precision: one rate.Limiter per key, held in a bounded table
// (least recently used keys go first, idle keys expire).
//
// It validates what x/time/rate accepts silently but behaves surprisingly
// with: a rate of 0 or rate.Inf (never or always allowed), a burst of 0
// (nothing is ever allowed, whatever the rate) and changing a limit without
// its burst. A Zone's rate and burst are fixed at creation.
//
//	z, _ := bucket.NewZone(bucket.Config{Name: "api", Rate: 100, Burst: 20, MaxKeys: 100000}, nil)
//	set, _ := bucket.NewSet([]*bucket.Zone{z})
//	if d := set.Decide([]string{apiKey}); !d.Allowed {
//		// 429, Retry-After: d.RetryAfter
//	}
package bucket

import (
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/time/rate"

	"github.com/opskit/opskit/ratelimit/internal/lru"
)

// MaxRate bounds a zone's rate (events per second): beyond it the token
// arithmetic at nanosecond precision loses meaning.
const MaxRate = 1e9

// ParseRate reads "N/s", "N/m", "N/h" (N may have a fraction, e.g. 0.5/s),
// and nginx's "Nr/s" and "Nr/m". It returns events per second.
func ParseRate(s string) (float64, error) {
	i := strings.LastIndexByte(s, '/')
	if i < 0 {
		return 0, fmt.Errorf("rate %q: want N/s, N/m or N/h", s)
	}
	num, unit := strings.TrimSuffix(s[:i], "r"), s[i+1:]
	var per float64
	switch unit {
	case "s":
		per = 1
	case "m":
		per = 60
	case "h":
		per = 3600
	default:
		return 0, fmt.Errorf("rate %q: unit %q: want s, m or h", s, unit)
	}
	n, err := strconv.ParseFloat(num, 64)
	if err != nil {
		return 0, fmt.Errorf("rate %q: %w", s, err)
	}
	r := n / per
	if err := checkRate(r); err != nil {
		return 0, fmt.Errorf("rate %q: %w", s, err)
	}
	return r, nil
}

func checkRate(r float64) error {
	if math.IsNaN(r) || math.IsInf(r, 0) || r <= 0 {
		return errors.New("must be a positive finite number (a rate of 0 would refuse everything, an infinite one would limit nothing)")
	}
	if r > MaxRate {
		return fmt.Errorf("above the largest rate %g/s", float64(MaxRate))
	}
	return nil
}

// Config declares a zone.
type Config struct {
	Name string
	// Rate is tokens per second, Burst the bucket's size (at least 1).
	Rate  float64
	Burst int
	// MaxKeys bounds the keys held; when full the least recently used key
	// goes.
	MaxKeys int
	// IdleExpiry drops keys not seen for this long (0 = only when full).
	// A key idle long enough to have refilled its bucket loses nothing.
	IdleExpiry time.Duration
}

// Zone is a token bucket per key.
type Zone struct {
	cfg Config
	now func() time.Time

	mu    sync.Mutex
	table *lru.Table[entry]
	rate  float64 // now: Config.Rate unless SetRate changed it

	expired atomic.Uint64
	evicted atomic.Uint64
}

type entry struct {
	lim  *rate.Limiter
	seen time.Time
}

// NewZone checks cfg and makes the zone; now nil means time.Now.
func NewZone(cfg Config, now func() time.Time) (*Zone, error) {
	if err := checkRate(cfg.Rate); err != nil {
		return nil, fmt.Errorf("zone %q: rate %g: %w", cfg.Name, cfg.Rate, err)
	}
	if cfg.Burst < 1 {
		return nil, fmt.Errorf("zone %q: burst %d: want at least 1 (a burst of 0 refuses every request)", cfg.Name, cfg.Burst)
	}
	if cfg.MaxKeys < 1 {
		return nil, fmt.Errorf("zone %q: max keys %d: want at least 1", cfg.Name, cfg.MaxKeys)
	}
	if cfg.IdleExpiry < 0 {
		return nil, fmt.Errorf("zone %q: negative idle expiry", cfg.Name)
	}
	if now == nil {
		now = time.Now
	}
	return &Zone{cfg: cfg, now: now, table: lru.New[entry](cfg.MaxKeys), rate: cfg.Rate}, nil
}

// SetRate changes the rate of every key's bucket (and of new ones), keeping
// their tokens and the burst. Cluster mode uses it to give each gateway its
// share.
func (z *Zone) SetRate(r float64) error {
	if err := checkRate(r); err != nil {
		return err
	}
	z.mu.Lock()
	defer z.mu.Unlock()
	if r == z.rate {
		return nil
	}
	z.rate = r
	now := z.now()
	z.table.Range(func(_ string, e *entry) bool {
		e.lim.SetLimitAt(now, rate.Limit(r))
		return true
	})
	return nil
}

// Rate is the zone's rate now.
func (z *Zone) Rate() float64 {
	z.mu.Lock()
	defer z.mu.Unlock()
	return z.rate
}

// Name is the zone's name.
func (z *Zone) Name() string { return z.cfg.Name }

// Config returns what the zone was made with.
func (z *Zone) Config() Config { return z.cfg }

// Stats are a zone's keys and eviction counters.
type Stats struct {
	Keys, MaxKeys    int
	Expired, Evicted uint64
}

// Stats returns the keys held and the eviction counters.
func (z *Zone) Stats() Stats {
	z.mu.Lock()
	keys := z.table.Len()
	z.mu.Unlock()
	return Stats{Keys: keys, MaxKeys: z.cfg.MaxKeys, Expired: z.expired.Load(), Evicted: z.evicted.Load()}
}

// Tokens returns the tokens the key's bucket holds now; false if the zone
// holds no such key (its bucket would be full).
func (z *Zone) Tokens(key string) (float64, bool) {
	z.mu.Lock()
	defer z.mu.Unlock()
	e, ok := z.table.Peek(key)
	if !ok {
		return 0, false
	}
	return e.lim.TokensAt(z.now()), true
}

// limiter returns the key's limiter, making room for a new key.
func (z *Zone) limiter(key string, now time.Time) *rate.Limiter {
	z.mu.Lock()
	defer z.mu.Unlock()
	if e, ok := z.table.Get(key); ok {
		e.seen = now
		return e.lim
	}
	if z.cfg.IdleExpiry > 0 {
		for i := 0; i < 2; i++ {
			_, old, ok := z.table.Oldest()
			if !ok || now.Sub(old.seen) < z.cfg.IdleExpiry {
				break
			}
			z.table.RemoveOldest()
			z.expired.Add(1)
		}
	}
	if z.table.Full() {
		z.table.RemoveOldest()
		z.evicted.Add(1)
	}
	e := z.table.Insert(key)
	e.lim = rate.NewLimiter(rate.Limit(z.rate), z.cfg.Burst)
	e.seen = now
	return e.lim
}

// Set is the zones one request is counted in, decided together.
type Set struct{ zones []*Zone }

// NewSet returns the zones as a set.
func NewSet(zones []*Zone) (*Set, error) {
	if len(zones) == 0 {
		return nil, errors.New("bucket: no zones")
	}
	for i, z := range zones {
		for _, prev := range zones[:i] {
			if prev == z {
				return nil, fmt.Errorf("zone %q is used twice in one set", z.cfg.Name)
			}
		}
	}
	return &Set{zones: zones}, nil
}

// Len is the number of zones; Decide wants that many keys.
func (s *Set) Len() int { return len(s.zones) }

// Decision is the outcome for one request.
type Decision struct {
	// Counted is false when every key was empty.
	Counted bool
	Allowed bool
	// Zone is the index of the zone that refused (-1 if none).
	Zone int
	// RetryAfter (refusals) is when the refusing zone will have a token.
	RetryAfter time.Duration
	// Remaining is the tokens left in the tightest zone, Tightest its index;
	// Reset is how long until that bucket is full again.
	Remaining int64
	Tightest  int
	Reset     time.Duration
}

// Decide takes a token from each zone for its key (keys[i] for zone i; ""
// is not counted). If any zone has none, the tokens taken from the others
// are given back, so a refused request costs nothing.
func (s *Set) Decide(keys []string) Decision {
	if len(keys) != len(s.zones) {
		panic(fmt.Sprintf("bucket.Set.Decide: %d keys for %d zones", len(keys), len(s.zones)))
	}
	d := Decision{Zone: -1, Tightest: -1, Remaining: math.MaxInt64}
	var resBuf [4]*rate.Reservation
	res := resBuf[:0]
	now := s.zones[0].now()
	for i, z := range s.zones {
		if keys[i] == "" {
			res = append(res, nil)
			continue
		}
		d.Counted = true
		lim := z.limiter(keys[i], now)
		r := lim.ReserveN(now, 1)
		res = append(res, r)
		if delay := r.DelayFrom(now); delay > 0 {
			for j := i; j >= 0; j-- {
				if res[j] != nil {
					res[j].CancelAt(now)
				}
			}
			d.Zone, d.RetryAfter, d.Tightest, d.Remaining = i, delay, i, 0
			d.Reset = refill(z, lim, now)
			return d
		}
		left := int64(math.Floor(lim.TokensAt(now)))
		if left < d.Remaining {
			d.Remaining, d.Tightest = left, i
			d.Reset = refill(z, lim, now)
		}
	}
	d.Allowed = true
	if !d.Counted {
		d.Remaining = 0
	}
	return d
}

// refill is how long until the bucket is full.
func refill(z *Zone, lim *rate.Limiter, now time.Time) time.Duration {
	missing := float64(z.cfg.Burst) - lim.TokensAt(now)
	if missing <= 0 {
		return 0
	}
	return time.Duration(math.Ceil(missing / float64(lim.Limit()) * float64(time.Second)))
}
