// Package rollout drives deploys: it starts the next queued deploy of each
// app and environment, sends each batch's tasks to the agents, judges the
// batch on the agents' results, its failure budget and an optional PromQL
// gate, pauses between batches, and rolls changed hosts back on failure.
//
// Every decision is a transaction on the store carrying the lease's fencing
// token, and every decision is a function of the stored deploy and the
// clock, so a restarted deployer continues where the last one stopped:
// finished host steps are never sent again, and an unfinished one is sent
// again under the same task id, which the agent replays.
package rollout

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/opskit/opskit/deploy/release"
	"github.com/opskit/opskit/deployer/hosts"
	"github.com/opskit/opskit/deployer/plan"
	"github.com/opskit/opskit/deployer/store"
)

// Dispatcher delivers tasks to hosts' agents.
type Dispatcher interface {
	// Send queues a task for a host; sending the same task again is
	// harmless.
	Send(ctx context.Context, host string, t release.Task) error
	// Withdraw stops offering a task (its result is in or its deploy
	// stopped).
	Withdraw(host, taskID string)
}

// Gate evaluates a PromQL gate once.
type Gate interface {
	// Holds says whether query is true (a non-empty vector, a scalar not
	// 0) now; detail says what was seen.
	Holds(ctx context.Context, query string) (ok bool, detail string, err error)
}

// Options configure an Engine.
type Options struct {
	Store    *store.Store
	Hosts    hosts.Source
	Apps     func() *plan.Apps
	Dispatch Dispatcher
	// Gate checks PromQL gates; nil fails any deploy whose app has one.
	Gate Gate
	// AgentHTTP and AgentToken reach an agent's own API (Host.Addr) for a
	// rollback to a release whose package deployer does not know.
	AgentHTTP  *http.Client
	AgentToken string
	// Holder names this instance in the lease.
	Holder   string
	LeaseTTL time.Duration
	// Tick is how often the queue is looked at without a reason to.
	Tick time.Duration
	Now  func() time.Time
	Log  *slog.Logger
}

// ErrNotLeader answers a request this instance cannot serve: another
// deployer instance holds the lease.
var ErrNotLeader = errors.New("this deployer instance does not hold the lease (standby)")

// Engine runs deploys.
type Engine struct {
	o     Options
	token atomic.Uint64
	kick  chan struct{}

	mu      sync.Mutex
	drivers map[string]chan struct{}
	wg      sync.WaitGroup

	// reports wait for commitReports; stopped is closed when Run returns.
	reports chan *pendingReport
	stopped chan struct{}
}

// New returns an engine; Run starts it.
func New(o Options) *Engine {
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	if o.LeaseTTL <= 0 {
		o.LeaseTTL = 15 * time.Second
	}
	if o.Tick <= 0 {
		o.Tick = time.Second
	}
	if o.Apps == nil {
		apps := plan.DefaultApps()
		o.Apps = func() *plan.Apps { return apps }
	}
	if o.AgentHTTP == nil {
		o.AgentHTTP = &http.Client{}
	}
	return &Engine{o: o, kick: make(chan struct{}, 1), drivers: map[string]chan struct{}{},
		reports: make(chan *pendingReport, maxReportBatch), stopped: make(chan struct{})}
}

// Leader says this instance holds the lease now.
func (e *Engine) Leader() bool { return e.token.Load() != 0 }

func (e *Engine) poke() {
	select {
	case e.kick <- struct{}{}:
	default:
	}
}

// Run holds the lease (waiting for it while another instance has it) and
// drives deploys until ctx ends, then gives the lease up.
func (e *Engine) Run(ctx context.Context) error {
	defer close(e.stopped)
	committed := make(chan struct{})
	go func() {
		defer close(committed)
		e.commitReports(ctx)
	}()
	defer func() { <-committed }()
	for ctx.Err() == nil {
		l, err := e.o.Store.Acquire(e.o.Holder, e.o.LeaseTTL, e.o.Now())
		if err != nil {
			e.o.Log.Info("waiting for the deployer lease", "err", err)
			sleep(ctx, e.o.LeaseTTL/3)
			continue
		}
		e.o.Log.Info("deployer lease taken", "holder", e.o.Holder, "token", l.Token)
		lctx, cancel := context.WithCancel(ctx)
		e.token.Store(l.Token)
		go e.renew(lctx, cancel, l.Token)
		e.lead(lctx)
		cancel()
		e.wg.Wait()
		e.token.Store(0)
		if ctx.Err() != nil {
			if err := e.o.Store.ReleaseLease(e.o.Holder, l.Token); err != nil {
				e.o.Log.Warn("giving the lease up failed", "err", err)
			}
			return nil
		}
		e.o.Log.Warn("deployer lease lost; standing by")
	}
	return nil
}

