// Package notify sends judge's alerts to Alertmanager-compatible receivers
// (opskit's alarm or a real Alertmanager) with POST /api/v2/alerts: at
// once when an alert changes, and every resend interval for all firing
// alerts, as the API expects (an alert not re-sent before its endsAt is
// taken as resolved). Resolved alerts carry the recovery value and how
// long the alert lasted.
package notify

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net/http"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/opskit/opskit/internal/dye"
	"github.com/opskit/opskit/internal/hop"
	"github.com/opskit/opskit/judge/engine"
)

// Source gives the alerts to send and learns which recoveries arrived.
type Source interface {
	// Outgoing is every alert to send: all firing, recent recoveries.
	Outgoing() []engine.Alert
	// Fresh is what changed since the last call: sent at once on a kick.
	Fresh() []engine.Alert
	MarkDelivered(sent []engine.Alert, now time.Time)
}

// Config tunes a Sender.
type Config struct {
	// Addrs are the receivers: host:port or http(s)://host:port[/prefix].
	Addrs []string
	// ResendInterval is how often every firing alert is sent again.
	ResendInterval time.Duration
	// Timeout bounds one POST.
	Timeout time.Duration
	// GeneratorURL is the base URL of transfer's query API; empty leaves
	// generatorURL out.
	GeneratorURL string
	// BatchSize is the most alerts in one POST.
	BatchSize int
	Client    *http.Client
	Log       *slog.Logger
	// Hops counts the alerts each receiver took (see internal/hop); Dye
	// marks the alerts of dyed series with the annotation opskit_dye and
	// traces their delivery. Both optional.
	Hops *hop.Set
	Dye  *dye.Tracer
}

// Sender posts alerts to the receivers.
type Sender struct {
	cfg   Config
	src   Source
	urls  []string
	addrs []string // the receivers as hop labels
	kick  chan struct{}

	sent, failed atomic.Uint64
}

