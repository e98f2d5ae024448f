package httppush

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/opskit/opskit/collector/falconfmt"
	"github.com/opskit/opskit/collector/sink"
	"github.com/opskit/opskit/internal/metric"
	"github.com/opskit/opskit/transfer/intake"
)

var defaults = falconfmt.Defaults{Endpoint: "host-1", Step: 60}

func TestDecodeFillsEndpointAndStep(t *testing.T) {
	body := `[
		{"metric":"app.qps","value":12.5,"timestamp":1700000030,"tags":"api=login"},
		{"endpoint":"other","metric":"app.qps","value":"3","step":120,"timestamp":1700000030,"counterType":"COUNTER"},
		{"metric":"","value":1},
		42,
		{"metric":"app.x","value":"abc"}
	]`
	res, err := Decode(strings.NewReader(body), 1700000100, defaults, intake.DefaultLimits())
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Points) != 2 || res.Items != 5 {
		t.Fatalf("points %d items %d: %+v", len(res.Points), res.Items, res)
	}
	p := res.Points[0]
	if p.Labels.Get(metric.EndpointLabel) != "host-1" || p.Step != 60 || p.Labels.Get("api") != "login" || p.Time != 1699999980 { // aligned to the step, as transfer does
		t.Errorf("defaulted item: %+v", p)
	}
	p = res.Points[1]
	if p.Labels.Get(metric.EndpointLabel) != "other" || p.Step != 120 || p.Type != metric.Counter {
		t.Errorf("explicit item: %+v", p)
	}
	want := map[int]string{2: intake.ReasonEmptyMetric, 3: intake.ReasonBadJSON, 4: intake.ReasonBadValue}
	for _, rj := range res.Rejected {
		if want[rj.Index] != rj.Reason {
			t.Errorf("item %d rejected as %s (%s), want %q", rj.Index, rj.Reason, rj.Detail, want[rj.Index])
		}
		delete(want, rj.Index)
	}
	if len(want) > 0 {
		t.Errorf("not rejected: %v", want)
	}
	if _, err := Decode(strings.NewReader(`{"metric":"x"}`), 1, defaults, intake.DefaultLimits()); err == nil {
		t.Error("an object body was accepted")
	}
}

func TestHandler(t *testing.T) {
	var stored []metric.Point
	var fail bool
	s := sink.Func(func(ctx context.Context, pts []metric.Point) error {
		if fail {
			return errors.New("disk full")
		}
		stored = append(stored, pts...)
		return nil
	})
	h := NewHandler(s, nil, defaults, intake.Limits{MaxBodyBytes: 1000})
	tests := []struct {
		name     string
		method   string
		body     string
		fail     bool
		code     int
		accepted int
		stored   int
	}{
		{"good and bad", "POST", `[{"metric":"a","value":1},{"metric":"b"}]`, false, 200, 1, 1},
		{"all bad", "POST", `[{"metric":"b"}]`, false, 400, 0, 0},
		{"not an array", "POST", `{"metric":"a","value":1}`, false, 400, 0, 0},
		{"spool fails", "POST", `[{"metric":"a","value":1}]`, true, 503, 0, 0},
		{"too large", "POST", "[" + strings.Repeat(`{"metric":"a","value":1},`, 100) + "]", false, 413, 0, 0},
		{"wrong method", "GET", "", false, 405, 0, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			stored, fail = nil, tt.fail
			rr := httptest.NewRecorder()
			h.ServeHTTP(rr, httptest.NewRequest(tt.method, "/v1/push", strings.NewReader(tt.body)))
			var resp intake.Response
			if err := json.Unmarshal(rr.Body.Bytes(), &resp); err != nil {
				t.Fatalf("answer %q: %v", rr.Body.String(), err)
			}
			if rr.Code != tt.code || resp.Accepted != tt.accepted || len(stored) != tt.stored || resp.Rejected == nil {
				t.Errorf("code %d accepted %d stored %d, answer %s", rr.Code, resp.Accepted, len(stored), rr.Body.String())
			}
		})
	}
	_ = http.StatusOK
}