func (e *Engine) renew(ctx context.Context, lost func(), token uint64) {
	t := time.NewTicker(e.o.LeaseTTL / 3)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		err := e.o.Store.Renew(e.o.Holder, token, e.o.LeaseTTL, e.o.Now())
		if errors.Is(err, store.ErrFenced) {
			lost()
			return
		}
		if err != nil {
			e.o.Log.Warn("renewing the lease failed", "err", err)
		}
	}
}

// lead resumes the active deploys and starts queued ones until ctx ends.
func (e *Engine) lead(ctx context.Context) {
	active, err := e.o.Store.List(store.Filter{States: []string{store.Running, store.Paused}})
	if err != nil {
		e.o.Log.Error("listing active deploys failed", "err", err)
	}
	for _, d := range active {
		e.o.Log.Info("resuming deploy", "deploy", d.ID, "app", d.App, "env", d.Env, "state", d.State, "batch", d.Batch)
		e.startDriver(ctx, d.ID)
	}
	t := time.NewTicker(e.o.Tick)
	defer t.Stop()
	for {
		e.schedule(ctx)
		select {
		case <-ctx.Done():
			return
		case <-e.kick:
		case <-t.C:
		}
	}
}

func appEnv(d *store.Deploy) string { return d.App + "\x00" + d.Env }

// schedule starts the first queued deploy of every app and environment
// that has none active.
func (e *Engine) schedule(ctx context.Context) {
	active, err := e.o.Store.List(store.Filter{States: []string{store.Running, store.Paused}})
	if err != nil {
		e.o.Log.Error("listing active deploys failed", "err", err)
		return
	}
	busy := map[string]bool{}
	for _, d := range active {
		busy[appEnv(d)] = true
		e.ensureDriver(ctx, d.ID)
	}
	queue, err := e.o.Store.Queue()
	if err != nil {
		e.o.Log.Error("reading the queue failed", "err", err)
		return
	}
	for _, d := range queue {
		if busy[appEnv(d)] || ctx.Err() != nil {
			continue
		}
		busy[appEnv(d)] = true
		if err := e.start(ctx, d); err != nil {
			e.o.Log.Warn("starting deploy failed", "deploy", d.ID, "err", err)
			continue
		}
		e.startDriver(ctx, d.ID)
	}
}

// start takes a snapshot of the hosts (for a deploy that has none yet) and
// marks the deploy running.
func (e *Engine) start(ctx context.Context, q *store.Deploy) error {
	var snapshot []hosts.Host
	var lookupErr error
	if len(q.Hosts) == 0 {
		snapshot, lookupErr = e.o.Hosts.Hosts(ctx, q.App, q.Env)
		if lookupErr == nil && len(snapshot) == 0 {
			lookupErr = fmt.Errorf("%s/%s: %w", q.App, q.Env, hosts.ErrUnknownApp)
		}
	}
	now := e.o.Now()
	_, err := e.update(q.ID, now, func(d *store.Deploy, tx *store.Tx) error {
		if d.State != store.Queued {
			return fmt.Errorf("%w: deploy %s is %s", store.ErrConflict, d.ID, d.State)
		}
		if lookupErr != nil {
			d.State, d.Error, d.Finished = store.Failed, "hosts: "+lookupErr.Error(), now
			tx.Emit(store.Event{Kind: "state", State: d.State, Detail: d.Error})
			return nil
		}
		if len(d.Hosts) == 0 {
			sizes := plan.Batches(d.Strategy.Batches, len(snapshot))
			d.BatchSizes = sizes
			i := 0
			for b, n := range sizes {
				for range n {
					h := snapshot[i]
					d.Hosts = append(d.Hosts, store.HostStep{Host: h.Name, Addr: h.Addr, Batch: b, Version: d.Version,
						State: store.StepPending, Attempt: 1})
					i++
				}
			}
		}
		d.State = store.Running
		if d.Started.IsZero() {
			d.Started = now
		}
		d.BatchStarted = now
		tx.Emit(store.Event{Kind: "state", State: store.Running, Batch: d.Batch,
			Detail: fmt.Sprintf("%d hosts in batches %v (attempt %d)", len(d.Hosts), d.BatchSizes, d.Attempt)})
		tx.Emit(store.Event{Kind: "batch", Batch: d.Batch, State: "started", Detail: fmt.Sprintf("%d hosts", d.BatchSizes[d.Batch])})
		return nil
	})
	return err
}