// New returns a sender; Run does the work.
func New(cfg Config, src Source) (*Sender, error) {
	if cfg.ResendInterval <= 0 {
		cfg.ResendInterval = time.Minute
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = 10 * time.Second
	}
	if cfg.BatchSize <= 0 {
		cfg.BatchSize = 1000
	}
	if cfg.Client == nil {
		cfg.Client = &http.Client{}
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	s := &Sender{cfg: cfg, src: src, kick: make(chan struct{}, 1)}
	for _, a := range cfg.Addrs {
		a = strings.TrimSpace(a)
		if a == "" {
			continue
		}
		if !strings.Contains(a, "://") {
			a = "http://" + a
		}
		u, err := url.Parse(a)
		if err != nil || u.Host == "" {
			return nil, fmt.Errorf("--alarm %q: want host:port or an http URL", a)
		}
		s.urls = append(s.urls, strings.TrimSuffix(u.String(), "/")+"/api/v2/alerts")
		s.addrs = append(s.addrs, hop.Addr(a))
	}
	return s, nil
}

// Kick asks for a send now (after a transition); it never blocks.
func (s *Sender) Kick() {
	select {
	case s.kick <- struct{}{}:
	default:
	}
}

// Counts returns the POSTs that succeeded and failed.
func (s *Sender) Counts() (sent, failed uint64) { return s.sent.Load(), s.failed.Load() }

// Run sends on every kick and every resend interval until ctx ends, then
// makes a last attempt so recoveries found while stopping go out.
func (s *Sender) Run(ctx context.Context) error {
	if len(s.urls) == 0 {
		<-ctx.Done()
		return nil
	}
	tick := time.NewTicker(s.cfg.ResendInterval)
	defer tick.Stop()
	// After a failed send everything is sent again soon, not only at the
	// next resend: what failed may be a recovery.
	retry := time.NewTimer(time.Hour)
	retry.Stop()
	s.src.Fresh()
	failed := s.SendOnce(ctx, time.Now()) != nil
	for {
		if failed {
			retry.Reset(min(s.cfg.ResendInterval, retryDelay))
		}
		var err error
		select {
		case <-ctx.Done():
			last, cancel := context.WithTimeout(context.Background(), s.cfg.Timeout)
			s.src.Fresh()
			s.SendOnce(last, time.Now())
			cancel()
			return nil
		case <-s.kick:
			if failed {
				continue // the retry sends everything
			}
			err = s.send(ctx, s.src.Fresh(), time.Now())
		case <-tick.C:
			s.src.Fresh()
			err = s.SendOnce(ctx, time.Now())
		case <-retry.C:
			s.src.Fresh()
			err = s.SendOnce(ctx, time.Now())
		}
		failed = err != nil
	}
}

// retryDelay is the wait before sending everything again after a failure.
const retryDelay = time.Second

// Alert is one alert in Alertmanager's v2 API.
type Alert struct {
	Labels       map[string]string `json:"labels"`
	Annotations  map[string]string `json:"annotations,omitempty"`
	StartsAt     time.Time         `json:"startsAt,omitzero"`
	EndsAt       time.Time         `json:"endsAt,omitzero"`
	GeneratorURL string            `json:"generatorURL,omitempty"`
}

// SendOnce posts every outgoing alert to every receiver; it returns the
// first error. Recoveries are marked delivered only when every receiver
// took them.
func (s *Sender) SendOnce(ctx context.Context, now time.Time) error {
	return s.send(ctx, s.src.Outgoing(), now)
}

func (s *Sender) send(ctx context.Context, alerts []engine.Alert, now time.Time) error {
	if len(alerts) == 0 {
		return nil
	}
	var firstErr error
	for start := 0; start < len(alerts); start += s.cfg.BatchSize {
		batch := alerts[start:min(start+s.cfg.BatchSize, len(alerts))]
		body, err := json.Marshal(s.Payload(batch, now))
		if err != nil {
			return fmt.Errorf("encode alerts: %w", err)
		}
		ok := true
		for i, u := range s.urls {
			if err := s.post(ctx, u, body); err != nil {
				ok = false
				s.failed.Add(1)
				s.cfg.Hops.To(s.addrs[i]).Failed()
				s.cfg.Log.Warn("sending alerts failed; retrying at the next resend or change", "url", u, "alerts", len(batch), "err", err)
				if firstErr == nil {
					firstErr = err
				}
				continue
			}
			s.sent.Add(1)
			s.acked(s.addrs[i], batch, now)
		}
		if ok {
			s.src.MarkDelivered(batch, time.Now())
		}
	}
	return firstErr
}

func (s *Sender) post(ctx context.Context, u string, body []byte) error {
	ctx, cancel := context.WithTimeout(ctx, s.cfg.Timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, u, bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := s.cfg.Client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	msg, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("%s: HTTP %d: %s", u, resp.StatusCode, bytes.TrimSpace(msg))
	}
	return nil
}

// acked counts alerts a receiver took: their latency runs from the send
// decision (the transition's kick, or the resend tick) at since.
func (s *Sender) acked(addr string, batch []engine.Alert, since time.Time) {
	took := time.Since(since)
	s.cfg.Hops.To(addr).Acked(len(batch), took*time.Duration(len(batch)))
	if !s.cfg.Dye.Active() {
		return
	}
	for i := range batch {
		if id := s.cfg.Dye.MatchMap(batch[i].Series); id != "" {
			s.cfg.Dye.Hop(id, "send "+addr, alertSummary(&batch[i]), took)
		}
	}
}

func alertSummary(a *engine.Alert) string {
	return fmt.Sprintf("%s %s %s %s value=%g", a.Strategy, a.State, a.Labels["endpoint"], a.Labels["metric"], a.Value)
}

// Payload converts alerts to the v2 API's form at now. A firing alert's
// endsAt lies four resend intervals ahead, so it stays firing between
// re-sends and resolves by itself if judge goes away for good.
func (s *Sender) Payload(alerts []engine.Alert, now time.Time) []Alert {
	out := make([]Alert, 0, len(alerts))
	for _, a := range alerts {
		p := Alert{Labels: a.Labels, Annotations: a.Annotations, StartsAt: a.StartsAt, GeneratorURL: s.generatorURL(a)}
		if id := s.cfg.Dye.MatchMap(a.Series); id != "" {
			// Alarm recognises the dye by this annotation; annotations
			// are not part of an alert's identity.
			anns := make(map[string]string, len(p.Annotations)+1)
			maps.Copy(anns, p.Annotations)
			anns[dye.Annotation] = id
			p.Annotations = anns
		}
		switch a.State {
		case engine.StateFiring:
			p.EndsAt = now.Add(4 * s.cfg.ResendInterval)
		case engine.StateResolved:
			p.EndsAt = a.EndsAt
			anns := make(map[string]string, len(p.Annotations)+2)
			for k, v := range p.Annotations {
				anns[k] = v
			}
			anns["recovery_value"] = strconv.FormatFloat(a.ResolvedValue, 'g', -1, 64)
			anns["duration"] = a.EndsAt.Sub(a.StartsAt).String()
			p.Annotations = anns
		default:
			continue
		}
		out = append(out, p)
	}
	return out
}

// generatorURL points at transfer's query for the series (or the host).
func (s *Sender) generatorURL(a engine.Alert) string {
	if s.cfg.GeneratorURL == "" {
		return ""
	}
	sel := a.Series
	if sel == nil {
		sel = map[string]string{"endpoint": a.Labels["endpoint"]}
	}
	return strings.TrimSuffix(s.cfg.GeneratorURL, "/") + "/api/v1/query?query=" + url.QueryEscape(Selector(sel))
}

// Selector writes a PromQL selector matching exactly the labels given.
func Selector(labels map[string]string) string {
	names := make([]string, 0, len(labels))
	for k := range labels {
		names = append(names, k)
	}
	sort.Strings(names)
	var b strings.Builder
	b.WriteByte('{')
	for i, k := range names {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(k)
		b.WriteString("=")
		b.WriteString(strconv.Quote(labels[k]))
	}
	b.WriteByte('}')
	return b.String()
}
