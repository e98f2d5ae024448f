// Package plugin runs collector's plugins: executables in a directory, each
// on its own interval, whose stdout is open-falcon JSON (an array, or one
// item per line) or Graphite plaintext lines.
//
// A plugin's interval comes from its file name, "60_mysql.sh" runs every 60
// seconds, or from a header line within its first 1 KiB,
// "# opskit-interval: 30s"; without either it runs at the collector's
// interval. "# opskit-timeout: 5s" sets its timeout (at most its interval).
// A plugin that outlives its timeout is killed with its whole process
// group; one that exits non-zero has its output discarded; items that do
// not parse are rejected one by one. Each outcome is logged and counted,
// and the other plugins go on.
package plugin

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/VictoriaMetrics/metrics"

	"github.com/opskit/opskit/collector/falconfmt"
	"github.com/opskit/opskit/collector/httppush"
	"github.com/opskit/opskit/collector/sink"
	"github.com/opskit/opskit/internal/metric"
	"github.com/opskit/opskit/transfer/intake"
	"github.com/opskit/opskit/transfer/intake/graphite"
)

// Proto is the "proto" label of plugin points in the intake counters.
const Proto = "plugin"

// MaxOutput bounds what is read of one run's stdout.
const MaxOutput = 4 << 20

// Config configures a Runner.
type Config struct {
	// Dir holds the plugins.
	Dir string
	// Interval is the default interval of a plugin.
	Interval time.Duration
	// Timeout is the default timeout of a run (at most the interval).
	Timeout time.Duration
	// Rescan is how often Dir is read again for added, changed or removed
	// plugins (default 1 min).
	Rescan time.Duration
	// Defaults fill the endpoint and step of JSON items that lack them.
	Defaults falconfmt.Defaults
	Limits   intake.Limits
}

// Spec is one plugin as found in the directory.
type Spec struct {
	Path     string
	Name     string
	Interval time.Duration
	Timeout  time.Duration
}

var namePrefix = regexp.MustCompile(`^([0-9]+)_`)

// Scan lists the executable regular files of cfg.Dir with their interval
// and timeout. Hidden files and files ending in "~" are skipped.
func Scan(cfg Config) ([]Spec, error) {
	// Plugins run in their directory, so their path must not be relative.
	dir, err := filepath.Abs(cfg.Dir)
	if err != nil {
		return nil, fmt.Errorf("plugin dir: %w", err)
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("plugin dir: %w", err)
	}
	var out []Spec
	for _, e := range entries {
		name := e.Name()
		if strings.HasPrefix(name, ".") || strings.HasSuffix(name, "~") {
			continue
		}
		path := filepath.Join(dir, name)
		fi, err := os.Stat(path)
		if err != nil || !fi.Mode().IsRegular() || fi.Mode().Perm()&0o111 == 0 {
			continue
		}
		sp := Spec{Path: path, Name: name, Interval: cfg.Interval, Timeout: cfg.Timeout}
		if m := namePrefix.FindStringSubmatch(name); m != nil {
			if secs, err := strconv.Atoi(m[1]); err == nil && secs > 0 {
				sp.Interval = time.Duration(secs) * time.Second
			}
		}
		if head, err := readHead(path, 1024); err == nil {
			ParseHeader(head, &sp)
		}
		if sp.Timeout <= 0 || sp.Timeout > sp.Interval {
			sp.Timeout = sp.Interval
		}
		out = append(out, sp)
	}
	return out, nil
}

func readHead(path string, n int) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	buf := make([]byte, n)
	k, err := io.ReadFull(f, buf)
	if errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF) {
		err = nil
	}
	return buf[:k], err
}

// ParseHeader applies "opskit-interval:" and "opskit-timeout:" lines of a
// plugin's head to sp. Values are Go durations or plain seconds.
func ParseHeader(head []byte, sp *Spec) {
	for _, line := range bytes.Split(head, []byte{'\n'}) {
		s := strings.TrimLeft(string(line), "#/;- \t")
		key, val, ok := strings.Cut(s, ":")
		if !ok {
			continue
		}
		d, ok := parseDuration(strings.TrimSpace(val))
		if !ok {
			continue
		}
		switch strings.TrimSpace(key) {
		case "opskit-interval":
			sp.Interval = d
		case "opskit-timeout":
			sp.Timeout = d
		}
	}
}

func parseDuration(s string) (time.Duration, bool) {
	if secs, err := strconv.Atoi(s); err == nil && secs > 0 {
		return time.Duration(secs) * time.Second, true
	}
	d, err := time.ParseDuration(s)
	return d, err == nil && d >= 10*time.Millisecond
}