func (e *Engine) update(id string, now time.Time, fn func(d *store.Deploy, tx *store.Tx) error) (*store.Deploy, error) {
	token := e.token.Load()
	if token == 0 {
		return nil, ErrNotLeader
	}
	d, err := e.o.Store.Update(token, id, now, fn)
	if errors.Is(err, store.ErrFenced) {
		return nil, fmt.Errorf("%w: %w", ErrNotLeader, err)
	}
	return d, err
}

// ensureDriver starts a deploy's driver unless it runs.
func (e *Engine) ensureDriver(ctx context.Context, id string) {
	e.mu.Lock()
	_, ok := e.drivers[id]
	e.mu.Unlock()
	if !ok {
		e.startDriver(ctx, id)
	}
}

// startDriver starts a deploy's driver, or wakes it if it runs.
func (e *Engine) startDriver(ctx context.Context, id string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if wake, ok := e.drivers[id]; ok {
		select {
		case wake <- struct{}{}:
		default:
		}
		return
	}
	wake := make(chan struct{}, 1)
	e.drivers[id] = wake
	e.wg.Add(1)
	go func() {
		defer e.wg.Done()
		e.drive(ctx, id, wake)
		e.mu.Lock()
		delete(e.drivers, id)
		e.mu.Unlock()
		e.poke() // the app's next deploy may start
	}()
}

// wakeDriver tells a deploy's driver something changed.
func (e *Engine) wakeDriver(id string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if wake, ok := e.drivers[id]; ok {
		select {
		case wake <- struct{}{}:
		default:
		}
	} else {
		e.poke()
	}
}

// outcome is what a transaction decided to do outside it.
type outcome struct {
	sends     []sendTask
	withdraws []sendTask
	directs   []int // host indexes to switch through the agent's API
	wake      time.Time
	gate      bool
}

type sendTask struct {
	host string
	task release.Task
}

func (o *outcome) wakeAt(t time.Time) {
	if o.wake.IsZero() || t.Before(o.wake) {
		o.wake = t
	}
}

// drive runs one deploy until it ends or the lease is lost.
func (e *Engine) drive(ctx context.Context, id string, wake chan struct{}) {
	resent := false
	var nextGate time.Time
	for ctx.Err() == nil {
		var out outcome
		now := e.o.Now()
		d, err := e.update(id, now, func(d *store.Deploy, tx *store.Tx) error {
			if !resent {
				e.inFlight(d, tx, &out)
			}
			e.advance(d, tx, now, &out)
			return nil
		})
		if err != nil {
			if errors.Is(err, ErrNotLeader) || errors.Is(err, store.ErrNotFound) {
				return
			}
			e.o.Log.Error("deploy step failed", "deploy", id, "err", err)
			sleep(ctx, time.Second)
			continue
		}
		resent = true
		for _, s := range out.withdraws {
			e.o.Dispatch.Withdraw(s.host, s.task.ID)
		}
		for _, s := range out.sends {
			if err := e.o.Dispatch.Send(ctx, s.host, s.task); err != nil {
				// The deadline fails the host if the task never gets there.
				e.o.Log.Warn("sending a task failed", "deploy", id, "host", s.host, "task", s.task.ID, "err", err)
			}
		}
		for _, i := range out.directs {
			e.wg.Add(1)
			go func() {
				defer e.wg.Done()
				e.direct(ctx, d, i)
			}()
		}
		if !store.Active(d.State) {
			e.o.Log.Info("deploy ended", "deploy", id, "app", d.App, "env", d.Env, "state", d.State, "error", d.Error)
			return
		}
		if out.gate {
			if !now.Before(nextGate) {
				e.checkGate(ctx, id)
				nextGate = e.o.Now().Add(time.Duration(d.Strategy.Gate.Interval))
				continue
			}
			out.wakeAt(nextGate)
		}
		var timer *time.Timer
		var fired <-chan time.Time
		if !out.wake.IsZero() {
			timer = time.NewTimer(max(out.wake.Sub(e.o.Now()), time.Millisecond))
			fired = timer.C
		}
		select {
		case <-ctx.Done():
		case <-wake:
		case <-fired:
		}
		if timer != nil {
			timer.Stop()
		}
	}
}

