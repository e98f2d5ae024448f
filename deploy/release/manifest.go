package release

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"gopkg.in/yaml.v3"
)

// ManifestName is the file in a release's root that describes it.
const ManifestName = "deploy.yaml"

// Manifest is a release's deploy.yaml.
type Manifest struct {
	// Hooks run at fixed points of a deploy, in the release directory.
	Hooks Hooks `yaml:"hooks" json:"hooks"`
	// Programs are supervised while the release is current; their
	// commands are relative to the release directory.
	Programs []ProgramSpec `yaml:"programs" json:"programs"`
	// Templates are rendered from configd's cache before pre_start.
	Templates []Template `yaml:"templates" json:"templates,omitempty"`
	// Restart is "stop-start" (default; for programs that cannot run
	// twice) or "start-stop" (start new, wait for health, stop old).
	Restart string `yaml:"restart" json:"restart,omitempty"`
}

// Hooks are the deploy's hook commands; each is optional.
type Hooks struct {
	PreStart  *Hook `yaml:"pre_start" json:"pre_start,omitempty"`
	PostStart *Hook `yaml:"post_start" json:"post_start,omitempty"`
	Health    *Hook `yaml:"health" json:"health,omitempty"`
	PreStop   *Hook `yaml:"pre_stop" json:"pre_stop,omitempty"`
}

// Hook is one command with a timeout. A health hook is retried until it
// succeeds or its timeout ends.
type Hook struct {
	Command []string      `yaml:"command" json:"command"`
	Timeout time.Duration `yaml:"timeout" json:"timeout"`
}

// ProgramSpec is a program as a manifest or the agent config declares it;
// the supervisor's package turns it into a running program.
type ProgramSpec struct {
	Name    string            `yaml:"name" json:"name"`
	Command []string          `yaml:"command" json:"command"`
	Env     map[string]string `yaml:"env" json:"env,omitempty"`
	Dir     string            `yaml:"dir" json:"dir,omitempty"`
	User    string            `yaml:"user" json:"user,omitempty"`
	// Instances runs that many copies, named NAME-0, NAME-1, ... with
	// DEPLOY_INSTANCE set to their number (default 1, named NAME).
	Instances    int           `yaml:"instances" json:"instances,omitempty"`
	Autostart    *bool         `yaml:"autostart" json:"autostart,omitempty"`
	Autorestart  string        `yaml:"autorestart" json:"autorestart,omitempty"`
	StartSecs    time.Duration `yaml:"startsecs" json:"startsecs,omitempty"`
	StartRetries *int          `yaml:"startretries" json:"startretries,omitempty"`
	StopSignal   string        `yaml:"stopsignal" json:"stopsignal,omitempty"`
	StopWait     time.Duration `yaml:"stopwaitsecs" json:"stopwaitsecs,omitempty"`
	// BackoffMin and BackoffMax bound the exponential wait between failed
	// starts; FatalCooldown is the wait in FATAL before trying again.
	BackoffMin    time.Duration `yaml:"backoff_min" json:"backoff_min,omitempty"`
	BackoffMax    time.Duration `yaml:"backoff_max" json:"backoff_max,omitempty"`
	FatalCooldown time.Duration `yaml:"fatal_cooldown" json:"fatal_cooldown,omitempty"`
}

// ReadManifest reads deploy.yaml from a release directory; a release
// without one has an empty manifest.
func ReadManifest(dir string) (Manifest, error) {
	var m Manifest
	b, err := os.ReadFile(filepath.Join(dir, ManifestName))
	if errors.Is(err, os.ErrNotExist) {
		return m, nil
	}
	if err != nil {
		return m, err
	}
	return ParseManifest(b)
}

