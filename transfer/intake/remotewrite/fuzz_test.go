package remotewrite

import (
	"math"
	"slices"
	"strings"
	"testing"

	"github.com/golang/snappy"

	"github.com/opskit/opskit/internal/metric"
	"github.com/opskit/opskit/transfer/intake"
)

// FuzzDecode feeds arbitrary protobuf bytes, snappy-compressed so the fuzzer
// reaches the WriteRequest decoder, and the raw bytes as a body too. The
// decoder must never panic and everything it accepts must be storable.
func FuzzDecode(f *testing.F) {
	f.Add([]byte{})
	lim := intake.DefaultLimits()
	f.Fuzz(func(t *testing.T, raw []byte) {
		d := NewDecoder(lim)
		if res, err := d.Decode(raw); err == nil {
			check(t, res, lim)
		}
		res, err := d.Decode(snappy.Encode(nil, raw))
		if err != nil {
			if len(res.Points) != 0 {
				t.Fatalf("points kept from a body that does not decode: %v", err)
			}
			return
		}
		check(t, res, lim)
	})
}

func check(t *testing.T, res Result, lim intake.Limits) {
	t.Helper()
	for _, p := range res.Points {
		if p.Labels.Name() == "" {
			t.Fatal("accepted a sample without a metric name")
		}
		if rej := lim.Validate(&p); rej != nil {
			t.Fatalf("accepted a sample that fails validation: %v", rej)
		}
		if math.IsNaN(p.Value) || math.IsInf(p.Value, 0) || p.Time <= 0 {
			t.Fatalf("accepted value %v at %d", p.Value, p.Time)
		}
		if !slices.IsSortedFunc(p.Labels, func(a, b metric.Label) int { return strings.Compare(a.Name, b.Name) }) {
			t.Fatalf("labels not sorted: %v", p.Labels)
		}
	}
	for _, r := range res.Rejected {
		if r.Reason == "" {
			t.Fatalf("rejection without a reason: %+v", r)
		}
	}
}

// FuzzWire checks the wire reader against the generated protobuf decoder:
// whenever the wire reader takes a body, the generated decoder must decode
// it to the same points and rejections. Each body is read twice by the same
// decoder, so the second read comes from its series cache.
func FuzzWire(f *testing.F) {
	f.Add([]byte{})
	lim := intake.DefaultLimits()
	f.Fuzz(func(t *testing.T, raw []byte) {
		d := NewDecoder(lim)
		fast, ok := d.walk(raw)
		if !ok {
			return
		}
		std, err := NewDecoder(lim).decodeStd(raw)
		if err != nil {
			t.Fatalf("wire reader took a body the generated decoder refuses: %v", err)
		}
		sameResult(t, fast, std)
		again, ok := d.walk(raw)
		if !ok {
			t.Fatal("second read of the same body gave up")
		}
		sameResult(t, again, std)
	})
}

func sameResult(t *testing.T, a, b Result) {
	t.Helper()
	if len(a.Points) != len(b.Points) || len(a.Rejected) != len(b.Rejected) || a.Stale != b.Stale {
		t.Fatalf("wire: %d points, %d rejected, %d stale; generated: %d, %d, %d",
			len(a.Points), len(a.Rejected), a.Stale, len(b.Points), len(b.Rejected), b.Stale)
	}
	for i := range a.Points {
		p, q := a.Points[i], b.Points[i]
		if !p.Labels.Equal(q.Labels) || p.Time != q.Time || math.Float64bits(p.Value) != math.Float64bits(q.Value) {
			t.Fatalf("point %d: wire %v %d %v, generated %v %d %v", i, p.Labels, p.Time, p.Value, q.Labels, q.Time, q.Value)
		}
	}
	for i := range a.Rejected {
		if a.Rejected[i] != b.Rejected[i] {
			t.Fatalf("rejection %d: wire %+v, generated %+v", i, a.Rejected[i], b.Rejected[i])
		}
	}
}
