// Package api is deployer's HTTP API: deploys, queue, history and audit
// for people and CI (JSON, bearer tokens with roles per app), and the
// long-poll endpoints the deploy agents use (deploy/README.md's contract).
package api

import (
	"context"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/opskit/opskit/deploy/release"
	"github.com/opskit/opskit/deployer/agents"
	"github.com/opskit/opskit/deployer/rollout"
	"github.com/opskit/opskit/deployer/store"
)

// Server serves the API.
type Server struct {
	Engine *rollout.Engine
	Store  *store.Store
	Hub    *agents.Hub
	// Tokens returns the tokens in force (nil: only loopback callers).
	Tokens func() *Tokens
	// MaxWait caps a long poll's wait (agents' and events').
	MaxWait time.Duration
	Now     func() time.Time
	Log     *slog.Logger
	// Base ends parked long polls when the daemon stops.
	Base context.Context
	// AgentsToken is the bearer token the deploy agents present on their
	// long poll and reports. Empty: only loopback agents are served, so no
	// one off the machine can read tasks or forge results.
	AgentsToken string
}

// Register adds the API's routes to mux.
func (s *Server) Register(mux *http.ServeMux) {
	if s.MaxWait <= 0 {
		s.MaxWait = time.Minute
	}
	if s.Now == nil {
		s.Now = time.Now
	}
	if s.Log == nil {
		s.Log = slog.New(slog.DiscardHandler)
	}
	if s.Base == nil {
		s.Base = context.Background()
	}
	mux.HandleFunc("GET /api/v1/hosts/{host}/tasks", s.agentAuth(s.agentPoll))
	mux.HandleFunc("POST /api/v1/tasks/{id}/progress", s.agentAuth(s.agentReport))

	mux.HandleFunc("POST /v1/deploys", s.auth(RoleDeployer, s.submit))
	mux.HandleFunc("GET /v1/deploys", s.auth(RoleReader, s.list))
	mux.HandleFunc("GET /v1/deploys/{id}", s.auth(RoleReader, s.get))
	mux.HandleFunc("GET /v1/deploys/{id}/events", s.auth(RoleReader, s.events))
	mux.HandleFunc("POST /v1/deploys/{id}/{action}", s.auth(RoleReader, s.act))
	mux.HandleFunc("POST /v1/apps/{app}/rollback", s.auth(RoleOperator, s.rollback))
	mux.HandleFunc("GET /v1/queue", s.auth(RoleReader, s.queue))
	mux.HandleFunc("GET /v1/history", s.auth(RoleReader, s.history))
	mux.HandleFunc("GET /v1/audit", s.auth(RoleReader, s.audit))
}

type handler func(w http.ResponseWriter, r *http.Request, c Caller) error

// httpError carries a status.
type httpError struct {
	status int
	err    error
}

func (e *httpError) Error() string { return e.err.Error() }
func (e *httpError) Unwrap() error { return e.err }

// StatusCode is the HTTP status the error answers with.
func (e *httpError) StatusCode() int { return e.status }

// Authorize identifies r's caller against tokens as the API does (a
// loopback client without a token may do anything) and checks that its
// role on app reaches role. It returns the caller's name; an error carries
// its HTTP status (401 or 403) as StatusCode().
func Authorize(tokens func() *Tokens, r *http.Request, app, role string) (string, error) {
	c, err := (&Server{Tokens: tokens}).caller(r)
	if err != nil {
		return "", err
	}
	if !c.Can(role, app) {
		return c.Name, forbidden(c, role, app)
	}
	return c.Name, nil
}

func statusOf(err error) int {
	var he *httpError
	switch {
	case errors.As(err, &he):
		return he.status
	case errors.Is(err, rollout.ErrInvalid):
		return http.StatusBadRequest
	case errors.Is(err, store.ErrNotFound):
		return http.StatusNotFound
	case errors.Is(err, store.ErrConflict):
		return http.StatusConflict
	case errors.Is(err, rollout.ErrNotLeader):
		return http.StatusServiceUnavailable
	}
	return http.StatusInternalServerError
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v)
}

func writeError(w http.ResponseWriter, err error) {
	writeJSON(w, statusOf(err), map[string]string{"error": err.Error()})
}

