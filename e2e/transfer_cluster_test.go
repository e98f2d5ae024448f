package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/opskit/opskit/internal/testkit"
)

// transferRing is a ring of transfer processes on fixed loopback addresses,
// so that a node can be restarted where its peers expect it.
type transferRing struct {
	t     *testing.T
	names []string
	addrs []string
	peers string
	args  []string
	procs []*testkit.Proc
	dirs  []string
}

func startTransferRing(t *testing.T, n int, args ...string) *transferRing {
	t.Helper()
	r := &transferRing{t: t, args: args}
	var peers []string
	for i := 0; i < n; i++ {
		r.names = append(r.names, fmt.Sprintf("n%d", i))
		r.addrs = append(r.addrs, testkit.FreeAddr(t))
		r.dirs = append(r.dirs, t.TempDir())
		peers = append(peers, r.names[i]+"="+r.addrs[i])
	}
	r.peers = strings.Join(peers, ",")
	r.procs = make([]*testkit.Proc, n)
	for i := range r.names {
		r.start(i)
	}
	return r
}

func (r *transferRing) start(i int) {
	r.t.Helper()
	args := append([]string{"--listen", r.addrs[i], "--graphite-listen", "", "--node-name", r.names[i], "--peers", r.peers,
		"--forward-min-backoff", "50ms", "--forward-max-backoff", "300ms", "--checkpoint-interval", "1s"}, r.args...)
	r.procs[i] = testkit.Start(r.t, "transfer", testkit.StartOptions{DataDir: r.dirs[i]}, args...)
}

func (r *transferRing) base(i int) string { return "http://" + r.addrs[i] }

// clusterStatus is the part of GET /cluster/v1/status the tests read.
type clusterStatus struct {
	Destinations []struct {
		Kind  string `json:"kind"`
		Name  string `json:"name"`
		Up    bool   `json:"up"`
		Spool struct {
			Count int `json:"count"`
		} `json:"spool"`
	} `json:"destinations"`
}

func (r *transferRing) spooled(i int, dest string) int {
	r.t.Helper()
	_, body := get(r.t, r.base(i)+"/cluster/v1/status")
	var st clusterStatus
	if err := json.Unmarshal([]byte(body), &st); err != nil {
		r.t.Fatalf("status of %s: %v %s", r.names[i], err, body)
	}
	n := 0
	for _, d := range st.Destinations {
		if dest == "" || d.Name == dest {
			n += d.Spool.Count
		}
	}
	return n
}

