// Package falcon is transfer's open-falcon push intake: a JSON array of
// {"endpoint","metric","timestamp","step","value","counterType","tags"}
// items, validated the way open-falcon's transfer validates them.
package falcon

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"strconv"

	"github.com/opskit/opskit/internal/metric"
	"github.com/opskit/opskit/transfer/intake"
)

// MinStep is the smallest step kept; shorter steps are raised to it, as
// open-falcon's graph does.
const MinStep = 30

// MaxStep bounds the step to one day; a larger one is surely a mistake.
const MaxStep = 86400

// maxMetricAndTags is open-falcon's limit on len(metric)+len(tags).
const maxMetricAndTags = 510

// Item is one open-falcon push item as it appears on the wire. Value stays
// raw: open-falcon accepts a JSON number or a string holding a number.
type Item struct {
	Endpoint    string          `json:"endpoint"`
	Metric      string          `json:"metric"`
	Timestamp   json.Number     `json:"timestamp"`
	Step        json.Number     `json:"step"`
	Value       json.RawMessage `json:"value"`
	CounterType string          `json:"counterType"`
	Tags        string          `json:"tags"`
}

// Result is what one decoded body yields.
type Result struct {
	// Points holds the valid items, in input order.
	Points []metric.Point
	// Indexes[i] is the array index of Points[i].
	Indexes []int
	// Rejected lists the refused items by array index.
	Rejected []intake.Rejection
	// Items is the number of array elements seen.
	Items int
}

// ErrNotArray is returned when a body is not a JSON array.
var ErrNotArray = errors.New("body is not a JSON array of open-falcon items")

// Decode reads a JSON array of items one element at a time, so a bad item
// is rejected alone and the valid ones beside it are kept. now (Unix
// seconds) replaces missing or absurd timestamps. It returns an error
// wrapping ErrNotArray when the body does not start as an array; a syntax
// error inside the array rejects the rest of the body (one rejection at the
// index where it was found) and keeps what was decoded before it.
func Decode(body []byte, now int64, lim intake.Limits) (Result, error) {
	var res Result
	i := skipSpace(body, 0)
	if i >= len(body) || body[i] != '[' {
		what := "an empty body"
		if i < len(body) {
			what = fmt.Sprintf("%q", intake.Truncate(string(body[i:min(i+16, len(body))])))
		}
		return res, fmt.Errorf("%w: starts with %s", ErrNotArray, what)
	}
	i = skipSpace(body, i+1)
	if i < len(body) && body[i] == ']' {
		return res, trailing(&res, body, i+1)
	}
	for {
		end, err := skipValue(body, i, 0)
		if err != nil {
			res.reject(intake.ReasonBadJSON, "malformed JSON from this item on: "+err.Error())
			return res, nil
		}
		idx := res.Items
		res.Items++
		p, rej := ParseItem(body[i:end], now, lim)
		if rej != nil {
			res.Rejected = append(res.Rejected, intake.Rejection{Index: idx, Reason: rej.Reason, Detail: rej.Detail})
		} else {
			res.Points = append(res.Points, p)
			res.Indexes = append(res.Indexes, idx)
		}
		i = skipSpace(body, end)
		switch {
		case i >= len(body):
			res.reject(intake.ReasonBadJSON, "array is not closed")
			return res, nil
		case body[i] == ']':
			return res, trailing(&res, body, i+1)
		case body[i] != ',':
			res.reject(intake.ReasonBadJSON, fmt.Sprintf("malformed JSON after item %d: want ',' or ']' at byte %d", idx, i))
			return res, nil
		}
		i = skipSpace(body, i+1)
	}
}

// reject records a body-level problem at the index of the next item.
func (r *Result) reject(reason, detail string) {
	r.Rejected = append(r.Rejected, intake.Rejection{Index: r.Items, Reason: reason, Detail: detail})
	r.Items++
}

// trailing refuses anything but white space after the closing bracket.
func trailing(res *Result, body []byte, i int) error {
	if i = skipSpace(body, i); i < len(body) {
		res.reject(intake.ReasonBadJSON, fmt.Sprintf("data after the array at byte %d", i))
	}
	return nil
}

// ParseItem decodes and validates one JSON item. now (Unix seconds) replaces
// a timestamp that is missing, <= 0 or more than twice now, as open-falcon
// does.
func ParseItem(raw []byte, now int64, lim intake.Limits) (metric.Point, *intake.Reject) {
	var it Item
	if fastItem(raw, &it) {
		return it.Point(now, lim)
	}
	it = Item{}
	if err := decodeItemStd(raw, &it); err != nil {
		return metric.Point{}, err
	}
	return it.Point(now, lim)
}

// decodeItemStd decodes an item with encoding/json, the reference for
// every shape fastItem does not take.
func decodeItemStd(raw []byte, it *Item) *intake.Reject {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 || raw[0] != '{' {
		return intake.Rejectf(intake.ReasonBadJSON, "item is not a JSON object: %s", intake.Truncate(string(raw)))
	}
	if err := json.Unmarshal(raw, it); err != nil {
		return intake.Rejectf(intake.ReasonBadJSON, "item does not decode: %s", intake.Truncate(err.Error()))
	}
	return nil
}

