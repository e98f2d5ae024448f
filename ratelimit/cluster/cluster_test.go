package cluster

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

func TestMembersFollowPeers(t *testing.T) {
	var downB atomic.Bool
	a := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
	defer a.Close()
	b := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if downB.Load() {
			w.WriteHeader(503)
		}
	}))
	defer b.Close()
	peers, err := ParsePeers(strings.TrimPrefix(a.URL, "http://") + ", " + strings.TrimPrefix(b.URL, "http://") + ",127.0.0.1:1")
	if err != nil || len(peers) != 3 {
		t.Fatal(peers, err)
	}
	m := New(peers, 10*time.Millisecond, time.Second, slog.New(slog.NewTextHandler(io.Discard, nil)))
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	changes := make(chan int, 10)
	go m.Run(ctx, func(live int) { changes <- live })
	if got := <-changes; got != 3 {
		t.Fatalf("live %d, want 3 (self, a, b; the third peer is down)", got)
	}
	downB.Store(true)
	if got := <-changes; got != 2 {
		t.Fatalf("after b went unready: %d", got)
	}
	downB.Store(false)
	if got := <-changes; got != 3 {
		t.Fatalf("after b came back: %d", got)
	}
	if _, err := ParsePeers("nope"); err == nil {
		t.Fatal("bad peer accepted")
	}
}
