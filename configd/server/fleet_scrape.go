package server

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"math"
	"net/http"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/opskit/opskit/configd/api"
)

// The hop series every pipeline daemon exports per downstream (to=).
const (
	hopItemsMetric   = "opskit_hop_items_total"
	hopLatencyMetric = "opskit_hop_latency_seconds_total"
)

// rateDef is one rate of the console: the per-second increase of the sum
// of some counters.
type rateDef struct {
	name    string
	metrics []string
}

// kindRateDefs are each kind's main rates, from its own counters.
func kindRateDefs(kind string) []rateDef {
	switch kind {
	case "collector":
		return []rateDef{
			{"points/s", []string{"opskit_collector_intake_points_received_total", "opskit_collector_host_points_total"}},
			{"rejected/s", []string{"opskit_collector_intake_points_rejected_total", "opskit_collector_relay_rejected_points_total"}},
			{"sent/s", []string{"opskit_collector_relay_sent_points_total"}},
			{"lines/s", []string{"opskit_collector_tail_lines_total"}},
		}
	case "transfer":
		return []rateDef{
			{"points/s", []string{"opskit_transfer_points_received_total", "opskit_transfer_forward_received_points_total"}},
			{"rejected/s", []string{"opskit_transfer_points_rejected_total"}},
			{"forwarded/s", []string{"opskit_transfer_forward_points_sent_total"}},
			{"queries/s", []string{"opskit_transfer_query_requests_total"}},
		}
	case "judge":
		return []rateDef{
			{"points/s", []string{"opskit_judge_points_total"}},
			{"alerts/s", []string{"opskit_judge_transitions_total"}},
		}
	case "alarm":
		return []rateDef{
			{"alerts/s", []string{"opskit_alarm_alerts_received_total"}},
			{"notifications/s", []string{"opskit_alarm_notifications_sent_total"}},
		}
	case "ratelimit":
		return []rateDef{{"requests/s", []string{"opskit_ratelimit_requests_total"}}}
	case "abtest":
		return []rateDef{
			{"assignments/s", []string{"opskit_abtest_assignments_total"}},
			{"events/s", []string{"opskit_abtest_events_accepted_total"}},
		}
	case "configd":
		return []rateDef{{"publishes/s", []string{"opskit_configd_publishes_total"}}}
	case "filefly":
		return []rateDef{{"bytes/s", []string{"opskit_filefly_server_served_bytes_total"}}}
	case "filefly-agent":
		return []rateDef{
			{"in/s", []string{"opskit_filefly_agent_fetched_bytes_total"}},
			{"relayed/s", []string{"opskit_filefly_agent_served_bytes_total"}},
		}
	}
	return nil
}

// sample is what one scrape of /metrics keeps: the sum of each counter
// the rates need, the hop counters by target, and two gauges.
type sample struct {
	at         time.Time
	ok         bool // /metrics was read
	sums       map[string]float64
	hopItems   map[string]float64
	hopLatency map[string]float64
	heap       float64
	goroutines float64
}

// wantedMetrics are the counter names a sample sums, for every kind.
func wantedMetrics() map[string]bool {
	out := map[string]bool{}
	for _, k := range []string{"collector", "transfer", "judge", "alarm", "ratelimit", "abtest", "configd", "filefly", "filefly-agent"} {
		for _, d := range kindRateDefs(k) {
			for _, m := range d.metrics {
				out[m] = true
			}
		}
	}
	return out
}

// parseSample reads a /metrics page into a sample.
func parseSample(data []byte, at time.Time, wanted map[string]bool) *sample {
	s := &sample{at: at, ok: true, sums: map[string]float64{}, hopItems: map[string]float64{}, hopLatency: map[string]float64{}}
	parseExposition(data, func(name string, labels []labelPair, v float64) {
		v = finite(v)
		switch {
		case name == "go_memstats_heap_inuse_bytes":
			s.heap = v
		case name == "go_goroutines":
			s.goroutines = v
		case name == hopItemsMetric:
			s.hopItems[labelValue(labels, "to")] += v
		case name == hopLatencyMetric:
			s.hopLatency[labelValue(labels, "to")] += v
		case wanted[name]:
			s.sums[name] += v
		}
	})
	return s
}

