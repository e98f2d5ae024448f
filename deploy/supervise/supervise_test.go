package supervise

import (
	"context"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

func newSupervisor(t *testing.T, stateDir string) *Supervisor {
	t.Helper()
	if stateDir == "" {
		stateDir = t.TempDir()
	}
	s, err := New(Options{StateDir: stateDir, LogDir: filepath.Join(stateDir, "logs"), Poll: 20 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	ran := make(chan struct{})
	go func() { s.Run(ctx); close(ran) }()
	t.Cleanup(func() {
		cancel()
		<-ran
		stopCtx, c2 := context.WithTimeout(context.Background(), 5*time.Second)
		defer c2()
		s.StopAll(stopCtx)
		s.Detach()
	})
	return s
}

func waitState(t *testing.T, s *Supervisor, name, state string, within time.Duration) Status {
	t.Helper()
	deadline := time.Now().Add(within)
	var st Status
	for time.Now().Before(deadline) {
		for _, x := range s.Status() {
			if x.Name == name {
				st = x
			}
		}
		if st.State == state {
			return st
		}
		time.Sleep(5 * time.Millisecond)
	}
	t.Fatalf("%s did not reach %s within %s: %+v", name, state, within, st)
	return st
}

func sh(script string) []string { return []string{"/bin/sh", "-c", script} }

func fast(name string, cmd []string) Config {
	return Config{Name: name, Command: cmd, Autostart: true, StartSecs: 100 * time.Millisecond,
		StartRetries: 2, BackoffMin: 10 * time.Millisecond, BackoffMax: 40 * time.Millisecond, StopWait: 300 * time.Millisecond}
}

func dead(pid int) bool {
	st, err := readProcStat(pid)
	return err != nil || st.State == 'Z' || st.State == 'X'
}

func TestCrashLoopBacksOffThenFatalThenRetries(t *testing.T) {
	s := newSupervisor(t, "")
	c := fast("crash", sh("echo boom >&2; exit 3"))
	c.FatalCooldown = 150 * time.Millisecond
	if err := s.Add(context.Background(), c); err != nil {
		t.Fatal(err)
	}
	waitState(t, s, "crash", Backoff, 2*time.Second)
	st := waitState(t, s, "crash", Fatal, 2*time.Second)
	if st.Starts != 3 || !strings.Contains(st.Message, "exited 3 before startsecs") {
		t.Fatalf("FATAL after %d starts, message %q; want 3 (1 + startretries 2)", st.Starts, st.Message)
	}
	// The cool-down ends FATAL: starts are tried again.
	deadline := time.Now().Add(3 * time.Second)
	for s.Status()[0].Starts <= 3 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if n := s.Status()[0].Starts; n <= 3 {
		t.Fatalf("no retry after the FATAL cool-down (starts %d)", n)
	}
	p, _ := s.LogPath("crash", "err")
	if b, _ := os.ReadFile(p); !strings.Contains(string(b), "boom") {
		t.Fatalf("stderr log %q", b)
	}
}

func TestStopEscalatesToSIGKILLAndKillsChildren(t *testing.T) {
	dir := t.TempDir()
	s := newSupervisor(t, "")
	// Ignores SIGTERM; one child in its group and one that left it.
	script := "trap '' TERM; sleep 100 & echo $! > " + dir + "/child; setsid sleep 101 & echo $! > " + dir + "/escaped; while :; do sleep 0.05; done"
	if err := s.Add(context.Background(), fast("stubborn", sh(script))); err != nil {
		t.Fatal(err)
	}
	st := waitState(t, s, "stubborn", Running, 2*time.Second)
	readPid := func(name string) int {
		b, _ := os.ReadFile(filepath.Join(dir, name))
		n, _ := strconv.Atoi(strings.TrimSpace(string(b)))
		return n
	}
	child, escaped := readPid("child"), readPid("escaped")
	if child == 0 || escaped == 0 || dead(child) || dead(escaped) {
		t.Fatalf("children not running: %d %d", child, escaped)
	}
	began := time.Now()
	if err := s.Stop(context.Background(), "stubborn"); err != nil {
		t.Fatal(err)
	}
	took := time.Since(began)
	if took < 250*time.Millisecond {
		t.Errorf("stop took %s: it should have waited stopwait (300ms) before SIGKILL", took)
	}
	after := waitState(t, s, "stubborn", Stopped, time.Second)
	if after.ExitCode == nil || *after.ExitCode != 128+int(syscall.SIGKILL) {
		t.Errorf("exit code %v, want SIGKILL's", after.ExitCode)
	}
	deadline := time.Now().Add(2 * time.Second)
	for (!dead(st.PID) || !dead(child) || !dead(escaped)) && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if !dead(st.PID) || !dead(child) || !dead(escaped) {
		t.Fatalf("left running: main %v child %v escaped %v", !dead(st.PID), !dead(child), !dead(escaped))
	}
}

func TestDeadProgramIsRestarted(t *testing.T) {
	s := newSupervisor(t, "")
	if err := s.Add(context.Background(), fast("web", []string{"sleep", "100"})); err != nil {
		t.Fatal(err)
	}
	st := waitState(t, s, "web", Running, 2*time.Second)
	syscall.Kill(st.PID, syscall.SIGKILL)
	deadline := time.Now().Add(2 * time.Second)
	for time.Now().Before(deadline) {
		now := s.Status()[0]
		if now.PID != 0 && now.PID != st.PID {
			if now.Starts != 2 {
				t.Fatalf("starts %d", now.Starts)
			}
			return
		}
		time.Sleep(5 * time.Millisecond)
	}
	t.Fatal("killed program was not restarted")
}

func TestAutorestartPolicies(t *testing.T) {
	for _, tc := range []struct {
		policy  string
		code    int
		restart bool
	}{
		{RestartOnFailure, 0, false},
		{RestartOnFailure, 1, true},
		{RestartAlways, 0, true},
		{RestartNever, 1, false},
	} {
		t.Run(tc.policy+"/"+strconv.Itoa(tc.code), func(t *testing.T) {
			s := newSupervisor(t, "")
			c := fast("p", sh("sleep 0.15; exit "+strconv.Itoa(tc.code)))
			c.Autorestart = tc.policy
			s.Add(context.Background(), c)
			waitState(t, s, "p", Running, 2*time.Second)
			time.Sleep(250 * time.Millisecond)
			st := s.Status()[0]
			if restarted := st.Starts > 1; restarted != tc.restart {
				t.Fatalf("restarted = %v (%+v)", restarted, st)
			}
		})
	}
}

func TestReadoptsAfterAgentRestart(t *testing.T) {
	stateDir := t.TempDir()
	first, err := New(Options{StateDir: stateDir, LogDir: filepath.Join(stateDir, "logs"), Poll: 20 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	c := fast("web", sh("echo started >> "+stateDir+"/starts; exec sleep 100"))
	first.Add(context.Background(), c)
	st := waitState(t, first, "web", Running, 2*time.Second)
	first.Detach() // the agent goes away; the program does not

	second := newSupervisor(t, stateDir)
	second.Add(context.Background(), c)
	again := waitState(t, second, "web", Running, time.Second)
	if again.PID != st.PID || !again.Adopted || again.Starts != 0 {
		t.Fatalf("not re-adopted: before pid %d, after %+v", st.PID, again)
	}
	// Still supervised: its death restarts it.
	syscall.Kill(st.PID, syscall.SIGKILL)
	deadline := time.Now().Add(2 * time.Second)
	for time.Now().Before(deadline) {
		if now := second.Status()[0]; now.PID != 0 && now.PID != st.PID && !now.Adopted {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatalf("adopted program not restarted after death: %+v", second.Status()[0])
}

func TestChangedCommandIsNotAdopted(t *testing.T) {
	stateDir := t.TempDir()
	first, _ := New(Options{StateDir: stateDir, LogDir: stateDir})
	first.Add(context.Background(), fast("web", []string{"sleep", "100"}))
	st := waitState(t, first, "web", Running, 2*time.Second)
	first.Detach()
	defer syscall.Kill(st.PID, syscall.SIGKILL)
	second := newSupervisor(t, stateDir)
	second.Add(context.Background(), fast("web", []string{"sleep", "200"}))
	if now := waitState(t, second, "web", Running, 2*time.Second); now.PID == st.PID {
		t.Fatal("a process running another command was adopted")
	}
}

func TestBackoffDelay(t *testing.T) {
	c := Config{BackoffMin: time.Second, BackoffMax: 10 * time.Second}
	mid := func() float64 { return 0.5 }
	for n, want := range map[int]time.Duration{1: time.Second, 2: 2 * time.Second, 3: 4 * time.Second, 4: 8 * time.Second, 5: 10 * time.Second, 30: 10 * time.Second} {
		if got := BackoffDelay(c, n, mid); got != want {
			t.Errorf("n=%d: %s, want %s", n, got, want)
		}
	}
	c.Jitter = 0.2
	if lo, hi := BackoffDelay(c, 1, func() float64 { return 0 }), BackoffDelay(c, 1, func() float64 { return 1 }); lo != 800*time.Millisecond || hi != 1200*time.Millisecond {
		t.Errorf("jitter bounds %s %s", lo, hi)
	}
}

func TestLogRotation(t *testing.T) {
	s := newSupervisor(t, "")
	s.Add(context.Background(), fast("chatty", sh("while :; do echo 0123456789012345678901234567890123456789; sleep 0.001; done")))
	waitState(t, s, "chatty", Running, 2*time.Second)
	p, _ := s.get("chatty")
	path, _ := s.LogPath("chatty", "out")
	deadline := time.Now().Add(2 * time.Second)
	for st, _ := os.Stat(path); (st == nil || st.Size() < 2000) && time.Now().Before(deadline); st, _ = os.Stat(path) {
		time.Sleep(10 * time.Millisecond)
	}
	p.rotateLogs(1000, 2)
	p.rotateLogs(0, 2)
	if _, err := os.Stat(path + ".1"); err != nil {
		t.Fatal(err)
	}
	st, _ := os.Stat(path)
	for deadline := time.Now().Add(2 * time.Second); st.Size() == 0 && time.Now().Before(deadline); st, _ = os.Stat(path) {
		time.Sleep(10 * time.Millisecond)
	}
	if st.Size() == 0 || st.Size() > 1<<20 {
		t.Fatalf("after truncation the log holds %d bytes; the program should go on writing", st.Size())
	}
}

func TestParseProcStat(t *testing.T) {
	st, err := parseProcStat([]byte("123 (a b) c)) S 1 123 123 0 -1 4194560 1 0 0 0 0 0 0 0 20 0 1 0 98765 1000 10 100"))
	if err != nil || st.PID != 123 || st.PPID != 1 || st.PGID != 123 || st.StartTicks != 98765 || st.State != 'S' {
		t.Fatalf("%+v %v", st, err)
	}
	for _, bad := range []string{"", "1 (x", "x (y) S 1", "1 (y) S a b c d e f g h i j k l m n o p q r s"} {
		if _, err := parseProcStat([]byte(bad)); err == nil {
			t.Errorf("%q parsed", bad)
		}
	}
	self, err := readProcStat(os.Getpid())
	if err != nil || self.PID != os.Getpid() || self.StartTicks == 0 {
		t.Fatalf("self: %+v %v", self, err)
	}
}

func FuzzParseProcStat(f *testing.F) {
	f.Add([]byte("1 (init) S 0 1 1 0 -1 4194560 1 0 0 0 0 0 0 0 20 0 1 0 5 1000 10 100"))
	f.Fuzz(func(t *testing.T, b []byte) { _, _ = parseProcStat(b) })
}

func TestReplaceStartsNewBeforeStoppingOld(t *testing.T) {
	s := newSupervisor(t, "")
	ctx := context.Background()
	v1 := fast("web", []string{"sleep", "100"})
	v1.StartSecs = 200 * time.Millisecond
	s.Add(ctx, v1)
	old := waitState(t, s, "web", Running, 2*time.Second)

	// A replacement that cannot start leaves the old process serving.
	broken := v1
	broken.Command = sh("exit 1")
	if err := s.Replace(ctx, broken); err == nil || !strings.Contains(err.Error(), "previous process kept") {
		t.Fatalf("broken replacement: %v", err)
	}
	if st := s.Status()[0]; st.PID != old.PID || st.State != Running || dead(old.PID) {
		t.Fatalf("after a failed replacement: %+v", st)
	}

	v2 := v1
	v2.Env = map[string]string{"V": "2"}
	done := make(chan error, 1)
	go func() { done <- s.Replace(ctx, v2) }()
	// While the new one starts, the old one still runs.
	time.Sleep(100 * time.Millisecond)
	mid := s.Status()[0]
	if mid.State != Starting || mid.PID == old.PID || dead(old.PID) {
		t.Fatalf("during the replacement: %+v, old alive %v", mid, !dead(old.PID))
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(2 * time.Second)
	for !dead(old.PID) && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if !dead(old.PID) {
		t.Fatal("old process not stopped after the replacement ran")
	}
	if st := s.Status()[0]; st.State != Running || st.PID != mid.PID {
		t.Fatalf("after: %+v", st)
	}
}

func TestProgramRunsAsUser(t *testing.T) {
	s := newSupervisor(t, "")
	bad := fast("ghost", []string{"true"})
	bad.User = "no-such-user-here"
	s.Add(context.Background(), bad)
	if st := waitState(t, s, "ghost", Backoff, 2*time.Second); !strings.Contains(st.Message, "no-such-user-here") {
		t.Fatalf("unknown user: %+v", st)
	}
	if os.Geteuid() != 0 {
		t.Skip("switching users needs root")
	}
	c := fast("asnobody", sh("id -u; exec sleep 100"))
	c.User = "nobody"
	s.Add(context.Background(), c)
	waitState(t, s, "asnobody", Running, 2*time.Second)
	path, _ := s.LogPath("asnobody", "out")
	if b, _ := os.ReadFile(path); strings.TrimSpace(string(b)) != "65534" {
		t.Fatalf("ran as uid %q, want nobody's 65534", b)
	}
}
