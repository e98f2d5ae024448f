package supervise

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/user"
	"slices"
	"strconv"
	"sync"
	"syscall"
	"time"

	"github.com/VictoriaMetrics/metrics"

	"github.com/opskit/opskit/deploy/host"
)

type cmdKind int

const (
	cmdStart cmdKind = iota
	cmdStop
	cmdAdopt
	cmdReplace
)

type command struct {
	kind cmdKind
	rec  record
	cfg  Config
	done chan error
}

// oldProc is the process a replacement runs beside until it is RUNNING.
type oldProc struct {
	pid, pgid int
	ticks     uint64
	gen       int
	started   time.Time
	adopted   bool
	cfg       Config
}

type exitEvent struct {
	gen  int
	code int
}

// program is one supervised program. Its state changes only in loop, one
// event at a time; mu guards the fields status and record read.
type program struct {
	s     *Supervisor
	cmds  chan command
	exits chan exitEvent
	quit  chan struct{}
	// ended is closed when loop has returned.
	ended chan struct{}
	once  sync.Once
	// name never changes (cfg, which holds it too, is replaced under mu).
	name string

	mu         sync.Mutex
	cfg        Config
	state      string
	since      time.Time
	pid        int
	pgid       int
	startTicks uint64
	started    time.Time
	adopted    bool
	retries    int
	exitCode   *int
	message    string
	starts     int
	gen        int
	stopProcs  []procStat
	timer      *time.Timer
	startWait  []chan error
	stopWait   []chan error
	startAfter bool // start again once stopped (a restart)
	// replacing is the old process while a new one starts beside it.
	replacing *oldProc

	startsTotal *metrics.Counter
	exitsTotal  *metrics.Counter
}

func newProgram(s *Supervisor, c Config) *program {
	return &program{s: s, cfg: c, name: c.Name, state: Stopped, since: time.Now(),
		cmds: make(chan command), exits: make(chan exitEvent, 4), quit: make(chan struct{}), ended: make(chan struct{})}
}

func (p *program) registerMetrics(set *metrics.Set) {
	name := p.cfg.Name
	for _, st := range States {
		set.GetOrCreateGauge(fmt.Sprintf(`opskit_deploy_program_state{program=%q,state=%q}`, name, st), func() float64 {
			if q, err := p.s.get(name); err == nil && q.status().State == st {
				return 1
			}
			return 0
		})
	}
	set.GetOrCreateGauge(fmt.Sprintf(`opskit_deploy_program_crashloop{program=%q}`, name), func() float64 {
		if q, err := p.s.get(name); err == nil {
			if st := q.status().State; st == Backoff || st == Fatal {
				return 1
			}
		}
		return 0
	})
	usage := func(f func(host.Usage) float64) func() float64 {
		return func() float64 {
			q, err := p.s.get(name)
			if err != nil {
				return 0
			}
			pid := q.status().PID
			if pid == 0 {
				return 0
			}
			u, _ := host.ProcessUsage(pid)
			return f(u)
		}
	}
	set.GetOrCreateGauge(fmt.Sprintf(`opskit_deploy_program_rss_bytes{program=%q}`, name), usage(func(u host.Usage) float64 { return float64(u.RSSBytes) }))
	set.GetOrCreateGauge(fmt.Sprintf(`opskit_deploy_program_cpu_seconds{program=%q}`, name), usage(func(u host.Usage) float64 { return u.CPUSeconds }))
	p.startsTotal = set.GetOrCreateCounter(fmt.Sprintf(`opskit_deploy_program_starts_total{program=%q}`, name))
	p.exitsTotal = set.GetOrCreateCounter(fmt.Sprintf(`opskit_deploy_program_exits_total{program=%q}`, name))
}

func (p *program) send(c command) bool {
	select {
	case p.cmds <- c:
		return true
	case <-p.quit:
		return false
	}
}

func (p *program) call(ctx context.Context, kind cmdKind) error {
	done := make(chan error, 1)
	if !p.send(command{kind: kind, done: done}) {
		return fmt.Errorf("program %s was removed", p.name)
	}
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (p *program) start(ctx context.Context) error { return p.call(ctx, cmdStart) }
func (p *program) stop(ctx context.Context) error  { return p.call(ctx, cmdStop) }

func (p *program) restart(ctx context.Context) error {
	if err := p.stop(ctx); err != nil {
		return err
	}
	return p.start(ctx)
}

func (p *program) close() { p.once.Do(func() { close(p.quit) }) }

// setConfig replaces the config; it reports whether a running process
// runs an outdated command and must be restarted.
func (p *program) setConfig(c Config) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	changed := p.cfg.fingerprint() != c.fingerprint()
	p.cfg = c
	return changed && (p.state == Running || p.state == Starting || p.state == Backoff)
}

