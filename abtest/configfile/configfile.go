// Package configfile keeps the experiment config current: it loads the file
// at start, again on request (SIGHUP) and whenever its content changes (a
// configd agent replaces it atomically). A bad new version is logged and
// the previous one kept.
package configfile

import (
	"bytes"
	"context"
	"crypto/sha256"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"time"

	"github.com/opskit/opskit/abtest/sdk"
)

// Watcher holds the current config of one file.
type Watcher struct {
	path string
	log  *slog.Logger

	mu       sync.Mutex
	current  *sdk.Assigner
	config   *sdk.Config
	sum      [32]byte
	onChange []func(*sdk.Config, *sdk.Assigner)
}

// New loads path (an empty path is an empty config). A bad file at start is
// an error.
func New(path string, log *slog.Logger) (*Watcher, error) {
	w := &Watcher{path: path, log: log}
	if path == "" {
		w.config = &sdk.Config{}
		w.current, _ = sdk.New(w.config)
		return w, nil
	}
	if _, err := w.load(); err != nil {
		return nil, err
	}
	return w, nil
}

// Current is the config in force.
func (w *Watcher) Current() *sdk.Assigner {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.current
}

// Config is the parsed config in force.
func (w *Watcher) Config() *sdk.Config {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.config
}

// OnChange registers fn to be called with each new config.
func (w *Watcher) OnChange(fn func(*sdk.Config, *sdk.Assigner)) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.onChange = append(w.onChange, fn)
}

// Reload rereads the file; on error the previous config stays.
func (w *Watcher) Reload() error {
	if w.path == "" {
		return nil
	}
	changed, err := w.load()
	if err != nil {
		w.log.Error("experiment config not reloaded; keeping the previous one", "file", w.path, "err", err)
		return err
	}
	if changed {
		w.log.Info("experiment config loaded", "file", w.path, "experiments", len(w.Current().Experiments()))
	}
	return nil
}

// Watch checks the file every interval until ctx ends.
func (w *Watcher) Watch(ctx context.Context, interval time.Duration) error {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
			_ = w.Reload()
		}
	}
}

func (w *Watcher) load() (bool, error) {
	data, err := os.ReadFile(w.path)
	if err != nil {
		return false, fmt.Errorf("read experiment config: %w", err)
	}
	sum := sha256.Sum256(data)
	w.mu.Lock()
	same := w.current != nil && bytes.Equal(sum[:], w.sum[:])
	w.mu.Unlock()
	if same {
		return false, nil
	}
	c, err := sdk.ParseConfig(data)
	if err != nil {
		return false, fmt.Errorf("%s: %w", w.path, err)
	}
	a, err := sdk.New(c)
	if err != nil {
		return false, fmt.Errorf("%s: %w", w.path, err)
	}
	w.mu.Lock()
	w.current, w.config, w.sum = a, c, sum
	hooks := append([]func(*sdk.Config, *sdk.Assigner){}, w.onChange...)
	w.mu.Unlock()
	for _, fn := range hooks {
		fn(c, a)
	}
	return true, nil
}
