package intake

import (
	"log/slog"
	"strconv"

	"github.com/VictoriaMetrics/metrics"
)

// Recorder counts intake activity on a metrics set and logs each rejected
// item at debug level. One Recorder is shared by all protocols of a daemon;
// the proto argument ("falcon", "graphite", "remote_write", ...) tells them
// apart. A nil *Recorder records nothing, which keeps tests short.
type Recorder struct {
	set *metrics.Set
	log *slog.Logger
}

// NewRecorder registers the intake metrics on set (created lazily, per
// label combination) and logs rejections to log. A nil log discards them.
func NewRecorder(set *metrics.Set, log *slog.Logger) *Recorder {
	if set == nil {
		set = metrics.NewSet()
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Recorder{set: set, log: log}
}

// Logger returns the recorder's logger (a discarding one for a nil Recorder).
func (r *Recorder) Logger() *slog.Logger {
	if r == nil {
		return slog.New(slog.DiscardHandler)
	}
	return r.log
}

// Register creates a protocol's counters at zero, so /metrics shows them
// (and rate() works) before the first point arrives. Each protocol's
// constructor calls it.
func (r *Recorder) Register(proto string) {
	if r == nil {
		return
	}
	r.set.GetOrCreateCounter(`opskit_transfer_points_received_total{proto="` + proto + `"}`)
	r.set.GetOrCreateCounter(`opskit_transfer_append_errors_total{proto="` + proto + `"}`)
}

// Received counts n points accepted by a protocol's parser and validation.
func (r *Recorder) Received(proto string, n int) {
	if r == nil || n <= 0 {
		return
	}
	r.set.GetOrCreateCounter(`opskit_transfer_points_received_total{proto="` + proto + `"}`).Add(n)
}

// Rejected counts one refused item and logs it at debug level. where locates
// the item for the log (an index, a line number, a peer address).
func (r *Recorder) Rejected(proto string, rej *Reject, where string) {
	if r == nil || rej == nil {
		return
	}
	r.set.GetOrCreateCounter(`opskit_transfer_points_rejected_total{proto="` + proto + `",reason="` + rej.Reason + `"}`).Inc()
	r.log.Debug("intake rejected item", "proto", proto, "reason", rej.Reason, "detail", rej.Detail, "at", where)
}

// Request counts one answered HTTP request by protocol and status code.
func (r *Recorder) Request(proto string, code int) {
	if r == nil {
		return
	}
	r.set.GetOrCreateCounter(`opskit_transfer_requests_total{proto="` + proto + `",code="` + strconv.Itoa(code) + `"}`).Inc()
}

// AppendFailed counts and logs a failed Append call.
func (r *Recorder) AppendFailed(proto string, points int, err error) {
	if r == nil {
		return
	}
	r.set.GetOrCreateCounter(`opskit_transfer_append_errors_total{proto="` + proto + `"}`).Inc()
	r.log.Warn("intake append failed", "proto", proto, "points", points, "err", err)
}

// Counter returns an extra protocol-specific counter on the same set, e.g.
// the Graphite server's refused connections.
func (r *Recorder) Counter(name string) *metrics.Counter {
	if r == nil {
		return metrics.NewSet().GetOrCreateCounter(name)
	}
	return r.set.GetOrCreateCounter(name)
}