func (p *program) status() Status {
	p.mu.Lock()
	defer p.mu.Unlock()
	return Status{Name: p.cfg.Name, State: p.state, PID: p.pid, Since: p.since, Retries: p.retries,
		ExitCode: p.exitCode, Adopted: p.adopted, Message: p.message, Starts: p.starts}
}

func (p *program) record() (record, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.pid == 0 {
		return record{}, false
	}
	return record{PID: p.pid, StartTicks: p.startTicks, Started: p.started, Fingerprint: p.cfg.fingerprint()}, true
}

func (p *program) loop() {
	defer close(p.ended)
	for {
		p.mu.Lock()
		var timerC <-chan time.Time
		if p.timer != nil {
			timerC = p.timer.C
		}
		p.mu.Unlock()
		select {
		case <-p.quit:
			p.mu.Lock()
			p.setTimer(0)
			p.mu.Unlock()
			return
		case c := <-p.cmds:
			p.mu.Lock()
			p.handle(c)
			p.mu.Unlock()
		case e := <-p.exits:
			p.mu.Lock()
			p.onExit(e)
			p.mu.Unlock()
		case <-timerC:
			p.mu.Lock()
			p.timer = nil
			p.onTimer()
			p.mu.Unlock()
		}
		p.s.save()
	}
}

// setTimer replaces the pending timer; 0 clears it.
func (p *program) setTimer(d time.Duration) {
	if p.timer != nil {
		p.timer.Stop()
		p.timer = nil
	}
	if d > 0 {
		p.timer = time.NewTimer(d)
	}
}

func (p *program) setState(st, msg string) {
	if st != p.state {
		p.s.log.Info("program state", "program", p.cfg.Name, "from", p.state, "to", st, "pid", p.pid, "message", msg)
	}
	p.state, p.since, p.message = st, time.Now(), msg
}

// answer replies to a caller; commands sent without one (autostart) have none.
func answer(done chan error, err error) {
	if done != nil {
		done <- err
	}
}

func addWaiter(waiters *[]chan error, done chan error) {
	if done != nil {
		*waiters = append(*waiters, done)
	}
}

func reply(waiters *[]chan error, err error) {
	for _, w := range *waiters {
		w <- err
	}
	*waiters = nil
}

func (p *program) handle(c command) {
	switch c.kind {
	case cmdAdopt:
		p.pid, p.pgid, p.startTicks, p.started, p.adopted = c.rec.PID, c.rec.PID, c.rec.StartTicks, c.rec.Started, true
		if st, err := readProcStat(c.rec.PID); err == nil {
			p.pgid = st.PGID
		}
		p.gen++
		p.setState(Running, "re-adopted after an agent restart")
	case cmdReplace:
		if p.state != Running || p.pid == 0 || p.replacing != nil {
			answer(c.done, errNotRunning)
			return
		}
		p.replacing = &oldProc{pid: p.pid, pgid: p.pgid, ticks: p.startTicks, gen: p.gen, started: p.started, adopted: p.adopted, cfg: p.cfg}
		p.cfg = c.cfg
		p.retries = 0
		addWaiter(&p.startWait, c.done)
		p.spawn()
	case cmdStart:
		switch p.state {
		case Running:
			answer(c.done, nil)
		case Starting, Backoff:
			// A start asked for during BACKOFF waits for the retries
			// under way rather than cutting the backoff short.
			addWaiter(&p.startWait, c.done)
		case Stopping:
			p.startAfter = true
			addWaiter(&p.startWait, c.done)
		default:
			p.retries = 0
			p.setTimer(0)
			addWaiter(&p.startWait, c.done)
			p.spawn()
		}
	case cmdStop:
		switch p.state {
		case Running, Starting:
			p.startAfter = false
			addWaiter(&p.stopWait, c.done)
			p.beginStop()
		case Stopping:
			p.startAfter = false
			addWaiter(&p.stopWait, c.done)
		case Backoff, Fatal:
			p.setTimer(0)
			p.setState(Stopped, "stopped by request")
			reply(&p.startWait, errors.New("stopped by request"))
			answer(c.done, nil)
		default:
			answer(c.done, nil)
		}
	}
}

// env is the program's clean environment: the agent's own is not passed on.
func (p *program) env() []string {
	env := []string{"PATH=/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin", "LANG=C.UTF-8", "DEPLOY_PROGRAM=" + p.cfg.Name}
	keys := make([]string, 0, len(p.cfg.Env))
	for k := range p.cfg.Env {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		env = append(env, k+"="+p.cfg.Env[k])
	}
	return env
}

