package e2e

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/opskit/opskit/internal/testkit"
)

// deployerManifest's hooks read flag files in the agent's data dir
// (<data-dir>/apps/<app>/releases/<v> is four levels down): "slow" and
// "hang" make pre_start sleep, "unhealthy" fails the health hook.
const deployerManifest = `hooks:
  pre_start:
    command: [sh, -c, 'd="$DEPLOY_RELEASE_DIR/../../../.."; if [ -e "$d/slow" ]; then sleep 3; fi; if [ -e "$d/hang" ]; then sleep 60; fi']
    timeout: 90s
  health:
    command: [sh, -c, 'test ! -e "$DEPLOY_RELEASE_DIR/../../../../unhealthy"']
    timeout: 1s
`

// packages serves tar.gz releases over loopback HTTP.
type packages struct {
	mu    sync.Mutex
	files map[string][]byte
	srv   *httptest.Server
}

func newPackages(t *testing.T) *packages {
	p := &packages{files: map[string][]byte{}}
	p.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p.mu.Lock()
		b, ok := p.files[r.URL.Path]
		p.mu.Unlock()
		if !ok {
			http.NotFound(w, r)
			return
		}
		w.Write(b)
	}))
	t.Cleanup(p.srv.Close)
	return p
}

// add builds app-version.tar.gz and returns its URL and sha256.
func (p *packages) add(app, version string) (string, string) {
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	tw := tar.NewWriter(zw)
	for _, f := range []struct{ name, body string }{{"VERSION", version + "\n"}, {"deploy.yaml", deployerManifest}} {
		tw.WriteHeader(&tar.Header{Name: f.name, Mode: 0o644, Size: int64(len(f.body)), Typeflag: tar.TypeReg})
		tw.Write([]byte(f.body))
	}
	tw.Close()
	zw.Close()
	path := fmt.Sprintf("/%s-%s.tar.gz", app, version)
	p.mu.Lock()
	p.files[path] = buf.Bytes()
	p.mu.Unlock()
	sum := sha256.Sum256(buf.Bytes())
	return p.srv.URL + path, hex.EncodeToString(sum[:])
}

type agentProc struct {
	name string
	proc *testkit.Proc
	args []string
}

// startAgents starts n deploy agents named prefix00.. in parallel, each a
// process with its own data dir (and so its own root).
func startAgents(t *testing.T, prefix string, n int, extra ...string) []*agentProc {
	t.Helper()
	testkit.Binary(t, "deploy") // build once before the parallel starts
	out := make([]*agentProc, n)
	var wg sync.WaitGroup
	errs := make(chan string, n)
	for i := range n {
		out[i] = &agentProc{name: fmt.Sprintf("%s%02d", prefix, i)}
		out[i].args = append([]string{"--host-name", out[i].name, "--poll-wait", "2s", "--health-interval", "100ms",
			"--host-interval", "0"}, extra...)
	}
	// testkit.Start must run on the test goroutine to fail it; start the
	// processes from it but wait for them together.
	for _, a := range out {
		a.proc = testkit.Start(t, "deploy", testkit.StartOptions{NoWaitReady: true}, a.args...)
	}
	for _, a := range out {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
				if resp, err := http.Get(a.proc.URL("/readyz")); err == nil {
					resp.Body.Close()
					if resp.StatusCode == 200 {
						return
					}
				}
			}
			errs <- a.name + " not ready"
		}()
	}
	wg.Wait()
	close(errs)
	for e := range errs {
		t.Fatal(e)
	}
	return out
}

// current returns the release an agent's app points at ("" if none).
func (a *agentProc) current(app string) string {
	l, err := os.Readlink(filepath.Join(a.proc.DataDir, "apps", app, "current"))
	if err != nil {
		return ""
	}
	return filepath.Base(l)
}

