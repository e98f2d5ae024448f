package release

import (
	"context"
	"crypto/ed25519"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/opskit/opskit/internal/atomicfile"
)

// Task asks for one release of one app on this host. It is the JSON given
// to `deploy apply` and sent by deployer.
type Task struct {
	// ID makes the task idempotent: a task with an ID already finished
	// returns its recorded result without doing anything.
	ID      string `json:"id"`
	App     string `json:"app"`
	Version string `json:"version"`
	// Package is an http(s) URL or a local path (e.g. a file filefly
	// delivered).
	Package string `json:"package"`
	// SHA256 of the package, hex; required.
	SHA256 string `json:"sha256"`
	// Signature, optional: base64 ed25519 signature of
	// SignedMessage(SHA256) by one of the agent's trusted keys. When the
	// agent requires signatures, an unsigned task fails.
	Signature string `json:"signature,omitempty"`
	// Keep is how many releases to keep (0: the agent's default).
	Keep int `json:"keep,omitempty"`
}

// Validate checks the fields a task needs.
func (t Task) Validate() error {
	var errs []error
	if err := ValidName("task id", t.ID); err != nil {
		errs = append(errs, err)
	}
	if err := ValidName("app", t.App); err != nil {
		errs = append(errs, err)
	}
	if err := ValidName("version", t.Version); err != nil {
		errs = append(errs, err)
	}
	if t.Package == "" {
		errs = append(errs, errors.New("package: required (URL or path)"))
	}
	if len(strings.TrimPrefix(t.SHA256, "sha256:")) != 64 {
		errs = append(errs, errors.New("sha256: required, 64 hex digits"))
	}
	return errors.Join(errs...)
}

// Task states.
const (
	StateRunning = "running"
	StateDone    = "done"
	StateFailed  = "failed"
)

// Result is a task's outcome, persisted under the task directory.
type Result struct {
	Task     Task   `json:"task"`
	State    string `json:"state"`
	Error    string `json:"error,omitempty"`
	Previous string `json:"previous,omitempty"`
	// RolledBack says current was switched back to Previous after a failure.
	RolledBack bool      `json:"rolled_back,omitempty"`
	Steps      []Step    `json:"steps"`
	Started    time.Time `json:"started"`
	Finished   time.Time `json:"finished,omitzero"`
	// Replayed is set on the answer (not on disk) when the task had already
	// finished and nothing was done.
	Replayed bool `json:"replayed,omitempty"`
}

// Step is one finished step of a task.
type Step struct {
	Name   string    `json:"name"`
	At     time.Time `json:"at"`
	Detail string    `json:"detail,omitempty"`
}

func (r *Result) done(step string) bool {
	for _, s := range r.Steps {
		if s.Name == step {
			return true
		}
	}
	return false
}

// Programs is what the applier needs of the supervisor: (re)start an app's
// programs from a release directory, and stop them.
type Programs interface {
	Activate(ctx context.Context, app, version, dir string, m Manifest) error
}

// Applier runs tasks. Each step is recorded on disk as it finishes, so a
// task resumed after a crash skips what was done and redoes nothing by half.
type Applier struct {
	Store    *Store
	TaskDir  string // <data-dir>/tasks
	CacheDir string // downloaded packages, by sha256
	Keys     []ed25519.PublicKey
	// RequireSignature refuses unsigned tasks.
	RequireSignature bool
	Limits           Limits
	Keep             int
	HTTP             *http.Client
	// Programs, when set, restarts the app's programs after a switch.
	Programs       Programs
	HealthInterval time.Duration
	// OnStep, when set, is told of each step a task finishes (for
	// progress reports); it must not block.
	OnStep func(Result)
	// ConfigCache is the configd agent's cache directory, read by config
	// templates.
	ConfigCache string
	Log         *slog.Logger

	mu    sync.Mutex
	locks map[string]*sync.Mutex
}

func (a *Applier) lock(key string) func() {
	a.mu.Lock()
	if a.locks == nil {
		a.locks = map[string]*sync.Mutex{}
	}
	l, ok := a.locks[key]
	if !ok {
		l = &sync.Mutex{}
		a.locks[key] = l
	}
	a.mu.Unlock()
	l.Lock()
	return l.Unlock
}

func (a *Applier) resultPath(id string) string { return filepath.Join(a.TaskDir, id+".json") }

// Load returns a task's recorded result.
func (a *Applier) Load(id string) (*Result, error) {
	if err := ValidName("task id", id); err != nil {
		return nil, err
	}
	b, err := os.ReadFile(a.resultPath(id))
	if err != nil {
		return nil, err
	}
	var r Result
	if err := json.Unmarshal(b, &r); err != nil {
		return nil, fmt.Errorf("task %s record: %w", id, err)
	}
	return &r, nil
}

