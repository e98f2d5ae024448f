package server

import (
	"encoding/json"
	"testing"

	"github.com/opskit/opskit/abtest/events"
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
