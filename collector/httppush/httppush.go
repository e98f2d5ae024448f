// Package httppush is collector's HTTP intake for applications on the host:
// POST /v1/push with a JSON array of open-falcon items, as open-falcon's
// agent takes them. An item without endpoint gets the host's, one without
// step the collector's interval. The answer is transfer's: 200 with
// {"accepted":N,"rejected":[{"index":i,"reason":...}]} once the valid items
// are in the disk spool, 400 when every item was refused, 503 when the
// spool could not take them.
package httppush

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"time"

	"github.com/opskit/opskit/collector/falconfmt"
	"github.com/opskit/opskit/collector/sink"
	"github.com/opskit/opskit/transfer/intake"
	"github.com/opskit/opskit/transfer/intake/falcon"
)

// Proto is the "proto" label of this intake's metrics.
const Proto = "http"

// Decode reads a JSON array of open-falcon items, filling an empty endpoint
// and a missing step from d. A bad item is refused alone; a syntax error
// refuses the rest of the body. It fails only when the body is not an array.
func Decode(r io.Reader, now int64, d falconfmt.Defaults, lim intake.Limits) (falcon.Result, error) {
	var res falcon.Result
	dec := json.NewDecoder(r)
	dec.UseNumber()
	tok, err := dec.Token()
	if err != nil {
		return res, fmt.Errorf("%w: %w", falcon.ErrNotArray, err)
	}
	if delim, ok := tok.(json.Delim); !ok || delim != '[' {
		return res, fmt.Errorf("%w: starts with %v", falcon.ErrNotArray, tok)
	}
	step := json.Number(fmt.Sprint(d.Step))
	for dec.More() {
		idx := res.Items
		res.Items++
		var raw json.RawMessage
		if err := dec.Decode(&raw); err != nil {
			res.Rejected = append(res.Rejected, intake.Rejection{Index: idx, Reason: intake.ReasonBadJSON,
				Detail: "malformed JSON from this item on: " + err.Error()})
			return res, nil
		}
		var it falcon.Item
		raw = bytes.TrimSpace(raw)
		if len(raw) == 0 || raw[0] != '{' {
			res.Rejected = append(res.Rejected, intake.Rejection{Index: idx, Reason: intake.ReasonBadJSON,
				Detail: "item is not a JSON object: " + intake.Truncate(string(raw))})
			continue
		}
		if err := json.Unmarshal(raw, &it); err != nil {
			res.Rejected = append(res.Rejected, intake.Rejection{Index: idx, Reason: intake.ReasonBadJSON,
				Detail: "item does not decode: " + intake.Truncate(err.Error())})
			continue
		}
		if it.Endpoint == "" {
			it.Endpoint = d.Endpoint
		}
		if it.Step == "" {
			it.Step = step
		}
		p, rej := it.Point(now, lim)
		if rej != nil {
			res.Rejected = append(res.Rejected, intake.Rejection{Index: idx, Reason: rej.Reason, Detail: rej.Detail})
			continue
		}
		res.Points = append(res.Points, p)
		res.Indexes = append(res.Indexes, idx)
	}
	if _, err := dec.Token(); err != nil {
		res.Rejected = append(res.Rejected, intake.Rejection{Index: res.Items, Reason: intake.ReasonBadJSON,
			Detail: "array is not closed: " + err.Error()})
	}
	return res, nil
}

// Handler serves POST /v1/push.
type Handler struct {
	sink     sink.Sink
	counters *sink.Counters
	lim      intake.Limits
	defaults falconfmt.Defaults
	now      func() time.Time
}

// NewHandler returns the /v1/push handler writing to s. counters may be nil.
func NewHandler(s sink.Sink, counters *sink.Counters, d falconfmt.Defaults, lim intake.Limits) *Handler {
	return &Handler{sink: s, counters: counters, lim: lim.WithDefaults(), defaults: d, now: time.Now}
}

func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		intake.Fail(w, nil, Proto, http.StatusMethodNotAllowed, fmt.Errorf("use POST"))
		return
	}
	body, code, err := intake.ReadBody(w, r, h.lim)
	if err != nil {
		intake.Fail(w, nil, Proto, code, err)
		return
	}
	res, err := Decode(bytes.NewReader(body), h.now().Unix(), h.defaults, h.lim)
	if err != nil {
		h.counters.Rejected(Proto, intake.ReasonBadJSON, err.Error(), "body")
		intake.Fail(w, nil, Proto, http.StatusBadRequest, err)
		return
	}
	for _, rj := range res.Rejected {
		h.counters.Rejected(Proto, rj.Reason, rj.Detail, fmt.Sprintf("item %d", rj.Index))
	}
	if len(res.Points) > 0 {
		if err := h.sink.Write(r.Context(), res.Points); err != nil {
			h.counters.Dropped(Proto, len(res.Points), err)
			intake.WriteJSON(w, http.StatusServiceUnavailable, intake.Response{Rejected: nonNil(res.Rejected), Error: "spooling points failed: " + err.Error()})
			return
		}
		h.counters.Received(Proto, len(res.Points))
	}
	resp := intake.Response{Accepted: len(res.Points), Rejected: nonNil(res.Rejected)}
	code = http.StatusOK
	if len(res.Points) == 0 && len(res.Rejected) > 0 {
		code = http.StatusBadRequest
		resp.Error = "every item was rejected"
	}
	intake.WriteJSON(w, code, resp)
}

func nonNil(r []intake.Rejection) []intake.Rejection {
	if r == nil {
		return []intake.Rejection{}
	}
	return r
}
