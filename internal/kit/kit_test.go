package kit

import (
	"bytes"
	"context"
	"errors"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/spf13/pflag"
)

func noEnv(string) (string, bool) { return "", false }

func envOf(m map[string]string) func(string) (string, bool) {
	return func(k string) (string, bool) { v, ok := m[k]; return v, ok }
}

func writeFile(t *testing.T, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "config.yaml")
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// runKit runs spec with args in-process and returns exit code and stderr.
func runKit(t *testing.T, spec Spec, env func(string) (string, bool), args ...string) (int, string, string) {
	t.Helper()
	var out, errb bytes.Buffer
	code := Run(context.Background(), spec, args, IO{In: strings.NewReader(""), Out: &out, Err: &errb}, env, nil)
	return code, out.String(), errb.String()
}

func TestBadConfigNamesKeyAndLine(t *testing.T) {
	spec := Spec{Name: "demo", Listen: "127.0.0.1:0"}
	cases := []struct {
		name, file string
		want       []string
	}{
		{"unknown key", "log-level: debug\nlisen: 127.0.0.1:1\n", []string{":2:", `unknown key "lisen"`, `did you mean "listen"`}},
		{"wrong type", "shutdown-timeout: soon\n", []string{":1:", `"shutdown-timeout"`, "soon"}},
		{"bad bool", "\n\npprof: maybe\n", []string{":3:", `"pprof"`}},
		{"mapping for scalar", "listen:\n  a: b\n", []string{":2:", `"listen"`, "not a mapping"}},
		{"duplicate key", "listen: a\nlisten: b\n", []string{":2:", "repeats", "line 1"}},
		{"not a mapping", "- a\n- b\n", []string{"must be a mapping"}},
		{"bad yaml", "listen: [\n", []string{"config"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			code, _, stderr := runKit(t, spec, noEnv, "--config", writeFile(t, c.file))
			if code != ExitUsage {
				t.Fatalf("exit %d; want %d; stderr: %s", code, ExitUsage, stderr)
			}
			for _, w := range c.want {
				if !strings.Contains(stderr, w) {
					t.Errorf("stderr %q lacks %q", stderr, w)
				}
			}
		})
	}
}

