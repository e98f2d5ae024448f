package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/opskit/opskit/internal/testkit"
)

// dfAgentConfig is a deploy agent's config with a diagnostics allowlist;
// h3's lacks "hello", so it refuses what the others run.
func dfAgentConfig(t *testing.T, dir, host string) string {
	t.Helper()
	cfg := "diagnostics:\n" +
		"  - {name: df, command: [df, -P], args: ['/[a-z/]*']}\n" +
		"  - {name: checkfail, command: [sh, -c, 'echo checking; exit 3']}\n"
	if host != "h3" {
		cfg += "  - {name: hello, command: [echo, hello], args: ['[a-z]+']}\n"
	}
	path := filepath.Join(dir, host+".yaml")
	if err := os.WriteFile(path, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// dfHostsFile writes deployer's static hosts file: web/prod on the real
// agents, and "ghost" on hosts whose agents never poll (its deploys stay
// running, so later ones queue behind).
func dfHostsFile(t *testing.T, path string, agents map[string]*testkit.Proc) {
	t.Helper()
	var b strings.Builder
	b.WriteString("apps:\n  web:\n    prod:\n")
	for _, h := range []string{"h1", "h2", "h3"} {
		fmt.Fprintf(&b, "      - {name: %s, addr: %q}\n", h, agents[h].Addr)
	}
	b.WriteString("  ghost:\n    prod:\n      - {name: ghost1, addr: \"127.0.0.1:9\"}\n")
	if err := os.WriteFile(path, []byte(b.String()), 0o644); err != nil {
		t.Fatal(err)
	}
}

// dfDeployer runs a deployer subcommand against d, with --addr right after
// the subcommand's words (later words may be a remote command's own).
func dfDeployer(t *testing.T, d *testkit.Proc, args ...string) (string, string, int) {
	t.Helper()
	words := 1
	if args[0] == "cron" || args[0] == "proc" {
		words = 2
	}
	full := append(append(append([]string{}, args[:words]...), "--addr", d.Addr), args[words:]...)
	return testkit.Run(t, "deployer", "", full...)
}

// TestDeployerFleetWork: three real deploy agents, a release deployed to
// them through deployer, then process control (a restart changes each
// program's pid, or only the chosen host's), host stats, diagnostics (run
// where allowed, refused per host where not, refused by deployer's own
// allowlist), a cron job run at once and recorded, and the status page in
// headless Chromium.
func TestDeployerFleetWork(t *testing.T) {
	chromium := testkit.RequireBinary(t, "chromium", "chromium")
	dir := t.TempDir()
	var pids []int
	t.Cleanup(func() {
		for _, pid := range pids {
			syscall.Kill(-pid, syscall.SIGKILL)
		}
	})
	hostsPath := filepath.Join(dir, "hosts.yaml")
	os.WriteFile(hostsPath, []byte("apps: {}\n"), 0o644)
	appsPath := filepath.Join(dir, "apps.yaml")
	os.WriteFile(appsPath, []byte("apps:\n  web: {batches: [\"100%\"], step_timeout: 30s}\n  ghost: {step_timeout: 10m}\n"), 0o644)
	dep := testkit.Start(t, "deployer", testkit.StartOptions{}, "--hosts", hostsPath, "--apps", appsPath,
		"--tick", "100ms", "--exec-allow", "df,hello,checkfail")

	agents := map[string]*testkit.Proc{}
	for _, h := range []string{"h1", "h2", "h3"} {
		agents[h] = testkit.Start(t, "deploy", testkit.StartOptions{}, "--config", dfAgentConfig(t, dir, h),
			"--deployer", "http://"+dep.Addr, "--host-name", h, "--poll-wait", "1s",
			"--poll-interval", "50ms", "--health-interval", "50ms", "--host-interval", "200ms")
	}
	dfHostsFile(t, hostsPath, agents)

	// A release of web with one program, deployed through deployer.
	manifest := "programs:\n  - name: server\n    command: [sh, -c, 'exec sleep 1000']\n    startsecs: 100ms\n"
	task := deployPackage(t, dir, "unused", "1.0", manifest)
	var pkg struct{ Package, SHA256 string }
	b, _ := os.ReadFile(task)
	json.Unmarshal(b, &pkg)
	out, errOut, code := dfDeployer(t, dep, "submit", "--app", "web", "--version", "1.0", "--artifact", pkg.Package, "--sha256", pkg.SHA256, "--wait")
	if code != 0 {
		t.Fatalf("submit web 1.0: exit %d\n%s\n%s", code, out, errOut)
	}
	before := map[string]int{}
	for h, a := range agents {
		before[h] = waitPID(t, a.Addr, 0)
		pids = append(pids, before[h])
	}

	// proc restart on every host: each program gets a new pid.
	out, errOut, code = dfDeployer(t, dep, "proc", "restart", "--app", "web", "server")
	if code != 0 || strings.Count(out, " ok ") != 3 {
		t.Fatalf("proc restart: exit %d\n%s\n%s", code, out, errOut)
	}
	after := map[string]int{}
	for h, a := range agents {
		after[h] = waitPID(t, a.Addr, before[h])
		pids = append(pids, after[h])
	}
	// ... and on one host only.
	out, errOut, code = dfDeployer(t, dep, "proc", "restart", "--app", "web", "--host", "h2", "web:server")
	if code != 0 || !strings.HasPrefix(out, "h2 ") || strings.Count(out, "\n") != 1 {
		t.Fatalf("proc restart --host h2: exit %d\n%s\n%s", code, out, errOut)
	}
	pids = append(pids, waitPID(t, agents["h2"].Addr, after["h2"]))
	for _, h := range []string{"h1", "h3"} {
		if pid, _ := programPID(t, agents[h].Addr); pid != after[h] {
			t.Errorf("%s's program was restarted by a restart of h2 (pid %d -> %d)", h, after[h], pid)
		}
	}
	if _, errOut, code := dfDeployer(t, dep, "proc", "restart", "--app", "web", "--host", "h9", "server"); code != 1 || !strings.Contains(errOut, "h9 is not a host of web/prod") {
		t.Errorf("unknown host: exit %d %s", code, errOut)
	}

	// Host stats per host, with the app's program.
	out, errOut, code = dfDeployer(t, dep, "stats", "--app", "web", "--json")
	var stats struct {
		Hosts []struct {
			Host     string
			Load1    float64
			Disks    []struct{ Mount string }
			Programs []struct {
				Name     string
				RSSBytes int64 `json:"rss_bytes"`
			}
			Error string
		}
	}
	if code != 0 || json.Unmarshal([]byte(out), &stats) != nil || len(stats.Hosts) != 3 {
		t.Fatalf("stats: exit %d\n%s\n%s", code, out, errOut)
	}
	for _, h := range stats.Hosts {
		if h.Error != "" || len(h.Programs) != 1 || h.Programs[0].Name != "web:server" || h.Programs[0].RSSBytes <= 0 || len(h.Disks) == 0 {
			t.Errorf("stats of %s: %+v", h.Host, h)
		}
	}

	// exec: h1 and h2 run it, h3's allowlist refuses it; exit 1.
	out, errOut, code = dfDeployer(t, dep, "exec", "--app", "web", "--", "hello", "fleet")
	if code != 1 {
		t.Fatalf("exec hello: exit %d\n%s\n%s", code, out, errOut)
	}
	for _, want := range []string{"h1: hello fleet\n", "h2: hello fleet\n", "h1: [exit 0]\n", "h2: [exit 0]\n", "h3: [refused: not allowed"} {
		if !strings.Contains(out, want) {
			t.Errorf("exec hello output lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, "h3: hello") || !strings.Contains(errOut, "failed on 1 of 3 hosts") {
		t.Errorf("exec hello: h3 ran it, or no summary:\n%s\n%s", out, errOut)
	}
	// An argument outside the pattern is refused by every agent.
	if out, _, code := dfDeployer(t, dep, "exec", "--app", "web", "--host", "h1", "hello", "Fleet;id"); code != 1 || !strings.Contains(out, "h1: [refused: not allowed: hello argument 1") {
		t.Errorf("exec with a bad argument: exit %d\n%s", code, out)
	}
	// A command outside deployer's own allowlist never reaches an agent.
	if _, errOut, code := dfDeployer(t, dep, "exec", "--app", "web", "uptime"); code != 1 || !strings.Contains(errOut, "HTTP 403") || !strings.Contains(errOut, "deployer's allowlist") {
		t.Errorf("exec outside --exec-allow: exit %d %s", code, errOut)
	}
	// A non-zero exit is reported with its code.
	if out, _, code := dfDeployer(t, dep, "exec", "--app", "web", "--host", "h3", "checkfail"); code != 1 || !strings.Contains(out, "h3: checking\nh3: [exit 3") {
		t.Errorf("exec exiting 3: exit %d\n%s", code, out)
	}
	// Lines arrive while the command runs: df's output per host.
	if out, _, code := dfDeployer(t, dep, "exec", "--app", "web", "--host", "h2", "df", "/"); code != 0 || !regexp.MustCompile(`(?m)^h2: Filesystem .*\nh2: .* /\nh2: \[exit 0\]$`).MatchString(out) {
		t.Errorf("exec df: exit %d\n%s", code, out)
	}

	// A cron job, run now (its schedule is tested with a fake clock in
	// deployer/fleet/cron), on one host in turn.
	out, errOut, code = dfDeployer(t, dep, "cron", "add", "--app", "web", "--schedule", "*/5 * * * *", "--target", "one", "--", "hello", "cron")
	var job struct {
		ID        string
		CreatedBy string `json:"created_by"`
		Next      time.Time
	}
	if code != 0 || json.Unmarshal([]byte(out), &job) != nil || job.ID == "" || job.CreatedBy != "local" || job.Next.Minute()%5 != 0 {
		t.Fatalf("cron add: exit %d\n%s\n%s", code, out, errOut)
	}
	for i, host := range []string{"h1", "h2", "h3"} {
		out, errOut, code = dfDeployer(t, dep, "cron", "run-now", job.ID)
		var run struct {
			Seq   int
			Hosts []struct {
				Host, Output string
				Refused      bool
			}
		}
		json.Unmarshal([]byte(out), &run)
		if run.Seq != i+1 || len(run.Hosts) != 1 || run.Hosts[0].Host != host {
			t.Fatalf("cron run-now #%d: exit %d\n%s\n%s", i+1, code, out, errOut)
		}
		if host == "h3" {
			if code != 1 || !run.Hosts[0].Refused {
				t.Errorf("cron on h3 (refused): exit %d %+v", code, run)
			}
		} else if code != 0 || run.Hosts[0].Output != "hello cron\n" {
			t.Errorf("cron on %s: exit %d %+v", host, code, run)
		}
	}
	out, _, _ = dfDeployer(t, dep, "cron", "runs", job.ID)
	if !strings.Contains(out, "#3 manual") || !strings.Contains(out, "h3: [refused: not allowed") || !strings.Contains(out, "h1: [exit 0] 11 bytes") {
		t.Errorf("cron runs:\n%s", out)
	}
	out, _, _ = dfDeployer(t, dep, "cron", "list", "--app", "web")
	if !strings.Contains(out, job.ID+"  web/prod  */5 * * * *  one") || !strings.Contains(out, "#3 ") {
		t.Errorf("cron list:\n%s", out)
	}
	_, body := get(t, dep.URL("/v1/audit"))
	for _, want := range []string{`"action": "cron_run"`, `"action": "exec"`, `"action": "proc"`, `"action": "cron_add"`} {
		if !strings.Contains(body, want) {
			t.Errorf("audit lacks %s", want)
		}
	}
	if _, errOut, code := dfDeployer(t, dep, "cron", "rm", job.ID); code != 0 {
		t.Fatalf("cron rm: %s", errOut)
	}
	if _, errOut, code := dfDeployer(t, dep, "cron", "runs", job.ID); code != 1 || !strings.Contains(errOut, "no such job") {
		t.Errorf("runs of a removed job: exit %d %s", code, errOut)
	}

	// The status page: web's deploy in the history, a ghost deploy running
	// (its agent never polls) and one queued behind it.
	var ids []string
	for _, v := range []string{"1", "2"} {
		out, errOut, code := dfDeployer(t, dep, "submit", "--app", "ghost", "--version", v, "--artifact", pkg.Package, "--sha256", pkg.SHA256)
		var d struct{ Deploy string }
		if code != 0 || json.Unmarshal([]byte(out), &d) != nil {
			t.Fatalf("submit ghost %s: exit %d\n%s\n%s", v, code, out, errOut)
		}
		ids = append(ids, d.Deploy)
	}
	dfWaitState(t, dep, ids[0], "running")
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	dom, err := exec.CommandContext(ctx, chromium, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
		"--user-data-dir="+t.TempDir(), "--virtual-time-budget=3000", "--dump-dom", dep.URL("/")).Output()
	if err != nil {
		t.Fatalf("chromium: %v", err)
	}
	var webID string
	_, hist := get(t, dep.URL("/v1/history?app=web"))
	if m := regexp.MustCompile(`"id": "([^"]+)"`).FindStringSubmatch(hist); m != nil {
		webID = m[1]
	}
	for _, want := range []string{
		`id="updated" data-ok="1"`,
		`class="finished" data-deploy="` + webID + `" data-state="succeeded"`,
		`class="deploy running" data-deploy="` + ids[0] + `" data-state="running"`,
		`data-host="ghost1" data-state="dispatched"`,
		`class="queued" data-deploy="` + ids[1] + `" data-state="queued"`,
	} {
		if webID == "" || !strings.Contains(string(dom), want) {
			t.Errorf("the page lacks %s", want)
		}
	}
	if t.Failed() {
		t.Logf("page:\n%s", dom)
	}
}

// dfWaitState polls a deploy until it reaches state.
func dfWaitState(t *testing.T, dep *testkit.Proc, id, state string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		_, body := get(t, dep.URL("/v1/deploys/"+id))
		if strings.Contains(body, `"state": "`+state+`"`) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("deploy %s not %s within 10s:\n%s", id, state, body)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
