package falcon

import (
	"errors"
	"net/http"
	"time"

	"github.com/opskit/opskit/transfer/intake"
)

// Proto is the "proto" label value of this intake's metrics.
const Proto = "falcon"

// Handler serves POST /api/push: an open-falcon JSON array in, a JSON
// intake.Response out. See intake.StoreAndAnswer for the status codes; a
// body that is not an array is answered 400, an oversized one 413.
type Handler struct {
	app intake.Appender
	rec *intake.Recorder
	lim intake.Limits
	now func() time.Time
}

// NewHandler returns the /api/push handler storing into app. rec may be nil;
// zero fields of lim take their defaults.
func NewHandler(app intake.Appender, rec *intake.Recorder, lim intake.Limits) *Handler {
	rec.Register(Proto)
	return &Handler{app: app, rec: rec, lim: lim.WithDefaults(), now: time.Now}
}

func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		intake.Fail(w, h.rec, Proto, http.StatusMethodNotAllowed, errors.New("use POST"))
		return
	}
	body, code, err := intake.ReadBody(w, r, h.lim)
	if err != nil {
		intake.Fail(w, h.rec, Proto, code, err)
		return
	}
	res, err := Decode(body, h.now().Unix(), h.lim)
	if err != nil {
		h.rec.Rejected(Proto, &intake.Reject{Reason: intake.ReasonBadJSON, Detail: err.Error()}, "body")
		intake.Fail(w, h.rec, Proto, http.StatusBadRequest, err)
		return
	}
	intake.StoreAndAnswer(r.Context(), w, h.app, h.rec, Proto, res.Points, res.Indexes, res.Rejected)
}
