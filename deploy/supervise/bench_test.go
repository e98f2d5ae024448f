package supervise

import (
	"context"
	"path/filepath"
	"syscall"
	"testing"
	"time"
)

// BenchmarkRestartAfterDeath measures the time from a program's death
// (SIGKILL) to its replacement process running. Target: under 100 ms.
func BenchmarkRestartAfterDeath(b *testing.B) {
	dir := b.TempDir()
	s, err := New(Options{StateDir: dir, LogDir: filepath.Join(dir, "logs"), Poll: time.Second})
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go s.Run(ctx)
	c := Config{Name: "p", Command: []string{"sleep", "1000"}, Autostart: true, StartSecs: 10 * time.Millisecond}
	if err := s.Add(ctx, c); err != nil {
		b.Fatal(err)
	}
	defer s.StopAll(context.Background())
	pid := waitPIDChange(b, s, 0)
	var total time.Duration
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		// Only a death in RUNNING is restarted at once (one in STARTING
		// backs off), so wait for it outside the measurement.
		b.StopTimer()
		for s.Status()[0].State != Running {
			time.Sleep(time.Millisecond)
		}
		b.StartTimer()
		began := time.Now()
		syscall.Kill(pid, syscall.SIGKILL)
		pid = waitPIDChange(b, s, pid)
		total += time.Since(began)
	}
	b.ReportMetric(float64(total.Microseconds())/float64(b.N)/1000, "ms/restart")
}

func waitPIDChange(b *testing.B, s *Supervisor, old int) int {
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		if st := s.Status()[0]; st.PID != 0 && st.PID != old {
			return st.PID
		}
		time.Sleep(100 * time.Microsecond)
	}
	b.Fatal("no restart within 5s")
	return 0
}
