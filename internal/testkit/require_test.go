package testkit

import (
	"fmt"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
)

// recordingTB stands in for testing.TB so a test can observe what
// RequireBinary does to the test that calls it. Fatalf and Skipf end the
// calling goroutine, as the real ones do.
type recordingTB struct {
	testing.TB
	failed  bool
	skipped bool
	message string
}

func (r *recordingTB) Helper() {}

func (r *recordingTB) Fatalf(format string, args ...any) {
	r.failed = true
	r.message = fmt.Sprintf(format, args...)
	runtime.Goexit()
}

func (r *recordingTB) Skipf(format string, args ...any) {
	r.skipped = true
	r.message = fmt.Sprintf(format, args...)
	runtime.Goexit()
}

// runRecorded calls fn with a recordingTB on its own goroutine and returns
// what fn did to it.
func runRecorded(t *testing.T, fn func(tb testing.TB)) *recordingTB {
	t.Helper()
	rec := &recordingTB{TB: t}
	done := make(chan struct{})
	go func() {
		defer close(done)
		fn(rec)
	}()
	<-done
	return rec
}

func TestRequireBinaryMissing(t *testing.T) {
	tests := []struct {
		ci       string
		wantFail bool
	}{
		{ci: "true", wantFail: true},
		{ci: "1", wantFail: true},
		{ci: "TRUE", wantFail: true},
		{ci: "", wantFail: false},
		{ci: "false", wantFail: false},
		{ci: "0", wantFail: false},
	}
	for _, tt := range tests {
		t.Run("CI="+tt.ci, func(t *testing.T) {
			t.Setenv("CI", tt.ci)
			rec := runRecorded(t, func(tb testing.TB) {
				RequireBinary(tb, "opskit-no-such-program", "opskit-no-such-package")
			})
			if rec.failed != tt.wantFail || rec.skipped == tt.wantFail {
				t.Fatalf("failed=%v skipped=%v, want failed=%v skipped=%v",
					rec.failed, rec.skipped, tt.wantFail, !tt.wantFail)
			}
			const want = "opskit-no-such-program not found: apt-get install opskit-no-such-package (make test installs it)"
			if rec.message != want {
				t.Fatalf("message %q, want %q", rec.message, want)
			}
		})
	}
}

func TestRequireBinaryFound(t *testing.T) {
	dir := t.TempDir()
	program := filepath.Join(dir, "opskit-test-program")
	if err := os.WriteFile(program, []byte("#!/bin/sh\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	t.Setenv("PATH", dir)
	t.Setenv("CI", "true")

	var got string
	rec := runRecorded(t, func(tb testing.TB) {
		got = RequireBinary(tb, "opskit-test-program", "unused")
	})
	if rec.failed || rec.skipped {
		t.Fatalf("RequireBinary ended the test: %s", rec.message)
	}
	if got != program {
		t.Fatalf("RequireBinary = %q, want %q", got, program)
	}
}

func TestFindBinaryFallsBackToExtraDirs(t *testing.T) {
	sbin := t.TempDir()
	program := filepath.Join(sbin, "opskit-test-daemon")
	if err := os.WriteFile(program, []byte("#!/bin/sh\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	notExecutable := filepath.Join(sbin, "opskit-test-data")
	if err := os.WriteFile(notExecutable, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Setenv("PATH", t.TempDir())

	tests := []struct {
		name    string
		want    string
		wantErr bool
	}{
		{name: "opskit-test-daemon", want: program},
		{name: "opskit-test-data", wantErr: true},
		{name: "opskit-test-absent", wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := findBinary(tt.name, []string{t.TempDir(), sbin})
			if (err != nil) != tt.wantErr || got != tt.want {
				t.Fatalf("findBinary = %q, %v; want %q, error %v", got, err, tt.want, tt.wantErr)
			}
		})
	}
}

func TestFreeAddr(t *testing.T) {
	addr := FreeAddr(t)
	if !strings.HasPrefix(addr, "127.0.0.1:") {
		t.Fatalf("FreeAddr = %q, want a 127.0.0.1 address", addr)
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatalf("cannot listen on FreeAddr's %s: %v", addr, err)
	}
	ln.Close()

	port := FreePort(t)
	if port <= 0 || port > 65535 {
		t.Fatalf("FreePort = %d, want 1..65535", port)
	}
}
