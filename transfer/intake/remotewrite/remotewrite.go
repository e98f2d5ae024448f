// Package remotewrite is transfer's Prometheus remote_write 1.0 intake:
// POST /api/v1/write with a snappy-compressed protobuf prompb.WriteRequest.
package remotewrite

import (
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"

	"github.com/golang/snappy"
	"github.com/prometheus/prometheus/model/value"
	"github.com/prometheus/prometheus/prompb"

	"github.com/opskit/opskit/internal/metric"
	"github.com/opskit/opskit/transfer/intake"
)

// Proto is the "proto" label value of this intake's metrics.
const Proto = "remote_write"

// maxSnappyRatio bounds decoded/compressed size of a valid snappy block.
const maxSnappyRatio = 24

// ErrTooLarge is returned when the decompressed body is over the limit.
var ErrTooLarge = errors.New("decompressed body over the limit")

// Decoder turns remote_write bodies into points, reusing its buffers across
// calls. It is not safe for concurrent use.
type Decoder struct {
	lim   intake.Limits
	raw   []byte
	req   prompb.WriteRequest
	pairs []metric.Label
}

// NewDecoder returns a decoder enforcing lim (zero fields take defaults).
func NewDecoder(lim intake.Limits) *Decoder {
	return &Decoder{lim: lim.WithDefaults()}
}

// Result is what one request yields.
type Result struct {
	// Points holds the samples of valid series, stale markers left out.
	Points []metric.Point
	// Rejected lists each refused series (by its index in the request) or
	// sample, with its reason.
	Rejected []intake.Rejection
	// Stale counts the stale markers skipped.
	Stale int
}

// Decode decompresses and unmarshals a snappy-compressed WriteRequest and
// converts it to points: labels as they are (__name__ kept), timestamps
// from milliseconds to Unix seconds (rounded down), stale markers skipped.
// A series with invalid labels is rejected as a whole and the rest is kept;
// a NaN or infinite sample is rejected alone. The error is non-nil only
// when the body does not decode (or is over the limit: ErrTooLarge), and
// then nothing is kept.
func (d *Decoder) Decode(body []byte) (Result, error) {
	var res Result
	n, err := snappy.DecodedLen(body)
	if err != nil {
		return res, fmt.Errorf("snappy: %w", err)
	}
	if int64(n) > d.lim.MaxBodyBytes {
		return res, fmt.Errorf("%w: %d bytes, limit %d", ErrTooLarge, n, d.lim.MaxBodyBytes)
	}
	// Snappy expands at most about 22 times (a 3-byte copy of 64 bytes), so
	// a larger claimed length is a lie; refuse it before allocating for it.
	if n > maxSnappyRatio*len(body)+64 {
		return res, fmt.Errorf("snappy: claimed length %d is impossible for %d compressed bytes", n, len(body))
	}
	if cap(d.raw) < n {
		d.raw = make([]byte, n)
	}
	raw, err := snappy.Decode(d.raw[:cap(d.raw)], body)
	if err != nil {
		return res, fmt.Errorf("snappy: %w", err)
	}
	d.req.Reset()
	if err := d.req.Unmarshal(raw); err != nil {
		return res, fmt.Errorf("protobuf WriteRequest: %w", err)
	}
	total := 0
	for i := range d.req.Timeseries {
		total += len(d.req.Timeseries[i].Samples)
	}
	res.Points = make([]metric.Point, 0, total)
	for i := range d.req.Timeseries {
		ts := &d.req.Timeseries[i]
		ls, rej := d.labels(ts.Labels)
		if rej != nil {
			res.Rejected = append(res.Rejected, intake.Rejection{Index: i, Reason: rej.Reason, Detail: rej.Detail})
			continue
		}
		if len(ts.Histograms) > 0 {
			res.Rejected = append(res.Rejected, intake.Rejection{Index: i, Reason: intake.ReasonUnsupported,
				Detail: fmt.Sprintf("%d native histogram samples of %s not stored", len(ts.Histograms), intake.Truncate(ls.Name()))})
		}
		for _, s := range ts.Samples {
			if value.IsStaleNaN(s.Value) {
				res.Stale++
				continue
			}
			sec := floorDiv(s.Timestamp, 1000)
			if rej := intake.ValidateSample(sec, s.Value); rej != nil {
				res.Rejected = append(res.Rejected, intake.Rejection{Index: i, Reason: rej.Reason, Detail: rej.Detail + " in " + intake.Truncate(ls.Name())})
				continue
			}
			res.Points = append(res.Points, metric.Point{Labels: ls, Time: sec, Value: s.Value, Type: metric.Gauge})
		}
	}
	return res, nil
}

