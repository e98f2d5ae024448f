// Package agent is configd's per-host agent: it long-polls configd servers
// (failing over between them) for the namespaces the host needs, writes
// each release atomically as a versioned directory switched in with a
// symlink, runs check and reload commands (restoring the last good release
// when they fail), reports the outcome, registers the host with the naming
// service, and keeps serving the cached files when no server answers.
package agent

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"path/filepath"
	"strconv"
	"sync"
	"time"

	"github.com/VictoriaMetrics/metrics"

	"github.com/opskit/opskit/configd/api"
	"github.com/opskit/opskit/configd/client"
	"github.com/opskit/opskit/configd/manifest"
)

// Config tunes an Agent.
type Config struct {
	Host   string
	Labels map[string]string
	Apps   []string
	// Addr is advertised to the naming service (e.g. this agent's listener).
	Addr    string
	Targets []Target
	// CacheDir holds the targets that give no Dir.
	CacheDir          string
	WatchTimeout      time.Duration
	HeartbeatInterval time.Duration
	// StaleAfter is the age of the last successful check beyond which the
	// agent reports itself stale (not ready).
	StaleAfter   time.Duration
	KeepReleases int
	CheckTimeout time.Duration
	Logger       *slog.Logger
	Metrics      *metrics.Set
	// Readiness receives the stale / fresh state (kit.Daemon fits).
	Readiness Readiness
	Now       func() time.Time
}

// Readiness is where the agent reports staleness.
type Readiness interface {
	SetNotReady(key, reason string)
	SetReady(key string)
}

// Agent keeps a host's namespaces in step with the servers.
type Agent struct {
	cfg      Config
	remote   *client.Remote
	log      *slog.Logger
	appliers map[string]*applier
	started  time.Time

	mu        sync.Mutex
	known     map[string]int64 // version last seen from the server, failed or not
	inForce   map[string]int64
	results   map[string]Result
	lastCheck time.Time
	lastErr   error
	changed   chan struct{} // closed and replaced when a namespace switches
	reported  bool

	applies, failures, checkErrors *metrics.Counter
}

