// Package history reads past values of a series from transfer's
// Prometheus-compatible query API: the points before a series' first one
// (to refill its window at start) and the average of a window one period
// earlier (for c_avg and its forms).
package history

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/opskit/opskit/internal/metric"
)

// Client queries one transfer.
type Client struct {
	base string
	http *http.Client
}

// New returns a client for transfer at base (http://host:port).
func New(base string, timeout time.Duration) *Client {
	if !strings.Contains(base, "://") {
		base = "http://" + base
	}
	return &Client{base: strings.TrimSuffix(base, "/"), http: &http.Client{Timeout: timeout}}
}

// Selector is the PromQL selector of exactly this series; metric names with
// dots (open-falcon's) are matched through __name__.
func Selector(ls metric.Labels) string {
	var b strings.Builder
	b.WriteByte('{')
	for i, l := range ls {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(l.Name)
		b.WriteByte('=')
		b.WriteString(strconv.Quote(l.Value))
	}
	b.WriteByte('}')
	return b.String()
}

type apiAnswer struct {
	Status string `json:"status"`
	Error  string `json:"error"`
	Data   struct {
		ResultType string `json:"resultType"`
		Result     []struct {
			Value  [2]any   `json:"value"`
			Values [][2]any `json:"values"`
		} `json:"result"`
	} `json:"data"`
}

func (c *Client) get(ctx context.Context, path string, q url.Values) (*apiAnswer, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.base+path+"?"+q.Encode(), nil)
	if err != nil {
		return nil, err
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return nil, fmt.Errorf("query transfer: %w", err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 8<<20))
	if err != nil {
		return nil, fmt.Errorf("query transfer: %w", err)
	}
	a, err := decodeAnswer(body)
	if err != nil {
		return nil, fmt.Errorf("query transfer: HTTP %d: %w", resp.StatusCode, err)
	}
	return a, nil
}

// decodeAnswer reads a Prometheus API answer.
func decodeAnswer(body []byte) (*apiAnswer, error) {
	var a apiAnswer
	if err := json.Unmarshal(body, &a); err != nil {
		return nil, fmt.Errorf("answer does not decode: %w", err)
	}
	if a.Status != "success" {
		return nil, fmt.Errorf("query failed: %s", a.Error)
	}
	return &a, nil
}

func sampleValue(v any) (float64, bool) {
	s, ok := v.(string)
	if !ok {
		return 0, false
	}
	f, err := strconv.ParseFloat(s, 64)
	return f, err == nil
}

func sampleTime(v any) float64 {
	f, _ := v.(float64)
	return f
}

// Window returns up to n values of the series stored before the Unix time
// before, newest first, one per step.
func (c *Client) Window(ctx context.Context, ls metric.Labels, before int64, step int32, n int) ([]float64, error) {
	if n <= 0 || step <= 0 {
		return nil, nil
	}
	end := before - 1
	start := end - int64(n)*int64(step)
	q := url.Values{"query": {Selector(ls)}, "start": {strconv.FormatInt(start, 10)},
		"end": {strconv.FormatInt(end, 10)}, "step": {strconv.Itoa(int(step))}}
	a, err := c.get(ctx, "/api/v1/query_range", q)
	if err != nil {
		return nil, err
	}
	type sample struct {
		t float64
		v float64
	}
	var samples []sample
	for _, r := range a.Data.Result {
		for _, pair := range r.Values {
			if v, ok := sampleValue(pair[1]); ok {
				samples = append(samples, sample{sampleTime(pair[0]), v})
			}
		}
	}
	sort.Slice(samples, func(i, j int) bool { return samples[i].t > samples[j].t })
	out := make([]float64, 0, min(n, len(samples)))
	for _, s := range samples {
		if len(out) == n {
			break
		}
		out = append(out, s.v)
	}
	return out, nil
}

// Average returns the series' average over [from, to] (Unix seconds); ok
// is false when transfer holds no point there.
func (c *Client) Average(ctx context.Context, ls metric.Labels, from, to int64) (float64, bool, error) {
	rng := max(to-from, 1)
	q := url.Values{"query": {fmt.Sprintf("avg_over_time(%s[%ds])", Selector(ls), rng)}, "time": {strconv.FormatInt(to, 10)}}
	a, err := c.get(ctx, "/api/v1/query", q)
	if err != nil {
		return 0, false, err
	}
	if len(a.Data.Result) == 0 {
		return 0, false, nil
	}
	v, ok := sampleValue(a.Data.Result[0].Value[1])
	return v, ok, nil
}
