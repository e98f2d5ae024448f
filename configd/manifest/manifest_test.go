package manifest

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/opskit/opskit/configd/api"
)

func TestRoundTripAndLoad(t *testing.T) {
	rel := api.Release{Namespace: "web/prod/app", Version: 7, Time: time.Unix(1700000000, 0).UTC(),
		Files: []api.File{api.NewFile("a.json", `{"x":1}`), api.NewFile("b.txt", "hello")}}
	m := FromRelease(rel, time.Unix(1700000100, 0))
	data, err := m.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	got, err := Parse(data)
	if err != nil || got.Version != 7 || len(got.Files) != 2 || got.Files[1].Size != 5 {
		t.Fatalf("parse: %+v %v", got, err)
	}
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, FileName), data, 0o644)
	os.WriteFile(filepath.Join(dir, "a.json"), []byte(`{"x":1}`), 0o644)
	os.WriteFile(filepath.Join(dir, "b.txt"), []byte("hello"), 0o644)
	if _, files, err := Load(dir); err != nil || string(files["b.txt"]) != "hello" {
		t.Fatalf("load: %v", err)
	}
	os.WriteFile(filepath.Join(dir, "b.txt"), []byte("hellO"), 0o644)
	if _, _, err := Load(dir); err == nil || !strings.Contains(err.Error(), "does not match") {
		t.Fatalf("tampered file loaded: %v", err)
	}
}

func TestParseRejects(t *testing.T) {
	good := `"sha256":"` + strings.Repeat("a", 64) + `"`
	tests := map[string]string{
		"not json":      `{`,
		"bad namespace": `{"namespace":"a/b","version":1,"files":[]}`,
		"zero version":  `{"namespace":"a/b/c","version":0,"files":[]}`,
		"path in name":  `{"namespace":"a/b/c","version":1,"files":[{"name":"../x",` + good + `}]}`,
		"twice":         `{"namespace":"a/b/c","version":1,"files":[{"name":"x",` + good + `},{"name":"x",` + good + `}]}`,
		"short digest":  `{"namespace":"a/b/c","version":1,"files":[{"name":"x","sha256":"abc"}]}`,
		"unknown field": `{"namespace":"a/b/c","version":1,"files":[],"extra":1}`,
		"trailing":      `{"namespace":"a/b/c","version":1,"files":[]} {}`,
	}
	for name, in := range tests {
		if _, err := Parse([]byte(in)); err == nil {
			t.Errorf("%s: accepted %s", name, in)
		}
	}
}

func FuzzParse(f *testing.F) {
	seeds, _ := filepath.Glob("testdata/*.json")
	for _, s := range seeds {
		b, err := os.ReadFile(s)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		m, err := Parse(data)
		if err != nil {
			return
		}
		// What parses must survive a round trip unchanged.
		out, err := m.Marshal()
		if err != nil {
			t.Fatal(err)
		}
		again, err := Parse(out)
		if err != nil || again.Version != m.Version || len(again.Files) != len(m.Files) {
			t.Fatalf("round trip: %v", err)
		}
	})
}
