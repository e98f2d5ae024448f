package cron

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/VictoriaMetrics/metrics"
)

// Runner runs a job's command on the hosts its target picks for run number
// seq and returns each host's result.
type Runner interface {
	RunJob(ctx context.Context, j Job, seq uint64) ([]HostResult, error)
}

// Options configure a Scheduler.
type Options struct {
	Store  *Store
	Runner Runner
	// Clock defaults to the system clock.
	Clock Clock
	Log   *slog.Logger
	// Metrics, when set, gets opskit_deployer_cron_runs_total{result} and
	// opskit_deployer_cron_skipped_total.
	Metrics *metrics.Set
	// RunTimeout bounds one run on all its hosts (default 10m).
	RunTimeout time.Duration
	// Check, when set, vets a job before it is added (e.g. the deployer's
	// own allowlist of command names).
	Check func(Job) error
	// Location is the time zone schedules are read in (default UTC).
	Location *time.Location
}

// Scheduler fires jobs on their schedules. Schedules are read in
// Options.Location (UTC by default). A job whose previous
// run is still going when it is due again skips that turn (logged and
// counted); times missed while the deployer was down are not caught up:
// after a restart each job next fires at its first time after the start.
type Scheduler struct {
	opts Options

	mu      sync.Mutex
	jobs    map[string]scheduled
	running map[string]bool
	changed chan struct{}
	wg      sync.WaitGroup
}

type scheduled struct {
	job      Job
	schedule Schedule
	next     time.Time
}

// ErrBusy is returned by RunNow while the job is running.
var ErrBusy = errors.New("the job is running")

// ErrInvalid is wrapped when Add refuses a job.
var ErrInvalid = errors.New("invalid job")

// New loads the stored jobs.
func New(opts Options) (*Scheduler, error) {
	if opts.Clock == nil {
		opts.Clock = RealClock{}
	}
	if opts.Log == nil {
		opts.Log = slog.New(slog.DiscardHandler)
	}
	if opts.RunTimeout <= 0 {
		opts.RunTimeout = 10 * time.Minute
	}
	if opts.Location == nil {
		opts.Location = time.UTC
	}
	if opts.Metrics != nil {
		// Shown from the start, at 0.
		opts.Metrics.GetOrCreateCounter("opskit_deployer_cron_skipped_total")
		opts.Metrics.GetOrCreateCounter(`opskit_deployer_cron_runs_total{result="ok"}`)
		opts.Metrics.GetOrCreateCounter(`opskit_deployer_cron_runs_total{result="failed"}`)
	}
	s := &Scheduler{opts: opts, jobs: map[string]scheduled{}, running: map[string]bool{}, changed: make(chan struct{}, 1)}
	jobs, err := opts.Store.Jobs()
	if err != nil {
		return nil, err
	}
	now := s.now()
	for _, j := range jobs {
		sched, err := Parse(j.Schedule)
		if err != nil {
			opts.Log.Error("cron job with a bad schedule is not run", "job", j.ID, "err", err)
			continue
		}
		s.jobs[j.ID] = scheduled{job: j, schedule: sched, next: sched.Next(now)}
	}
	return s, nil
}