// inFlight collects the tasks sent before a restart without a result yet,
// to send them again under the same ids.
func (e *Engine) inFlight(d *store.Deploy, tx *store.Tx, out *outcome) {
	if !store.Active(d.State) {
		return
	}
	for i := range d.Hosts {
		h := &d.Hosts[i]
		if h.State == store.StepDispatched || h.State == store.StepRunning {
			if h.Direct {
				out.directs = append(out.directs, i)
			} else if t, ok := e.task(d, h.TaskID, h.Version, tx); ok {
				out.sends = append(out.sends, sendTask{h.Host, t})
			}
		}
		if rb := h.Rollback; rb != nil && (rb.State == store.StepDispatched || rb.State == store.StepRunning) {
			if rb.Direct {
				out.directs = append(out.directs, i)
			} else if t, ok := e.task(d, rb.TaskID, rb.Version, tx); ok {
				out.sends = append(out.sends, sendTask{h.Host, t})
			}
		}
	}
}

// task builds the agent task installing version: the deploy's own package,
// or the catalog's for another version (read in the caller's transaction:
// a read transaction opened inside a write one may deadlock bbolt).
func (e *Engine) task(d *store.Deploy, id, version string, tx *store.Tx) (release.Task, bool) {
	t := release.Task{ID: id, App: d.App, Version: version, Keep: d.Strategy.Keep}
	if d.Kind == store.KindDeploy && version == d.Version {
		t.Package, t.SHA256, t.Signature = d.Artifact, d.SHA256, d.Signature
		return t, true
	}
	rel, ok := tx.Release(d.App, version)
	if !ok {
		return t, false
	}
	t.Package, t.SHA256, t.Signature = rel.Artifact, rel.SHA256, rel.Signature
	return t, true
}

// batchHosts returns the indexes of batch b's hosts.
func batchHosts(d *store.Deploy, b int) []int {
	var out []int
	for i := range d.Hosts {
		if d.Hosts[i].Batch == b {
			out = append(out, i)
		}
	}
	return out
}

// advance moves a deploy as far as it can go now.
func (e *Engine) advance(d *store.Deploy, tx *store.Tx, now time.Time, out *outcome) {
	for range len(d.Hosts) + len(d.BatchSizes) + 4 {
		if !store.Active(d.State) {
			return
		}
		if d.Phase == store.PhaseRollingBack {
			e.advanceRollback(d, tx, now, out)
			return
		}
		if d.State == store.Paused {
			if d.AwaitingPromote || d.Held {
				return
			}
			if now.Before(d.PauseUntil) {
				out.wakeAt(d.PauseUntil)
				return
			}
			d.State, d.PauseUntil = store.Running, time.Time{}
			tx.Emit(store.Event{Kind: "state", State: store.Running, Batch: d.Batch, Detail: "pause over"})
			nextBatch(d, tx, now)
			continue
		}
		if !e.runBatch(d, tx, now, out) {
			if d.Phase == store.PhaseRollingBack {
				continue
			}
			return
		}
		// The batch is over and passed.
		tx.Emit(store.Event{Kind: "batch", Batch: d.Batch, State: "passed"})
		if d.Batch >= len(d.BatchSizes)-1 {
			d.State, d.Finished = store.Succeeded, now
			tx.Emit(store.Event{Kind: "state", State: d.State, Batch: d.Batch})
			return
		}
		switch p := d.Strategy.Pause; {
		case p.UntilPromote:
			d.State, d.AwaitingPromote = store.Paused, true
			tx.Emit(store.Event{Kind: "state", State: d.State, Batch: d.Batch, Detail: "until promote"})
			return
		case p.For > 0:
			d.State, d.PauseUntil = store.Paused, now.Add(p.For)
			tx.Emit(store.Event{Kind: "state", State: d.State, Batch: d.Batch, Detail: "until " + d.PauseUntil.UTC().Format(time.RFC3339Nano)})
			out.wakeAt(d.PauseUntil)
			return
		}
		nextBatch(d, tx, now)
	}
}

