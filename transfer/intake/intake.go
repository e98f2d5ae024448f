// Package intake holds what every transfer intake protocol shares: the
// Appender the protocols feed, the limits every series must respect, the
// rejection model (a fixed reason word plus a human detail) and the intake
// metrics.
//
// Each protocol lives in its own sub-package (falcon, graphite,
// remotewrite); they parse their wire format into metric.Point values, check
// each one with Limits.Validate and hand the valid ones to an Appender.
package intake

import (
	"cmp"
	"compress/gzip"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"slices"
	"strconv"
	"unicode/utf8"

	"github.com/opskit/opskit/internal/metric"
)

// Appender stores points; Append returns once they are durable
// (acknowledged) or with an error.
//
// Append must not keep pts after it returns: callers reuse the slice. The
// Labels of the points may be shared between points and calls and are
// read-only.
type Appender interface {
	Append(ctx context.Context, pts []metric.Point) error
}

// AppenderFunc adapts a function to an Appender.
type AppenderFunc func(ctx context.Context, pts []metric.Point) error

// Append calls f.
func (f AppenderFunc) Append(ctx context.Context, pts []metric.Point) error { return f(ctx, pts) }

// Reason words used as the "reason" label of the rejected-points counter and
// in responses. They are short, fixed and never carry user input.
const (
	ReasonBadJSON        = "bad_json"         // not JSON, or an item that is not an object
	ReasonBadBody        = "bad_body"         // a body that does not decode at all (remote_write)
	ReasonBadLine        = "bad_line"         // a Graphite line without the expected fields
	ReasonEmptyMetric    = "empty_metric"     // no metric name
	ReasonEmptyEndpoint  = "empty_endpoint"   // open-falcon item without endpoint
	ReasonBadCounterType = "bad_counter_type" // counterType not GAUGE, COUNTER or DERIVE
	ReasonBadStep        = "bad_step"         // step <= 0 or absurdly large
	ReasonBadValue       = "bad_value"        // not a number, NaN or infinite
	ReasonBadTimestamp   = "bad_timestamp"    // not a number, or out of range
	ReasonBadTags        = "bad_tags"         // tags that do not parse
	ReasonBadLabel       = "bad_label"        // empty or invalid UTF-8 label name or value
	ReasonDuplicateLabel = "duplicate_label"  // the same label name twice in one series
	ReasonTooManyLabels  = "too_many_labels"  // more labels than Limits.MaxLabelsPerSeries
	ReasonNameTooLong    = "name_too_long"    // metric name over Limits.MaxMetricNameLen
	ReasonLabelTooLong   = "label_too_long"   // label name or value over its limit
	ReasonTooLong        = "too_long"         // open-falcon metric+tags over 510 bytes, or an overlong line
	ReasonUnsupported    = "unsupported"      // a valid but unsupported kind, e.g. native histograms
	ReasonOutOfOrder     = "out_of_order"     // storage refused a point not newer than its series' last one
	ReasonSeriesLimit    = "series_limit"     // a new series beyond the node's --max-series
	ReasonRefused        = "refused"          // storage refused a point for another reason
)

// PointReject is one point an Appender refused while storing the others.
type PointReject struct {
	// Index is the point's position in the slice given to Append.
	Index int
	// Reason is one of the Reason* words, e.g. ReasonOutOfOrder.
	Reason string
	Detail string
}

// PartialError is what Append returns when it refused some points and
// stored all the others (they are as durable as after a nil error).
type PartialError struct {
	Rejected []PointReject
}

func (e *PartialError) Error() string {
	if len(e.Rejected) == 0 {
		return "no point refused"
	}
	return fmt.Sprintf("%d points refused by storage, first: %s: %s", len(e.Rejected), e.Rejected[0].Reason, e.Rejected[0].Detail)
}

// SplitAppendError tells the outcomes of Append apart: a *PartialError
// (some points stored) is returned as partial with a nil err; any other
// error means nothing can be assumed stored.
func SplitAppendError(appendErr error) (partial *PartialError, err error) {
	if appendErr == nil {
		return nil, nil
	}
	if errors.As(appendErr, &partial) {
		return partial, nil
	}
	return nil, appendErr
}

// Reject says why one input item was refused.
type Reject struct {
	// Reason is one of the Reason* words.
	Reason string
	// Detail is a short human explanation; it may quote (truncated) input.
	Detail string
}

// Error renders the reject as "reason: detail".
func (r *Reject) Error() string { return r.Reason + ": " + r.Detail }

// Rejectf builds a Reject with a formatted detail.
func Rejectf(reason, format string, args ...any) *Reject {
	return &Reject{Reason: reason, Detail: fmt.Sprintf(format, args...)}
}

// Limits bound what one request and one series may hold. The zero value of a
// field means "use the default"; see DefaultLimits.
type Limits struct {
	// MaxBodyBytes is the largest request body (after decompression for
	// remote_write) accepted; a larger one is answered 413.
	MaxBodyBytes int64
	// MaxLabelsPerSeries counts every label, the metric name included.
	MaxLabelsPerSeries int
	// MaxLabelNameLen and MaxLabelValueLen are in bytes.
	MaxLabelNameLen  int
	MaxLabelValueLen int
	// MaxMetricNameLen is the longest metric name, in bytes.
	MaxMetricNameLen int
}

