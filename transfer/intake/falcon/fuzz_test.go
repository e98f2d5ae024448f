package falcon

import (
	"encoding/json"
	"math"
	"testing"

	"github.com/opskit/opskit/internal/metric"
	"github.com/opskit/opskit/transfer/intake"
)

// FuzzDecode feeds arbitrary bodies to the push decoder: it must never
// panic, and everything it accepts must be storable.
func FuzzDecode(f *testing.F) {
	f.Add([]byte(`[{"endpoint":"web1","metric":"cpu.idle","timestamp":1699999980,"step":60,"value":93.5,"counterType":"GAUGE","tags":"core=0"}]`))
	f.Add([]byte(`[{"endpoint":"h","metric":"m","step":10,"value":"1e3"},5,{"metric":""}]`))
	lim := intake.DefaultLimits()
	f.Fuzz(func(t *testing.T, body []byte) {
		res, err := Decode(body, now, lim)
		if err != nil {
			if len(res.Points) != 0 {
				t.Fatalf("points kept from a body that is not an array: %v", err)
			}
			return
		}
		if len(res.Points) != len(res.Indexes) {
			t.Fatalf("%d points but %d indexes", len(res.Points), len(res.Indexes))
		}
		seen := map[int]bool{}
		for i, p := range res.Points {
			checkPoint(t, p, lim)
			idx := res.Indexes[i]
			if idx < 0 || idx >= res.Items || seen[idx] {
				t.Fatalf("bad or repeated index %d of %d items", idx, res.Items)
			}
			seen[idx] = true
		}
		for _, r := range res.Rejected {
			if r.Reason == "" || r.Detail == "" {
				t.Fatalf("rejection without reason or detail: %+v", r)
			}
			if seen[r.Index] {
				t.Fatalf("item %d both accepted and rejected", r.Index)
			}
		}
		// The array splitter must agree with encoding/json on what the
		// elements are, and item by item with ParseItem.
		var elems []json.RawMessage
		if json.Unmarshal(body, &elems) != nil {
			if len(res.Rejected) == 0 || res.Rejected[len(res.Rejected)-1].Reason != intake.ReasonBadJSON {
				t.Fatalf("a body encoding/json refuses as an array gave no bad_json rejection: %+v", res.Rejected)
			}
			return
		}
		if res.Items != len(elems) {
			t.Fatalf("%d items, encoding/json sees %d", res.Items, len(elems))
		}
		accepted := 0
		for i, e := range elems {
			_, rej := ParseItem(e, now, lim)
			if rej == nil != seen[i] {
				t.Fatalf("item %d: alone %v, in the body accepted=%v", i, rej, seen[i])
			}
			if rej == nil {
				accepted++
			}
		}
		if accepted != len(res.Points) {
			t.Fatalf("%d accepted alone, %d in the body", accepted, len(res.Points))
		}
	})
}

func checkPoint(t *testing.T, p metric.Point, lim intake.Limits) {
	t.Helper()
	if p.Labels.Name() == "" || p.Labels.Get(metric.EndpointLabel) == "" {
		t.Fatalf("accepted a point without name or endpoint: %v", p.Labels)
	}
	if rej := lim.Validate(&p); rej != nil {
		t.Fatalf("accepted a point that fails validation: %v", rej)
	}
	if math.IsNaN(p.Value) || math.IsInf(p.Value, 0) || p.Time <= 0 {
		t.Fatalf("accepted value %v at %d", p.Value, p.Time)
	}
	if p.Step < MinStep || p.Step > MaxStep || p.Time%int64(p.Step) != 0 {
		t.Fatalf("step %d, time %d not aligned", p.Step, p.Time)
	}
	if p.Time > 2*now {
		t.Fatalf("time %d beyond twice now", p.Time)
	}
}

// FuzzItem checks the fast item reader against encoding/json: whenever the
// fast path takes an item, encoding/json must decode it to the same fields.
func FuzzItem(f *testing.F) {
	f.Add([]byte(`{"endpoint":"web1","metric":"cpu.idle","timestamp":1699999980,"step":60,"value":93.5,"counterType":"GAUGE","tags":"core=0"}`))
	f.Fuzz(func(t *testing.T, raw []byte) {
		var fast, std Item
		if !fastItem(raw, &fast) {
			return
		}
		if rej := decodeItemStd(raw, &std); rej != nil {
			t.Fatalf("fast path took an item encoding/json refuses: %v", rej)
		}
		if !sameItem(&fast, &std) {
			t.Fatalf("fast %+v\nstd  %+v", fast, std)
		}
	})
}

func sameItem(a, b *Item) bool {
	return a.Endpoint == b.Endpoint && a.Metric == b.Metric && a.Timestamp == b.Timestamp && a.Step == b.Step &&
		string(a.Value) == string(b.Value) && a.CounterType == b.CounterType && a.Tags == b.Tags
}
