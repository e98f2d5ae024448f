package kit

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/spf13/pflag"

	"github.com/opskit/opskit/configd/api"
)

// fakeConfigd records fleet registrations and leaves.
type fakeConfigd struct {
	mu     sync.Mutex
	regs   []api.DaemonRegistration
	leaves []string
	auth   []string
	status int // answer to registrations; 0 = 200
	srv    *httptest.Server
}

func newFakeConfigd(t *testing.T) *fakeConfigd {
	f := &fakeConfigd{}
	mux := http.NewServeMux()
	mux.HandleFunc("POST /v1/fleet/daemons", func(w http.ResponseWriter, r *http.Request) {
		var reg api.DaemonRegistration
		if err := json.NewDecoder(r.Body).Decode(&reg); err != nil {
			http.Error(w, err.Error(), 400)
			return
		}
		f.mu.Lock()
		defer f.mu.Unlock()
		f.auth = append(f.auth, r.Header.Get("Authorization"))
		if f.status != 0 {
			http.Error(w, "configd is unwell", f.status)
			return
		}
		f.regs = append(f.regs, reg)
	})
	mux.HandleFunc("DELETE /v1/fleet/daemons/{id}", func(w http.ResponseWriter, r *http.Request) {
		f.mu.Lock()
		f.leaves = append(f.leaves, r.PathValue("id"))
		f.mu.Unlock()
	})
	f.srv = httptest.NewServer(mux)
	t.Cleanup(f.srv.Close)
	return f
}

func (f *fakeConfigd) snapshot() ([]api.DaemonRegistration, []string, []string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]api.DaemonRegistration(nil), f.regs...), append([]string(nil), f.leaves...), append([]string(nil), f.auth...)
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestFleetRegistrationHeartbeatsAndLeaves: a daemon started with
// --configd registers what it is, heartbeats, and deregisters on a graceful
// stop.
func TestFleetRegistrationHeartbeatsAndLeaves(t *testing.T) {
	fc := newFakeConfigd(t)
	stop := make(chan struct{})
	spec := Spec{
		Name: "demo", Kind: "demo-agent", Listen: "127.0.0.1:0",
		Start: func(ctx context.Context, d *Daemon) error {
			d.AdvertiseListener("graphite", "0.0.0.0:2003")
			go func() { <-stop; d.Stop("test done") }()
			return nil
		},
	}
	done := make(chan int)
	var stderr strings.Builder
	go func() {
		code := Run(context.Background(), spec, []string{"--data-dir", t.TempDir(), "--configd-heartbeat", "20ms"},
			IO{In: strings.NewReader(""), Out: &strings.Builder{}, Err: &syncWriter{w: &stderr}},
			envOf(map[string]string{"OPSKIT_CONFIGD": fc.srv.URL, "OPSKIT_CONFIGD_TOKEN": "s3cret"}), nil)
		done <- code
	}()
	waitFor(t, "three heartbeats", func() bool { regs, _, _ := fc.snapshot(); return len(regs) >= 3 })
	close(stop)
	if code := <-done; code != ExitOK {
		t.Fatalf("exit %d", code)
	}
	regs, leaves, auth := fc.snapshot()
	reg := regs[0]
	host, _ := os.Hostname()
	if reg.Kind != "demo-agent" || reg.PID != os.Getpid() || reg.Host != host || reg.Version == "" || reg.Started.IsZero() ||
		!strings.HasPrefix(reg.Addr, "127.0.0.1:") || reg.ID != reg.Addr || reg.HeartbeatSeconds != 0.02 {
		t.Fatalf("registration %+v", reg)
	}
	// A wildcard listener is advertised under the host name.
	if got := reg.Listeners["graphite"]; got != host+":2003" {
		t.Fatalf("graphite listener advertised as %q", got)
	}
	if len(leaves) != 1 || leaves[0] != reg.ID {
		t.Fatalf("leaves %v, want [%s]", leaves, reg.ID)
	}
	if auth[0] != "Bearer s3cret" {
		t.Fatalf("authorization %q", auth[0])
	}
	if !regs[len(regs)-1].Started.Equal(reg.Started) {
		t.Fatal("start time changed between heartbeats")
	}
}

