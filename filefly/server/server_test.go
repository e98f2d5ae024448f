package server

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"reflect"
	"strconv"
	"testing"
	"time"

	"github.com/opskit/opskit/filefly/api"
	"github.com/opskit/opskit/filefly/piece"
)

type fakeHosts map[string][]string

func (f fakeHosts) AppHosts(_ context.Context, app, env string) ([]string, error) {
	h, ok := f[app+"/"+env]
	if !ok {
		return nil, errors.New("no such app")
	}
	return h, nil
}

func newTestServer(t *testing.T, dir string, hosts HostLister) (*Server, *httptest.Server, context.CancelFunc) {
	ctx, cancel := context.WithCancel(context.Background())
	mux := http.NewServeMux()
	ts := httptest.NewServer(mux)
	s := New(Options{DataDir: dir, URL: ts.URL, Hosts: hosts, LostAfter: time.Hour})
	if err := s.Start(ctx); err != nil {
		t.Fatal(err)
	}
	s.Register(mux)
	t.Cleanup(func() { cancel(); ts.Close(); s.Wait() })
	return s, ts, cancel
}

func put(t *testing.T, url, sum string, data []byte) int {
	req, _ := http.NewRequest(http.MethodPut, url+"/v1/blobs/"+sum, bytes.NewReader(data))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

func TestBlobUploadChecksTheName(t *testing.T) {
	_, ts, _ := newTestServer(t, t.TempDir(), nil)
	data := []byte("payload")
	sum, _, _ := piece.HashFile(bytes.NewReader(data))
	other, _, _ := piece.HashFile(bytes.NewReader([]byte("other")))
	if code := put(t, ts.URL, other, data); code != http.StatusBadRequest {
		t.Errorf("wrong sha256: %d", code)
	}
	if code := put(t, ts.URL, "not-a-sum", data); code != http.StatusBadRequest {
		t.Errorf("bad name: %d", code)
	}
	if code := put(t, ts.URL, sum, data); code != http.StatusCreated {
		t.Errorf("upload: %d", code)
	}
	if code := put(t, ts.URL, sum, data); code != http.StatusOK {
		t.Errorf("second upload of the same blob: %d, want 200 (already held)", code)
	}
}

func TestCreateRefusesBadRequests(t *testing.T) {
	s, ts, _ := newTestServer(t, t.TempDir(), fakeHosts{"web/prod": {"127.0.0.3", "127.0.0.1:1"}})
	data := []byte("payload")
	sum, _, _ := piece.HashFile(bytes.NewReader(data))
	put(t, ts.URL, sum, data)
	tests := map[string]api.SendRequest{
		"unknown blob":      {SHA256: "00", Dest: "/srv/x", Hosts: []string{"h"}},
		"relative dest":     {SHA256: sum, Dest: "srv/x", Hosts: []string{"h"}},
		"no hosts":          {SHA256: sum, Dest: "/srv/x"},
		"bad topology":      {SHA256: sum, Dest: "/srv/x", Hosts: []string{"h"}, Topology: "mesh"},
		"app with no hosts": {SHA256: sum, Dest: "/srv/x", App: "web", Env: "dev"},
	}
	for name, req := range tests {
		_, err := s.Create(context.Background(), req)
		if err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	tr, err := s.Create(context.Background(), api.SendRequest{SHA256: sum, Dest: "/srv/x", App: "web", Env: "prod", Timeout: api.Duration(time.Hour)})
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, h := range tr.Hosts {
		got = append(got, h.Host)
	}
	if want := []string{"127.0.0.3:7181", "127.0.0.1:1"}; !reflect.DeepEqual(got, want) {
		t.Errorf("hosts %v, want %v", got, want)
	}
}

// TestDeadlineAndRestart: unreachable hosts end late at the deadline, and
// a server restarted on the same data dir still knows the transfer.
func TestDeadlineAndRestart(t *testing.T) {
	dir := t.TempDir()
	s, ts, stop := newTestServer(t, dir, nil)
	data := []byte("payload")
	sum, _, _ := piece.HashFile(bytes.NewReader(data))
	put(t, ts.URL, sum, data)
	tr, err := s.Create(context.Background(), api.SendRequest{SHA256: sum, Dest: "/srv/x", Hosts: []string{"127.0.0.1:1"}, Timeout: api.Duration(300 * time.Millisecond)})
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for !s.lookup(tr.ID).snapshot().Done {
		if time.Now().After(deadline) {
			t.Fatal("not done after the deadline")
		}
		time.Sleep(20 * time.Millisecond)
	}
	var text bytes.Buffer
	s.opts.Metrics.WritePrometheus(&text)
	if want := `opskit_filefly_server_transfer_hosts{transfer="` + tr.ID + `",state="late"} 1`; !bytes.Contains(text.Bytes(), []byte(want)) {
		t.Errorf("metrics lack %s:\n%s", want, text.String())
	}
	h := s.lookup(tr.ID).snapshot().Hosts[0]
	if h.State != api.StateLate || h.Error == "" {
		t.Errorf("host %+v", h)
	}
	stop()
	s.Wait()
	s2, _, _ := newTestServer(t, dir, nil)
	got := s2.lookup(tr.ID)
	if got == nil || !got.snapshot().Done || got.snapshot().Hosts[0].State != api.StateLate {
		t.Errorf("after restart: %+v", got)
	}
}

// TestTreeJobsCarryStripeSourcesAcrossRestarts: a tree hands each agent one
// source list per stripe (a single tree, tree1, none), the status names one
// parent per stripe, and a restarted server hands out the same jobs.
func TestTreeJobsCarryStripeSourcesAcrossRestarts(t *testing.T) {
	dir := t.TempDir()
	s, ts, stop := newTestServer(t, dir, nil)
	data := []byte("payload")
	sum, _, _ := piece.HashFile(bytes.NewReader(data))
	put(t, ts.URL, sum, data)
	hosts := []string{"127.0.0.1:1", "127.0.0.1:2", "127.0.0.1:3", "127.0.0.1:4", "127.0.0.1:5"}
	ctx := context.Background()
	striped, err := s.Create(ctx, api.SendRequest{SHA256: sum, Dest: "/srv/x", Hosts: hosts, Timeout: api.Duration(time.Minute)})
	if err != nil {
		t.Fatal(err)
	}
	single, err := s.Create(ctx, api.SendRequest{SHA256: sum, Dest: "/srv/x", Hosts: hosts, Topology: api.TopologyTree1, Timeout: api.Duration(time.Minute)})
	if err != nil {
		t.Fatal(err)
	}
	if got := striped.Hosts[1].Parent; got != "127.0.0.1:3,server" {
		t.Errorf("striped parent of host 1 %q, want 127.0.0.1:3,server", got)
	}
	if got := single.Hosts[1].Parent; got != "server" {
		t.Errorf("single-tree parent of host 1 %q, want server", got)
	}
	jobOf := func(s *Server, id string, i int) api.Job {
		s.mu.Lock()
		tr := s.transfers[id]
		s.mu.Unlock()
		return s.job(tr, i)
	}
	wantStripes := [][]string{{"http://127.0.0.1:3", "http://127.0.0.1:1", ts.URL}, {ts.URL}}
	before := jobOf(s, striped.ID, 1)
	if !reflect.DeepEqual(before.StripeSources, wantStripes) || !reflect.DeepEqual(before.Sources, wantStripes[0]) {
		t.Errorf("striped job sources %v / %v, want %v", before.Sources, before.StripeSources, wantStripes)
	}
	if j := jobOf(s, single.ID, 1); j.StripeSources != nil || !reflect.DeepEqual(j.Sources, []string{ts.URL}) {
		t.Errorf("single-tree job sources %v / %v", j.Sources, j.StripeSources)
	}
	stop()
	s.Wait()
	restarted := New(Options{DataDir: dir, URL: ts.URL, LostAfter: time.Hour})
	ctx2, cancel2 := context.WithCancel(context.Background())
	t.Cleanup(func() { cancel2(); restarted.Wait() })
	if err := restarted.Start(ctx2); err != nil {
		t.Fatal(err)
	}
	if after := jobOf(restarted, striped.ID, 1); !reflect.DeepEqual(after, before) {
		t.Errorf("after a restart the job is %+v, want %+v", after, before)
	}
}

// TestPieceRange: a piece is served whole, or from byte N on for a child
// resuming it (206); any other range is refused.
func TestPieceRange(t *testing.T) {
	s, ts, _ := newTestServer(t, t.TempDir(), nil)
	data := make([]byte, 3*piece.MinSize)
	for i := range data {
		data[i] = byte(i * 7)
	}
	sum, _, _ := piece.HashFile(bytes.NewReader(data))
	put(t, ts.URL, sum, data)
	tr, err := s.Create(context.Background(), api.SendRequest{SHA256: sum, Dest: "/srv/x", Hosts: []string{"127.0.0.1:1"}, Timeout: api.Duration(time.Minute)})
	if err != nil {
		t.Fatal(err)
	}
	off, length := tr.Manifest.Span(1)
	whole := data[off : off+length]
	tests := []struct {
		rangeHeader string
		status      int
		want        []byte
	}{
		{"", http.StatusOK, whole},
		{"bytes=0-", http.StatusOK, whole},
		{"bytes=5000-", http.StatusPartialContent, whole[5000:]},
		{"bytes=5000-6000", http.StatusRequestedRangeNotSatisfiable, nil},
		{"bytes=" + strconv.FormatInt(length, 10) + "-", http.StatusRequestedRangeNotSatisfiable, nil},
	}
	for _, tt := range tests {
		req, _ := http.NewRequest(http.MethodGet, ts.URL+"/v1/transfers/"+tr.ID+"/pieces/1", nil)
		if tt.rangeHeader != "" {
			req.Header.Set("Range", tt.rangeHeader)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != tt.status || tt.want != nil && !bytes.Equal(body, tt.want) {
			t.Errorf("Range %q: %s, %d bytes", tt.rangeHeader, resp.Status, len(body))
		}
	}
}
