package push

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/opskit/opskit/transfer/intake"
	"github.com/opskit/opskit/transfer/intake/falcon"
	"github.com/opskit/opskit/transfer/intake/graphite"
	"github.com/opskit/opskit/transfer/intake/intaketest"
)

func newServer(t *testing.T) (*httptest.Server, *intaketest.Appender) {
	t.Helper()
	app := intaketest.NewAppender()
	mux := http.NewServeMux()
	mux.Handle("POST /api/push", falcon.NewHandler(app, nil, intake.Limits{}))
	mux.Handle("POST /api/graphite", graphite.NewHTTPHandler(app, nil, intake.Limits{}))
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	return srv, app
}

func run(t *testing.T, addr, stdin string, args ...string) (int, []Result, string) {
	t.Helper()
	var stdout, stderr bytes.Buffer
	code := Main(context.Background(), append([]string{"--addr", addr}, args...), strings.NewReader(stdin), &stdout, &stderr)
	var results []Result
	dec := json.NewDecoder(&stdout)
	for dec.More() {
		var r Result
		if err := dec.Decode(&r); err != nil {
			t.Fatalf("stdout is not JSON lines: %v", err)
		}
		results = append(results, r)
	}
	return code, results, stderr.String()
}

const (
	item1 = `{"endpoint":"web1","metric":"cpu.idle","timestamp":1699999980,"step":60,"value":90,"counterType":"GAUGE"}`
	item2 = `{"endpoint":"web1","metric":"mem.free","timestamp":1699999980,"step":60,"value":"12","counterType":"GAUGE","tags":"unit=MB"}`
	bad   = `{"endpoint":"web1","metric":"","timestamp":1699999980,"step":60,"value":1,"counterType":"GAUGE"}`
)

func TestAllAccepted(t *testing.T) {
	srv, app := newServer(t)
	in := item1 + "\n\n" + "[" + item1 + "," + item2 + "]\r\n" + "servers.web1.load 0.5 1699999999\n" + "tagged;dc=bj 1 -1\n"
	code, results, stderr := run(t, srv.URL, in)
	if code != ExitOK {
		t.Fatalf("exit %d, stderr %s", code, stderr)
	}
	accepted := 0
	for _, r := range results {
		accepted += r.Accepted
		if len(r.Rejected) != 0 || r.Error != "" {
			t.Fatalf("unexpected refusal %+v", r)
		}
	}
	if accepted != 5 || len(app.Points()) != 5 {
		t.Fatalf("accepted %d, stored %d, want 5", accepted, len(app.Points()))
	}
	if len(results) != 2 {
		t.Fatalf("%d result lines, want 2 (one JSON, one Graphite request)", len(results))
	}
}

func TestRefusedItemsMapToLines(t *testing.T) {
	srv, app := newServer(t)
	in := strings.Join([]string{
		item1,                         // 1
		"[" + item2 + "," + bad + "]", // 2: item 1 refused
		"not.graphite",                // 3: refused by the server
		"{broken json",                // 4: refused before sending
		"ok.metric 1 1699999999",      // 5
		bad,                           // 6
	}, "\n")
	code, results, stderr := run(t, srv.URL, in, "--batch", "100")
	if code != ExitRefused {
		t.Fatalf("exit %d, want 1", code)
	}
	if !strings.Contains(stderr, "4 refused") {
		t.Fatalf("stderr %q lacks the refused count", stderr)
	}
	got := map[int]string{}
	for _, r := range results {
		for _, rj := range r.Rejected {
			key := rj.Index
			if rj.Item != nil {
				key = rj.Index*100 + *rj.Item
			}
			got[key] = rj.Reason
		}
	}
	want := map[int]string{201: "empty_metric", 3: "bad_line", 4: "bad_json", 6: "empty_metric"}
	if len(got) != len(want) {
		t.Fatalf("refused %v, want %v", got, want)
	}
	for k, v := range want {
		if got[k] != v {
			t.Fatalf("refused %v, want %v", got, want)
		}
	}
	if n := len(app.Points()); n != 3 {
		t.Fatalf("stored %d, want 3", n)
	}
}

func TestBatching(t *testing.T) {
	srv, app := newServer(t)
	in := strings.Repeat("a.b 1 1699999999\n", 7)
	code, results, _ := run(t, srv.URL, in, "--batch", "3", "--format", "graphite")
	if code != ExitOK {
		t.Fatalf("exit %d", code)
	}
	if len(results) != 3 || results[0].Accepted != 3 || results[2].Accepted != 1 {
		t.Fatalf("results %+v, want batches of 3, 3, 1", results)
	}
	if calls := app.Calls(); len(calls) != 3 {
		t.Fatalf("append calls %v", calls)
	}
}

