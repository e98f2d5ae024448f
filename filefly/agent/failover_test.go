package agent_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/opskit/opskit/filefly/api"
	"github.com/opskit/opskit/filefly/piece"
)

// jobOn posts a hand-made job for a transfer the server knows to agent i.
func (r *rig) jobOn(t *testing.T, i int, j api.Job) {
	t.Helper()
	if len(r.token) > 0 {
		j.Signature = j.Sign(r.token)
	}
	b, _ := json.Marshal(j)
	req, _ := http.NewRequest(http.MethodPost, r.agents[i].URL+"/v1/jobs", bytes.NewReader(b))
	if len(r.token) > 0 {
		req.Header.Set("Authorization", "Bearer "+string(r.token))
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusAccepted {
		t.Fatalf("job: %s", resp.Status)
	}
}

func (r *rig) jobReport(t *testing.T, i int, id string, within time.Duration) api.Report {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		resp, err := http.Get(r.agents[i].URL + "/v1/jobs/" + id)
		if err != nil {
			t.Fatal(err)
		}
		var rep api.Report
		json.NewDecoder(resp.Body).Decode(&rep)
		resp.Body.Close()
		if api.Terminal(rep.State) || time.Now().After(deadline) {
			return rep
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestAgentRoutesAroundBadSources: whatever way the first source fails,
// the agent moves to the next holder and the file arrives intact.
func TestAgentRoutesAroundBadSources(t *testing.T) {
	data := make([]byte, 3*piece.MinSize)
	rand.Read(data)
	tests := []struct {
		name    string
		handler http.HandlerFunc
	}{
		{"dead", nil},
		{"stalls mid-piece", func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Length", "262144")
			w.Write(make([]byte, 1000))
			w.(http.Flusher).Flush()
			<-r.Context().Done()
		}},
		{"accepts and never answers", func(w http.ResponseWriter, r *http.Request) { <-r.Context().Done() }},
		{"never makes progress", func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("X-Filefly-Pieces", "0")
			http.Error(w, "not yet", http.StatusServiceUnavailable)
		}},
		{"errors", func(w http.ResponseWriter, r *http.Request) { http.Error(w, "boom", http.StatusInternalServerError) }},
		{"serves garbage", func(w http.ResponseWriter, r *http.Request) { w.Write(make([]byte, piece.MinSize)) }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := newRig(t, 1, nil, false)
			sum := r.upload(t, data)
			// A transfer to a host with no agent makes the server hold the pieces.
			tr, err := r.server.Create(context.Background(), api.SendRequest{SHA256: sum, Dest: "/srv/x", Hosts: []string{"127.0.0.1:1"}, Timeout: api.Duration(time.Minute)})
			if err != nil {
				t.Fatal(err)
			}
			bad := "http://127.0.0.1:1"
			if tt.handler != nil {
				hs := httptest.NewServer(tt.handler)
				t.Cleanup(hs.Close)
				bad = hs.URL
			}
			start := time.Now()
			r.jobOn(t, 0, api.Job{ID: tr.ID, Host: "127.0.0.1:1", Manifest: tr.Manifest, Dest: "/srv/relayed.bin",
				Sources: []string{bad, r.srvURL}, Server: r.srvURL})
			rep := r.jobReport(t, 0, tr.ID, 15*time.Second)
			if rep.State != api.StateDone || rep.Reattached != 1 {
				t.Fatalf("report %+v", rep)
			}
			if got, _ := os.ReadFile(filepath.Join(r.roots[0], "srv/relayed.bin")); !bytes.Equal(got, data) {
				t.Error("file differs")
			}
			// The stall timeout is 1s: re-attaching must not take much more than 3 of them.
			if el := time.Since(start); el > 6*time.Second {
				t.Errorf("took %v", el)
			}
		})
	}
}

