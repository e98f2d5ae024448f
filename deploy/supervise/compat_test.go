package supervise

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/opskit/opskit/internal/testkit"
)

// TestSameFatalAsSupervisord runs one crash-looping program definition
// under Debian's supervisord and under this package: with startretries=2
// both spawn it 3 times and then give up in FATAL. startsecs is long so
// that a loaded machine cannot delay supervisord into calling a start good.
func TestSameFatalAsSupervisord(t *testing.T) {
	bin := testkit.RequireBinary(t, "supervisord", "supervisor")
	dir := t.TempDir()
	conf := filepath.Join(dir, "supervisord.conf")
	os.WriteFile(conf, []byte(`[supervisord]
nodaemon=true
logfile=`+dir+`/supervisord.log
pidfile=`+dir+`/supervisord.pid
childlogdir=`+dir+`

[program:crash]
command=/bin/sh -c "echo x >> `+dir+`/spawns.supervisord; exit 1"
startsecs=3
startretries=2
autorestart=unexpected
`), 0o644)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, "-c", conf)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Wait()
	defer cmd.Process.Kill()

	s := newSupervisor(t, "")
	c := Config{Name: "crash", Command: sh("echo x >> " + dir + "/spawns.ours; exit 1"), Autostart: true,
		StartSecs: 3 * time.Second, StartRetries: 2, BackoffMin: time.Second, BackoffMax: 4 * time.Second, Jitter: 0.01}
	if err := s.Add(context.Background(), c); err != nil {
		t.Fatal(err)
	}
	waitState(t, s, "crash", Fatal, 10*time.Second)

	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		b, _ := os.ReadFile(filepath.Join(dir, "supervisord.log"))
		if strings.Contains(string(b), "crash entered FATAL state") {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	count := func(name string) int {
		b, _ := os.ReadFile(filepath.Join(dir, name))
		return strings.Count(string(b), "x")
	}
	theirs, ours := count("spawns.supervisord"), count("spawns.ours")
	if theirs != 3 || ours != theirs {
		b, _ := os.ReadFile(filepath.Join(dir, "supervisord.log"))
		t.Fatalf("spawns before FATAL: supervisord %d, ours %d; want 3 each\n%s", theirs, ours, b)
	}
}
