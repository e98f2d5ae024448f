package cluster

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net"
	"net/http"
	"net/http/httptest"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/VictoriaMetrics/metrics"

	"github.com/opskit/opskit/internal/metric"
	"github.com/opskit/opskit/transfer/intake"
	"github.com/opskit/opskit/transfer/ring"
	"github.com/opskit/opskit/transfer/storage"
)

// memStore is an in-memory stand-in for a node's storage: an Appender and
// a query.Reader over a 60s grid. It refuses points not newer than their
// series' last one, as the engine does.
type memStore struct {
	mu     sync.Mutex
	ids    map[string]uint64
	labels map[uint64]metric.Labels
	points map[uint64]map[int64]float64
	last   map[uint64]int64
	order  map[uint64][]int64 // arrival order of times
}

func newMemStore() *memStore {
	return &memStore{ids: map[string]uint64{}, labels: map[uint64]metric.Labels{}, points: map[uint64]map[int64]float64{}, last: map[uint64]int64{}, order: map[uint64][]int64{}}
}

func (m *memStore) Append(_ context.Context, pts []metric.Point) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	var pe intake.PartialError
	for i, p := range pts {
		k := p.Labels.Key()
		id, ok := m.ids[k]
		if !ok {
			id = uint64(len(m.ids) + 1)
			m.ids[k] = id
			m.labels[id] = p.Labels
			m.points[id] = map[int64]float64{}
		}
		if ok && p.Time <= m.last[id] {
			pe.Rejected = append(pe.Rejected, intake.PointReject{Index: i, Reason: intake.ReasonOutOfOrder})
			continue
		}
		m.points[id][p.Time] = p.Value
		m.last[id] = p.Time
		m.order[id] = append(m.order[id], p.Time)
	}
	if len(pe.Rejected) > 0 {
		return &pe
	}
	return nil
}

func (m *memStore) count() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	n := 0
	for _, ps := range m.points {
		n += len(ps)
	}
	return n
}

func (m *memStore) has(ls metric.Labels, t int64) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	id, ok := m.ids[ls.Key()]
	if !ok {
		return false
	}
	_, ok = m.points[id][t]
	return ok
}

func (m *memStore) Select(ms []*metric.Matcher) ([]storage.SeriesRef, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []storage.SeriesRef
	for id, ls := range m.labels {
		if metric.MatchesLabels(ls, ms) {
			out = append(out, storage.SeriesRef{ID: id, Labels: ls})
		}
	}
	return out, nil
}

func (m *memStore) LabelNames(ms []*metric.Matcher) ([]string, error) {
	refs, _ := m.Select(ms)
	var out []string
	for _, r := range refs {
		for _, l := range r.Labels {
			out = append(out, l.Name)
		}
	}
	slices.Sort(out)
	return slices.Compact(out), nil
}

func (m *memStore) LabelValues(name string, ms []*metric.Matcher) ([]string, error) {
	refs, _ := m.Select(ms)
	var out []string
	for _, r := range refs {
		if v := r.Labels.Get(name); v != "" {
			out = append(out, v)
		}
	}
	slices.Sort(out)
	return slices.Compact(out), nil
}

func (m *memStore) Fetch(id uint64, cf storage.CF, start, end, minStep int64) (storage.FetchResult, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	ps, ok := m.points[id]
	if !ok {
		return storage.FetchResult{}, storage.ErrUnknownSeries
	}
	first := (start/60 + 1) * 60
	res := storage.FetchResult{Start: first, Step: 60}
	for t := first; t <= end; t += 60 {
		v, ok := ps[t]
		if !ok {
			v = math.NaN()
		}
		res.Values = append(res.Values, v)
	}
	return res, nil
}

func (m *memStore) Last(id uint64) (int64, float64, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	t, ok := m.last[id]
	return t, m.points[id][t], ok
}

// testNode is one in-process cluster member served on loopback.
type testNode struct {
	name    string
	store   *memStore
	cluster *Cluster
	reader  *Reader
	srv     *http.Server
	ln      net.Listener
	addr    string
	down    atomic.Bool // answer 503 to everything
	metrics *metrics.Set
}

func (n *testNode) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if n.down.Load() {
		http.Error(w, "down for the test", http.StatusServiceUnavailable)
		return
	}
	n.srv.Handler.ServeHTTP(w, r)
}

type clusterOptions struct {
	replicas int
	judges   []ring.Node
	sinks    func(name string) []Sink
}