// ParseManifest parses deploy.yaml strictly: an unknown key is an error.
func ParseManifest(b []byte) (Manifest, error) {
	var m Manifest
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	if err := dec.Decode(&m); err != nil && !errors.Is(err, io.EOF) {
		return Manifest{}, fmt.Errorf("%s: %w", ManifestName, err)
	}
	for i, p := range m.Programs {
		if p.Name == "" || len(p.Command) == 0 {
			return Manifest{}, fmt.Errorf("%s: programs[%d] needs a name and a command", ManifestName, i)
		}
		if p.Instances < 0 || p.Instances > 1000 {
			return Manifest{}, fmt.Errorf("%s: program %s: instances %d: want 1 to 1000", ManifestName, p.Name, p.Instances)
		}
		if strings.ContainsAny(p.Name, ":/ ") {
			return Manifest{}, fmt.Errorf("%s: program name %q may not hold ':', '/' or spaces", ManifestName, p.Name)
		}
	}
	switch m.Restart {
	case "", "stop-start", "start-stop":
	default:
		return Manifest{}, fmt.Errorf("%s: restart %q: want stop-start or start-stop", ManifestName, m.Restart)
	}
	return m, nil
}

// HookEnv is the clean environment hooks run with: nothing of the agent's
// own environment leaks in.
func HookEnv(app, version, dir string) []string {
	return []string{
		"PATH=/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin",
		"LANG=C.UTF-8",
		"HOME=" + dir,
		"DEPLOY_APP=" + app,
		"DEPLOY_VERSION=" + version,
		"DEPLOY_RELEASE_DIR=" + dir,
	}
}

// RunHook runs one hook in dir with the clean environment, in its own
// process group killed whole at the timeout. It returns the combined
// output (at most 64 KiB kept).
func RunHook(ctx context.Context, name string, h *Hook, app, version, dir string) ([]byte, error) {
	if h == nil || len(h.Command) == 0 {
		return nil, nil
	}
	timeout := h.Timeout
	if timeout <= 0 {
		timeout = 60 * time.Second
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	argv0 := h.Command[0]
	if !strings.Contains(argv0, "/") {
		if p, err := exec.LookPath(argv0); err == nil {
			argv0 = p
		}
	} else if !filepath.IsAbs(argv0) {
		argv0 = filepath.Join(dir, argv0)
	}
	cmd := exec.CommandContext(ctx, argv0, h.Command[1:]...)
	cmd.Dir = dir
	cmd.Env = HookEnv(app, version, dir)
	out := &limitedBuffer{max: 64 << 10}
	cmd.Stdout, cmd.Stderr = out, out
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = time.Second
	err := cmd.Run()
	if ctx.Err() == context.DeadlineExceeded {
		return out.Bytes(), fmt.Errorf("hook %s %w after %s", name, errHookTimeout, timeout)
	}
	if err != nil {
		return out.Bytes(), fmt.Errorf("hook %s: %w: %s", name, err, strings.TrimSpace(lastLine(out.Bytes())))
	}
	return out.Bytes(), nil
}

var errHookTimeout = errors.New("timed out")

// RunHealth retries the health hook every interval until it passes or its
// timeout ends.
func RunHealth(ctx context.Context, h *Hook, app, version, dir string, interval time.Duration) error {
	if h == nil || len(h.Command) == 0 {
		return nil
	}
	timeout := h.Timeout
	if timeout <= 0 {
		timeout = 60 * time.Second
	}
	deadline := time.Now().Add(timeout)
	var last error
	for {
		left := time.Until(deadline)
		if left <= 0 && last != nil {
			return fmt.Errorf("health check failed for %s: %w", timeout, last)
		}
		one := &Hook{Command: h.Command, Timeout: max(min(left, 10*time.Second), time.Millisecond)}
		_, err := RunHook(ctx, "health", one, app, version, dir)
		if err == nil {
			return nil
		}
		// A last try cut short by the deadline says less than the one
		// before it.
		if last == nil || !errors.Is(err, errHookTimeout) {
			last = err
		}
		if time.Until(deadline) < interval {
			return fmt.Errorf("health check failed for %s: %w", timeout, last)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(interval):
		}
	}
}

func lastLine(b []byte) string {
	s := strings.TrimSpace(string(b))
	if i := strings.LastIndexByte(s, '\n'); i >= 0 {
		return s[i+1:]
	}
	return s
}

type limitedBuffer struct {
	buf bytes.Buffer
	max int
}

func (l *limitedBuffer) Write(p []byte) (int, error) {
	if room := l.max - l.buf.Len(); room > 0 {
		l.buf.Write(p[:min(len(p), room)])
	}
	return len(p), nil
}

func (l *limitedBuffer) Bytes() []byte { return l.buf.Bytes() }
