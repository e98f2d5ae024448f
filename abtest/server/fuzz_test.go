package server

import (
	"encoding/json"
	"math"
	"testing"

	"github.com/opskit/opskit/abtest/events"
	"github.com/opskit/opskit/abtest/sdk"
)

// FuzzEventsBody splits arbitrary request bodies the way POST /v1/events
// does and decodes each item: no panic, and every accepted event is valid.
func FuzzEventsBody(f *testing.F) {
	f.Add([]byte(`[{"type":"exposure","unit":"u","experiment":"e","variant":"t"}]`))
	f.Add([]byte("{\"type\":\"metric\",\"unit\":\"u\",\"experiment\":\"e\",\"name\":\"n\",\"value\":1}\n\nnot json\n"))
	f.Fuzz(func(t *testing.T, body []byte) {
		raws, err := splitEvents(body)
		if err != nil {
			return
		}
		for _, raw := range raws {
			var e events.Event
			if json.Unmarshal(raw, &e) == nil {
				if err := e.Validate(); err != nil {
					t.Fatalf("accepted invalid event %s: %v", raw, err)
				}
			}
		}
	})
}

// FuzzAssignQuery: the GET /v1/assign query parser reads what
// url.ParseQuery reads, for any query.
func FuzzAssignQuery(f *testing.F) {
	f.Add("unit=u1&attr.country=US&experiment=a&experiment=b")
	f.Add("unit=a%20b+c&unit=second&attr.x=1&attr.x=2&attr.=e&;unit=x&bad=%zz&attr.y=%41")
	f.Fuzz(func(t *testing.T, raw string) {
		var q assignQuery
		parseAssignQuery(raw, &q, nil)
		checkAgainstNetURL(t, raw, &q)
	})
}

// FuzzAssignResponse: the hand-written answer is byte for byte what
// encoding/json writes, for any strings and bucket.
func FuzzAssignResponse(f *testing.F) {
	f.Add("u1", "exp", "layer", "control", 0.4594, true)
	f.Add("<u&>\u2028\xff\"\\", "", "\x00\n", "é", 1e-7, false)
	f.Fuzz(func(t *testing.T, unit, experiment, layer, variant string, bucket float64, forced bool) {
		if math.IsNaN(bucket) || math.IsInf(bucket, 0) {
			return // buckets are finite; encoding/json refuses these
		}
		results := []sdk.Result{
			{Experiment: experiment, Layer: layer, Variant: variant, Index: 3, Forced: forced, Bucket: bucket},
			{Experiment: variant, Variant: experiment, Bucket: -bucket},
		}
		checkAgainstEncodingJSON(t, unit, results)
	})
}