// increase is a counter's growth from prev to cur; a counter that went
// down was reset (the process restarted) and counts from zero.
func increase(prev, cur float64) float64 {
	if cur < prev {
		return cur
	}
	return cur - prev
}

// kindRates computes a kind's rates between two samples; nil without a
// previous sample.
func kindRates(kind string, prev, cur *sample) map[string]float64 {
	if prev == nil || !prev.ok || !cur.ok {
		return nil
	}
	secs := cur.at.Sub(prev.at).Seconds()
	if secs <= 0 {
		return nil
	}
	out := map[string]float64{}
	for _, d := range kindRateDefs(kind) {
		var delta float64
		seen := false
		for _, m := range d.metrics {
			c, ok := cur.sums[m]
			if !ok {
				continue
			}
			seen = true
			delta += increase(prev.sums[m], c)
		}
		if seen {
			out[d.name] = delta / secs
		}
	}
	var sent float64
	for to, c := range cur.hopItems {
		sent += increase(prev.hopItems[to], c)
	}
	if len(cur.hopItems) > 0 {
		out["out/s"] = sent / secs
	}
	if len(out) == 0 {
		return nil
	}
	return out
}

// hopStats computes each downstream's items/s and mean latency between
// two samples; without a previous sample it gives the totals only.
func hopStats(prev, cur *sample) []api.HopStats {
	if !cur.ok || len(cur.hopItems) == 0 {
		return nil
	}
	var secs float64
	if prev != nil && prev.ok {
		secs = cur.at.Sub(prev.at).Seconds()
	}
	out := make([]api.HopStats, 0, len(cur.hopItems))
	for to, items := range cur.hopItems {
		h := api.HopStats{To: to, ItemsTotal: items}
		if secs > 0 {
			dItems := increase(prev.hopItems[to], items)
			dLat := increase(prev.hopLatency[to], cur.hopLatency[to])
			h.ItemsPerSecond = dItems / secs
			if dItems > 0 {
				h.LatencySeconds = dLat / dItems
			}
		}
		out = append(out, h)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].To < out[j].To })
	return out
}

// labelPair is one label of a sample line.
type labelPair struct{ name, value string }

func labelValue(labels []labelPair, name string) string {
	for _, l := range labels {
		if l.name == name {
			return l.value
		}
	}
	return ""
}

// parseExposition reads the Prometheus text exposition format and calls fn
// for every well-formed sample line. Comments, blank lines and malformed
// lines are skipped: one bad line costs only itself.
func parseExposition(data []byte, fn func(name string, labels []labelPair, value float64)) {
	for len(data) > 0 {
		var line []byte
		if i := bytes.IndexByte(data, '\n'); i >= 0 {
			line, data = data[:i], data[i+1:]
		} else {
			line, data = data, nil
		}
		line = bytes.TrimSpace(line)
		if len(line) == 0 || line[0] == '#' {
			continue
		}
		name, labels, value, ok := parseSampleLine(string(line))
		if ok {
			fn(name, labels, value)
		}
	}
}

// parseSampleLine parses `name{a="x",b="y"} value [timestamp]`.
func parseSampleLine(line string) (name string, labels []labelPair, value float64, ok bool) {
	i := 0
	for i < len(line) && isNameChar(line[i], i == 0) {
		i++
	}
	if i == 0 {
		return "", nil, 0, false
	}
	name, rest := line[:i], line[i:]
	if strings.HasPrefix(rest, "{") {
		rest = rest[1:]
		for {
			rest = strings.TrimLeft(rest, " \t,")
			if strings.HasPrefix(rest, "}") {
				rest = rest[1:]
				break
			}
			j := 0
			for j < len(rest) && isNameChar(rest[j], j == 0) {
				j++
			}
			if j == 0 || j >= len(rest) || rest[j] != '=' || j+1 >= len(rest) || rest[j+1] != '"' {
				return "", nil, 0, false
			}
			lname := rest[:j]
			val, n, vok := unquoteLabel(rest[j+2:])
			if !vok {
				return "", nil, 0, false
			}
			labels = append(labels, labelPair{lname, val})
			rest = rest[j+2+n:]
		}
	}
	fields := strings.Fields(rest)
	if len(fields) < 1 || len(fields) > 2 {
		return "", nil, 0, false
	}
	v, err := strconv.ParseFloat(fields[0], 64)
	if err != nil {
		return "", nil, 0, false
	}
	return name, labels, v, true
}