func (p *program) openLogs() (out, errf *os.File, err error) {
	outPath, _ := p.logPath("out")
	errPath, _ := p.logPath("err")
	out, err = os.OpenFile(outPath, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o640)
	if err != nil {
		return nil, nil, err
	}
	errf, err = os.OpenFile(errPath, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o640)
	if err != nil {
		out.Close()
		return nil, nil, err
	}
	return out, errf, nil
}

func (p *program) logPath(stream string) (string, error) {
	return p.s.opts.LogDir + "/" + p.name + "." + stream + ".log", nil
}

// spawn starts the process. Its output goes straight to the log files (not
// through a pipe), so it keeps running and logging while the agent restarts.
func (p *program) spawn() {
	c := p.cfg
	p.adopted = false
	p.exitCode = nil
	path, err := lookCommand(c.Command[0], c.Dir)
	var out, errf *os.File
	if err == nil {
		out, errf, err = p.openLogs()
	}
	var cmd *exec.Cmd
	var cred *syscall.Credential
	if err == nil && c.User != "" {
		cred, err = lookupUser(c.User)
	}
	if err == nil {
		cmd = &exec.Cmd{Path: path, Args: c.Command, Dir: c.Dir, Env: p.env(), Stdout: out, Stderr: errf,
			SysProcAttr: &syscall.SysProcAttr{Setpgid: true, Credential: cred}}
		err = cmd.Start()
	}
	if out != nil {
		out.Close()
		errf.Close()
	}
	p.starts++
	p.startsTotal.Inc()
	if err != nil {
		p.pid = 0
		p.failedStart(fmt.Sprintf("cannot start: %v", err))
		return
	}
	p.gen++
	p.pid, p.pgid, p.started = cmd.Process.Pid, cmd.Process.Pid, time.Now()
	if st, err := readProcStat(p.pid); err == nil {
		p.startTicks = st.StartTicks
	}
	p.setState(Starting, "")
	p.setTimer(c.StartSecs)
	gen := p.gen
	go func() {
		_ = cmd.Wait()
		code := -1
		if ps := cmd.ProcessState; ps != nil {
			if ws, ok := ps.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
				code = 128 + int(ws.Signal())
			} else {
				code = ps.ExitCode()
			}
		}
		select {
		case p.exits <- exitEvent{gen: gen, code: code}:
		case <-p.quit:
		}
	}()
}

// errNotRunning makes Replace fall back to a restart.
var errNotRunning = errors.New("not running")

// failedStart counts a start that did not last startsecs.
func (p *program) failedStart(msg string) {
	if o := p.replacing; o != nil {
		// The replacement failed: the old process, still running, stays.
		p.replacing = nil
		p.cfg = o.cfg
		if alive(o.pid, o.ticks) {
			p.pid, p.pgid, p.startTicks, p.gen, p.started, p.adopted = o.pid, o.pgid, o.ticks, o.gen, o.started, o.adopted
			p.retries = 0
			p.setTimer(0)
			p.setState(Running, "replacement failed, previous process kept: "+msg)
			reply(&p.startWait, fmt.Errorf("program %s: replacement failed (previous process kept): %s", p.cfg.Name, msg))
			return
		}
	}
	p.retries++
	if p.retries > p.cfg.StartRetries {
		p.s.fatals.Inc()
		if p.cfg.FatalCooldown > 0 {
			msg += "; retrying after " + p.cfg.FatalCooldown.String()
			p.setTimer(p.cfg.FatalCooldown)
		}
		p.setState(Fatal, msg)
		reply(&p.startWait, fmt.Errorf("program %s: FATAL: %s", p.cfg.Name, msg))
		return
	}
	delay := BackoffDelay(p.cfg, p.retries, jitterRand)
	p.setState(Backoff, fmt.Sprintf("%s; retry %d/%d in %s", msg, p.retries, p.cfg.StartRetries, delay.Round(time.Millisecond)))
	p.setTimer(delay)
}

func (p *program) beginStop() {
	if o := p.replacing; o != nil {
		p.replacing = nil
		go stopDetached(o)
	}
	p.stopProcs = descendants(p.pid)
	p.setState(Stopping, "")
	_ = syscall.Kill(-p.pgid, p.cfg.StopSignal)
	_ = syscall.Kill(p.pid, p.cfg.StopSignal)
	p.setTimer(p.cfg.StopWait)
}

