package agent

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/opskit/opskit/configd/api"
	"github.com/opskit/opskit/configd/manifest"
	"github.com/opskit/opskit/internal/atomicfile"
)

// Target is one namespace the agent keeps on disk, and what to run around
// a switch. Its directory holds:
//
//	current -> releases/<version>   (the symlink applications read through)
//	releases/<version>/<files>      (immutable once written)
//	releases/<version>/.configd-manifest.json
type Target struct {
	Namespace string `yaml:"name"`
	// Dir defaults to <cache-dir>/<app>/<env>/<name>.
	Dir string `yaml:"dir"`
	// Check runs (sh -c) on the staged release before the switch; a
	// non-zero exit keeps the old files. $CONFIGD_DIR is the staged
	// directory.
	Check string `yaml:"check"`
	// Reload runs after the switch; a non-zero exit restores the previous
	// release (and runs Reload again for it).
	Reload string `yaml:"reload"`
	// ReloadSignal (e.g. HUP) is sent to the pid in PidFile after the switch.
	ReloadSignal string `yaml:"reload_signal"`
	PidFile      string `yaml:"pid_file"`
	// AllowEmpty lets a non-empty file be replaced by an empty one.
	AllowEmpty bool `yaml:"allow_empty"`
}

// Symlink and directory names inside a target's directory.
const (
	CurrentLink = "current"
	ReleasesDir = "releases"
)

// Result is the outcome of one apply.
type Result struct {
	Version int64  // the release tried
	InForce int64  // the release in force afterwards
	Err     error  // nil on success
	Output  string // check or reload output on failure
}

// applier writes releases into a target's directory.
type applier struct {
	t            Target
	keep         int
	checkTimeout time.Duration
	now          func() time.Time
}

func (a *applier) releasePath(v int64) string {
	return filepath.Join(a.t.Dir, ReleasesDir, strconv.FormatInt(v, 10))
}

// current returns the manifest of the release `current` points at; a
// zero Manifest when there is none yet.
func (a *applier) current() (manifest.Manifest, error) {
	dir, err := filepath.EvalSymlinks(filepath.Join(a.t.Dir, CurrentLink))
	if errors.Is(err, os.ErrNotExist) {
		return manifest.Manifest{}, nil
	}
	if err != nil {
		return manifest.Manifest{}, err
	}
	return manifest.Read(dir)
}

// apply stages rel, checks it, switches `current` to it and reloads; on a
// failed check or reload the previous release stays (or is restored).
func (a *applier) apply(ctx context.Context, rel api.Release) Result {
	prev, err := a.current()
	if err != nil {
		// A broken current link or manifest: repair it by applying.
		prev = manifest.Manifest{}
	}
	res := Result{Version: rel.Version, InForce: prev.Version}
	fail := func(err error) Result { res.Err = err; return res }
	if rel.Namespace != a.t.Namespace {
		return fail(fmt.Errorf("release is for %s, not %s", rel.Namespace, a.t.Namespace))
	}
	for _, f := range rel.Files {
		if err := api.ValidateFileName(f.Name); err != nil {
			return fail(err)
		}
		if f.SHA256 != "" && api.Digest(f.Content) != f.SHA256 {
			return fail(fmt.Errorf("file %s: content does not match its sha256 (damaged in transit)", f.Name))
		}
	}
	if err := a.refuseEmptying(prev, rel); err != nil {
		return fail(err)
	}
	if err := os.MkdirAll(filepath.Join(a.t.Dir, ReleasesDir), 0o755); err != nil {
		return fail(err)
	}
	staged, err := a.stage(rel)
	if err != nil {
		return fail(fmt.Errorf("stage: %w", err))
	}
	if a.t.Check != "" {
		if out, err := a.run(ctx, a.t.Check, staged, rel.Version); err != nil {
			if prev.Version != rel.Version {
				os.RemoveAll(staged)
			}
			res.Output = out
			return fail(fmt.Errorf("check command failed, old files kept: %w", err))
		}
	}
	if err := a.switchTo(rel.Version); err != nil {
		return fail(fmt.Errorf("switch: %w", err))
	}
	res.InForce = rel.Version
	if out, err := a.reload(ctx, rel.Version); err != nil {
		res.Output = out
		if prev.Version == 0 {
			return fail(fmt.Errorf("reload failed and there is no earlier release to restore: %w", err))
		}
		if serr := a.switchTo(prev.Version); serr != nil {
			return fail(fmt.Errorf("reload failed (%v) and restoring %d failed: %w", err, prev.Version, serr))
		}
		res.InForce = prev.Version
		if _, rerr := a.reload(ctx, prev.Version); rerr != nil {
			return fail(fmt.Errorf("reload failed; restored release %d but its reload failed too: %v (first: %w)", prev.Version, rerr, err))
		}
		return fail(fmt.Errorf("reload failed; restored release %d: %w", prev.Version, err))
	}
	a.prune(rel.Version, prev.Version)
	return res
}

// refuseEmptying stops a release that would empty a file that has content.
func (a *applier) refuseEmptying(prev manifest.Manifest, rel api.Release) error {
	if a.t.AllowEmpty || prev.Version == 0 {
		return nil
	}
	sizes := map[string]int64{}
	for _, f := range prev.Files {
		sizes[f.Name] = f.Size
	}
	for _, f := range rel.Files {
		if strings.TrimSpace(f.Content) == "" && sizes[f.Name] > 0 {
			return fmt.Errorf("file %s would be replaced by an empty one; the namespace does not allow it (allow_empty)", f.Name)
		}
	}
	return nil
}

