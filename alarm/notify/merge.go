package notify

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/opskit/opskit/alarm/alert"
	"github.com/opskit/opskit/alarm/store"
)

// MergeConfig makes a receiver merge low-priority alerts the way
// open-falcon does: alerts whose priority label is at least MinPriority
// are held and sent every Interval as one message per priority, status and
// metric ("12 hosts: df.bytes.free.percent < 5, e.g. web01, web02, …");
// more urgent alerts (and alerts without a priority) go out at once.
type MergeConfig struct {
	MinPriority   int           `yaml:"min_priority"`   // default 3
	Interval      time.Duration `yaml:"interval"`       // default 1m
	PriorityLabel string        `yaml:"priority_label"` // default "priority"
	MetricLabel   string        `yaml:"metric_label"`   // default "metric", else alertname
	HostLabel     string        `yaml:"host_label"`     // default "endpoint", else instance
	// ConditionAnnotation names the annotation describing the condition
	// (default "condition", else "summary").
	ConditionAnnotation string `yaml:"condition_annotation"`
}

type merger struct {
	cfg MergeConfig
}

func newMerger(c *MergeConfig) (*merger, error) {
	m := &merger{cfg: *c}
	if m.cfg.MinPriority == 0 {
		m.cfg.MinPriority = 3
	}
	if m.cfg.Interval == 0 {
		m.cfg.Interval = time.Minute
	}
	if m.cfg.Interval < 0 {
		return nil, fmt.Errorf("merge.interval must be positive")
	}
	if m.cfg.PriorityLabel == "" {
		m.cfg.PriorityLabel = "priority"
	}
	if m.cfg.MetricLabel == "" {
		m.cfg.MetricLabel = "metric"
	}
	if m.cfg.HostLabel == "" {
		m.cfg.HostLabel = "endpoint"
	}
	if m.cfg.ConditionAnnotation == "" {
		m.cfg.ConditionAnnotation = "condition"
	}
	return m, nil
}

// Priority reads a priority label value: "3", "P3" or "p3"; ok is false
// when there is none.
func Priority(v string) (int, bool) {
	v = strings.TrimPrefix(strings.TrimPrefix(v, "P"), "p")
	p, err := strconv.Atoi(v)
	return p, err == nil && p >= 0
}

func (m *merger) priority(a *alert.Alert) (int, bool) {
	return Priority(a.Labels[m.cfg.PriorityLabel])
}

func (m *merger) metric(a *alert.Alert) string {
	if v := a.Labels[m.cfg.MetricLabel]; v != "" {
		return v
	}
	return a.Labels["alertname"]
}

func (m *merger) host(a *alert.Alert) string {
	if v := a.Labels[m.cfg.HostLabel]; v != "" {
		return v
	}
	if v := a.Labels["instance"]; v != "" {
		return v
	}
	return a.Fingerprint().String()
}

// split separates the alerts to send now from those to merge.
func (m *merger) split(alerts []*alert.Alert) (urgent, deferred []*alert.Alert) {
	for _, a := range alerts {
		if p, ok := m.priority(a); ok && p >= m.cfg.MinPriority {
			deferred = append(deferred, a)
		} else {
			urgent = append(urgent, a)
		}
	}
	return urgent, deferred
}

// mergeKey is receiver, integration, priority, status, metric, fingerprint,
// separated by 0x00; everything before the fingerprint names the message.
func mergeKey(receiver, integration string, prio int, status, metric string, fp alert.Fingerprint) []byte {
	return []byte(strings.Join([]string{receiver, integration, strconv.Itoa(prio), status, metric, fp.String()}, "\x00"))
}

// hold stores deferred alerts for the next merge; a newer report of the
// same alert replaces the older one.
func (m *merger) hold(tx *store.Tx, receiver, integration string, alerts []*alert.Alert, now time.Time) error {
	kvs := make([]store.KV, 0, len(alerts))
	for _, a := range alerts {
		p, _ := m.priority(a)
		status := StatusFiring
		if a.Resolved(now) {
			status = StatusResolved
		}
		v, err := json.Marshal(a)
		if err != nil {
			return err
		}
		kvs = append(kvs, store.KV{Key: mergeKey(receiver, integration, p, status, m.metric(a), a.Fingerprint()), Value: v})
	}
	return tx.Write(store.Merge, kvs)
}

type mergeBatch struct {
	integration string
	prio        int
	status      string
	metric      string
	keys        [][]byte
	alerts      []*alert.Alert
}

