package rollout

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/opskit/opskit/deploy/release"
	"github.com/opskit/opskit/deployer/hosts"
	"github.com/opskit/opskit/deployer/plan"
	"github.com/opskit/opskit/deployer/store"
)

// fleet is a fake set of agents behind a Dispatcher: each task is applied
// at once (or as behave says) and reported to the engine.
type fleet struct {
	mu      sync.Mutex
	engine  *Engine
	current map[string]string // host -> version
	sent    []string          // task ids in sending order (repeats kept)
	applied map[string]int    // task id -> applications
	// behave decides a task's outcome: "" done, "fail", "hang".
	behave func(host string, t release.Task) string
}

func (f *fleet) Send(_ context.Context, host string, t release.Task) error {
	f.mu.Lock()
	f.sent = append(f.sent, t.ID)
	f.mu.Unlock()
	go f.apply(host, t)
	return nil
}

func (f *fleet) Withdraw(string, string) {}

func (f *fleet) apply(host string, t release.Task) {
	f.mu.Lock()
	how := ""
	if f.behave != nil {
		how = f.behave(host, t)
	}
	if how == "hang" {
		f.mu.Unlock()
		return
	}
	f.applied[t.ID]++
	prev := f.current[host]
	res := release.Result{Task: t, State: release.StateDone, Previous: prev,
		Steps: []release.Step{{Name: "unpacked"}, {Name: "switched"}, {Name: "healthy"}}}
	if how == "fail" {
		res.State, res.Error, res.Steps = release.StateFailed, "health: exit 1", res.Steps[:1]
	} else {
		f.current[host] = t.Version
	}
	e := f.engine
	f.mu.Unlock()
	for e.Report(res) != nil {
		time.Sleep(5 * time.Millisecond)
	}
}

func (f *fleet) versions() map[string]string {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := map[string]string{}
	for k, v := range f.current {
		out[k] = v
	}
	return out
}

type fixedHosts []hosts.Host

func (h fixedHosts) Hosts(context.Context, string, string) ([]hosts.Host, error) { return h, nil }

func nHosts(n int) fixedHosts {
	var out fixedHosts
	for i := range n {
		out = append(out, hosts.Host{Name: fmt.Sprintf("h%02d", i)})
	}
	return out
}

type rig struct {
	t     *testing.T
	dir   string
	st    *store.Store
	fleet *fleet
	eng   *Engine
	stop  func()
}

func newRig(t *testing.T, appsYAML string, n int) *rig {
	t.Helper()
	dir := t.TempDir()
	return startRig(t, dir, appsYAML, nHosts(n), &fleet{current: map[string]string{}, applied: map[string]int{}}, "a")
}