// Defaults for Limits.
const (
	DefaultMaxBodyBytes       = 32 << 20
	DefaultMaxLabelsPerSeries = 64
	DefaultMaxLabelNameLen    = 128
	DefaultMaxLabelValueLen   = 1024
	DefaultMaxMetricNameLen   = 256
)

// DefaultLimits returns the default limits: 32 MiB bodies, 64 labels per
// series, label names up to 128 bytes, label values up to 1024 bytes and
// metric names up to 256 bytes.
func DefaultLimits() Limits {
	return Limits{}.WithDefaults()
}

// WithDefaults returns l with every zero or negative field set to its default.
func (l Limits) WithDefaults() Limits {
	if l.MaxBodyBytes <= 0 {
		l.MaxBodyBytes = DefaultMaxBodyBytes
	}
	if l.MaxLabelsPerSeries <= 0 {
		l.MaxLabelsPerSeries = DefaultMaxLabelsPerSeries
	}
	if l.MaxLabelNameLen <= 0 {
		l.MaxLabelNameLen = DefaultMaxLabelNameLen
	}
	if l.MaxLabelValueLen <= 0 {
		l.MaxLabelValueLen = DefaultMaxLabelValueLen
	}
	if l.MaxMetricNameLen <= 0 {
		l.MaxMetricNameLen = DefaultMaxMetricNameLen
	}
	return l
}

// Validate checks one point against the limits and the rules every protocol
// shares: the label rules of ValidateLabels, a finite value and a positive
// time. It returns nil when the point may be stored.
func (l Limits) Validate(p *metric.Point) *Reject {
	if rej := l.ValidateLabels(p.Labels); rej != nil {
		return rej
	}
	return ValidateSample(p.Time, p.Value)
}

// ValidateSample checks a point's time and value: a finite value and a time
// after 1970. Parsers that validated a series' labels once (and cached them)
// call this for each sample.
func ValidateSample(t int64, v float64) *Reject {
	if math.IsNaN(v) || math.IsInf(v, 0) {
		return Rejectf(ReasonBadValue, "value %v is not a finite number", v)
	}
	if t <= 0 {
		return Rejectf(ReasonBadTimestamp, "timestamp %d is not after 1970", t)
	}
	return nil
}

// ValidateLabels checks a series identity: a non-empty metric name within
// MaxMetricNameLen, at most MaxLabelsPerSeries labels (the name included),
// non-empty valid UTF-8 label names within MaxLabelNameLen, valid UTF-8
// values within MaxLabelValueLen, and unique names. The labels are expected
// sorted (metric.New sorts them), so a duplicate is two equal neighbours.
func (l Limits) ValidateLabels(ls metric.Labels) *Reject {
	name := ls.Name()
	if name == "" {
		return Rejectf(ReasonEmptyMetric, "metric name is empty")
	}
	if len(name) > l.MaxMetricNameLen {
		return Rejectf(ReasonNameTooLong, "metric name is %d bytes, over the limit of %d", len(name), l.MaxMetricNameLen)
	}
	if len(ls) > l.MaxLabelsPerSeries {
		return Rejectf(ReasonTooManyLabels, "series has %d labels, over the limit of %d", len(ls), l.MaxLabelsPerSeries)
	}
	for i, lb := range ls {
		if i > 0 && ls[i-1].Name == lb.Name {
			return Rejectf(ReasonDuplicateLabel, "label %q appears twice", Truncate(lb.Name))
		}
		if lb.Name == "" {
			return Rejectf(ReasonBadLabel, "empty label name")
		}
		if !utf8.ValidString(lb.Name) || !utf8.ValidString(lb.Value) {
			return Rejectf(ReasonBadLabel, "label %q is not valid UTF-8", Truncate(lb.Name))
		}
		if lb.Name == metric.NameLabel {
			continue // its value was checked against MaxMetricNameLen
		}
		if len(lb.Name) > l.MaxLabelNameLen {
			return Rejectf(ReasonLabelTooLong, "label name %q is %d bytes, over the limit of %d", Truncate(lb.Name), len(lb.Name), l.MaxLabelNameLen)
		}
		if len(lb.Value) > l.MaxLabelValueLen {
			return Rejectf(ReasonLabelTooLong, "value of label %q is %d bytes, over the limit of %d", Truncate(lb.Name), len(lb.Value), l.MaxLabelValueLen)
		}
	}
	return nil
}

// Truncate shortens user input quoted in a reject detail to 64 bytes, so a
// response or a log line never echoes a huge item back.
func Truncate(s string) string {
	const max = 64
	if len(s) <= max {
		return s
	}
	cut := max
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut] + "..."
}

// Rejection is one refused item in an HTTP answer.
type Rejection struct {
	// Index is the item's position: 0-based in a JSON array, the 1-based
	// line number in a Graphite body.
	Index int `json:"index"`
	// Reason is one of the Reason* words.
	Reason string `json:"reason"`
	// Detail explains the reason for a human.
	Detail string `json:"detail,omitempty"`
}