// stage writes the release into releases/<version> through a temporary
// directory renamed into place, so releases/<version> is always whole.
func (a *applier) stage(rel api.Release) (string, error) {
	final := a.releasePath(rel.Version)
	if _, _, err := manifest.Load(final); err == nil {
		return final, nil // already here and intact (e.g. a restore)
	}
	os.RemoveAll(final)
	tmp, err := os.MkdirTemp(filepath.Join(a.t.Dir, ReleasesDir), ".staging-")
	if err != nil {
		return "", err
	}
	ok := false
	defer func() {
		if !ok {
			os.RemoveAll(tmp)
		}
	}()
	for _, f := range rel.Files {
		if err := writeSynced(filepath.Join(tmp, f.Name), []byte(f.Content)); err != nil {
			return "", err
		}
	}
	m, err := manifest.FromRelease(rel, a.now()).Marshal()
	if err != nil {
		return "", err
	}
	if err := writeSynced(filepath.Join(tmp, manifest.FileName), m); err != nil {
		return "", err
	}
	if err := os.Chmod(tmp, 0o755); err != nil {
		return "", err
	}
	if err := atomicfile.SyncDir(tmp); err != nil {
		return "", err
	}
	if err := os.Rename(tmp, final); err != nil {
		return "", err
	}
	if err := atomicfile.SyncDir(filepath.Dir(final)); err != nil {
		return "", err
	}
	ok = true
	return final, nil
}

func writeSynced(path string, data []byte) error {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o644)
	if err != nil {
		return err
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// switchTo points `current` at releases/<v> with a rename of a new symlink
// over the old one: readers see the old set or the new, never a mix.
func (a *applier) switchTo(v int64) error {
	link := filepath.Join(a.t.Dir, CurrentLink)
	tmp := link + ".tmp-" + strconv.FormatInt(time.Now().UnixNano(), 36)
	if err := os.Symlink(filepath.Join(ReleasesDir, strconv.FormatInt(v, 10)), tmp); err != nil {
		return err
	}
	if err := os.Rename(tmp, link); err != nil {
		os.Remove(tmp)
		return err
	}
	return atomicfile.SyncDir(a.t.Dir)
}

func (a *applier) run(ctx context.Context, command, dir string, version int64) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, a.checkTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, "/bin/sh", "-c", command)
	cmd.Env = append(os.Environ(),
		"CONFIGD_DIR="+dir,
		"CONFIGD_NAMESPACE="+a.t.Namespace,
		"CONFIGD_VERSION="+strconv.FormatInt(version, 10))
	cmd.Dir = a.t.Dir
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	cmd.WaitDelay = time.Second
	err := cmd.Run()
	text := out.String()
	if len(text) > 4096 {
		text = text[len(text)-4096:]
	}
	if err != nil {
		return strings.TrimSpace(text), fmt.Errorf("%s: %w", command, err)
	}
	return "", nil
}

func (a *applier) reload(ctx context.Context, version int64) (string, error) {
	if a.t.Reload != "" {
		if out, err := a.run(ctx, a.t.Reload, filepath.Join(a.t.Dir, CurrentLink), version); err != nil {
			return out, err
		}
	}
	if a.t.ReloadSignal != "" && a.t.PidFile != "" {
		return "", signalPidFile(a.t.PidFile, a.t.ReloadSignal)
	}
	return "", nil
}

var signals = map[string]syscall.Signal{"HUP": syscall.SIGHUP, "USR1": syscall.SIGUSR1, "USR2": syscall.SIGUSR2, "TERM": syscall.SIGTERM, "INT": syscall.SIGINT, "QUIT": syscall.SIGQUIT}

// ParseSignal accepts HUP, SIGHUP, usr1 and the like.
func ParseSignal(name string) (syscall.Signal, error) {
	s, ok := signals[strings.TrimPrefix(strings.ToUpper(name), "SIG")]
	if !ok {
		return 0, fmt.Errorf("signal %q: want one of HUP, USR1, USR2, TERM, INT, QUIT", name)
	}
	return s, nil
}

func signalPidFile(path, name string) error {
	sig, err := ParseSignal(name)
	if err != nil {
		return err
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("reload signal: %w", err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(data)))
	if err != nil || pid <= 1 {
		return fmt.Errorf("reload signal: pid file %s: %q is not a pid", path, strings.TrimSpace(string(data)))
	}
	if err := syscall.Kill(pid, sig); err != nil {
		return fmt.Errorf("reload signal %s to pid %d: %w", name, pid, err)
	}
	return nil
}

// prune removes old release directories beyond the newest `keep`, never
// the ones in force or just replaced, and leftovers of interrupted stages.
func (a *applier) prune(inForce, previous int64) {
	dir := filepath.Join(a.t.Dir, ReleasesDir)
	entries, err := os.ReadDir(dir)
	if err != nil {
		return
	}
	var versions []int64
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), ".staging-") {
			os.RemoveAll(filepath.Join(dir, e.Name()))
			continue
		}
		if v, err := strconv.ParseInt(e.Name(), 10, 64); err == nil {
			versions = append(versions, v)
		}
	}
	sort.Slice(versions, func(i, j int) bool { return versions[i] > versions[j] })
	for i, v := range versions {
		if i >= a.keep && v != inForce && v != previous {
			os.RemoveAll(a.releasePath(v))
		}
	}
}