func (a *Applier) save(r *Result) error {
	b, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return err
	}
	return atomicfile.WriteFile(a.resultPath(r.Task.ID), b, 0o644)
}

func (a *Applier) logger() *slog.Logger {
	if a.Log == nil {
		return slog.New(slog.DiscardHandler)
	}
	return a.Log
}

// Apply runs a task to its end and returns its result. A task whose ID has
// finished before returns the recorded result (Replayed); one that was cut
// off resumes after its last finished step. The error is the task's own
// failure, also in Result.Error; a task with the same ID but other fields
// is refused.
func (a *Applier) Apply(ctx context.Context, t Task) (*Result, error) {
	if err := t.Validate(); err != nil {
		return nil, fmt.Errorf("task: %w", err)
	}
	if err := os.MkdirAll(a.TaskDir, 0o750); err != nil {
		return nil, err
	}
	defer a.lock("task/" + t.ID)()
	defer a.lock("app/" + t.App)()
	r, err := a.Load(t.ID)
	switch {
	case errors.Is(err, os.ErrNotExist):
		r = &Result{Task: t, State: StateRunning, Started: time.Now().UTC(), Steps: []Step{}}
		r.Previous, _ = a.Store.Current(t.App)
		if err := a.save(r); err != nil {
			return nil, err
		}
	case err != nil:
		return nil, err
	case r.Task != t:
		return nil, fmt.Errorf("task %s was already given with other fields (app %s version %s): a task id names one task", t.ID, r.Task.App, r.Task.Version)
	case r.State != StateRunning:
		r.Replayed = true
		return r, nil
	default:
		a.logger().Info("resuming task", "task", t.ID, "steps_done", len(r.Steps))
	}
	runErr := a.run(ctx, r)
	if runErr != nil && ctx.Err() != nil {
		// Cut off (the agent is stopping): leave it running to resume.
		return r, runErr
	}
	r.Finished = time.Now().UTC()
	r.State = StateDone
	if runErr != nil {
		r.State = StateFailed
		r.Error = runErr.Error()
	}
	if err := a.save(r); err != nil {
		return r, errors.Join(runErr, err)
	}
	return r, runErr
}

func (a *Applier) step(r *Result, name, detail string) error {
	r.Steps = append(r.Steps, Step{Name: name, At: time.Now().UTC(), Detail: detail})
	a.logger().Info("task step", "task", r.Task.ID, "app", r.Task.App, "version", r.Task.Version, "step", name, "detail", detail)
	if err := a.save(r); err != nil {
		return err
	}
	if a.OnStep != nil {
		snap := *r
		snap.Steps = slices.Clone(r.Steps)
		a.OnStep(snap)
	}
	return nil
}

func (a *Applier) run(ctx context.Context, r *Result) error {
	t := r.Task
	digest := strings.ToLower(strings.TrimPrefix(t.SHA256, "sha256:"))
	if t.Signature != "" || a.RequireSignature {
		if t.Signature == "" {
			return fmt.Errorf("%w: this agent requires signed tasks", ErrSignature)
		}
		if err := VerifySignature(digest, t.Signature, a.Keys); err != nil {
			return err
		}
	}
	var pkg string
	if !a.Store.Installed(t.App, t.Version) || !r.done("unpacked") {
		var err error
		pkg, err = a.fetch(ctx, t.Package, digest)
		if err != nil {
			return err
		}
		if err := VerifySHA256(pkg, digest); err != nil {
			return err
		}
	}
	if !r.done("unpacked") {
		if a.Store.Installed(t.App, t.Version) {
			// Present from an earlier task: its content must be this
			// package's, or the version name is being reused.
			if err := a.Store.CheckDigest(t.App, t.Version, digest); err != nil {
				return err
			}
			if err := a.step(r, "unpacked", "already installed"); err != nil {
				return err
			}
		} else {
			st, err := a.Store.InstallVerified(t.App, t.Version, pkg, digest, a.Limits)
			if err != nil {
				return err
			}
			if err := a.step(r, "unpacked", fmt.Sprintf("%d entries, %d bytes", st.Files, st.Bytes)); err != nil {
				return err
			}
		}
	}
	dir := a.Store.ReleaseDir(t.App, t.Version)
	m, err := ReadManifest(dir)
	if err != nil {
		return err
	}
	if !r.done("rendered") && len(m.Templates) > 0 {
		if err := RenderTemplates(dir, t.App, t.Version, a.ConfigCache, m.Templates); err != nil {
			return err
		}
		if err := a.step(r, "rendered", fmt.Sprintf("%d templates", len(m.Templates))); err != nil {
			return err
		}
	}
	if !r.done("pre_start") {
		if _, err := RunHook(ctx, "pre_start", m.Hooks.PreStart, t.App, t.Version, dir); err != nil {
			return err
		}
		if err := a.step(r, "pre_start", ""); err != nil {
			return err
		}
	}
	if !r.done("switched") {
		if err := a.Store.Switch(t.App, t.Version); err != nil {
			return err
		}
		if err := a.step(r, "switched", "current -> releases/"+t.Version); err != nil {
			return err
		}
	}
	if !r.done("started") {
		if err := a.activate(ctx, t.App, t.Version, m); err != nil {
			return a.rollback(ctx, r, err)
		}
		if err := a.step(r, "started", ""); err != nil {
			return err
		}
	}
	if !r.done("healthy") {
		if _, err := RunHook(ctx, "post_start", m.Hooks.PostStart, t.App, t.Version, dir); err != nil {
			return a.rollback(ctx, r, err)
		}
		if err := RunHealth(ctx, m.Hooks.Health, t.App, t.Version, dir, a.healthInterval()); err != nil {
			return a.rollback(ctx, r, err)
		}
		if err := a.step(r, "healthy", ""); err != nil {
			return err
		}
	}
	keep := t.Keep
	if keep <= 0 {
		keep = a.Keep
	}
	removed, err := a.Store.Prune(t.App, keep)
	if err != nil {
		a.logger().Warn("pruning old releases failed", "app", t.App, "err", err)
	}
	return a.step(r, "pruned", strings.Join(removed, ","))
}