func TestFormatFlag(t *testing.T) {
	srv, _ := newServer(t)
	// Forced to JSON, a Graphite line is refused locally.
	code, results, _ := run(t, srv.URL, "a.b 1 1699999999\n", "--format", "json")
	if code != ExitRefused || len(results) != 1 || results[0].Rejected[0].Reason != "bad_json" {
		t.Fatalf("exit %d results %+v", code, results)
	}
	// Forced to Graphite, a JSON line is a bad Graphite line.
	code, results, _ = run(t, srv.URL, item1+"\n", "--format", "graphite")
	if code != ExitRefused || len(results) != 1 || len(results[0].Rejected) != 1 {
		t.Fatalf("exit %d results %+v", code, results)
	}
}

func TestRequestFailure(t *testing.T) {
	var calls atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		calls.Add(1)
		intake.WriteJSON(w, http.StatusServiceUnavailable, intake.Response{Error: "storing points failed: disk full"})
	}))
	defer srv.Close()
	code, results, stderr := run(t, srv.URL, item1+"\n"+item2+"\n", "--retries", "1")
	if code != ExitRefused {
		t.Fatalf("exit %d, want 1", code)
	}
	if len(results) != 1 || !strings.Contains(results[0].Error, "disk full") || !strings.Contains(results[0].Error, "lines 1-2") {
		t.Fatalf("results %+v", results)
	}
	if calls.Load() != 2 {
		t.Fatalf("%d attempts, want 2 (one retry)", calls.Load())
	}
	if !strings.Contains(stderr, "1 of 1 requests failed") {
		t.Fatalf("stderr %q", stderr)
	}
}

func TestUnreachable(t *testing.T) {
	srv := httptest.NewServer(http.NotFoundHandler())
	addr := srv.Listener.Addr().String()
	srv.Close()
	code, results, _ := run(t, addr, "a.b 1 1699999999\n", "--retries", "0")
	if code != ExitRefused || len(results) != 1 || results[0].Error == "" {
		t.Fatalf("exit %d results %+v", code, results)
	}
}

func TestUsage(t *testing.T) {
	for _, args := range [][]string{
		{"--format", "xml"},
		{"--batch", "0"},
		{"--no-such-flag"},
		{"extra-argument"},
		{"--retries", "-1"},
	} {
		var stdout, stderr bytes.Buffer
		if code := Main(context.Background(), args, strings.NewReader(""), &stdout, &stderr); code != ExitUsage {
			t.Errorf("%v: exit %d, want 2", args, code)
		}
		if stderr.Len() == 0 {
			t.Errorf("%v: nothing said on stderr", args)
		}
	}
	var stderr bytes.Buffer
	if code := Main(context.Background(), []string{"--help"}, strings.NewReader(""), &bytes.Buffer{}, &stderr); code != ExitOK || !strings.Contains(stderr.String(), "--batch") {
		t.Errorf("--help: exit %d, %q", code, stderr.String())
	}
}

func TestEmptyInput(t *testing.T) {
	code, results, _ := run(t, "127.0.0.1:1", "\n\n")
	if code != ExitOK || len(results) != 0 {
		t.Fatalf("exit %d results %+v: empty input sends nothing and succeeds", code, results)
	}
}

func TestFlagsFromEnvironment(t *testing.T) {
	srv, app := newServer(t)
	env := map[string]string{"OPSKIT_ADDR": srv.URL, "OPSKIT_FORMAT": "graphite"}
	lookup := func(k string) (string, bool) { v, ok := env[k]; return v, ok }
	var stdout, stderr bytes.Buffer
	if code := mainWithEnv(context.Background(), nil, strings.NewReader("a.b 1 1699999999\n"), &stdout, &stderr, lookup); code != ExitOK {
		t.Fatalf("exit %d: %s", code, stderr.String())
	}
	if len(app.Points()) != 1 {
		t.Fatal("nothing stored through the address from OPSKIT_ADDR")
	}
	// The command line wins over the environment.
	env["OPSKIT_ADDR"] = "127.0.0.1:1"
	if code := mainWithEnv(context.Background(), []string{"--addr", srv.URL}, strings.NewReader("a.b 1 1699999999\n"), &stdout, &stderr, lookup); code != ExitOK {
		t.Fatalf("exit %d: %s", code, stderr.String())
	}
	env["OPSKIT_BATCH"] = "many"
	if code := mainWithEnv(context.Background(), nil, strings.NewReader(""), &stdout, &stderr, lookup); code != ExitUsage {
		t.Fatalf("bad OPSKIT_BATCH: exit %d, want 2", code)
	}
}
