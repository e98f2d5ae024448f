package client

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/opskit/opskit/configd/format"
	"github.com/opskit/opskit/configd/manifest"
)

// Snapshot is one release of a namespace as read from the cache: every
// file comes from the same release directory and matches the manifest.
// A Snapshot never changes; a new release gives a new Snapshot.
type Snapshot struct {
	Namespace string
	Version   int64
	// Dir is the release directory the files were read from.
	Dir   string
	Files map[string][]byte
}

// File returns a file's content.
func (s *Snapshot) File(name string) ([]byte, bool) {
	b, ok := s.Files[name]
	return b, ok
}

// String returns a file's content as a string, or def when it is absent.
func (s *Snapshot) String(name, def string) string {
	if b, ok := s.Files[name]; ok {
		return string(b)
	}
	return def
}

// Properties parses a properties file (key=value lines).
func (s *Snapshot) Properties(name string) (map[string]string, error) {
	b, ok := s.Files[name]
	if !ok {
		return nil, fmt.Errorf("configd: %s@%d has no file %s", s.Namespace, s.Version, name)
	}
	return format.ParseProperties(b)
}

// Property returns one key of a properties file, or def.
func (s *Snapshot) Property(file, key, def string) string {
	p, err := s.Properties(file)
	if err != nil {
		return def
	}
	if v, ok := p[key]; ok {
		return v
	}
	return def
}

// Int returns one key of a properties file as an int, or def when the file
// or key is missing or not a number.
func (s *Snapshot) Int(file, key string, def int) int {
	v, err := strconv.Atoi(s.Property(file, key, ""))
	if err != nil {
		return def
	}
	return v
}

// Bool returns one key of a properties file as a bool (strconv.ParseBool), or def.
func (s *Snapshot) Bool(file, key string, def bool) bool {
	v, err := strconv.ParseBool(s.Property(file, key, ""))
	if err != nil {
		return def
	}
	return v
}

// JSON decodes a JSON file into v.
func (s *Snapshot) JSON(name string, v any) error {
	b, ok := s.Files[name]
	if !ok {
		return fmt.Errorf("configd: %s@%d has no file %s", s.Namespace, s.Version, name)
	}
	return json.Unmarshal(b, v)
}

// YAML decodes a YAML file into v.
func (s *Snapshot) YAML(name string, v any) error {
	b, ok := s.Files[name]
	if !ok {
		return fmt.Errorf("configd: %s@%d has no file %s", s.Namespace, s.Version, name)
	}
	return yaml.NewDecoder(bytes.NewReader(b)).Decode(v)
}

// CacheOptions tune a Cache.
type CacheOptions struct {
	// PollInterval is how often the `current` link is checked for a new
	// release (one readlink). Default 500ms; negative disables polling
	// (call Refresh yourself).
	PollInterval time.Duration
	// OnError is told about a release that could not be read (the previous
	// snapshot stays in use). Default: ignored.
	OnError func(error)
}

// Cache holds a namespace's files in memory, read from the directory the
// configd agent keeps, and follows the agent's switches to new releases.
type Cache struct {
	dir  string
	opts CacheOptions

	mu        sync.Mutex
	snap      *Snapshot
	target    string
	callbacks []func(*Snapshot)
	stop      chan struct{}
	done      chan struct{}
}

// ErrNoRelease is returned by Open when the directory holds no release yet.
var ErrNoRelease = errors.New("configd: no release in the cache yet")

// OpenNamespace opens the cache of namespace (app/env/name) under an
// agent's cache directory (the agent's --cache-dir, by default
// <data-dir>/cache).
func OpenNamespace(cacheDir, namespace string, opts CacheOptions) (*Cache, error) {
	return Open(filepath.Join(cacheDir, filepath.FromSlash(namespace)), opts)
}

// Open reads the release `dir/current` points at and starts following it.
// It fails with ErrNoRelease when the agent has not written one yet.
func Open(dir string, opts CacheOptions) (*Cache, error) {
	if opts.PollInterval == 0 {
		opts.PollInterval = 500 * time.Millisecond
	}
	c := &Cache{dir: dir, opts: opts}
	if _, err := c.Refresh(); err != nil {
		return nil, err
	}
	if opts.PollInterval > 0 {
		c.stop, c.done = make(chan struct{}), make(chan struct{})
		go c.poll()
	}
	return c, nil
}

// Close stops following the link.
func (c *Cache) Close() {
	if c.stop != nil {
		close(c.stop)
		<-c.done
		c.stop = nil
	}
}

// Snapshot returns the release in memory.
func (c *Cache) Snapshot() *Snapshot {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.snap
}

// Version returns the version in memory.
func (c *Cache) Version() int64 { return c.Snapshot().Version }

// OnChange registers fn to run (in the polling goroutine) with each new
// snapshot after a switch.
func (c *Cache) OnChange(fn func(*Snapshot)) {
	c.mu.Lock()
	c.callbacks = append(c.callbacks, fn)
	c.mu.Unlock()
}

func (c *Cache) poll() {
	defer close(c.done)
	t := time.NewTicker(c.opts.PollInterval)
	defer t.Stop()
	for {
		select {
		case <-c.stop:
			return
		case <-t.C:
			if _, err := c.Refresh(); err != nil && c.opts.OnError != nil {
				c.opts.OnError(err)
			}
		}
	}
}

// Refresh checks the link now; it reports whether a new release was loaded
// (callbacks have then run).
func (c *Cache) Refresh() (bool, error) {
	link := filepath.Join(c.dir, "current")
	target, err := os.Readlink(link)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) && c.Snapshot() == nil {
			return false, fmt.Errorf("%w: %s", ErrNoRelease, c.dir)
		}
		return false, fmt.Errorf("configd: %w", err)
	}
	c.mu.Lock()
	same := target == c.target && c.snap != nil
	c.mu.Unlock()
	if same {
		return false, nil
	}
	raw := target
	if !filepath.IsAbs(target) {
		target = filepath.Join(c.dir, target)
	}
	// Reading through the resolved directory, not through `current`,
	// keeps every file of the snapshot from one release even if the agent
	// switches again meanwhile.
	m, files, err := manifest.Load(target)
	if err != nil {
		return false, fmt.Errorf("configd: %w", err)
	}
	snap := &Snapshot{Namespace: m.Namespace, Version: m.Version, Dir: target, Files: files}
	c.mu.Lock()
	c.snap, c.target = snap, raw
	callbacks := append([]func(*Snapshot){}, c.callbacks...)
	c.mu.Unlock()
	for _, fn := range callbacks {
		fn(snap)
	}
	return true, nil
}
