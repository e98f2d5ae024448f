package rollout

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
)

// PromQLGate asks a Prometheus-compatible query API (transfer's, or
// Prometheus's) whether a gate's query holds.
type PromQLGate struct {
	// Base is the API's base URL, e.g. http://127.0.0.1:7120.
	Base string
	HTTP *http.Client
}

type queryAnswer struct {
	Status string `json:"status"`
	Error  string `json:"error"`
	Data   struct {
		ResultType string          `json:"resultType"`
		Result     json.RawMessage `json:"result"`
	} `json:"data"`
}

// Holds runs GET {Base}/api/v1/query?query=Q: a non-empty vector holds, a
// scalar holds unless it is 0 (or NaN), an empty vector does not.
func (g *PromQLGate) Holds(ctx context.Context, query string) (bool, string, error) {
	c := g.HTTP
	if c == nil {
		c = http.DefaultClient
	}
	base := strings.TrimRight(g.Base, "/")
	if !strings.Contains(base, "://") {
		base = "http://" + base
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, base+"/api/v1/query?query="+url.QueryEscape(query), nil)
	if err != nil {
		return false, "", err
	}
	resp, err := c.Do(req)
	if err != nil {
		return false, "", err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 4<<20))
	if err != nil {
		return false, "", err
	}
	return ParseQueryAnswer(body)
}

// ParseQueryAnswer judges a Prometheus /api/v1/query answer as a gate.
func ParseQueryAnswer(body []byte) (bool, string, error) {
	var a queryAnswer
	if err := json.Unmarshal(body, &a); err != nil {
		return false, "", fmt.Errorf("query answer: %w", err)
	}
	if a.Status != "success" {
		return false, "", fmt.Errorf("query failed: %s", a.Error)
	}
	switch a.Data.ResultType {
	case "vector", "matrix":
		var series []json.RawMessage
		if err := json.Unmarshal(a.Data.Result, &series); err != nil {
			return false, "", fmt.Errorf("query answer: %w", err)
		}
		if len(series) == 0 {
			return false, "empty result", nil
		}
		return true, fmt.Sprintf("%d series", len(series)), nil
	case "scalar":
		var v [2]any
		if err := json.Unmarshal(a.Data.Result, &v); err != nil {
			return false, "", fmt.Errorf("query answer: %w", err)
		}
		s, _ := v[1].(string)
		return s != "0" && s != "NaN" && s != "", "scalar " + s, nil
	default:
		return false, "", fmt.Errorf("query answer: result type %q is not a vector or scalar", a.Data.ResultType)
	}
}
