package storage

import (
	"bufio"
	"context"
	"fmt"
	"math"
	"os"
	"os/exec"
	"strconv"
	"sync"
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

const (
	killSeries  = 12
	killWriters = 3 // writer goroutine g sends the series k with k%killWriters == g
	// Writer g also sends the late series g: batch b carries its primary
	// slot 2b+2 in order, then slot 2b+1 as a late point (LateMerge).
	killLateSeries = killWriters
)

// killLateValue is the value of primary slot n (ending t0+60n) of late series g.
func killLateValue(g, n int) float64 { return float64(n*3 + g) }

func killLatePoints(batch, g int) []metric.Point {
	ls := labels("killed.late", "g", strconv.Itoa(g))
	in, late := 2*batch+2, 2*batch+1
	return []metric.Point{
		{Labels: ls, Time: int64(t0 + in*60), Value: killLateValue(g, in)},
		{Labels: ls, Time: int64(t0 + late*60), Value: killLateValue(g, late)},
	}
}

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

// runWriter appends batches forever from several goroutines with
// AppendWait and prints "ack G N" after writer G's batch N is durable, until
// it is killed.
func runWriter(dir string) int {
	e, err := Open(dir, Options{
		Schemas:            []Schema{{Name: "t", Retentions: []Retention{{60, 600}, {300, 200}}, XFF: 0.5}},
		SyncInterval:       time.Millisecond,
		CheckpointInterval: 50 * time.Millisecond,
		SeriesPerSlab:      4,
		LatePoints:         LateMerge,
	})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	var mu sync.Mutex
	out := bufio.NewWriter(os.Stdout)
	failed := make(chan struct{})
	for g := 0; g < killWriters; g++ {
		go func(g int) {
			var pts []metric.Point
			for batch := 0; ; batch++ {
				pts = pts[:0]
				for k := g; k < killSeries; k += killWriters {
					pts = append(pts, killPoint(batch, k))
				}
				pts = append(pts, killLatePoints(batch, g)...)
				res, err := e.AppendWait(context.Background(), pts)
				if err != nil || len(res.Rejected) > 0 {
					fmt.Fprintln(os.Stderr, err, res.Rejected)
					close(failed)
					return
				}
				mu.Lock()
				fmt.Fprintf(out, "ack %d %d\n", g, batch)
				out.Flush()
				mu.Unlock()
			}
		}(g)
	}
	<-failed
	return 1
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
	acked := make([]int, killWriters) // newest acknowledged batch per writer
	for g := range acked {
		acked[g] = -1
	}
	read := func(line string) bool {
		var g, n int
		if _, err := fmt.Sscanf(line, "ack %d %d", &g, &n); err != nil || g < 0 || g >= killWriters {
			return false
		}
		acked[g] = max(acked[g], n)
		return true
	}
	sc := bufio.NewScanner(stdout)
	deadline := time.Now().Add(20 * time.Second)
	total := 0
	for sc.Scan() {
		if !read(sc.Text()) {
			t.Fatalf("writer said %q", sc.Text())
		}
		if total++; total >= 600 || time.Now().After(deadline) {
			break
		}
	}
	if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	// Lines printed before the kill landed count as acknowledged too.
	for sc.Scan() {
		read(sc.Text())
	}
	cmd.Wait()
	for g, n := range acked {
		if n < 20 {
			t.Fatalf("writer %d acknowledged only %d batches", g, n+1)
		}
	}

	e, err := Open(dir, Options{SeriesPerSlab: 4})
	if err != nil {
		t.Fatalf("reopen after kill -9: %v", err)
	}
	defer e.Close()
	if st := e.Stats(); st.Series != killSeries+killLateSeries {
		t.Fatalf("%d series after restart, want %d", st.Series, killSeries+killLateSeries)
	}
	checkKilledLateSeries(t, e, acked)
	for k := 0; k < killSeries; k++ {
		ackedBatch := acked[k%killWriters]
		lastAcked := int64(t0 + ackedBatch*60)
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
			if batch < 0 || batch > ackedBatch || (k%2 == 1 && batch == 0) {
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

// checkKilledLateSeries: every acknowledged late point is in its primary
// slot after the replay, and every 300 s slot the acknowledged points fill
// is their average.
func checkKilledLateSeries(t *testing.T, e *Engine, acked []int) {
	t.Helper()
	for g := 0; g < killLateSeries; g++ {
		lastSlot := 2*acked[g] + 2
		refs, err := e.Select([]*metric.Matcher{
			metric.MustMatcher(metric.MatchEqual, metric.NameLabel, "killed.late"),
			metric.MustMatcher(metric.MatchEqual, "g", strconv.Itoa(g)),
		})
		if err != nil || len(refs) != 1 {
			t.Fatalf("late series %d: %v %v", g, refs, err)
		}
		id := refs[0].ID
		r, err := e.Fetch(id, Average, t0, int64(t0+lastSlot*60-1), 60)
		if err != nil {
			t.Fatal(err)
		}
		for i, v := range r.Values {
			n := int(r.Start+int64(i)*r.Step-t0) / 60
			if want := killLateValue(g, n); v != want {
				t.Errorf("late series %d slot %d (acknowledged up to %d): %v, want %v", g, n, lastSlot, v, want)
				break
			}
		}
		coarse, err := e.Fetch(id, Average, t0, int64(t0+lastSlot*60-300), 300)
		if err != nil {
			t.Fatal(err)
		}
		for i, v := range coarse.Values {
			end := int(coarse.Start+int64(i)*coarse.Step-t0) / 60
			if end > lastSlot {
				break
			}
			want := 0.0
			for n := end - 4; n <= end; n++ {
				want += killLateValue(g, n)
			}
			if want /= 5; v != want {
				t.Errorf("late series %d: 300 s slot ending at slot %d: %v, want %v", g, end, v, want)
				break
			}
		}
	}
}
