// Package atomicfile replaces files so that a reader, or a restart after a
// crash, sees either the old content or the new, never a mix: write to a
// temporary file in the same directory, fsync it, rename it over the target,
// fsync the directory.
package atomicfile

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
)

// WriteFile atomically replaces path with data.
func WriteFile(path string, data []byte, perm os.FileMode) error {
	w, err := Create(path, perm)
	if err != nil {
		return err
	}
	if _, err := w.Write(data); err != nil {
		w.Abort()
		return err
	}
	return w.Commit()
}

// Writer is a pending replacement of a file. Write to it, then Commit to
// put it in place or Abort to discard it. Abort after Commit is a no-op, so
// `defer w.Abort()` is safe.
type Writer struct {
	f    *os.File
	path string
	perm os.FileMode
	done bool
}

// Create starts replacing path. The temporary file lives beside the target
// so the rename cannot cross file systems.
func Create(path string, perm os.FileMode) (*Writer, error) {
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return nil, fmt.Errorf("atomicfile: %w", err)
	}
	return &Writer{f: f, path: path, perm: perm}, nil
}

var _ io.Writer = (*Writer)(nil)

// Write appends to the pending content.
func (w *Writer) Write(p []byte) (int, error) { return w.f.Write(p) }

// Commit syncs the content, renames it over the target and syncs the
// directory so the rename itself survives a crash.
func (w *Writer) Commit() error {
	if w.done {
		return fmt.Errorf("atomicfile: %s: already committed or aborted", w.path)
	}
	w.done = true
	tmp := w.f.Name()
	fail := func(err error) error {
		w.f.Close()
		os.Remove(tmp)
		return fmt.Errorf("atomicfile: %s: %w", w.path, err)
	}
	if err := w.f.Chmod(w.perm); err != nil {
		return fail(err)
	}
	if err := w.f.Sync(); err != nil {
		return fail(err)
	}
	if err := w.f.Close(); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("atomicfile: %s: %w", w.path, err)
	}
	if err := os.Rename(tmp, w.path); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("atomicfile: %w", err)
	}
	return SyncDir(filepath.Dir(w.path))
}

// Abort discards the pending content.
func (w *Writer) Abort() {
	if w.done {
		return
	}
	w.done = true
	w.f.Close()
	os.Remove(w.f.Name())
}

// SyncDir fsyncs a directory, making renames and creations in it durable.
func SyncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("atomicfile: sync dir: %w", err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("atomicfile: sync dir %s: %w", dir, err)
	}
	return nil
}
