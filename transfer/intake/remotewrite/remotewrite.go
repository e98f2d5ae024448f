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

// DefaultSeriesCache is how many label sets a Decoder remembers.
const DefaultSeriesCache = 16384

// Decoder turns remote_write bodies into points, reusing its buffers across
// calls and remembering the label sets of the series it has seen, so a
// series that comes again costs no allocation for its labels. It is not
// safe for concurrent use.
type Decoder struct {
	lim      intake.Limits
	raw      []byte
	cache    map[string]metric.Labels
	maxCache int

	// Scratch space of the wire reader, reused for every series.
	key       []byte
	labelMsgs [][]byte
	samples   []prompb.Sample
	pairs     []metric.Label
}

// NewDecoder returns a decoder enforcing lim (zero fields take defaults).
func NewDecoder(lim intake.Limits) *Decoder {
	return &Decoder{lim: lim.WithDefaults(), cache: make(map[string]metric.Labels), maxCache: DefaultSeriesCache}
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
	n, err := snappy.DecodedLen(body)
	if err != nil {
		return Result{}, fmt.Errorf("snappy: %w", err)
	}
	if int64(n) > d.lim.MaxBodyBytes {
		return Result{}, fmt.Errorf("%w: %d bytes, limit %d", ErrTooLarge, n, d.lim.MaxBodyBytes)
	}
	// Snappy expands at most about 22 times (a 3-byte copy of 64 bytes), so
	// a larger claimed length is a lie; refuse it before allocating for it.
	if n > maxSnappyRatio*len(body)+64 {
		return Result{}, fmt.Errorf("snappy: claimed length %d is impossible for %d compressed bytes", n, len(body))
	}
	if cap(d.raw) < n {
		d.raw = make([]byte, n)
	}
	raw, err := snappy.Decode(d.raw[:cap(d.raw)], body)
	if err != nil {
		return Result{}, fmt.Errorf("snappy: %w", err)
	}
	if res, ok := d.walk(raw); ok {
		return res, nil
	}
	return d.decodeStd(raw)
}

// decodeStd converts a WriteRequest with the generated protobuf code: the
// reference for every encoding the wire reader (walk) leaves to it.
func (d *Decoder) decodeStd(raw []byte) (Result, error) {
	var res Result
	var req prompb.WriteRequest
	if err := req.Unmarshal(raw); err != nil {
		return res, fmt.Errorf("protobuf WriteRequest: %w", err)
	}
	total := 0
	for i := range req.Timeseries {
		total += len(req.Timeseries[i].Samples)
	}
	res.Points = make([]metric.Point, 0, total)
	for i := range req.Timeseries {
		ts := &req.Timeseries[i]
		pairs := make([]metric.Label, len(ts.Labels))
		for j, l := range ts.Labels {
			pairs[j] = metric.Label{Name: l.Name, Value: l.Value}
		}
		ls, rej := d.buildLabels(pairs)
		d.addSeries(&res, i, ls, rej, len(ts.Histograms), ts.Samples)
	}
	return res, nil
}

// addSeries converts one series' samples, or records why it was refused.
func (d *Decoder) addSeries(res *Result, idx int, ls metric.Labels, rej *intake.Reject, histograms int, samples []prompb.Sample) {
	if rej != nil {
		res.Rejected = append(res.Rejected, intake.Rejection{Index: idx, Reason: rej.Reason, Detail: rej.Detail})
		return
	}
	if histograms > 0 {
		res.Rejected = append(res.Rejected, intake.Rejection{Index: idx, Reason: intake.ReasonUnsupported,
			Detail: fmt.Sprintf("%d native histogram samples of %s not stored", histograms, intake.Truncate(ls.Name()))})
	}
	for _, s := range samples {
		if value.IsStaleNaN(s.Value) {
			res.Stale++
			continue
		}
		sec := floorDiv(s.Timestamp, 1000)
		if rej := intake.ValidateSample(sec, s.Value); rej != nil {
			res.Rejected = append(res.Rejected, intake.Rejection{Index: idx, Reason: rej.Reason, Detail: rej.Detail + " in " + intake.Truncate(ls.Name())})
			continue
		}
		res.Points = append(res.Points, metric.Point{Labels: ls, Time: sec, Value: s.Value, Type: metric.Gauge})
	}
}

// buildLabels turns one series' label pairs into a new, validated label
// set. Prometheus sends them sorted; they are sorted again anyway, and a
// repeated name is rejected.
func (d *Decoder) buildLabels(pairs []metric.Label) (metric.Labels, *intake.Reject) {
	if len(pairs) > d.lim.MaxLabelsPerSeries {
		return nil, intake.Rejectf(intake.ReasonTooManyLabels, "series has %d labels, over the limit of %d", len(pairs), d.lim.MaxLabelsPerSeries)
	}
	ls := make(metric.Labels, 0, len(pairs))
	for _, l := range pairs {
		if l.Value == "" {
			continue // an empty value means the label is absent
		}
		ls = append(ls, l)
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
	app intake.Appender
	rec *intake.Recorder
	lim intake.Limits
	// decoders keeps a few decoders, and their series caches, between
	// requests; unlike a sync.Pool it is not emptied by garbage collection.
	decoders chan *Decoder
}

// decoderPoolSize bounds the idle decoders kept, and so their caches.
const decoderPoolSize = 8

// NewHandler returns the /api/v1/write handler storing into app. rec may be
// nil; zero fields of lim take their defaults.
func NewHandler(app intake.Appender, rec *intake.Recorder, lim intake.Limits) *Handler {
	rec.Register(Proto)
	return &Handler{app: app, rec: rec, lim: lim.WithDefaults(), decoders: make(chan *Decoder, decoderPoolSize)}
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
	var d *Decoder
	select {
	case d = <-h.decoders:
	default:
		d = NewDecoder(h.lim)
	}
	defer func() {
		select {
		case h.decoders <- d:
		default:
		}
	}()
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
