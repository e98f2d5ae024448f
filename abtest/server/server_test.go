package server

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/opskit/opskit/abtest/sdk"
	"github.com/opskit/opskit/abtest/store"
)

const config = `
layers: [{name: ui}]
experiments:
  - key: button
    layer: ui
    variants: [{name: control}, {name: blue}]
    whitelist: {qa: blue}
  - key: us-only
    variants: [{name: control}, {name: t}]
    condition: {country: US}
`

func setup(t *testing.T) (*httptest.Server, *Server, *store.Store, context.CancelFunc) {
	t.Helper()
	c, err := sdk.ParseConfig([]byte(config))
	if err != nil {
		t.Fatal(err)
	}
	a, err := sdk.New(c)
	if err != nil {
		t.Fatal(err)
	}
	st, err := store.Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	s := New(a, Options{Sink: st, Scanner: st, IQRK: 1.5, ExposureLinger: 5 * time.Millisecond})
	mux := http.NewServeMux()
	s.Register(mux)
	ts := httptest.NewServer(mux)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.RunExposureWriter(ctx) }()
	t.Cleanup(func() {
		cancel()
		<-done
		ts.Close()
		st.Close()
	})
	stop := func() { cancel(); <-done; done <- nil }
	return ts, s, st, stop
}

func call(t *testing.T, method, url, body string) (int, string) {
	t.Helper()
	req, _ := http.NewRequest(method, url, strings.NewReader(body))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func count(t *testing.T, st *store.Store, exp string) (n int, forced int) {
	t.Helper()
	_ = st.Scan(exp, func(r *store.Record) error {
		n++
		if r.Forced {
			forced++
		}
		return nil
	})
	return n, forced
}

func TestAssignLogsOneExposurePerUnit(t *testing.T) {
	ts, _, st, stop := setup(t)
	var first AssignResponse
	for i := range 3 {
		code, body := call(t, "GET", ts.URL+"/v1/assign?unit=u1&attr.country=US", "")
		if code != 200 {
			t.Fatalf("%d %s", code, body)
		}
		var r AssignResponse
		_ = json.Unmarshal([]byte(body), &r)
		if len(r.Assignments) != 2 {
			t.Fatalf("assignments %s", body)
		}
		if i == 0 {
			first = r
		} else if r.Assignments[0] != first.Assignments[0] {
			t.Fatalf("assignment changed: %v then %v", first, r)
		}
	}
	code, body := call(t, "GET", ts.URL+"/v1/assign?unit=u2&attr.country=FR&experiment=us-only", "")
	if code != 200 || !strings.Contains(body, `"assignments":[]`) {
		t.Fatalf("targeted-out unit: %d %s", code, body)
	}
	code, body = call(t, "POST", ts.URL+"/v1/assign", `{"units":[{"unit":"qa"},{"unit":""},{"unit":"u1","attributes":{"country":"US"}}]}`)
	if code != 200 || !strings.Contains(body, `"forced":true`) || !strings.Contains(body, `"error":"unit must be`) {
		t.Fatalf("batch: %d %s", code, body)
	}
	if code, _ := call(t, "GET", ts.URL+"/v1/assign", ""); code != 400 {
		t.Errorf("no unit: %d", code)
	}
	stop() // drain the exposure queue
	if n, forced := count(t, st, "button"); n != 2 || forced != 1 {
		t.Errorf("button exposures %d (forced %d), want u1 once and qa once, forced", n, forced)
	}
	if n, _ := count(t, st, "us-only"); n != 1 {
		t.Errorf("us-only exposures %d, want 1", n)
	}
}

func TestEventsKeepValidRejectInvalid(t *testing.T) {
	ts, _, st, _ := setup(t)
	body := `{"type":"conversion","unit":"u1","experiment":"button","name":"buy"}
{"type":"conversion","unit":"","experiment":"button","name":"buy"}
not json
{"type":"metric","unit":"u2","experiment":"button","name":"revenue","value":3.5,"time":"2026-11-01T00:00:00Z"}`
	code, resp := call(t, "POST", ts.URL+"/v1/events", body)
	if code != 200 || !strings.Contains(resp, `"accepted":2`) || !strings.Contains(resp, `"index":1`) || !strings.Contains(resp, `"index":2`) {
		t.Fatalf("%d %s", code, resp)
	}
	if n, _ := count(t, st, "button"); n != 2 {
		t.Errorf("%d events stored, want 2", n)
	}
	code, resp = call(t, "POST", ts.URL+"/v1/events", `[{"type":"bogus"}]`)
	if code != 400 || !strings.Contains(resp, "unknown event type") {
		t.Errorf("all rejected: %d %s", code, resp)
	}
	if code, _ := call(t, "POST", ts.URL+"/v1/events", `[{"type":`); code != 400 {
		t.Errorf("broken array: %d", code)
	}
}

func TestReportEndpoint(t *testing.T) {
	ts, _, _, stop := setup(t)
	for _, u := range []string{"a", "b", "c", "d", "e", "f", "g", "h"} {
		call(t, "GET", ts.URL+"/v1/assign?unit="+u, "")
		call(t, "POST", ts.URL+"/v1/events", `{"type":"metric","unit":"`+u+`","experiment":"button","name":"revenue","value":2}`)
	}
	stop()
	time.Sleep(10 * time.Millisecond)
	code, body := call(t, "GET", ts.URL+"/v1/report/button?metric=revenue&format=json", "")
	if code != 200 {
		t.Fatalf("%d %s", code, body)
	}
	var rep struct {
		Kind     string
		Variants []struct {
			Name  string
			Units int
		}
	}
	if err := json.Unmarshal([]byte(body), &rep); err != nil || rep.Kind != "mean" || len(rep.Variants) != 2 || rep.Variants[0].Units+rep.Variants[1].Units != 8 {
		t.Fatalf("report %s (%v)", body, err)
	}
	code, body = call(t, "GET", ts.URL+"/v1/report/button?metric=revenue", "")
	if code != 200 || !strings.Contains(body, "<html") {
		t.Errorf("html: %d", code)
	}
	if code, _ := call(t, "GET", ts.URL+"/v1/report/button?iqr_k=x", ""); code != 400 {
		t.Errorf("bad iqr_k: %d", code)
	}
	code, body = call(t, "GET", ts.URL+"/v1/experiments", "")
	if code != 200 || !strings.Contains(body, `"key":"us-only"`) {
		t.Errorf("experiments: %d %s", code, body)
	}
}
