package main

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/opskit/opskit/internal/testkit"
)

func TestParseRRDStatus(t *testing.T) {
	tests := []struct {
		line    string
		n       int
		msg     string
		wantErr bool
	}{
		{"0 Go ahead.  End with dot '.' on its own line.", 0, "Go ahead.  End with dot '.' on its own line.", false},
		{"9 Statistics follow", 9, "Statistics follow", false},
		{"-1 No such file: x.rrd", -1, "No such file: x.rrd", false},
		{"2", 2, "", false},
		{"", 0, "", true},
		{"errors 2", 0, "", true},
		{"99999999 lines", 0, "", true},
	}
	for _, tt := range tests {
		n, msg, err := parseRRDStatus(tt.line)
		if (err != nil) != tt.wantErr || n != tt.n || msg != tt.msg {
			t.Errorf("parseRRDStatus(%q) = %d, %q, %v; want %d, %q, error %v", tt.line, n, msg, err, tt.n, tt.msg, tt.wantErr)
		}
	}
}

func TestParseRRDStats(t *testing.T) {
	lines := []string{"QueueLength: 3", "UpdatesReceived: 1000", "FlushesReceived: 0", "UpdatesWritten: 10", "DataSetsWritten: 997", "JournalBytes: 78"}
	got, err := parseRRDStats(lines)
	if err != nil {
		t.Fatal(err)
	}
	if want := (rrdStats{QueueLength: 3, UpdatesReceived: 1000, DataSetsWritten: 997}); got != want {
		t.Fatalf("parseRRDStats = %+v, want %+v", got, want)
	}
	for _, bad := range []string{"QueueLength 3", "QueueLength: three"} {
		if _, err := parseRRDStats([]string{bad}); err == nil {
			t.Errorf("parseRRDStats(%q) gave no error", bad)
		}
	}
}

func TestRRDCreateArgsMatchTransferDefault(t *testing.T) {
	w := Workload{Series: 1, Points: 1, Start: 1_700_000_040, Step: 60}
	got, err := rrdCreateArgs(w, "60s:12h,5m:2d")
	if err != nil {
		t.Fatal(err)
	}
	want := "-b 1699999980 -s 60 DS:v:GAUGE:120:U:U" +
		" RRA:AVERAGE:0.5:1:720 RRA:MAX:0.5:1:720 RRA:MIN:0.5:1:720" +
		" RRA:AVERAGE:0.5:5:576 RRA:MAX:0.5:5:576 RRA:MIN:0.5:5:576"
	if got != want {
		t.Fatalf("rrdCreateArgs =\n%s\nwant\n%s", got, want)
	}
	if _, err := rrdCreateArgs(w, "30s:1h"); err == nil {
		t.Fatal("an archive finer than the workload step was accepted")
	}
	if _, err := rrdCreateArgs(w, "nonsense"); err == nil {
		t.Fatal("a bad retention list was accepted")
	}
}

// startRRDCached runs a real rrdcached with its journal on a unix socket in
// a temp dir, stopped when the test ends.
func startRRDCached(t *testing.T) (addr, dataDir string) {
	t.Helper()
	bin := testkit.RequireBinary(t, "rrdcached", "rrdcached")
	dir := t.TempDir()
	dataDir = filepath.Join(dir, "data")
	for _, d := range []string{dataDir, filepath.Join(dir, "journal")} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	sock := filepath.Join(dir, "sock")
	cmd := exec.Command(bin, "-g", "-B", "-b", dataDir, "-j", filepath.Join(dir, "journal"), "-F",
		"-l", "unix:"+sock, "-p", filepath.Join(dir, "pid"))
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
	})
	if err := waitRRDCachedUp(context.Background(), "unix:"+sock, 10*time.Second); err != nil {
		t.Fatal(err)
	}
	return "unix:" + sock, dataDir
}

// TestRRDCachedRoundTrip creates files, sends the workload, flushes, and
// reads the last value of one file back with rrdtool.
func TestRRDCachedRoundTrip(t *testing.T) {
	addr, dataDir := startRRDCached(t)
	rrdtool := testkit.RequireBinary(t, "rrdtool", "rrdtool")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	w := Workload{Series: 20, Points: 5, Start: 1_700_000_040, Step: 60}
	const conns = 3
	if err := createRRDFiles(ctx, addr, w, "60s:1h,5m:1d", conns); err != nil {
		t.Fatal(err)
	}
	perConn := make([][]chunk, conns)
	for conn := range perConn {
		perConn[conn] = buildChunks(w, conn, conns, 7, rrdEncoding)
	}
	accepted, err := sendAll(ctx, perConn, func(ctx context.Context, c []chunk) (int64, error) { return sendRRD(ctx, addr, c) })
	if err != nil {
		t.Fatal(err)
	}
	if accepted != w.Total() {
		t.Fatalf("accepted %d, want %d", accepted, w.Total())
	}
	if err := waitRRDFlushed(ctx, addr, 0, w.Total(), 5*time.Millisecond); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(rrdtool, "lastupdate", filepath.Join(dataDir, RRDFile(13))).CombinedOutput()
	if err != nil {
		t.Fatalf("rrdtool lastupdate: %v\n%s", err, out)
	}
	want := strconv.FormatInt(w.Time(w.Points-1), 10) + ": " + strconv.FormatFloat(w.Value(13, w.Points-1), 'g', -1, 64)
	if !strings.Contains(string(out), want) {
		t.Fatalf("rrdtool lastupdate:\n%s\nwant a line %q", out, want)
	}

	// An update older than the file's last one is refused, and said so.
	old := []chunk{{data: AppendRRDUpdate(nil, w, 13, 0), points: 1}}
	n, err := sendRRD(ctx, addr, old)
	if err == nil || n != 0 || !strings.Contains(err.Error(), "refused 1 of 1") {
		t.Fatalf("sending an old update = %d, %v; want 0 and a refusal", n, err)
	}
}

// FuzzRRDAnswer: any status or STATS line is parsed or refused, never a panic.
func FuzzRRDAnswer(f *testing.F) {
	f.Add("9 Statistics follow", "DataSetsWritten: 12")
	f.Add("-1 No such file: a.rrd", "QueueLength: -3")
	f.Add("2 errors", "x:y")
	f.Fuzz(func(t *testing.T, status, stat string) {
		if n, _, err := parseRRDStatus(status); err == nil && n > 1<<20 {
			t.Fatalf("parseRRDStatus(%q) announces %d lines", status, n)
		}
		_, _ = parseRRDStats([]string{stat})
	})
}