// labels converts and validates one series' labels. Prometheus sends them
// sorted; they are sorted again anyway, and a repeated name is rejected.
func (d *Decoder) labels(in []prompb.Label) (metric.Labels, *intake.Reject) {
	if len(in) > d.lim.MaxLabelsPerSeries {
		return nil, intake.Rejectf(intake.ReasonTooManyLabels, "series has %d labels, over the limit of %d", len(in), d.lim.MaxLabelsPerSeries)
	}
	ls := make(metric.Labels, 0, len(in))
	for _, l := range in {
		if l.Value == "" {
			continue // an empty value means the label is absent
		}
		ls = append(ls, metric.Label{Name: l.Name, Value: l.Value})
	}
	byName := func(a, b metric.Label) int { return strings.Compare(a.Name, b.Name) }
	if !slices.IsSortedFunc(ls, byName) {
		slices.SortStableFunc(ls, byName)
	}
	if rej := d.lim.ValidateLabels(ls); rej != nil {
		return nil, rej
	}
	return ls, nil
}

func floorDiv(a, b int64) int64 {
	q := a / b
	if a%b != 0 && (a < 0) != (b < 0) {
		q--
	}
	return q
}

// Handler serves POST /api/v1/write. It answers 204 when the valid samples
// are stored (rejected series, and samples storage refused as a
// *intake.PartialError, are counted and logged, not reported: the protocol
// has no place for them), 400 for a body that does not decode
// (Prometheus drops such a batch), 413 for an oversized one, 415 for
// remote_write 2.0 bodies, and 503 when Append fails (Prometheus retries).
type Handler struct {
	app      intake.Appender
	rec      *intake.Recorder
	lim      intake.Limits
	decoders sync.Pool
}

// NewHandler returns the /api/v1/write handler storing into app. rec may be
// nil; zero fields of lim take their defaults.
func NewHandler(app intake.Appender, rec *intake.Recorder, lim intake.Limits) *Handler {
	h := &Handler{app: app, rec: rec, lim: lim.WithDefaults()}
	h.decoders.New = func() any { return NewDecoder(h.lim) }
	return h
}

func (h *Handler) fail(w http.ResponseWriter, code int, msg string) {
	h.rec.Request(Proto, code)
	http.Error(w, msg, code)
}

func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		h.fail(w, http.StatusMethodNotAllowed, "use POST")
		return
	}
	if ct := r.Header.Get("Content-Type"); strings.Contains(ct, "io.prometheus.write.v2.Request") {
		h.fail(w, http.StatusUnsupportedMediaType, "remote_write 2.0 is not supported; send io.prometheus.write.v1 (prometheus.WriteRequest)")
		return
	}
	if enc := r.Header.Get("Content-Encoding"); enc != "" && !strings.EqualFold(enc, "snappy") {
		h.fail(w, http.StatusUnsupportedMediaType, "unsupported Content-Encoding "+strconv.Quote(enc)+"; want snappy")
		return
	}
	body, code, err := intake.ReadBody(w, r, h.lim)
	if err != nil {
		h.fail(w, code, err.Error())
		return
	}
	d := h.decoders.Get().(*Decoder)
	defer h.decoders.Put(d)
	res, err := d.Decode(body)
	if err != nil {
		code := http.StatusBadRequest
		if errors.Is(err, ErrTooLarge) {
			code = http.StatusRequestEntityTooLarge
		}
		h.rec.Rejected(Proto, intake.Rejectf(intake.ReasonBadBody, "%v", err), r.RemoteAddr)
		h.fail(w, code, "remote_write body does not decode: "+err.Error())
		return
	}
	for _, rj := range res.Rejected {
		h.rec.Rejected(Proto, &intake.Reject{Reason: rj.Reason, Detail: rj.Detail}, "series "+strconv.Itoa(rj.Index))
	}
	if len(res.Points) > 0 {
		partial, err := intake.SplitAppendError(h.app.Append(r.Context(), res.Points))
		if err != nil {
			h.rec.AppendFailed(Proto, len(res.Points), err)
			h.fail(w, http.StatusServiceUnavailable, "storing samples failed: "+err.Error())
			return
		}
		stored := len(res.Points)
		if partial != nil {
			// The rest is durable: answering an error would make Prometheus
			// resend (5xx) or drop (4xx) samples already stored.
			for _, pr := range partial.Rejected {
				h.rec.Rejected(Proto, &intake.Reject{Reason: pr.Reason, Detail: pr.Detail}, r.RemoteAddr)
			}
			stored -= len(partial.Rejected)
		}
		h.rec.Received(Proto, stored)
	}
	h.rec.Request(Proto, http.StatusNoContent)
	w.WriteHeader(http.StatusNoContent)
}