func isLoopback(r *http.Request) bool {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return false
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// caller identifies a request: a bearer token from the tokens file, or a
// loopback client without one (every role, as the kit allows /admin).
func (s *Server) caller(r *http.Request) (Caller, error) {
	h := r.Header.Get("Authorization")
	if h == "" {
		if isLoopback(r) {
			return Caller{Name: "local", All: true}, nil
		}
		return Caller{}, &httpError{http.StatusUnauthorized, errors.New("a bearer token is required from a non-loopback client")}
	}
	secret, ok := strings.CutPrefix(h, "Bearer ")
	if !ok {
		return Caller{}, &httpError{http.StatusUnauthorized, errors.New("Authorization: want Bearer TOKEN")}
	}
	var tokens *Tokens
	if s.Tokens != nil {
		tokens = s.Tokens()
	}
	tk, ok := tokens.find(strings.TrimSpace(secret))
	if !ok {
		return Caller{}, &httpError{http.StatusUnauthorized, errors.New("unknown token")}
	}
	return Caller{Name: tk.Name, Roles: tk.Roles}, nil
}

// auth checks the caller has role on the request's app ({app} in the
// path) or on some app (other routes check the deploy's app themselves).
func (s *Server) auth(role string, h handler) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		c, err := s.caller(r)
		if err != nil {
			writeError(w, err)
			return
		}
		if !c.Can(role, r.PathValue("app")) {
			err := forbidden(c, role, r.PathValue("app"))
			if r.Method != http.MethodGet {
				s.record(c, actionName(r), nil, r.PathValue("app"), "", r.PathValue("id"), err)
			}
			writeError(w, err)
			return
		}
		if err := h(w, r, c); err != nil {
			writeError(w, err)
		}
	}
}

// actionName names a mutation for the audit log.
func actionName(r *http.Request) string {
	switch {
	case r.PathValue("action") != "":
		return r.PathValue("action")
	case r.PathValue("app") != "":
		return "rollback"
	}
	return "submit"
}

func forbidden(c Caller, role, app string) error {
	if app == "" {
		app = "any app"
	}
	return &httpError{http.StatusForbidden, fmt.Errorf("%s lacks the %s role on %s", c.Name, role, app)}
}

func (s *Server) record(c Caller, action string, d *store.Deploy, app, env, detail string, err error) {
	e := store.AuditEntry{Time: s.Now().UTC(), User: c.Name, Action: action, App: app, Env: env, Detail: detail, Result: "ok"}
	if d != nil {
		e.Deploy, e.App, e.Env = d.ID, d.App, d.Env
	}
	if err != nil {
		e.Result = err.Error()
	}
	if aerr := s.Store.Audit(e); aerr != nil {
		s.Log.Error("writing the audit log failed", "err", aerr, "entry", e)
	}
}

func decodeBody(r *http.Request, v any) error {
	dec := json.NewDecoder(io.LimitReader(r.Body, 1<<20))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return fmt.Errorf("%w: body: %w", rollout.ErrInvalid, err)
	}
	return nil
}

func (s *Server) submit(w http.ResponseWriter, r *http.Request, c Caller) error {
	var req rollout.Request
	if err := decodeBody(r, &req); err != nil {
		s.record(c, "submit", nil, "", "", "", err)
		return err
	}
	if !c.Can(RoleDeployer, req.App) {
		err := forbidden(c, RoleDeployer, req.App)
		s.record(c, "submit", nil, req.App, req.Env, req.Version, err)
		return err
	}
	d, err := s.Engine.Submit(req, c.Name)
	s.record(c, "submit", d, req.App, req.Env, "version "+req.Version+" "+req.Artifact, err)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusCreated, summarize(d))
	return nil
}

// Progress counts a deploy's hosts by state.
type Progress struct {
	Hosts      int `json:"hosts"`
	Pending    int `json:"pending"`
	Running    int `json:"running"`
	Done       int `json:"done"`
	Failed     int `json:"failed"`
	RolledBack int `json:"rolled_back"`
}

// Summary is a deploy without its hosts' details.
type Summary struct {
	*store.Deploy
	Hosts    []store.HostStep `json:"hosts,omitempty"`
	Progress Progress         `json:"progress"`
}

func progress(d *store.Deploy) Progress {
	p := Progress{Hosts: len(d.Hosts)}
	for _, h := range d.Hosts {
		switch h.State {
		case store.StepPending:
			p.Pending++
		case store.StepDispatched, store.StepRunning:
			p.Running++
		case store.StepDone:
			p.Done++
		case store.StepFailed:
			p.Failed++
		}
		if h.Rollback != nil && h.Rollback.State == store.StepDone {
			p.RolledBack++
		}
	}
	return p
}

func summarize(d *store.Deploy) Summary { return Summary{Deploy: d, Progress: progress(d)} }

