// Package manifest reads and writes the manifest the configd agent keeps in
// each release directory: the namespace, version and sha256 of every file,
// so an application (or the agent after a restart) can tell exactly which
// release it holds and that the files are whole.
package manifest

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/opskit/opskit/configd/api"
)

// FileName is the manifest's name inside a release directory. The leading
// dot keeps it apart from namespace files, which may not start with one.
const FileName = ".configd-manifest.json"

// maxSize bounds what Parse reads: a manifest lists names and digests only.
const maxSize = 1 << 20

// Manifest describes one release directory.
type Manifest struct {
	Namespace string    `json:"namespace"`
	Version   int64     `json:"version"`
	Published time.Time `json:"published"`
	Applied   time.Time `json:"applied"`
	Files     []File    `json:"files"`
}

// File is one file's name, size and digest.
type File struct {
	Name   string `json:"name"`
	Size   int64  `json:"size"`
	SHA256 string `json:"sha256"`
}

// FromRelease builds the manifest of a release.
func FromRelease(rel api.Release, applied time.Time) Manifest {
	m := Manifest{Namespace: rel.Namespace, Version: rel.Version, Published: rel.Time, Applied: applied.UTC()}
	for _, f := range rel.Files {
		m.Files = append(m.Files, File{Name: f.Name, Size: int64(len(f.Content)), SHA256: api.Digest(f.Content)})
	}
	return m
}

// Marshal encodes the manifest.
func (m Manifest) Marshal() ([]byte, error) {
	b, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		return nil, err
	}
	return append(b, '\n'), nil
}

// Parse decodes and checks a manifest: a valid namespace, a positive
// version, file names a namespace may hold, each once, with hex sha256s.
func Parse(data []byte) (Manifest, error) {
	var m Manifest
	if len(data) > maxSize {
		return m, fmt.Errorf("manifest: %d bytes, more than %d", len(data), maxSize)
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&m); err != nil {
		return Manifest{}, fmt.Errorf("manifest: %w", err)
	}
	if dec.More() {
		return Manifest{}, fmt.Errorf("manifest: data after the document")
	}
	if err := api.ValidateNamespace(m.Namespace); err != nil {
		return Manifest{}, fmt.Errorf("manifest: %w", err)
	}
	if m.Version < 1 {
		return Manifest{}, fmt.Errorf("manifest: version %d: want 1 or more", m.Version)
	}
	seen := map[string]bool{}
	for _, f := range m.Files {
		if err := api.ValidateFileName(f.Name); err != nil {
			return Manifest{}, fmt.Errorf("manifest: %w", err)
		}
		if seen[f.Name] {
			return Manifest{}, fmt.Errorf("manifest: file %s listed twice", f.Name)
		}
		seen[f.Name] = true
		if len(f.SHA256) != 64 || !isHex(f.SHA256) {
			return Manifest{}, fmt.Errorf("manifest: file %s: sha256 %q is not 64 hex digits", f.Name, f.SHA256)
		}
		if f.Size < 0 {
			return Manifest{}, fmt.Errorf("manifest: file %s: negative size", f.Name)
		}
	}
	return m, nil
}

func isHex(s string) bool {
	for _, c := range s {
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f') {
			return false
		}
	}
	return true
}

// Read parses the manifest in a release directory.
func Read(dir string) (Manifest, error) {
	data, err := os.ReadFile(filepath.Join(dir, FileName))
	if err != nil {
		return Manifest{}, err
	}
	m, err := Parse(data)
	if err != nil {
		return Manifest{}, fmt.Errorf("%s: %w", dir, err)
	}
	return m, nil
}

// Load reads a release directory's manifest and files, checking every
// file's size and digest against the manifest.
func Load(dir string) (Manifest, map[string][]byte, error) {
	m, err := Read(dir)
	if err != nil {
		return m, nil, err
	}
	files := make(map[string][]byte, len(m.Files))
	for _, f := range m.Files {
		data, err := os.ReadFile(filepath.Join(dir, f.Name))
		if err != nil {
			return m, nil, err
		}
		if int64(len(data)) != f.Size || api.Digest(string(data)) != f.SHA256 {
			return m, nil, fmt.Errorf("%s/%s: content does not match the manifest (size %d, want %d)", dir, f.Name, len(data), f.Size)
		}
		files[f.Name] = data
	}
	return m, files, nil
}
