package rollout

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/opskit/opskit/deploy/release"
	"github.com/opskit/opskit/deployer/plan"
	"github.com/opskit/opskit/deployer/store"
)

// DefaultEnv is the environment of a request that names none.
const DefaultEnv = "prod"

// Request asks for a deploy.
type Request struct {
	App       string `json:"app"`
	Env       string `json:"env,omitempty"`
	Version   string `json:"version"`
	Artifact  string `json:"artifact"`
	SHA256    string `json:"sha256"`
	Signature string `json:"signature,omitempty"`
}

// ErrInvalid is a request that cannot be taken as it is.
var ErrInvalid = errors.New("invalid request")

// Validate checks a request and fills its defaults.
func (r *Request) Validate() error {
	if r.Env == "" {
		r.Env = DefaultEnv
	}
	r.SHA256 = strings.ToLower(strings.TrimPrefix(r.SHA256, "sha256:"))
	var errs []error
	for _, f := range []struct{ name, v string }{{"app", r.App}, {"env", r.Env}, {"version", r.Version}} {
		if err := release.ValidName(f.name, f.v); err != nil {
			errs = append(errs, err)
		}
	}
	if r.Artifact == "" {
		errs = append(errs, errors.New("artifact: required (the package's URL)"))
	}
	if b, err := hex.DecodeString(r.SHA256); err != nil || len(b) != 32 {
		errs = append(errs, errors.New("sha256: required, 64 hex digits"))
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	return nil
}

// Submit queues a deploy with the app's strategy as it is now. Any
// instance may take a deploy; the lease holder runs it.
func (e *Engine) Submit(r Request, user string) (*store.Deploy, error) {
	if err := r.Validate(); err != nil {
		return nil, err
	}
	d := &store.Deploy{Kind: store.KindDeploy, App: r.App, Env: r.Env, Version: r.Version, Artifact: r.Artifact,
		SHA256: r.SHA256, Signature: r.Signature, User: user, Strategy: e.o.Apps().For(r.App)}
	if err := e.o.Store.Enqueue(d, e.o.Now()); err != nil {
		return nil, err
	}
	e.poke()
	return d, nil
}

// Report records an agent's report of a task (progress or final) and
// returns once it is committed. A task deployer does not know is
// acknowledged and ignored, so the agent moves on.
func (e *Engine) Report(res release.Result) error {
	id := res.Task.ID
	ref, err := e.o.Store.Task(id)
	if errors.Is(err, store.ErrNotFound) {
		e.o.Log.Info("report of an unknown task ignored", "task", id, "state", res.State)
		return nil
	}
	if err != nil {
		return err
	}
	if !e.Leader() {
		return ErrNotLeader
	}
	p := &pendingReport{res: res, ref: ref, done: make(chan error, 1)}
	select {
	case e.reports <- p:
	case <-e.stopped:
		return ErrNotLeader
	}
	select {
	case err := <-p.done:
		return err
	case <-e.stopped:
		return ErrNotLeader
	}
}

// pendingReport is a report waiting for the committer.
type pendingReport struct {
	res  release.Result
	ref  store.TaskRef
	done chan error
}

// maxReportBatch bounds the reports committed together.
const maxReportBatch = 1024

// commitReports records the reports waiting, all of one deploy in one
// transaction: a burst of agents finishing a batch shares one decode of
// the deploy, one write and one fsync instead of one each.
func (e *Engine) commitReports(ctx context.Context) {
	for {
		var batch []*pendingReport
		select {
		case <-ctx.Done():
			return
		case p := <-e.reports:
			batch = append(batch, p)
		}
	drain:
		for len(batch) < maxReportBatch {
			select {
			case p := <-e.reports:
				batch = append(batch, p)
			default:
				break drain
			}
		}
		byDeploy := map[string][]*pendingReport{}
		var order []string
		for _, p := range batch {
			if _, ok := byDeploy[p.ref.Deploy]; !ok {
				order = append(order, p.ref.Deploy)
			}
			byDeploy[p.ref.Deploy] = append(byDeploy[p.ref.Deploy], p)
		}
		for _, id := range order {
			e.commitDeployReports(id, byDeploy[id])
		}
	}
}

func (e *Engine) commitDeployReports(id string, ps []*pendingReport) {
	now := e.o.Now()
	_, err := e.update(id, now, func(d *store.Deploy, tx *store.Tx) error {
		index := make(map[string]int, len(d.Hosts))
		for i, h := range d.Hosts {
			index[h.Host] = i
		}
		for _, p := range ps {
			i, ok := index[p.ref.Host]
			if !ok {
				continue
			}
			h := &d.Hosts[i]
			if p.ref.Rollback {
				recordRollback(h, p.res, tx)
			} else {
				recordStep(d, h, p.res, tx, now)
			}
		}
		return nil
	})
	for _, p := range ps {
		p.done <- err
		if err == nil && (p.res.State == release.StateDone || p.res.State == release.StateFailed) {
			e.o.Dispatch.Withdraw(p.ref.Host, p.res.Task.ID)
		}
	}
	e.wakeDriver(id)
}

// newSteps emits an event for each step a report adds.
func newSteps(h *store.HostStep, before *store.AgentResult, res release.Result, tx *store.Tx, kind string) {
	n := 0
	if before != nil {
		n = len(before.Steps)
	}
	for _, s := range res.Steps[min(n, len(res.Steps)):] {
		tx.Emit(store.Event{Kind: kind, Host: h.Host, Batch: h.Batch, TaskID: res.Task.ID, Version: res.Task.Version,
			State: store.StepRunning, Step: s.Name, Detail: s.Detail})
	}
}

func recordStep(d *store.Deploy, h *store.HostStep, res release.Result, tx *store.Tx, now time.Time) {
	if h.TaskID != res.Task.ID {
		return // an earlier attempt's task
	}
	late := store.Final(h.State)
	if late && h.Result != nil && h.Result.State != release.StateRunning {
		return // the final result again
	}
	before := h.Result
	h.Result = store.NewAgentResult(res)
	h.Previous = res.Previous
	newSteps(h, before, res, tx, "step")
	switch res.State {
	case release.StateRunning:
		if !late {
			h.State = store.StepRunning
		}
	case release.StateDone:
		h.Changed = true
		if late {
			// Failed at its deadline, yet it finished: the host changed.
			h.Error += "; the agent finished it after the deadline"
			tx.Emit(store.Event{Kind: "done", Host: h.Host, Batch: h.Batch, TaskID: h.TaskID, Version: h.Version, State: store.StepDone, Detail: "late: " + h.Error})
			if d.Phase == store.PhaseRollingBack && store.Active(d.State) && h.Rollback == nil {
				h.Rollback = &store.RollbackStep{Version: h.Previous, State: store.StepPending}
			}
			return
		}
		h.State, h.Finished, h.Error = store.StepDone, now, ""
		tx.Emit(store.Event{Kind: "done", Host: h.Host, Batch: h.Batch, TaskID: h.TaskID, Version: h.Version, State: h.State,
			Detail: fmt.Sprintf("previous %q, replayed %v", res.Previous, res.Replayed)})
	case release.StateFailed:
		if late {
			return
		}
		h.State, h.Finished, h.Error = store.StepFailed, now, res.Error
		if res.RolledBack && !strings.Contains(h.Error, "rolled back") {
			h.Error += " (the agent rolled back to " + res.Previous + ")"
		}
		tx.Emit(store.Event{Kind: "failed", Host: h.Host, Batch: h.Batch, TaskID: h.TaskID, Version: h.Version, State: h.State, Detail: h.Error})
	}
}

func recordRollback(h *store.HostStep, res release.Result, tx *store.Tx) {
	rb := h.Rollback
	if rb == nil || rb.TaskID != res.Task.ID || store.Final(rb.State) {
		return
	}
	before := rb.Result
	rb.Result = store.NewAgentResult(res)
	newSteps(h, before, res, tx, "rollback_step")
	switch res.State {
	case release.StateRunning:
		rb.State = store.StepRunning
	case release.StateDone:
		rb.State, h.Changed = store.StepDone, false
		tx.Emit(store.Event{Kind: "rolled_back", Host: h.Host, Batch: h.Batch, TaskID: rb.TaskID, Version: rb.Version, State: rb.State})
	case release.StateFailed:
		rb.State, rb.Error = store.StepFailed, res.Error
		tx.Emit(store.Event{Kind: "rollback_failed", Host: h.Host, Batch: h.Batch, TaskID: rb.TaskID, Version: rb.Version, State: rb.State, Detail: rb.Error})
	}
}

// withdrawOpen stops offering a deploy's unfinished tasks.
func (e *Engine) withdrawOpen(d *store.Deploy) {
	for _, h := range d.Hosts {
		if h.TaskID != "" && !store.Final(h.State) {
			e.o.Dispatch.Withdraw(h.Host, h.TaskID)
		}
		if rb := h.Rollback; rb != nil && rb.TaskID != "" && !store.Final(rb.State) {
			e.o.Dispatch.Withdraw(h.Host, rb.TaskID)
		}
	}
}

func conflict(d *store.Deploy, action string) error {
	return fmt.Errorf("%w: cannot %s deploy %s: it is %s", store.ErrConflict, action, d.ID, d.State)
}

// Abort stops a running or paused deploy where it is: no further task is
// sent, tasks not yet taken are withdrawn, nothing is rolled back (use
// rollback or retry).
func (e *Engine) Abort(id string) (*store.Deploy, error) {
	now := e.o.Now()
	d, err := e.update(id, now, func(d *store.Deploy, tx *store.Tx) error {
		if !store.Active(d.State) {
			return conflict(d, "abort")
		}
		d.State, d.Finished = store.Aborted, now
		if d.Error == "" {
			d.Error = "aborted"
		}
		for i := range d.Hosts {
			h := &d.Hosts[i]
			if h.State == store.StepDispatched || h.State == store.StepRunning {
				tx.Emit(store.Event{Kind: "withdrawn", Host: h.Host, Batch: h.Batch, TaskID: h.TaskID, State: h.State})
			}
		}
		tx.Emit(store.Event{Kind: "state", State: d.State, Batch: d.Batch})
		return nil
	})
	if err != nil {
		return nil, err
	}
	e.withdrawOpen(d)
	e.wakeDriver(id)
	return d, nil
}

// Cancel removes a queued deploy.
func (e *Engine) Cancel(id string) (*store.Deploy, error) {
	now := e.o.Now()
	d, err := e.update(id, now, func(d *store.Deploy, tx *store.Tx) error {
		if d.State != store.Queued {
			return conflict(d, "cancel (only a queued deploy can be cancelled)")
		}
		d.State, d.Finished = store.Cancelled, now
		tx.Emit(store.Event{Kind: "state", State: d.State})
		return nil
	})
	return d, err
}

// Promote ends a pause: a timed one early, one until promote, or a failure
// held for a person (accepting it and going on with the next batch).
func (e *Engine) Promote(id string) (*store.Deploy, error) {
	now := e.o.Now()
	d, err := e.update(id, now, func(d *store.Deploy, tx *store.Tx) error {
		if d.State != store.Paused {
			return conflict(d, "promote")
		}
		d.State = store.Running
		detail := "promoted"
		if d.Held {
			detail = "promoted past the held failure: " + d.Error
			d.Error = ""
		}
		tx.Emit(store.Event{Kind: "state", State: d.State, Batch: d.Batch, Detail: detail})
		if d.Batch >= len(d.BatchSizes)-1 {
			d.State, d.Finished, d.Held = store.Succeeded, now, false
			tx.Emit(store.Event{Kind: "state", State: d.State, Batch: d.Batch})
			return nil
		}
		nextBatch(d, tx, now)
		return nil
	})
	if err != nil {
		return nil, err
	}
	e.wakeDriver(id)
	return d, nil
}

// Retry queues an ended (failed, rolled back, aborted) or held deploy
// again, in its original place: hosts it left on the new version keep
// their step; every other host gets a new attempt (a new task id).
func (e *Engine) Retry(id string) (*store.Deploy, error) {
	now := e.o.Now()
	d, err := e.update(id, now, func(d *store.Deploy, tx *store.Tx) error {
		switch {
		case d.State == store.Failed, d.State == store.RolledBack, d.State == store.Aborted:
		case d.State == store.Paused && d.Held:
		default:
			return conflict(d, "retry")
		}
		if len(d.Hosts) == 0 {
			// It failed before starting (no hosts): start afresh.
			d.BatchSizes = nil
		}
		first := -1
		for i := range d.Hosts {
			h := &d.Hosts[i]
			keep := h.State == store.StepDone && h.Changed
			h.Rollback = nil
			if keep {
				continue
			}
			if h.TaskID != "" {
				h.Attempt++
			}
			h.State, h.TaskID, h.Result, h.Error, h.Changed, h.Direct = store.StepPending, "", nil, "", false, false
			h.Sent, h.Deadline, h.Finished = time.Time{}, time.Time{}, time.Time{}
			if first < 0 || h.Batch < first {
				first = h.Batch
			}
		}
		if first < 0 {
			first = max(len(d.BatchSizes)-1, 0)
		}
		d.Attempt++
		d.State, d.Phase, d.Error, d.Batch = store.Queued, store.PhaseRollout, "", first
		d.Held, d.AwaitingPromote, d.PauseUntil, d.GateSince, d.GatePassed = false, false, time.Time{}, time.Time{}, false
		d.Finished = time.Time{}
		tx.Emit(store.Event{Kind: "state", State: d.State, Batch: d.Batch, Detail: fmt.Sprintf("retry, attempt %d", d.Attempt)})
		return nil
	})
	if err != nil {
		return nil, err
	}
	e.wakeDriver(id)
	e.poke()
	return d, nil
}

// Rollback puts an app's hosts in env back: to version on every host of
// the environment, or (version "") each host changed by the latest deploy
// that changed any back to the release it recorded before. A deploy of the
// app running now is aborted first; the rollback runs before anything
// queued, in one batch.
func (e *Engine) Rollback(ctx context.Context, app, env, version, user string) (*store.Deploy, error) {
	if env == "" {
		env = DefaultEnv
	}
	if err := release.ValidName("app", app); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	if version != "" {
		if err := release.ValidName("version", version); err != nil {
			return nil, fmt.Errorf("%w: %w", ErrInvalid, err)
		}
	}
	if !e.Leader() {
		return nil, ErrNotLeader
	}
	active, err := e.o.Store.List(store.Filter{App: app, Env: env, States: []string{store.Running, store.Paused}})
	if err != nil {
		return nil, err
	}
	for _, d := range active {
		if _, err := e.Abort(d.ID); err != nil && !errors.Is(err, store.ErrConflict) {
			return nil, err
		}
	}
	strategy := e.o.Apps().For(app)
	d := &store.Deploy{Kind: store.KindRollback, Priority: true, App: app, Env: env, Version: version, User: user,
		Strategy: plan.Strategy{OnFailure: plan.OnFailureHold, StepTimeout: strategy.StepTimeout,
			BatchTimeout: strategy.BatchTimeout, Keep: strategy.Keep}}
	if version != "" {
		hs, err := e.o.Hosts.Hosts(ctx, app, env)
		if err != nil {
			return nil, err
		}
		for _, h := range hs {
			d.Hosts = append(d.Hosts, store.HostStep{Host: h.Name, Addr: h.Addr, Version: version, State: store.StepPending, Attempt: 1})
		}
	} else {
		past, err := e.o.Store.List(store.Filter{App: app, Env: env})
		if err != nil {
			return nil, err
		}
		// The latest deploy that left any host changed.
		var last *store.Deploy
		for _, p := range past {
			if p.Kind == store.KindDeploy && slices.ContainsFunc(p.Hosts, func(h store.HostStep) bool { return h.Changed }) {
				last = p
				break
			}
		}
		if last == nil {
			return nil, fmt.Errorf("%w: no deploy of %s/%s left a host changed; name a version", store.ErrConflict, app, env)
		}
		for _, h := range last.Hosts {
			if h.Changed && h.Previous != "" {
				d.Hosts = append(d.Hosts, store.HostStep{Host: h.Host, Addr: h.Addr, Version: h.Previous, State: store.StepPending, Attempt: 1})
			}
		}
		if len(d.Hosts) == 0 {
			return nil, fmt.Errorf("%w: deploy %s (%s) recorded no previous release on its hosts (first install); name a version", store.ErrConflict, last.ID, last.Version)
		}
	}
	if len(d.Hosts) == 0 {
		return nil, fmt.Errorf("%w: %s/%s has no hosts", store.ErrConflict, app, env)
	}
	d.BatchSizes = []int{len(d.Hosts)}
	if err := e.o.Store.Enqueue(d, e.o.Now()); err != nil {
		return nil, err
	}
	e.poke()
	return d, nil
}

// agentRollback asks a host's agent to switch app to version (its own
// POST /api/v1/apps/{app}/rollback) and returns the release now current.
func agentRollback(ctx context.Context, c *http.Client, token, addr, app, version string) (string, error) {
	base := addr
	if !strings.Contains(base, "://") {
		base = "http://" + base
	}
	u := base + "/api/v1/apps/" + url.PathEscape(app) + "/rollback?version=" + url.QueryEscape(version)
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, u, nil)
	if err != nil {
		return "", err
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := c.Do(req)
	if err != nil {
		return "", fmt.Errorf("agent rollback: %w", err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<16))
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("agent rollback: HTTP %s: %s", resp.Status, strings.TrimSpace(string(body)))
	}
	var out struct {
		Current string `json:"current"`
	}
	if err := json.Unmarshal(body, &out); err != nil {
		return "", fmt.Errorf("agent rollback answer: %w", err)
	}
	return out.Current, nil
}
