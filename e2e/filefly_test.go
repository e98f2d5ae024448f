package e2e

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/opskit/opskit/filefly/api"
	"github.com/opskit/opskit/internal/testkit"
)

// fileflyFleet is a filefly server and agents on loopback; each agent
// writes under its own directory (--dest-prefix) and allows only its srv/.
type fileflyFleet struct {
	server *testkit.Proc
	agents []*testkit.Proc
	prefix []string
}

func startFileflyFleet(t *testing.T, n int, agentArgs func(i int) []string, serverArgs ...string) *fileflyFleet {
	t.Helper()
	f := &fileflyFleet{server: testkit.Start(t, "filefly", testkit.StartOptions{}, serverArgs...)}
	for i := range n {
		f.startAgent(t, i, "", agentArgs)
	}
	return f
}

// startAgent starts agent i (again, when dataDir and a listen address are given).
func (f *fileflyFleet) startAgent(t *testing.T, i int, dataDir string, agentArgs func(i int) []string, extra ...string) {
	t.Helper()
	if i >= len(f.prefix) {
		prefix := t.TempDir()
		if err := os.MkdirAll(filepath.Join(prefix, "srv"), 0o755); err != nil {
			t.Fatal(err)
		}
		f.prefix = append(f.prefix, prefix)
		f.agents = append(f.agents, nil)
	}
	args := []string{"--dest-prefix", f.prefix[i], "--allow-root", filepath.Join(f.prefix[i], "srv"),
		"--stall-timeout", "1s", "--report-interval", "200ms"}
	if agentArgs != nil {
		args = append(args, agentArgs(i)...)
	}
	args = append(args, extra...)
	f.agents[i] = testkit.Start(t, "filefly", testkit.StartOptions{DataDir: dataDir, Env: []string{"OPSKIT_MODE=agent"}}, args...)
}

func (f *fileflyFleet) hosts() string {
	var hs []string
	for _, a := range f.agents {
		hs = append(hs, a.Addr)
	}
	return strings.Join(hs, ",")
}

func randomFile(t *testing.T, size int) (string, string) {
	t.Helper()
	b := make([]byte, size)
	rand.Read(b)
	path := filepath.Join(t.TempDir(), "payload.bin")
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(b)
	return path, hex.EncodeToString(sum[:])
}

func fileSum(path string) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return "missing: " + err.Error()
	}
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])
}

// sendCmd starts `filefly send` without waiting for it.
func sendCmd(t *testing.T, args ...string) (*exec.Cmd, *bytes.Buffer, *bytes.Buffer) {
	t.Helper()
	cmd := exec.Command(testkit.Binary(t, "filefly"), append([]string{"send"}, args...)...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	return cmd, &out, &errb
}

func transferStatus(t *testing.T, server *testkit.Proc, id string) api.Transfer {
	t.Helper()
	code, body := get(t, server.URL("/v1/transfers/"+id))
	if code != 200 {
		t.Fatalf("status %s: %d %s", id, code, body)
	}
	var tr api.Transfer
	if err := json.Unmarshal([]byte(body), &tr); err != nil {
		t.Fatal(err)
	}
	return tr
}

func onlyTransfer(t *testing.T, server *testkit.Proc) string {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		code, body := get(t, server.URL("/v1/transfers"))
		var ts []api.Transfer
		if code == 200 && json.Unmarshal([]byte(body), &ts) == nil && len(ts) > 0 {
			return ts[len(ts)-1].ID
		}
	}
	t.Fatal("no transfer appeared")
	return ""
}

// waitHost waits until host i of the transfer holds at least min bytes.
func waitHostBytes(t *testing.T, server *testkit.Proc, id, host string, min int64) {
	t.Helper()
	for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		for _, h := range transferStatus(t, server, id).Hosts {
			if h.Host == host && h.Bytes >= min {
				return
			}
		}
	}
	t.Fatalf("host %s never held %d bytes", host, min)
}

