package gateway

import (
	"io"
	"log/slog"
	"testing"
	"time"
)

func TestPick(t *testing.T) {
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	tests := []struct {
		name    string
		cfg     UpstreamConfig
		prepare func(p *pool)
		key     string
		want    string
	}{
		{"least_conn takes the idlest", UpstreamConfig{Servers: []string{"a:1", "b:1", "c:1"}, Balance: "least_conn"},
			func(p *pool) {
				p.servers[0].inflight.Store(3)
				p.servers[1].inflight.Store(1)
				p.servers[2].inflight.Store(2)
			}, "", "b:1"},
		{"a server out after a failure is skipped", UpstreamConfig{Servers: []string{"a:1", "b:1"}, Balance: "least_conn"},
			func(p *pool) { p.servers[1].inflight.Store(5); p.markFailed(p.servers[0]) }, "", "b:1"},
		{"an unhealthy server is skipped", UpstreamConfig{Servers: []string{"a:1", "b:1"}},
			func(p *pool) { p.servers[0].healthy.Store(false) }, "", "b:1"},
		{"hash without a key falls back to round robin", UpstreamConfig{Servers: []string{"a:1"}, Balance: "hash"},
			func(p *pool) {}, "", "a:1"},
	}
	for _, tc := range tests {
		p := newPool("p", tc.cfg, log)
		tc.prepare(p)
		if s := p.pick(tc.key, nil, time.Now().UnixNano()); s == nil || s.addr != tc.want {
			t.Errorf("%s: picked %v, want %s", tc.name, s, tc.want)
		}
	}
	// Tried servers are not picked again; with all tried, none is.
	p := newPool("p", UpstreamConfig{Servers: []string{"a:1", "b:1"}}, log)
	first := p.pick("", nil, time.Now().UnixNano())
	second := p.pick("", []*server{first}, time.Now().UnixNano())
	if second == nil || second == first || p.pick("", []*server{first, second}, time.Now().UnixNano()) != nil {
		t.Fatalf("retry picks: %v then %v", first, second)
	}
	// Rendezvous hashing: removing a server moves only its keys.
	p = newPool("p", UpstreamConfig{Servers: []string{"a:1", "b:1", "c:1"}, Balance: "hash"}, log)
	before := map[string]string{}
	for i := 0; i < 300; i++ {
		k := string(rune('A'+i%26)) + time.Duration(i).String()
		before[k] = p.pick(k, nil, time.Now().UnixNano()).addr
	}
	p.servers[2].healthy.Store(false)
	for k, was := range before {
		now := p.pick(k, nil, time.Now().UnixNano()).addr
		if was != "c:1" && now != was {
			t.Fatalf("key %s moved from %s to %s though its server stayed", k, was, now)
		}
	}
}
