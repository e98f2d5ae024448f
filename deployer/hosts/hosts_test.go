package hosts

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/opskit/opskit/configd/api"
)

func TestStaticReadsAndReloads(t *testing.T) {
	path := filepath.Join(t.TempDir(), "hosts.yaml")
	write := func(s string, mtime time.Time) {
		t.Helper()
		if err := os.WriteFile(path, []byte(s), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.Chtimes(path, mtime, mtime); err != nil {
			t.Fatal(err)
		}
	}
	now := time.Now()
	write("apps:\n  web:\n    prod:\n      - {name: h2, addr: 127.0.0.1:2}\n      - {name: h1, addr: 127.0.0.1:1, labels: {rack: a}}\n", now)
	src, err := Static(path)
	if err != nil {
		t.Fatal(err)
	}
	hs, err := src.Hosts(context.Background(), "web", "prod")
	if err != nil {
		t.Fatal(err)
	}
	if len(hs) != 2 || hs[0].Name != "h1" || hs[0].Labels["rack"] != "a" || hs[1].Addr != "127.0.0.1:2" {
		t.Fatalf("hosts %+v: want h1, h2 sorted", hs)
	}
	if _, err := src.Hosts(context.Background(), "web", "dev"); !errors.Is(err, ErrUnknownApp) {
		t.Errorf("unknown env: err %v", err)
	}
	write("apps:\n  web:\n    prod:\n      - {name: h3}\n", now.Add(time.Second))
	hs, err = src.Hosts(context.Background(), "web", "prod")
	if err != nil || len(hs) != 1 || hs[0].Name != "h3" {
		t.Fatalf("after edit: %+v %v", hs, err)
	}
	write("apps: {web: {prod: [{name: h4, bogus: 1}]}}\n", now.Add(2*time.Second))
	if _, err := src.Hosts(context.Background(), "web", "prod"); err == nil {
		t.Error("an invalid edit was accepted")
	}
}

func TestParseRejects(t *testing.T) {
	for name, text := range map[string]string{
		"unknown key":  "apps: {web: {prod: [{name: a, port: 1}]}}",
		"missing name": "apps: {web: {prod: [{addr: x}]}}",
		"duplicate":    "apps: {web: {prod: [{name: a}, {name: a}]}}",
		"not a map":    "apps: [1]",
	} {
		if _, err := Parse("f", []byte(text)); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

func TestConfigdFiltersByEnvAndPrefersDeployAddr(t *testing.T) {
	var gotPath, gotAuth string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		gotPath, gotAuth = r.URL.Path, r.Header.Get("Authorization")
		json.NewEncoder(w).Encode([]api.Host{
			{Host: "b", Addr: "10.0.0.2:7161", Labels: map[string]string{"env": "prod", DeployAddrLabel: "10.0.0.2:7171"}},
			{Host: "a", Addr: "10.0.0.1:7171", Labels: map[string]string{"env": "prod"}},
			{Host: "c", Addr: "10.0.0.3:7171", Labels: map[string]string{"env": "dev"}},
		})
	}))
	defer srv.Close()
	src := Configd(srv.URL, "tok", nil)
	hs, err := src.Hosts(context.Background(), "web", "prod")
	if err != nil {
		t.Fatal(err)
	}
	if gotPath != "/v1/apps/web/hosts" || gotAuth != "Bearer tok" {
		t.Errorf("request %s auth %q", gotPath, gotAuth)
	}
	if len(hs) != 2 || hs[0].Name != "a" || hs[1].Addr != "10.0.0.2:7171" {
		t.Fatalf("hosts %+v", hs)
	}
	if _, err := src.Hosts(context.Background(), "web", "qa"); !errors.Is(err, ErrUnknownApp) {
		t.Errorf("no host in env: %v", err)
	}
}

func FuzzParse(f *testing.F) {
	f.Add([]byte("apps: {web: {prod: [{name: h1, addr: 127.0.0.1:7171}]}}"))
	f.Fuzz(func(t *testing.T, data []byte) {
		apps, err := Parse("fuzz", data)
		if err != nil {
			return
		}
		for _, envs := range apps {
			for _, hs := range envs {
				for _, h := range hs {
					if h.Name == "" {
						t.Fatal("a host without a name was accepted")
					}
				}
			}
		}
	})
}
