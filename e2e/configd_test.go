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
