package graphite

import (
	"bytes"
	"errors"
	"net/http"
	"time"

	"github.com/opskit/opskit/internal/metric"
	"github.com/opskit/opskit/transfer/intake"
)

// HTTPHandler serves POST /api/graphite: a body of Graphite plaintext lines
// answered like /api/push, with the 1-based line number as each rejected
// item's index, so a pipe can push Graphite lines and get an
// acknowledgement. Blank lines are skipped.
type HTTPHandler struct {
	app intake.Appender
	rec *intake.Recorder
	lim intake.Limits
	now func() time.Time
}

// NewHTTPHandler returns the /api/graphite handler storing into app. rec may
// be nil; zero fields of lim take their defaults.
func NewHTTPHandler(app intake.Appender, rec *intake.Recorder, lim intake.Limits) *HTTPHandler {
	rec.Register(ProtoHTTP)
	return &HTTPHandler{app: app, rec: rec, lim: lim.WithDefaults(), now: time.Now}
}

// ProtoHTTP is the "proto" label of Graphite lines pushed over HTTP.
const ProtoHTTP = "graphite_http"

func (h *HTTPHandler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		intake.Fail(w, h.rec, ProtoHTTP, http.StatusMethodNotAllowed, errors.New("use POST"))
		return
	}
	body, code, err := intake.ReadBody(w, r, h.lim)
	if err != nil {
		intake.Fail(w, h.rec, ProtoHTTP, code, err)
		return
	}
	pts, lines, rejected := ParseBody(body, h.now().Unix(), h.lim)
	intake.StoreAndAnswer(r.Context(), w, h.app, h.rec, ProtoHTTP, pts, lines, rejected)
}

// ParseBody parses every line of body. lines[i] is the 1-based line number
// of pts[i]; rejections carry line numbers too. Blank lines are skipped.
func ParseBody(body []byte, now int64, lim intake.Limits) (pts []metric.Point, lines []int, rejected []intake.Rejection) {
	p := NewParser(lim, 0)
	for lineNo := 1; len(body) > 0; lineNo++ {
		line, rest, _ := bytes.Cut(body, []byte{'\n'})
		body = rest
		if IsBlank(line) {
			continue
		}
		pt, rej := p.ParseLine(line, now)
		if rej != nil {
			rejected = append(rejected, intake.Rejection{Index: lineNo, Reason: rej.Reason, Detail: rej.Detail})
			continue
		}
		pts = append(pts, pt)
		lines = append(lines, lineNo)
	}
	return pts, lines, rejected
}