func summaries(c Caller, ds []*store.Deploy) []Summary {
	out := []Summary{}
	for _, d := range ds {
		if c.Can(RoleReader, d.App) {
			out = append(out, summarize(d))
		}
	}
	return out
}

func limitOf(r *http.Request, def int) int {
	if n, err := strconv.Atoi(r.URL.Query().Get("limit")); err == nil && n > 0 {
		return n
	}
	return def
}

func (s *Server) list(w http.ResponseWriter, r *http.Request, c Caller) error {
	q := r.URL.Query()
	f := store.Filter{App: q.Get("app"), Env: q.Get("env"), Limit: limitOf(r, 100)}
	if st := q.Get("state"); st != "" {
		f.States = strings.Split(st, ",")
	}
	ds, err := s.Store.List(f)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, summaries(c, ds))
	return nil
}

func (s *Server) load(r *http.Request, c Caller, role string) (*store.Deploy, error) {
	d, err := s.Store.Get(r.PathValue("id"))
	if err != nil {
		return nil, err
	}
	if !c.Can(role, d.App) {
		return d, forbidden(c, role, d.App)
	}
	return d, nil
}

func (s *Server) get(w http.ResponseWriter, r *http.Request, c Caller) error {
	d, err := s.load(r, c, RoleReader)
	if err != nil {
		return err
	}
	sum := summarize(d)
	sum.Hosts = d.Hosts
	writeJSON(w, http.StatusOK, sum)
	return nil
}

// EventsAnswer is a page of a deploy's events.
type EventsAnswer struct {
	Deploy string        `json:"deploy"`
	State  string        `json:"state"`
	Last   int64         `json:"last"`
	Events []store.Event `json:"events"`
}

func (s *Server) waitOf(r *http.Request) (time.Duration, error) {
	w := r.URL.Query().Get("wait")
	if w == "" {
		return 0, nil
	}
	d, err := time.ParseDuration(w)
	if err != nil {
		n, nerr := strconv.Atoi(w)
		if nerr != nil || n < 0 {
			return 0, &httpError{http.StatusBadRequest, fmt.Errorf("wait %q: want a duration such as 30s", w)}
		}
		d = time.Duration(n) * time.Second
	}
	return min(max(d, 0), s.MaxWait), nil
}

// events answers the events after ?after=N, waiting up to ?wait= for one
// while the deploy has not ended.
func (s *Server) events(w http.ResponseWriter, r *http.Request, c Caller) error {
	d, err := s.load(r, c, RoleReader)
	if err != nil {
		return err
	}
	after, _ := strconv.ParseInt(r.URL.Query().Get("after"), 10, 64)
	wait, err := s.waitOf(r)
	if err != nil {
		return err
	}
	timer := time.NewTimer(wait)
	defer timer.Stop()
	for {
		changed := s.Store.Changed()
		state, err := s.Store.State(d.ID)
		if err != nil {
			return err
		}
		evs, err := s.Store.Events(d.ID, after, 1000)
		if err != nil {
			return err
		}
		if len(evs) > 0 || store.Terminal(state) || wait == 0 {
			if evs == nil {
				evs = []store.Event{}
			}
			last := after
			if len(evs) > 0 {
				last = evs[len(evs)-1].Seq
			}
			writeJSON(w, http.StatusOK, EventsAnswer{Deploy: d.ID, State: state, Last: last, Events: evs})
			return nil
		}
		select {
		case <-changed:
		case <-timer.C:
			wait = 0
		case <-r.Context().Done():
			return nil
		case <-s.Base.Done():
			wait = 0
		}
	}
}

// act runs abort, retry, promote or cancel.
func (s *Server) act(w http.ResponseWriter, r *http.Request, c Caller) error {
	action := r.PathValue("action")
	role := RoleDeployer
	var fn func(string) (*store.Deploy, error)
	switch action {
	case "abort":
		role, fn = RoleOperator, s.Engine.Abort
	case "retry":
		fn = s.Engine.Retry
	case "promote":
		fn = s.Engine.Promote
	case "cancel":
		fn = s.Engine.Cancel
	default:
		return &httpError{http.StatusNotFound, fmt.Errorf("no action %q (abort, retry, promote, cancel)", action)}
	}
	d, err := s.load(r, c, role)
	if err != nil {
		if d != nil {
			s.record(c, action, d, "", "", "", err)
		}
		return err
	}
	nd, err := fn(d.ID)
	s.record(c, action, d, "", "", "", err)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, summarize(nd))
	return nil
}