// waitDrained waits until no live node holds spooled points.
func (r *transferRing) waitDrained(within time.Duration, live ...int) {
	r.t.Helper()
	deadline := time.Now().Add(within)
	for {
		total := 0
		for _, i := range live {
			total += r.spooled(i, "")
		}
		if total == 0 {
			return
		}
		if time.Now().After(deadline) {
			r.t.Fatalf("%d points still spooled after %v", total, within)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// clusterWriter pushes batches of open-falcon JSON, one step at a time, and
// remembers the last step each writer had acknowledged.
type clusterWriter struct {
	t0      int64
	series  int
	mu      sync.Mutex
	acked   map[int]int // writer -> highest acknowledged step
	refused int
}

func (cw *clusterWriter) batch(w, step int) []byte {
	items := make([]map[string]any, cw.series)
	for s := range items {
		items[s] = map[string]any{"endpoint": fmt.Sprintf("w%d-h%d", w, s), "metric": "e2e.cluster", "timestamp": cw.t0 + int64(step)*60,
			"step": 60, "value": step, "counterType": "GAUGE", "tags": ""}
	}
	b, _ := json.Marshal(items)
	return b
}

// run pushes steps [from, to) for writer w to the targets in turn; it stops
// at the first failure or when stop closes.
func (cw *clusterWriter) run(w, from, to int, targets func(step int) string, stop <-chan struct{}) {
	client := &http.Client{Timeout: 10 * time.Second}
	for step := from; step < to; step++ {
		select {
		case <-stop:
			return
		default:
		}
		resp, err := client.Post(targets(step)+"/api/push", "application/json", bytes.NewReader(cw.batch(w, step)))
		if err != nil {
			return
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK || !strings.Contains(string(body), fmt.Sprintf(`"accepted":%d`, cw.series)) {
			cw.mu.Lock()
			cw.refused++
			cw.mu.Unlock()
			return
		}
		cw.mu.Lock()
		cw.acked[w] = step
		cw.mu.Unlock()
	}
}

func (cw *clusterWriter) ackedBatches() int {
	cw.mu.Lock()
	defer cw.mu.Unlock()
	n := 0
	for _, s := range cw.acked {
		n += s + 1
	}
	return n
}

// check queries base for every acknowledged point.
func (cw *clusterWriter) check(t *testing.T, base string, maxStep int) {
	t.Helper()
	got := sampleMap(t, queryRange(t, base, `{__name__="e2e.cluster"}`, cw.t0, cw.t0+int64(maxStep)*60, 60), "endpoint")
	cw.mu.Lock()
	defer cw.mu.Unlock()
	points := 0
	for w, last := range cw.acked {
		for s := 0; s < cw.series; s++ {
			ep := fmt.Sprintf("w%d-h%d", w, s)
			for step := 0; step <= last; step++ {
				if v, ok := got[ep][cw.t0+int64(step)*60]; !ok || v != float64(step) {
					t.Fatalf("%s at step %d (acknowledged up to %d) from %s: %v, %v", ep, step, last, base, v, ok)
				}
				points++
			}
		}
	}
	t.Logf("all %d acknowledged points queryable from %s", points, base)
}

func newClusterWriter(series int) *clusterWriter {
	now := time.Now().Unix()
	return &clusterWriter{t0: now - now%60 - 6*3600, series: series, acked: map[int]int{}}
}

// TestTransferClusterNodeDownUnderLoad takes one of three nodes down while
// writers keep pushing to the other two: intake goes on, their spools hold
// its share, and once it is back every acknowledged point is queryable
// from any node. Each writer keeps to one entry node, as a collector
// relaying to its configured transfer does; transfer_late_test.go feeds
// series through two entry nodes in turn (see transfer/README.md,
// "Ordering").
func TestTransferClusterNodeDownUnderLoad(t *testing.T) {
	r := startTransferRing(t, 3)
	cw := newClusterWriter(25)
	const writers, steps = 4, 120
	stop := make(chan struct{})
	var wg sync.WaitGroup
	phase := func(from, to int) {
		for w := 0; w < writers; w++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				cw.run(w, from, to, func(int) string { return r.base(w % 2) }, stop)
			}()
		}
		wg.Wait()
	}
	phase(0, 20)
	r.procs[2].Kill()
	phase(20, 80) // n2 is down
	if cw.refused > 0 || cw.ackedBatches() != writers*80 {
		t.Fatalf("intake stalled while n2 was down: %d batches acknowledged, %d refused", cw.ackedBatches(), cw.refused)
	}
	held := r.spooled(0, "n2") + r.spooled(1, "n2")
	if held == 0 {
		t.Fatal("no points spooled for n2 while it was down")
	}
	t.Logf("%d points spooled for n2 during its outage", held)
	r.start(2)
	phase(80, steps)
	r.waitDrained(30*time.Second, 0, 1, 2)
	for i := range r.names {
		cw.check(t, r.base(i), steps)
	}
	close(stop)
}

// TestTransferClusterKill9OfSpoolingNode kills the node holding another
// node's share in its spool: the spool survives the restart and drains.
func TestTransferClusterKill9OfSpoolingNode(t *testing.T) {
	r := startTransferRing(t, 3)
	r.procs[2].Kill()
	cw := newClusterWriter(30)
	const writers, steps = 3, 400
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for w := 0; w < writers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			cw.run(w, 0, steps, func(int) string { return r.base(0) }, stop)
		}()
	}
	for deadline := time.Now().Add(30 * time.Second); cw.ackedBatches() < 60 && time.Now().Before(deadline); {
		time.Sleep(20 * time.Millisecond)
	}
	r.procs[0].Kill() // mid-stream, with n2's share spooled on n0
	close(stop)
	wg.Wait()
	if cw.ackedBatches() < 30 {
		t.Fatalf("only %d batches acknowledged before the kill", cw.ackedBatches())
	}
	r.start(0)
	if r.spooled(0, "n2") == 0 {
		t.Fatal("n0's spool for n2 is empty after the restart")
	}
	r.start(2)
	r.waitDrained(30*time.Second, 0, 1, 2)
	cw.check(t, r.base(1), steps)
}

