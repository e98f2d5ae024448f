package configfile

import (
	"log/slog"
	"os"
	"path/filepath"
	"testing"

	"github.com/opskit/opskit/abtest/sdk"
)

func TestReloadKeepsGoodConfig(t *testing.T) {
	path := filepath.Join(t.TempDir(), "experiments.yaml")
	write := func(s string) {
		if err := os.WriteFile(path, []byte(s), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("experiments: [{key: a, variants: [{name: c}, {name: t}]}]\n")
	w, err := New(path, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	var seen []*sdk.Assigner
	w.OnChange(func(_ *sdk.Config, a *sdk.Assigner) { seen = append(seen, a) })
	if err := w.Reload(); err != nil || len(seen) != 0 {
		t.Fatalf("unchanged file: %v, %d changes", err, len(seen))
	}
	write("experiments: [{key: a, variants: [{name: c}, {name: t}]}, {key: b, variants: [{name: c}, {name: t}]}]\n")
	if err := w.Reload(); err != nil || len(seen) != 1 || len(w.Current().Experiments()) != 2 {
		t.Fatalf("changed file: %v, %d changes", err, len(seen))
	}
	write("experiments: [{key: a, variants: [{name: c, weight: 0.2}, {name: t, weight: 0.2}]}]\n")
	if err := w.Reload(); err == nil || len(w.Current().Experiments()) != 2 {
		t.Fatalf("bad file accepted: %v", err)
	}
	if _, err := New(path, slog.New(slog.DiscardHandler)); err == nil {
		t.Fatal("bad file accepted at start")
	}
	if w, err := New("", nil); err != nil || len(w.Current().Experiments()) != 0 {
		t.Fatalf("empty path: %v", err)
	}
}