func (a *Applier) healthInterval() time.Duration {
	if a.HealthInterval > 0 {
		return a.HealthInterval
	}
	return time.Second
}

func (a *Applier) activate(ctx context.Context, app, version string, m Manifest) error {
	if a.Programs == nil {
		return nil
	}
	return a.Programs.Activate(ctx, app, version, a.Store.ReleaseDir(app, version), m)
}

// rollback switches back to the release that was current before the task,
// restarts its programs, and returns the task's failure.
func (a *Applier) rollback(ctx context.Context, r *Result, cause error) error {
	t := r.Task
	if r.Previous == "" || r.Previous == t.Version || !a.Store.Installed(t.App, r.Previous) {
		return fmt.Errorf("%w (no previous release to roll back to)", cause)
	}
	if err := a.Store.Switch(t.App, r.Previous); err != nil {
		return errors.Join(cause, fmt.Errorf("rollback to %s: %w", r.Previous, err))
	}
	dir := a.Store.ReleaseDir(t.App, r.Previous)
	m, err := ReadManifest(dir)
	if err == nil {
		err = a.activate(ctx, t.App, r.Previous, m)
	}
	r.RolledBack = true
	_ = a.step(r, "rolled_back", "current -> releases/"+r.Previous)
	if err != nil {
		return errors.Join(cause, fmt.Errorf("restarting %s after rollback: %w", r.Previous, err))
	}
	return fmt.Errorf("%w (rolled back to %s)", cause, r.Previous)
}

// fetch returns a local path holding the package: a local path as is, a
// URL downloaded once into the cache under its digest.
func (a *Applier) fetch(ctx context.Context, src, digest string) (string, error) {
	if !strings.HasPrefix(src, "http://") && !strings.HasPrefix(src, "https://") {
		src = strings.TrimPrefix(src, "file://")
		if _, err := os.Stat(src); err != nil {
			return "", fmt.Errorf("package: %w", err)
		}
		return src, nil
	}
	if err := os.MkdirAll(a.CacheDir, 0o750); err != nil {
		return "", err
	}
	dst := filepath.Join(a.CacheDir, digest+".pkg")
	if VerifySHA256(dst, digest) == nil {
		return dst, nil
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, src, nil)
	if err != nil {
		return "", fmt.Errorf("package: %w", err)
	}
	client := a.HTTP
	if client == nil {
		client = http.DefaultClient
	}
	resp, err := client.Do(req)
	if err != nil {
		return "", fmt.Errorf("package download: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("package download %s: HTTP %s", src, resp.Status)
	}
	w, err := atomicfile.Create(dst, 0o640)
	if err != nil {
		return "", err
	}
	if _, err := io.Copy(w, resp.Body); err != nil {
		w.Abort()
		return "", fmt.Errorf("package download %s: %w", src, err)
	}
	if err := w.Commit(); err != nil {
		return "", err
	}
	return dst, nil
}
