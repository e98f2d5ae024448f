package alert

import (
	"testing"
	"time"
)

// FuzzDecode checks that Decode never panics and that every alert it keeps
// is complete: labels present, both times set, start not after end.
func FuzzDecode(f *testing.F) {
	f.Add([]byte(`[{"labels":{"alertname":"A","instance":"web01"},"annotations":{"summary":"x"},"startsAt":"2026-01-02T03:00:00Z"}]`))
	f.Add([]byte(`[{"labels":{}},{"labels":{"a":"b"},"endsAt":"2026-01-02T03:00:00Z"}]`))
	f.Fuzz(func(t *testing.T, body []byte) {
		now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
		alerts, _, err := Decode(body, now, time.Minute, DefaultLimits)
		if err != nil {
			return
		}
		for _, a := range alerts {
			if len(a.Labels) == 0 || a.StartsAt.IsZero() || a.EndsAt.IsZero() || a.EndsAt.Before(a.StartsAt) || a.Annotations == nil {
				t.Fatalf("incomplete alert kept: %+v", a)
			}
		}
	})
}
