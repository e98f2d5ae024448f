package gateway

import (
	"net/http"
	"net/http/httptest"
	"testing"
)

func TestKeySpec(t *testing.T) {
	r := httptest.NewRequest("GET", "http://example.com/api/x?user=u1", nil)
	r.Header.Set("X-Api-Key", "k1")
	r.AddCookie(&http.Cookie{Name: "sid", Value: "s1"})
	ri := &requestInfo{r: r, ip: "10.0.0.1", route: "api"}
	tests := []struct{ spec, want string }{
		{"ip", "10.0.0.1"},
		{"header:x-api-key", "k1"},
		{"query:user", "u1"},
		{"cookie:sid", "s1"},
		{"route", "api"},
		{"host", "example.com"},
		{"method", "GET"},
		{"path", "/api/x"},
		{"ip+route", "10.0.0.1\x00api"},
		{"header:X-Missing", ""},
		{"ip+header:X-Missing", ""},
	}
	for _, tc := range tests {
		ks, err := ParseKeySpec(tc.spec)
		if err != nil {
			t.Fatalf("%s: %v", tc.spec, err)
		}
		if got := ks.key(ri); got != tc.want {
			t.Errorf("%s: key %q, want %q", tc.spec, got, tc.want)
		}
	}
	for _, bad := range []string{"", "ip:x", "header", "header:", "bogus", "ip+", "cookie:"} {
		if _, err := ParseKeySpec(bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}

func TestClientIP(t *testing.T) {
	tp, err := ParseTrustedProxies([]string{"10.0.0.0/8", "127.0.0.1"})
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name   string
		remote string
		xff    []string
		want   string
	}{
		{"untrusted peer's header is ignored", "192.0.2.1:5000", []string{"1.1.1.1"}, "192.0.2.1"},
		{"trusted peer, one hop", "127.0.0.1:5000", []string{"198.51.100.7"}, "198.51.100.7"},
		{"walks past trusted hops", "127.0.0.1:5000", []string{"198.51.100.7, 10.1.1.1", "10.2.2.2"}, "198.51.100.7"},
		{"spoofed left part is not believed", "127.0.0.1:5000", []string{"6.6.6.6, 198.51.100.7"}, "198.51.100.7"},
		{"garbage stops the walk", "127.0.0.1:5000", []string{"junk, 10.1.1.1"}, "10.1.1.1"},
		{"all trusted", "127.0.0.1:5000", []string{"10.1.1.1"}, "10.1.1.1"},
		{"no header", "10.9.9.9:1", nil, "10.9.9.9"},
		{"ipv6 peer", "[2001:db8::1]:80", nil, "2001:db8::1"},
		{"mapped v4", "[::ffff:192.0.2.1]:80", nil, "192.0.2.1"},
	}
	for _, tc := range tests {
		if got := tp.ClientIP(tc.remote, tc.xff); got != tc.want {
			t.Errorf("%s: %q, want %q", tc.name, got, tc.want)
		}
	}
	if _, err := ParseTrustedProxies([]string{"10.0.0.0/33"}); err == nil {
		t.Error("bad prefix accepted")
	}
}

func FuzzKeySpec(f *testing.F) {
	f.Fuzz(func(t *testing.T, spec, header string) {
		ks, err := ParseKeySpec(spec)
		if err != nil {
			return
		}
		again, err := ParseKeySpec(ks.String())
		if err != nil || again.String() != ks.String() {
			t.Fatalf("%q -> %q does not parse back: %v", spec, ks.String(), err)
		}
		r := httptest.NewRequest("GET", "/", nil)
		r.Header.Set("X-K", header)
		ks.key(&requestInfo{r: r, ip: "1.2.3.4"})
	})
}

func FuzzClientIP(f *testing.F) {
	tp, _ := ParseTrustedProxies([]string{"10.0.0.0/8", "::1"})
	f.Fuzz(func(t *testing.T, remote, xff string) {
		tp.ClientIP(remote, []string{xff})
	})
}
