// Package hop counts what a pipeline daemon hands to each next hop: items
// the next hop acknowledged, the summed latency of those items, and failed
// sends. The series, one set per downstream address, are
//
//	opskit_hop_items_total{to="ADDR"}          items acknowledged by ADDR
//	opskit_hop_latency_seconds_total{to="ADDR"} sum over those items of the
//	                                           time from the item's timestamp
//	                                           or intake to the acknowledgement
//	opskit_hop_errors_total{to="ADDR"}         sends to ADDR that failed
//
// so that the mean latency over a window is Δlatency/Δitems. configd reads
// them to draw the fleet's topology. ADDR is the downstream as configured:
// host:port (a URL's host:port), or kafka://FIRSTBROKER.
//
// Counting costs one Add per acknowledged batch, not one per item.
//
// What each daemon counts, and from when its latency runs:
//
//	collector -> transfer   points; from spooling (intake) to transfer's answer
//	collector -> Kafka      log lines; from the produce call to Kafka's ack
//	transfer  -> peer, judge, Kafka, ClickHouse
//	                        points; from spooling (intake) to the destination's answer
//	judge     -> alarm      alerts; from the send decision (the transition's
//	                        kick, or the resend tick) to the receiver's answer
//	alarm     -> webhook    alerts; from the notification's creation (the
//	                        group's flush) to the receiver's answer
//	ratelimit -> upstream   requests; the upstream's response time (to its
//	                        response header)
//
// Intake, not the items' own timestamps, is the start for points: an app
// may push points stamped long ago, which would say nothing about the
// pipeline. Points spooled by an earlier run count from the daemon's start.
package hop

import (
	"fmt"
	"net"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/VictoriaMetrics/metrics"
)

// Series names, shared with the readers of the topology.
const (
	ItemsSeries   = "opskit_hop_items_total"
	LatencySeries = "opskit_hop_latency_seconds_total"
	ErrorsSeries  = "opskit_hop_errors_total"
)

// Hop is the counters of one downstream. A nil *Hop counts nothing, so
// code with optional instrumentation needs no checks.
type Hop struct {
	to      string
	items   *metrics.Counter
	latency *metrics.FloatCounter
	errors  *metrics.Counter
}

// New returns the counters of the downstream to, registered in set (or the
// existing ones: two senders to one address share them).
func New(set *metrics.Set, to string) *Hop {
	lbl := fmt.Sprintf(`{to=%q}`, to)
	return &Hop{
		to:      to,
		items:   set.GetOrCreateCounter(ItemsSeries + lbl),
		latency: set.GetOrCreateFloatCounter(LatencySeries + lbl),
		errors:  set.GetOrCreateCounter(ErrorsSeries + lbl),
	}
}

// To is the downstream address the counters are labelled with.
func (h *Hop) To() string {
	if h == nil {
		return ""
	}
	return h.to
}

// Acked counts n items acknowledged by the downstream whose latencies sum
// to latencySum.
func (h *Hop) Acked(n int, latencySum time.Duration) {
	if h == nil || n <= 0 {
		return
	}
	h.items.Add(n)
	if latencySum > 0 {
		h.latency.Add(latencySum.Seconds())
	}
}

// Failed counts one send (a request, a batch) the downstream did not take.
func (h *Hop) Failed() {
	if h == nil {
		return
	}
	h.errors.Inc()
}

// Set hands out the Hop of each downstream address, creating it on first
// use: for senders whose downstreams are known only per request (webhook
// receivers, upstream servers). A nil *Set hands out nil Hops.
type Set struct {
	metrics *metrics.Set
	hops    sync.Map // address -> *Hop
}

// NewSet returns a Set registering its counters in set.
func NewSet(set *metrics.Set) *Set { return &Set{metrics: set} }

// To returns the Hop of the downstream addr (already normalised, see Addr).
func (s *Set) To(addr string) *Hop {
	if s == nil {
		return nil
	}
	if h, ok := s.hops.Load(addr); ok {
		return h.(*Hop)
	}
	h, _ := s.hops.LoadOrStore(addr, New(s.metrics, addr))
	return h.(*Hop)
}

// Addr returns the address label of a configured downstream: host:port for
// "host:port" and for URLs (the scheme's default port when none is given),
// the text itself when it is neither.
func Addr(target string) string {
	t := strings.TrimSpace(target)
	if !strings.Contains(t, "://") {
		if _, _, err := net.SplitHostPort(t); err == nil {
			return t
		}
		t = "http://" + t
	}
	u, err := url.Parse(t)
	if err != nil || u.Host == "" {
		return strings.TrimSpace(target)
	}
	if u.Port() != "" {
		return u.Host
	}
	port := "80"
	if u.Scheme == "https" {
		port = "443"
	}
	return net.JoinHostPort(u.Hostname(), port)
}

// KafkaAddr returns the address label of a Kafka downstream:
// kafka://FIRSTBROKER.
func KafkaAddr(brokers []string) string {
	first := ""
	for _, b := range brokers {
		if b = strings.TrimSpace(b); b != "" {
			first = b
			break
		}
	}
	return "kafka://" + first
}
