package web

import (
	"context"
	"net/http"
	"net/http/httptest"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/opskit/opskit/internal/testkit"
)

// fakeAPI answers the deployer endpoints the page reads, with one deploy
// queued, one running (with hosts in several states) and two finished.
func fakeAPI(t *testing.T) *httptest.Server {
	mux := http.NewServeMux()
	Register(mux)
	answer := func(path, body string) {
		mux.HandleFunc("GET "+path, func(w http.ResponseWriter, r *http.Request) {
			if path == "/v1/deploys" && r.URL.Query().Get("state") != "running,paused" {
				http.Error(w, `{"error":"want state=running,paused"}`, http.StatusBadRequest)
				return
			}
			if r.Header.Get("Authorization") != "Bearer t0ken" {
				http.Error(w, `{"error":"who are you?"}`, http.StatusUnauthorized)
				return
			}
			w.Header().Set("Content-Type", "application/json")
			w.Write([]byte(body))
		})
	}
	answer("/v1/queue", `{"active":[{"id":"d2","state":"running"}],"queued":[{"id":"d3","app":"web","env":"prod","version":"1.3","user":"ci","state":"queued","created":"2026-11-22T01:00:00Z","progress":{"hosts":3}}]}`)
	answer("/v1/deploys", `[{"id":"d2","app":"web","env":"prod","version":"1.2","state":"running","progress":{"hosts":3,"done":1}}]`)
	answer("/v1/deploys/d2", `{"id":"d2","app":"web","env":"prod","version":"1.2","user":"ci","state":"running","batch":1,"batch_sizes":[1,2],
		"hosts":[{"host":"h1","batch":0,"state":"done"},{"host":"h2","batch":1,"state":"running"},{"host":"h3<b>","batch":1,"state":"pending"}]}`)
	answer("/v1/history", `[{"id":"d1","app":"web","env":"prod","version":"1.1","user":"ci","state":"succeeded","finished":"2026-11-22T00:50:00Z","progress":{"hosts":2,"done":2}},
		{"id":"d0","app":"web","env":"prod","version":"1.0","user":"ci","state":"rolled_back","error":"health gate failed","progress":{"hosts":2,"done":1,"failed":1}}]`)
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	return srv
}

// dumpDOM loads url in headless Chromium and returns the DOM after the
// page's scripts have run.
func dumpDOM(t *testing.T, url string) string {
	t.Helper()
	chromium := testkit.RequireBinary(t, "chromium", "chromium")
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, chromium, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
		"--user-data-dir="+t.TempDir(), "--virtual-time-budget=3000", "--dump-dom", url)
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("chromium: %v\n%s", err, out)
	}
	return string(out)
}

func TestPageDrawsQueueRunningAndHistory(t *testing.T) {
	srv := fakeAPI(t)
	dom := dumpDOM(t, srv.URL+"/#token=t0ken")
	for _, want := range []string{
		`id="updated" data-ok="1"`,
		`class="queued" data-deploy="d3" data-state="queued"`,
		`class="deploy running" data-deploy="d2" data-state="running"`,
		`data-host="h1" data-state="done"`,
		`data-host="h2" data-state="running"`,
		`data-done="1" data-total="3"`,
		`batch 2 of 2 · 1/3 hosts done`,
		`class="finished" data-deploy="d1" data-state="succeeded"`,
		`class="finished" data-deploy="d0" data-state="rolled_back"`,
		`health gate failed`,
		`<td>2/2</td>`,
		`<td>1/2 (1 failed)</td>`,
		`h3&lt;b&gt;`, // drawn as text, not markup
	} {
		if !strings.Contains(dom, want) {
			t.Errorf("the page lacks %s", want)
		}
	}
	if t.Failed() || testing.Verbose() {
		t.Logf("DOM:\n%s", dom)
	}
}

func TestPageShowsAPIErrors(t *testing.T) {
	srv := fakeAPI(t)
	dom := dumpDOM(t, srv.URL+"/ui/") // no token
	if !strings.Contains(dom, `data-ok="0"`) || !strings.Contains(dom, "HTTP 401") {
		t.Fatalf("an API error is not shown:\n%s", dom)
	}
}

func TestServesOnlyThePage(t *testing.T) {
	srv := fakeAPI(t)
	for path, want := range map[string]int{"/": 200, "/ui/": 200, "/nope": 404} {
		resp, err := http.Get(srv.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != want || (want == 200 && !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/html")) {
			t.Errorf("GET %s = %d %s", path, resp.StatusCode, resp.Header.Get("Content-Type"))
		}
	}
}
