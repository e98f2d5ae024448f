// Package relay moves collector's points to transfer. Producers hand points
// to a Writer, which encodes them as open-falcon JSON batches into the disk
// spool (internal/spool), snappy-compressed; a Relay reads the spool in
// order and posts each batch to
// transfer's POST /api/push, failing over across the listed transfer nodes
// and backing off while none answers. A batch leaves the spool only once a
// transfer has answered for it, so nothing is lost while transfer is down
// (within the spool's bound).
package relay

import (
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"strings"
	"time"

	"github.com/VictoriaMetrics/metrics"
	"github.com/golang/snappy"

	"github.com/opskit/opskit/collector/falconfmt"
	"github.com/opskit/opskit/internal/dye"
	"github.com/opskit/opskit/internal/hop"
	"github.com/opskit/opskit/internal/metric"
	"github.com/opskit/opskit/internal/spool"
	"github.com/opskit/opskit/transfer/intake"
	"github.com/opskit/opskit/transfer/intake/falcon"
)

// Writer encodes points into spool records of at most BatchPoints points,
// each a snappy-compressed open-falcon JSON array (the spool's Count is the
// number of points).
type Writer struct {
	Spool       *spool.Spool
	Defaults    falconfmt.Defaults
	BatchPoints int
	// Backlog, when set, learns when points were spooled (the relay's hop
	// latency is measured from there); Dye traces dyed points at intake.
	Backlog *hop.Backlog
	Dye     *dye.Tracer
}

