// Package supervise keeps programs running with supervisord's states
// (STOPPED, STARTING, RUNNING, BACKOFF, STOPPING, EXITED, FATAL), fixed
// where its users complain: restarts back off exponentially with jitter up
// to a cap, FATAL is retried after a cool-down, a stop escalates to SIGKILL
// of the whole process group and of descendants that left it, orphans are
// reaped (the agent is a child subreaper), output goes to files rotated by
// size, and programs survive the agent: their pid and start time are
// recorded and re-adopted when it starts again.
package supervise

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/VictoriaMetrics/metrics"

	"github.com/opskit/opskit/internal/atomicfile"
)

// States, as supervisord names them.
const (
	Stopped  = "STOPPED"
	Starting = "STARTING"
	Running  = "RUNNING"
	Backoff  = "BACKOFF"
	Stopping = "STOPPING"
	Exited   = "EXITED"
	Fatal    = "FATAL"
)

// States lists every state, for metrics.
var States = []string{Stopped, Starting, Running, Backoff, Stopping, Exited, Fatal}

// Autorestart policies.
const (
	RestartAlways    = "always"
	RestartOnFailure = "on-failure"
	RestartNever     = "never"
)

// Config is one program.
type Config struct {
	Name    string            `json:"name"`
	Command []string          `json:"command"`
	Env     map[string]string `json:"env,omitempty"`
	Dir     string            `json:"dir,omitempty"`
	// User runs the program as this user (name or uid) and its primary
	// group; the agent must be root for it.
	User string `json:"user,omitempty"`
	// Autostart starts the program when it is added.
	Autostart bool `json:"autostart"`
	// Autorestart: always, on-failure (exit code not in ExitCodes) or never.
	Autorestart string `json:"autorestart"`
	ExitCodes   []int  `json:"exitcodes,omitempty"`
	// StartSecs is how long a start must last to count as RUNNING.
	StartSecs time.Duration `json:"startsecs"`
	// StartRetries is how many failed starts in a row lead to FATAL.
	StartRetries int `json:"startretries"`
	// BackoffMin doubles after each failed start, up to BackoffMax; each
	// wait is spread by ±Jitter (a fraction) so a fleet does not retry in step.
	BackoffMin time.Duration `json:"backoff_min"`
	BackoffMax time.Duration `json:"backoff_max"`
	Jitter     float64       `json:"jitter"`
	// FatalCooldown is the wait in FATAL before the starts are tried again
	// (0: stay FATAL until started by hand, as supervisord does).
	FatalCooldown time.Duration  `json:"fatal_cooldown"`
	StopSignal    syscall.Signal `json:"stopsignal"`
	StopWait      time.Duration  `json:"stopwait"`
}

// Defaults fills unset fields with supervisord's defaults where they are
// sound and ours where they are not.
func (c Config) Defaults() Config {
	if c.Autorestart == "" {
		c.Autorestart = RestartOnFailure
	}
	if len(c.ExitCodes) == 0 {
		c.ExitCodes = []int{0}
	}
	if c.StartSecs == 0 {
		c.StartSecs = time.Second
	}
	if c.StartRetries == 0 {
		c.StartRetries = 3
	}
	if c.BackoffMin <= 0 {
		c.BackoffMin = time.Second
	}
	if c.BackoffMax <= 0 {
		c.BackoffMax = time.Minute
	}
	if c.Jitter == 0 {
		c.Jitter = 0.2
	}
	if c.StopSignal == 0 {
		c.StopSignal = syscall.SIGTERM
	}
	if c.StopWait <= 0 {
		c.StopWait = 10 * time.Second
	}
	return c
}

// Validate checks a config after Defaults.
func (c Config) Validate() error {
	if c.Name == "" || strings.ContainsAny(c.Name, "/ \n") {
		return fmt.Errorf("program name %q: want no slash or space", c.Name)
	}
	if len(c.Command) == 0 {
		return fmt.Errorf("program %s: empty command", c.Name)
	}
	switch c.Autorestart {
	case RestartAlways, RestartOnFailure, RestartNever:
	default:
		return fmt.Errorf("program %s: autorestart %q: want always, on-failure or never", c.Name, c.Autorestart)
	}
	if c.Jitter < 0 || c.Jitter >= 1 {
		return fmt.Errorf("program %s: jitter %v: want 0 <= jitter < 1", c.Name, c.Jitter)
	}
	return nil
}

// fingerprint names what must not change for a running process to be
// re-adopted as this program.
func (c Config) fingerprint() string {
	b, _ := json.Marshal(struct {
		Command []string
		Env     map[string]string
		Dir     string
		User    string
	}{c.Command, c.Env, c.Dir, c.User})
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:8])
}

// BackoffDelay is the wait before start attempt n+1 after n failures.
func BackoffDelay(c Config, n int, rnd func() float64) time.Duration {
	d := c.BackoffMin
	for i := 1; i < n && d < c.BackoffMax; i++ {
		d *= 2
	}
	d = min(d, c.BackoffMax)
	if c.Jitter > 0 {
		d = time.Duration(float64(d) * (1 + c.Jitter*(2*rnd()-1)))
	}
	return d
}

