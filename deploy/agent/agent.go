// Package agent joins the release store and the supervisor into the deploy
// agent: tasks switch releases and restart the app's programs, and the
// local HTTP API serves status, program control, logs, releases, rollback
// and tasks.
package agent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/opskit/opskit/deploy/diag"
	"github.com/opskit/opskit/deploy/host"
	"github.com/opskit/opskit/deploy/release"
	"github.com/opskit/opskit/deploy/supervise"
)

// Agent is the deploy agent's core.
type Agent struct {
	Store      *release.Store
	Applier    *release.Applier
	Supervisor *supervise.Supervisor
	Log        *slog.Logger

	// FatalCooldown is the default wait in FATAL before a program's
	// starts are tried again (0: stay FATAL until started by hand).
	FatalCooldown time.Duration
	// Diag, when set, serves the diagnostics allowlist.
	Diag *diag.Allowlist
	// Host, when set, is the host metrics view served on /api/v1/host.
	Host *host.View

	mu sync.Mutex
	// owned lists each app's program names, to remove the ones a new
	// release no longer declares.
	owned map[string][]string
}

// New wires an agent; it sets itself as the applier's Programs.
func New(store *release.Store, applier *release.Applier, sup *supervise.Supervisor, log *slog.Logger) *Agent {
	a := &Agent{Store: store, Applier: applier, Supervisor: sup, Log: log, owned: map[string][]string{}}
	applier.Programs = a
	return a
}

// ProgramName is how an app's program is named in the supervisor,
// supervisord's group:name.
func ProgramName(app, program string) string { return app + ":" + program }

// ProgramConfig turns a manifest or agent-config program into a supervisor
// config running in dir.
func ProgramConfig(name, dir string, p release.ProgramSpec) (supervise.Config, error) {
	c := supervise.Config{Name: name, Command: p.Command, Env: p.Env, Dir: dir, User: p.User, Autostart: true,
		Autorestart: p.Autorestart, StartSecs: p.StartSecs, StopWait: p.StopWait,
		BackoffMin: p.BackoffMin, BackoffMax: p.BackoffMax, FatalCooldown: p.FatalCooldown}
	if p.Dir != "" {
		if strings.HasPrefix(p.Dir, "/") || dir == "" {
			c.Dir = p.Dir
		} else {
			c.Dir = dir + "/" + p.Dir
		}
	}
	if p.Autostart != nil {
		c.Autostart = *p.Autostart
	}
	if p.StartRetries != nil {
		c.StartRetries = *p.StartRetries
	}
	if p.StopSignal != "" {
		sig, err := ParseSignal(p.StopSignal)
		if err != nil {
			return c, fmt.Errorf("program %s: %w", name, err)
		}
		c.StopSignal = sig
	}
	return c, nil
}

// programConfigs expands a program into its instances.
func (a *Agent) programConfigs(app, dir string, p release.ProgramSpec) ([]supervise.Config, error) {
	n := max(p.Instances, 1)
	out := make([]supervise.Config, 0, n)
	for i := range n {
		name := ProgramName(app, p.Name)
		spec := p
		if p.Instances > 1 {
			name = fmt.Sprintf("%s-%d", name, i)
			spec.Env = maps.Clone(p.Env)
			if spec.Env == nil {
				spec.Env = map[string]string{}
			}
			spec.Env["DEPLOY_INSTANCE"] = strconv.Itoa(i)
		}
		c, err := ProgramConfig(name, dir, spec)
		if err != nil {
			return nil, err
		}
		if c.FatalCooldown == 0 {
			c.FatalCooldown = a.FatalCooldown
		}
		out = append(out, c)
	}
	return out, nil
}