// New builds an agent; it reads what the cache already holds.
func New(cfg Config, remote *client.Remote) (*Agent, error) {
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Metrics == nil {
		cfg.Metrics = metrics.NewSet()
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.KeepReleases <= 0 {
		cfg.KeepReleases = 5
	}
	if cfg.CheckTimeout <= 0 {
		cfg.CheckTimeout = 30 * time.Second
	}
	if cfg.Host == "" {
		return nil, errors.New("agent: host name is empty")
	}
	if len(cfg.Targets) == 0 && len(cfg.Apps) == 0 {
		return nil, errors.New("agent: nothing to do: give namespaces to keep (--namespace or a namespaces: section) and/or apps to register (--app)")
	}
	a := &Agent{cfg: cfg, remote: remote, log: cfg.Logger, appliers: map[string]*applier{}, started: cfg.Now(),
		known: map[string]int64{}, inForce: map[string]int64{}, results: map[string]Result{}, changed: make(chan struct{})}
	for _, t := range cfg.Targets {
		if err := api.ValidateNamespace(t.Namespace); err != nil {
			return nil, fmt.Errorf("agent: %w", err)
		}
		if _, dup := a.appliers[t.Namespace]; dup {
			return nil, fmt.Errorf("agent: namespace %s listed twice", t.Namespace)
		}
		if t.ReloadSignal != "" {
			if _, err := ParseSignal(t.ReloadSignal); err != nil {
				return nil, fmt.Errorf("agent: %s: %w", t.Namespace, err)
			}
			if t.PidFile == "" {
				return nil, fmt.Errorf("agent: %s: reload_signal needs pid_file", t.Namespace)
			}
		}
		if t.Dir == "" {
			t.Dir = filepath.Join(cfg.CacheDir, filepath.FromSlash(t.Namespace))
		}
		// Commands run inside the directory and get paths to it: keep them absolute.
		abs, err := filepath.Abs(t.Dir)
		if err != nil {
			return nil, fmt.Errorf("agent: %s: %w", t.Namespace, err)
		}
		t.Dir = abs
		ap := &applier{t: t, keep: cfg.KeepReleases, checkTimeout: cfg.CheckTimeout, now: cfg.Now}
		a.appliers[t.Namespace] = ap
		m, err := ap.current()
		if err != nil {
			a.log.Warn("cached release unreadable; it will be fetched again", "namespace", t.Namespace, "err", err)
		}
		a.known[t.Namespace], a.inForce[t.Namespace] = m.Version, m.Version
	}
	a.applies = cfg.Metrics.NewCounter("opskit_configd_agent_applies_total")
	a.failures = cfg.Metrics.NewCounter("opskit_configd_agent_apply_failures_total")
	a.checkErrors = cfg.Metrics.NewCounter("opskit_configd_agent_server_errors_total")
	cfg.Metrics.NewGauge("opskit_configd_agent_last_check_age_seconds", func() float64 { return a.staleness().Seconds() })
	cfg.Metrics.NewGauge("opskit_configd_agent_stale", func() float64 {
		if a.stale() {
			return 1
		}
		return 0
	})
	for ns := range a.appliers {
		cfg.Metrics.NewGauge(fmt.Sprintf(`opskit_configd_agent_release{namespace=%q}`, ns), func() float64 {
			a.mu.Lock()
			defer a.mu.Unlock()
			return float64(a.inForce[ns])
		})
	}
	return a, nil
}

// Dir returns where a namespace's files are kept.
func (a *Agent) Dir(ns string) string {
	if ap := a.appliers[ns]; ap != nil {
		return ap.t.Dir
	}
	return ""
}

// staleness is the age of the last successful check (or of the start, for
// an agent that has not reached a server yet).
func (a *Agent) staleness() time.Duration {
	a.mu.Lock()
	defer a.mu.Unlock()
	last := a.lastCheck
	if last.IsZero() {
		last = a.started
	}
	return a.cfg.Now().Sub(last)
}

func (a *Agent) stale() bool { return a.cfg.StaleAfter > 0 && a.staleness() > a.cfg.StaleAfter }

func (a *Agent) updateReadiness() {
	if a.cfg.Readiness == nil {
		return
	}
	if a.stale() {
		a.mu.Lock()
		never := a.lastCheck.IsZero()
		err := a.lastErr
		a.mu.Unlock()
		reason := fmt.Sprintf("stale: no successful check with a server for %s (serving cached files)", a.staleness().Round(time.Second))
		if never {
			reason = "stale: no server reached since start (serving cached files)"
		}
		if err != nil {
			reason += ": " + err.Error()
		}
		a.cfg.Readiness.SetNotReady("stale", reason)
		return
	}
	a.cfg.Readiness.SetReady("stale")
}

// Run watches, applies and heartbeats until ctx ends.
func (a *Agent) Run(ctx context.Context) error {
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); a.heartbeat(ctx) }()
	go func() {
		defer wg.Done()
		t := time.NewTicker(max(a.cfg.StaleAfter/10, 50*time.Millisecond))
		defer t.Stop()
		for {
			a.updateReadiness()
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
		}
	}()
	if len(a.appliers) > 0 {
		a.watchLoop(ctx)
	} else {
		// Membership only: heartbeats are the agent's whole job (and
		// their success is its freshness).
		<-ctx.Done()
	}
	wg.Wait()
	return nil
}

func (a *Agent) watchLoop(ctx context.Context) {
	backoff := 100 * time.Millisecond
	for ctx.Err() == nil {
		a.mu.Lock()
		held := make(map[string]int64, len(a.known))
		for k, v := range a.known {
			held[k] = v
		}
		a.mu.Unlock()
		changes, err := a.remote.WatchContent(ctx, held, a.cfg.Host, a.cfg.Labels, a.cfg.WatchTimeout)
		if ctx.Err() != nil {
			return
		}
		if err != nil {
			a.checkFailed(err)
			// Jitter spreads the reconnects of a fleet that lost its server.
			sleep(ctx, backoff+rand.N(backoff))
			backoff = min(backoff*2, 5*time.Second)
			continue
		}
		backoff = 100 * time.Millisecond
		a.checkOK()
		a.reportInitial(ctx)
		for _, c := range changes {
			if err := a.sync(ctx, c); err != nil {
				a.checkFailed(err)
			}
		}
	}
}

