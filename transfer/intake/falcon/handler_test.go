package falcon

import (
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"

	"github.com/VictoriaMetrics/metrics"

	"github.com/opskit/opskit/internal/metric"
	"github.com/opskit/opskit/transfer/intake"
	"github.com/opskit/opskit/transfer/intake/intaketest"
)

func item(metricName string) string {
	return `{"endpoint":"web1","metric":"` + metricName + `","timestamp":1699999980,"step":60,"value":1,"counterType":"GAUGE","tags":"a=b"}`
}

func TestHandler(t *testing.T) {
	tests := []struct {
		name         string
		method       string
		body         string
		appendErr    error
		maxBody      int64
		wantCode     int
		wantAccepted int
		wantRejected []intake.Rejection
		wantStored   int
		wantError    string
	}{
		{name: "all good", body: `[` + item("a") + `,` + item("b") + `]`, wantCode: 200, wantAccepted: 2, wantStored: 2},
		{name: "empty array", body: `[]`, wantCode: 200},
		{
			name:         "some rejected is still 200",
			body:         `[` + item("a") + `,` + item("") + `,{"endpoint":"h","metric":"m","step":60,"value":"x"}]`,
			wantCode:     200,
			wantAccepted: 1,
			wantStored:   1,
			wantRejected: []intake.Rejection{{Index: 1, Reason: "empty_metric"}, {Index: 2, Reason: "bad_value"}},
		},
		{
			name:         "all rejected is 400",
			body:         `[` + item("") + `,7]`,
			wantCode:     400,
			wantRejected: []intake.Rejection{{Index: 0, Reason: "empty_metric"}, {Index: 1, Reason: "bad_json"}},
			wantError:    "every item was rejected",
		},
		{name: "not an array is 400", body: item("a"), wantCode: 400, wantError: "not a JSON array"},
		{name: "garbage is 400", body: "\x00\x01garbage", wantCode: 400, wantError: "not a JSON array"},
		{name: "over the body limit is 413", body: `[` + item("a") + `]`, maxBody: 20, wantCode: 413, wantError: "limit"},
		{
			name:         "append failure is 503 with the error",
			body:         `[` + item("a") + `]`,
			appendErr:    errors.New("disk full"),
			wantCode:     503,
			wantRejected: []intake.Rejection{},
			wantError:    "disk full",
		},
		{name: "GET is 405", method: http.MethodGet, wantCode: 405},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			app := intaketest.NewAppender()
			app.SetErr(tc.appendErr)
			set := metrics.NewSet()
			h := NewHandler(app, intake.NewRecorder(set, nil), intake.Limits{MaxBodyBytes: tc.maxBody})
			method := tc.method
			if method == "" {
				method = http.MethodPost
			}
			req := httptest.NewRequest(method, "/api/push", strings.NewReader(tc.body))
			rw := httptest.NewRecorder()
			h.ServeHTTP(rw, req)
			if rw.Code != tc.wantCode {
				t.Fatalf("status %d, want %d; body %s", rw.Code, tc.wantCode, rw.Body)
			}
			if ct := rw.Header().Get("Content-Type"); ct != "application/json" {
				t.Fatalf("content type %q", ct)
			}
			var resp intake.Response
			if err := json.Unmarshal(rw.Body.Bytes(), &resp); err != nil {
				t.Fatalf("answer is not JSON: %v: %s", err, rw.Body)
			}
			if resp.Accepted != tc.wantAccepted {
				t.Fatalf("accepted %d, want %d", resp.Accepted, tc.wantAccepted)
			}
			if resp.Rejected == nil {
				t.Fatal(`"rejected" must be an array, not null`)
			}
			if tc.wantRejected != nil {
				if len(resp.Rejected) != len(tc.wantRejected) {
					t.Fatalf("rejected %+v, want %+v", resp.Rejected, tc.wantRejected)
				}
				for i, want := range tc.wantRejected {
					got := resp.Rejected[i]
					if got.Index != want.Index || got.Reason != want.Reason || got.Detail == "" {
						t.Fatalf("rejected[%d] = %+v, want %+v with a detail", i, got, want)
					}
				}
			}
			if !strings.Contains(resp.Error, tc.wantError) {
				t.Fatalf("error %q, want it to contain %q", resp.Error, tc.wantError)
			}
			if got := len(app.Points()); got != tc.wantStored {
				t.Fatalf("stored %d points, want %d", got, tc.wantStored)
			}
			if got := intaketest.Counter(set, `opskit_transfer_requests_total{proto="falcon",code="`+strconv.Itoa(tc.wantCode)+`"}`); got != 1 {
				t.Fatalf("requests counter for %d = %v, want 1", tc.wantCode, got)
			}
		})
	}
}