// TestTransferClusterReplicasCoverOutage stores every series on two of three
// nodes; with one node down a query from either survivor returns them all.
func TestTransferClusterReplicasCoverOutage(t *testing.T) {
	r := startTransferRing(t, 3, "--replicas", "2")
	cw := newClusterWriter(40)
	for w := 0; w < 2; w++ {
		cw.run(w, 0, 15, func(int) string { return r.base(w) }, nil)
	}
	if cw.ackedBatches() != 30 {
		t.Fatalf("%d of 30 batches acknowledged", cw.ackedBatches())
	}
	r.waitDrained(20*time.Second, 0, 1, 2)
	r.procs[2].Stop(t, 10*time.Second)
	for _, i := range []int{0, 1} {
		cw.check(t, r.base(i), 15)
		_, body := get(t, fmt.Sprintf("%s/api/v1/series?match[]=%s&start=%d&end=%d", r.base(i), url.QueryEscape(`{__name__="e2e.cluster"}`), cw.t0, cw.t0+15*60))
		if n := strings.Count(body, `"endpoint"`); n != 80 {
			t.Fatalf("series from %s during the outage: %d; want 80", r.names[i], n)
		}
	}
	// The open-falcon graph API reads through the cluster as well.
	hist := fmt.Sprintf(`{"hostnames":["w1-h7"],"counters":["e2e.cluster"],"consol_fun":"AVERAGE","start_time":%d,"end_time":%d,"step":60}`, cw.t0, cw.t0+14*60)
	resp, err := http.Post(r.base(0)+"/api/v1/graph/history", "application/json", strings.NewReader(hist))
	if err != nil {
		t.Fatal(err)
	}
	var series []struct {
		Values []struct {
			Timestamp int64    `json:"timestamp"`
			Value     *float64 `json:"value"`
		} `json:"Values"`
	}
	json.NewDecoder(resp.Body).Decode(&series)
	resp.Body.Close()
	if len(series) != 1 || len(series[0].Values) != 15 || series[0].Values[14].Value == nil || *series[0].Values[14].Value != 14 {
		t.Fatalf("graph/history during the outage: %+v", series)
	}
	resp, err = http.Post(r.base(1)+"/api/v1/graph/lastpoint", "application/json", strings.NewReader(`[{"endpoint":"w0-h3","counter":"e2e.cluster"}]`))
	if err != nil {
		t.Fatal(err)
	}
	last, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !strings.Contains(string(last), fmt.Sprintf(`"timestamp":%d,"value":14`, cw.t0+14*60)) {
		t.Fatalf("graph/lastpoint during the outage: %s", last)
	}

	// Without replicas to cover it, the same outage is an error, not a
	// silently short answer.
	r1 := startTransferRing(t, 2)
	r1.procs[1].Kill()
	code, body := get(t, fmt.Sprintf("%s/api/v1/series?match[]=%s&start=%d&end=%d", r1.base(0), url.QueryEscape(`{__name__="e2e.cluster"}`), cw.t0, cw.t0+15*60))
	if code == http.StatusOK {
		t.Fatalf("query with an uncovered node down answered 200: %s", body)
	}
}

// TestTransferJudgeRouting posts points to two transfer nodes with --judge
// naming two receivers that stand in for judge (they record what arrives on
// POST /api/push, the endpoint judge serves): every point reaches the judge
// owning its series exactly once, even though the receivers refuse the
// first requests.
func TestTransferJudgeRouting(t *testing.T) {
	type judgeRecv struct {
		mu     sync.Mutex
		items  []map[string]any
		refuse int
	}
	recvs := map[string]*judgeRecv{}
	var judges []string
	for _, name := range []string{"j1", "j2"} {
		jr := &judgeRecv{refuse: 2}
		recvs[name] = jr
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			jr.mu.Lock()
			defer jr.mu.Unlock()
			if r.Method != http.MethodPost || r.URL.Path != "/api/push" {
				http.NotFound(w, r)
				return
			}
			if jr.refuse > 0 {
				jr.refuse--
				http.Error(w, "starting", http.StatusServiceUnavailable)
				return
			}
			var items []map[string]any
			if err := json.NewDecoder(r.Body).Decode(&items); err != nil {
				http.Error(w, err.Error(), http.StatusBadRequest)
				return
			}
			jr.items = append(jr.items, items...)
			fmt.Fprintf(w, `{"accepted":%d,"rejected":[]}`, len(items))
		}))
		t.Cleanup(srv.Close)
		judges = append(judges, name+"="+srv.Listener.Addr().String())
	}
	r := startTransferRing(t, 2, "--judge", strings.Join(judges, ","))
	cw := newClusterWriter(20)
	cw.run(0, 0, 5, func(step int) string { return r.base(step % 2) }, nil)
	if cw.ackedBatches() != 5 {
		t.Fatalf("%d of 5 batches acknowledged", cw.ackedBatches())
	}
	deadline := time.Now().Add(20 * time.Second)
	for {
		n := 0
		for _, jr := range recvs {
			jr.mu.Lock()
			n += len(jr.items)
			jr.mu.Unlock()
		}
		if n == 100 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("judges received %d of 100 points", n)
		}
		time.Sleep(50 * time.Millisecond)
	}
	owner := map[string]string{} // endpoint -> judge
	for name, jr := range recvs {
		if len(jr.items) == 0 {
			t.Errorf("judge %s received nothing", name)
		}
		for _, it := range jr.items {
			ep, _ := it["endpoint"].(string)
			if prev, ok := owner[ep]; ok && prev != name {
				t.Fatalf("%s went to both %s and %s", ep, prev, name)
			}
			owner[ep] = name
			if it["metric"] != "e2e.cluster" || it["counterType"] != "GAUGE" || it["step"] != 60.0 {
				t.Fatalf("judge item %v", it)
			}
		}
	}
}

