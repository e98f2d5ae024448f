package testkit

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
	"syscall"
	"testing"
	"time"
)

// builds caches the binaries built by this test process: building is the
// slow part of an end-to-end test and the binaries do not change during a run.
var builds struct {
	sync.Mutex
	dir  string
	done map[string]error
}

// ModuleRoot returns the repository root (the directory holding go.mod).
func ModuleRoot(t testing.TB) string {
	t.Helper()
	dir, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			t.Fatal("go.mod not found above the test's directory")
		}
		dir = parent
	}
}

// Binary builds the opskit binary `name` (a top-level daemon folder, or a
// path such as internal/tools/kfake) once per test process and returns its path.
func Binary(t testing.TB, name string) string {
	t.Helper()
	builds.Lock()
	defer builds.Unlock()
	if builds.done == nil {
		dir, err := os.MkdirTemp("", "opskit-test-bin-")
		if err != nil {
			t.Fatal(err)
		}
		builds.dir = dir
		builds.done = map[string]error{}
	}
	out := filepath.Join(builds.dir, filepath.Base(name))
	err, ok := builds.done[name]
	if !ok {
		cmd := exec.Command("go", "build", "-o", out, "./"+name)
		cmd.Dir = ModuleRoot(t)
		msg, e := cmd.CombinedOutput()
		if e != nil {
			err = fmt.Errorf("go build ./%s: %v\n%s", name, e, msg)
		}
		builds.done[name] = err
	}
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// Proc is a running opskit daemon started by Start.
type Proc struct {
	Name    string
	Addr    string // the HTTP listener, HOST:PORT
	DataDir string
	cmd     *exec.Cmd
	logs    *syncBuffer
	exited  chan struct{}
	state   *os.ProcessState
}

// StartOptions tune Start.
type StartOptions struct {
	// DataDir reuses a data directory (e.g. to restart after a crash);
	// default is a fresh t.TempDir().
	DataDir string
	// Env adds variables (KEY=VALUE) to the daemon's environment.
	Env []string
	// NoWaitReady returns as soon as the process listens, before /readyz is 200.
	NoWaitReady bool
}

// Start builds and runs the daemon `name` with args, on a free loopback
// port with its own data dir, and waits until /readyz answers 200. The
// process is killed at the end of the test, and its log is printed if the
// test failed.
func Start(t testing.TB, name string, opts StartOptions, args ...string) *Proc {
	t.Helper()
	bin := Binary(t, name)
	dataDir := opts.DataDir
	if dataDir == "" {
		dataDir = t.TempDir()
	}
	full := append([]string{"--listen", "127.0.0.1:0", "--data-dir", dataDir}, args...)
	cmd := exec.Command(bin, full...)
	logs := &syncBuffer{}
	cmd.Stdout = logs
	cmd.Stderr = logs
	cmd.Env = append(os.Environ(), opts.Env...)
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
	p := &Proc{Name: name, DataDir: dataDir, cmd: cmd, logs: logs, exited: make(chan struct{})}
	go func() {
		cmd.Wait()
		p.state = cmd.ProcessState
		close(p.exited)
	}()
	t.Cleanup(func() {
		p.Kill()
		if t.Failed() {
			t.Logf("--- %s log ---\n%s", name, p.Logs())
		}
	})
	deadline := time.Now().Add(30 * time.Second)
	for p.Addr == "" {
		if m := listenRE.FindStringSubmatch(logs.String()); m != nil {
			p.Addr = m[1]
			break
		}
		select {
		case <-p.exited:
			t.Fatalf("%s exited before listening (%v):\n%s", name, p.state, p.Logs())
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s did not start listening within 30s:\n%s", name, p.Logs())
		}
	}
	if !opts.NoWaitReady {
		p.WaitReady(t, time.Until(deadline))
	}
	return p
}

// listenRE finds the address in the kit's "starting" log line, in text or JSON format.
var listenRE = regexp.MustCompile(`(?:msg=starting .*?listen=|"msg":"starting".*?"listen":")([0-9.:\[\]a-f]+)`)

// WaitReady polls /readyz until it answers 200.
func (p *Proc) WaitReady(t testing.TB, within time.Duration) {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		resp, err := http.Get(p.URL("/readyz"))
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
		}
		select {
		case <-p.exited:
			t.Fatalf("%s exited while waiting for /readyz (%v):\n%s", p.Name, p.state, p.Logs())
		case <-time.After(25 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s not ready within %v:\n%s", p.Name, within, p.Logs())
		}
	}
}

// URL returns http://ADDR/path.
func (p *Proc) URL(path string) string { return "http://" + p.Addr + path }

// Logs returns what the daemon wrote to stdout and stderr so far.
func (p *Proc) Logs() string { return p.logs.String() }

// Stop sends SIGTERM and waits up to timeout for the exit; it returns the
// exit code, or -1 if the process had to be killed.
func (p *Proc) Stop(t testing.TB, timeout time.Duration) int {
	t.Helper()
	p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.exited:
		return p.state.ExitCode()
	case <-time.After(timeout):
		p.Kill()
		t.Errorf("%s did not exit within %v of SIGTERM", p.Name, timeout)
		return -1
	}
}

// Kill sends SIGKILL (a crash) and waits for the process to be gone.
func (p *Proc) Kill() {
	p.cmd.Process.Signal(syscall.SIGKILL)
	<-p.exited
}

// Wait waits for the process to exit on its own and returns its exit code.
func (p *Proc) Wait(ctx context.Context) (int, error) {
	select {
	case <-p.exited:
		return p.state.ExitCode(), nil
	case <-ctx.Done():
		return -1, ctx.Err()
	}
}

// Exited reports whether the process has exited.
func (p *Proc) Exited() bool {
	select {
	case <-p.exited:
		return true
	default:
		return false
	}
}

// Run runs an opskit binary as a command (e.g. `transfer push`) with stdin
// and returns stdout, stderr and the exit code.
func Run(t testing.TB, name string, stdin string, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	cmd := exec.Command(Binary(t, name), args...)
	cmd.Stdin = strings.NewReader(stdin)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	if err != nil {
		if _, ok := err.(*exec.ExitError); !ok {
			t.Fatalf("run %s: %v", name, err)
		}
	}
	return out.String(), errb.String(), cmd.ProcessState.ExitCode()
}

type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}