func TestHandlerCounters(t *testing.T) {
	app := intaketest.NewAppender()
	set := metrics.NewSet()
	h := NewHandler(app, intake.NewRecorder(set, nil), intake.Limits{})
	body := `[` + item("a") + `,` + item("") + `,` + item("b") + `,{"endpoint":"h","metric":"m","step":0,"value":1}]`
	for range 3 {
		rw := httptest.NewRecorder()
		h.ServeHTTP(rw, httptest.NewRequest(http.MethodPost, "/api/push", strings.NewReader(body)))
		if rw.Code != 200 {
			t.Fatalf("status %d: %s", rw.Code, rw.Body)
		}
	}
	for name, want := range map[string]float64{
		`opskit_transfer_points_received_total{proto="falcon"}`:                       6,
		`opskit_transfer_points_rejected_total{proto="falcon",reason="empty_metric"}`: 3,
		`opskit_transfer_points_rejected_total{proto="falcon",reason="bad_step"}`:     3,
		`opskit_transfer_requests_total{proto="falcon",code="200"}`:                   3,
	} {
		if got := intaketest.Counter(set, name); got != want {
			t.Errorf("%s = %v, want %v", name, got, want)
		}
	}
	app.SetErr(errors.New("wal broken"))
	rw := httptest.NewRecorder()
	h.ServeHTTP(rw, httptest.NewRequest(http.MethodPost, "/api/push", strings.NewReader(body)))
	if rw.Code != 503 {
		t.Fatalf("status %d, want 503", rw.Code)
	}
	if got := intaketest.Counter(set, `opskit_transfer_append_errors_total{proto="falcon"}`); got != 1 {
		t.Fatalf("append errors = %v, want 1", got)
	}
	if got := intaketest.Counter(set, `opskit_transfer_points_received_total{proto="falcon"}`); got != 6 {
		t.Fatalf("received rose to %v on a failed append", got)
	}
}

func TestHandlerStorageRefusesSome(t *testing.T) {
	app := intaketest.NewAppender()
	app.SetRefuse(func(p metric.Point) bool { return p.Labels.Name() == "old" })
	set := metrics.NewSet()
	h := NewHandler(app, intake.NewRecorder(set, nil), intake.Limits{})
	post := func(body string) (int, intake.Response) {
		rw := httptest.NewRecorder()
		h.ServeHTTP(rw, httptest.NewRequest(http.MethodPost, "/api/push", strings.NewReader(body)))
		var resp intake.Response
		if err := json.Unmarshal(rw.Body.Bytes(), &resp); err != nil {
			t.Fatal(err)
		}
		return rw.Code, resp
	}
	// Item 1 fails parsing, item 2 is refused by storage: both reported by
	// their index in the array, in order.
	code, resp := post(`[` + item("a") + `,` + item("") + `,` + item("old") + `,` + item("b") + `]`)
	if code != 200 || resp.Accepted != 2 {
		t.Fatalf("status %d, %+v", code, resp)
	}
	if len(resp.Rejected) != 2 || resp.Rejected[0].Index != 1 || resp.Rejected[1].Index != 2 || resp.Rejected[1].Reason != intake.ReasonOutOfOrder {
		t.Fatalf("rejected %+v", resp.Rejected)
	}
	if got := intaketest.Counter(set, `opskit_transfer_points_rejected_total{proto="falcon",reason="out_of_order"}`); got != 1 {
		t.Fatalf("out_of_order = %v", got)
	}
	if got := intaketest.Counter(set, `opskit_transfer_points_received_total{proto="falcon"}`); got != 2 {
		t.Fatalf("received = %v, want 2", got)
	}
	// Everything refused by storage is a 400 like everything refused by parsing.
	if code, resp := post(`[` + item("old") + `]`); code != 400 || resp.Accepted != 0 || len(resp.Rejected) != 1 {
		t.Fatalf("status %d, %+v", code, resp)
	}
}

func TestCountersExistAtZero(t *testing.T) {
	set := metrics.NewSet()
	NewHandler(intaketest.NewAppender(), intake.NewRecorder(set, nil), intake.Limits{})
	var b strings.Builder
	set.WritePrometheus(&b)
	for _, name := range []string{
		`opskit_transfer_points_received_total{proto="falcon"} 0`,
		`opskit_transfer_append_errors_total{proto="falcon"} 0`,
	} {
		if !strings.Contains(b.String(), name) {
			t.Errorf("/metrics lacks %s before any request:\n%s", name, b.String())
		}
	}
}
