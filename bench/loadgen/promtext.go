package main

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"math"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// metricSelector picks samples out of a Prometheus text exposition: a metric
// name and label pairs that must all be present, written as in PromQL,
// e.g. `opskit_transfer_points_received_total{proto="graphite"}`.
type metricSelector struct {
	Name   string
	Labels map[string]string
}

// parseSelector reads `name` or `name{k="v",...}`.
func parseSelector(s string) (metricSelector, error) {
	name, labels, err := splitSeries(strings.TrimSpace(s))
	if err != nil {
		return metricSelector{}, fmt.Errorf("selector %q: %w", s, err)
	}
	if name == "" {
		return metricSelector{}, fmt.Errorf("selector %q: no metric name", s)
	}
	return metricSelector{Name: name, Labels: labels}, nil
}

func (m metricSelector) String() string {
	if len(m.Labels) == 0 {
		return m.Name
	}
	pairs := make([]string, 0, len(m.Labels))
	for k, v := range m.Labels {
		pairs = append(pairs, k+"="+strconv.Quote(v))
	}
	return m.Name + "{" + strings.Join(pairs, ",") + "}"
}

func (m metricSelector) matches(name string, labels map[string]string) bool {
	if name != m.Name {
		return false
	}
	for k, v := range m.Labels {
		if got, ok := labels[k]; !ok || got != v {
			return false
		}
	}
	return true
}

// splitSeries splits `name{k="v",...}` into the name and its labels.
func splitSeries(s string) (string, map[string]string, error) {
	open := strings.IndexByte(s, '{')
	if open < 0 {
		return s, nil, nil
	}
	if !strings.HasSuffix(s, "}") {
		return "", nil, fmt.Errorf("labels not closed")
	}
	labels, err := parseLabels(s[open+1 : len(s)-1])
	if err != nil {
		return "", nil, err
	}
	return s[:open], labels, nil
}

// parseLabels reads `k="v",k2="v2"` with Go-style escapes in the values, as
// the exposition format writes them.
func parseLabels(s string) (map[string]string, error) {
	labels := map[string]string{}
	for {
		s = strings.TrimLeft(s, " ,")
		if s == "" {
			return labels, nil
		}
		eq := strings.IndexByte(s, '=')
		if eq <= 0 {
			return nil, fmt.Errorf("label without '=' in %q", truncate(s))
		}
		key := strings.TrimSpace(s[:eq])
		rest := strings.TrimLeft(s[eq+1:], " ")
		quoted, err := strconv.QuotedPrefix(rest)
		if err != nil {
			return nil, fmt.Errorf("label %q: value not quoted: %w", key, err)
		}
		value, err := strconv.Unquote(quoted)
		if err != nil {
			return nil, fmt.Errorf("label %q: %w", key, err)
		}
		labels[key] = value
		s = rest[len(quoted):]
	}
}

// sumSamples adds up the values of every sample sel matches in a Prometheus
// text exposition. It returns found=false when none matched, so a metric
// that is not registered yet is not mistaken for zero. Comment and blank
// lines are skipped; a sample line that cannot be read is an error.
func sumSamples(r io.Reader, sel metricSelector) (sum float64, found bool, err error) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	for sc.Scan() {
		line := bytes.TrimSpace(sc.Bytes())
		if len(line) == 0 || line[0] == '#' {
			continue
		}
		// Cheap reject before parsing labels: most lines are other metrics.
		if !bytes.HasPrefix(line, []byte(sel.Name)) {
			continue
		}
		series, value, err := splitSample(string(line))
		if err != nil {
			return 0, false, err
		}
		name, labels, err := splitSeries(series)
		if err != nil {
			return 0, false, fmt.Errorf("sample %q: %w", truncate(string(line)), err)
		}
		if !sel.matches(name, labels) {
			continue
		}
		v, err := strconv.ParseFloat(value, 64)
		if err != nil || math.IsNaN(v) {
			return 0, false, fmt.Errorf("sample %q: bad value %q", truncate(string(line)), truncate(value))
		}
		sum += v
		found = true
	}
	if err := sc.Err(); err != nil {
		return 0, false, fmt.Errorf("reading exposition: %w", err)
	}
	return sum, found, nil
}

// splitSample splits a sample line into its series (name and labels) and
// its value, dropping an optional timestamp.
func splitSample(line string) (string, string, error) {
	end := strings.IndexAny(line, "{ \t")
	if end < 0 {
		return "", "", fmt.Errorf("sample %q has no value", truncate(line))
	}
	if line[end] == '{' {
		closeAt, err := labelsEnd(line, end)
		if err != nil {
			return "", "", err
		}
		end = closeAt + 1
	}
	fields := strings.Fields(line[end:])
	if len(fields) == 0 {
		return "", "", fmt.Errorf("sample %q has no value", truncate(line))
	}
	return line[:end], fields[0], nil
}

// labelsEnd finds the '}' closing the label set opened at open, skipping
// quoted values (which may hold braces, spaces and escaped quotes).
func labelsEnd(line string, open int) (int, error) {
	inQuote := false
	for i := open + 1; i < len(line); i++ {
		switch c := line[i]; {
		case inQuote && c == '\\':
			i++
		case c == '"':
			inQuote = !inQuote
		case !inQuote && c == '}':
			return i, nil
		}
	}
	return 0, fmt.Errorf("sample %q: labels not closed", truncate(line))
}

// scrape fetches url and sums what sel matches.
func scrape(ctx context.Context, client *http.Client, url string, sel metricSelector) (float64, bool, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return 0, false, fmt.Errorf("scraping %s: %w", url, err)
	}
	resp, err := client.Do(req)
	if err != nil {
		return 0, false, fmt.Errorf("scraping %s: %w", url, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return 0, false, fmt.Errorf("scraping %s: status %s", url, resp.Status)
	}
	sum, found, err := sumSamples(resp.Body, sel)
	if err != nil {
		return 0, false, fmt.Errorf("scraping %s: %w", url, err)
	}
	return sum, found, nil
}

// waitMetric polls url until the samples sel matches add up to at least
// baseline + want.
func waitMetric(ctx context.Context, client *http.Client, url string, sel metricSelector, baseline, want float64, poll time.Duration) error {
	last := 0.0
	for {
		sum, _, err := scrape(ctx, client, url, sel)
		if err == nil && sum-baseline >= want {
			return nil
		}
		if err == nil {
			last = sum - baseline
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("waiting for %s to reach %.0f (at %.0f): %w", sel, want, last, ctx.Err())
		case <-time.After(poll):
		}
	}
}