// Response is the JSON answer of the push endpoints (/api/push,
// /api/graphite).
type Response struct {
	Accepted int         `json:"accepted"`
	Rejected []Rejection `json:"rejected"`
	// Error is set when the whole request failed (bad body, storage error).
	Error string `json:"error,omitempty"`
}

// WriteJSON writes v as a JSON answer with the given status code.
func WriteJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(v)
}

// ReadBody reads a request body of at most lim.MaxBodyBytes, decompressing
// Content-Encoding: gzip (the limit holds for the decompressed size too). On
// failure it returns the status code to answer: 413 for an oversized body,
// 415 for an unknown encoding, 400 for a body that could not be read.
func ReadBody(w http.ResponseWriter, r *http.Request, lim Limits) ([]byte, int, error) {
	if r.ContentLength > lim.MaxBodyBytes {
		return nil, http.StatusRequestEntityTooLarge, fmt.Errorf("body of %d bytes is over the limit of %d", r.ContentLength, lim.MaxBodyBytes)
	}
	var src io.Reader = http.MaxBytesReader(w, r.Body, lim.MaxBodyBytes)
	switch enc := r.Header.Get("Content-Encoding"); enc {
	case "", "identity", "snappy":
		// snappy is remote_write's own framing, which its handler decodes.
	case "gzip":
		zr, err := gzip.NewReader(src)
		if err != nil {
			return nil, http.StatusBadRequest, fmt.Errorf("gzip body: %w", err)
		}
		defer zr.Close()
		// The limit applies to the decompressed body too, so a small
		// compressed bomb cannot inflate beyond it.
		src = io.LimitReader(zr, lim.MaxBodyBytes+1)
	default:
		return nil, http.StatusUnsupportedMediaType, fmt.Errorf("Content-Encoding %q is not supported (use gzip or none)", Truncate(enc))
	}
	body, err := io.ReadAll(src)
	if err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			return nil, http.StatusRequestEntityTooLarge, fmt.Errorf("body is over the limit of %d bytes", lim.MaxBodyBytes)
		}
		return nil, http.StatusBadRequest, fmt.Errorf("reading body: %w", err)
	}
	if int64(len(body)) > lim.MaxBodyBytes {
		return nil, http.StatusRequestEntityTooLarge, fmt.Errorf("decompressed body is over the limit of %d bytes", lim.MaxBodyBytes)
	}
	return body, 0, nil
}

// Fail answers a request that failed as a whole and counts it.
func Fail(w http.ResponseWriter, rec *Recorder, proto string, code int, err error) {
	rec.Request(proto, code)
	WriteJSON(w, code, Response{Rejected: []Rejection{}, Error: err.Error()})
}

// StoreAndAnswer finishes a push request (/api/push, /api/graphite): it
// counts and logs the rejected items, appends the valid points and answers
// 200 when nothing failed to store (even with some items rejected), 400 when
// every item was rejected, 503 with the error text when Append failed.
// indexes[i] is the item index of pts[i], used to report points that
// storage refused (a *PartialError) like the items refused by parsing.
func StoreAndAnswer(ctx context.Context, w http.ResponseWriter, app Appender, rec *Recorder, proto string, pts []metric.Point, indexes []int, rejected []Rejection) {
	for _, rj := range rejected {
		rec.Rejected(proto, &Reject{Reason: rj.Reason, Detail: rj.Detail}, "item "+strconv.Itoa(rj.Index))
	}
	if rejected == nil {
		rejected = []Rejection{}
	}
	resp := Response{Rejected: rejected}
	stored := 0
	if len(pts) > 0 {
		partial, err := SplitAppendError(app.Append(ctx, pts))
		if err != nil {
			rec.AppendFailed(proto, len(pts), err)
			rec.Request(proto, http.StatusServiceUnavailable)
			resp.Error = "storing points failed: " + err.Error()
			WriteJSON(w, http.StatusServiceUnavailable, resp)
			return
		}
		stored = len(pts)
		if partial != nil {
			for _, pr := range partial.Rejected {
				idx := pr.Index
				if pr.Index >= 0 && pr.Index < len(indexes) {
					idx = indexes[pr.Index]
				}
				rec.Rejected(proto, &Reject{Reason: pr.Reason, Detail: pr.Detail}, "item "+strconv.Itoa(idx))
				resp.Rejected = append(resp.Rejected, Rejection{Index: idx, Reason: pr.Reason, Detail: pr.Detail})
			}
			stored -= len(partial.Rejected)
			slices.SortStableFunc(resp.Rejected, func(a, b Rejection) int { return cmp.Compare(a.Index, b.Index) })
		}
		rec.Received(proto, stored)
	}
	resp.Accepted = stored
	code := http.StatusOK
	if stored == 0 && len(resp.Rejected) > 0 {
		code = http.StatusBadRequest
		resp.Error = "every item was rejected"
	}
	rec.Request(proto, code)
	WriteJSON(w, code, resp)
}