func waitDone(t *testing.T, server *testkit.Proc, id string, within time.Duration) api.Transfer {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		tr := transferStatus(t, server, id)
		if tr.Done {
			return tr
		}
		if time.Now().After(deadline) {
			t.Fatalf("transfer not done within %s: %+v", within, tr.Hosts)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// TestFileflyTreeSurvivesDeadRelayAndCorruptPiece sends a file to 20
// agent processes over a binary tree, kills -9 a relay near the top in
// the middle of the transfer and has another relay corrupt a piece: every
// other host ends with the exact file, the dead one is reported.
func TestFileflyTreeSurvivesDeadRelayAndCorruptPiece(t *testing.T) {
	const agents, size = 20, 24 << 20
	const corruptRelay, deadRelay = 1, 0 // the server's two children
	fleet := startFileflyFleet(t, agents, func(i int) []string {
		if i == corruptRelay {
			return []string{"--test-corrupt-piece", "5"}
		}
		return nil
	}, "--lost-after", "2s")
	payload, sum := randomFile(t, size)
	cmd, out, errb := sendCmd(t, payload, "--server", fleet.server.Addr, "--hosts", fleet.hosts(),
		"--dest", "/srv/app/payload.bin", "--mode", "0640", "--rate", "12MB/s", "--timeout", "25s",
		"--wait", "--interval", "200ms")
	id := onlyTransfer(t, fleet.server)
	dead := fleet.agents[deadRelay]
	waitHostBytes(t, fleet.server, id, dead.Addr, 4<<20)
	dead.Kill()
	err := cmd.Wait()
	if cmd.ProcessState.ExitCode() != 1 {
		t.Fatalf("send exit %v, want 1 (the dead relay failed)\nstderr:\n%s", err, errb)
	}
	if !strings.Contains(errb.String(), "1 of 20 hosts failed: "+dead.Addr) || !strings.Contains(errb.String(), "agent lost") {
		t.Errorf("final table does not list only the dead relay:\n%s", errb)
	}
	tr := transferStatus(t, fleet.server, id)
	reattached, corrupt := 0, 0
	for i, h := range tr.Hosts {
		if i == deadRelay {
			if api.OK(h.State) {
				t.Errorf("dead relay reported %s", h.State)
			}
			continue
		}
		if h.State != api.StateDone || !h.SHA256Verified {
			t.Errorf("host %d %s: %s %q", i, h.Host, h.State, h.Error)
		}
		dest := filepath.Join(fleet.prefix[i], "srv/app/payload.bin")
		if got := fileSum(dest); got != sum {
			t.Errorf("host %d: sha256 %s, want %s", i, got, sum)
		}
		if info, err := os.Stat(dest); err == nil && info.Mode().Perm() != 0o640 {
			t.Errorf("host %d: mode %v, want 0640", i, info.Mode().Perm())
		}
		reattached += h.Reattached
		corrupt += h.CorruptPieces
	}
	if reattached == 0 {
		t.Error("no child of the dead relay re-attached")
	}
	if corrupt == 0 {
		t.Error("the corrupted piece was not detected")
	}
	// Progress lines are JSON, one per host change.
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	var p struct {
		Host, State string
		Bytes, Size int64
	}
	if err := json.Unmarshal([]byte(lines[len(lines)-1]), &p); err != nil || p.Size != size {
		t.Errorf("progress line %q: %v", lines[len(lines)-1], err)
	}
}

// TestFileflyResumesAfterRestartsAndSkipsHolders restarts the server and an
// agent (kill -9) mid-transfer on a chain; the transfer still completes.
// A second send of the same file moves no bytes.
func TestFileflyResumesAfterRestartsAndSkipsHolders(t *testing.T) {
	const size = 20 << 20
	fleet := startFileflyFleet(t, 4, nil)
	payload, sum := randomFile(t, size)
	cmd, _, errb := sendCmd(t, payload, "--server", fleet.server.Addr, "--hosts", fleet.hosts(),
		"--dest", "/srv/payload.bin", "--topology", "chain", "--rate", "8MB/s", "--timeout", "40s")
	if err := cmd.Wait(); err != nil {
		t.Fatalf("send: %v\n%s", err, errb)
	}
	id := onlyTransfer(t, fleet.server)
	last := fleet.agents[3]
	waitHostBytes(t, fleet.server, id, last.Addr, 4<<20)

	// Crash and restart the last agent of the chain on the same port and data.
	last.Kill()
	fleet.startAgent(t, 3, last.DataDir, nil, "--listen", last.Addr)
	// Crash and restart the server on the same port and data.
	srvDir, srvAddr := fleet.server.DataDir, fleet.server.Addr
	fleet.server.Kill()
	time.Sleep(300 * time.Millisecond)
	fleet.server = testkit.Start(t, "filefly", testkit.StartOptions{DataDir: srvDir}, "--listen", srvAddr)

	tr := waitDone(t, fleet.server, id, 40*time.Second)
	for i, h := range tr.Hosts {
		if h.State != api.StateDone {
			t.Errorf("host %d: %s %q", i, h.State, h.Error)
		}
		if got := fileSum(filepath.Join(fleet.prefix[i], "srv/payload.bin")); got != sum {
			t.Errorf("host %d: sha256 %s, want %s", i, got, sum)
		}
	}
	// The restarted agent kept its bitmap: this process fetched only the rest.
	if fetched := fileflyMetric(t, fleet.agents[3], "opskit_filefly_agent_fetched_bytes_total"); fetched <= 0 || fetched >= size {
		t.Errorf("restarted agent fetched %v bytes, want some but less than the file: it did not resume", fetched)
	}

	out, stderr, code := testkit.Run(t, "filefly", "", "send", payload, "--server", srvAddr, "--hosts", fleet.hosts(),
		"--dest", "/srv/payload.bin", "--wait")
	if code != 0 {
		t.Fatalf("re-send exit %d\n%s\n%s", code, out, stderr)
	}
	id2 := onlyTransfer(t, fleet.server)
	for i, h := range transferStatus(t, fleet.server, id2).Hosts {
		if h.State != api.StateSkipped || h.BytesFetched != 0 {
			t.Errorf("re-send host %d: %s, %d bytes fetched", i, h.State, h.BytesFetched)
		}
	}
}

// TestFileflyRefusesDestinationsOutsideRoots: `..` and a symlink out of the
// allowed root are refused, and send says which hosts failed.
// The fleet runs with an agent token, so jobs are signed.
func TestFileflyRefusesDestinationsOutsideRoots(t *testing.T) {
	tokenFile := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(tokenFile, []byte("fleet-secret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	fleet := startFileflyFleet(t, 1, func(int) []string { return []string{"--token-file", tokenFile} }, "--agent-token-file", tokenFile)
	outside := t.TempDir()
	if err := os.Symlink(outside, filepath.Join(fleet.prefix[0], "srv", "escape")); err != nil {
		t.Fatal(err)
	}
	payload, _ := randomFile(t, 1<<20)
	for _, dest := range []string{"/srv/../evil.bin", "/srv/escape/evil.bin", "/srv"} {
		t.Run(dest, func(t *testing.T) {
			out, stderr, code := testkit.Run(t, "filefly", "", "send", payload, "--server", fleet.server.Addr,
				"--hosts", fleet.hosts(), "--dest", dest, "--wait")
			if code != 1 || !strings.Contains(stderr, "1 of 1 hosts failed") {
				t.Fatalf("exit %d, want 1 with the host listed\n%s\n%s", code, out, stderr)
			}
		})
	}
	out, stderr, code := testkit.Run(t, "filefly", "", "send", payload, "--server", fleet.server.Addr,
		"--hosts", fleet.hosts(), "--dest", "/srv/inside.bin", "--wait")
	if code != 0 {
		t.Fatalf("signed send inside the root: exit %d\n%s\n%s", code, out, stderr)
	}
	// A job the server did not sign is refused.
	code, _ = postJSON(t, "http://"+fleet.agents[0].Addr+"/v1/jobs", "fleet-secret", `{"id":"forged","sources":["http://127.0.0.1:1"],"dest":"/srv/x"}`)
	if code != 400 && code != 403 {
		t.Errorf("unsigned job: %d", code)
	}
	entries, _ := os.ReadDir(outside)
	if len(entries) != 0 {
		t.Errorf("a file was written outside the root: %v", entries)
	}
	if _, err := os.Stat(filepath.Join(filepath.Dir(fleet.prefix[0]), "evil.bin")); err == nil {
		t.Error("a file was written above the root")
	}
}

func fileflyMetric(t *testing.T, p *testkit.Proc, name string) float64 {
	t.Helper()
	_, body := get(t, p.URL("/metrics"))
	for _, line := range strings.Split(body, "\n") {
		if v, ok := strings.CutPrefix(line, name+" "); ok {
			var f float64
			fmt.Sscan(v, &f)
			return f
		}
	}
	t.Fatalf("%s: no metric %s", p.Name, name)
	return 0
}

func postJSON(t *testing.T, url, token, body string) (int, string) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, url, strings.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}
