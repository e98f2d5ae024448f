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