func nextBatch(d *store.Deploy, tx *store.Tx, now time.Time) {
	d.Batch++
	d.BatchStarted, d.GateSince, d.GatePassed = now, time.Time{}, false
	d.AwaitingPromote, d.Held, d.PauseUntil = false, false, time.Time{}
	tx.Emit(store.Event{Kind: "batch", Batch: d.Batch, State: "started", Detail: fmt.Sprintf("%d hosts", len(batchHosts(d, d.Batch)))})
}

// runBatch sends the batch's tasks, fails hosts past their deadline, and
// judges the batch once every host has its outcome. It returns true when
// the batch passed.
func (e *Engine) runBatch(d *store.Deploy, tx *store.Tx, now time.Time, out *outcome) bool {
	batchDeadline := d.BatchStarted.Add(time.Duration(d.Strategy.BatchTimeout))
	idx := batchHosts(d, d.Batch)
	open := 0
	for _, i := range idx {
		h := &d.Hosts[i]
		switch h.State {
		case store.StepPending:
			e.dispatch(d, h, tx, now, batchDeadline, out, i)
			if !store.Final(h.State) {
				open++
			}
		case store.StepDispatched, store.StepRunning:
			if !now.Before(h.Deadline) {
				h.State, h.Finished = store.StepFailed, now
				h.Error = fmt.Sprintf("no result from the agent by the deadline (%s after sending)", h.Deadline.Sub(h.Sent).Round(time.Millisecond))
				tx.Emit(store.Event{Kind: "failed", Host: h.Host, Batch: h.Batch, TaskID: h.TaskID, Version: h.Version, State: h.State, Detail: h.Error})
				out.withdraws = append(out.withdraws, sendTask{host: h.Host, task: release.Task{ID: h.TaskID}})
				continue
			}
			out.wakeAt(h.Deadline)
			open++
		}
	}
	if open > 0 {
		return false
	}
	failures := 0
	for _, i := range idx {
		if d.Hosts[i].State == store.StepFailed {
			failures++
		}
	}
	if plan.Failed(d.Strategy.MaxFail, failures, len(idx)) {
		e.fail(d, tx, now, fmt.Sprintf("batch %d: %d of %d hosts failed (max_fail %s)", d.Batch+1, failures, len(idx), d.Strategy.MaxFail))
		return false
	}
	if g := d.Strategy.Gate; g != nil && !d.GatePassed && d.Kind == store.KindDeploy {
		if !now.Before(batchDeadline) {
			e.fail(d, tx, now, fmt.Sprintf("batch %d: gate did not hold for %s before the batch deadline", d.Batch+1, time.Duration(g.Window)))
			return false
		}
		out.gate = true
		out.wakeAt(batchDeadline)
		return false
	}
	return true
}

// dispatch sends a pending host its task.
func (e *Engine) dispatch(d *store.Deploy, h *store.HostStep, tx *store.Tx, now, batchDeadline time.Time, out *outcome, i int) {
	h.TaskID = fmt.Sprintf("%s-%s-%d", d.ID, h.Host, h.Attempt)
	h.Sent = now
	h.Deadline = now.Add(time.Duration(d.Strategy.StepTimeout))
	if h.Deadline.After(batchDeadline) {
		h.Deadline = batchDeadline
	}
	out.wakeAt(h.Deadline)
	t, ok := e.task(d, h.TaskID, h.Version, tx)
	switch {
	case ok:
		h.State = store.StepDispatched
		_ = tx.IndexTask(h.TaskID, store.TaskRef{Deploy: d.ID, Host: h.Host})
		out.sends = append(out.sends, sendTask{h.Host, t})
		tx.Emit(store.Event{Kind: "dispatched", Host: h.Host, Batch: h.Batch, TaskID: h.TaskID, Version: h.Version})
	case h.Addr != "":
		h.State, h.Direct = store.StepDispatched, true
		out.directs = append(out.directs, i)
		tx.Emit(store.Event{Kind: "dispatched", Host: h.Host, Batch: h.Batch, Version: h.Version, Detail: "through the agent's rollback API"})
	default:
		h.State, h.Finished = store.StepFailed, now
		h.Error = fmt.Sprintf("the package of %s %s is unknown to deployer and the host has no agent address", d.App, h.Version)
		tx.Emit(store.Event{Kind: "failed", Host: h.Host, Batch: h.Batch, Version: h.Version, State: h.State, Detail: h.Error})
	}
}