// startCluster runs len(names) members on loopback and stops them at the end.
func startCluster(t *testing.T, names []string, o clusterOptions) map[string]*testNode {
	t.Helper()
	nodes := map[string]*testNode{}
	var members []ring.Node
	for _, name := range names {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		n := &testNode{name: name, store: newMemStore(), ln: ln, addr: ln.Addr().String(), metrics: metrics.NewSet()}
		nodes[name] = n
		members = append(members, ring.Node{Name: name, Addr: n.addr})
	}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	for _, name := range names {
		n := nodes[name]
		cfg := Config{
			Self: name, Nodes: members, Replicas: o.replicas, Judges: o.judges, Dir: t.TempDir(),
			Outbox:       OutboxOptions{MinBackoff: 10 * time.Millisecond, MaxBackoff: 50 * time.Millisecond, Timeout: 2 * time.Second},
			QueryTimeout: 2 * time.Second, Metrics: n.metrics,
		}
		if o.sinks != nil {
			cfg.Sinks = o.sinks(name)
		}
		c, err := New(cfg, n.store)
		if err != nil {
			t.Fatal(err)
		}
		n.cluster = c
		n.reader = NewReader(c, n.store)
		mux := http.NewServeMux()
		NewServer(c, n.store).Register(mux)
		n.srv = &http.Server{Handler: mux}
		go (&http.Server{Handler: n}).Serve(n.ln)
		wg.Add(1)
		go func() { defer wg.Done(); c.Run(ctx) }()
	}
	t.Cleanup(func() {
		cancel()
		wg.Wait()
		for _, n := range nodes {
			n.ln.Close()
			n.cluster.Close()
		}
	})
	return nodes
}

func cpu(host string) metric.Labels {
	return metric.New(metric.Label{Name: metric.NameLabel, Value: "cpu.idle"}, metric.Label{Name: metric.EndpointLabel, Value: host})
}

