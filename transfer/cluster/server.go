package cluster

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"

	"github.com/opskit/opskit/internal/metric"
	"github.com/opskit/opskit/transfer/intake"
	"github.com/opskit/opskit/transfer/query"
	"github.com/opskit/opskit/transfer/ring"
	"github.com/opskit/opskit/transfer/storage"
)

// maxForwardBody bounds a forwarded write or a query request.
const maxForwardBody = 256 << 20

// Server is the node-to-node API over this node's own storage: forwarded
// writes are stored locally (never routed again) and queries read only
// local data.
type Server struct {
	c      *Cluster
	reader query.Reader
}

// NewServer serves c's peers: writes go to c's local appender, reads to r.
func NewServer(c *Cluster, r query.Reader) *Server { return &Server{c: c, reader: r} }

// Register mounts the node-to-node endpoints.
func (s *Server) Register(mux *http.ServeMux) {
	mux.HandleFunc("POST "+PathWrite, s.write)
	mux.HandleFunc("POST "+PathSelect, s.selectSeries)
	mux.HandleFunc("POST "+PathLabels, s.labels)
	mux.HandleFunc("POST "+PathFetch, s.fetch)
	mux.HandleFunc("POST "+PathLast, s.last)
	mux.HandleFunc("GET "+PathStatus, s.status)
}

// WriteAnswer is the answer to a forwarded write.
type WriteAnswer struct {
	Accepted int `json:"accepted"`
	// Refused points were not stored, e.g. not newer than their series'
	// last point (a batch delivered twice after a lost answer).
	Refused int    `json:"refused"`
	Error   string `json:"error,omitempty"`
}

func (s *Server) write(w http.ResponseWriter, r *http.Request) {
	if v := r.Header.Get(HeaderWire); v != WireVersion {
		intake.WriteJSON(w, http.StatusUnsupportedMediaType, WriteAnswer{Error: fmt.Sprintf("cluster wire version %q; this node speaks %q", v, WireVersion)})
		return
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxForwardBody))
	if err != nil {
		intake.WriteJSON(w, http.StatusRequestEntityTooLarge, WriteAnswer{Error: err.Error()})
		return
	}
	pts, err := DecodeBody(nil, body)
	if err != nil {
		s.c.cfg.Metrics.GetOrCreateCounter(`opskit_transfer_forward_received_bad_total`).Inc()
		intake.WriteJSON(w, http.StatusBadRequest, WriteAnswer{Error: err.Error()})
		return
	}
	ans := WriteAnswer{Accepted: len(pts)}
	if len(pts) > 0 {
		partial, err := intake.SplitAppendError(s.c.local.Append(r.Context(), pts))
		if err != nil {
			intake.WriteJSON(w, http.StatusServiceUnavailable, WriteAnswer{Error: err.Error()})
			return
		}
		if partial != nil {
			ans.Refused = len(partial.Rejected)
			ans.Accepted -= ans.Refused
		}
	}
	s.c.cfg.Metrics.GetOrCreateCounter(`opskit_transfer_forward_received_points_total`).Add(ans.Accepted)
	if ans.Refused > 0 {
		s.c.cfg.Metrics.GetOrCreateCounter(`opskit_transfer_forward_received_refused_total`).Add(ans.Refused)
	}
	intake.WriteJSON(w, http.StatusOK, ans)
}

// wireMatcher is a matcher in node-to-node requests.
type wireMatcher struct {
	Type  string `json:"type"` // =, !=, =~, !~
	Name  string `json:"name"`
	Value string `json:"value"`
}

func toWireMatchers(ms []*metric.Matcher) []wireMatcher {
	out := make([]wireMatcher, len(ms))
	for i, m := range ms {
		out[i] = wireMatcher{Type: m.Type.String(), Name: m.Name, Value: m.Value}
	}
	return out
}

func fromWireMatchers(ws []wireMatcher) ([]*metric.Matcher, error) {
	out := make([]*metric.Matcher, len(ws))
	for i, w := range ws {
		var t metric.MatchType
		switch w.Type {
		case "=":
			t = metric.MatchEqual
		case "!=":
			t = metric.MatchNotEqual
		case "=~":
			t = metric.MatchRegexp
		case "!~":
			t = metric.MatchNotRegexp
		default:
			return nil, fmt.Errorf("matcher type %q", w.Type)
		}
		m, err := metric.NewMatcher(t, w.Name, w.Value)
		if err != nil {
			return nil, err
		}
		out[i] = m
	}
	return out, nil
}

type selectRequest struct {
	Matchers []wireMatcher `json:"matchers"`
}

type wireSeries struct {
	ID     uint64      `json:"id"`
	Labels [][2]string `json:"labels"`
	Last   *wireLast   `json:"last,omitempty"` // the newest point, when known
}

type selectAnswer struct {
	Series []wireSeries `json:"series"`
}

type labelsRequest struct {
	Name     string        `json:"name"` // "" asks for label names
	Matchers []wireMatcher `json:"matchers"`
}

type labelsAnswer struct {
	Values []string `json:"values"`
}

type fetchRequest struct {
	IDs     []uint64 `json:"ids"`
	CF      string   `json:"cf"`
	Start   int64    `json:"start"`
	End     int64    `json:"end"`
	MinStep int64    `json:"min_step"`
}