// TestAgentReportsPostCmdAndOwnerFailures: the file lands, but a failing
// post-cmd (with its exit code) or an unknown owner fails the host.
func TestAgentReportsPostCmdAndOwnerFailures(t *testing.T) {
	r := newRig(t, 2, nil, false)
	sum := r.upload(t, []byte("config v2\n"))
	tr, err := r.server.Create(context.Background(), api.SendRequest{SHA256: sum, Dest: "/srv/one", Hosts: []string{"127.0.0.1:1"}, Timeout: api.Duration(time.Minute)})
	if err != nil {
		t.Fatal(err)
	}
	base := api.Job{ID: tr.ID, Host: "x", Manifest: tr.Manifest, Sources: []string{r.srvURL}, Server: r.srvURL}
	post := base
	post.Dest, post.PostCmd = "/srv/app.conf", `test "$(cat "$FILEFLY_DEST")" = "config v2" && exit 7`
	r.jobOn(t, 0, post)
	owner := base
	owner.Dest, owner.Owner = "/srv/app.conf", "no-such-user-filefly"
	r.jobOn(t, 1, owner)

	rep := r.jobReport(t, 0, tr.ID, 10*time.Second)
	if rep.State != api.StateFailed || rep.PostCmdExit == nil || *rep.PostCmdExit != 7 || !strings.Contains(rep.Error, "exit 7") {
		t.Errorf("post-cmd report %+v", rep)
	}
	rep = r.jobReport(t, 1, tr.ID, 10*time.Second)
	if rep.State != api.StateFailed || !strings.Contains(rep.Error, "no-such-user-filefly") {
		t.Errorf("owner report %+v", rep)
	}
	if _, err := os.Stat(filepath.Join(r.roots[1], "srv/app.conf")); err == nil {
		t.Error("file with an unknown owner was put in place")
	}
	if leftovers, _ := filepath.Glob(filepath.Join(r.roots[1], "srv/.filefly-*")); len(leftovers) > 0 {
		t.Errorf("failed job left its partial file: %v", leftovers)
	}
}

// TestAgentFetchesEachStripeFromItsOwnSources: with two stripes, even pieces
// come from stripe 0's sources and odd pieces from stripe 1's. Stripe 0's
// parent is dead: that stripe alone re-attaches to the server, and stripe
// 1's parent is never asked for an even piece.
func TestAgentFetchesEachStripeFromItsOwnSources(t *testing.T) {
	data := make([]byte, 5*piece.MinSize+1000)
	rand.Read(data)
	r := newRig(t, 1, nil, false)
	sum := r.upload(t, data)
	tr, err := r.server.Create(context.Background(), api.SendRequest{SHA256: sum, Dest: "/srv/x", Hosts: []string{"127.0.0.1:1"}, Timeout: api.Duration(time.Minute)})
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var asked []int
	// Stripe 1's parent relays the server's pieces and notes which.
	relay := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		n, _ := strconv.Atoi(req.URL.Path[strings.LastIndex(req.URL.Path, "/")+1:])
		mu.Lock()
		asked = append(asked, n)
		mu.Unlock()
		resp, err := http.Get(r.srvURL + req.URL.Path)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadGateway)
			return
		}
		defer resp.Body.Close()
		w.WriteHeader(resp.StatusCode)
		io.Copy(w, resp.Body)
	}))
	t.Cleanup(relay.Close)
	dead := "http://127.0.0.1:1"
	r.jobOn(t, 0, api.Job{ID: tr.ID, Host: "127.0.0.1:1", Manifest: tr.Manifest, Dest: "/srv/striped.bin",
		Sources:       []string{dead, r.srvURL},
		StripeSources: [][]string{{dead, r.srvURL}, {relay.URL, r.srvURL}}, Server: r.srvURL})
	rep := r.jobReport(t, 0, tr.ID, 15*time.Second)
	if rep.State != api.StateDone || rep.Reattached != 1 {
		t.Fatalf("report %+v", rep)
	}
	if got, _ := os.ReadFile(filepath.Join(r.roots[0], "srv/striped.bin")); !bytes.Equal(got, data) {
		t.Error("file differs")
	}
	mu.Lock()
	defer mu.Unlock()
	if want := []int{1, 3, 5}; !slices.Equal(asked, want) {
		t.Errorf("stripe 1's parent was asked for pieces %v, want %v", asked, want)
	}
}
