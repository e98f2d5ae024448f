// Package confine keeps destinations inside the roots an agent allows. The
// check is made on the path with every symlink resolved, so neither `..`
// nor a symlink planted under a root can lead a write outside it.
package confine

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
)

// ErrOutside is returned for a destination outside every allowed root.
var ErrOutside = errors.New("destination outside the allowed roots")

// Roots is a set of allowed directories, each resolved.
type Roots struct{ dirs []string }

// NewRoots resolves each root (which must exist).
func NewRoots(roots []string) (*Roots, error) {
	r := &Roots{}
	for _, root := range roots {
		abs, err := filepath.Abs(root)
		if err != nil {
			return nil, fmt.Errorf("allow-root %s: %w", root, err)
		}
		real, err := filepath.EvalSymlinks(abs)
		if err != nil {
			return nil, fmt.Errorf("allow-root %s: %w", root, err)
		}
		r.dirs = append(r.dirs, real)
	}
	return r, nil
}

// Resolve returns the real path dest would be written at, or ErrOutside.
// dest must be absolute. Missing parent directories are allowed (they are
// created under the root); an existing destination that is a symlink is
// followed and checked too.
func (r *Roots) Resolve(dest string) (string, error) {
	if !filepath.IsAbs(dest) {
		return "", fmt.Errorf("%w: %q is not absolute", ErrOutside, dest)
	}
	clean := filepath.Clean(dest)
	if clean == "/" {
		return "", fmt.Errorf("%w: %q", ErrOutside, dest)
	}
	// Resolve the longest existing prefix, then append the rest: the rest
	// does not exist, so it holds no symlink (and, cleaned, no "..").
	existing, rest := clean, ""
	for {
		_, err := os.Lstat(existing)
		if err == nil {
			break
		}
		if !errors.Is(err, fs.ErrNotExist) {
			return "", fmt.Errorf("destination %s: %w", dest, err)
		}
		rest = filepath.Join(filepath.Base(existing), rest)
		existing = filepath.Dir(existing)
	}
	real, err := filepath.EvalSymlinks(existing)
	if err != nil {
		return "", fmt.Errorf("destination %s: %w", dest, err)
	}
	if rest != "" {
		real = filepath.Join(real, rest)
	}
	if info, err := os.Stat(real); err == nil && info.IsDir() {
		return "", fmt.Errorf("destination %s is a directory", dest)
	}
	for _, root := range r.dirs {
		if real != root && strings.HasPrefix(real, strings.TrimSuffix(root, "/")+"/") {
			return real, nil
		}
	}
	return "", fmt.Errorf("%w: %s resolves to %s", ErrOutside, dest, real)
}