// fail ends the rollout: held for a person, or rolling back.
func (e *Engine) fail(d *store.Deploy, tx *store.Tx, now time.Time, reason string) {
	d.Error = reason
	switch {
	case d.Kind != store.KindDeploy:
		d.State, d.Finished = store.Failed, now
		tx.Emit(store.Event{Kind: "state", State: d.State, Batch: d.Batch, Detail: reason})
	case d.Strategy.OnFailure == plan.OnFailureHold:
		d.State, d.Held = store.Paused, true
		tx.Emit(store.Event{Kind: "state", State: d.State, Batch: d.Batch, Detail: "held (on_failure: hold): " + reason})
	default:
		d.Phase = store.PhaseRollingBack
		tx.Emit(store.Event{Kind: "state", State: store.PhaseRollingBack, Batch: d.Batch, Detail: reason})
		for i := range d.Hosts {
			h := &d.Hosts[i]
			if h.Changed && h.Rollback == nil {
				h.Rollback = &store.RollbackStep{Version: h.Previous, State: store.StepPending}
			}
		}
	}
}

// advanceRollback sends changed hosts back to their recorded previous
// release and ends the deploy once every one has its outcome.
func (e *Engine) advanceRollback(d *store.Deploy, tx *store.Tx, now time.Time, out *outcome) {
	open := 0
	var failed []string
	for i := range d.Hosts {
		h := &d.Hosts[i]
		rb := h.Rollback
		if rb == nil {
			continue
		}
		switch rb.State {
		case store.StepPending:
			rb.Sent, rb.Deadline = now, now.Add(time.Duration(d.Strategy.StepTimeout))
			if rb.Version == "" {
				rb.State, rb.Error = store.StepSkipped, "no previous release recorded (first install): left at "+h.Version
				tx.Emit(store.Event{Kind: "rollback_failed", Host: h.Host, Batch: h.Batch, State: rb.State, Detail: rb.Error})
				continue
			}
			rb.TaskID = fmt.Sprintf("%s-%s-rb%d", d.ID, h.Host, h.Attempt)
			if t, ok := e.task(d, rb.TaskID, rb.Version, tx); ok {
				rb.State = store.StepDispatched
				_ = tx.IndexTask(rb.TaskID, store.TaskRef{Deploy: d.ID, Host: h.Host, Rollback: true})
				out.sends = append(out.sends, sendTask{h.Host, t})
				tx.Emit(store.Event{Kind: "rollback_dispatched", Host: h.Host, Batch: h.Batch, TaskID: rb.TaskID, Version: rb.Version})
			} else if h.Addr != "" {
				rb.State, rb.Direct, rb.TaskID = store.StepDispatched, true, ""
				out.directs = append(out.directs, i)
				tx.Emit(store.Event{Kind: "rollback_dispatched", Host: h.Host, Batch: h.Batch, Version: rb.Version, Detail: "through the agent's rollback API"})
			} else {
				rb.State, rb.TaskID = store.StepFailed, ""
				rb.Error = fmt.Sprintf("the package of %s %s is unknown to deployer and the host has no agent address", d.App, rb.Version)
				tx.Emit(store.Event{Kind: "rollback_failed", Host: h.Host, Batch: h.Batch, Version: rb.Version, State: rb.State, Detail: rb.Error})
			}
			open++
			out.wakeAt(rb.Deadline)
		case store.StepDispatched, store.StepRunning:
			if !now.Before(rb.Deadline) {
				rb.State, rb.Error = store.StepFailed, "no rollback result from the agent by the deadline"
				tx.Emit(store.Event{Kind: "rollback_failed", Host: h.Host, Batch: h.Batch, TaskID: rb.TaskID, Version: rb.Version, State: rb.State, Detail: rb.Error})
				if rb.TaskID != "" {
					out.withdraws = append(out.withdraws, sendTask{host: h.Host, task: release.Task{ID: rb.TaskID}})
				}
			} else {
				open++
				out.wakeAt(rb.Deadline)
			}
		}
		if rb.State == store.StepFailed {
			failed = append(failed, h.Host)
		}
	}
	if open > 0 {
		return
	}
	d.Finished = now
	d.State = store.RolledBack
	if len(failed) > 0 {
		d.State = store.Failed
		d.Error += "; rollback failed on " + strings.Join(failed, ", ")
	}
	tx.Emit(store.Event{Kind: "state", State: d.State, Batch: d.Batch, Detail: d.Error})
}