// TestTransferKafkaSinkOutage produces every accepted point to Kafka (the
// in-process fake), then makes Kafka refuse produce requests while points
// keep coming: the spool holds what fits in its bound, drops beyond it are
// counted, and production resumes with the newest points when Kafka is back.
func TestTransferKafkaSinkOutage(t *testing.T) {
	kc := testkit.Kafka(t, testkit.KafkaTopic("samples", 3))
	var down atomic.Bool
	kc.Fake().ControlKey(kmsg.Produce.Int16(), func(kmsg.Request) (kmsg.Response, error, bool) {
		kc.Fake().KeepControl()
		if down.Load() {
			return nil, errors.New("kafka is down for the test"), true
		}
		return nil, nil, false
	})
	const spoolBound = 128 << 10
	p := testkit.Start(t, "transfer", testkit.StartOptions{}, "--graphite-listen", "",
		"--kafka-brokers", strings.Join(kc.Addrs(), ","), "--kafka-topic", "samples",
		"--spool-max-bytes", fmt.Sprint(spoolBound), "--forward-timeout", "1s",
		"--forward-min-backoff", "50ms", "--forward-max-backoff", "200ms")
	base := "http://" + p.Addr
	cw := newClusterWriter(50)
	cw.run(0, 0, 4, func(int) string { return base }, nil)
	recs := kc.ReadTopic(t, "samples", 200, 20*time.Second)
	lastPerKey := map[string]int64{}
	for _, rec := range recs {
		var v struct {
			Metric    string            `json:"metric"`
			Labels    map[string]string `json:"labels"`
			Timestamp int64             `json:"timestamp"`
		}
		if err := json.Unmarshal(rec.Value, &v); err != nil || v.Metric != "e2e.cluster" || v.Labels["endpoint"] == "" {
			t.Fatalf("record %s = %s (%v)", rec.Key, rec.Value, err)
		}
		// Keyed by series, so each series is in order within its partition.
		if v.Timestamp < lastPerKey[string(rec.Key)] {
			t.Fatalf("series %s out of order", rec.Key)
		}
		lastPerKey[string(rec.Key)] = v.Timestamp
	}

	down.Store(true)
	// Points unlike each other, so the spool fills fast despite snappy.
	client := &http.Client{Timeout: 10 * time.Second}
	for step := 4; step < 64; step++ {
		var items []map[string]any
		for s := 0; s < 200; s++ {
			items = append(items, map[string]any{"endpoint": fmt.Sprintf("w0-h%d", s), "metric": "e2e.cluster", "timestamp": cw.t0 + int64(step)*60,
				"step": 60, "value": float64(step*1000+s) + 0.123456789, "tags": fmt.Sprintf("run=%d-%d", step, s)})
		}
		body, _ := json.Marshal(items)
		resp, err := client.Post(base+"/api/push", "application/json", bytes.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("push during the Kafka outage: %d", resp.StatusCode)
		}
	}
	_, metrics := get(t, base+"/metrics")
	dropped := clusterMetric(metrics, `opskit_transfer_forward_points_dropped_total{kind="kafka",dest="samples",reason="full"}`)
	spooledBytes := clusterMetric(metrics, `opskit_transfer_forward_spool_bytes{kind="kafka",dest="samples"}`)
	if dropped <= 0 || spooledBytes > spoolBound {
		t.Fatalf("during the outage: %v points dropped, %v bytes spooled (bound %d)", dropped, spooledBytes, spoolBound)
	}
	t.Logf("Kafka outage: %v points dropped and counted, %v bytes spooled", dropped, spooledBytes)
	down.Store(false)
	// The newest point (step 63, series 199) arrives once Kafka is back.
	deadline := time.Now().Add(30 * time.Second)
	for {
		_, metrics := get(t, base+"/metrics")
		if clusterMetric(metrics, `opskit_transfer_forward_spool_points{kind="kafka",dest="samples"}`) == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the Kafka spool did not drain after the outage")
		}
		time.Sleep(100 * time.Millisecond)
	}
	found := false
	cl := kc.Client(t, kgo.ConsumeTopics("samples"), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	want := fmt.Sprintf(`"timestamp":%d,"value":%v`, cw.t0+63*60, float64(63*1000+199)+0.123456789)
	for !found && ctx.Err() == nil {
		cl.PollFetches(ctx).EachRecord(func(r *kgo.Record) {
			if strings.Contains(string(r.Value), want) {
				found = true
			}
		})
	}
	if !found {
		t.Fatalf("the newest point (%s) never reached Kafka", want)
	}
	// kcat (librdkafka), an outside client, reads the same records.
	kcat := testkit.RequireBinary(t, "kcat", "kcat")
	out, err := exec.Command(kcat, "-C", "-b", strings.Join(kc.Addrs(), ","), "-t", "samples", "-o", "beginning", "-e", "-q", "-c", "50", "-f", "%k\t%s\n").Output()
	if err != nil {
		t.Fatalf("kcat: %v", err)
	}
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		key, value, _ := strings.Cut(line, "\t")
		if !strings.HasPrefix(key, `e2e.cluster{endpoint="w0-h`) || !strings.Contains(value, `"metric":"e2e.cluster"`) {
			t.Fatalf("kcat read %q", line)
		}
	}
}