// Status is a program's state as the API shows it.
type Status struct {
	Name     string    `json:"name"`
	State    string    `json:"state"`
	PID      int       `json:"pid,omitempty"`
	Since    time.Time `json:"since"`
	Retries  int       `json:"retries,omitempty"`
	ExitCode *int      `json:"exit_code,omitempty"`
	Adopted  bool      `json:"adopted,omitempty"`
	Message  string    `json:"message,omitempty"`
	Starts   int       `json:"starts"`
}

// Options configure a Supervisor.
type Options struct {
	// StateDir holds programs.json (pids and start times for re-adoption).
	StateDir string
	// LogDir holds NAME.out.log and NAME.err.log.
	LogDir      string
	LogMaxBytes int64
	LogBackups  int
	// Poll is how often adopted programs are checked for life, logs for
	// size and orphans reaped.
	Poll    time.Duration
	Log     *slog.Logger
	Metrics *metrics.Set
}

// Supervisor runs programs.
type Supervisor struct {
	opts Options
	log  *slog.Logger

	mu       sync.Mutex
	programs map[string]*program
	// records are the persisted pids, read at New for re-adoption.
	records map[string]record
	saveMu  sync.Mutex

	fatals *metrics.Counter
}

// record is one program's entry in programs.json.
type record struct {
	PID         int       `json:"pid"`
	StartTicks  uint64    `json:"start_ticks"`
	Started     time.Time `json:"started"`
	Fingerprint string    `json:"fingerprint"`
}

// New opens the state directory and reads the records of programs a
// previous agent left running.
func New(opts Options) (*Supervisor, error) {
	if opts.Poll <= 0 {
		opts.Poll = defaultPoll
	}
	if opts.LogMaxBytes <= 0 {
		opts.LogMaxBytes = 50 << 20
	}
	if opts.LogBackups <= 0 {
		opts.LogBackups = 5
	}
	if opts.Log == nil {
		opts.Log = slog.New(slog.DiscardHandler)
	}
	if opts.Metrics == nil {
		opts.Metrics = metrics.NewSet()
	}
	for _, d := range []string{opts.StateDir, opts.LogDir} {
		if err := os.MkdirAll(d, 0o750); err != nil {
			return nil, err
		}
	}
	s := &Supervisor{opts: opts, log: opts.Log, programs: map[string]*program{}, records: map[string]record{}}
	s.fatals = opts.Metrics.NewCounter("opskit_deploy_program_fatal_total")
	b, err := os.ReadFile(s.statePath())
	if err == nil {
		if err := json.Unmarshal(b, &s.records); err != nil {
			s.log.Warn("ignoring unreadable program records", "file", s.statePath(), "err", err)
		}
	} else if !errors.Is(err, os.ErrNotExist) {
		return nil, err
	}
	return s, nil
}

func (s *Supervisor) statePath() string { return filepath.Join(s.opts.StateDir, "programs.json") }

// save persists the running programs' pids.
func (s *Supervisor) save() {
	s.saveMu.Lock()
	defer s.saveMu.Unlock()
	s.mu.Lock()
	recs := map[string]record{}
	for name, p := range s.programs {
		if r, ok := p.record(); ok {
			recs[name] = r
		}
	}
	s.mu.Unlock()
	b, _ := json.MarshalIndent(recs, "", "  ")
	if err := atomicfile.WriteFile(s.statePath(), b, 0o640); err != nil {
		s.log.Error("cannot record program pids; a restarted agent will not re-adopt them", "err", err)
	}
}

// Run reaps orphans, watches adopted programs and rotates logs until ctx
// ends. Programs keep running after it returns (see StopAll).
func (s *Supervisor) Run(ctx context.Context) error {
	if err := BecomeSubreaper(); err != nil {
		s.log.Warn("cannot become a child subreaper; orphans of programs go to init", "err", err)
	}
	zombies := map[int]uint64{}
	tick := time.NewTicker(s.opts.Poll)
	defer tick.Stop()
	n := 0
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
		}
		n++
		s.mu.Lock()
		progs := make([]*program, 0, len(s.programs))
		for _, p := range s.programs {
			progs = append(progs, p)
		}
		s.mu.Unlock()
		for _, p := range progs {
			p.checkAdopted()
		}
		if n%5 == 0 {
			reapOrphans(zombies)
			for _, p := range progs {
				p.rotateLogs(s.opts.LogMaxBytes, s.opts.LogBackups)
			}
		}
	}
}

// Add starts supervising a program, or updates it: a changed command,
// environment or directory restarts it (if it was running).
func (s *Supervisor) Add(ctx context.Context, c Config) error {
	c = c.Defaults()
	if err := c.Validate(); err != nil {
		return err
	}
	s.mu.Lock()
	old := s.programs[c.Name]
	s.mu.Unlock()
	if old != nil {
		restart := old.setConfig(c)
		if restart {
			return old.restart(ctx)
		}
		return nil
	}
	p := newProgram(s, c)
	s.mu.Lock()
	s.programs[c.Name] = p
	rec, hasRec := s.records[c.Name]
	delete(s.records, c.Name)
	s.mu.Unlock()
	p.registerMetrics(s.opts.Metrics)
	go p.loop()
	if hasRec && rec.Fingerprint == c.fingerprint() && alive(rec.PID, rec.StartTicks) {
		p.send(command{kind: cmdAdopt, rec: rec})
		return nil
	}
	if c.Autostart {
		p.send(command{kind: cmdStart})
	}
	return nil
}