// ParseSignal reads a signal name such as TERM, SIGINT or QUIT.
func ParseSignal(s string) (syscall.Signal, error) {
	switch strings.TrimPrefix(strings.ToUpper(s), "SIG") {
	case "TERM":
		return syscall.SIGTERM, nil
	case "INT":
		return syscall.SIGINT, nil
	case "QUIT":
		return syscall.SIGQUIT, nil
	case "HUP":
		return syscall.SIGHUP, nil
	case "KILL":
		return syscall.SIGKILL, nil
	case "USR1":
		return syscall.SIGUSR1, nil
	case "USR2":
		return syscall.SIGUSR2, nil
	}
	return 0, fmt.Errorf("stop signal %q: want TERM, INT, QUIT, HUP, KILL, USR1 or USR2", s)
}

// Activate makes the app's programs those of the release in dir: changed
// programs are restarted (stop, then start), new ones started, ones the
// release dropped stopped and removed. It waits until each started
// program is RUNNING (or failed to start).
func (a *Agent) Activate(ctx context.Context, app, version, dir string, m release.Manifest) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	var names, autostart []string
	var replace []supervise.Config
	var errs []error
	var cfgs []supervise.Config
	for _, p := range m.Programs {
		cs, err := a.programConfigs(app, dir, p)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		cfgs = append(cfgs, cs...)
	}
	for _, c := range cfgs {
		names = append(names, c.Name)
		if m.Restart == "start-stop" && c.Autostart {
			replace = append(replace, c)
			continue
		}
		if err := a.Supervisor.Add(ctx, c); err != nil {
			errs = append(errs, err)
			continue
		}
		if c.Autostart {
			autostart = append(autostart, c.Name)
		}
	}
	// The programs start together; each start is waited for.
	var wg sync.WaitGroup
	startErrs := make([]error, len(autostart))
	for i, name := range autostart {
		wg.Add(1)
		go func() {
			defer wg.Done()
			startErrs[i] = a.Supervisor.Start(ctx, name)
		}()
	}
	replaceErrs := make([]error, len(replace))
	for i, c := range replace {
		wg.Add(1)
		go func() {
			defer wg.Done()
			replaceErrs[i] = a.Supervisor.Replace(ctx, c)
		}()
	}
	wg.Wait()
	errs = append(errs, startErrs...)
	errs = append(errs, replaceErrs...)
	for _, old := range a.owned[app] {
		if !slices.Contains(names, old) {
			if err := a.Supervisor.Remove(ctx, old); err != nil {
				errs = append(errs, err)
			}
		}
	}
	a.owned[app] = names
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("%s %s: %w", app, version, err)
	}
	a.Log.Info("release active", "app", app, "version", version, "programs", len(names))
	return nil
}

// Resume supervises the programs of every app's current release, as the
// agent starts: running ones recorded by the previous agent are re-adopted.
func (a *Agent) Resume(ctx context.Context) error {
	apps, err := a.Store.Apps()
	if err != nil {
		return err
	}
	var errs []error
	for _, app := range apps {
		v, err := a.Store.Current(app)
		if err != nil || v == "" {
			continue
		}
		dir := a.Store.ReleaseDir(app, v)
		m, err := release.ReadManifest(dir)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s %s: %w", app, v, err))
			continue
		}
		// Add only: adoption or autostart happen in the background, so
		// a crash-looping program does not hold up the agent's start.
		a.mu.Lock()
		var names []string
		for _, p := range m.Programs {
			cs, err := a.programConfigs(app, dir, p)
			if err != nil {
				errs = append(errs, err)
				continue
			}
			for _, c := range cs {
				if err := a.Supervisor.Add(ctx, c); err != nil {
					errs = append(errs, err)
					continue
				}
				names = append(names, c.Name)
			}
		}
		a.owned[app] = names
		a.mu.Unlock()
	}
	return errors.Join(errs...)
}

// Rollback switches app back to version (or the previous release) and
// restarts its programs.
func (a *Agent) Rollback(ctx context.Context, app, version string) (string, error) {
	if err := release.ValidName("app", app); err != nil {
		return "", err
	}
	v, err := a.Store.Rollback(app, version)
	if err != nil {
		return "", err
	}
	dir := a.Store.ReleaseDir(app, v)
	m, err := release.ReadManifest(dir)
	if err != nil {
		return v, err
	}
	return v, a.Activate(ctx, app, v, dir, m)
}
