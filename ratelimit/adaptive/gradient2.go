package adaptive

import (
	"math"
	"time"
)

// Netflix Gradient2's defaults.
const (
	g2Smoothing  = 0.2
	g2Tolerance  = 1.5
	g2LongWindow = 600
	g2Warmup     = 10
	g2QueueSize  = 4
)

// gradient2 is Netflix's Gradient2Limit, updated on every response.
type gradient2 struct {
	cfg       Config
	estimated float64
	lastRtt   float64 // ns
	longRtt   float64 // ns, exponential average
	count     int
}

func newGradient2(cfg Config) *gradient2 {
	return &gradient2{cfg: cfg, estimated: float64(cfg.InitialLimit)}
}

func (g *gradient2) limit() int { return int(g.estimated) }

func (g *gradient2) latency() time.Duration { return time.Duration(g.lastRtt) }

func (g *gradient2) snapshot(s *Snapshot) {
	s.Algorithm = "gradient2"
	s.MinLatencyMs = g.longRtt / 1e6
	s.SampleLatencyMs = g.lastRtt / 1e6
}

func (g *gradient2) sample(_ time.Time, latency time.Duration, inflight int, failed bool) {
	rtt := float64(latency)
	if rtt <= 0 {
		rtt = 1
	}
	g.lastRtt = rtt
	g.count++
	if g.count <= g2Warmup {
		g.longRtt += (rtt - g.longRtt) / float64(g.count)
	} else {
		f := 2.0 / (g2LongWindow + 1)
		g.longRtt = g.longRtt*(1-f) + rtt*f
	}
	// After a long spell of overload the long average lags far above the
	// latency now: pull it down faster.
	if g.longRtt/rtt > 2 {
		g.longRtt *= 0.95
	}
	// Do not grow a limit the traffic does not use.
	if float64(inflight) < g.estimated/2 {
		return
	}
	gradient := math.Max(0.5, math.Min(1.0, g2Tolerance*g.longRtt/rtt))
	next := g.estimated*gradient + g2QueueSize
	next = g.estimated*(1-g2Smoothing) + next*g2Smoothing
	g.estimated = math.Max(float64(g.cfg.MinLimit), math.Min(float64(g.cfg.MaxLimit), next))
}
