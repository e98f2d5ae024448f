package notify

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/opskit/opskit/judge/engine"
)

type fakeSource struct {
	mu        sync.Mutex
	alerts    []engine.Alert
	fresh     []engine.Alert
	delivered []string
}

func (f *fakeSource) Outgoing() []engine.Alert { f.mu.Lock(); defer f.mu.Unlock(); return f.alerts }
func (f *fakeSource) Fresh() []engine.Alert {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := f.fresh
	f.fresh = nil
	return out
}
func (f *fakeSource) MarkDelivered(sent []engine.Alert, _ time.Time) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, a := range sent {
		f.delivered = append(f.delivered, a.Key)
	}
}

type receiver struct {
	mu     sync.Mutex
	bodies [][]Alert
	status int
}

func (r *receiver) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if req.URL.Path != "/api/v2/alerts" || req.Method != http.MethodPost {
		http.Error(w, "wrong path", http.StatusNotFound)
		return
	}
	b, _ := io.ReadAll(req.Body)
	var as []Alert
	if err := json.Unmarshal(b, &as); err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	if r.status != 0 {
		w.WriteHeader(r.status)
		return
	}
	r.bodies = append(r.bodies, as)
}

func TestSendOnce(t *testing.T) {
	now := time.Unix(1_700_000_600, 0).UTC()
	start := now.Add(-10 * time.Minute)
	src := &fakeSource{alerts: []engine.Alert{
		{Key: "a", State: engine.StateFiring, Labels: map[string]string{"alertname": "cpu", "endpoint": "h1"},
			Series: map[string]string{"__name__": "cpu.idle", "endpoint": "h1"}, StartsAt: start, Annotations: map[string]string{"summary": "s"}},
		{Key: "b", State: engine.StateResolved, Labels: map[string]string{"alertname": "disk", "endpoint": "h2"},
			StartsAt: start, EndsAt: now.Add(-time.Minute), ResolvedValue: 42.5},
	}}
	good, bad := &receiver{}, &receiver{status: http.StatusServiceUnavailable}
	gs, bs := httptest.NewServer(good), httptest.NewServer(bad)
	defer gs.Close()
	defer bs.Close()
	s, err := New(Config{Addrs: []string{strings.TrimPrefix(gs.URL, "http://"), bs.URL}, ResendInterval: time.Minute, GeneratorURL: "http://transfer:7120"}, src)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.SendOnce(context.Background(), now); err == nil {
		t.Fatal("a failing receiver was not reported")
	}
	if len(src.delivered) != 0 {
		t.Fatalf("marked delivered although a receiver failed: %v", src.delivered)
	}
	if len(good.bodies) != 1 || len(good.bodies[0]) != 2 {
		t.Fatalf("good receiver got %v", good.bodies)
	}
	firing, resolved := good.bodies[0][0], good.bodies[0][1]
	if !firing.EndsAt.Equal(now.Add(4*time.Minute)) || !firing.StartsAt.Equal(start) {
		t.Fatalf("firing alert %+v", firing)
	}
	if firing.GeneratorURL != `http://transfer:7120/api/v1/query?query=%7B__name__%3D%22cpu.idle%22%2Cendpoint%3D%22h1%22%7D` {
		t.Fatalf("generatorURL %s", firing.GeneratorURL)
	}
	if !resolved.EndsAt.Equal(now.Add(-time.Minute)) || resolved.Annotations["recovery_value"] != "42.5" || resolved.Annotations["duration"] != "9m0s" {
		t.Fatalf("resolved alert %+v", resolved)
	}
	bad.status = 0
	if err := s.SendOnce(context.Background(), now); err != nil {
		t.Fatal(err)
	}
	if strings.Join(src.delivered, ",") != "a,b" {
		t.Fatalf("delivered %v", src.delivered)
	}
	if sent, failed := s.Counts(); sent != 3 || failed != 1 {
		t.Fatalf("counts %d %d", sent, failed)
	}
}

func TestKickSendsAndStopSendsLast(t *testing.T) {
	r := &receiver{}
	srv := httptest.NewServer(r)
	defer srv.Close()
	src := &fakeSource{}
	s, _ := New(Config{Addrs: []string{srv.URL}, ResendInterval: time.Hour}, src)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- s.Run(ctx) }()
	time.Sleep(200 * time.Millisecond) // Run's first, full send (of nothing) is over
	src.mu.Lock()
	src.alerts = []engine.Alert{{Key: "a", State: engine.StateFiring, Labels: map[string]string{"alertname": "x"}},
		{Key: "b", State: engine.StateFiring, Labels: map[string]string{"alertname": "y"}}}
	src.fresh = src.alerts[1:]
	src.mu.Unlock()
	s.Kick()
	deadline := time.Now().Add(5 * time.Second)
	for {
		r.mu.Lock()
		n := len(r.bodies)
		r.mu.Unlock()
		if n >= 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("kick did not send")
		}
		time.Sleep(10 * time.Millisecond)
	}
	r.mu.Lock()
	if len(r.bodies[0]) != 1 || r.bodies[0][0].Labels["alertname"] != "y" {
		t.Fatalf("a kick sent %+v; want only the fresh alert", r.bodies[0])
	}
	r.mu.Unlock()
	cancel()
	<-done
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.bodies) < 2 || len(r.bodies[len(r.bodies)-1]) != 2 {
		t.Fatalf("no full last send at stop: %v", r.bodies)
	}
}

func TestBadAddress(t *testing.T) {
	if _, err := New(Config{Addrs: []string{"http://"}}, &fakeSource{}); err == nil {
		t.Fatal("empty host accepted")
	}
}

func TestFailedSendIsRetriedInFull(t *testing.T) {
	r := &receiver{status: http.StatusServiceUnavailable}
	srv := httptest.NewServer(r)
	defer srv.Close()
	src := &fakeSource{alerts: []engine.Alert{{Key: "a", State: engine.StateResolved, Labels: map[string]string{"alertname": "x"}}}}
	s, _ := New(Config{Addrs: []string{srv.URL}, ResendInterval: time.Hour}, src)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go s.Run(ctx)
	time.Sleep(100 * time.Millisecond)
	r.mu.Lock()
	r.status = 0
	r.mu.Unlock()
	deadline := time.Now().Add(5 * time.Second)
	for {
		src.mu.Lock()
		n := len(src.delivered)
		src.mu.Unlock()
		if n == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("a failed send was not retried within a few seconds")
		}
		time.Sleep(20 * time.Millisecond)
	}
}
