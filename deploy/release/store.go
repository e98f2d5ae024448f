package release

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/opskit/opskit/internal/atomicfile"
)

// Store lays releases out under Root:
//
//	<root>/<app>/releases/<version>/   one directory per unpacked release
//	<root>/<app>/current -> releases/<version>
//	<root>/<app>/history.json          versions in the order they were switched to
type Store struct {
	Root string
}

var nameRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._+-]{0,127}$`)

// ValidName reports whether s may be an app or version name: it becomes a
// path element, so it may not be empty, "..", or hold a slash.
func ValidName(kind, s string) error {
	if !nameRE.MatchString(s) {
		return fmt.Errorf("%s %q: want letters, digits, '.', '_', '+', '-' (at most 128, not starting with a dot)", kind, s)
	}
	return nil
}

// AppDir is <root>/<app>.
func (s *Store) AppDir(app string) string { return filepath.Join(s.Root, app) }

// ReleaseDir is <root>/<app>/releases/<version>.
func (s *Store) ReleaseDir(app, version string) string {
	return filepath.Join(s.Root, app, "releases", version)
}

// CurrentDir is the path of the current link.
func (s *Store) CurrentDir(app string) string { return filepath.Join(s.Root, app, "current") }

// Installed reports whether a release is unpacked.
func (s *Store) Installed(app, version string) bool {
	st, err := os.Stat(s.ReleaseDir(app, version))
	return err == nil && st.IsDir()
}

// Install unpacks pkg as app's release version. It is idempotent: an
// unpacked release is never unpacked again, and a half-unpacked one is never
// visible, since the archive goes to a temporary directory renamed at the end.
func (s *Store) Install(app, version, pkg string, lim Limits) (Stats, error) {
	if err := ValidName("app", app); err != nil {
		return Stats{}, err
	}
	if err := ValidName("version", version); err != nil {
		return Stats{}, err
	}
	if s.Installed(app, version) {
		return Stats{}, nil
	}
	dir := filepath.Join(s.Root, app, "releases")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return Stats{}, err
	}
	tmp := filepath.Join(dir, ".unpack-"+version+"-"+strconv.FormatInt(time.Now().UnixNano(), 36))
	st, err := UnpackFile(pkg, tmp, lim)
	if err != nil {
		os.RemoveAll(tmp)
		return st, fmt.Errorf("unpack %s %s: %w", app, version, err)
	}
	if err := os.Rename(tmp, s.ReleaseDir(app, version)); err != nil {
		os.RemoveAll(tmp)
		return st, err
	}
	return st, atomicfile.SyncDir(dir)
}

func (s *Store) digestPath(app, version string) string {
	return filepath.Join(s.Root, app, "releases", "."+version+".sha256")
}

// InstallVerified is Install that also records the package's digest beside
// the release, so that a version name reused for another package is caught.
func (s *Store) InstallVerified(app, version, pkg, digest string, lim Limits) (Stats, error) {
	if s.Installed(app, version) {
		return Stats{}, s.CheckDigest(app, version, digest)
	}
	st, err := s.Install(app, version, pkg, lim)
	if err != nil {
		return st, err
	}
	return st, atomicfile.WriteFile(s.digestPath(app, version), []byte(digest+"\n"), 0o644)
}

// CheckDigest fails when the installed release was unpacked from a package
// with another digest (releases installed without one pass).
func (s *Store) CheckDigest(app, version, digest string) error {
	b, err := os.ReadFile(s.digestPath(app, version))
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	if got := strings.TrimSpace(string(b)); got != digest {
		return fmt.Errorf("%s %s is already installed from another package (sha256 %s): a version names one package", app, version, got)
	}
	return nil
}

// Current returns the version current points to, "" when there is none.
func (s *Store) Current(app string) (string, error) {
	target, err := os.Readlink(s.CurrentDir(app))
	if errors.Is(err, os.ErrNotExist) {
		return "", nil
	}
	if err != nil {
		return "", err
	}
	return filepath.Base(target), nil
}

// Switch points current at an installed release atomically: a new link is
// made beside it and renamed over it, so a reader sees the old or the new
// release, never none.
func (s *Store) Switch(app, version string) error {
	if err := ValidName("version", version); err != nil {
		return err
	}
	if !s.Installed(app, version) {
		return fmt.Errorf("%s: release %s is not installed", app, version)
	}
	cur := s.CurrentDir(app)
	tmp := cur + ".new"
	os.Remove(tmp)
	if err := os.Symlink(filepath.Join("releases", version), tmp); err != nil {
		return err
	}
	if err := os.Rename(tmp, cur); err != nil {
		os.Remove(tmp)
		return err
	}
	if err := atomicfile.SyncDir(s.AppDir(app)); err != nil {
		return err
	}
	hist, _ := s.History(app)
	if len(hist) == 0 || hist[len(hist)-1] != version {
		hist = append(hist, version)
	}
	if len(hist) > 100 {
		hist = hist[len(hist)-100:]
	}
	b, _ := json.Marshal(hist)
	return atomicfile.WriteFile(filepath.Join(s.AppDir(app), "history.json"), b, 0o644)
}

// History lists the versions current was switched to, oldest first.
func (s *Store) History(app string) ([]string, error) {
	b, err := os.ReadFile(filepath.Join(s.AppDir(app), "history.json"))
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var h []string
	if err := json.Unmarshal(b, &h); err != nil {
		return nil, fmt.Errorf("%s history: %w", app, err)
	}
	return h, nil
}

// Previous returns the installed release current pointed to before the
// present one, "" if none.
func (s *Store) Previous(app string) (string, error) {
	cur, err := s.Current(app)
	if err != nil {
		return "", err
	}
	hist, err := s.History(app)
	if err != nil {
		return "", err
	}
	for i := len(hist) - 1; i >= 0; i-- {
		if hist[i] != cur && s.Installed(app, hist[i]) {
			return hist[i], nil
		}
	}
	return "", nil
}

// Release is one installed release.
type Release struct {
	Version   string    `json:"version"`
	Installed time.Time `json:"installed"`
	Current   bool      `json:"current"`
}

// Releases lists installed releases, newest first.
func (s *Store) Releases(app string) ([]Release, error) {
	ents, err := os.ReadDir(filepath.Join(s.AppDir(app), "releases"))
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	cur, _ := s.Current(app)
	var out []Release
	for _, e := range ents {
		if !e.IsDir() || ValidName("version", e.Name()) != nil {
			continue
		}
		info, err := e.Info()
		if err != nil {
			continue
		}
		out = append(out, Release{Version: e.Name(), Installed: info.ModTime(), Current: e.Name() == cur})
	}
	sort.Slice(out, func(i, j int) bool {
		if !out[i].Installed.Equal(out[j].Installed) {
			return out[i].Installed.After(out[j].Installed)
		}
		return out[i].Version > out[j].Version
	})
	return out, nil
}

// Prune removes the oldest releases beyond keep, never current nor the
// release before it (the rollback target). It returns the removed versions.
func (s *Store) Prune(app string, keep int) ([]string, error) {
	if keep < 2 {
		keep = 2
	}
	rels, err := s.Releases(app)
	if err != nil {
		return nil, err
	}
	prev, _ := s.Previous(app)
	var removed []string
	kept := 0
	for _, r := range rels {
		if r.Current || r.Version == prev || kept < keep {
			kept++
			continue
		}
		if err := os.RemoveAll(s.ReleaseDir(app, r.Version)); err != nil {
			return removed, err
		}
		os.Remove(s.digestPath(app, r.Version))
		removed = append(removed, r.Version)
	}
	return removed, nil
}

// Rollback switches current to version, or to the previous release when
// version is "". It returns the version switched to.
func (s *Store) Rollback(app, version string) (string, error) {
	if version == "" {
		prev, err := s.Previous(app)
		if err != nil {
			return "", err
		}
		if prev == "" {
			return "", fmt.Errorf("%s: no previous release to roll back to", app)
		}
		version = prev
	}
	return version, s.Switch(app, version)
}

// Apps lists the apps that have a releases directory.
func (s *Store) Apps() ([]string, error) {
	ents, err := os.ReadDir(s.Root)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var apps []string
	for _, e := range ents {
		if e.IsDir() && ValidName("app", e.Name()) == nil {
			if _, err := os.Stat(filepath.Join(s.Root, e.Name(), "releases")); err == nil {
				apps = append(apps, e.Name())
			}
		}
	}
	slices.Sort(apps)
	return apps, nil
}
