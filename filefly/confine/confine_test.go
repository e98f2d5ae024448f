package confine

import (
	"errors"
	"os"
	"path/filepath"
	"testing"
)

func TestResolve(t *testing.T) {
	base := t.TempDir()
	root := filepath.Join(base, "root")
	outside := filepath.Join(base, "outside")
	for _, d := range []string{filepath.Join(root, "app"), outside} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	must := func(err error) {
		if err != nil {
			t.Fatal(err)
		}
	}
	must(os.Symlink(outside, filepath.Join(root, "escape")))
	must(os.Symlink(filepath.Join(root, "app"), filepath.Join(root, "inner")))
	must(os.WriteFile(filepath.Join(outside, "target"), nil, 0o644))
	must(os.Symlink(filepath.Join(outside, "target"), filepath.Join(root, "app", "filelink")))
	// A root given through a symlink is resolved too.
	must(os.Symlink(root, filepath.Join(base, "rootlink")))
	roots, err := NewRoots([]string{filepath.Join(base, "rootlink")})
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		dest string
		want string // "" = refused
	}{
		{filepath.Join(root, "app", "f.bin"), filepath.Join(root, "app", "f.bin")},
		{filepath.Join(root, "new", "deep", "f.bin"), filepath.Join(root, "new", "deep", "f.bin")},
		{filepath.Join(root, "inner", "f.bin"), filepath.Join(root, "app", "f.bin")},
		{filepath.Join(root, "app", "..", "..", "outside", "f.bin"), ""},
		{filepath.Join(root, "escape", "f.bin"), ""},
		{filepath.Join(root, "app", "filelink"), ""},
		{root, ""},
		{filepath.Join(root, "app"), ""},
		{"relative/f.bin", ""},
		{"/", ""},
		{filepath.Join(outside, "f.bin"), ""},
	}
	for _, tt := range tests {
		got, err := roots.Resolve(tt.dest)
		if tt.want == "" {
			if err == nil {
				t.Errorf("Resolve(%s) = %s, want refused", tt.dest, got)
			}
			continue
		}
		if err != nil || got != tt.want {
			t.Errorf("Resolve(%s) = %s, %v; want %s", tt.dest, got, err, tt.want)
		}
	}
	if _, err := roots.Resolve(filepath.Join(root, "escape", "x")); !errors.Is(err, ErrOutside) {
		t.Errorf("symlink out: error %v is not ErrOutside", err)
	}
	if _, err := NewRoots([]string{filepath.Join(base, "missing")}); err == nil {
		t.Error("missing root accepted")
	}
}
