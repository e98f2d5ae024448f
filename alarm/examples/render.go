package examples

import (
	"time"

	"github.com/opskit/opskit/alarm/alert"
	"github.com/opskit/opskit/alarm/notify"
)

// RenderSample renders receiver r's first integration for a sample group:
// one firing alert and one that recovered after 90 minutes.
func RenderSample(r *notify.Receiver, now time.Time) ([]byte, error) {
	alerts := []*alert.Alert{
		{Labels: alert.Labels{"alertname": "DiskFull", "instance": "web01"}, Annotations: alert.Labels{"summary": "/ is \"full\"", "value": "42"},
			StartsAt: now.Add(-91 * time.Minute), EndsAt: now.Add(-time.Minute)},
		{Labels: alert.Labels{"alertname": "DiskFull", "instance": "web02"}, Annotations: alert.Labels{"summary": "/ is \"full\""},
			StartsAt: now.Add(-time.Minute), EndsAt: now.Add(time.Hour)},
	}
	p := notify.BuildPayload(r.Name, `{}:{alertname="DiskFull"}`, "http://alarm:7140", alert.Labels{"alertname": "DiskFull"}, alerts, 0, now)
	return r.Render(0, p, now)
}
