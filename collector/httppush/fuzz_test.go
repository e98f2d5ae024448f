package httppush

import (
	"bytes"
	"math"
	"testing"

	"github.com/opskit/opskit/internal/metric"
	"github.com/opskit/opskit/transfer/intake"
)

// FuzzDecode: no body may panic the decoder, every item is either a point
// or a rejection, and every point is one transfer would store.
func FuzzDecode(f *testing.F) {
	f.Add([]byte(`[{"metric":"a","value":1,"tags":"k=v"},{"endpoint":"e","metric":"b","value":"2","step":30}]`))
	f.Add([]byte(`[{"metric":"a"`))
	f.Add([]byte(`[1,"x",null,{}]`))
	lim := intake.DefaultLimits()
	f.Fuzz(func(t *testing.T, body []byte) {
		res, err := Decode(bytes.NewReader(body), 1700000000, defaults, lim)
		if err != nil {
			return
		}
		if len(res.Points)+len(res.Rejected) < res.Items-1 || len(res.Points) > res.Items {
			t.Fatalf("%d items, %d points, %d rejected", res.Items, len(res.Points), len(res.Rejected))
		}
		for _, p := range res.Points {
			if p.Labels.Get(metric.EndpointLabel) == "" || p.Step <= 0 || math.IsNaN(p.Value) || math.IsInf(p.Value, 0) {
				t.Fatalf("bad point %+v", p)
			}
			if rej := lim.Validate(&p); rej != nil {
				t.Fatalf("point %+v fails validation: %v", p, rej)
			}
		}
	})
}