// flushMerged sends what receiver r has held: one notification per
// integration, priority, status and metric.
func (n *Notifier) flushMerged(ctx context.Context, r *Receiver) error {
	prefix := []byte(r.Name + "\x00")
	batches := map[string]*mergeBatch{}
	var order []string
	err := n.db.ForEach(store.Merge, prefix, func(k, v []byte) error {
		if !bytes.HasPrefix(k, prefix) {
			return store.ErrStop
		}
		parts := strings.Split(string(k), "\x00")
		if len(parts) != 6 {
			return nil
		}
		a := &alert.Alert{}
		if err := json.Unmarshal(v, a); err != nil {
			return nil
		}
		id := strings.Join(parts[1:5], "\x00")
		b := batches[id]
		if b == nil {
			prio, _ := strconv.Atoi(parts[2])
			b = &mergeBatch{integration: parts[1], prio: prio, status: parts[3], metric: parts[4]}
			batches[id] = b
			order = append(order, id)
		}
		b.keys = append(b.keys, append([]byte(nil), k...))
		b.alerts = append(b.alerts, a)
		return nil
	})
	if err != nil || len(batches) == 0 {
		return err
	}
	now := n.opt.Now()
	var queued []*Notification
	err = n.db.Batch(func(tx *store.Tx) error {
		queued = queued[:0]
		for _, id := range order {
			b := batches[id]
			i, in := r.integration(b.integration)
			del := make([]store.KV, len(b.keys))
			for j, k := range b.keys {
				del[j] = store.KV{Key: k}
			}
			if err := tx.Write(store.Merge, del); err != nil {
				return err
			}
			if in == nil {
				continue // the integration is gone since a reload
			}
			SortAlerts(b.alerts)
			groupLabels := alert.Labels{r.merge.cfg.PriorityLabel: strconv.Itoa(b.prio), r.merge.cfg.MetricLabel: b.metric}
			key := fmt.Sprintf("merged:%s/%s:%s", r.Name, b.status, groupLabels)
			p := BuildPayload(r.Name, key, n.opt.ExternalURL, groupLabels, b.alerts, in.maxAlerts(), now)
			p.CommonAnnotations["summary"] = r.merge.summary(b.alerts)
			p.CommonAnnotations["alarm_url"] = r.merge.link(n.opt.ExternalURL, b)
			nt, err := n.stage(tx, r, in, i, KindMerged, p, now)
			if err != nil {
				return err
			}
			if err := n.writeOutbox(tx, nt); err != nil {
				return err
			}
			queued = append(queued, nt)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("merge for %s: %w", r.Name, err)
	}
	for _, nt := range queued {
		if n.rec != nil {
			n.rec.Record("notification_queued", nt, "merged")
		}
		if err := n.work.Push(ctx, nt); err != nil {
			return err
		}
	}
	return nil
}

// summary is the one line of a merged message.
func (m *merger) summary(alerts []*alert.Alert) string {
	hosts := make([]string, 0, len(alerts))
	seen := map[string]bool{}
	for _, a := range alerts {
		h := m.host(a)
		if !seen[h] {
			seen[h] = true
			hosts = append(hosts, h)
		}
	}
	sort.Strings(hosts)
	cond := alerts[0].Annotations[m.cfg.ConditionAnnotation]
	if cond == "" {
		cond = alerts[0].Annotations["summary"]
	}
	if cond == "" {
		cond = m.metric(alerts[0])
	}
	noun := "hosts"
	if len(hosts) == 1 {
		noun = "host"
	}
	example := hosts
	more := ""
	if len(example) > 3 {
		example, more = example[:3], ", …"
	}
	return fmt.Sprintf("%d %s: %s, e.g. %s%s", len(hosts), noun, cond, strings.Join(example, ", "), more)
}

// link is alarm's own API query listing every alert of the message.
func (m *merger) link(externalURL string, b *mergeBatch) string {
	q := url.Values{}
	q.Add("filter", fmt.Sprintf("%s=%q", m.cfg.PriorityLabel, strconv.Itoa(b.prio)))
	if b.alerts[0].Labels[m.cfg.MetricLabel] != "" {
		q.Add("filter", fmt.Sprintf("%s=%q", m.cfg.MetricLabel, b.metric))
	} else {
		q.Add("filter", fmt.Sprintf("alertname=%q", b.metric))
	}
	return strings.TrimRight(externalURL, "/") + "/api/v2/alerts?" + q.Encode()
}