func pointsAt(hosts int, t int64) []metric.Point {
	pts := make([]metric.Point, hosts)
	for i := range pts {
		pts[i] = metric.Point{Labels: cpu(fmt.Sprint("host-", i)), Time: t, Value: float64(t % 1000), Step: 60}
	}
	return pts
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestAppendStoresEachShareOnItsOwners(t *testing.T) {
	names := []string{"a", "b", "c"}
	for _, replicas := range []int{1, 2, 3} {
		t.Run(fmt.Sprint("replicas=", replicas), func(t *testing.T) {
			nodes := startCluster(t, names, clusterOptions{replicas: replicas})
			const hosts = 60
			pts := pointsAt(hosts, 6000)
			// Every node accepts any point.
			for i, name := range names {
				if err := nodes[name].cluster.Append(context.Background(), pts[i*20:(i+1)*20]); err != nil {
					t.Fatal(err)
				}
			}
			r := nodes["a"].cluster.Ring()
			want := map[string]int{}
			for _, p := range pts {
				for _, o := range r.OwnersOf(p.Labels, replicas) {
					want[o]++
				}
			}
			waitFor(t, "every share delivered", func() bool {
				for _, name := range names {
					if nodes[name].store.count() != want[name] {
						return false
					}
				}
				return true
			})
			for _, p := range pts {
				for _, o := range r.OwnersOf(p.Labels, replicas) {
					if !nodes[o].store.has(p.Labels, p.Time) {
						t.Errorf("%s lacks %s, which it owns", o, p.Labels)
					}
				}
			}
		})
	}
}

func TestPeerDownSpoolsAndDrainsInOrder(t *testing.T) {
	nodes := startCluster(t, []string{"a", "b", "c"}, clusterOptions{replicas: 1})
	a, c := nodes["a"], nodes["c"]
	c.down.Store(true)
	const hosts, steps = 30, 20
	for s := 0; s < steps; s++ {
		if err := a.cluster.Append(context.Background(), pointsAt(hosts, int64(6000+60*s))); err != nil {
			t.Fatal(err)
		}
	}
	owned := 0
	for i := 0; i < hosts; i++ {
		if a.cluster.Ring().Primary(cpu(fmt.Sprint("host-", i)).AppendKey(nil)) == "c" {
			owned++
		}
	}
	if owned == 0 {
		t.Fatal("c owns no series; the test proves nothing")
	}
	waitFor(t, "a to notice c is down", func() bool {
		for _, st := range a.cluster.Status() {
			if st.Name == "c" {
				return !st.Up
			}
		}
		return false
	})
	var spooled int
	for _, st := range a.cluster.Status() {
		if st.Name == "c" {
			spooled = st.Spool.Count
		}
	}
	if spooled != owned*steps {
		t.Fatalf("a spools %d points for c; want %d", spooled, owned*steps)
	}
	if c.store.count() != 0 {
		t.Fatal("c stored points while down")
	}
	c.down.Store(false)
	waitFor(t, "c's share to drain", func() bool { return c.store.count() == owned*steps })
	// In order: no point was refused as out of order, and each series saw
	// its times rising.
	c.store.mu.Lock()
	defer c.store.mu.Unlock()
	for id, times := range c.store.order {
		if !slices.IsSorted(times) || len(times) != steps {
			t.Errorf("series %s arrived as %v", c.store.labels[id], times)
		}
	}
}

func TestPartialErrorIndexesAreTheCallers(t *testing.T) {
	nodes := startCluster(t, []string{"a", "b"}, clusterOptions{replicas: 1})
	a := nodes["a"]
	pts := pointsAt(20, 6000)
	if err := a.cluster.Append(context.Background(), pts); err != nil {
		t.Fatal(err)
	}
	// The same points again: a's own share is refused as out of order.
	err := a.cluster.Append(context.Background(), pts)
	partial, other := intake.SplitAppendError(err)
	if other != nil || partial == nil {
		t.Fatalf("second append: %v", err)
	}
	for _, rj := range partial.Rejected {
		if owner := a.cluster.Ring().Primary(pts[rj.Index].Labels.AppendKey(nil)); owner != "a" {
			t.Errorf("rejected index %d belongs to %s's share, not a's", rj.Index, owner)
		}
	}
	if len(partial.Rejected) == 0 || len(partial.Rejected) == len(pts) {
		t.Fatalf("%d of %d rejected", len(partial.Rejected), len(pts))
	}
}

func TestJudgeRoutingPostsFalconJSONToTheOwner(t *testing.T) {
	type received struct {
		mu    sync.Mutex
		items []FalconItem
	}
	var judges []ring.Node
	recv := map[string]*received{}
	var failFirst atomic.Int32
	failFirst.Store(2) // the first two posts fail: the batch must be retried
	for _, name := range []string{"j1", "j2"} {
		rc := &received{}
		recv[name] = rc
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.URL.Path != "/api/push" || r.Header.Get("Content-Type") != "application/json" {
				http.Error(w, "wrong request", http.StatusNotFound)
				return
			}
			if failFirst.Add(-1) >= 0 {
				http.Error(w, "busy", http.StatusServiceUnavailable)
				return
			}
			var items []FalconItem
			body, _ := io.ReadAll(r.Body)
			if err := json.Unmarshal(body, &items); err != nil {
				http.Error(w, err.Error(), http.StatusBadRequest)
				return
			}
			rc.mu.Lock()
			rc.items = append(rc.items, items...)
			rc.mu.Unlock()
			w.Write([]byte(`{"accepted":1,"rejected":[]}`))
		}))
		t.Cleanup(srv.Close)
		judges = append(judges, ring.Node{Name: name, Addr: srv.Listener.Addr().String()})
	}
	nodes := startCluster(t, []string{"a", "b"}, clusterOptions{replicas: 1, judges: judges})
	pts := pointsAt(40, 6000)
	if err := nodes["a"].cluster.Append(context.Background(), pts[:20]); err != nil {
		t.Fatal(err)
	}
	if err := nodes["b"].cluster.Append(context.Background(), pts[20:]); err != nil {
		t.Fatal(err)
	}
	total := func() int {
		n := 0
		for _, rc := range recv {
			rc.mu.Lock()
			n += len(rc.items)
			rc.mu.Unlock()
		}
		return n
	}
	waitFor(t, "every point at a judge", func() bool { return total() == len(pts) })
	judgeRing, _ := ring.New(judges, 0)
	for name, rc := range recv {
		if len(rc.items) == 0 {
			t.Errorf("judge %s got nothing", name)
		}
		for _, it := range rc.items {
			ls := cpu(it.Endpoint)
			if owner := judgeRing.Primary(ls.AppendKey(nil)); owner != name {
				t.Errorf("%s went to %s; its owner is %s", it.Endpoint, name, owner)
			}
			if it.Metric != "cpu.idle" || it.Step != 60 || it.CounterType != "GAUGE" || it.Timestamp != 6000 {
				t.Errorf("item %+v", it)
			}
		}
	}
}

