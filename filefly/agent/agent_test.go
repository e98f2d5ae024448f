package agent_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/opskit/opskit/filefly/agent"
	"github.com/opskit/opskit/filefly/api"
	"github.com/opskit/opskit/filefly/confine"
	"github.com/opskit/opskit/filefly/piece"
	"github.com/opskit/opskit/filefly/server"
)

type rig struct {
	server *server.Server
	srvURL string
	agents []*httptest.Server
	roots  []string
	token  []byte
}

func newRig(t *testing.T, n int, token []byte, corruptFirst bool) *rig {
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	mux := http.NewServeMux()
	ts := httptest.NewServer(mux)
	t.Cleanup(ts.Close)
	r := &rig{srvURL: ts.URL, token: token}
	r.server = server.New(server.Options{DataDir: t.TempDir(), URL: ts.URL, Token: token})
	if err := r.server.Start(ctx); err != nil {
		t.Fatal(err)
	}
	r.server.Register(mux)
	for i := range n {
		root := t.TempDir()
		if err := os.MkdirAll(filepath.Join(root, "srv"), 0o755); err != nil {
			t.Fatal(err)
		}
		roots, err := confine.NewRoots([]string{filepath.Join(root, "srv")})
		if err != nil {
			t.Fatal(err)
		}
		corrupt := -1
		if corruptFirst && i == 0 {
			corrupt = 1
		}
		a := agent.New(agent.Options{DataDir: t.TempDir(), Roots: roots, DestPrefix: root, Token: token, CorruptPiece: corrupt,
			StallTimeout: time.Second, ReportInterval: 50 * time.Millisecond})
		if err := a.Start(ctx); err != nil {
			t.Fatal(err)
		}
		amux := http.NewServeMux()
		a.Register(ctx, amux)
		as := httptest.NewServer(amux)
		t.Cleanup(as.Close)
		r.agents = append(r.agents, as)
		r.roots = append(r.roots, root)
	}
	return r
}

func (r *rig) upload(t *testing.T, data []byte) string {
	sum, _, _ := piece.HashFile(bytes.NewReader(data))
	req, _ := http.NewRequest(http.MethodPut, r.srvURL+"/v1/blobs/"+sum, bytes.NewReader(data))
	resp, err := http.DefaultClient.Do(req)
	if err != nil || resp.StatusCode != http.StatusCreated {
		t.Fatalf("upload: %v %v", err, resp)
	}
	resp.Body.Close()
	return sum
}

func (r *rig) hosts() []string {
	var hs []string
	for _, a := range r.agents {
		hs = append(hs, strings.TrimPrefix(a.URL, "http://"))
	}
	return hs
}

func (r *rig) wait(t *testing.T, id string) api.Transfer {
	for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		resp, err := http.Get(r.srvURL + "/v1/transfers/" + id)
		if err != nil {
			t.Fatal(err)
		}
		var tr api.Transfer
		json.NewDecoder(resp.Body).Decode(&tr)
		resp.Body.Close()
		if tr.Done {
			return tr
		}
	}
	t.Fatal("transfer not done")
	return api.Transfer{}
}

// TestChainWithTokenAndCorruptRelay: a signed chain of three agents where
// the first relay corrupts a piece; its child detects it, fetches it from
// the next holder (the server), and every copy ends intact.
func TestChainWithTokenAndCorruptRelay(t *testing.T) {
	r := newRig(t, 3, []byte("fleet-secret"), true)
	data := make([]byte, 5*piece.MinSize/2)
	rand.Read(data)
	sum := r.upload(t, data)
	tr, err := r.server.Create(context.Background(), api.SendRequest{SHA256: sum, Dest: "/srv/app/x.bin",
		Hosts: r.hosts(), Topology: api.TopologyChain, Mode: 0o600})
	if err != nil {
		t.Fatal(err)
	}
	tr = r.wait(t, tr.ID)
	for i, h := range tr.Hosts {
		if h.State != api.StateDone || !h.SHA256Verified {
			t.Errorf("host %d: %s %q", i, h.State, h.Error)
		}
		got, err := os.ReadFile(filepath.Join(r.roots[i], "srv/app/x.bin"))
		if err != nil || !bytes.Equal(got, data) {
			t.Errorf("host %d: file differs (%v)", i, err)
		}
		info, _ := os.Stat(filepath.Join(r.roots[i], "srv/app/x.bin"))
		if info != nil && info.Mode().Perm() != 0o600 {
			t.Errorf("host %d: mode %v", i, info.Mode().Perm())
		}
		if leftovers, _ := filepath.Glob(filepath.Join(r.roots[i], "srv/app/.filefly-*")); len(leftovers) > 0 {
			t.Errorf("host %d: temporary files left: %v", i, leftovers)
		}
	}
	if h := tr.Hosts[1]; h.CorruptPieces != 1 || h.Reattached != 0 || h.Source != tr.Hosts[0].Host && h.Source != "http://"+tr.Hosts[0].Host {
		t.Errorf("child of the corrupting relay: %d corrupt, %d re-attached, source %s; want 1, 0, its parent", h.CorruptPieces, h.Reattached, h.Source)
	}
}

// TestAgentRefusesUnsignedJobs: with a token, an agent refuses a request
// without it and a job the server did not sign.
func TestAgentRefusesUnsignedJobs(t *testing.T) {
	r := newRig(t, 1, []byte("fleet-secret"), false)
	m, _ := piece.Compute(bytes.NewReader([]byte("hello")), 5)
	job := api.Job{ID: "forged", Host: r.hosts()[0], Manifest: m, Dest: "/srv/f", Sources: []string{r.srvURL}, Server: r.srvURL}
	post := func(j api.Job, token string) int {
		b, _ := json.Marshal(j)
		req, _ := http.NewRequest(http.MethodPost, r.agents[0].URL+"/v1/jobs", bytes.NewReader(b))
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
	if code := post(job, ""); code != http.StatusUnauthorized {
		t.Errorf("no token: %d", code)
	}
	if code := post(job, "fleet-secret"); code != http.StatusForbidden {
		t.Errorf("unsigned job: %d", code)
	}
	job.Signature = job.Sign([]byte("another-secret"))
	if code := post(job, "fleet-secret"); code != http.StatusForbidden {
		t.Errorf("job signed with another key: %d", code)
	}
	job.Signature = job.Sign([]byte("fleet-secret"))
	if code := post(job, "fleet-secret"); code != http.StatusAccepted {
		t.Errorf("signed job: %d", code)
	}
	resp, err := http.Get(r.agents[0].URL + "/v1/transfers/forged/pieces/0")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("piece without token: %d", resp.StatusCode)
	}
}