func isNameChar(c byte, first bool) bool {
	return c == '_' || c == ':' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || (!first && c >= '0' && c <= '9')
}

// unquoteLabel reads a label value after its opening quote, returning the
// value and how many bytes it took including the closing quote.
func unquoteLabel(s string) (string, int, bool) {
	var sb strings.Builder
	for i := 0; i < len(s); i++ {
		switch c := s[i]; c {
		case '"':
			return sb.String(), i + 1, true
		case '\\':
			if i+1 >= len(s) {
				return "", 0, false
			}
			i++
			switch s[i] {
			case 'n':
				sb.WriteByte('\n')
			case '\\', '"':
				sb.WriteByte(s[i])
			default:
				sb.WriteByte('\\')
				sb.WriteByte(s[i])
			}
		default:
			sb.WriteByte(c)
		}
	}
	return "", 0, false
}

// fleetScraper reads every up daemon's health and metrics.
type fleetScraper struct {
	reg    *fleetRegistry
	client *http.Client
	wanted map[string]bool
	now    func() time.Time
	// parallel bounds the scrapes in flight.
	parallel int

	onScrape func(ok bool)
}

// scrapeAll scrapes every up daemon concurrently, each within the scrape
// timeout, and records the results.
func (s *fleetScraper) scrapeAll(ctx context.Context) {
	targets := s.reg.scrapeTargets()
	sem := make(chan struct{}, max(1, s.parallel))
	var wg sync.WaitGroup
	for id, addr := range targets {
		pid, ok := s.reg.pidOf(id)
		if !ok {
			continue
		}
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			cur, health, detail := s.scrapeOne(ctx, addr)
			if s.onScrape != nil {
				s.onScrape(health != api.HealthUnreachable && cur.ok)
			}
			s.reg.recordScrape(id, pid, cur, health, detail)
		}()
	}
	wg.Wait()
}

func (s *fleetScraper) scrapeOne(ctx context.Context, addr string) (*sample, string, string) {
	ctx, cancel := context.WithTimeout(ctx, s.reg.cfg.ScrapeTimeout)
	defer cancel()
	base := "http://" + addr
	at := s.now()
	failed := &sample{at: at}
	if _, _, err := s.get(ctx, base+"/healthz"); err != nil {
		return failed, api.HealthUnreachable, err.Error()
	}
	health, detail := api.HealthOK, ""
	status, body, err := s.get(ctx, base+"/readyz")
	switch {
	case err != nil:
		health, detail = api.HealthUnreachable, "readyz: "+err.Error()
	case status != http.StatusOK:
		health, detail = api.HealthNotReady, strings.TrimSpace(string(body))
	}
	status, body, err = s.get(ctx, base+"/metrics")
	if err != nil || status != http.StatusOK {
		if err == nil {
			err = fmt.Errorf("status %d", status)
		}
		if detail == "" {
			detail = "metrics: " + err.Error()
		}
		return failed, health, detail
	}
	return parseSample(body, at, s.wanted), health, detail
}

// maxScrapeBytes bounds one /metrics page.
const maxScrapeBytes = 16 << 20

func (s *fleetScraper) get(ctx context.Context, u string) (int, []byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return 0, nil, err
	}
	resp, err := s.client.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxScrapeBytes))
	if err != nil {
		return 0, nil, err
	}
	if resp.StatusCode/100 == 5 && resp.StatusCode != http.StatusServiceUnavailable {
		return resp.StatusCode, body, fmt.Errorf("%s: status %d", u, resp.StatusCode)
	}
	return resp.StatusCode, body, nil
}

// finite replaces NaN and infinities (which JSON cannot carry) with 0.
func finite(v float64) float64 {
	if math.IsNaN(v) || math.IsInf(v, 0) {
		return 0
	}
	return v
}
