package fleetcli

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/opskit/opskit/internal/kit"
)

func runCmd(t *testing.T, srv *httptest.Server, args ...string) (string, string, int) {
	t.Helper()
	var out, errb bytes.Buffer
	stdio := kit.IO{In: strings.NewReader(""), Out: &out, Err: &errb}
	for _, c := range Commands() {
		if c.Name == args[0] {
			rest := args[1:]
			if srv != nil {
				words := 0
				if args[0] == "cron" || args[0] == "proc" {
					words = 1
				}
				rest = append(append(append([]string{}, rest[:words]...), "--addr", srv.URL), rest[words:]...)
			}
			code := c.Run(context.Background(), rest, stdio)
			return out.String(), errb.String(), code
		}
	}
	t.Fatalf("no command %s", args[0])
	return "", "", 0
}

// execServer answers POST /v1/exec with body, checking the request.
func execServer(t *testing.T, body string) *httptest.Server {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		if r.URL.Path != "/v1/exec" || !strings.Contains(string(b), `"name":"df","args":["-h","/"]`) || r.Header.Get("Authorization") != "Bearer tk" {
			http.Error(w, `{"error":"unexpected request"}`, 400)
			return
		}
		w.Header().Set("Content-Type", "application/x-ndjson")
		io.WriteString(w, body)
	}))
	t.Cleanup(srv.Close)
	return srv
}

func TestExecPrintsPrefixedLinesAndExitCodes(t *testing.T) {
	t.Setenv("OPSKIT_DEPLOYER_TOKEN", "tk")
	srv := execServer(t, `{"host":"h1","type":"line","line":"Filesystem"}
{"host":"h2","type":"end","exit_code":-1,"refused":true,"error":"not allowed: df"}
{"host":"h1","type":"line"}
{"host":"h1","type":"end"}
{"type":"summary","hosts":2,"failed":1}
`)
	out, errOut, code := runCmd(t, srv, "exec", "--app", "web", "df", "-h", "/")
	want := "h1: Filesystem\nh2: [refused: not allowed: df]\nh1: \nh1: [exit 0]\n"
	if code != 1 || out != want || !strings.Contains(errOut, "df failed on 1 of 2 hosts") {
		t.Fatalf("exit %d\n%q\nwant %q\n%s", code, out, want, errOut)
	}
	out, _, code = runCmd(t, srv, "exec", "--app", "web", "--json", "--", "df", "-h", "/")
	if code != 1 || strings.Count(out, "\n") != 5 || !strings.HasPrefix(out, `{"host":"h1","type":"line","line":"Filesystem"}`) {
		t.Fatalf("--json: exit %d\n%s", code, out)
	}
}

func TestExecWithoutSummaryFails(t *testing.T) {
	t.Setenv("OPSKIT_DEPLOYER_TOKEN", "tk")
	srv := execServer(t, `{"host":"h1","type":"line","line":"Filesystem"}
`)
	if _, errOut, code := runCmd(t, srv, "exec", "--app", "web", "df", "-h", "/"); code != 1 || !strings.Contains(errOut, "cut short") {
		t.Fatalf("exit %d %s", code, errOut)
	}
}

func TestUsage(t *testing.T) {
	for _, args := range [][]string{
		{"exec", "--app", "web"},
		{"exec", "df"},
		{"proc", "restart", "server"},
		{"proc", "restart"},
		{"stats"},
		{"cron"},
		{"cron", "frobnicate"},
		{"cron", "add", "--app", "web", "df"},
		{"cron", "rm"},
	} {
		if _, _, code := runCmd(t, nil, args...); code != kit.ExitUsage {
			t.Errorf("%v: exit %d, want %d", args, code, kit.ExitUsage)
		}
	}
	if out, _, code := runCmd(t, nil, "cron", "--help"); code != 0 || !strings.Contains(out, "add|list|rm|runs|run-now") {
		t.Errorf("cron --help: %d %q", code, out)
	}
}

func TestErrorsCarryTheServersMessage(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusForbidden)
		io.WriteString(w, `{"error":"ci lacks the operator role on web"}`)
	}))
	defer srv.Close()
	if _, errOut, code := runCmd(t, srv, "proc", "restart", "--app", "web", "server"); code != 1 || errOut != "deployer: HTTP 403: ci lacks the operator role on web\n" {
		t.Fatalf("exit %d %q", code, errOut)
	}
}