func TestPermanentRefusalIsDroppedAndCounted(t *testing.T) {
	refusing := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "no", http.StatusBadRequest)
	}))
	defer refusing.Close()
	set := metrics.NewSet()
	o, err := OpenOutbox(OutboxOptions{Kind: "judge", Name: "j", Dir: t.TempDir(), Metrics: set, MinBackoff: time.Millisecond},
		&judgeDeliverer{c: &Cluster{cfg: Config{Client: http.DefaultClient}}, addr: refusing.Listener.Addr().String()})
	if err != nil {
		t.Fatal(err)
	}
	defer o.Close()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { o.Run(ctx); close(done) }()
	o.Add(ctx, EncodeBlock(pointsAt(5, 6000)), 5)
	waitFor(t, "the refused batch to leave the spool", func() bool { return o.Pending() == 0 })
	cancel()
	<-done
	if got := set.GetOrCreateCounter(`opskit_transfer_forward_points_dropped_total{kind="judge",dest="j",reason="refused"}`).Get(); got != 5 {
		t.Fatalf("dropped counter = %d; want 5", got)
	}
}

func TestSpoolSurvivesRestartAndDrains(t *testing.T) {
	dir := t.TempDir()
	var got atomic.Int64
	var up atomic.Bool
	d := DelivererFunc(func(ctx context.Context, blocks [][]byte, points int) error {
		if !up.Load() {
			return fmt.Errorf("down")
		}
		got.Add(int64(points))
		return nil
	})
	o, err := OpenOutbox(OutboxOptions{Kind: "peer", Name: "x", Dir: dir, MinBackoff: time.Millisecond}, d)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 10; i++ {
		o.Add(context.Background(), EncodeBlock(pointsAt(3, 6000)), 3)
	}
	o.Close()
	up.Store(true)
	o, err = OpenOutbox(OutboxOptions{Kind: "peer", Name: "x", Dir: dir, MinBackoff: time.Millisecond}, d)
	if err != nil {
		t.Fatal(err)
	}
	defer o.Close()
	if o.Pending() != 30 {
		t.Fatalf("reopened spool holds %d points; want 30", o.Pending())
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go o.Run(ctx)
	waitFor(t, "drain", func() bool { return got.Load() == 30 && o.Pending() == 0 })
}

func TestReaderMergesCopiesAndCoversADownNode(t *testing.T) {
	for _, tc := range []struct {
		replicas int
		wantErr  bool
	}{{2, false}, {1, true}} {
		t.Run(fmt.Sprint("replicas=", tc.replicas), func(t *testing.T) {
			nodes := startCluster(t, []string{"a", "b", "c"}, clusterOptions{replicas: tc.replicas})
			a := nodes["a"]
			const hosts = 30
			for s := int64(0); s < 5; s++ {
				if err := a.cluster.Append(context.Background(), pointsAt(hosts, 6000+60*s)); err != nil {
					t.Fatal(err)
				}
			}
			waitFor(t, "delivery", func() bool {
				n := 0
				for _, x := range nodes {
					n += x.store.count()
				}
				return n == hosts*5*tc.replicas
			})
			nodes["c"].down.Store(true)
			ms := []*metric.Matcher{metric.MustMatcher(metric.MatchEqual, metric.NameLabel, "cpu.idle")}
			refs, err := nodes["b"].reader.Select(ms)
			if tc.wantErr {
				if err == nil {
					t.Fatalf("Select with an uncovered node down returned %d series and no error", len(refs))
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if len(refs) != hosts {
				t.Fatalf("Select returned %d series; want %d", len(refs), hosts)
			}
			if !sort.SliceIsSorted(refs, func(i, j int) bool { return compareLabels(refs[i].Labels, refs[j].Labels) < 0 }) {
				t.Error("series not sorted")
			}
			for _, ref := range refs {
				res, err := nodes["b"].reader.Fetch(ref.ID, storage.Average, 5999, 6000+60*4, 60)
				if err != nil {
					t.Fatal(err)
				}
				if known(res.Values) != 5 {
					t.Errorf("%s: %v", ref.Labels, res.Values)
				}
				if tm, _, ok := nodes["b"].reader.Last(ref.ID); !ok || tm != 6000+60*4 {
					t.Errorf("last of %s = %d, %v", ref.Labels, tm, ok)
				}
			}
			// Past lastFresh, Last asks the nodes again.
			rd := nodes["b"].reader
			rd.mu.Lock()
			for _, l := range rd.series {
				l.selected = time.Time{}
			}
			rd.mu.Unlock()
			for _, ref := range refs {
				if tm, v, ok := rd.Last(ref.ID); !ok || tm != 6000+60*4 || v != float64((6000+60*4)%1000) {
					t.Errorf("last of %s asked again = %d %v, %v", ref.Labels, tm, v, ok)
				}
			}
			vals, err := nodes["b"].reader.LabelValues(metric.EndpointLabel, ms)
			if err != nil || len(vals) != hosts {
				t.Fatalf("label values: %d, %v", len(vals), err)
			}
		})
	}
}

func TestMergeFetchFillsGaps(t *testing.T) {
	nan := math.NaN()
	a := storage.FetchResult{Start: 60, Step: 60, Values: []float64{1, nan, 3, nan}}
	mergeFetch(&a, storage.FetchResult{Start: 60, Step: 60, Values: []float64{9, 2, nan, nan}})
	if a.Values[0] != 1 || a.Values[1] != 2 || a.Values[2] != 3 || !math.IsNaN(a.Values[3]) {
		t.Fatalf("merged %v", a.Values)
	}
	// Different slots: the copy with more known values wins.
	mergeFetch(&a, storage.FetchResult{Start: 0, Step: 10, Values: []float64{1, 2, 3, 4, 5}})
	if a.Step != 10 {
		t.Fatalf("merge kept the poorer copy: %+v", a)
	}
}

func TestSetNodesNeedsSelf(t *testing.T) {
	nodes := startCluster(t, []string{"a", "b"}, clusterOptions{})
	if err := nodes["a"].cluster.SetNodes([]ring.Node{{Name: "b", Addr: "x:1"}}); err == nil {
		t.Fatal("a peer list without this node was accepted")
	}
	if err := nodes["a"].cluster.SetNodes([]ring.Node{{Name: "a", Addr: nodes["a"].addr}, {Name: "b", Addr: nodes["b"].addr}, {Name: "d", Addr: "127.0.0.1:1"}}); err != nil {
		t.Fatal(err)
	}
	if nodes["a"].cluster.Ring().Len() != 3 {
		t.Fatal("new member not in the ring")
	}
	found := false
	for _, st := range nodes["a"].cluster.Status() {
		found = found || st.Name == "d"
	}
	if !found {
		t.Fatal("no outbox for the new member")
	}
}

func TestStrandedSpoolIsReported(t *testing.T) {
	dir := t.TempDir()
	members := []ring.Node{{Name: "a", Addr: "127.0.0.1:1"}, {Name: "b", Addr: "127.0.0.1:1"}}
	c, err := New(Config{Self: "a", Nodes: members, Dir: dir}, newMemStore())
	if err != nil {
		t.Fatal(err)
	}
	// Nothing runs the outbox: b's share stays spooled.
	if err := c.Append(context.Background(), pointsAt(20, 6000)); err != nil {
		t.Fatal(err)
	}
	c.Close()
	var logs bytes.Buffer
	c, err = New(Config{Self: "a", Nodes: members[:1], Dir: dir, Logger: slog.New(slog.NewTextHandler(&logs, nil))}, newMemStore())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if !strings.Contains(logs.String(), "no longer in --peers") || !strings.Contains(logs.String(), "peer=b") {
		t.Fatalf("no warning about b's spool: %s", logs.String())
	}
}

// BenchmarkAppend measures the entry node's cost of a 1,000-point request
// on a three-node ring: routing, encoding two shares and spooling them
// (fsynced) beside the local share (an in-memory store here).
func BenchmarkAppend(b *testing.B) {
	names := []string{"a", "b", "c"}
	var members []ring.Node
	for _, n := range names {
		members = append(members, ring.Node{Name: n, Addr: "127.0.0.1:1"})
	}
	c, err := New(Config{Self: "a", Nodes: members, Dir: b.TempDir()}, newMemStore())
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	step := int64(0)
	b.ReportAllocs()
	for b.Loop() {
		step++
		if err := c.Append(context.Background(), pointsAt(1000, 6000+60*step)); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/1000, "ns/point")
}
