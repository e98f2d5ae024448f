package storage

import (
	"bufio"
	"context"
	"fmt"
	"math"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/opskit/opskit/internal/metric"
)

// helperEnv makes the test binary act as a writer process (see TestMain).
const helperEnv = "OPSKIT_STORAGE_WRITER_DIR"

func TestMain(m *testing.M) {
	if dir := os.Getenv(helperEnv); dir != "" {
		os.Exit(runWriter(dir))
	}
	os.Exit(m.Run())
}

const killSeries = 10

func killPoint(batch, k int) metric.Point {
	ts := int64(t0 + batch*60)
	if k%2 == 1 {
		// Derive series: a running total whose rate is batch+k per second.
		total := 0.0
		for b := 0; b <= batch; b++ {
			total += float64(b+k) * 60
		}
		return metric.Point{Labels: labels("killed.ctr", "k", strconv.Itoa(k)), Time: ts, Value: total, Type: metric.Derive}
	}
	return metric.Point{Labels: labels("killed.gauge", "k", strconv.Itoa(k)), Time: ts, Value: float64(batch*10 + k)}
}

// runWriter appends batches forever with AppendWait and prints "ack N" after
// batch N is durable, until it is killed.
func runWriter(dir string) int {
	e, err := Open(dir, Options{
		Schemas:            []Schema{{Name: "t", Retentions: []Retention{{60, 600}, {300, 200}}, XFF: 0.5}},
		SyncInterval:       time.Millisecond,
		CheckpointInterval: 50 * time.Millisecond,
		SeriesPerSlab:      4,
	})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	out := bufio.NewWriter(os.Stdout)
	pts := make([]metric.Point, killSeries)
	for batch := 0; ; batch++ {
		for k := range pts {
			pts[k] = killPoint(batch, k)
		}
		res, err := e.AppendWait(context.Background(), pts)
		if err != nil || len(res.Rejected) > 0 {
			fmt.Fprintln(os.Stderr, err, res.Rejected)
			return 1
		}
		fmt.Fprintf(out, "ack %d\n", batch)
		out.Flush()
	}
}

// TestKill9KeepsAcknowledgedPoints runs a writer process, kills it with
// SIGKILL in mid-stream and checks every batch it acknowledged is stored.
func TestKill9KeepsAcknowledgedPoints(t *testing.T) {
	dir := t.TempDir()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), helperEnv+"="+dir)
	cmd.Stderr = os.Stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	acked := -1
	sc := bufio.NewScanner(stdout)
	deadline := time.Now().Add(20 * time.Second)
	for sc.Scan() {
		n, err := strconv.Atoi(strings.TrimPrefix(sc.Text(), "ack "))
		if err != nil {
			t.Fatalf("writer said %q", sc.Text())
		}
		acked = n
		if acked >= 300 || time.Now().After(deadline) {
			break
		}
	}
	if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	// Lines printed before the kill landed count as acknowledged too.
	for sc.Scan() {
		if n, err := strconv.Atoi(strings.TrimPrefix(sc.Text(), "ack ")); err == nil {
			acked = n
		}
	}
	cmd.Wait()
	if acked < 20 {
		t.Fatalf("writer acknowledged only %d batches", acked+1)
	}

	e, err := Open(dir, Options{SeriesPerSlab: 4})
	if err != nil {
		t.Fatalf("reopen after kill -9: %v", err)
	}
	defer e.Close()
	if st := e.Stats(); st.Series != killSeries {
		t.Fatalf("%d series after restart, want %d", st.Series, killSeries)
	}
	lastAcked := int64(t0 + acked*60)
	for k := 0; k < killSeries; k++ {
		p := killPoint(0, k)
		refs, err := e.Select([]*metric.Matcher{
			metric.MustMatcher(metric.MatchEqual, metric.NameLabel, p.Labels.Name()),
			metric.MustMatcher(metric.MatchEqual, "k", strconv.Itoa(k)),
		})
		if err != nil || len(refs) != 1 {
			t.Fatalf("series %d: %v %v", k, refs, err)
		}
		id := refs[0].ID
		if ts, _, ok := e.Last(id); !ok || ts < lastAcked {
			t.Errorf("series %d: newest slot %d, last acknowledged %d", k, ts, lastAcked)
		}
		r, err := e.Fetch(id, Average, t0, lastAcked, 60)
		if err != nil {
			t.Fatal(err)
		}
		for i, v := range r.Values {
			batch := int(r.Start+int64(i)*r.Step-t0) / 60
			if batch < 0 || batch > acked || (k%2 == 1 && batch == 0) {
				continue // before the series, after the kill, or a counter's priming point
			}
			want := float64(batch*10 + k)
			if k%2 == 1 {
				want = float64(batch + k)
			}
			if math.IsNaN(v) || math.Abs(v-want) > 1e-9 {
				t.Errorf("series %d batch %d (acknowledged): %v, want %v", k, batch, v, want)
				break
			}
		}
	}
}
