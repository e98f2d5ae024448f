package adaptive

import (
	"math"
	"time"
)

// brpc's defaults for its auto limiter.
const (
	autoWindow          = time.Second
	autoMinSamples      = 100
	autoMaxSamples      = 200
	autoSampleInterval  = 100 * time.Microsecond
	autoEMAAlpha        = 0.1
	autoMaxExplore      = 0.3
	autoMinExplore      = 0.06
	autoExploreStep     = 0.02
	autoRemeasureReduce = 0.9
	autoRemeasureEvery  = 50 * time.Second // next remeasure in [every/2, every)
	autoFailPunish      = 1.0
	autoLatencyFactor   = 1.0
	seedAlpha           = 0.3 // the seed formula's overload threshold

	// Our change to brpc: how far above the no-load latency (beyond the
	// explore ratio's own allowance) a window's latency must be for the
	// upstream to count as saturated, and how much of the gap between the
	// peak-qps EMA and the window's qps a saturated window closes, once
	// autoSaturatedRun windows in a row have been saturated.
	autoSaturatedMargin = 0.15
	autoSaturatedDecay  = 0.5
	autoSaturatedRun    = 2
)

// auto is brpc's AutoConcurrencyLimiter (and with seed, its first formula).
type auto struct {
	cfg  Config
	seed bool

	maxConcurrency int
	remeasureAt    time.Time // next no-load latency remeasure
	ignoreUntil    time.Time // non-zero while remeasuring
	minLatencyUs   float64   // <= 0: unknown
	emaMaxQPS      float64
	exploreRatio   float64
	lastSample     time.Time
	lastAvgUs      float64
	saturatedRun   int // windows in a row whose latency showed saturation

	// the sample window
	start            time.Time
	succ, failed     int
	succUs, failedUs float64
	succTotal        int // successes in the window, sampled or not
}

func newAuto(cfg Config, seed bool) *auto {
	a := &auto{cfg: cfg, seed: seed, maxConcurrency: cfg.InitialLimit, minLatencyUs: -1, emaMaxQPS: -1, exploreRatio: autoMaxExplore}
	a.remeasureAt = a.nextRemeasure(cfg.Now())
	return a
}

func (a *auto) nextRemeasure(now time.Time) time.Time {
	half := int64(autoRemeasureEvery / 2 / time.Millisecond)
	return now.Add(time.Duration(half+a.cfg.Rand(half)) * time.Millisecond)
}

func (a *auto) limit() int { return a.maxConcurrency }

func (a *auto) latency() time.Duration {
	return time.Duration(a.lastAvgUs * float64(time.Microsecond))
}

func (a *auto) snapshot(s *Snapshot) {
	s.Algorithm = "auto"
	if a.seed {
		s.Algorithm = "seed"
	}
	s.MinLatencyMs = math.Max(a.minLatencyUs, 0) / 1000
	s.SampleLatencyMs = a.lastAvgUs / 1000
	s.MaxQPS = math.Max(a.emaMaxQPS, 0)
	s.ExploreRatio = a.exploreRatio
	s.Remeasuring = !a.ignoreUntil.IsZero()
}

// sample is OnResponded: successes are all counted for throughput, and at
// most one response per sampling interval goes into the window.
func (a *auto) sample(now time.Time, latency time.Duration, _ int, failed bool) {
	if !failed {
		a.succTotal++
	}
	if !a.lastSample.IsZero() && now.Sub(a.lastSample) < autoSampleInterval {
		return
	}
	a.lastSample = now
	a.addSample(now, float64(latency)/float64(time.Microsecond), failed)
}

