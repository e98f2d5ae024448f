package hop

import (
	"bytes"
	"strings"
	"testing"
	"time"

	"github.com/VictoriaMetrics/metrics"
)

func TestAckedExportsSeries(t *testing.T) {
	set := metrics.NewSet()
	h := New(set, "127.0.0.1:7120")
	h.Acked(3, 1500*time.Millisecond)
	h.Acked(2, 500*time.Millisecond)
	h.Acked(0, time.Second) // nothing acknowledged: nothing counted
	h.Failed()
	var buf bytes.Buffer
	set.WritePrometheus(&buf)
	for _, want := range []string{
		`opskit_hop_items_total{to="127.0.0.1:7120"} 5`,
		`opskit_hop_latency_seconds_total{to="127.0.0.1:7120"} 2`,
		`opskit_hop_errors_total{to="127.0.0.1:7120"} 1`,
	} {
		if !strings.Contains(buf.String(), want+"\n") {
			t.Errorf("metrics lack %q:\n%s", want, buf.String())
		}
	}
}

func TestNilHopAndSetCountNothing(t *testing.T) {
	var h *Hop
	h.Acked(1, time.Second)
	h.Failed()
	var s *Set
	if s.To("x:1") != nil {
		t.Fatal("nil Set handed out a Hop")
	}
}

func TestSetSharesHopsPerAddress(t *testing.T) {
	set := metrics.NewSet()
	s := NewSet(set)
	a, b := s.To("h:1"), s.To("h:1")
	if a != b {
		t.Fatal("two Hops for one address")
	}
	// New for the same address (another sender) shares the counters.
	New(set, "h:1").Acked(1, 0)
	a.Acked(1, 0)
	var buf bytes.Buffer
	set.WritePrometheus(&buf)
	if !strings.Contains(buf.String(), `opskit_hop_items_total{to="h:1"} 2`) {
		t.Fatalf("counters not shared:\n%s", buf.String())
	}
}

func TestAddr(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"127.0.0.1:7120", "127.0.0.1:7120"},
		{" judge1:7130 ", "judge1:7130"},
		{"http://127.0.0.1:7140", "127.0.0.1:7140"},
		{"http://alarm.example/prefix/", "alarm.example:80"},
		{"https://hooks.example/x?y=1", "hooks.example:443"},
		{"http://[::1]:9000/api", "[::1]:9000"},
		{"alarm", "alarm:80"},
	} {
		if got := Addr(tc.in); got != tc.want {
			t.Errorf("Addr(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

func TestKafkaAddr(t *testing.T) {
	if got := KafkaAddr([]string{" ", "k1:9092", "k2:9092"}); got != "kafka://k1:9092" {
		t.Fatalf("got %q", got)
	}
}

func TestBacklogTakeSumsLatencyInOrder(t *testing.T) {
	t0 := time.Unix(1000, 0)
	b := NewBacklog(2, t0) // recovered items count from t0
	b.Add(3, t0.Add(10*time.Second))
	b.Add(1, t0.Add(20*time.Second))
	now := t0.Add(30 * time.Second)

	held, sum := b.Take(4, now) // 2 from t0, 2 of the 3 from t0+10s
	if held != 4 || sum != 2*30*time.Second+2*20*time.Second {
		t.Fatalf("Take(4) = %d, %v", held, sum)
	}
	held, sum = b.Take(5, now) // 1 from t0+10s, 1 from t0+20s, 3 unknown
	if held != 2 || sum != 20*time.Second+10*time.Second {
		t.Fatalf("Take(5) = %d, %v", held, sum)
	}
	if b.Len() != 0 {
		t.Fatalf("Len = %d after taking everything", b.Len())
	}
}

func TestBacklogDropAndForget(t *testing.T) {
	t0 := time.Unix(1000, 0)
	b := NewBacklog(0, t0)
	b.Add(2, t0)
	b.Add(2, t0.Add(time.Second))
	b.Add(2, t0.Add(2*time.Second))
	b.Drop(3)   // the two of t0 and one of t0+1s
	b.Forget(1) // one of t0+2s
	if b.Len() != 2 {
		t.Fatalf("Len = %d, want 2", b.Len())
	}
	held, sum := b.Take(2, t0.Add(10*time.Second))
	if held != 2 || sum != 9*time.Second+8*time.Second {
		t.Fatalf("Take = %d, %v", held, sum)
	}
}

func TestBacklogIsBounded(t *testing.T) {
	t0 := time.Unix(1000, 0)
	b := NewBacklog(0, t0)
	for i := range 3 * DefaultBacklogEntries {
		b.Add(1, t0.Add(time.Duration(i)*time.Millisecond))
	}
	if n := len(b.entries) - b.head; n > DefaultBacklogEntries {
		t.Fatalf("%d entries held, bound %d", n, DefaultBacklogEntries)
	}
	if b.Len() != 3*DefaultBacklogEntries {
		t.Fatalf("Len = %d: merging lost items", b.Len())
	}
	// Consuming and adding keeps reusing the front.
	for i := range 10 * DefaultBacklogEntries {
		b.Take(1, t0)
		b.Add(1, t0.Add(time.Duration(i)))
	}
	if cap(b.entries) > 4*DefaultBacklogEntries {
		t.Fatalf("entries grew to %d", cap(b.entries))
	}
}

func BenchmarkAcked(b *testing.B) {
	h := New(metrics.NewSet(), "x:1")
	for b.Loop() {
		h.Acked(1000, time.Second)
	}
}

// BenchmarkBacklogAddTake is the per-batch cost of the intake-time backlog
// kept beside a spool.
func BenchmarkBacklogAddTake(b *testing.B) {
	bl := NewBacklog(0, time.Now())
	now := time.Now()
	for b.Loop() {
		bl.Add(1000, now)
		bl.Take(1000, now)
	}
}
