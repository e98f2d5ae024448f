package notify

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"time"

	"golang.org/x/time/rate"

	"github.com/opskit/opskit/alarm/alert"
	"github.com/opskit/opskit/alarm/store"
)

// RateLimitConfig is a receiver's storm control: at most PerMinute
// notifications a minute (with bursts of Burst). Beyond it, notifications
// are folded into one summary sent when the limit allows again; nothing is
// dropped.
type RateLimitConfig struct {
	PerMinute float64 `yaml:"per_minute"`
	Burst     int     `yaml:"burst"`
}

func newLimiter(c *RateLimitConfig) (*rate.Limiter, error) {
	if c.PerMinute <= 0 {
		return nil, fmt.Errorf("rate_limit.per_minute must be positive")
	}
	burst := c.Burst
	if burst <= 0 {
		burst = 1
	}
	return rate.NewLimiter(rate.Limit(c.PerMinute/60), burst), nil
}

// fold holds nt back for a storm summary.
func (n *Notifier) fold(nt *Notification) {
	nt.Folded = true
	n.folded.Inc()
	n.mu.Lock()
	n.foldedByReceiver[nt.Receiver] = append(n.foldedByReceiver[nt.Receiver], nt)
	n.mu.Unlock()
	n.db.Batch(func(tx *store.Tx) error { return n.writeOutbox(tx, nt) })
	if n.rec != nil {
		n.rec.Record("folded", nt, "storm control")
	}
}

// flushFolded sends one summary per integration of what storm control
// folded for receiver r, when the limit allows one more message.
func (n *Notifier) flushFolded(ctx context.Context, r *Receiver) error {
	n.mu.Lock()
	held := n.foldedByReceiver[r.Name]
	if len(held) == 0 || r.limiter == nil || !r.limiter.AllowN(n.opt.Now(), 1) {
		n.mu.Unlock()
		return nil
	}
	delete(n.foldedByReceiver, r.Name)
	n.mu.Unlock()
	byIntegration := map[string][]*Notification{}
	var names []string
	for _, nt := range held {
		if byIntegration[nt.Integration] == nil {
			names = append(names, nt.Integration)
		}
		byIntegration[nt.Integration] = append(byIntegration[nt.Integration], nt)
	}
	sort.Strings(names)
	now := n.opt.Now()
	var queued []*Notification
	err := n.db.Batch(func(tx *store.Tx) error {
		queued = queued[:0]
		for _, name := range names {
			folded := byIntegration[name]
			del := make([]store.KV, len(folded))
			for j, nt := range folded {
				del[j] = store.KV{Key: nt.seq}
			}
			if err := tx.Write(store.Outbox, del); err != nil {
				return err
			}
			i, in := r.integration(name)
			if in == nil {
				continue
			}
			p := stormPayload(r.Name, name, n.opt.ExternalURL, folded, in.maxAlerts(), now)
			p.CommonAnnotations["summary"] = fmt.Sprintf("storm control: %d notifications for %d groups folded into this one (limit %g a minute)",
				len(folded), countGroups(folded), float64(r.limiter.Limit())*60)
			nt, err := n.stage(tx, r, in, i, KindStorm, p, now)
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
		// Keep them for the next try.
		n.mu.Lock()
		n.foldedByReceiver[r.Name] = append(held, n.foldedByReceiver[r.Name]...)
		n.mu.Unlock()
		return fmt.Errorf("storm summary for %s: %w", r.Name, err)
	}
	for _, nt := range queued {
		if n.rec != nil {
			n.rec.Record("notification_queued", nt, "storm summary")
		}
		if err := n.work.Push(ctx, nt); err != nil {
			return err
		}
	}
	return nil
}

func countGroups(nts []*Notification) int {
	seen := map[string]bool{}
	for _, nt := range nts {
		seen[nt.GroupKey] = true
	}
	return len(seen)
}

// stormPayload joins the alerts of folded notifications, the latest report
// of each alert winning.
func stormPayload(receiver, integration, externalURL string, folded []*Notification, maxAlerts int, now time.Time) *Payload {
	latest := map[string]*alert.Alert{}
	var order []string
	var groups []string
	for _, nt := range folded {
		groups = append(groups, nt.GroupKey)
		if nt.Payload == nil {
			continue
		}
		for _, pa := range nt.Payload.Alerts {
			a := &alert.Alert{Labels: pa.Labels, Annotations: pa.Annotations, StartsAt: pa.StartsAt, EndsAt: pa.EndsAt, GeneratorURL: pa.GeneratorURL}
			if pa.Status == StatusFiring {
				a.EndsAt = time.Time{}
			}
			if _, ok := latest[pa.Fingerprint]; !ok {
				order = append(order, pa.Fingerprint)
			}
			latest[pa.Fingerprint] = a
		}
	}
	alerts := make([]*alert.Alert, 0, len(order))
	for _, fp := range order {
		alerts = append(alerts, latest[fp])
	}
	SortAlerts(alerts)
	p := BuildPayload(receiver, "storm:"+receiver+"/"+integration, externalURL, alert.Labels{}, alerts, maxAlerts, now)
	if len(groups) > 20 {
		groups = append(groups[:20], "…")
	}
	p.CommonAnnotations["groups"] = strings.Join(groups, "\n")
	return p
}