func startRig(t *testing.T, dir, appsYAML string, hs hosts.Source, f *fleet, holder string) *rig {
	t.Helper()
	st, err := store.Open(dir, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	apps, err := plan.ParseApps("apps.yaml", []byte(appsYAML))
	if err != nil {
		t.Fatal(err)
	}
	r := &rig{t: t, dir: dir, st: st, fleet: f}
	r.eng = New(Options{Store: st, Hosts: hs, Apps: func() *plan.Apps { return apps }, Dispatch: f,
		Holder: holder, LeaseTTL: 3 * time.Second, Tick: 20 * time.Millisecond, Gate: gateFunc(func() bool { return true })})
	f.mu.Lock()
	f.engine = r.eng
	f.mu.Unlock()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { r.eng.Run(ctx); close(done) }()
	var once sync.Once
	r.stop = func() {
		once.Do(func() {
			cancel()
			<-done
			st.Close()
		})
	}
	t.Cleanup(r.stop)
	for !r.eng.Leader() {
		time.Sleep(time.Millisecond)
	}
	return r
}

type gateFunc func() bool

func (g gateFunc) Holds(context.Context, string) (bool, string, error) {
	if g() {
		return true, "1 series", nil
	}
	return false, "empty result", nil
}

func (r *rig) submit(version string) *store.Deploy {
	r.t.Helper()
	d, err := r.eng.Submit(Request{App: "web", Env: "prod", Version: version, Artifact: "http://pkg/" + version,
		SHA256: strings.Repeat("0", 63) + version[len(version)-1:]}, "test")
	if err != nil {
		r.t.Fatal(err)
	}
	return d
}

func (r *rig) waitState(id string, states ...string) *store.Deploy {
	r.t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		d, err := r.st.Get(id)
		if err == nil && slices.Contains(states, d.State) {
			return d
		}
		if time.Now().After(deadline) {
			r.t.Fatalf("deploy %s is %s (%s), want %v", id, d.State, d.Error, states)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func (r *rig) events(id string) []store.Event {
	evs, err := r.st.Events(id, 0, 0)
	if err != nil {
		r.t.Fatal(err)
	}
	return evs
}

// batchOrder returns, per batch, the hosts dispatched, from the events.
func batchOrder(evs []store.Event) map[int][]string {
	out := map[int][]string{}
	for _, e := range evs {
		if e.Kind == "dispatched" {
			out[e.Batch] = append(out[e.Batch], e.Host)
		}
	}
	return out
}

func TestStagedRolloutSucceeds(t *testing.T) {
	r := newRig(t, `apps: {web: {batches: [1, "10%", "50%", "100%"]}}`, 20)
	d := r.waitState(r.submit("1").ID, store.Succeeded)
	if !slices.Equal(d.BatchSizes, []int{1, 2, 10, 7}) {
		t.Errorf("batch sizes %v", d.BatchSizes)
	}
	order := batchOrder(r.events(d.ID))
	for b, n := range d.BatchSizes {
		if len(order[b]) != n {
			t.Errorf("batch %d dispatched %v, want %d hosts", b, order[b], n)
		}
	}
	// Batch b+1 is only sent once batch b passed.
	evs := r.events(d.ID)
	passed := map[int]int64{}
	for _, e := range evs {
		if e.Kind == "batch" && e.State == "passed" {
			passed[e.Batch] = e.Seq
		}
	}
	for _, e := range evs {
		if e.Kind == "dispatched" && e.Batch > 0 && e.Seq < passed[e.Batch-1] {
			t.Errorf("host %s of batch %d sent before batch %d passed", e.Host, e.Batch, e.Batch-1)
		}
	}
	for h, v := range r.fleet.versions() {
		if v != "1" {
			t.Errorf("%s at %q", h, v)
		}
	}
	for _, h := range d.Hosts {
		if h.State != store.StepDone || !h.Changed || h.TaskID != fmt.Sprintf("%s-%s-1", d.ID, h.Host) {
			t.Errorf("host step %+v", h)
		}
	}
}

func TestFailureInSecondBatchRollsBackChangedHosts(t *testing.T) {
	r := newRig(t, `apps: {web: {batches: [2, 3, "100%"]}}`, 8)
	r.waitState(r.submit("1").ID, store.Succeeded)
	r.fleet.mu.Lock()
	r.fleet.behave = func(host string, t release.Task) string {
		if t.Version == "2" && host == "h03" {
			return "fail"
		}
		return ""
	}
	r.fleet.mu.Unlock()
	d := r.waitState(r.submit("2").ID, store.RolledBack)
	if !strings.Contains(d.Error, "batch 2: 1 of 3 hosts failed") {
		t.Errorf("error %q", d.Error)
	}
	for h, v := range r.fleet.versions() {
		if v != "1" {
			t.Errorf("%s at %s after the rollback, want 1", h, v)
		}
	}
	rolled := 0
	for _, h := range d.Hosts {
		switch {
		case h.Batch == 2:
			if h.State != store.StepPending {
				t.Errorf("batch 3 host %s was touched: %s", h.Host, h.State)
			}
		case h.Host == "h03":
			if h.Rollback != nil {
				t.Errorf("the failed host was rolled back by deployer: %+v", h.Rollback)
			}
		default:
			if h.Rollback == nil || h.Rollback.State != store.StepDone || h.Rollback.Version != "1" || h.Previous != "1" {
				t.Errorf("host %s rollback %+v previous %q", h.Host, h.Rollback, h.Previous)
				continue
			}
			rolled++
		}
	}
	if rolled != 4 {
		t.Errorf("%d hosts rolled back, want the 4 changed ones", rolled)
	}
	// Retry after the rollback redoes every host under new task ids.
	r.fleet.mu.Lock()
	r.fleet.behave = nil
	r.fleet.mu.Unlock()
	if _, err := r.eng.Retry(d.ID); err != nil {
		t.Fatal(err)
	}
	d = r.waitState(d.ID, store.Succeeded)
	for _, h := range d.Hosts {
		want := 2
		if h.Batch == 2 {
			want = 1
		}
		if h.Attempt != want || h.TaskID != fmt.Sprintf("%s-%s-%d", d.ID, h.Host, want) {
			t.Errorf("after retry %s attempt %d task %s", h.Host, h.Attempt, h.TaskID)
		}
	}
}

func TestMaxFailIsExceededNotReached(t *testing.T) {
	r := newRig(t, `apps: {web: {batches: [4], max_fail: 1}}`, 8)
	r.fleet.behave = func(host string, t release.Task) string {
		if host == "h01" || (t.Version == "2" && host == "h05") {
			return "fail"
		}
		return ""
	}
	// One failure per batch reaches max_fail 1: allowed.
	d := r.waitState(r.submit("1").ID, store.Succeeded)
	if d.Hosts[1].State != store.StepFailed {
		t.Errorf("h01 %s", d.Hosts[1].State)
	}
	// Two in the first batch exceed it.
	r.fleet.mu.Lock()
	r.fleet.behave = func(host string, t release.Task) string {
		if host == "h01" || host == "h02" {
			return "fail"
		}
		return ""
	}
	r.fleet.mu.Unlock()
	d = r.waitState(r.submit("2").ID, store.RolledBack)
	if !strings.Contains(d.Error, "2 of 4 hosts failed (max_fail 1)") {
		t.Errorf("error %q", d.Error)
	}
}

func TestLostAgentFailsAtItsDeadline(t *testing.T) {
	r := newRig(t, `apps: {web: {batches: [2], step_timeout: 200ms, on_failure: hold}}`, 4)
	r.fleet.behave = func(host string, t release.Task) string {
		if host == "h01" {
			return "hang"
		}
		return ""
	}
	start := time.Now()
	d := r.waitState(r.submit("1").ID, store.Paused)
	if took := time.Since(start); took < 200*time.Millisecond {
		t.Errorf("failed after %v, before the deadline", took)
	}
	if !d.Held || d.Hosts[1].State != store.StepFailed || !strings.Contains(d.Hosts[1].Error, "deadline") {
		t.Errorf("held %v host %+v", d.Held, d.Hosts[1])
	}
	if d.Hosts[2].State != store.StepPending {
		t.Errorf("the next batch started while held")
	}
	// Promote accepts the failure and goes on.
	if _, err := r.eng.Promote(d.ID); err != nil {
		t.Fatal(err)
	}
	d = r.waitState(d.ID, store.Succeeded)
	if d.Hosts[3].State != store.StepDone {
		t.Errorf("h03 %s", d.Hosts[3].State)
	}
}

func TestPauseUntilPromoteAndTimedPause(t *testing.T) {
	r := newRig(t, `apps: {web: {batches: [1, "100%"], pause: until_promote}, api: {batches: [1], pause: 150ms}}`, 3)
	d := r.waitState(r.submit("1").ID, store.Paused)
	if !d.AwaitingPromote || d.Hosts[1].State != store.StepPending {
		t.Fatalf("paused %+v", d)
	}
	time.Sleep(50 * time.Millisecond)
	if d, _ = r.st.Get(d.ID); d.State != store.Paused {
		t.Fatalf("left the pause alone: %s", d.State)
	}
	if _, err := r.eng.Promote(d.ID); err != nil {
		t.Fatal(err)
	}
	r.waitState(d.ID, store.Succeeded)

	start := time.Now()
	a, err := r.eng.Submit(Request{App: "api", Version: "1", Artifact: "x", SHA256: strings.Repeat("a", 64)}, "t")
	if err != nil {
		t.Fatal(err)
	}
	r.waitState(a.ID, store.Succeeded)
	if took := time.Since(start); took < 300*time.Millisecond {
		t.Errorf("3 batches with 150ms pauses took %v", took)
	}
}

func TestGateFailureRollsBack(t *testing.T) {
	r := newRig(t, `apps: {web: {batches: [1, 2], gate: {query: up, window: 100ms, interval: 20ms}}}`, 3)
	r.waitState(r.submit("1").ID, store.Succeeded)
	// Holds while only batch 1's host runs version 2.
	r.eng.o.Gate = gateFunc(func() bool {
		n := 0
		for _, v := range r.fleet.versions() {
			if v == "2" {
				n++
			}
		}
		return n < 2
	})
	d := r.waitState(r.submit("2").ID, store.RolledBack)
	if !strings.Contains(d.Error, "batch 2: gate") {
		t.Errorf("error %q", d.Error)
	}
	for h, v := range r.fleet.versions() {
		if v != "1" {
			t.Errorf("%s at %s", h, v)
		}
	}
}

func TestQueuedDeploysRunInOrderAndCancel(t *testing.T) {
	r := newRig(t, `apps: {web: {batches: [1], pause: until_promote}}`, 2)
	d1 := r.submit("1")
	d2 := r.submit("2")
	d3 := r.submit("3")
	r.waitState(d1.ID, store.Paused)
	if d, _ := r.st.Get(d2.ID); d.State != store.Queued {
		t.Fatalf("second deploy %s while the first runs", d.State)
	}
	if _, err := r.eng.Cancel(d3.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := r.eng.Cancel(d1.ID); err == nil {
		t.Error("cancelled a running deploy")
	}
	r.eng.Promote(d1.ID)
	r.waitState(d1.ID, store.Succeeded)
	r.waitState(d2.ID, store.Paused)
	r.eng.Promote(d2.ID)
	r.waitState(d2.ID, store.Succeeded)
	if d, _ := r.st.Get(d3.ID); d.State != store.Cancelled {
		t.Errorf("cancelled deploy %s", d.State)
	}
	a, _ := r.st.Get(d1.ID)
	b, _ := r.st.Get(d2.ID)
	if !a.Finished.Before(b.Started) && !a.Finished.Equal(b.Started) {
		t.Errorf("second started %v before the first ended %v", b.Started, a.Finished)
	}
}

func TestResumeAfterRestartRepeatsNoFinishedStep(t *testing.T) {
	dir := t.TempDir()
	f := &fleet{current: map[string]string{}, applied: map[string]int{}}
	// Batch 2's hosts hang: the deployer dies with them in flight.
	f.behave = func(host string, t release.Task) string {
		if host >= "h02" {
			return "hang"
		}
		return ""
	}
	yaml := `apps: {web: {batches: [2, 2, "100%"]}}`
	r := startRig(t, dir, yaml, nHosts(6), f, "first")
	d := r.submit("1")
	deadline := time.Now().Add(5 * time.Second)
	for {
		cur, _ := r.st.Get(d.ID)
		if cur.Batch == 1 && cur.Hosts[2].State == store.StepDispatched && cur.Hosts[3].State == store.StepDispatched {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("batch 2 never sent: %+v", cur)
		}
		time.Sleep(5 * time.Millisecond)
	}
	r.stop()
	f.mu.Lock()
	f.sent = nil
	f.behave = nil
	f.mu.Unlock()
	r2 := startRig(t, dir, yaml, nHosts(6), f, "second")
	got := r2.waitState(d.ID, store.Succeeded)
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, id := range f.sent {
		if strings.Contains(id, "-h00-") || strings.Contains(id, "-h01-") {
			t.Errorf("finished host step sent again: %s", id)
		}
	}
	for _, h := range got.Hosts {
		if h.Attempt != 1 || f.applied[h.TaskID] != 1 {
			t.Errorf("%s attempt %d applied %d times", h.Host, h.Attempt, f.applied[h.TaskID])
		}
	}
	if l, _ := r2.st.CurrentLease(); l.Holder != "second" || l.Token != 2 {
		t.Errorf("lease %+v", l)
	}
}

func TestRollbackCommand(t *testing.T) {
	r := newRig(t, `apps: {web: {batches: [1]}}`, 3)
	r.waitState(r.submit("1").ID, store.Succeeded)
	r.waitState(r.submit("2").ID, store.Succeeded)
	// Without a version: each host back to what it had before the last deploy.
	rb, err := r.eng.Rollback(context.Background(), "web", "prod", "", "ops")
	if err != nil {
		t.Fatal(err)
	}
	rb = r.waitState(rb.ID, store.Succeeded)
	for h, v := range r.fleet.versions() {
		if v != "1" {
			t.Errorf("%s at %s after rollback", h, v)
		}
	}
	// To a named version, while a deploy is paused: it is aborted first.
	r.waitState(r.submit("3").ID, store.Succeeded)
	rb, err = r.eng.Rollback(context.Background(), "web", "prod", "2", "ops")
	if err != nil {
		t.Fatal(err)
	}
	r.waitState(rb.ID, store.Succeeded)
	for h, v := range r.fleet.versions() {
		if v != "2" {
			t.Errorf("%s at %s after rollback to 2", h, v)
		}
	}
	if _, err := r.eng.Rollback(context.Background(), "web", "prod", "9", "ops"); err != nil {
		t.Fatal(err)
	}
}

func TestAbortThenRetry(t *testing.T) {
	r := newRig(t, `apps: {web: {batches: [1], pause: until_promote}}`, 3)
	d := r.waitState(r.submit("1").ID, store.Paused)
	if _, err := r.eng.Abort(d.ID); err != nil {
		t.Fatal(err)
	}
	d = r.waitState(d.ID, store.Aborted)
	if _, err := r.eng.Abort(d.ID); err == nil {
		t.Error("aborted twice")
	}
	if _, err := r.eng.Retry(d.ID); err != nil {
		t.Fatal(err)
	}
	d = r.waitState(d.ID, store.Paused)
	if d.Batch != 1 || d.Hosts[0].Attempt != 1 || d.Hosts[1].State != store.StepDone {
		t.Errorf("retry redid the finished batch or skipped one: batch %d %+v", d.Batch, d.Hosts[:2])
	}
}

func TestSecondInstanceStandsBy(t *testing.T) {
	r := newRig(t, `{}`, 1)
	other := New(Options{Store: r.st, Hosts: nHosts(1), Dispatch: r.fleet, Holder: "b", LeaseTTL: time.Minute})
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	other.Run(ctx)
	if other.Leader() {
		t.Error("a second instance took a held lease")
	}
	if _, err := other.Abort("x"); err != ErrNotLeader {
		t.Errorf("standby abort: %v", err)
	}
	d := r.waitState(r.submit("1").ID, store.Succeeded)
	if d.Hosts[0].State != store.StepDone {
		t.Error(d.Hosts[0])
	}
}