// capture starts a daemon whose Start records its flag value and stops it.
func captureGreeting(t *testing.T, env func(string) (string, bool), args ...string) string {
	t.Helper()
	var greeting, got string
	spec := Spec{
		Name: "demo", Listen: "127.0.0.1:0",
		Flags: func(fs *pflag.FlagSet) { fs.StringVar(&greeting, "greeting", "default", "") },
		Start: func(ctx context.Context, d *Daemon) error {
			got = greeting
			d.Stop("test done")
			return nil
		},
	}
	args = append(args, "--data-dir", t.TempDir())
	code, _, stderr := runKit(t, spec, env, args...)
	if code != ExitOK {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	return got
}

func TestFlagEnvConfigPrecedence(t *testing.T) {
	file := writeFile(t, "greeting: from-file\n")
	env := envOf(map[string]string{"OPSKIT_GREETING": "from-env"})
	if got := captureGreeting(t, noEnv); got != "default" {
		t.Errorf("no source: %q", got)
	}
	if got := captureGreeting(t, noEnv, "--config", file); got != "from-file" {
		t.Errorf("file only: %q", got)
	}
	if got := captureGreeting(t, env, "--config", file); got != "from-env" {
		t.Errorf("env over file: %q", got)
	}
	if got := captureGreeting(t, env, "--config", file, "--greeting", "from-flag"); got != "from-flag" {
		t.Errorf("flag over env: %q", got)
	}
	// The config file itself can come from the environment.
	if got := captureGreeting(t, envOf(map[string]string{"OPSKIT_CONFIG": file})); got != "from-file" {
		t.Errorf("OPSKIT_CONFIG: %q", got)
	}
}

func TestBadEnvValueIsUsageError(t *testing.T) {
	code, _, stderr := runKit(t, Spec{Name: "demo", Listen: "127.0.0.1:0"},
		envOf(map[string]string{"OPSKIT_SHUTDOWN_TIMEOUT": "never"}))
	if code != ExitUsage || !strings.Contains(stderr, "OPSKIT_SHUTDOWN_TIMEOUT") {
		t.Fatalf("exit %d, stderr %q", code, stderr)
	}
}

func TestHelpVersionAndUnknownCommand(t *testing.T) {
	spec := Spec{Name: "demo", Listen: "127.0.0.1:7999", Summary: "does demo things", Pending: "the demo issue",
		Commands: []Command{{Name: "push", Summary: "push lines", Run: func(context.Context, []string, IO) int { return 7 }}}}
	code, out, _ := runKit(t, spec, noEnv, "--help")
	if code != ExitOK {
		t.Fatalf("--help exit %d", code)
	}
	for _, w := range []string{"does demo things", "NOT BUILT YET", "--listen", "--data-dir", "--admin-token-file", "OPSKIT_LISTEN", "push lines"} {
		if !strings.Contains(out, w) {
			t.Errorf("--help output lacks %q", w)
		}
	}
	code, out, _ = runKit(t, spec, noEnv, "--version")
	if code != ExitOK || !strings.HasPrefix(out, "demo ") || !strings.Contains(out, "go1.") {
		t.Errorf("--version: %d %q", code, out)
	}
	if code, _, _ := runKit(t, spec, noEnv, "push", "x"); code != 7 {
		t.Errorf("subcommand exit %d; want its own 7", code)
	}
	if code, _, stderr := runKit(t, spec, noEnv, "frobnicate"); code != ExitUsage || !strings.Contains(stderr, "frobnicate") {
		t.Errorf("unknown command: %d %q", code, stderr)
	}
	if code, _, _ := runKit(t, spec, noEnv, "--no-such-flag"); code != ExitUsage {
		t.Errorf("unknown flag exit %d", code)
	}
}

func TestNonLoopbackNeedsToken(t *testing.T) {
	code, _, stderr := runKit(t, Spec{Name: "demo", Listen: "0.0.0.0:0"}, noEnv, "--data-dir", t.TempDir())
	if code != ExitUsage {
		t.Fatalf("exit %d; want %d", code, ExitUsage)
	}
	for _, w := range []string{"refusing", "--admin-token-file", "127.0.0.1"} {
		if !strings.Contains(stderr, w) {
			t.Errorf("message %q lacks %q", stderr, w)
		}
	}
}

// liveDaemon runs a daemon in-process and returns its address and a channel
// with its exit code.
func liveDaemon(t *testing.T, spec Spec, args ...string) (string, <-chan int, *bytes.Buffer) {
	t.Helper()
	addrCh := make(chan net.Addr, 1)
	start := spec.Start
	spec.Start = func(ctx context.Context, d *Daemon) error {
		if start != nil {
			if err := start(ctx, d); err != nil {
				return err
			}
		}
		addrCh <- d.Addr()
		return nil
	}
	if spec.Listen == "" {
		spec.Listen = "127.0.0.1:0"
	}
	var errb bytes.Buffer
	done := make(chan int, 1)
	go func() {
		done <- Run(context.Background(), spec, append(args, "--data-dir", t.TempDir()),
			IO{In: strings.NewReader(""), Out: &bytes.Buffer{}, Err: &errb}, noEnv, nil)
	}()
	select {
	case a := <-addrCh:
		_, port, _ := net.SplitHostPort(a.String())
		return "127.0.0.1:" + port, done, &errb
	case code := <-done:
		t.Fatalf("daemon exited %d: %s", code, errb.String())
	case <-time.After(10 * time.Second):
		t.Fatal("daemon did not start")
	}
	return "", nil, nil
}

func post(t *testing.T, url, token, body string) int {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, url, strings.NewReader(body))
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

func TestAdminTokenOffLoopback(t *testing.T) {
	addr, done, _ := liveDaemon(t, Spec{Name: "demo"}, "--listen", "0.0.0.0:0", "--admin-token", "s3cret")
	base := "http://" + addr
	if code := post(t, base+"/admin/stop", "", ""); code != http.StatusUnauthorized {
		t.Fatalf("stop without token: %d; want 401", code)
	}
	if code := post(t, base+"/admin/stop", "wrong", ""); code != http.StatusUnauthorized {
		t.Fatalf("stop with wrong token: %d; want 401", code)
	}
	resp, err := http.Get(base + "/healthz")
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("daemon not running on after refused stop: %v", err)
	}
	resp.Body.Close()
	if code := post(t, base+"/admin/stop", "s3cret", ""); code != http.StatusAccepted {
		t.Fatalf("stop with token: %d; want 202", code)
	}
	select {
	case code := <-done:
		if code != ExitOK {
			t.Fatalf("exit %d after admin stop", code)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("daemon did not stop")
	}
}

func TestTokenNeverLogged(t *testing.T) {
	_, done, logs := liveDaemon(t, Spec{Name: "demo", Start: func(ctx context.Context, d *Daemon) error {
		d.Log.Info("started")
		go d.Stop("test")
		return nil
	}}, "--admin-token", "hunter2-secret", "--log-level", "debug")
	<-done
	if strings.Contains(logs.String(), "hunter2-secret") {
		t.Fatalf("token appears in the log:\n%s", logs)
	}
}

func TestCtlLoglevelReloadCustomAndReadiness(t *testing.T) {
	var reloads int
	var stopOrder []string
	spec := Spec{Name: "demo", Start: func(ctx context.Context, d *Daemon) error {
		d.OnReload(func(context.Context) error { reloads++; return nil })
		d.HandleAdmin("echo", func(ctx context.Context, args []string) (any, error) {
			if len(args) == 0 {
				return nil, errors.New("echo needs words")
			}
			return map[string]any{"words": args}, nil
		})
		d.OnStop("first", func(context.Context) error { stopOrder = append(stopOrder, "first"); return nil })
		d.OnStop("second", func(context.Context) error { stopOrder = append(stopOrder, "second"); return nil })
		return nil
	}}
	addr, done, _ := liveDaemon(t, spec)
	ctl := func(args ...string) (int, string, string) {
		var out, errb bytes.Buffer
		code := Run(context.Background(), spec, append([]string{"ctl"}, append(args, "--addr", addr)...),
			IO{Out: &out, Err: &errb}, noEnv, nil)
		return code, out.String(), errb.String()
	}
	if code, out, errs := ctl("loglevel", "debug"); code != 0 || !strings.Contains(out, `"level":"debug"`) {
		t.Fatalf("ctl loglevel: %d %q %q", code, out, errs)
	}
	resp, _ := http.Get("http://" + addr + "/admin/loglevel")
	b := new(bytes.Buffer)
	b.ReadFrom(resp.Body)
	resp.Body.Close()
	if !strings.Contains(b.String(), "debug") {
		t.Fatalf("GET /admin/loglevel = %q", b)
	}
	if code, _, _ := ctl("loglevel", "loud"); code != ExitFailure {
		t.Fatalf("bad level exit %d; want 1", code)
	}
	if code, _, _ := ctl("loglevel"); code != ExitUsage {
		t.Fatalf("missing level exit %d; want 2", code)
	}
	if code, _, _ := ctl("reload"); code != 0 || reloads != 1 {
		t.Fatalf("reload: exit %d, reloads %d", code, reloads)
	}
	if code, out, _ := ctl("echo", "a", "b"); code != 0 || !strings.Contains(out, `"words":["a","b"]`) {
		t.Fatalf("custom command: %d %q", code, out)
	}
	if code, _, _ := ctl("echo"); code != ExitFailure {
		t.Fatalf("failing custom command exit %d; want 1", code)
	}
	if code, _, _ := ctl("nosuch"); code != ExitFailure {
		t.Fatalf("unknown admin command exit %d; want 1", code)
	}
	if code, out, _ := ctl("health"); code != 0 || !strings.Contains(out, "/readyz 200") {
		t.Fatalf("health: %d %q", code, out)
	}
	if code, _, _ := ctl("stop"); code != 0 {
		t.Fatalf("stop exit %d", code)
	}
	if code := <-done; code != ExitOK {
		t.Fatalf("exit %d", code)
	}
	if strings.Join(stopOrder, ",") != "second,first" {
		t.Fatalf("stop hooks ran %v; want reverse order", stopOrder)
	}
}

func TestReadyzReportsReason(t *testing.T) {
	var d *Daemon
	addr, done, _ := liveDaemon(t, Spec{Name: "demo", Start: func(ctx context.Context, dd *Daemon) error {
		d = dd
		d.SetNotReady("wal", "replaying 3 segments")
		return nil
	}})
	resp, err := http.Get("http://" + addr + "/readyz")
	if err != nil {
		t.Fatal(err)
	}
	b := new(bytes.Buffer)
	b.ReadFrom(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusServiceUnavailable || !strings.Contains(b.String(), "replaying 3 segments") {
		t.Fatalf("readyz = %d %q", resp.StatusCode, b)
	}
	d.SetReady("wal")
	resp, _ = http.Get("http://" + addr + "/readyz")
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("readyz after SetReady = %d", resp.StatusCode)
	}
	d.Stop("test")
	<-done
}

func TestStopDeadlineBoundsHooks(t *testing.T) {
	addr, done, _ := liveDaemon(t, Spec{Name: "demo", Start: func(ctx context.Context, d *Daemon) error {
		d.OnStop("stuck", func(ctx context.Context) error { <-ctx.Done(); return ctx.Err() })
		return nil
	}}, "--shutdown-timeout", "200ms")
	start := time.Now()
	post(t, "http://"+addr+"/admin/stop", "", "")
	select {
	case code := <-done:
		if code != ExitFailure {
			t.Fatalf("exit %d; want 1 when the stop deadline passes", code)
		}
		if time.Since(start) > 5*time.Second {
			t.Fatalf("stop took %v", time.Since(start))
		}
	case <-time.After(10 * time.Second):
		t.Fatal("daemon did not stop within the deadline")
	}
}

func TestBackgroundFailureStopsDaemon(t *testing.T) {
	_, done, logs := liveDaemon(t, Spec{Name: "demo", Start: func(ctx context.Context, d *Daemon) error {
		d.Go(ctx, "worker", func(ctx context.Context) error { return errors.New("disk on fire") })
		return nil
	}})
	select {
	case code := <-done:
		if code != ExitFailure || !strings.Contains(logs.String(), "disk on fire") {
			t.Fatalf("exit %d, log %q", code, logs)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("daemon kept running after a background failure")
	}
}

func TestDecodeSectionStrict(t *testing.T) {
	type input struct {
		Path   string            `yaml:"path"`
		Topic  string            `yaml:"topic"`
		Fields map[string]string `yaml:"fields"`
	}
	type section struct {
		Inputs []input `yaml:"inputs"`
	}
	file := writeFile(t, "logs:\n  inputs:\n    - path: /var/log/*.log\n      topic: logs\n    - path: b\n      topci: x\n")
	var s section
	err := DecodeSection(file, "logs", &s)
	if err == nil || !strings.Contains(err.Error(), ":6:") || !strings.Contains(err.Error(), `"topci"`) {
		t.Fatalf("err = %v; want unknown key topci on line 6", err)
	}
	good := writeFile(t, "logs:\n  inputs:\n    - path: a\n      fields: {env: prod}\n")
	s = section{}
	if err := DecodeSection(good, "logs", &s); err != nil || len(s.Inputs) != 1 || s.Inputs[0].Fields["env"] != "prod" {
		t.Fatalf("decode = %+v, %v", s, err)
	}
	// A section key in the file is accepted by flag parsing only when declared.
	code, _, stderr := runKit(t, Spec{Name: "demo", Listen: "127.0.0.1:0"}, noEnv, "--config", good)
	if code != ExitUsage || !strings.Contains(stderr, `unknown key "logs"`) {
		t.Fatalf("undeclared section: %d %q", code, stderr)
	}
}