func (a *agentProc) flag(t *testing.T, name string, on bool) {
	t.Helper()
	p := filepath.Join(a.proc.DataDir, name)
	if on {
		if err := os.WriteFile(p, nil, 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	os.Remove(p)
}

// taskRecords returns the ids of the agent's task records of a deploy.
func (a *agentProc) taskRecords(t *testing.T, deployID string) map[string]map[string]any {
	t.Helper()
	files, _ := filepath.Glob(filepath.Join(a.proc.DataDir, "tasks", deployID+"-*.json"))
	out := map[string]map[string]any{}
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		var rec map[string]any
		json.Unmarshal(b, &rec)
		out[strings.TrimSuffix(filepath.Base(f), ".json")] = rec
	}
	return out
}

func writeHostsFile(t *testing.T, path string, apps map[string][]*agentProc) {
	t.Helper()
	var b strings.Builder
	b.WriteString("apps:\n")
	names := make([]string, 0, len(apps))
	for app := range apps {
		names = append(names, app)
	}
	slices.Sort(names)
	for _, app := range names {
		fmt.Fprintf(&b, "  %s:\n    prod:\n", app)
		for _, a := range apps[app] {
			fmt.Fprintf(&b, "      - {name: %s, addr: %s}\n", a.name, a.proc.Addr)
		}
	}
	if err := os.WriteFile(path, []byte(b.String()), 0o644); err != nil {
		t.Fatal(err)
	}
}

type deployView struct {
	ID         string    `json:"id"`
	State      string    `json:"state"`
	Error      string    `json:"error"`
	Batch      int       `json:"batch"`
	BatchSizes []int     `json:"batch_sizes"`
	Started    time.Time `json:"started"`
	Finished   time.Time `json:"finished"`
	Hosts      []struct {
		Host     string `json:"host"`
		Batch    int    `json:"batch"`
		State    string `json:"state"`
		TaskID   string `json:"task_id"`
		Previous string `json:"previous"`
		Error    string `json:"error"`
		Rollback *struct {
			Version string `json:"version"`
			State   string `json:"state"`
		} `json:"rollback"`
	} `json:"hosts"`
}

func getDeploy(t *testing.T, addr, id string) deployView {
	t.Helper()
	var d deployView
	resp, err := http.Get("http://" + addr + "/v1/deploys/" + id)
	if err != nil {
		return deployView{State: "unreachable"}
	}
	defer resp.Body.Close()
	json.NewDecoder(resp.Body).Decode(&d)
	return d
}

func waitDeploy(t *testing.T, addr, id string, within time.Duration, ok func(deployView) bool) deployView {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		d := getDeploy(t, addr, id)
		if ok(d) {
			return d
		}
		if time.Now().After(deadline) {
			t.Fatalf("deploy %s: %+v", id, d)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// submitWait runs `deployer submit --wait` and returns its JSON lines and
// exit code.
func submitWait(t *testing.T, addr, app, version, url, sum string) ([]map[string]any, int, string) {
	t.Helper()
	out, errOut, code := testkit.Run(t, "deployer", "", "submit", "--addr", addr, "--app", app, "--version", version,
		"--artifact", url, "--sha256", sum, "--wait")
	var lines []map[string]any
	for _, l := range strings.Split(strings.TrimSpace(out), "\n") {
		var m map[string]any
		if err := json.Unmarshal([]byte(l), &m); err != nil {
			t.Fatalf("submit --wait printed %q: %v", l, err)
		}
		lines = append(lines, m)
	}
	return lines, code, errOut
}

func deployIDOf(lines []map[string]any) string {
	if len(lines) == 0 {
		return ""
	}
	s, _ := lines[0]["deploy"].(string)
	return s
}

// section runs one stage of a test whose stages share processes (a
// subtest's processes would end with it).
func section(t *testing.T, name string, fn func()) {
	t.Helper()
	t.Log("== " + name)
	fn()
}

func TestDeployerRollsOutAcrossFiftyAgents(t *testing.T) {
	pkgs := newPackages(t)
	dir := t.TempDir()
	addr := testkit.FreeAddr(t)
	hostsFile := filepath.Join(dir, "hosts.yaml")
	appsFile := filepath.Join(dir, "apps.yaml")
	os.WriteFile(hostsFile, []byte("apps: {}\n"), 0o644)
	os.WriteFile(appsFile, []byte(`apps:
  web: {batches: [1, "10%", "50%", "100%"], step_timeout: 30s}
  slow: {batches: ["100%"], step_timeout: 3s, on_failure: hold}
`), 0o644)
	dataDir := t.TempDir()
	deployerArgs := []string{"--listen", addr, "--hosts", hostsFile, "--apps", appsFile, "--tick", "100ms", "--lease-ttl", "2s", "--max-wait", "5s"}
	dep := testkit.Start(t, "deployer", testkit.StartOptions{DataDir: dataDir}, deployerArgs...)
	agents := startAgents(t, "h", 50, "--deployer", "http://"+addr)
	writeHostsFile(t, hostsFile, map[string][]*agentProc{"web": agents, "slow": agents[40:45]})
	atAll := func(app, want string, among []*agentProc) {
		t.Helper()
		for _, a := range among {
			if got := a.current(app); got != want {
				t.Errorf("%s: %s at %q, want %q", a.name, app, got, want)
			}
		}
	}

	section(t, "staged deploy", func() {
		url, sum := pkgs.add("web", "1")
		lines, code, errOut := submitWait(t, addr, "web", "1", url, sum)
		if code != 0 {
			t.Fatalf("submit --wait exit %d: %s", code, errOut)
		}
		d := getDeploy(t, addr, deployIDOf(lines))
		if d.State != "succeeded" || !slices.Equal(d.BatchSizes, []int{1, 5, 25, 19}) {
			t.Fatalf("deploy %s batches %v", d.State, d.BatchSizes)
		}
		done := 0
		for _, l := range lines {
			if l["kind"] == "done" {
				done++
			}
		}
		if done != 50 {
			t.Errorf("%d host done lines, want 50", done)
		}
		atAll("web", "1", agents)
	})

	section(t, "corrupt artifact fails batch 1 and rolls back", func() {
		url, _ := pkgs.add("web", "2")
		_, wrong := pkgs.add("web", "2-other")
		lines, code, _ := submitWait(t, addr, "web", "2", url, wrong)
		if code == 0 {
			t.Fatal("submit --wait exit 0 for a corrupt artifact")
		}
		d := getDeploy(t, addr, deployIDOf(lines))
		if d.State != "rolled_back" || !strings.Contains(d.Error, "batch 1: 1 of 1 hosts failed") {
			t.Errorf("deploy %s: %s", d.State, d.Error)
		}
		if h := d.Hosts[0]; h.State != "failed" || !strings.Contains(h.Error, "sha256") {
			t.Errorf("h00: %s %s", h.State, h.Error)
		}
		for _, h := range d.Hosts[1:] {
			if h.TaskID != "" {
				t.Errorf("%s got a task after batch 1 failed", h.Host)
			}
		}
		atAll("web", "1", agents)
	})

	section(t, "health failing in batch 2 rolls back batches 1 and 2", func() {
		agents[3].flag(t, "unhealthy", true)
		defer agents[3].flag(t, "unhealthy", false)
		url, sum := pkgs.add("web", "3")
		lines, code, _ := submitWait(t, addr, "web", "3", url, sum)
		if code == 0 {
			t.Fatal("submit --wait exit 0")
		}
		d := getDeploy(t, addr, deployIDOf(lines))
		if d.State != "rolled_back" || !strings.Contains(d.Error, "batch 2: 1 of 5 hosts failed") {
			t.Fatalf("deploy %s: %s", d.State, d.Error)
		}
		for _, h := range d.Hosts {
			switch {
			case h.Batch > 1:
				if h.TaskID != "" {
					t.Errorf("%s of batch %d got a task", h.Host, h.Batch+1)
				}
			case h.Host == "h03":
				if h.State != "failed" || !strings.Contains(h.Error, "rolled back to 1") {
					t.Errorf("h03: %s %s", h.State, h.Error)
				}
			default:
				if h.Rollback == nil || h.Rollback.State != "done" || h.Rollback.Version != "1" || h.Previous != "1" {
					t.Errorf("%s: rollback %+v previous %q", h.Host, h.Rollback, h.Previous)
				}
			}
		}
		atAll("web", "1", agents)
	})

	section(t, "agent killed mid-step fails at its deadline", func() {
		victim := agents[40]
		victim.flag(t, "hang", true)
		url, sum := pkgs.add("slow", "1")
		out, errOut, code := testkit.Run(t, "deployer", "", "submit", "--addr", addr, "--app", "slow", "--version", "1", "--artifact", url, "--sha256", sum)
		if code != 0 {
			t.Fatalf("submit: %s", errOut)
		}
		var sub map[string]any
		json.Unmarshal([]byte(out), &sub)
		id := sub["deploy"].(string)
		waitDeploy(t, addr, id, 10*time.Second, func(d deployView) bool { return len(d.Hosts) > 0 && d.Hosts[0].State == "running" })
		killed := time.Now()
		victim.proc.Kill()
		d := waitDeploy(t, addr, id, 15*time.Second, func(d deployView) bool { return d.State == "paused" })
		if time.Since(killed) > 5*time.Second {
			t.Errorf("the lost agent was failed %v after its kill (step_timeout 3s)", time.Since(killed))
		}
		if h := d.Hosts[0]; h.State != "failed" || !strings.Contains(h.Error, "deadline") {
			t.Errorf("lost host: %s %s", h.State, h.Error)
		}
		for _, h := range d.Hosts[1:] {
			if h.State != "done" {
				t.Errorf("%s: %s", h.Host, h.State)
			}
		}
		// The agent comes back (on the same data dir) for the tests below.
		victim.flag(t, "hang", false)
		victim.proc = testkit.Start(t, "deploy", testkit.StartOptions{DataDir: victim.proc.DataDir}, victim.args...)
		if _, _, code := testkit.Run(t, "deployer", "", "abort", "--addr", addr, id); code != 0 {
			t.Errorf("abort of the held deploy failed")
		}
	})

	section(t, "deployer kill -9 mid-batch resumes without repeating host steps", func() {
		// Batch 3 (h06..h30): the last eight hosts are slow, so the kill
		// finds it with some hosts done and some in flight.
		for _, a := range agents[23:31] {
			a.flag(t, "slow", true)
		}
		url, sum := pkgs.add("web", "5")
		out, _, code := testkit.Run(t, "deployer", "", "submit", "--addr", addr, "--app", "web", "--version", "5", "--artifact", url, "--sha256", sum)
		if code != 0 {
			t.Fatal("submit failed")
		}
		var sub map[string]any
		json.Unmarshal([]byte(out), &sub)
		id := sub["deploy"].(string)
		before := waitDeploy(t, addr, id, 20*time.Second, func(d deployView) bool {
			if d.Batch != 2 {
				return false
			}
			done, open := 0, 0
			for _, h := range d.Hosts {
				if h.Batch == 2 && h.State == "done" {
					done++
				}
				if h.Batch == 2 && (h.State == "dispatched" || h.State == "running") {
					open++
				}
			}
			return done > 0 && open > 0
		})
		dep.Kill()
		for _, a := range agents[23:31] {
			a.flag(t, "slow", false)
		}
		dep = testkit.Start(t, "deployer", testkit.StartOptions{DataDir: dataDir}, deployerArgs...)
		d := waitDeploy(t, addr, id, 30*time.Second, func(d deployView) bool { return d.State == "succeeded" })
		finishedBefore := map[string]bool{}
		for _, h := range before.Hosts {
			if h.State == "done" {
				finishedBefore[h.Host] = true
			}
		}
		for i, h := range d.Hosts {
			want := id + "-" + h.Host + "-1"
			if h.TaskID != want {
				t.Errorf("%s task %s, want %s", h.Host, h.TaskID, want)
			}
			recs := agents[i].taskRecords(t, id)
			if len(recs) != 1 || recs[want] == nil {
				t.Errorf("%s task records %v", h.Host, recs)
				continue
			}
			steps, _ := recs[want]["steps"].([]any)
			seen := map[string]bool{}
			for _, s := range steps {
				name := s.(map[string]any)["name"].(string)
				if seen[name] {
					t.Errorf("%s repeated step %s", h.Host, name)
				}
				seen[name] = true
			}
		}
		if len(finishedBefore) == 0 {
			t.Fatal("no host had finished before the kill")
		}
		atAll("web", "5", agents)
		_, metrics := get(t, "http://"+addr+"/metrics")
		if !strings.Contains(metrics, "opskit_deployer_leader 1") {
			t.Error("the restarted deployer does not hold the lease")
		}
	})

	section(t, "two deploys queued for one app run in order", func() {
		var ids []string
		for _, v := range []string{"6", "7"} {
			url, sum := pkgs.add("web", v)
			out, _, code := testkit.Run(t, "deployer", "", "submit", "--addr", addr, "--app", "web", "--version", v, "--artifact", url, "--sha256", sum)
			if code != 0 {
				t.Fatal("submit failed")
			}
			var sub map[string]any
			json.Unmarshal([]byte(out), &sub)
			ids = append(ids, sub["deploy"].(string))
		}
		first := waitDeploy(t, addr, ids[0], 30*time.Second, func(d deployView) bool { return d.State == "succeeded" })
		second := waitDeploy(t, addr, ids[1], 30*time.Second, func(d deployView) bool { return d.State == "succeeded" })
		if second.Started.Before(first.Finished) {
			t.Errorf("second started %v before the first finished %v", second.Started, first.Finished)
		}
		atAll("web", "7", agents)
		out, _, _ := testkit.Run(t, "deployer", "", "history", "--addr", addr, "--app", "web", "--limit", "3")
		if !strings.Contains(out, ids[1]) || !strings.Contains(out, ids[0]) {
			t.Errorf("history lacks the deploys:\n%s", out)
		}
	})
}

func TestDeployerOverKafka(t *testing.T) {
	kafka := testkit.Kafka(t, testkit.KafkaTopic("opskit-deploy-tasks", 2), testkit.KafkaTopic("opskit-deploy-results", 2))
	brokers := strings.Join(kafka.Addrs(), ",")
	pkgs := newPackages(t)
	dir := t.TempDir()
	agents := startAgents(t, "k", 3, "--kafka-brokers", brokers)
	hostsFile := filepath.Join(dir, "hosts.yaml")
	writeHostsFile(t, hostsFile, map[string][]*agentProc{"web": agents})
	appsFile := filepath.Join(dir, "apps.yaml")
	os.WriteFile(appsFile, []byte("apps: {web: {batches: [1, \"100%\"]}}\n"), 0o644)
	dep := testkit.Start(t, "deployer", testkit.StartOptions{}, "--hosts", hostsFile, "--apps", appsFile,
		"--kafka-brokers", brokers, "--tick", "100ms")
	url, sum := pkgs.add("web", "1")
	lines, code, errOut := submitWait(t, dep.Addr, "web", "1", url, sum)
	if code != 0 {
		t.Fatalf("submit --wait over Kafka: exit %d: %s\n%v", code, errOut, lines)
	}
	for _, a := range agents {
		if got := a.current("web"); got != "1" {
			t.Errorf("%s at %q", a.name, got)
		}
	}
}