// Point validates the item and converts it to a point: the endpoint becomes
// the label "endpoint", the metric "__name__", the tags labels.
func (it *Item) Point(now int64, lim intake.Limits) (metric.Point, *intake.Reject) {
	if it.Metric == "" {
		return metric.Point{}, intake.Rejectf(intake.ReasonEmptyMetric, "metric is empty")
	}
	if it.Endpoint == "" {
		return metric.Point{}, intake.Rejectf(intake.ReasonEmptyEndpoint, "endpoint is empty")
	}
	ct, err := metric.ParseCounterType(it.CounterType)
	if err != nil {
		return metric.Point{}, intake.Rejectf(intake.ReasonBadCounterType, "%s", intake.Truncate(err.Error()))
	}
	step, rej := parseStep(it.Step)
	if rej != nil {
		return metric.Point{}, rej
	}
	if len(it.Metric)+len(it.Tags) > maxMetricAndTags {
		return metric.Point{}, intake.Rejectf(intake.ReasonTooLong, "metric and tags are %d bytes together, over open-falcon's %d", len(it.Metric)+len(it.Tags), maxMetricAndTags)
	}
	val, rej := parseValue(it.Value)
	if rej != nil {
		return metric.Point{}, rej
	}
	ts, rej := parseTimestamp(it.Timestamp, now)
	if rej != nil {
		return metric.Point{}, rej
	}
	// Room for name, endpoint and a few tags without growing.
	pairs := make([]metric.Label, 2, 8)
	pairs[0] = metric.Label{Name: metric.NameLabel, Value: it.Metric}
	pairs[1] = metric.Label{Name: metric.EndpointLabel, Value: it.Endpoint}
	pairs, err = metric.ParseTags(pairs, it.Tags)
	if err != nil {
		return metric.Point{}, intake.Rejectf(intake.ReasonBadTags, "%s", intake.Truncate(err.Error()))
	}
	for _, t := range pairs[2:] {
		if t.Name == metric.NameLabel || t.Name == metric.EndpointLabel {
			return metric.Point{}, intake.Rejectf(intake.ReasonBadTags, "tag %q would replace the metric or endpoint", t.Name)
		}
	}
	// As in open-falcon a repeated tag name keeps its last value; as in
	// Prometheus an empty value means the tag is absent.
	ls := metric.New(pairs...)
	p := metric.Point{
		Labels: ls,
		Time:   ts - ts%int64(step),
		Value:  val,
		Step:   step,
		Type:   ct,
	}
	if rej := lim.Validate(&p); rej != nil {
		return metric.Point{}, rej
	}
	return p, nil
}

func parseStep(n json.Number) (int32, *intake.Reject) {
	if n == "" {
		return 0, intake.Rejectf(intake.ReasonBadStep, "step is missing")
	}
	f, err := strconv.ParseFloat(string(n), 64)
	if err != nil || math.IsNaN(f) {
		return 0, intake.Rejectf(intake.ReasonBadStep, "step %q is not a number", intake.Truncate(string(n)))
	}
	if f <= 0 {
		return 0, intake.Rejectf(intake.ReasonBadStep, "step %s is not positive", intake.Truncate(string(n)))
	}
	if f > MaxStep {
		return 0, intake.Rejectf(intake.ReasonBadStep, "step %s is over one day", intake.Truncate(string(n)))
	}
	step := int32(f)
	if step < MinStep {
		step = MinStep
	}
	return step, nil
}

// parseValue accepts a JSON number or a JSON string holding a number, as
// open-falcon does, and refuses NaN and infinities.
func parseValue(raw json.RawMessage) (float64, *intake.Reject) {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 || string(raw) == "null" {
		return 0, intake.Rejectf(intake.ReasonBadValue, "value is missing")
	}
	var s string
	switch {
	case raw[0] == '"':
		if end, plain, err := scanString(raw, 0); err == nil && plain && end == len(raw) {
			s = string(raw[1 : len(raw)-1])
		} else if err := json.Unmarshal(raw, &s); err != nil {
			return 0, intake.Rejectf(intake.ReasonBadValue, "value %s does not decode", intake.Truncate(string(raw)))
		}
	case raw[0] != '-' && (raw[0] < '0' || raw[0] > '9'):
		return 0, intake.Rejectf(intake.ReasonBadValue, "value %s is not a number", intake.Truncate(string(raw)))
	default:
		s = string(raw)
	}
	v, err := strconv.ParseFloat(s, 64)
	if err != nil {
		return 0, intake.Rejectf(intake.ReasonBadValue, "value %q is not a finite number", intake.Truncate(s))
	}
	if math.IsNaN(v) || math.IsInf(v, 0) {
		return 0, intake.Rejectf(intake.ReasonBadValue, "value %q is not a finite number", intake.Truncate(s))
	}
	return v, nil
}

func parseTimestamp(n json.Number, now int64) (int64, *intake.Reject) {
	if n == "" {
		return now, nil
	}
	ts, err := strconv.ParseInt(string(n), 10, 64)
	if err != nil {
		f, ferr := strconv.ParseFloat(string(n), 64)
		if ferr != nil || math.IsNaN(f) {
			return 0, intake.Rejectf(intake.ReasonBadTimestamp, "timestamp %q is not a number", intake.Truncate(string(n)))
		}
		switch {
		case f <= 0:
			ts = 0
		case f >= float64(math.MaxInt64/2):
			ts = math.MaxInt64 / 2
		default:
			ts = int64(f)
		}
	}
	if ts <= 0 || ts > now*2 {
		ts = now
	}
	return ts, nil
}
