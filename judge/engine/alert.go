package engine

import (
	"sort"
	"strings"
	"time"

	"github.com/opskit/opskit/internal/metric"
)

// State of an alert.
type State string

// Alert states. An alert that is inactive is not kept at all.
const (
	StatePending  State = "pending"
	StateFiring   State = "firing"
	StateResolved State = "resolved"
)

// Kind says what raised an alert.
type Kind string

// Alert kinds.
const (
	KindCondition  Kind = "condition"
	KindNodata     Kind = "nodata"      // one series stopped reporting
	KindHostNodata Kind = "host_nodata" // every series of a host stopped
)

// Alert is one alert of one strategy on one series (or one host for
// host nodata). It is what judge persists and what it sends.
type Alert struct {
	Key      string `json:"-"`
	Strategy string `json:"strategy"`
	Kind     Kind   `json:"kind"`
	State    State  `json:"state"`
	// Series is the series' labels (name, endpoint, tags), kept so a
	// restart can rebuild the series before it reports again.
	Series      map[string]string `json:"series"`
	Labels      map[string]string `json:"labels"`
	Annotations map[string]string `json:"annotations"`
	Value       float64           `json:"value"`
	// ActiveAt is when the condition first held (pending since).
	ActiveAt time.Time `json:"active_at"`
	StartsAt time.Time `json:"starts_at,omitzero"`
	EndsAt   time.Time `json:"ends_at,omitzero"`
	// LastHeld is the last time the condition held (keep_firing_for).
	LastHeld     time.Time `json:"last_held,omitzero"`
	Notified     int       `json:"notified"`
	LastNotified time.Time `json:"last_notified,omitzero"`
	// Delivered is set once a resolved alert reached every destination.
	Delivered   bool      `json:"delivered,omitempty"`
	DeliveredAt time.Time `json:"delivered_at,omitzero"`
	// ResolvedValue is the value when the alert recovered.
	ResolvedValue float64 `json:"resolved_value,omitempty"`
}

// Transition is a change of an alert worth telling: firing, repeat (a
// reminder while firing, under max_step and repeat_interval) or resolved.
type Transition struct {
	Status   string            `json:"status"`
	Alert    string            `json:"alertname"`
	Kind     Kind              `json:"kind"`
	Labels   map[string]string `json:"labels"`
	Value    float64           `json:"value"`
	At       time.Time         `json:"at"`
	StartsAt time.Time         `json:"startsAt"`
	// Duration is how long the alert lasted, on resolved.
	Duration string `json:"duration,omitempty"`
	Summary  string `json:"summary,omitempty"`
}

func (a *Alert) transition(status string, at time.Time) Transition {
	t := Transition{Status: status, Alert: a.Strategy, Kind: a.Kind, Labels: a.Labels, Value: a.Value, At: at, StartsAt: a.StartsAt, Summary: a.Annotations["summary"]}
	if status == "resolved" {
		t.Value = a.ResolvedValue
		t.Duration = a.EndsAt.Sub(a.StartsAt).String()
	}
	return t
}

func copyAlert(a *Alert) Alert {
	c := *a
	c.Labels = cloneMap(a.Labels)
	c.Annotations = cloneMap(a.Annotations)
	c.Series = cloneMap(a.Series)
	return c
}

func cloneMap(m map[string]string) map[string]string {
	if m == nil {
		return nil
	}
	out := make(map[string]string, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
}

func labelsMap(ls metric.Labels) map[string]string {
	m := make(map[string]string, len(ls))
	for _, l := range ls {
		m[l.Name] = l.Value
	}
	return m
}

func labelsFromMap(m map[string]string) metric.Labels {
	pairs := make([]metric.Label, 0, len(m))
	for k, v := range m {
		pairs = append(pairs, metric.Label{Name: k, Value: v})
	}
	return metric.New(pairs...)
}

// alertKey identifies an alert: strategy and series, or strategy and host.
func alertKey(strategy string, kind Kind, seriesKey string) string {
	return strategy + "\x00" + string(kind) + "\x00" + seriesKey
}

// sortAlerts orders alerts by key for stable output.
func sortAlerts(as []Alert) {
	sort.Slice(as, func(i, j int) bool { return strings.Compare(as[i].Key, as[j].Key) < 0 })
}
