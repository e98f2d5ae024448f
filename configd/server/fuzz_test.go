package server

import (
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/opskit/opskit/configd/api"
)

func FuzzParseWatchQuery(f *testing.F) {
	seeds, _ := filepath.Glob("testdata/watch/*")
	for _, s := range seeds {
		b, err := os.ReadFile(s)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(strings.TrimSpace(string(b)))
	}
	f.Fuzz(func(t *testing.T, raw string) {
		q, err := url.ParseQuery(raw)
		if err != nil {
			return
		}
		wq, err := parseWatchQuery(q)
		if err != nil {
			return
		}
		if len(wq.names) == 0 || len(wq.names) != len(wq.held) {
			t.Fatalf("accepted %q with names %v held %v", raw, wq.names, wq.held)
		}
		for _, n := range wq.names {
			if api.ValidateNamespace(n) != nil || wq.held[n] < 0 {
				t.Fatalf("accepted namespace %q version %d", n, wq.held[n])
			}
		}
	})
}

func TestParseWatchQuery(t *testing.T) {
	tests := []struct {
		raw     string
		wantErr bool
		names   int
	}{
		{"ns=a/b/c:3&host=h&label=zone=a,rack=1", false, 1},
		{"ns=a/b/c&ns=a/b/c:2&ns=x/y/z:0", false, 2},
		{"ns=a/b/c:-1", true, 0},
		{"ns=a/b:1", true, 0},
		{"ns=a/b/c:x", true, 0},
		{"host=h", true, 0},
		{"ns=a/b/c:1&label=novalue", true, 0},
	}
	for _, tt := range tests {
		q, _ := url.ParseQuery(tt.raw)
		wq, err := parseWatchQuery(q)
		if (err != nil) != tt.wantErr || len(wq.names) != tt.names {
			t.Errorf("%s: %+v %v", tt.raw, wq, err)
		}
	}
}