func (a *auto) addSample(now time.Time, latencyUs float64, failed bool) {
	if !a.ignoreUntil.IsZero() {
		if a.ignoreUntil.After(now) {
			return // waiting for the requests admitted before the cut to end
		}
		a.minLatencyUs = -1
		a.ignoreUntil = time.Time{}
		a.remeasureAt = a.nextRemeasure(now)
		a.resetWindow(now)
	}
	if a.start.IsZero() {
		a.start = now
	}
	if failed {
		a.failed++
		a.failedUs += latencyUs
	} else {
		a.succ++
		a.succUs += latencyUs
	}
	n := a.succ + a.failed
	if n < autoMinSamples {
		if now.Sub(a.start) >= autoWindow {
			a.resetWindow(now) // too few samples: drop the window
		}
		return
	}
	if now.Sub(a.start) < autoWindow && n < autoMaxSamples {
		return
	}
	if a.succ > 0 {
		a.update(now)
	} else {
		a.adjust(a.maxConcurrency / 2)
	}
	a.resetWindow(now)
}

func (a *auto) resetWindow(now time.Time) {
	a.start = now
	a.succ, a.failed, a.succUs, a.failedUs, a.succTotal = 0, 0, 0, 0, 0
}

func (a *auto) update(now time.Time) {
	avgUs := math.Ceil((a.failedUs*autoFailPunish + a.succUs) / float64(a.succ))
	a.lastAvgUs = avgUs
	qps := 1e6 * float64(a.succTotal) / float64(now.Sub(a.start)/time.Microsecond)
	if a.minLatencyUs <= 0 {
		a.minLatencyUs = avgUs
	} else if avgUs < a.minLatencyUs {
		a.minLatencyUs = avgUs*autoEMAAlpha + a.minLatencyUs*(1-autoEMAAlpha)
	}
	// brpc lets the peak fall by 1 % of the gap a window, so that a lull
	// in traffic does not shrink the limit. But a window whose latency is
	// above what the explore ratio explains was saturated: the upstream
	// queued what it was given, so its qps is what the upstream can serve
	// now, not a lull. From the second such window in a row (one stall of
	// the gateway's own CPU looks the same and should not count), they pull
	// the peak down by half the gap, so a capacity halved is learned in a
	// few windows. The peak never falls below a saturated window's qps. As
	// in BBR's bandwidth estimate, an old peak is forgotten in bounded time
	// once the path shows it no longer holds.
	if a.minLatencyUs > 0 && avgUs > a.minLatencyUs*(1+a.exploreRatio+autoSaturatedMargin) {
		a.saturatedRun++
	} else {
		a.saturatedRun = 0
	}
	switch {
	case qps >= a.emaMaxQPS:
		a.emaMaxQPS = qps
	case a.saturatedRun >= autoSaturatedRun && !a.seed:
		a.emaMaxQPS = qps*autoSaturatedDecay + a.emaMaxQPS*(1-autoSaturatedDecay)
	default:
		f := autoEMAAlpha / 10
		a.emaMaxQPS = qps*f + a.emaMaxQPS*(1-f)
	}
	var next float64
	switch {
	case !a.remeasureAt.After(now):
		a.ignoreUntil = now.Add(time.Duration(2 * avgUs * float64(time.Microsecond)))
		next = math.Ceil(a.emaMaxQPS * a.minLatencyUs / 1e6 * autoRemeasureReduce)
	case a.seed:
		next = a.emaMaxQPS * ((2+seedAlpha)*a.minLatencyUs - avgUs) / 1e6
	default:
		if avgUs <= a.minLatencyUs*(1+autoMinExplore*autoLatencyFactor) || qps <= a.emaMaxQPS/(1+autoMinExplore) {
			a.exploreRatio = math.Min(autoMaxExplore, a.exploreRatio+autoExploreStep)
		} else {
			a.exploreRatio = math.Max(autoMinExplore, a.exploreRatio-autoExploreStep)
		}
		next = a.minLatencyUs * a.emaMaxQPS / 1e6 * (1 + a.exploreRatio)
	}
	a.adjust(int(next))
}

// adjust sets the limit within the configured bounds (brpc floors it at its
// worker count).
func (a *auto) adjust(next int) {
	a.maxConcurrency = clamp(float64(next), a.cfg.MinLimit, a.cfg.MaxLimit)
}