// TestFleetRegistrationFailureKeepsDaemonRunning: a configd that refuses
// (or is gone) is retried at every heartbeat, counted, logged once, and the
// daemon serves on; when configd recovers the daemon registers.
func TestFleetRegistrationFailureKeepsDaemonRunning(t *testing.T) {
	fc := newFakeConfigd(t)
	fc.status = http.StatusInternalServerError
	var metricsURL string
	ready := make(chan struct{})
	stop := make(chan struct{})
	spec := Spec{Name: "demo", Listen: "127.0.0.1:0", Start: func(ctx context.Context, d *Daemon) error {
		metricsURL = "http://" + d.Addr().String() + "/metrics"
		close(ready)
		go func() { <-stop; d.Stop("test done") }()
		return nil
	}}
	var stderr strings.Builder
	done := make(chan int)
	go func() {
		done <- Run(context.Background(), spec, []string{"--data-dir", t.TempDir(), "--configd", fc.srv.URL, "--configd-heartbeat", "20ms"},
			IO{In: strings.NewReader(""), Out: &strings.Builder{}, Err: &syncWriter{w: &stderr}}, noEnv, nil)
	}()
	<-ready
	waitFor(t, "failed heartbeats counted", func() bool {
		resp, err := http.Get(metricsURL)
		if err != nil {
			return false
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		return strings.Contains(string(body), `opskit_fleet_heartbeats_total{result="failed"} 3`)
	})
	fc.mu.Lock()
	fc.status = 0
	fc.mu.Unlock()
	waitFor(t, "registration after recovery", func() bool { regs, _, _ := fc.snapshot(); return len(regs) >= 1 })
	close(stop)
	if code := <-done; code != ExitOK {
		t.Fatalf("exit %d", code)
	}
	logs := stderr.String()
	if n := strings.Count(logs, "cannot register with configd"); n != 1 {
		t.Fatalf("outage warned %d times, want once:\n%s", n, logs)
	}
	if !strings.Contains(logs, "registered with configd") {
		t.Fatalf("no recovery line:\n%s", logs)
	}
}

// syncWriter lets the daemon's logger and the test share a builder.
type syncWriter struct {
	mu sync.Mutex
	w  *strings.Builder
}

func (s *syncWriter) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.w.Write(p)
}

func TestFleetFlags(t *testing.T) {
	cases := []struct {
		name    string
		define  func(fs *pflag.FlagSet)
		args    []string
		want    []string
		wantErr string
	}{
		{name: "off by default", want: nil},
		{name: "host:port gets a scheme", args: []string{"--configd", "cfg1:7160, http://cfg2:7160/"}, want: []string{"http://cfg1:7160", "http://cfg2:7160"}},
		{name: "bad URL", args: []string{"--configd", "http://bad host:7160"}, wantErr: "--configd"},
		{name: "zero heartbeat", args: []string{"--configd", "cfg:7160", "--configd-heartbeat", "0s"}, wantErr: "--configd-heartbeat"},
		{
			name:   "the daemon's own --configd list is reused",
			define: func(fs *pflag.FlagSet) { fs.StringSlice("configd", nil, "naming service") },
			args:   []string{"--configd", "a:7160,b:7160"},
			want:   []string{"http://a:7160", "http://b:7160"},
		},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			fs := pflag.NewFlagSet("demo", pflag.ContinueOnError)
			if c.define != nil {
				c.define(fs)
			}
			var o fleetOptions
			addFleetFlags(fs, &o)
			if err := fs.Parse(c.args); err != nil {
				t.Fatal(err)
			}
			err := o.resolve()
			if c.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), c.wantErr) {
					t.Fatalf("err %v, want %q", err, c.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if strings.Join(o.servers, " ") != strings.Join(c.want, " ") {
				t.Fatalf("servers %q, want %q", o.servers, c.want)
			}
		})
	}
}

func TestAdvertisedAddr(t *testing.T) {
	cases := []struct{ addr, want string }{
		{"127.0.0.1:7120", "127.0.0.1:7120"},
		{"0.0.0.0:7120", "web01:7120"},
		{"[::]:7120", "web01:7120"},
		{":7120", "web01:7120"},
		{"10.1.2.3:7120", "10.1.2.3:7120"},
		{"not an address", "not an address"},
	}
	for _, c := range cases {
		if got := advertisedAddr(c.addr, "web01"); got != c.want {
			t.Errorf("advertisedAddr(%q) = %q, want %q", c.addr, got, c.want)
		}
	}
}
