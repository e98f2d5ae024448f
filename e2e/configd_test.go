package e2e

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/opskit/opskit/configd/api"
	"github.com/opskit/opskit/configd/client"
	"github.com/opskit/opskit/configd/manifest"
	"github.com/opskit/opskit/internal/testkit"
)

// configdProc is a configd process started with a subcommand (testkit.Start
// puts its flags before the arguments, so `configd agent` needs its own).
type configdProc struct {
	cmd    *exec.Cmd
	addr   string
	logs   *lockedBuffer
	exited chan struct{}
}

type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

var configdListenRE = regexp.MustCompile(`msg=starting .*?listen=([0-9.:]+)`)

// startConfigd runs `configd args...` and waits until it listens (and, if
// ready is set, until /readyz answers 200).
func startConfigd(t *testing.T, ready bool, args ...string) *configdProc {
	t.Helper()
	p, err := launchConfigd(t, ready, args...)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// launchConfigd is startConfigd for use from other goroutines.
func launchConfigd(t *testing.T, ready bool, args ...string) (*configdProc, error) {
	cmd := exec.Command(testkit.Binary(t, "configd"), args...)
	p := &configdProc{cmd: cmd, logs: &lockedBuffer{}, exited: make(chan struct{})}
	cmd.Stdout, cmd.Stderr = p.logs, p.logs
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	go func() { cmd.Wait(); close(p.exited) }()
	t.Cleanup(func() {
		p.kill()
		if t.Failed() {
			t.Logf("--- configd %s log ---\n%s", strings.Join(args, " "), p.logs.String())
		}
	})
	deadline := time.Now().Add(30 * time.Second)
	for {
		if m := configdListenRE.FindStringSubmatch(p.logs.String()); m != nil {
			p.addr = m[1]
			break
		}
		select {
		case <-p.exited:
			return nil, fmt.Errorf("configd %v exited before listening", args)
		case <-time.After(10 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("configd %v did not listen within 30s", args)
		}
	}
	for ready {
		resp, err := http.Get("http://" + p.addr + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				break
			}
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("configd %v not ready within 30s", args)
		}
		time.Sleep(10 * time.Millisecond)
	}
	return p, nil
}

func (p *configdProc) kill() {
	p.cmd.Process.Signal(syscall.SIGKILL)
	<-p.exited
}

func (p *configdProc) url(path string) string { return "http://" + p.addr + path }

func waitUntil(t *testing.T, what string, within time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", within, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// genFiles is a release of three files that all carry the same generation,
// so a reader can tell a mixed set.
func genFiles(gen int) []api.File {
	var files []api.File
	for _, name := range []string{"a.conf", "b.conf", "c.conf"} {
		files = append(files, api.NewFile(name, fmt.Sprintf("gen=%d\nfile=%s\n%s", gen, name, strings.Repeat("#", gen%7*100))))
	}
	return files
}

// heldGen reads an agent's current release the way an application should
// (resolve the link once) and returns its version and generation; it fails
// on a partial or mixed set.
func heldGen(dir string) (int64, int, error) {
	real, err := filepath.EvalSymlinks(filepath.Join(dir, "current"))
	if err != nil {
		if os.IsNotExist(err) {
			return 0, 0, nil
		}
		return 0, 0, err
	}
	m, files, err := manifest.Load(real)
	if err != nil {
		return 0, 0, err
	}
	if len(files) != 3 {
		return 0, 0, fmt.Errorf("%s: %d files, want 3", real, len(files))
	}
	gen := -1
	for name, data := range files {
		var g int
		if _, err := fmt.Sscanf(string(data), "gen=%d", &g); err != nil {
			return 0, 0, fmt.Errorf("%s/%s: %q", real, name, data)
		}
		if gen >= 0 && g != gen {
			return 0, 0, fmt.Errorf("%s: mixed set: generations %d and %d", real, gen, g)
		}
		gen = g
	}
	return m.Version, gen, nil
}

// TestConfigdFiftyAgentsConvergeThroughServerCrash publishes a stream of
// releases to 50 agent processes, kills the server with SIGKILL in the
// middle of a publish, restarts it, and checks that no agent ever held a
// partial or mixed set and that every agent ends on the last acknowledged
// release (or the one in flight, if the server had committed it).
func TestConfigdFiftyAgentsConvergeThroughServerCrash(t *testing.T) {
	const agents = 50
	const ns = "shop/prod/checkout"
	dataDir := t.TempDir()
	addr := testkit.FreeAddr(t)
	serverArgs := []string{"--listen", addr, "--data-dir", dataDir, "--watch-timeout", "2s", "--watch-batch", "10", "--watch-batch-interval", "1ms"}
	srv := startConfigd(t, true, serverArgs...)
	ctx := context.Background()
	admin, err := client.NewRemote([]string{"http://" + addr}, client.RemoteOptions{User: "e2e"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := admin.Publish(ctx, ns, api.PublishRequest{Files: genFiles(1), Comment: "gen 1"}); err != nil {
		t.Fatal(err)
	}

	dirs := make([]string, agents)
	var wg sync.WaitGroup
	startErrs := make(chan error, agents)
	for i := range agents {
		dirs[i] = t.TempDir()
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, err := launchConfigd(t, false, "agent", "--listen", "127.0.0.1:0", "--data-dir", dirs[i], "--cache-dir", dirs[i],
				"--server", "http://"+addr, "--namespace", ns, "--host", fmt.Sprintf("agent-%02d", i), "--app", "checkout",
				"--watch-timeout", "2s", "--heartbeat-interval", "1s", "--stale-after", "30s")
			startErrs <- err
		}()
	}
	wg.Wait()
	close(startErrs)
	for err := range startErrs {
		if err != nil {
			t.Fatal(err)
		}
	}
	nsDir := func(i int) string { return filepath.Join(dirs[i], filepath.FromSlash(ns)) }

	// Readers check every agent's set as fast as they can throughout.
	var violations []string
	var vmu sync.Mutex
	var reads atomic.Int64
	stopReaders := make(chan struct{})
	readersDone := make(chan struct{})
	go func() {
		defer close(readersDone)
		for {
			select {
			case <-stopReaders:
				return
			default:
			}
			for i := range agents {
				if _, _, err := heldGen(nsDir(i)); err != nil {
					vmu.Lock()
					violations = append(violations, err.Error())
					vmu.Unlock()
				}
				reads.Add(1)
			}
		}
	}()

	waitUntil(t, "all agents on release 1", 30*time.Second, func() bool {
		for i := range agents {
			if v, _, _ := heldGen(nsDir(i)); v != 1 {
				return false
			}
		}
		return true
	})

	// Publish back to back; kill -9 the server once 15 have been acknowledged,
	// while the publisher is sending the next.
	var lastAcked atomic.Int64
	lastAcked.Store(1)
	pubDone := make(chan struct{})
	go func() {
		defer close(pubDone)
		for gen := 2; ; gen++ {
			if _, err := admin.Publish(ctx, ns, api.PublishRequest{Files: genFiles(gen), Comment: fmt.Sprintf("gen %d", gen)}); err != nil {
				return
			}
			lastAcked.Store(int64(gen))
		}
	}()
	waitUntil(t, "15 publishes", 30*time.Second, func() bool { return lastAcked.Load() >= 15 })
	srv.kill()
	<-pubDone
	acked := int(lastAcked.Load())

	startConfigd(t, true, serverArgs...)
	head, err := admin.Namespace(ctx, ns)
	if err != nil {
		t.Fatal(err)
	}
	rel, err := admin.Release(ctx, ns, head.Current)
	if err != nil {
		t.Fatal(err)
	}
	var gen int
	fmt.Sscanf(rel.Files[0].Content, "gen=%d", &gen)
	if gen != acked && gen != acked+1 {
		t.Fatalf("after the crash the server holds gen %d; last acknowledged %d", gen, acked)
	}
	waitUntil(t, fmt.Sprintf("all agents on release %d", head.Current), 60*time.Second, func() bool {
		for i := range agents {
			if v, g, _ := heldGen(nsDir(i)); v != head.Current || g != gen {
				return false
			}
		}
		return true
	})
	close(stopReaders)
	<-readersDone
	if len(violations) > 0 {
		t.Fatalf("%d partial or mixed sets seen, e.g. %s", len(violations), violations[0])
	}
	if reads.Load() < agents*10 {
		t.Fatalf("readers checked only %d sets", reads.Load())
	}
	// The convergence view lists every agent (they report again after the restart).
	waitUntil(t, "convergence view", 20*time.Second, func() bool {
		c, err := admin.Status(ctx, ns, head.Current)
		return err == nil && len(c.Applied) == agents
	})
	hosts, err := admin.Hosts(ctx, "checkout", false)
	if err != nil || len(hosts) != agents {
		t.Fatalf("naming service lists %d hosts (%v)", len(hosts), err)
	}
	t.Logf("acknowledged gen %d, server kept gen %d (release %d), %d set reads", acked, gen, head.Current, reads.Load())
}

// TestConfigdServerDownAppsKeepReading stops the server while an app reads
// through the SDK: the files stay readable, the agent reports staleness in
// /readyz and /metrics, and it catches up once the server is back.
func TestConfigdServerDownAppsKeepReading(t *testing.T) {
	const ns = "web/prod/app"
	dataDir := t.TempDir()
	addr := testkit.FreeAddr(t)
	serverArgs := []string{"--listen", addr, "--data-dir", dataDir, "--watch-timeout", "1s"}
	srv := startConfigd(t, true, serverArgs...)
	out, errs, code := testkit.Run(t, "configd", "port=8080\n", "put", ns, "app.properties", "--server", addr)
	if code != 0 {
		t.Fatalf("put: %d %s %s", code, out, errs)
	}
	if out, errs, code := testkit.Run(t, "configd", "", "publish", ns, "-m", "first", "--server", addr); code != 0 || !strings.Contains(out, `"version":1`) {
		t.Fatalf("publish: %d %s %s", code, out, errs)
	}
	cacheDir := t.TempDir()
	ag := startConfigd(t, true, "agent", "--listen", "127.0.0.1:0", "--data-dir", t.TempDir(), "--cache-dir", cacheDir,
		"--server", addr, "--namespace", ns, "--host", "web-1", "--watch-timeout", "1s", "--stale-after", "1s")
	var cache *client.Cache
	waitUntil(t, "the first release in the cache", 10*time.Second, func() bool {
		c, err := client.OpenNamespace(cacheDir, ns, client.CacheOptions{PollInterval: 20 * time.Millisecond})
		cache = c
		return err == nil
	})
	defer cache.Close()
	versions := make(chan int64, 8)
	cache.OnChange(func(s *client.Snapshot) { versions <- s.Version })

	srv.kill()
	// Throughout the outage the app reads its setting from the cache.
	downUntil := time.Now().Add(2500 * time.Millisecond)
	for time.Now().Before(downUntil) {
		if p := cache.Snapshot().Int("app.properties", "port", 0); p != 8080 {
			t.Fatalf("port %d while the server is down", p)
		}
		time.Sleep(50 * time.Millisecond)
	}
	code, body := get(t, ag.url("/readyz"))
	if code != 503 || !strings.Contains(body, "stale") {
		t.Fatalf("/readyz during the outage: %d %s", code, body)
	}
	_, metrics := get(t, ag.url("/metrics"))
	if !strings.Contains(metrics, "opskit_configd_agent_stale 1") {
		t.Fatalf("/metrics does not report staleness:\n%s", metrics)
	}
	if _, body := get(t, ag.url("/v1/files/web/prod/app/app.properties")); body != "port=8080\n" {
		t.Fatalf("agent's local API during the outage: %q", body)
	}

	startConfigd(t, true, serverArgs...)
	if _, errs, code := testkit.Run(t, "configd", "port=9090\n", "publish", ns, "--file", "app.properties=-", "--server", addr); code != 0 {
		t.Fatalf("publish after restart: %s", errs)
	}
	select {
	case v := <-versions:
		if v != 2 || cache.Snapshot().Int("app.properties", "port", 0) != 9090 {
			t.Fatalf("after catch-up: version %d port %d", v, cache.Snapshot().Int("app.properties", "port", 0))
		}
	case <-time.After(15 * time.Second):
		t.Fatal("agent did not catch up after the server returned")
	}
	waitUntil(t, "agent ready again", 10*time.Second, func() bool { code, _ := get(t, ag.url("/readyz")); return code == 200 })
}

// TestConfigdMembershipKillAndRejoin registers three agents with app web,
// kills one with SIGKILL and restarts it: a watcher sees join, leave and
// rejoin in order, and `configd hosts web` lists the live hosts.
func TestConfigdMembershipKillAndRejoin(t *testing.T) {
	addr := testkit.FreeAddr(t)
	startConfigd(t, true, "--listen", addr, "--data-dir", t.TempDir(), "--host-ttl", "1500ms")
	ctx := context.Background()
	r, _ := client.NewRemote([]string{addr}, client.RemoteOptions{})
	startAgent := func(host, dataDir string) *configdProc {
		return startConfigd(t, false, "agent", "--listen", "127.0.0.1:0", "--data-dir", dataDir, "--server", addr,
			"--namespace", "web/prod/app", "--host", host, "--app", "web", "--heartbeat-interval", "100ms", "--watch-timeout", "1s")
	}
	dirs := []string{t.TempDir(), t.TempDir(), t.TempDir()}
	var procs []*configdProc
	for i, d := range dirs {
		procs = append(procs, startAgent(fmt.Sprintf("web-%d", i+1), d))
	}
	waitUntil(t, "three live hosts", 10*time.Second, func() bool {
		out, _, code := testkit.Run(t, "configd", "", "hosts", "web", "--server", addr)
		return code == 0 && out == "web-1\nweb-2\nweb-3\n"
	})
	procs[1].kill()
	waitUntil(t, "web-2 marked down", 10*time.Second, func() bool {
		out, _, _ := testkit.Run(t, "configd", "", "hosts", "web", "--server", addr)
		return out == "web-1\nweb-3\n"
	})
	startAgent("web-2", dirs[1])
	waitUntil(t, "web-2 back", 10*time.Second, func() bool {
		hosts, _ := r.Hosts(ctx, "web", false)
		return len(hosts) == 3
	})
	out, errs, code := testkit.Run(t, "configd", "", "events", "web", "--once", "--server", addr)
	if code != 0 {
		t.Fatalf("events: %d %s", code, errs)
	}
	var got []string
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		var typ, host string
		for _, kv := range strings.Split(strings.Trim(line, "{}"), ",") {
			k, v, _ := strings.Cut(kv, ":")
			switch strings.Trim(k, `"`) {
			case "type":
				typ = strings.Trim(v, `"`)
			case "host":
				host = strings.Trim(v, `"`)
			}
		}
		if typ != "join" {
			got = append(got, typ+":"+host)
		}
	}
	if strings.Join(got, " ") != "leave:web-2 rejoin:web-2" {
		t.Fatalf("events after the joins: %v\n%s", got, out)
	}
	if all, _ := r.Hosts(ctx, "web", true); len(all) != 3 {
		t.Fatalf("hosts --all: %+v", all)
	}
}

// TestConfigdReplicaGrayAndCheck runs a primary and a read replica; agents
// watch the replica. A gray release by label reaches only the labelled
// host, a release failing the check command leaves the old files, and a
// promote reaches everyone.
func TestConfigdReplicaGrayAndCheck(t *testing.T) {
	const ns = "api/prod/main"
	primary := startConfigd(t, true, "--listen", "127.0.0.1:0", "--data-dir", t.TempDir(), "--watch-timeout", "1s")
	replica := startConfigd(t, true, "server", "--listen", "127.0.0.1:0", "--data-dir", t.TempDir(), "--follow", "http://"+primary.addr, "--watch-timeout", "1s")
	run := func(stdin string, args ...string) string {
		t.Helper()
		out, errs, code := testkit.Run(t, "configd", stdin, append(args, "--server", primary.addr)...)
		if code != 0 {
			t.Fatalf("configd %v: exit %d: %s", args, code, errs)
		}
		return out
	}
	run(`{"limit": 10}`, "publish", ns, "--file", "limits.json=-")
	cfgFile := filepath.Join(t.TempDir(), "agent.yaml")
	os.WriteFile(cfgFile, []byte(`namespaces:
  - name: api/prod/main
    check: 'grep -q limit "$CONFIGD_DIR/limits.json"'
`), 0o644)
	var agents []*configdProc
	var dirs []string
	for i, zone := range []string{"canary", "main"} {
		d := t.TempDir()
		dirs = append(dirs, filepath.Join(d, filepath.FromSlash(ns)))
		agents = append(agents, startConfigd(t, false, "agent", "--listen", "127.0.0.1:0", "--data-dir", t.TempDir(), "--cache-dir", d,
			"--config", cfgFile, "--server", replica.addr, "--host", fmt.Sprintf("api-%d", i), "--label", "zone="+zone, "--watch-timeout", "1s"))
	}
	content := func(i int) string {
		b, _ := os.ReadFile(filepath.Join(dirs[i], "current", "limits.json"))
		return string(b)
	}
	waitUntil(t, "both agents on release 1", 10*time.Second, func() bool { return content(0) == `{"limit": 10}` && content(1) == content(0) })

	run(`{"limit": 20}`, "gray", ns, "--label", "zone=canary", "--file", "limits.json=-", "-m", "canary first")
	waitUntil(t, "canary on the gray release", 10*time.Second, func() bool { return strings.Contains(content(0), "20") })
	time.Sleep(300 * time.Millisecond)
	if strings.Contains(content(1), "20") {
		t.Fatal("the gray release reached a host outside its label")
	}
	run("", "promote", ns)
	waitUntil(t, "every host on the promoted release", 10*time.Second, func() bool { return strings.Contains(content(1), "20") })

	// Valid JSON, but the check command refuses it: old files stay.
	run(`{"max": 5}`, "publish", ns, "--file", "limits.json=-")
	waitUntil(t, "failed check reported", 10*time.Second, func() bool {
		out := run("", "status", ns, "3")
		return strings.Count(out, "api-") == 2 && strings.Contains(out, `"failed":["api-0","api-1"]`)
	})
	if !strings.Contains(content(0), "20") || !strings.Contains(content(1), "20") {
		t.Fatalf("failed check replaced the files: %q %q", content(0), content(1))
	}
	if _, body := get(t, agents[0].url("/v1/status")); !strings.Contains(body, "check command failed") {
		t.Fatalf("agent status does not show the failed check:\n%s", body)
	}
	if d := run("", "diff", ns, "2", "3"); !strings.Contains(d, `-{"limit": 20}`) || !strings.Contains(d, `+{"max": 5}`) {
		t.Fatalf("diff 2 3:\n%s", d)
	}
	run("", "rollback", ns, "--to", "2")
	if out := run("", "history", ns); strings.Count(out, "\n") != 5 || !strings.Contains(out, `"action":"rollback"`) {
		t.Fatalf("history:\n%s", out)
	}
}