// RollbackRequest is the body (or query) of POST /v1/apps/{app}/rollback.
type RollbackRequest struct {
	Env     string `json:"env,omitempty"`
	Version string `json:"version,omitempty"`
}

func (s *Server) rollback(w http.ResponseWriter, r *http.Request, c Caller) error {
	app := r.PathValue("app")
	req := RollbackRequest{Env: r.URL.Query().Get("env"), Version: r.URL.Query().Get("version")}
	if r.ContentLength != 0 && r.Body != nil {
		if err := decodeBody(r, &req); err != nil && !errors.Is(err, io.EOF) {
			s.record(c, "rollback", nil, app, req.Env, "", err)
			return err
		}
	}
	d, err := s.Engine.Rollback(r.Context(), app, req.Env, req.Version, c.Name)
	detail := "to the recorded previous releases"
	if req.Version != "" {
		detail = "to " + req.Version
	}
	s.record(c, "rollback", d, app, req.Env, detail, err)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusCreated, summarize(d))
	return nil
}

func (s *Server) queue(w http.ResponseWriter, _ *http.Request, c Caller) error {
	q, err := s.Store.Queue()
	if err != nil {
		return err
	}
	active, err := s.Store.List(store.Filter{States: []string{store.Running, store.Paused}})
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, map[string]any{"active": summaries(c, active), "queued": summaries(c, q)})
	return nil
}

func (s *Server) history(w http.ResponseWriter, r *http.Request, c Caller) error {
	q := r.URL.Query()
	ds, err := s.Store.List(store.Filter{App: q.Get("app"), Env: q.Get("env"),
		States: []string{store.Succeeded, store.Failed, store.RolledBack, store.Aborted, store.Cancelled}, Limit: limitOf(r, 50)})
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, summaries(c, ds))
	return nil
}

func (s *Server) audit(w http.ResponseWriter, r *http.Request, c Caller) error {
	app := r.URL.Query().Get("app")
	entries, err := s.Store.AuditLog(app, limitOf(r, 100))
	if err != nil {
		return err
	}
	out := slices.DeleteFunc(entries, func(e store.AuditEntry) bool { return !c.Can(RoleReader, e.App) && !c.All })
	if out == nil {
		out = []store.AuditEntry{}
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

// agentAuth admits a deploy agent: one presenting AgentsToken, or any
// loopback caller when no token is configured.
func (s *Server) agentAuth(h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if s.AgentsToken == "" {
			if !isLoopback(r) {
				writeError(w, &httpError{http.StatusUnauthorized, errors.New("agents off loopback need --agent-poll-token-file on deployer and --deployer-token-file on the agent")})
				return
			}
		} else {
			got, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
			if !ok || subtle.ConstantTimeCompare([]byte(got), []byte(s.AgentsToken)) != 1 {
				writeError(w, &httpError{http.StatusUnauthorized, errors.New("missing or wrong agents' token")})
				return
			}
		}
		h(w, r)
	}
}

// agentPoll is the agents' long poll:
// GET /api/v1/hosts/{host}/tasks?after=ID&wait=30s.
func (s *Server) agentPoll(w http.ResponseWriter, r *http.Request) {
	host := r.PathValue("host")
	if err := release.ValidName("host", host); err != nil {
		writeError(w, &httpError{http.StatusBadRequest, err})
		return
	}
	wait, err := s.waitOf(r)
	if err != nil {
		writeError(w, err)
		return
	}
	ctx, cancel := context.WithCancel(r.Context())
	defer context.AfterFunc(s.Base, cancel)()
	tasks := s.Hub.Poll(ctx, host, r.URL.Query().Get("after"), wait)
	cancel()
	if len(tasks) == 0 {
		w.WriteHeader(http.StatusNoContent)
		return
	}
	writeJSON(w, http.StatusOK, tasks)
}

// agentReport takes a task's progress or result:
// POST /api/v1/tasks/{id}/progress.
func (s *Server) agentReport(w http.ResponseWriter, r *http.Request) {
	var res release.Result
	if err := json.NewDecoder(io.LimitReader(r.Body, 8<<20)).Decode(&res); err != nil {
		writeError(w, &httpError{http.StatusBadRequest, fmt.Errorf("result: %w", err)})
		return
	}
	if res.Task.ID != r.PathValue("id") {
		writeError(w, &httpError{http.StatusBadRequest, fmt.Errorf("result of task %q posted for %q", res.Task.ID, r.PathValue("id"))})
		return
	}
	if err := s.Engine.Report(res); err != nil {
		writeError(w, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}