func sleep(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}

func (a *Agent) checkOK() {
	a.mu.Lock()
	a.lastCheck, a.lastErr = a.cfg.Now(), nil
	a.mu.Unlock()
	a.updateReadiness()
}

func (a *Agent) checkFailed(err error) {
	a.checkErrors.Inc()
	a.mu.Lock()
	first := a.lastErr == nil
	a.lastErr = err
	// The server may be restarting and lose what hosts reported (it keeps
	// reports in memory): tell it again once it answers.
	a.reported = false
	a.mu.Unlock()
	if first {
		a.log.Warn("no configd server answered; serving cached files", "err", err)
	} else {
		a.log.Debug("server check failed", "err", err)
	}
	a.updateReadiness()
}

// sync applies the release a change carries, or fetches the one the
// server has for this host.
func (a *Agent) sync(ctx context.Context, c api.Change) error {
	ns := c.Namespace
	if _, ok := a.appliers[ns]; !ok {
		return fmt.Errorf("server sent a change of %s, which this agent does not keep", ns)
	}
	var rel api.Release
	var err error
	if len(c.Release) > 0 {
		if err = json.Unmarshal(c.Release, &rel); err == nil && (rel.Namespace != ns || rel.Version != c.Version) {
			err = fmt.Errorf("watch answer for %s@%d carries %s@%d", ns, c.Version, rel.Namespace, rel.Version)
		}
	}
	if len(c.Release) == 0 || err != nil {
		rel, err = a.remote.Config(ctx, ns, a.cfg.Host, a.cfg.Labels)
	}
	if client.IsNotFound(err) {
		a.mu.Lock()
		a.known[ns] = 0
		a.mu.Unlock()
		return nil
	}
	if err != nil {
		return err
	}
	a.mu.Lock()
	same := a.inForce[ns] == rel.Version
	a.mu.Unlock()
	var res Result
	if same {
		res = Result{Version: rel.Version, InForce: rel.Version}
	} else {
		start := time.Now()
		res = a.appliers[ns].apply(ctx, rel)
		a.applies.Inc()
		if res.Err != nil {
			a.failures.Inc()
			a.log.Error("apply failed", "namespace", ns, "version", rel.Version, "in_force", res.InForce, "err", res.Err, "output", res.Output)
		} else {
			a.log.Info("applied", "namespace", ns, "version", rel.Version, "took", time.Since(start).Round(time.Microsecond))
		}
	}
	a.mu.Lock()
	a.known[ns] = rel.Version
	switched := a.inForce[ns] != res.InForce
	a.inForce[ns] = res.InForce
	a.results[ns] = res
	if switched {
		close(a.changed)
		a.changed = make(chan struct{})
	}
	a.mu.Unlock()
	a.report(ctx, ns, res)
	return nil
}

func (a *Agent) report(ctx context.Context, ns string, res Result) {
	rep := api.Report{Host: a.cfg.Host, Namespace: ns, Version: res.Version, Applied: res.InForce, OK: res.Err == nil, Time: a.cfg.Now().UTC()}
	if res.Err != nil {
		rep.Error = res.Err.Error()
		if res.Output != "" {
			rep.Error += ": " + res.Output
		}
	}
	if m, err := a.appliers[ns].current(); err == nil {
		for _, f := range m.Files {
			rep.Files = append(rep.Files, api.File{Name: f.Name, SHA256: f.SHA256})
		}
	}
	if err := a.remote.Report(ctx, rep); err != nil {
		a.log.Debug("report failed", "namespace", ns, "err", err)
		// A report lost (e.g. on a pooled connection to a server that was
		// restarted) is sent again after the next answered watch.
		a.mu.Lock()
		a.reported = false
		a.mu.Unlock()
	}
}

// reportInitial tells the server, once, what this host holds on start.
func (a *Agent) reportInitial(ctx context.Context) {
	a.mu.Lock()
	if a.reported {
		a.mu.Unlock()
		return
	}
	a.reported = true
	held := make(map[string]int64, len(a.inForce))
	for k, v := range a.inForce {
		held[k] = v
	}
	a.mu.Unlock()
	for ns, v := range held {
		if v > 0 {
			a.report(ctx, ns, Result{Version: v, InForce: v})
		}
	}
}

