package notify

import (
	"sort"
	"time"

	"github.com/opskit/opskit/alarm/alert"
)

// Payload is the Alertmanager webhook payload, version 4.
type Payload struct {
	Receiver          string         `json:"receiver"`
	Status            string         `json:"status"`
	Alerts            []PayloadAlert `json:"alerts"`
	GroupLabels       alert.Labels   `json:"groupLabels"`
	CommonLabels      alert.Labels   `json:"commonLabels"`
	CommonAnnotations alert.Labels   `json:"commonAnnotations"`
	ExternalURL       string         `json:"externalURL"`
	Version           string         `json:"version"`
	GroupKey          string         `json:"groupKey"`
	TruncatedAlerts   int            `json:"truncatedAlerts"`
}

// PayloadAlert is one alert of a Payload.
type PayloadAlert struct {
	Status       string       `json:"status"`
	Labels       alert.Labels `json:"labels"`
	Annotations  alert.Labels `json:"annotations"`
	StartsAt     time.Time    `json:"startsAt"`
	EndsAt       time.Time    `json:"endsAt"`
	GeneratorURL string       `json:"generatorURL"`
	Fingerprint  string       `json:"fingerprint"`
}

// Status values.
const (
	StatusFiring   = "firing"
	StatusResolved = "resolved"
)

// BuildPayload makes the v4 payload of a group's alerts: at most maxAlerts
// of them (0 = all; the rest counted in truncatedAlerts), firing alerts
// with a zero endsAt as Alertmanager shows them.
func BuildPayload(receiver, groupKey, externalURL string, groupLabels alert.Labels, alerts []*alert.Alert, maxAlerts int, now time.Time) *Payload {
	truncated := 0
	if maxAlerts > 0 && len(alerts) > maxAlerts {
		truncated = len(alerts) - maxAlerts
		alerts = alerts[:maxAlerts]
	}
	p := &Payload{
		Receiver: receiver, Status: StatusResolved, GroupLabels: groupLabels, ExternalURL: externalURL,
		Version: "4", GroupKey: groupKey, TruncatedAlerts: truncated,
		CommonLabels: alert.Labels{}, CommonAnnotations: alert.Labels{},
		Alerts: make([]PayloadAlert, 0, len(alerts)),
	}
	if p.GroupLabels == nil {
		p.GroupLabels = alert.Labels{}
	}
	for i, a := range alerts {
		pa := PayloadAlert{
			Status: StatusResolved, Labels: a.Labels, Annotations: a.Annotations,
			StartsAt: a.StartsAt, EndsAt: a.EndsAt, GeneratorURL: a.GeneratorURL,
			Fingerprint: a.Fingerprint().String(),
		}
		if !a.Resolved(now) {
			pa.Status = StatusFiring
			pa.EndsAt = time.Time{}
			p.Status = StatusFiring
		}
		p.Alerts = append(p.Alerts, pa)
		if i == 0 {
			for k, v := range a.Labels {
				p.CommonLabels[k] = v
			}
			for k, v := range a.Annotations {
				p.CommonAnnotations[k] = v
			}
			continue
		}
		for k, v := range p.CommonLabels {
			if a.Labels[k] != v {
				delete(p.CommonLabels, k)
			}
		}
		for k, v := range p.CommonAnnotations {
			if w, ok := a.Annotations[k]; !ok || w != v {
				delete(p.CommonAnnotations, k)
			}
		}
	}
	return p
}

// SortAlerts orders alerts by their label sets, as Alertmanager lists a
// group's alerts.
func SortAlerts(alerts []*alert.Alert) {
	keys := make(map[*alert.Alert]string, len(alerts))
	for _, a := range alerts {
		keys[a] = a.Labels.String()
	}
	sort.SliceStable(alerts, func(i, j int) bool { return keys[alerts[i]] < keys[alerts[j]] })
}