// metricValue reads one sample from Prometheus text; -1 if absent.
func clusterMetric(text, series string) float64 {
	for _, line := range strings.Split(text, "\n") {
		if rest, ok := strings.CutPrefix(line, series+" "); ok {
			var v float64
			fmt.Sscan(rest, &v)
			return v
		}
	}
	return -1
}

// TestTransferClusterPeersFileReload grows a two-node ring to three by
// editing the peers file and reloading: the newcomer receives about a third
// of the new series, and the older series' history stays queryable.
func TestTransferClusterPeersFileReload(t *testing.T) {
	dir := t.TempDir()
	peersFile := dir + "/peers.txt"
	names := []string{"n0", "n1", "n2"}
	addrs := []string{testkit.FreeAddr(t), testkit.FreeAddr(t), testkit.FreeAddr(t)}
	writePeers := func(n int) {
		var b strings.Builder
		b.WriteString("# the ring\n")
		for i := 0; i < n; i++ {
			fmt.Fprintf(&b, "%s = %s\n", names[i], addrs[i])
		}
		if err := os.WriteFile(peersFile, []byte(b.String()), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	writePeers(2)
	start := func(i int) *testkit.Proc {
		return testkit.Start(t, "transfer", testkit.StartOptions{}, "--listen", addrs[i], "--graphite-listen", "", "--node-name", names[i], "--peers", peersFile,
			"--forward-min-backoff", "50ms", "--forward-max-backoff", "300ms")
	}
	procs := []*testkit.Proc{start(0), start(1)}
	before := newClusterWriter(60)
	before.run(0, 0, 5, func(int) string { return "http://" + addrs[0] }, nil)

	writePeers(3)
	procs = append(procs, start(2))
	for _, p := range procs[:2] {
		if out, errs, code := testkit.Run(t, "transfer", "", "ctl", "reload", "--addr", p.Addr); code != 0 {
			t.Fatalf("ctl reload: %d %s %s", code, out, errs)
		}
	}
	_, body := get(t, "http://"+addrs[0]+"/cluster/v1/status")
	if !strings.Contains(body, `"name":"n2"`) {
		t.Fatalf("n0 does not list n2 after the reload: %s", body)
	}
	after := newClusterWriter(60)
	after.t0 = before.t0 + 3600
	after.run(1, 0, 5, func(int) string { return "http://" + addrs[1] }, nil)
	waitDrainedAt(t, addrs)
	_, m := get(t, "http://"+addrs[2]+"/metrics")
	got := clusterMetric(m, "opskit_transfer_storage_series")
	if got < 8 || got > 35 {
		t.Fatalf("the new node holds %v of the 60 new series; want about a third", got)
	}
	before.check(t, "http://"+addrs[2], 5)
	after.check(t, "http://"+addrs[0], 5)
}

func waitDrainedAt(t *testing.T, addrs []string) {
	t.Helper()
	r := &transferRing{t: t, addrs: addrs, names: make([]string, len(addrs))}
	all := make([]int, len(addrs))
	for i := range all {
		all[i] = i
	}
	r.waitDrained(20*time.Second, all...)
}