// Add validates and stores a new job; it first fires at its schedule's
// first time after now.
func (s *Scheduler) Add(j Job) (Job, error) {
	sched, err := j.Validate()
	if err != nil {
		return Job{}, fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	if s.opts.Check != nil {
		if err := s.opts.Check(j); err != nil {
			return Job{}, fmt.Errorf("%w: %w", ErrInvalid, err)
		}
	}
	j.Created = s.opts.Clock.Now().UTC()
	j, err = s.opts.Store.Add(j)
	if err != nil {
		return Job{}, err
	}
	s.mu.Lock()
	s.jobs[j.ID] = scheduled{job: j, schedule: sched, next: sched.Next(s.now())}
	s.mu.Unlock()
	s.wake()
	return j, nil
}

// Remove deletes a job and its runs. A run in progress finishes but is
// not recorded.
func (s *Scheduler) Remove(id string) error {
	if err := s.opts.Store.Remove(id); err != nil {
		return err
	}
	s.mu.Lock()
	delete(s.jobs, id)
	s.mu.Unlock()
	s.wake()
	return nil
}

// JobView is a job with its schedule's state.
type JobView struct {
	Job
	Next    time.Time `json:"next,omitzero"`
	Running bool      `json:"running"`
	// Last is the newest recorded run, if any.
	Last *Run `json:"last,omitempty"`
}

// Jobs lists the jobs (of app, or all when app is "") ordered by id.
func (s *Scheduler) Jobs(app string) ([]JobView, error) {
	jobs, err := s.opts.Store.Jobs()
	if err != nil {
		return nil, err
	}
	out := []JobView{}
	for _, j := range jobs {
		if app != "" && j.App != app {
			continue
		}
		v, err := s.view(j)
		if err != nil {
			return nil, err
		}
		out = append(out, v)
	}
	return out, nil
}

// Job returns one job's view.
func (s *Scheduler) Job(id string) (JobView, error) {
	j, err := s.opts.Store.Job(id)
	if err != nil {
		return JobView{}, err
	}
	return s.view(j)
}

func (s *Scheduler) view(j Job) (JobView, error) {
	s.mu.Lock()
	v := JobView{Job: j, Next: s.jobs[j.ID].next, Running: s.running[j.ID]}
	s.mu.Unlock()
	runs, err := s.opts.Store.Runs(j.ID, 1)
	if err != nil {
		return JobView{}, err
	}
	if len(runs) > 0 {
		v.Last = &runs[0]
	}
	return v, nil
}

// Runs returns a job's newest runs, newest first.
func (s *Scheduler) Runs(id string, limit int) ([]Run, error) {
	return s.opts.Store.Runs(id, limit)
}

// RunNow runs a job at once, outside its schedule, and returns the
// recorded run.
func (s *Scheduler) RunNow(ctx context.Context, id string) (Run, error) {
	j, err := s.opts.Store.Job(id)
	if err != nil {
		return Run{}, err
	}
	if !s.claim(id) {
		return Run{}, fmt.Errorf("%s: %w", id, ErrBusy)
	}
	s.wg.Add(1)
	defer s.wg.Done()
	defer s.release(id)
	return s.execute(ctx, j, "manual", time.Time{})
}

// now is the clock's time in the schedules' time zone.
func (s *Scheduler) now() time.Time { return s.opts.Clock.Now().In(s.opts.Location) }

func (s *Scheduler) claim(id string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.running[id] {
		return false
	}
	s.running[id] = true
	return true
}

func (s *Scheduler) release(id string) {
	s.mu.Lock()
	delete(s.running, id)
	s.mu.Unlock()
}

func (s *Scheduler) wake() {
	select {
	case s.changed <- struct{}{}:
	default:
	}
}

// Run fires due jobs until ctx ends, then waits for the runs in progress
// (which see ctx end).
func (s *Scheduler) Run(ctx context.Context) error {
	defer s.wg.Wait()
	for {
		now := s.now()
		var wakeAt time.Time
		s.mu.Lock()
		for id, sj := range s.jobs {
			if sj.next.IsZero() {
				continue
			}
			if !sj.next.After(now) {
				s.fire(ctx, sj)
				sj.next = sj.schedule.Next(now)
				s.jobs[id] = sj
			}
			if wakeAt.IsZero() || sj.next.Before(wakeAt) {
				wakeAt = sj.next
			}
		}
		s.mu.Unlock()
		var timer <-chan time.Time
		if !wakeAt.IsZero() {
			timer = s.opts.Clock.At(wakeAt)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-s.changed:
		case <-timer:
		}
	}
}

// fire starts a scheduled run unless the job's previous one is still
// going. s.mu is held.
func (s *Scheduler) fire(ctx context.Context, sj scheduled) {
	if s.running[sj.job.ID] {
		s.opts.Log.Warn("cron job skipped: its previous run is still going", "job", sj.job.ID, "due", sj.next)
		if s.opts.Metrics != nil {
			s.opts.Metrics.GetOrCreateCounter("opskit_deployer_cron_skipped_total").Inc()
		}
		return
	}
	s.running[sj.job.ID] = true
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		defer s.release(sj.job.ID)
		if _, err := s.execute(ctx, sj.job, "schedule", sj.next); err != nil {
			s.opts.Log.Error("cron run", "job", sj.job.ID, "err", err)
		}
	}()
}

// execute runs the job once and records the run.
func (s *Scheduler) execute(ctx context.Context, j Job, trigger string, due time.Time) (Run, error) {
	seq, err := s.opts.Store.NextRun(j.ID)
	if err != nil {
		return Run{}, err
	}
	ctx, cancel := context.WithTimeout(ctx, s.opts.RunTimeout)
	defer cancel()
	r := Run{Job: j.ID, Seq: seq, Trigger: trigger, Scheduled: due.UTC(), Start: s.opts.Clock.Now().UTC()}
	hosts, err := s.opts.Runner.RunJob(ctx, j, seq)
	r.End = s.opts.Clock.Now().UTC()
	r.Hosts = hosts
	if r.Hosts == nil {
		r.Hosts = []HostResult{}
	}
	if err != nil {
		r.Error = err.Error()
	}
	result := "ok"
	if !r.OK() {
		result = "failed"
	}
	if s.opts.Metrics != nil {
		s.opts.Metrics.GetOrCreateCounter(`opskit_deployer_cron_runs_total{result="` + result + `"}`).Inc()
	}
	s.opts.Log.Info("cron run", "job", j.ID, "seq", seq, "trigger", trigger, "hosts", len(r.Hosts), "result", result, "err", r.Error)
	if err := s.opts.Store.SaveRun(r); err != nil {
		if errors.Is(err, ErrNotFound) {
			return r, nil // removed while it ran
		}
		return r, fmt.Errorf("record run %s/%d: %w", j.ID, seq, err)
	}
	return r, nil
}
