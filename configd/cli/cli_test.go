package cli

import (
	"bytes"
	"context"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/opskit/opskit/configd/server"
	"github.com/opskit/opskit/configd/store"
	"github.com/opskit/opskit/internal/kit"
)

func startServer(t *testing.T) string {
	t.Helper()
	st, err := store.Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	srv, err := server.New(server.Config{WatchTimeout: 2 * time.Second, HostTTL: time.Hour}, st)
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	srv.Register(mux)
	hs := httptest.NewServer(mux)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { srv.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done; hs.Close(); st.Close() })
	return hs.URL
}

func run(ctx context.Context, url, stdin, name string, args ...string) (string, string, int) {
	var out, errb bytes.Buffer
	code := Main(ctx, name, append(args, "--server", url, "--user", "tester"), kit.IO{In: strings.NewReader(stdin), Out: &out, Err: &errb})
	return out.String(), errb.String(), code
}

func TestCommands(t *testing.T) {
	url := startServer(t)
	ctx := context.Background()
	schema := filepath.Join(t.TempDir(), "schema.json")
	os.WriteFile(schema, []byte(`{"type":"object","required":["port"]}`), 0o644)
	steps := []struct {
		name  string
		stdin string
		args  []string
		code  int
		want  string // substring of stdout (or stderr when code != 0)
	}{
		{"settings", "", []string{"web/prod/app", "--schema-file", schema}, 0, `required`},
		{"put", `{"port": 80}`, []string{"web/prod/app", "app.json"}, 0, `"bytes":12`},
		{"publish", "", []string{"web/prod/app", "-m", "one"}, 0, `"version":1`},
		{"publish", `{"host": "x"}`, []string{"web/prod/app", "--file", "app.json=-"}, 1, "required key"},
		{"publish", "", []string{"web/prod/app", "--file", "nofile"}, 2, "NAME=PATH"},
		{"get", "", []string{"web/prod/app", "app.json"}, 0, `{"port": 80}`},
		{"get", "", []string{"web/prod/app", "missing.json"}, 1, "no file"},
		{"gray", `{"port": 81}`, []string{"web/prod/app", "--percent", "50", "--file", "app.json=-"}, 0, `"version":2`},
		{"gray", "", []string{"web/prod/app"}, 2, "--label and/or --percent"},
		{"abandon", "", []string{"web/prod/app"}, 0, `"current":1`},
		{"abandon", "", []string{"web/prod/app"}, 1, "no gray release"},
		{"releases", "", []string{"web/prod/app"}, 0, `"version":2`},
		{"rollback", "", []string{"web/prod/app"}, 1, "no earlier release"},
		{"diff", "", []string{"web/prod/app", "1", "2"}, 0, `+{"port": 81}`},
		{"diff", "", []string{"web/prod/app", "1", "zwei"}, 2, "not a release number"},
		{"history", "", []string{"web/prod/app"}, 0, `"action":"abandon"`},
		{"hosts", "", []string{"web"}, 0, ""},
		{"audit", "", []string{"--limit", "2"}, 0, `"who":"tester"`},
		{"get", "", []string{}, 2, "wrong number of arguments"},
		{"get", "", []string{"web/prod/app", "--bogus"}, 2, "unknown flag"},
	}
	for _, st := range steps {
		out, errs, code := run(ctx, url, st.stdin, st.name, st.args...)
		text := out
		if st.code != 0 {
			text = errs
		}
		if code != st.code || !strings.Contains(text, st.want) {
			t.Errorf("configd %s %v: exit %d (want %d)\nstdout %s\nstderr %s", st.name, st.args, code, st.code, out, errs)
		}
	}
}

func TestWatchPrintsOneLinePerChange(t *testing.T) {
	url := startServer(t)
	if _, errs, code := run(context.Background(), url, "a", "publish", "a/b/c", "--file", "f=-"); code != 0 {
		t.Fatal(errs)
	}
	ctx, cancel := context.WithCancel(context.Background())
	var out, errb bytes.Buffer
	done := make(chan int)
	pr, pw, _ := os.Pipe()
	go func() {
		done <- Main(ctx, "watch", []string{"a/b/c", "--server", url}, kit.IO{In: strings.NewReader(""), Out: pw, Err: &errb})
	}()
	time.Sleep(200 * time.Millisecond)
	for _, v := range []string{"b", "c"} {
		if _, errs, code := run(context.Background(), url, v, "publish", "a/b/c", "--file", "f=-"); code != 0 {
			t.Fatal(errs)
		}
		time.Sleep(100 * time.Millisecond)
	}
	cancel()
	if code := <-done; code != 0 {
		t.Fatalf("watch exit %d: %s", code, errb.String())
	}
	pw.Close()
	out.ReadFrom(pr)
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	if len(lines) != 2 || !strings.Contains(lines[0], `"version":2`) || !strings.Contains(lines[1], `"version":3`) {
		t.Fatalf("watch printed:\n%s", out.String())
	}
}