// Result of one run.
const (
	ResultOK      = "ok"
	ResultFailed  = "failed"  // exited non-zero or could not start
	ResultTimeout = "timeout" // killed after its timeout
	ResultGarbage = "garbage" // printed nothing usable
	ResultSkipped = "skipped" // still running when its next turn came
)

// Runner runs the plugins of a directory.
type Runner struct {
	cfg      Config
	sink     sink.Sink
	counters *sink.Counters
	set      *metrics.Set
	log      *slog.Logger
	rescan   chan struct{}
}

// New returns a runner writing points to s.
func New(cfg Config, s sink.Sink, counters *sink.Counters, set *metrics.Set, log *slog.Logger) *Runner {
	if cfg.Rescan <= 0 {
		cfg.Rescan = time.Minute
	}
	if cfg.Interval <= 0 {
		cfg.Interval = time.Minute
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = 10 * time.Second
	}
	cfg.Limits = cfg.Limits.WithDefaults()
	return &Runner{cfg: cfg, sink: s, counters: counters, set: set, log: log, rescan: make(chan struct{}, 1)}
}

// Rescan makes Run read the directory again now (on a reload) instead of
// at its next Rescan tick.
func (r *Runner) Rescan() {
	select {
	case r.rescan <- struct{}{}:
	default:
	}
}

func (r *Runner) count(name, result string) {
	r.set.GetOrCreateCounter(`opskit_collector_plugin_runs_total{plugin="` + strings.ReplaceAll(name, `"`, "_") + `",result="` + result + `"}`).Inc()
}

// Run schedules the plugins until ctx ends, reading the directory again
// every Rescan.
func (r *Runner) Run(ctx context.Context) error {
	type running struct {
		spec   Spec
		cancel context.CancelFunc
		done   chan struct{}
	}
	active := map[string]*running{}
	stopOne := func(p *running) {
		p.cancel()
		<-p.done
	}
	defer func() {
		for _, p := range active {
			stopOne(p)
		}
	}()
	for {
		specs, err := Scan(r.cfg)
		if err != nil {
			r.log.Warn("cannot read the plugin directory", "err", err)
		}
		seen := map[string]bool{}
		for _, sp := range specs {
			seen[sp.Path] = true
			if p, ok := active[sp.Path]; ok && p.spec == sp {
				continue
			} else if ok {
				stopOne(p)
			}
			pctx, cancel := context.WithCancel(ctx)
			p := &running{spec: sp, cancel: cancel, done: make(chan struct{})}
			active[sp.Path] = p
			r.log.Info("plugin scheduled", "plugin", sp.Name, "interval", sp.Interval, "timeout", sp.Timeout)
			go func() {
				defer close(p.done)
				r.schedule(pctx, sp)
			}()
		}
		for path, p := range active {
			if !seen[path] && err == nil {
				r.log.Info("plugin removed", "plugin", p.spec.Name)
				stopOne(p)
				delete(active, path)
			}
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(r.cfg.Rescan):
		case <-r.rescan:
		}
	}
}

// schedule runs one plugin at each multiple of its interval. A run that is
// still going when the next turn comes makes that turn skipped.
func (r *Runner) schedule(ctx context.Context, sp Spec) {
	var wg sync.WaitGroup
	defer wg.Wait()
	busy := make(chan struct{}, 1)
	for {
		next := time.Now().Truncate(sp.Interval).Add(sp.Interval)
		select {
		case <-ctx.Done():
			return
		case <-time.After(time.Until(next)):
		}
		select {
		case busy <- struct{}{}:
		default:
			r.count(sp.Name, ResultSkipped)
			r.log.Warn("plugin still running at its next turn; turn skipped", "plugin", sp.Name)
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-busy }()
			r.RunOnce(ctx, sp)
		}()
	}
}

