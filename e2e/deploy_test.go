package e2e

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/opskit/opskit/internal/testkit"
)

// deployPackage writes a tar.gz release of app "web" and returns a task for it.
func deployPackage(t *testing.T, dir, id, version, manifest string) string {
	t.Helper()
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	tw := tar.NewWriter(zw)
	for name, body := range map[string]string{"VERSION": version + "\n", "deploy.yaml": manifest} {
		tw.WriteHeader(&tar.Header{Name: name, Mode: 0o644, Size: int64(len(body)), Typeflag: tar.TypeReg})
		tw.Write([]byte(body))
	}
	tw.Close()
	zw.Close()
	pkg := filepath.Join(dir, "web-"+version+".tar.gz")
	os.WriteFile(pkg, buf.Bytes(), 0o644)
	sum := sha256.Sum256(buf.Bytes())
	task := filepath.Join(dir, id+".json")
	b, _ := json.Marshal(map[string]string{"id": id, "app": "web", "version": version, "package": pkg, "sha256": hex.EncodeToString(sum[:])})
	os.WriteFile(task, b, 0o644)
	return task
}

var statusPID = regexp.MustCompile(`web:server\s+RUNNING\s+pid=(\d+)`)

func programPID(t *testing.T, addr string) (int, string) {
	t.Helper()
	out, errOut, code := testkit.Run(t, "deploy", "", "status", "--addr", addr)
	if code != 0 {
		t.Fatalf("deploy status: exit %d: %s", code, errOut)
	}
	m := statusPID.FindStringSubmatch(out)
	if m == nil {
		return 0, out
	}
	pid, _ := strconv.Atoi(m[1])
	return pid, out
}

func waitPID(t *testing.T, addr string, not int) int {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		pid, out := programPID(t, addr)
		if pid != 0 && pid != not {
			return pid
		}
		if time.Now().After(deadline) {
			t.Fatalf("no running web:server other than pid %d:\n%s", not, out)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestDeployAgentEndToEnd: a task installs and starts a release; the agent
// killed with -9 and restarted re-adopts the program without restarting
// it, and still restarts it when it dies; a release failing its health
// check is rolled back; a corrupt package fails and changes nothing.
func TestDeployAgentEndToEnd(t *testing.T) {
	dir := t.TempDir()
	dataDir := t.TempDir()
	var pids []int
	t.Cleanup(func() {
		for _, pid := range pids {
			syscall.Kill(-pid, syscall.SIGKILL)
		}
	})
	manifest := "programs:\n  - name: server\n    command: [sh, -c, 'cat VERSION; exec sleep 1000']\n    startsecs: 200ms\n" +
		"hooks:\n  health: {command: [test, -f, VERSION], timeout: 2s}\n"
	args := []string{"--poll-interval", "50ms", "--health-interval", "50ms"}
	agent := testkit.Start(t, "deploy", testkit.StartOptions{DataDir: dataDir}, args...)

	out, errOut, code := testkit.Run(t, "deploy", "", "apply", "--remote", "--addr", agent.Addr, deployPackage(t, dir, "t1", "1.0", manifest))
	if code != 0 || !strings.Contains(out, `"state":"done"`) {
		t.Fatalf("apply 1.0: exit %d\n%s\n%s", code, out, errOut)
	}
	first := waitPID(t, agent.Addr, 0)
	pids = append(pids, first)
	if out, _, _ := testkit.Run(t, "deploy", "", "logs", "--addr", agent.Addr, "web:server"); !strings.Contains(out, "1.0") {
		t.Errorf("logs: %q", out)
	}

	// The agent crashes; its program does not.
	agent.Kill()
	if syscall.Kill(first, 0) != nil {
		t.Fatal("the program died with the agent")
	}
	agent = testkit.Start(t, "deploy", testkit.StartOptions{DataDir: dataDir}, args...)
	if pid, out := programPID(t, agent.Addr); pid != first || !strings.Contains(out, "adopted") {
		t.Fatalf("after the agent's restart: want pid %d adopted, got\n%s", first, out)
	}
	syscall.Kill(first, syscall.SIGKILL)
	second := waitPID(t, agent.Addr, first)
	pids = append(pids, second)

	// A release whose health check fails is rolled back.
	bad := strings.Replace(manifest, "[test, -f, VERSION], timeout: 2s", "[test, -f, MISSING], timeout: 300ms", 1)
	out, errOut, code = testkit.Run(t, "deploy", "", "apply", "--remote", "--addr", agent.Addr, deployPackage(t, dir, "t2", "2.0", bad))
	if code != 1 || !strings.Contains(out, `"rolled_back":true`) {
		t.Fatalf("apply 2.0 with failing health: exit %d\n%s\n%s", code, out, errOut)
	}
	rels, _, _ := testkit.Run(t, "deploy", "", "releases", "--addr", agent.Addr, "web")
	if !regexp.MustCompile(`\* 1\.0 `).MatchString(rels) {
		t.Fatalf("releases after rollback:\n%s", rels)
	}
	third := waitPID(t, agent.Addr, 0)
	pids = append(pids, third)

	// A corrupt package fails the task locally and leaves current alone.
	task := deployPackage(t, dir, "t3", "3.0", manifest)
	b, _ := os.ReadFile(task)
	b = regexp.MustCompile(`"sha256":"[0-9a-f]+"`).ReplaceAll(b, []byte(`"sha256":"`+strings.Repeat("ab", 32)+`"`))
	os.WriteFile(task, b, 0o644)
	out, errOut, code = testkit.Run(t, "deploy", "", "apply", "--data-dir", dataDir, task)
	if code != 1 || !strings.Contains(errOut, "sha256 mismatch") {
		t.Fatalf("corrupt package: exit %d\n%s\n%s", code, out, errOut)
	}
	if target, _ := os.Readlink(filepath.Join(dataDir, "apps/web/current")); target != "releases/1.0" {
		t.Fatalf("current -> %q", target)
	}
	// Stopping by the CLI stops it for good.
	if _, errOut, code := testkit.Run(t, "deploy", "", "stop", "--addr", agent.Addr, "web:server"); code != 0 {
		t.Fatalf("stop: %s", errOut)
	}
	if out, _, _ := testkit.Run(t, "deploy", "", "status", "--addr", agent.Addr); !strings.Contains(out, "STOPPED") {
		t.Fatalf("status after stop:\n%s", out)
	}
}