func (p *program) onExit(e exitEvent) {
	if e.gen != p.gen || p.pid == 0 {
		return
	}
	p.exitsTotal.Inc()
	code := e.code
	p.exitCode = &code
	// Nothing of the program outlives it: what is left of its process
	// group, and of the descendants seen at a stop, is killed.
	killTree(p.pgid, p.stopProcs, syscall.SIGKILL)
	p.stopProcs = nil
	p.pid, p.adopted = 0, false
	p.setTimer(0)
	switch p.state {
	case Stopping:
		p.setState(Stopped, "exit "+strconv.Itoa(code))
		reply(&p.stopWait, nil)
		if p.startAfter {
			p.startAfter = false
			p.retries = 0
			p.spawn()
		}
	case Starting:
		p.failedStart(fmt.Sprintf("exited %d before startsecs (%s)", code, p.cfg.StartSecs))
	case Running:
		expected := slices.Contains(p.cfg.ExitCodes, code)
		p.setState(Exited, fmt.Sprintf("exit %d (expected: %v)", code, expected))
		if p.cfg.Autorestart == RestartAlways || (p.cfg.Autorestart == RestartOnFailure && !expected) {
			p.retries = 0
			p.spawn()
		}
	}
}

func (p *program) onTimer() {
	switch p.state {
	case Starting:
		p.retries = 0
		msg := ""
		if o := p.replacing; o != nil {
			p.replacing = nil
			msg = fmt.Sprintf("replaced pid %d", o.pid)
			go stopDetached(o)
		}
		p.setState(Running, msg)
		reply(&p.startWait, nil)
	case Backoff:
		p.spawn()
	case Fatal:
		p.retries = 0
		p.spawn()
	case Stopping:
		procs := append(p.stopProcs, descendants(p.pid)...)
		p.s.log.Warn("program ignored its stop signal; killing its process group", "program", p.cfg.Name, "pid", p.pid, "stopwait", p.cfg.StopWait)
		killTree(p.pgid, procs, syscall.SIGKILL)
		_ = syscall.Kill(p.pid, syscall.SIGKILL)
		p.message = "killed after stopwait " + p.cfg.StopWait.String()
	}
}

// checkAdopted notices the death of an adopted process, which is not the
// agent's child and so sends no exit status.
func (p *program) checkAdopted() {
	p.mu.Lock()
	pid, ticks, gen, adopted := p.pid, p.startTicks, p.gen, p.adopted
	p.mu.Unlock()
	if !adopted || pid == 0 || alive(pid, ticks) {
		return
	}
	select {
	case p.exits <- exitEvent{gen: gen, code: -1}:
	case <-p.quit:
	}
}

// rotateLogs copies a log over its size to NAME.STREAM.log.1 (shifting
// older ones) and truncates it: the program holds the file open in append
// mode, so it goes on writing at the new start.
func (p *program) rotateLogs(maxBytes int64, backups int) {
	for _, stream := range []string{"out", "err"} {
		path, _ := p.logPath(stream)
		st, err := os.Stat(path)
		if err != nil || st.Size() <= maxBytes {
			continue
		}
		for i := backups - 1; i >= 1; i-- {
			_ = os.Rename(path+"."+strconv.Itoa(i), path+"."+strconv.Itoa(i+1))
		}
		if err := copyFile(path, path+".1"); err != nil {
			p.s.log.Warn("log rotation failed", "file", path, "err", err)
			continue
		}
		_ = os.Truncate(path, 0)
	}
}

func copyFile(src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o640)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}

// stopDetached stops a replaced process as a stop would: its stop signal to
// the group, then after its stop wait SIGKILL to the group and descendants.
// Its exit status, if it is a child, is reaped by its own Wait and ignored.
func stopDetached(o *oldProc) {
	procs := descendants(o.pid)
	_ = syscall.Kill(-o.pgid, o.cfg.StopSignal)
	_ = syscall.Kill(o.pid, o.cfg.StopSignal)
	deadline := time.Now().Add(o.cfg.StopWait)
	for alive(o.pid, o.ticks) && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if alive(o.pid, o.ticks) {
		_ = syscall.Kill(o.pid, syscall.SIGKILL)
	}
	killTree(o.pgid, append(procs, descendants(o.pid)...), syscall.SIGKILL)
}

// lookupUser resolves a user name or uid to the credential to run as.
func lookupUser(name string) (*syscall.Credential, error) {
	u, err := user.Lookup(name)
	if err != nil {
		if u, err = user.LookupId(name); err != nil {
			return nil, fmt.Errorf("user %q: %w", name, err)
		}
	}
	uid, err1 := strconv.ParseUint(u.Uid, 10, 32)
	gid, err2 := strconv.ParseUint(u.Gid, 10, 32)
	if err1 != nil || err2 != nil {
		return nil, fmt.Errorf("user %q: non-numeric uid or gid", name)
	}
	return &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid), Groups: []uint32{}}, nil
}