// RunOnce runs a plugin once, writes its points and returns the result.
func (r *Runner) RunOnce(ctx context.Context, sp Spec) string {
	out, err := execute(ctx, sp)
	var result string
	switch {
	case errors.Is(err, errTimeout):
		result = ResultTimeout
		r.log.Warn("plugin killed after its timeout", "plugin", sp.Name, "timeout", sp.Timeout)
	case err != nil:
		result = ResultFailed
		r.log.Warn("plugin failed; its output is discarded", "plugin", sp.Name, "err", err)
	default:
		pts, rejected := Parse(out, time.Now().Unix(), r.cfg.Defaults, r.cfg.Limits)
		for _, rj := range rejected {
			r.counters.Rejected(Proto, rj.Reason, rj.Detail, fmt.Sprintf("%s item %d", sp.Name, rj.Index))
		}
		if len(pts) == 0 && len(rejected) > 0 {
			result = ResultGarbage
			r.log.Warn("plugin printed nothing usable", "plugin", sp.Name, "rejected", len(rejected), "first", rejected[0].Reason+": "+rejected[0].Detail)
			break
		}
		result = ResultOK
		if len(rejected) > 0 {
			r.log.Warn("plugin printed items that were rejected", "plugin", sp.Name, "rejected", len(rejected), "first", rejected[0].Reason+": "+rejected[0].Detail)
		}
		if len(pts) > 0 {
			if err := r.sink.Write(ctx, pts); err != nil {
				r.counters.Dropped(Proto, len(pts), err)
			} else {
				r.counters.Received(Proto, len(pts))
			}
		}
	}
	r.count(sp.Name, result)
	return result
}

var errTimeout = errors.New("timed out")

// execute runs the plugin in its own process group and returns its stdout.
func execute(ctx context.Context, sp Spec) ([]byte, error) {
	cmd := exec.Command(sp.Path)
	cmd.Dir = filepath.Dir(sp.Path)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	var stdout limitedBuffer
	stdout.max = MaxOutput
	var stderr limitedBuffer
	stderr.max = 2048
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	waited := make(chan error, 1)
	go func() { waited <- cmd.Wait() }()
	timer := time.NewTimer(sp.Timeout)
	defer timer.Stop()
	kill := func() {
		// The whole group: a shell plugin's children die with it.
		syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
	}
	select {
	case err := <-waited:
		// Children left behind holding stdout would keep Wait from
		// returning; they are gone by now, but make sure of the group.
		kill()
		if err != nil {
			return nil, fmt.Errorf("%w (stderr: %s)", err, strings.TrimSpace(stderr.String()))
		}
		if stdout.over {
			return nil, fmt.Errorf("stdout over %d bytes", MaxOutput)
		}
		return stdout.Bytes(), nil
	case <-timer.C:
		kill()
		<-waited
		return nil, errTimeout
	case <-ctx.Done():
		kill()
		<-waited
		return nil, ctx.Err()
	}
}

// limitedBuffer keeps the first max bytes written to it.
type limitedBuffer struct {
	bytes.Buffer
	max  int
	over bool
}

func (b *limitedBuffer) Write(p []byte) (int, error) {
	if room := b.max - b.Len(); room < len(p) {
		b.over = true
		if room > 0 {
			b.Buffer.Write(p[:room])
		}
		return len(p), nil
	}
	return b.Buffer.Write(p)
}

// Parse reads a plugin's output: a JSON array of open-falcon items, JSON
// items one per line, or Graphite lines (told apart by the first
// non-blank byte of each line). Rejections are indexed by line (1-based)
// for line formats and by array position for an array.
func Parse(out []byte, now int64, d falconfmt.Defaults, lim intake.Limits) ([]metric.Point, []intake.Rejection) {
	trimmed := bytes.TrimSpace(out)
	if len(trimmed) > 0 && trimmed[0] == '[' {
		res, err := httppush.Decode(bytes.NewReader(trimmed), now, d, lim)
		if err != nil {
			return nil, []intake.Rejection{{Index: 0, Reason: intake.ReasonBadJSON, Detail: err.Error()}}
		}
		return res.Points, res.Rejected
	}
	var (
		pts      []metric.Point
		rejected []intake.Rejection
		parser   *graphite.Parser
		item     = []byte{'['}
	)
	for i, line := range bytes.Split(out, []byte{'\n'}) {
		line = bytes.TrimSpace(line)
		if len(line) == 0 {
			continue
		}
		if line[0] == '{' {
			res, err := httppush.Decode(bytes.NewReader(append(append(item[:1], line...), ']')), now, d, lim)
			switch {
			case err != nil:
				rejected = append(rejected, intake.Rejection{Index: i + 1, Reason: intake.ReasonBadJSON, Detail: err.Error()})
			case len(res.Rejected) > 0:
				rj := res.Rejected[0]
				rejected = append(rejected, intake.Rejection{Index: i + 1, Reason: rj.Reason, Detail: rj.Detail})
			default:
				pts = append(pts, res.Points...)
			}
			continue
		}
		if parser == nil {
			parser = graphite.NewParser(lim, 0)
		}
		p, rej := parser.ParseLine(line, now)
		if rej != nil {
			rejected = append(rejected, intake.Rejection{Index: i + 1, Reason: rej.Reason, Detail: rej.Detail})
			continue
		}
		pts = append(pts, p)
	}
	return pts, rejected
}
