// Package state persists judge's alert registry (pending timers, firing
// alerts, notification counts, last values, undelivered recoveries) in one
// JSON file replaced atomically, so a restart or kill -9 neither re-alerts
// nor forgets a recovery.
package state

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"

	"github.com/opskit/opskit/internal/atomicfile"
	"github.com/opskit/opskit/judge/engine"
)

// Version is the file format's version.
const Version = 1

type file struct {
	Version int            `json:"version"`
	Alerts  []engine.Alert `json:"alerts"`
}

// Save replaces the file at path with alerts (written, synced, renamed).
func Save(path string, alerts []engine.Alert) error {
	b, err := json.Marshal(file{Version: Version, Alerts: alerts})
	if err != nil {
		return fmt.Errorf("encode alert state: %w", err)
	}
	if err := atomicfile.WriteFile(path, b, 0o640); err != nil {
		return fmt.Errorf("save alert state: %w", err)
	}
	return nil
}

// Load reads the file at path; a missing file is an empty state.
func Load(path string) ([]engine.Alert, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("load alert state: %w", err)
	}
	var f file
	if err := json.Unmarshal(b, &f); err != nil {
		return nil, fmt.Errorf("load alert state %s: %w", path, err)
	}
	if f.Version != Version {
		return nil, fmt.Errorf("load alert state %s: version %d, want %d", path, f.Version, Version)
	}
	return f.Alerts, nil
}