// Replace updates a program without a gap: when it is RUNNING and its
// command, environment or directory changed, the new process is started
// beside the old one, which is stopped once the new one is RUNNING (after
// startsecs); if the new one fails to start, the old one is kept and the
// error returned. A program not running is simply updated and started. The
// program must tolerate two of itself at once (e.g. SO_REUSEPORT).
func (s *Supervisor) Replace(ctx context.Context, c Config) error {
	c = c.Defaults()
	if err := c.Validate(); err != nil {
		return err
	}
	s.mu.Lock()
	p := s.programs[c.Name]
	s.mu.Unlock()
	if p == nil || p.status().State != Running {
		if err := s.Add(ctx, c); err != nil {
			return err
		}
		return s.Start(ctx, c.Name)
	}
	p.mu.Lock()
	same := p.cfg.fingerprint() == c.fingerprint()
	if same {
		p.cfg = c
	}
	p.mu.Unlock()
	if same {
		return nil
	}
	done := make(chan error, 1)
	if !p.send(command{kind: cmdReplace, cfg: c, done: done}) {
		return fmt.Errorf("program %s was removed", c.Name)
	}
	select {
	case err := <-done:
		if errors.Is(err, errNotRunning) {
			if err := s.Add(ctx, c); err != nil {
				return err
			}
			return s.Start(ctx, c.Name)
		}
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Remove stops a program and forgets it.
func (s *Supervisor) Remove(ctx context.Context, name string) error {
	p, err := s.get(name)
	if err != nil {
		return err
	}
	err = p.stop(ctx)
	s.mu.Lock()
	delete(s.programs, name)
	s.mu.Unlock()
	p.close()
	s.save()
	return err
}

func (s *Supervisor) get(name string) (*program, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	p, ok := s.programs[name]
	if !ok {
		return nil, fmt.Errorf("no program %q", name)
	}
	return p, nil
}

// Start starts a stopped, exited or fatal program and waits until it is
// RUNNING or has failed to start.
func (s *Supervisor) Start(ctx context.Context, name string) error {
	p, err := s.get(name)
	if err != nil {
		return err
	}
	return p.start(ctx)
}

// Stop stops a program, escalating to SIGKILL after its stop wait.
func (s *Supervisor) Stop(ctx context.Context, name string) error {
	p, err := s.get(name)
	if err != nil {
		return err
	}
	return p.stop(ctx)
}

// Restart stops then starts a program.
func (s *Supervisor) Restart(ctx context.Context, name string) error {
	p, err := s.get(name)
	if err != nil {
		return err
	}
	return p.restart(ctx)
}

// StopAll stops every program (for an agent told to take its programs
// down with it).
func (s *Supervisor) StopAll(ctx context.Context) error {
	var errs []error
	for _, st := range s.Status() {
		if err := s.Stop(ctx, st.Name); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// Status lists the programs sorted by name.
func (s *Supervisor) Status() []Status {
	s.mu.Lock()
	progs := make([]*program, 0, len(s.programs))
	for _, p := range s.programs {
		progs = append(progs, p)
	}
	s.mu.Unlock()
	out := make([]Status, 0, len(progs))
	for _, p := range progs {
		out = append(out, p.status())
	}
	slices.SortFunc(out, func(a, b Status) int { return strings.Compare(a.Name, b.Name) })
	return out
}

// Names lists the programs.
func (s *Supervisor) Names() []string {
	var names []string
	for _, st := range s.Status() {
		names = append(names, st.Name)
	}
	return names
}

// LogPath returns the file a program's stream ("out" or "err") is written to.
func (s *Supervisor) LogPath(name, stream string) (string, error) {
	if _, err := s.get(name); err != nil {
		return "", err
	}
	if stream != "out" && stream != "err" {
		return "", fmt.Errorf("stream %q: want out or err", stream)
	}
	return filepath.Join(s.opts.LogDir, name+"."+stream+".log"), nil
}

func jitterRand() float64 { return rand.Float64() }

// lookCommand resolves argv[0] against dir and PATH.
func lookCommand(argv0, dir string) (string, error) {
	if strings.Contains(argv0, "/") {
		if !filepath.IsAbs(argv0) && dir != "" {
			return filepath.Join(dir, argv0), nil
		}
		return argv0, nil
	}
	return exec.LookPath(argv0)
}

// Detach stops supervising without stopping the programs, as the agent
// does when it exits: their pids stay recorded for the next agent to
// re-adopt.
func (s *Supervisor) Detach() {
	s.mu.Lock()
	progs := make([]*program, 0, len(s.programs))
	for _, p := range s.programs {
		progs = append(progs, p)
	}
	s.mu.Unlock()
	for _, p := range progs {
		p.close()
		<-p.ended
	}
	s.save()
}