type wireFetch struct {
	Start   int64      `json:"start"`
	Step    int64      `json:"step"`
	Values  []*float64 `json:"values"` // null is unknown
	Unknown bool       `json:"unknown_series,omitempty"`
}

type fetchAnswer struct {
	Results []wireFetch `json:"results"`
}

type lastRequest struct {
	IDs []uint64 `json:"ids"`
}

type wireLast struct {
	T  int64   `json:"t"`
	V  float64 `json:"v"`
	OK bool    `json:"ok"`
}

type lastAnswer struct {
	Points []wireLast `json:"points"`
}

func decodeRequest(w http.ResponseWriter, r *http.Request, v any) bool {
	if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, maxForwardBody)).Decode(v); err != nil {
		http.Error(w, "bad request: "+err.Error(), http.StatusBadRequest)
		return false
	}
	return true
}

func (s *Server) selectSeries(w http.ResponseWriter, r *http.Request) {
	var req selectRequest
	if !decodeRequest(w, r, &req) {
		return
	}
	ms, err := fromWireMatchers(req.Matchers)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	refs, err := s.reader.Select(ms)
	if err != nil {
		status := http.StatusInternalServerError
		if errors.Is(err, storage.ErrNoMatchers) {
			status = http.StatusBadRequest
		}
		http.Error(w, err.Error(), status)
		return
	}
	ans := selectAnswer{Series: make([]wireSeries, len(refs))}
	for i, ref := range refs {
		ls := make([][2]string, len(ref.Labels))
		for j, l := range ref.Labels {
			ls[j] = [2]string{l.Name, l.Value}
		}
		ans.Series[i] = wireSeries{ID: ref.ID, Labels: ls}
		if t, v, ok := s.reader.Last(ref.ID); ok && !math.IsNaN(v) && !math.IsInf(v, 0) {
			ans.Series[i].Last = &wireLast{T: t, V: v, OK: true}
		}
	}
	intake.WriteJSON(w, http.StatusOK, ans)
}

func (s *Server) labels(w http.ResponseWriter, r *http.Request) {
	var req labelsRequest
	if !decodeRequest(w, r, &req) {
		return
	}
	ms, err := fromWireMatchers(req.Matchers)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	var vs []string
	if req.Name == "" {
		vs, err = s.reader.LabelNames(ms)
	} else {
		vs, err = s.reader.LabelValues(req.Name, ms)
	}
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	intake.WriteJSON(w, http.StatusOK, labelsAnswer{Values: vs})
}

func (s *Server) fetch(w http.ResponseWriter, r *http.Request) {
	var req fetchRequest
	if !decodeRequest(w, r, &req) {
		return
	}
	cf, err := storage.ParseCF(req.CF)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	ans := fetchAnswer{Results: make([]wireFetch, len(req.IDs))}
	for i, id := range req.IDs {
		res, err := s.reader.Fetch(id, cf, req.Start, req.End, req.MinStep)
		if errors.Is(err, storage.ErrUnknownSeries) {
			ans.Results[i].Unknown = true
			continue
		}
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		vals := make([]*float64, len(res.Values))
		for k := range res.Values {
			if !math.IsNaN(res.Values[k]) {
				vals[k] = &res.Values[k]
			}
		}
		ans.Results[i] = wireFetch{Start: res.Start, Step: res.Step, Values: vals}
	}
	intake.WriteJSON(w, http.StatusOK, ans)
}

func (s *Server) last(w http.ResponseWriter, r *http.Request) {
	var req lastRequest
	if !decodeRequest(w, r, &req) {
		return
	}
	ans := lastAnswer{Points: make([]wireLast, len(req.IDs))}
	for i, id := range req.IDs {
		t, v, ok := s.reader.Last(id)
		if ok && (math.IsNaN(v) || math.IsInf(v, 0)) {
			ok = false
		}
		if ok {
			ans.Points[i] = wireLast{T: t, V: v, OK: true}
		}
	}
	intake.WriteJSON(w, http.StatusOK, ans)
}

// StatusAnswer is GET /cluster/v1/status: this node's view of the ring and
// of its destinations.
type StatusAnswer struct {
	Self         string         `json:"self"`
	RingVersion  string         `json:"ring_version"`
	Replicas     int            `json:"replicas"`
	Nodes        []NodeStatus   `json:"nodes"`
	Destinations []OutboxStatus `json:"destinations"`
}

// NodeStatus is one ring member.
type NodeStatus struct {
	Name string `json:"name"`
	Addr string `json:"addr"`
}

func (s *Server) status(w http.ResponseWriter, r *http.Request) {
	intake.WriteJSON(w, http.StatusOK, s.c.StatusAnswer())
}

// StatusAnswer reports the ring and every destination.
func (c *Cluster) StatusAnswer() StatusAnswer {
	ans := StatusAnswer{Self: c.cfg.Self, RingVersion: ring.Version, Replicas: c.cfg.Replicas, Destinations: c.Status()}
	for _, n := range c.Ring().Nodes() {
		ans.Nodes = append(ans.Nodes, NodeStatus{Name: n.Name, Addr: n.Addr})
	}
	return ans
}