func (a *Agent) heartbeat(ctx context.Context) {
	if a.cfg.HeartbeatInterval <= 0 {
		return
	}
	for {
		err := a.remote.Register(ctx, api.Host{Host: a.cfg.Host, Addr: a.cfg.Addr, Apps: a.cfg.Apps, Labels: a.cfg.Labels})
		if err != nil && ctx.Err() == nil {
			a.log.Debug("heartbeat failed", "err", err)
		}
		if len(a.appliers) == 0 && ctx.Err() == nil {
			if err != nil {
				a.checkFailed(err)
			} else {
				a.checkOK()
			}
		}
		// A little jitter keeps a fleet's heartbeats from lining up.
		sleep(ctx, a.cfg.HeartbeatInterval-time.Duration(rand.Int64N(int64(a.cfg.HeartbeatInterval)/10+1)))
		if ctx.Err() != nil {
			return
		}
	}
}

// NamespaceStatus is one namespace in the agent's status.
type NamespaceStatus struct {
	Namespace  string          `json:"namespace"`
	Dir        string          `json:"dir"`
	Version    int64           `json:"version"`
	Files      []manifest.File `json:"files"`
	LastResult string          `json:"last_result,omitempty"`
}

// Status is the agent's view for GET /v1/status.
type Status struct {
	Host             string            `json:"host"`
	Server           string            `json:"server"`
	LastCheck        time.Time         `json:"last_check"`
	StalenessSeconds float64           `json:"staleness_seconds"`
	Stale            bool              `json:"stale"`
	LastError        string            `json:"last_error,omitempty"`
	Namespaces       []NamespaceStatus `json:"namespaces"`
}

// Status reports what the agent holds and how fresh it is.
func (a *Agent) Status() Status {
	st := Status{Host: a.cfg.Host, Server: a.remote.Server(), StalenessSeconds: a.staleness().Seconds(), Stale: a.stale()}
	a.mu.Lock()
	st.LastCheck = a.lastCheck
	if a.lastErr != nil {
		st.LastError = a.lastErr.Error()
	}
	results := make(map[string]Result, len(a.results))
	for k, v := range a.results {
		results[k] = v
	}
	a.mu.Unlock()
	for _, t := range a.cfg.Targets {
		ap := a.appliers[t.Namespace]
		ns := NamespaceStatus{Namespace: t.Namespace, Dir: ap.t.Dir}
		if m, err := ap.current(); err == nil {
			ns.Version, ns.Files = m.Version, m.Files
		}
		if r, ok := results[t.Namespace]; ok {
			ns.LastResult = "ok"
			if r.Err != nil {
				ns.LastResult = r.Err.Error()
			}
		}
		st.Namespaces = append(st.Namespaces, ns)
	}
	return st
}

// waitChange returns when a namespace in held switches away from the held
// version, or at the timeout (nil).
func (a *Agent) waitChange(ctx context.Context, held map[string]int64, timeout time.Duration) []api.Change {
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	for {
		a.mu.Lock()
		var out []api.Change
		for ns, v := range held {
			if cur, ok := a.inForce[ns]; ok && cur != v {
				out = append(out, api.Change{Namespace: ns, Version: cur})
			}
		}
		ch := a.changed
		a.mu.Unlock()
		if len(out) > 0 {
			return out
		}
		select {
		case <-ch:
		case <-timer.C:
			return nil
		case <-ctx.Done():
			return nil
		}
	}
}

// parseHeld parses ?ns=NAME:VERSION values.
func parseHeld(items []string) (map[string]int64, error) {
	held := map[string]int64{}
	for _, item := range items {
		name, v := item, int64(0)
		if i := lastColon(item); i >= 0 {
			n, err := strconv.ParseInt(item[i+1:], 10, 64)
			if err != nil {
				return nil, fmt.Errorf("ns %q: want NAME:VERSION", item)
			}
			name, v = item[:i], n
		}
		if err := api.ValidateNamespace(name); err != nil {
			return nil, err
		}
		held[name] = v
	}
	return held, nil
}

func lastColon(s string) int {
	for i := len(s) - 1; i >= 0; i-- {
		if s[i] == ':' {
			return i
		}
	}
	return -1
}
