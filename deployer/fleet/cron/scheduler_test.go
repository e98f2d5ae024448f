package cron

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/VictoriaMetrics/metrics"
)

// fakeRunner records the runs it is asked for and answers one result per
// host of a fixed list.
type fakeRunner struct {
	hosts []string
	calls chan call
	block chan struct{} // when set, each run waits for it to be closed
	mu    sync.Mutex
	fail  map[string]bool
}

type call struct {
	job string
	seq uint64
	at  []string
}

func (f *fakeRunner) RunJob(ctx context.Context, j Job, seq uint64) ([]HostResult, error) {
	picked, err := Select(j.Target, f.hosts, seq)
	if err != nil {
		return nil, err
	}
	if f.block != nil {
		select {
		case <-f.block:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	f.calls <- call{job: j.ID, seq: seq, at: picked}
	var out []HostResult
	for _, h := range picked {
		f.mu.Lock()
		bad := f.fail[h]
		f.mu.Unlock()
		if bad {
			out = append(out, HostResult{Host: h, ExitCode: 3, Output: "boom\n", Bytes: 5})
		} else {
			out = append(out, HostResult{Host: h, ExitCode: 0, Output: "ok " + h + "\n", Bytes: 6})
		}
	}
	return out, nil
}

func newTestScheduler(t *testing.T, dir string, clock Clock, runner Runner) (*Scheduler, *Store) {
	t.Helper()
	st, err := OpenStore(filepath.Join(dir, "cron.db"), 3)
	if err != nil {
		t.Fatal(err)
	}
	s, err := New(Options{Store: st, Runner: runner, Clock: clock})
	if err != nil {
		t.Fatal(err)
	}
	return s, st
}

func waitCall(t *testing.T, r *fakeRunner) call {
	t.Helper()
	select {
	case c := <-r.calls:
		return c
	case <-time.After(5 * time.Second):
		t.Fatal("no run within 5s")
		return call{}
	}
}

func noCall(t *testing.T, r *fakeRunner) {
	t.Helper()
	select {
	case c := <-r.calls:
		t.Fatalf("unexpected run %+v", c)
	case <-time.After(50 * time.Millisecond):
	}
}

// waitRuns polls the store until the job has n recorded runs.
func waitRuns(t *testing.T, s *Scheduler, id string, n int) []Run {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		runs, err := s.Runs(id, 0)
		if err != nil {
			t.Fatal(err)
		}
		if len(runs) >= n {
			return runs
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d runs recorded, want %d", len(runs), n)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestSchedulerFiresOnScheduleWithFakeClock(t *testing.T) {
	start := time.Date(2026, 11, 22, 1, 2, 30, 0, time.UTC)
	clock := NewFakeClock(start)
	runner := &fakeRunner{hosts: []string{"h1", "h2", "h3"}, calls: make(chan call, 10), fail: map[string]bool{"h3": true}}
	dir := t.TempDir()
	s, st := newTestScheduler(t, dir, clock, runner)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- s.Run(ctx) }()

	job, err := s.Add(Job{App: "web", Env: "prod", Schedule: "*/5 * * * *", Target: "all", Name: "df", Args: []string{"/"}, CreatedBy: "alice"})
	if err != nil {
		t.Fatal(err)
	}
	if job.ID != "c1" || !job.Created.Equal(start) {
		t.Fatalf("added %+v", job)
	}
	if v, _ := s.Job(job.ID); !v.Next.Equal(time.Date(2026, 11, 22, 1, 5, 0, 0, time.UTC)) {
		t.Fatalf("next = %s", v.Next)
	}

	clock.Set(time.Date(2026, 11, 22, 1, 4, 59, 0, time.UTC))
	noCall(t, runner)
	clock.Set(time.Date(2026, 11, 22, 1, 5, 0, 0, time.UTC))
	if c := waitCall(t, runner); c.seq != 1 || !slices.Equal(c.at, []string{"h1", "h2", "h3"}) {
		t.Fatalf("first run %+v", c)
	}
	runs := waitRuns(t, s, job.ID, 1)
	r := runs[0]
	if r.Trigger != "schedule" || !r.Scheduled.Equal(time.Date(2026, 11, 22, 1, 5, 0, 0, time.UTC)) || len(r.Hosts) != 3 || r.OK() {
		t.Fatalf("recorded %+v", r)
	}
	if r.Hosts[2].ExitCode != 3 || r.Hosts[0].Output != "ok h1\n" {
		t.Fatalf("host results %+v", r.Hosts)
	}

	// A stall over several fire times runs once, not once per missed time.
	waitIdle(t, s, job.ID, 1)
	clock.Set(time.Date(2026, 11, 22, 1, 21, 0, 0, time.UTC))
	if c := waitCall(t, runner); c.seq != 2 {
		t.Fatalf("second run %+v", c)
	}
	noCall(t, runner)
	waitIdle(t, s, job.ID, 2)
	if v, _ := s.Job(job.ID); !v.Next.Equal(time.Date(2026, 11, 22, 1, 25, 0, 0, time.UTC)) || v.Last == nil || v.Last.Seq != 2 {
		t.Fatalf("after the stall: %+v", v)
	}

	// Only KeepRuns (3) runs are kept, newest first.
	for seq := uint64(3); seq <= 5; seq++ {
		waitIdle(t, s, job.ID, seq-1)
		clock.Advance(5 * time.Minute)
		waitCall(t, runner)
	}
	waitIdle(t, s, job.ID, 5)
	runs, _ = s.Runs(job.ID, 0)
	if len(runs) != 3 || runs[0].Seq != 5 || runs[2].Seq != 3 {
		t.Fatalf("kept runs %v", seqs(runs))
	}

	// Jobs survive a restart of the scheduler (a new one on the same file).
	cancel()
	<-done
	st.Close()
	s2, st2 := newTestScheduler(t, dir, clock, runner)
	defer st2.Close()
	jobs, err := s2.Jobs("web")
	if err != nil || len(jobs) != 1 || jobs[0].CreatedBy != "alice" || jobs[0].Last.Seq != 5 {
		t.Fatalf("after reopening: %+v %v", jobs, err)
	}
	if others, _ := s2.Jobs("api"); len(others) != 0 {
		t.Fatalf("jobs of another app: %+v", others)
	}
	if err := s2.Remove(job.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := s2.Runs(job.ID, 0); !errors.Is(err, ErrNotFound) {
		t.Fatalf("runs of a removed job: %v", err)
	}
	if err := s2.Remove(job.ID); !errors.Is(err, ErrNotFound) {
		t.Fatalf("second remove: %v", err)
	}
}

// waitIdle waits until the job's run seq is recorded and the job is not running.
func waitIdle(t *testing.T, s *Scheduler, id string, seq uint64) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		v, err := s.Job(id)
		if err == nil && !v.Running && v.Last != nil && v.Last.Seq == seq {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("job %s: %+v %v; want run %d recorded and idle", id, v, err, seq)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func seqs(runs []Run) []uint64 {
	var out []uint64
	for _, r := range runs {
		out = append(out, r.Seq)
	}
	return out
}

func TestSchedulerSkipsWhileRunningAndRunNow(t *testing.T) {
	clock := NewFakeClock(time.Date(2026, 11, 22, 1, 0, 0, 0, time.UTC))
	runner := &fakeRunner{hosts: []string{"h1", "h2", "h3"}, calls: make(chan call, 10), block: make(chan struct{})}
	st, err := OpenStore(filepath.Join(t.TempDir(), "cron.db"), 0)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	set := metrics.NewSet()
	s, err := New(Options{Store: st, Runner: runner, Clock: clock, Metrics: set})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- s.Run(ctx) }()
	defer func() { cancel(); <-done }()

	job, err := s.Add(Job{App: "web", Schedule: "* * * * *", Target: "one", Name: "uptime"})
	if err != nil {
		t.Fatal(err)
	}
	clock.Advance(time.Minute) // fires; the run blocks
	deadline := time.Now().Add(5 * time.Second)
	for v, _ := s.Job(job.ID); !v.Running; v, _ = s.Job(job.ID) {
		if time.Now().After(deadline) {
			t.Fatal("the job never started")
		}
		time.Sleep(5 * time.Millisecond)
	}
	if _, err := s.RunNow(context.Background(), job.ID); !errors.Is(err, ErrBusy) {
		t.Fatalf("RunNow while running: %v", err)
	}
	clock.Advance(time.Minute) // due again while still running: skipped
	time.Sleep(20 * time.Millisecond)
	close(runner.block)
	if c := waitCall(t, runner); c.seq != 1 || !slices.Equal(c.at, []string{"h1"}) {
		t.Fatalf("first run %+v", c)
	}
	noCall(t, runner)
	waitIdle(t, s, job.ID, 1)
	var text strings.Builder
	set.WritePrometheus(&text)
	for _, want := range []string{"opskit_deployer_cron_skipped_total 1\n", `opskit_deployer_cron_runs_total{result="ok"} 1` + "\n", `opskit_deployer_cron_runs_total{result="failed"} 0` + "\n"} {
		if !strings.Contains(text.String(), want) {
			t.Errorf("metrics lack %q:\n%s", want, text.String())
		}
	}
	// "one" takes the hosts in turn.
	r, err := s.RunNow(context.Background(), job.ID)
	if err != nil || r.Trigger != "manual" || r.Seq != 2 || len(r.Hosts) != 1 || r.Hosts[0].Host != "h2" {
		t.Fatalf("RunNow: %+v %v", r, err)
	}
	waitCall(t, runner)
	if _, err := s.RunNow(context.Background(), "c99"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("RunNow of an unknown job: %v", err)
	}
}

func TestAddRejects(t *testing.T) {
	clock := NewFakeClock(time.Date(2026, 11, 22, 1, 0, 0, 0, time.UTC))
	st, err := OpenStore(filepath.Join(t.TempDir(), "cron.db"), 0)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	s, err := New(Options{Store: st, Runner: &fakeRunner{}, Clock: clock, Check: func(j Job) error {
		if j.Name == "rm" {
			return errors.New("not allowed")
		}
		return nil
	}})
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		job  Job
		want string
	}{
		{Job{App: "", Schedule: "* * * * *", Name: "df"}, "app"},
		{Job{App: "../x", Schedule: "* * * * *", Name: "df"}, "app"},
		{Job{App: "web", Env: "a b", Schedule: "* * * * *", Name: "df"}, "env"},
		{Job{App: "web", Schedule: "* * * *", Name: "df"}, "fields"},
		{Job{App: "web", Schedule: "* * * * *"}, "command name"},
		{Job{App: "web", Schedule: "* * * * *", Name: "df", Target: "some"}, "target"},
		{Job{App: "web", Schedule: "* * * * *", Name: "df", Target: "batch:0"}, "target"},
		{Job{App: "web", Schedule: "* * * * *", Name: "rm"}, "not allowed"},
	}
	for _, c := range cases {
		if _, err := s.Add(c.job); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("Add(%+v) = %v, want an error with %q", c.job, err, c.want)
		}
	}
	if jobs, _ := s.Jobs(""); len(jobs) != 0 {
		t.Fatalf("rejected jobs were stored: %+v", jobs)
	}
	j, err := s.Add(Job{App: "web", Schedule: "@hourly", Name: "df"})
	if err != nil || j.Target != "all" || j.Args == nil {
		t.Fatalf("defaults: %+v %v", j, err)
	}
}

func TestSelect(t *testing.T) {
	hosts := []string{"a", "b", "c", "d", "e"}
	cases := []struct {
		target string
		seq    uint64
		want   string
	}{
		{"all", 1, "a b c d e"},
		{"all", 7, "a b c d e"},
		{"one", 1, "a"},
		{"one", 2, "b"},
		{"one", 6, "a"},
		{"batch:2", 1, "a b"},
		{"batch:2", 2, "c d"},
		{"batch:2", 3, "e a"},
		{"batch:2", 4, "b c"},
		{"batch:5", 2, "a b c d e"},
		{"batch:9", 1, "a b c d e"},
		{"one", 0, "a"},
	}
	for _, c := range cases {
		got, err := Select(c.target, hosts, c.seq)
		if err != nil || strings.Join(got, " ") != c.want {
			t.Errorf("Select(%s, run %d) = %v %v, want %s", c.target, c.seq, got, err, c.want)
		}
	}
	if _, err := Select("batch:x", hosts, 1); err == nil {
		t.Error("batch:x accepted")
	}
	if got, _ := Select("one", nil, 1); len(got) != 0 {
		t.Errorf("no hosts: %v", got)
	}
}

func ExampleSchedule_Next() {
	s, _ := Parse("30 2 * * mon")
	at := time.Date(2026, 11, 22, 0, 0, 0, 0, time.UTC) // a Sunday
	for range 2 {
		at = s.Next(at)
		fmt.Println(at.Format("Mon 2006-01-02 15:04"))
	}
	// Output:
	// Mon 2026-11-23 02:30
	// Mon 2026-11-30 02:30
}

func TestSchedulerReadsSchedulesInItsTimeZone(t *testing.T) {
	loc, err := time.LoadLocation("Asia/Kolkata")
	if err != nil {
		t.Skip("no tzdata:", err)
	}
	clock := NewFakeClock(time.Date(2026, 11, 22, 3, 0, 0, 0, time.UTC)) // 08:30 in Kolkata
	st, err := OpenStore(filepath.Join(t.TempDir(), "cron.db"), 0)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	s, err := New(Options{Store: st, Runner: &fakeRunner{}, Clock: clock, Location: loc})
	if err != nil {
		t.Fatal(err)
	}
	j, err := s.Add(Job{App: "web", Schedule: "0 9 * * *", Name: "df"})
	if err != nil {
		t.Fatal(err)
	}
	v, _ := s.Job(j.ID)
	if want := time.Date(2026, 11, 22, 3, 30, 0, 0, time.UTC); !v.Next.Equal(want) {
		t.Fatalf("next = %s, want %s", v.Next, want)
	}
}