// Write appends pts to the spool; when it returns nil they are on disk.
func (w *Writer) Write(ctx context.Context, pts []metric.Point) error {
	if len(pts) == 0 {
		return nil
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	n := w.BatchPoints
	if n <= 0 {
		n = DefaultBatchPoints
	}
	recs := make([]spool.Record, 0, (len(pts)+n-1)/n)
	for start := 0; start < len(pts); start += n {
		chunk := pts[start:min(start+n, len(pts))]
		recs = append(recs, spool.Record{Count: len(chunk), Data: snappy.Encode(nil, falconfmt.AppendArray(nil, chunk, w.Defaults))})
	}
	now := time.Now()
	// Noted before the append, so that the relay cannot acknowledge the
	// points before their intake time is known.
	w.Backlog.Add(len(pts), now)
	if err := w.Spool.Append(ctx, recs...); err != nil {
		w.Backlog.Forget(len(pts))
		return err
	}
	took := time.Since(now)
	w.Dye.Points("intake", pts, func(*metric.Point) time.Duration { return took })
	return nil
}

// Defaults of Config.
const (
	DefaultBatchPoints = 2000
	DefaultTimeout     = 10 * time.Second
	DefaultBackoffMin  = 500 * time.Millisecond
	DefaultBackoffMax  = 30 * time.Second
)

// Config configures a Relay.
type Config struct {
	// Targets are transfer HTTP addresses (host:port or URLs), tried in
	// order; the relay stays on one that answers until it fails.
	Targets []string
	// BatchPoints bounds the points of one request (records are not split).
	BatchPoints int
	// Timeout bounds one request.
	Timeout time.Duration
	// BackoffMin and BackoffMax bound the wait after every target failed;
	// the wait doubles (with jitter) each round and resets on success.
	BackoffMin, BackoffMax time.Duration
	// Gzip sends bodies with Content-Encoding: gzip (the transfer must
	// accept it).
	Gzip bool
	// Client is the HTTP client (default: one with Timeout).
	Client *http.Client
	// Hops counts what each target acknowledged; Backlog (shared with the
	// Writer) gives the points' intake times. Dye traces dyed points when
	// a target acknowledges them. All optional.
	Hops    *hop.Set
	Backlog *hop.Backlog
	Dye     *dye.Tracer
}

// Relay sends the spool's batches to transfer.
type Relay struct {
	cfg     Config
	targets []string
	addrs   []string // the targets as hop labels
	spool   *spool.Spool
	log     *slog.Logger
	current int

	sent, dropped, failures *metrics.Counter
	set                     *metrics.Set
}

// New returns a relay from sp to cfg.Targets, registering its metrics in
// set.
func New(cfg Config, sp *spool.Spool, set *metrics.Set, log *slog.Logger) (*Relay, error) {
	if len(cfg.Targets) == 0 {
		return nil, errors.New("relay: no transfer address")
	}
	if cfg.BatchPoints <= 0 {
		cfg.BatchPoints = DefaultBatchPoints
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = DefaultTimeout
	}
	if cfg.BackoffMin <= 0 {
		cfg.BackoffMin = DefaultBackoffMin
	}
	if cfg.BackoffMax < cfg.BackoffMin {
		cfg.BackoffMax = max(DefaultBackoffMax, cfg.BackoffMin)
	}
	if cfg.Client == nil {
		cfg.Client = &http.Client{Timeout: cfg.Timeout}
	}
	r := &Relay{cfg: cfg, spool: sp, log: log, set: set}
	for _, t := range cfg.Targets {
		t = strings.TrimSpace(t)
		if t == "" {
			continue
		}
		if !strings.Contains(t, "://") {
			t = "http://" + t
		}
		r.targets = append(r.targets, strings.TrimRight(t, "/")+"/api/push")
		r.addrs = append(r.addrs, hop.Addr(t))
	}
	if len(r.targets) == 0 {
		return nil, errors.New("relay: no transfer address")
	}
	r.sent = set.NewCounter("opskit_collector_relay_sent_points_total")
	r.dropped = set.NewCounter(`opskit_collector_relay_dropped_points_total{reason="unsendable"}`)
	r.failures = set.NewCounter("opskit_collector_relay_failed_requests_total")
	set.NewGauge("opskit_collector_relay_targets", func() float64 { return float64(len(r.targets)) })
	return r, nil
}

// outcome of one request.
type outcome int

const (
	delivered outcome = iota // answered for: ack the batch
	tooLarge                 // 413: send fewer records
	retry                    // network error or 5xx: try the next target
)

// Run sends batches until ctx ends. It returns nil then; points not yet
// sent stay in the spool for the next start.
func (r *Relay) Run(ctx context.Context) error {
	backoff := time.Duration(0)
	maxRecords := 1 << 20
	for {
		b, err := r.spool.Peek(maxRecords, r.cfg.BatchPoints)
		if err != nil {
			if errors.Is(err, spool.ErrClosed) {
				return nil
			}
			return fmt.Errorf("relay: %w", err)
		}
		if len(b.Records) == 0 {
			if r.spool.Wait(ctx) != nil {
				return nil
			}
			continue
		}
		body, err := joinArrays(b.Records)
		if err != nil {
			// Checksummed on disk yet not ours to decode: it can never be
			// sent, and must not block the spool.
			r.log.Error("undecodable batch in the spool; dropping it", "points", b.Count, "err", err)
			r.dropped.Add(b.Count)
			r.cfg.Backlog.Drop(b.Count)
			if err := r.spool.Ack(b); err != nil {
				return fmt.Errorf("relay: %w", err)
			}
			continue
		}
		sent := time.Now()
		res := r.sendAnyTarget(ctx, body, b.Count)
		switch res {
		case delivered:
			backoff = 0
			maxRecords = 1 << 20
			r.acked(body, b.Count, sent)
			if err := r.spool.Ack(b); err != nil {
				return fmt.Errorf("relay: %w", err)
			}
			continue
		case tooLarge:
			if len(b.Records) > 1 {
				maxRecords = max(1, len(b.Records)/2)
				continue
			}
			// One record transfer will not take: it can never be sent.
			r.log.Error("transfer refuses a batch as too large; dropping it", "points", b.Count, "bytes", len(body))
			r.dropped.Add(b.Count)
			r.cfg.Backlog.Drop(b.Count)
			if err := r.spool.Ack(b); err != nil {
				return fmt.Errorf("relay: %w", err)
			}
			continue
		}
		if ctx.Err() != nil {
			return nil
		}
		backoff = nextBackoff(backoff, r.cfg.BackoffMin, r.cfg.BackoffMax)
		r.log.Warn("no transfer reachable; points stay in the spool", "retry_in", backoff.Round(time.Millisecond), "spooled_points", r.spool.Stats().Count)
		select {
		case <-time.After(backoff):
		case <-ctx.Done():
			return nil
		}
	}
}

// acked counts a batch the current target answered for: its points and
// their latency from intake, and the dyed points among them, traced with
// the time from sent (when the batch left the spool) to the answer, so a
// trace shows the send after the intake that spooled it.
func (r *Relay) acked(body []byte, points int, sent time.Time) {
	now := time.Now()
	_, latency := r.cfg.Backlog.Take(points, now)
	to := r.addrs[r.current]
	r.cfg.Hops.To(to).Acked(points, latency)
	if !r.cfg.Dye.Active() {
		return
	}
	res, err := falcon.Decode(body, now.Unix(), intake.Limits{}.WithDefaults())
	if err != nil {
		return
	}
	took := now.Sub(sent)
	r.cfg.Dye.Points("send "+to, res.Points, func(*metric.Point) time.Duration { return took })
}

// nextBackoff doubles the wait within [lo, hi], with up to 20 % jitter so
// that a fleet of collectors does not come back in step.
func nextBackoff(cur, lo, hi time.Duration) time.Duration {
	next := min(max(cur*2, lo), hi)
	return next - time.Duration(rand.Int64N(int64(next)/5+1))
}

// sendAnyTarget tries each target once, starting with the current one.
func (r *Relay) sendAnyTarget(ctx context.Context, body []byte, points int) outcome {
	for i := range r.targets {
		idx := (r.current + i) % len(r.targets)
		res, err := r.post(ctx, r.targets[idx], body, points)
		if res != retry {
			if idx != r.current {
				r.log.Info("relaying to another transfer", "target", r.targets[idx])
				r.current = idx
			}
			return res
		}
		r.failures.Inc()
		r.cfg.Hops.To(r.addrs[idx]).Failed()
		r.log.Warn("transfer did not take the batch", "target", r.targets[idx], "err", err)
		if ctx.Err() != nil {
			return retry
		}
	}
	return retry
}

func (r *Relay) post(ctx context.Context, url string, body []byte, points int) (outcome, error) {
	var rd io.Reader = bytes.NewReader(body)
	if r.cfg.Gzip {
		var buf bytes.Buffer
		zw := gzip.NewWriter(&buf)
		zw.Write(body)
		zw.Close()
		rd = &buf
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, rd)
	if err != nil {
		return retry, err
	}
	req.Header.Set("Content-Type", "application/json")
	if r.cfg.Gzip {
		req.Header.Set("Content-Encoding", "gzip")
	}
	resp, err := r.cfg.Client.Do(req)
	if err != nil {
		return retry, err
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(io.LimitReader(resp.Body, 4<<20))
	var ans intake.Response
	decoded := json.Unmarshal(raw, &ans) == nil
	switch {
	case resp.StatusCode == http.StatusOK:
		r.account(ans, points, decoded)
		return delivered, nil
	case resp.StatusCode == http.StatusRequestEntityTooLarge:
		return tooLarge, nil
	case resp.StatusCode == http.StatusBadRequest && decoded && len(ans.Rejected) > 0:
		// Every item was refused: sending it again cannot help.
		r.account(ans, points, decoded)
		return delivered, nil
	case resp.StatusCode == http.StatusBadRequest:
		// The body as a whole was refused: it will be refused again, and
		// must not block the spool for good.
		r.log.Error("transfer refuses the batch as a whole; dropping it", "target", url, "answer", intake.Truncate(string(raw)))
		r.dropped.Add(points)
		return delivered, nil
	}
	// Anything else (5xx, but also 404 or 401 from a wrong or misconfigured
	// target) is the target's problem, not the batch's: keep the batch and
	// try the next target.
	return retry, fmt.Errorf("status %d: %s", resp.StatusCode, intake.Truncate(strings.TrimSpace(string(raw))))
}

// account counts the outcome of an answered batch and logs what transfer
// refused. Points refused as out_of_order are expected when the interval
// is shorter than transfer's step (30 s at least): transfer keeps one point
// per step and slot. They are logged at debug level only.
func (r *Relay) account(ans intake.Response, points int, decoded bool) {
	if !decoded {
		r.sent.Add(points)
		return
	}
	r.sent.Add(ans.Accepted)
	var worth *intake.Rejection
	for i, rj := range ans.Rejected {
		r.set.GetOrCreateCounter(`opskit_collector_relay_rejected_points_total{reason="` + reasonLabel(rj.Reason) + `"}`).Inc()
		if rj.Reason != intake.ReasonOutOfOrder && worth == nil {
			worth = &ans.Rejected[i]
		}
	}
	if n := len(ans.Rejected); n > 0 {
		level := slog.LevelDebug
		first := ans.Rejected[0]
		if worth != nil {
			level, first = slog.LevelWarn, *worth
		}
		r.log.Log(context.Background(), level, "transfer rejected points", "count", n, "reason", first.Reason, "detail", first.Detail)
	}
}

// reasonLabel keeps a reason word fit for a label value.
func reasonLabel(s string) string {
	for _, c := range s {
		if !(c == '_' || (c >= 'a' && c <= 'z')) || len(s) > 32 {
			return "other"
		}
	}
	return s
}

// joinArrays decompresses the records and merges their JSON arrays into
// one.
func joinArrays(recs []spool.Record) ([]byte, error) {
	arrays := make([][]byte, len(recs))
	n := 2
	for i, r := range recs {
		a, err := snappy.Decode(nil, r.Data)
		if err != nil {
			return nil, fmt.Errorf("record %d: %w", i, err)
		}
		arrays[i] = a
		n += len(a)
	}
	if len(arrays) == 1 {
		return arrays[0], nil
	}
	out := make([]byte, 0, n)
	out = append(out, '[')
	for _, a := range arrays {
		inner := bytes.TrimSpace(a)
		inner = bytes.TrimSuffix(bytes.TrimPrefix(inner, []byte{'['}), []byte{']'})
		if len(bytes.TrimSpace(inner)) == 0 {
			continue
		}
		if len(out) > 1 {
			out = append(out, ',')
		}
		out = append(out, inner...)
	}
	return append(out, ']'), nil
}
