package release

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/opskit/opskit/configd/api"
	"github.com/opskit/opskit/configd/manifest"
)

// writeConfigdCache lays out a namespace as the configd agent caches it.
func writeConfigdCache(t *testing.T, cacheDir, namespace string, files ...string) {
	t.Helper()
	dir := filepath.Join(cacheDir, filepath.FromSlash(namespace))
	rel := api.Release{Namespace: namespace, Version: 1}
	rdir := filepath.Join(dir, "releases", "1")
	os.MkdirAll(rdir, 0o755)
	for i := 0; i+1 < len(files); i += 2 {
		rel.Files = append(rel.Files, api.NewFile(files[i], files[i+1]))
		os.WriteFile(filepath.Join(rdir, files[i]), []byte(files[i+1]), 0o644)
	}
	m, _ := manifest.FromRelease(rel, time.Now()).Marshal()
	os.WriteFile(filepath.Join(rdir, manifest.FileName), m, 0o644)
	if err := os.Symlink(filepath.Join("releases", "1"), filepath.Join(dir, "current")); err != nil {
		t.Fatal(err)
	}
}

func TestApplyRendersConfigTemplates(t *testing.T) {
	cache := t.TempDir()
	writeConfigdCache(t, cache, "web/prod/app", "app.properties", "port=9090\n")
	a := newApplier(t)
	a.ConfigCache = cache
	b := tgz(t, []entry{
		{name: "conf/app.conf.tmpl", body: `listen={{.Config.Property "app.properties" "port" "80"}} app={{.App}}@{{.Version}}` + "\n", mode: 0o600},
		{name: ManifestName, body: "templates:\n  - {src: conf/app.conf.tmpl, dest: conf/app.conf, namespace: web/prod/app}\n"},
	})
	pkg := writeTemp(t, b)
	sum, _ := FileSHA256(pkg)
	if _, err := a.Apply(context.Background(), Task{ID: "t1", App: "web", Version: "1.0", Package: pkg, SHA256: sum}); err != nil {
		t.Fatal(err)
	}
	got, _ := os.ReadFile(filepath.Join(a.Store.CurrentDir("web"), "conf/app.conf"))
	if string(got) != "listen=9090 app=web@1.0\n" {
		t.Fatalf("rendered %q", got)
	}
}

func TestRenderTemplatesRefuses(t *testing.T) {
	cache := t.TempDir()
	writeConfigdCache(t, cache, "web/prod/app", "app.properties", "port=1\n")
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "t.tmpl"), []byte("{{.Nope}}"), 0o644)
	os.WriteFile(filepath.Join(dir, "ok.tmpl"), []byte("x"), 0o644)
	for _, tc := range []struct {
		tmpl  Template
		cache string
		want  string
	}{
		{Template{Src: "ok.tmpl", Dest: "../escape", Namespace: "web/prod/app"}, cache, "inside the release"},
		{Template{Src: "/etc/passwd", Dest: "x", Namespace: "web/prod/app"}, cache, "inside the release"},
		{Template{Src: "ok.tmpl", Dest: "x", Namespace: "web/prod/missing"}, cache, "configd namespace"},
		{Template{Src: "t.tmpl", Dest: "x", Namespace: "web/prod/app"}, cache, "Nope"},
		{Template{Src: "ok.tmpl", Dest: "x", Namespace: "web/prod/app"}, "", "--configd-cache"},
	} {
		err := RenderTemplates(dir, "web", "1", tc.cache, []Template{tc.tmpl})
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%+v: err = %v, want %q", tc.tmpl, err, tc.want)
		}
	}
}