// direct switches a host through its agent's own rollback API and records
// the outcome as a report would.
func (e *Engine) direct(ctx context.Context, d *store.Deploy, i int) {
	h := d.Hosts[i]
	version, rollback := h.Version, false
	if h.Rollback != nil && h.Rollback.Direct {
		version, rollback = h.Rollback.Version, true
	}
	timeout := time.Duration(d.Strategy.StepTimeout)
	cctx, cancel := context.WithTimeout(ctx, timeout)
	current, err := agentRollback(cctx, e.o.AgentHTTP, e.o.AgentToken, h.Addr, d.App, version)
	cancel()
	if ctx.Err() != nil {
		return // resumed by the next leader
	}
	now := e.o.Now()
	_, uerr := e.update(d.ID, now, func(d *store.Deploy, tx *store.Tx) error {
		h := &d.Hosts[i]
		state, detail := store.StepDone, "current -> "+current
		if err != nil {
			state, detail = store.StepFailed, err.Error()
		}
		if rollback {
			rb := h.Rollback
			if rb == nil || store.Final(rb.State) {
				return nil
			}
			rb.State = state
			kind := "rolled_back"
			if err != nil {
				rb.Error, kind = detail, "rollback_failed"
			} else {
				h.Changed = false
			}
			tx.Emit(store.Event{Kind: kind, Host: h.Host, Batch: h.Batch, Version: version, State: state, Detail: detail})
			return nil
		}
		if store.Final(h.State) {
			return nil
		}
		h.State, h.Finished = state, now
		kind := "done"
		if err != nil {
			h.Error, kind = detail, "failed"
		} else {
			h.Changed = true
		}
		tx.Emit(store.Event{Kind: kind, Host: h.Host, Batch: h.Batch, Version: version, State: state, Detail: detail})
		return nil
	})
	if uerr != nil {
		e.o.Log.Warn("recording a direct rollback failed", "deploy", d.ID, "host", h.Host, "err", uerr)
	}
	e.wakeDriver(d.ID)
}

// checkGate polls the batch's PromQL gate once and records the answer.
func (e *Engine) checkGate(ctx context.Context, id string) {
	d, err := e.o.Store.Get(id)
	if err != nil || d.Strategy.Gate == nil {
		return
	}
	g := d.Strategy.Gate
	ok, detail, gerr := false, "", errors.New("no --transfer to query: deployer cannot check PromQL gates")
	if e.o.Gate != nil {
		cctx, cancel := context.WithTimeout(ctx, max(time.Duration(g.Interval), time.Second))
		ok, detail, gerr = e.o.Gate.Holds(cctx, g.Query)
		cancel()
	}
	if ctx.Err() != nil {
		return
	}
	now := e.o.Now()
	_, err = e.update(id, now, func(d *store.Deploy, tx *store.Tx) error {
		if d.State != store.Running || d.Phase != store.PhaseRollout || d.GatePassed {
			return nil
		}
		// A failure's rollback tasks are sent by the driver's next pass.
		switch {
		case gerr != nil:
			e.fail(d, tx, now, fmt.Sprintf("batch %d: gate %q: %v", d.Batch+1, g.Query, gerr))
		case !ok:
			e.fail(d, tx, now, fmt.Sprintf("batch %d: gate %q does not hold: %s", d.Batch+1, g.Query, detail))
		default:
			if d.GateSince.IsZero() {
				d.GateSince = now
				tx.Emit(store.Event{Kind: "gate", Batch: d.Batch, State: "holding", Detail: detail})
			}
			if now.Sub(d.GateSince) >= time.Duration(g.Window) {
				d.GatePassed = true
				tx.Emit(store.Event{Kind: "gate", Batch: d.Batch, State: "passed", Detail: detail})
			}
		}
		return nil
	})
	if err != nil {
		e.o.Log.Warn("recording a gate check failed", "deploy", id, "err", err)
	}
	e.wakeDriver(id)
}

func sleep(ctx context.Context, d time.Duration) {
	select {
	case <-ctx.Done():
	case <-time.After(d):
	}
}

// hostIndex finds a host's step.
func hostIndex(d *store.Deploy, host string) int {
	return slices.IndexFunc(d.Hosts, func(h store.HostStep) bool { return h.Host == host })
}
