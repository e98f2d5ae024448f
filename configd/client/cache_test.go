package client

import (
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/opskit/opskit/configd/api"
	"github.com/opskit/opskit/configd/manifest"
)

// writeRelease lays out a release the way the agent does and switches
// `current` to it.
func writeRelease(t *testing.T, dir string, v int64, files ...string) {
	t.Helper()
	rel := api.Release{Namespace: "web/prod/app", Version: v}
	rdir := filepath.Join(dir, "releases", strconv.FormatInt(v, 10))
	os.MkdirAll(rdir, 0o755)
	for i := 0; i+1 < len(files); i += 2 {
		rel.Files = append(rel.Files, api.NewFile(files[i], files[i+1]))
		os.WriteFile(filepath.Join(rdir, files[i]), []byte(files[i+1]), 0o644)
	}
	m, _ := manifest.FromRelease(rel, time.Now()).Marshal()
	os.WriteFile(filepath.Join(rdir, manifest.FileName), m, 0o644)
	tmp := filepath.Join(dir, "current.tmp")
	os.Symlink(filepath.Join("releases", strconv.FormatInt(v, 10)), tmp)
	if err := os.Rename(tmp, filepath.Join(dir, "current")); err != nil {
		t.Fatal(err)
	}
}

func TestCacheReadsAndFollowsSwitches(t *testing.T) {
	dir := t.TempDir()
	if _, err := Open(dir, CacheOptions{}); err == nil {
		t.Fatal("opened an empty cache")
	}
	writeRelease(t, dir, 1, "app.properties", "port=80\ndebug=true\n", "f.json", `{"name":"a","n":1}`, "c.yaml", "list: [1, 2]\n")
	c, err := Open(dir, CacheOptions{PollInterval: 10 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	s := c.Snapshot()
	var j struct {
		Name string
		N    int
	}
	var y struct{ List []int }
	if s.Version != 1 || s.Int("app.properties", "port", 0) != 80 || !s.Bool("app.properties", "debug", false) ||
		s.Property("app.properties", "missing", "def") != "def" || s.JSON("f.json", &j) != nil || j.N != 1 ||
		s.YAML("c.yaml", &y) != nil || len(y.List) != 2 || s.String("nope", "x") != "x" {
		t.Fatalf("snapshot getters: %+v %+v %+v", s, j, y)
	}
	got := make(chan int64, 4)
	c.OnChange(func(s *Snapshot) { got <- s.Version })
	writeRelease(t, dir, 2, "app.properties", "port=81\n")
	select {
	case v := <-got:
		if v != 2 || c.Snapshot().Int("app.properties", "port", 0) != 81 {
			t.Fatalf("callback got %d, port %d", v, c.Snapshot().Int("app.properties", "port", 0))
		}
	case <-time.After(2 * time.Second):
		t.Fatal("switch not noticed")
	}
	// A damaged release is refused and the last good snapshot stays.
	writeRelease(t, dir, 3, "app.properties", "port=82\n")
	os.WriteFile(filepath.Join(dir, "releases", "3", "app.properties"), []byte("port=99\n"), 0o644)
	c.Close()
	if _, err := c.Refresh(); err == nil {
		t.Fatal("damaged release loaded")
	}
	if c.Version() != 2 {
		t.Fatalf("version after a damaged release: %d", c.Version())
	}
}
