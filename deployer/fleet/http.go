package fleet

import (
	"cmp"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strconv"
	"strings"

	"github.com/opskit/opskit/deployer/fleet/cron"
	"github.com/opskit/opskit/deployer/hosts"
)

// Roles the fleet endpoints ask the authorizer for.
const (
	RoleOperator = "operator"
	RoleReader   = "reader"
)

// Deps are what Register wires the endpoints to.
type Deps struct {
	Fleet *Fleet
	// Cron may be nil: the /v1/cron endpoints then answer 404.
	Cron *cron.Scheduler
	// Authorize checks that the request's bearer may act on app with role
	// (RoleOperator for changes, RoleReader for reads; app "" means every
	// app) and returns who it is (with a refusal too, when known, for the
	// audit log). A nil Authorize lets everyone in as "anonymous". An error
	// with a StatusCode() int method sets the answer's status; any other
	// error answers 403.
	Authorize func(r *http.Request, app, role string) (user string, err error)
	// Audit, when set, records every change tried, refused ones too: who,
	// what, on which app, and its outcome (err nil for success).
	Audit func(user, action, app, env, detail string, err error)
	Log   *slog.Logger
}

// Register serves the fleet API on mux:
//
//	POST   /v1/proc/{action}           start|stop|restart; body {app, env, host, program}
//	GET    /v1/apps/{app}/hosts/stats  ?env=&host=
//	POST   /v1/exec                    body {app, env, host, name, args}; JSON lines streamed
//	POST   /v1/cron                    body {app, env, schedule, target, name, args}
//	GET    /v1/cron                    ?app=
//	GET    /v1/cron/{id}
//	DELETE /v1/cron/{id}
//	GET    /v1/cron/{id}/runs          ?limit=
//	POST   /v1/cron/{id}/run           run now
func Register(mux *http.ServeMux, d Deps) {
	if d.Log == nil {
		d.Log = slog.New(slog.DiscardHandler)
	}
	h := &handlers{Deps: d}
	mux.HandleFunc("POST /v1/proc/{action}", h.proc)
	mux.HandleFunc("GET /v1/apps/{app}/hosts/stats", h.stats)
	mux.HandleFunc("POST /v1/exec", h.exec)
	mux.HandleFunc("POST /v1/cron", h.cronAdd)
	mux.HandleFunc("GET /v1/cron", h.cronList)
	mux.HandleFunc("GET /v1/cron/{id}", h.cronGet)
	mux.HandleFunc("DELETE /v1/cron/{id}", h.cronRemove)
	mux.HandleFunc("GET /v1/cron/{id}/runs", h.cronRuns)
	mux.HandleFunc("POST /v1/cron/{id}/run", h.cronRunNow)
}

type handlers struct{ Deps }

// ProcRequest is the body of POST /v1/proc/{action}.
type ProcRequest struct {
	Target
	Program string `json:"program"`
}

// ProcAnswer is the answer of POST /v1/proc/{action}.
type ProcAnswer struct {
	Action  string       `json:"action"`
	Program string       `json:"program"`
	Results []ProcResult `json:"results"`
	Failed  int          `json:"failed"`
}

// ExecRequest is the body of POST /v1/exec.
type ExecRequest struct {
	Target
	Name string   `json:"name"`
	Args []string `json:"args"`
}

// StatsAnswer is the answer of GET /v1/apps/{app}/hosts/stats.
type StatsAnswer struct {
	App   string      `json:"app"`
	Env   string      `json:"env,omitempty"`
	Hosts []HostStats `json:"hosts"`
}

func (h *handlers) authorize(w http.ResponseWriter, r *http.Request, app, role string) (string, bool) {
	user, err := h.check(w, r, app, role)
	return user, err == nil
}

// check is authorize returning the refusal (and who was refused, when
// known), after answering it.
func (h *handlers) check(w http.ResponseWriter, r *http.Request, app, role string) (string, error) {
	if h.Authorize == nil {
		return "anonymous", nil
	}
	user, err := h.Authorize(r, app, role)
	if err != nil {
		code := http.StatusForbidden
		var sc interface{ StatusCode() int }
		if errors.As(err, &sc) {
			code = sc.StatusCode()
		}
		writeError(w, code, err)
		return user, err
	}
	return user, nil
}

// authorizeChange is authorize for the operator role, with a refusal
// written to the audit log.
func (h *handlers) authorizeChange(w http.ResponseWriter, r *http.Request, action, app, env, detail string) (string, bool) {
	user, err := h.check(w, r, app, RoleOperator)
	if err != nil {
		h.audit(cmp.Or(user, "unknown"), action, app, env, detail, err)
		return "", false
	}
	return user, true
}

// audit records a change tried in the audit log and the daemon's log.
func (h *handlers) audit(user, action, app, env, detail string, err error) {
	h.Log.Info("fleet "+action, "user", user, "app", app, "env", env, "detail", detail, "result", cmp.Or(errorText(err), "ok"))
	if h.Audit != nil {
		h.Audit(user, action, app, env, detail, err)
	}
}

func (h *handlers) proc(w http.ResponseWriter, r *http.Request) {
	var req ProcRequest
	if !decode(w, r, &req) {
		return
	}
	req.Env = cmp.Or(req.Env, DefaultEnv)
	action := r.PathValue("action")
	detail := fmt.Sprintf("%s %s host=%s", action, req.Program, req.Host)
	user, ok := h.authorizeChange(w, r, "proc", req.App, req.Env, detail)
	if !ok {
		return
	}
	results, err := h.Fleet.Proc(r.Context(), req.Target, action, req.Program)
	if err != nil {
		h.audit(user, "proc", req.App, req.Env, detail, err)
		writeError(w, statusOf(err), err)
		return
	}
	ans := ProcAnswer{Action: action, Program: ProgramName(req.App, req.Program), Results: results}
	for _, res := range results {
		if !res.OK {
			ans.Failed++
		}
	}
	var auditErr error
	if ans.Failed > 0 {
		auditErr = fmt.Errorf("failed on %d of %d hosts", ans.Failed, len(results))
	}
	h.audit(user, "proc", req.App, req.Env, detail, auditErr)
	writeJSON(w, http.StatusOK, ans)
}

func (h *handlers) stats(w http.ResponseWriter, r *http.Request) {
	t := Target{App: r.PathValue("app"), Env: cmp.Or(r.URL.Query().Get("env"), DefaultEnv), Host: r.URL.Query().Get("host")}
	if _, ok := h.authorize(w, r, t.App, RoleReader); !ok {
		return
	}
	st, err := h.Fleet.Stats(r.Context(), t)
	if err != nil {
		writeError(w, statusOf(err), err)
		return
	}
	writeJSON(w, http.StatusOK, StatsAnswer{App: t.App, Env: t.Env, Hosts: st})
}

// exec streams ExecEvents as JSON lines, flushed as they come, and ends
// with a summary line. Errors found before any host ran answer as JSON
// with a status.
func (h *handlers) exec(w http.ResponseWriter, r *http.Request) {
	var req ExecRequest
	if !decode(w, r, &req) {
		return
	}
	req.Env = cmp.Or(req.Env, DefaultEnv)
	detail := strings.TrimSpace(req.Name + " " + strings.Join(req.Args, " "))
	if req.Host != "" {
		detail += " host=" + req.Host
	}
	user, ok := h.authorizeChange(w, r, "exec", req.App, req.Env, detail)
	if !ok {
		return
	}
	if err := h.Fleet.CheckAllowed(req.Name); err != nil {
		h.audit(user, "exec", req.App, req.Env, detail, err)
		writeError(w, statusOf(err), err)
		return
	}
	if _, err := h.Fleet.Resolve(r.Context(), req.Target); err != nil {
		h.audit(user, "exec", req.App, req.Env, detail, err)
		writeError(w, statusOf(err), err)
		return
	}
	w.Header().Set("Content-Type", "application/x-ndjson")
	w.WriteHeader(http.StatusOK)
	flusher, _ := w.(http.Flusher)
	enc := json.NewEncoder(w)
	emit := func(ev ExecEvent) {
		if enc.Encode(ev) == nil && flusher != nil {
			flusher.Flush()
		}
	}
	results, err := h.Fleet.Exec(r.Context(), req.Target, req.Name, req.Args, emit)
	if err != nil { // the hosts changed between the check and the run
		emit(ExecEvent{Type: "summary", Error: err.Error()})
		h.audit(user, "exec", req.App, req.Env, detail, err)
		return
	}
	sum := ExecEvent{Type: "summary", Hosts: len(results)}
	for _, res := range results {
		if !res.OK() {
			sum.Failed++
		}
	}
	emit(sum)
	var auditErr error
	if sum.Failed > 0 {
		auditErr = fmt.Errorf("failed on %d of %d hosts", sum.Failed, sum.Hosts)
	}
	h.audit(user, "exec", req.App, req.Env, detail, auditErr)
}

func (h *handlers) cronEnabled(w http.ResponseWriter) bool {
	if h.Cron == nil {
		writeError(w, http.StatusNotFound, errors.New("scheduled jobs are not enabled"))
		return false
	}
	return true
}

func (h *handlers) cronAdd(w http.ResponseWriter, r *http.Request) {
	if !h.cronEnabled(w) {
		return
	}
	var j cron.Job
	if !decode(w, r, &j) {
		return
	}
	j.Env = cmp.Or(j.Env, DefaultEnv)
	command := strings.Join(append([]string{j.Name}, j.Args...), " ")
	user, ok := h.authorizeChange(w, r, "cron_add", j.App, j.Env, fmt.Sprintf("%q target=%s %s", j.Schedule, j.Target, command))
	if !ok {
		return
	}
	j.ID, j.CreatedBy = "", user
	added, err := h.Cron.Add(j)
	detail := fmt.Sprintf("%s %q target=%s %s", added.ID, j.Schedule, j.Target, command)
	h.audit(user, "cron_add", j.App, j.Env, detail, err)
	if err != nil {
		writeError(w, statusOf(err), err)
		return
	}
	v, err := h.Cron.Job(added.ID)
	if err != nil {
		writeError(w, statusOf(err), err)
		return
	}
	writeJSON(w, http.StatusCreated, v)
}

func (h *handlers) cronList(w http.ResponseWriter, r *http.Request) {
	if !h.cronEnabled(w) {
		return
	}
	app := r.URL.Query().Get("app")
	if _, ok := h.authorize(w, r, app, RoleReader); !ok {
		return
	}
	jobs, err := h.Cron.Jobs(app)
	if err != nil {
		writeError(w, statusOf(err), err)
		return
	}
	if app == "" && h.Authorize != nil {
		// A list of every app's jobs shows only those the caller may read.
		readable := jobs[:0]
		for _, j := range jobs {
			if _, err := h.Authorize(r, j.App, RoleReader); err == nil {
				readable = append(readable, j)
			}
		}
		jobs = readable
	}
	writeJSON(w, http.StatusOK, jobs)
}

// cronJob finds the job of the request's {id} and checks the caller's role
// on its app; a change (action not "") refused is audited.
func (h *handlers) cronJob(w http.ResponseWriter, r *http.Request, role, action string) (cron.JobView, string, bool) {
	if !h.cronEnabled(w) {
		return cron.JobView{}, "", false
	}
	v, err := h.Cron.Job(r.PathValue("id"))
	if err != nil {
		// Authorize for every app first, so an unknown id tells a caller
		// nothing it may not read.
		if _, ok := h.authorize(w, r, "", role); ok {
			writeError(w, statusOf(err), err)
		}
		return cron.JobView{}, "", false
	}
	if action != "" {
		user, ok := h.authorizeChange(w, r, action, v.App, v.Env, v.ID)
		return v, user, ok
	}
	user, ok := h.authorize(w, r, v.App, role)
	return v, user, ok
}

func (h *handlers) cronGet(w http.ResponseWriter, r *http.Request) {
	if v, _, ok := h.cronJob(w, r, RoleReader, ""); ok {
		writeJSON(w, http.StatusOK, v)
	}
}

func (h *handlers) cronRemove(w http.ResponseWriter, r *http.Request) {
	v, user, ok := h.cronJob(w, r, RoleOperator, "cron_rm")
	if !ok {
		return
	}
	err := h.Cron.Remove(v.ID)
	h.audit(user, "cron_rm", v.App, v.Env, v.ID, err)
	if err != nil {
		writeError(w, statusOf(err), err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]string{"removed": v.ID})
}

func (h *handlers) cronRuns(w http.ResponseWriter, r *http.Request) {
	v, _, ok := h.cronJob(w, r, RoleReader, "")
	if !ok {
		return
	}
	limit := 20
	if s := r.URL.Query().Get("limit"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 0 {
			writeError(w, http.StatusBadRequest, errors.New("limit: want a count (0 for all kept runs)"))
			return
		}
		limit = n
	}
	runs, err := h.Cron.Runs(v.ID, limit)
	if err != nil {
		writeError(w, statusOf(err), err)
		return
	}
	writeJSON(w, http.StatusOK, runs)
}

func (h *handlers) cronRunNow(w http.ResponseWriter, r *http.Request) {
	v, user, ok := h.cronJob(w, r, RoleOperator, "cron_run")
	if !ok {
		return
	}
	run, err := h.Cron.RunNow(r.Context(), v.ID)
	if err == nil && !run.OK() {
		h.audit(user, "cron_run", v.App, v.Env, v.ID, errors.New("failed on some hosts"))
	} else {
		h.audit(user, "cron_run", v.App, v.Env, v.ID, err)
	}
	if err != nil {
		writeError(w, statusOf(err), err)
		return
	}
	writeJSON(w, http.StatusOK, run)
}

// statusOf maps an error to its HTTP status.
func statusOf(err error) int {
	switch {
	case errors.Is(err, ErrBadRequest):
		return http.StatusBadRequest
	case errors.Is(err, ErrRefused):
		return http.StatusForbidden
	case errors.Is(err, cron.ErrInvalid):
		return http.StatusBadRequest
	case errors.Is(err, ErrNoSuchHost), errors.Is(err, hosts.ErrUnknownApp), errors.Is(err, cron.ErrNotFound):
		return http.StatusNotFound
	case errors.Is(err, cron.ErrBusy):
		return http.StatusConflict
	}
	return http.StatusInternalServerError
}

func decode(w http.ResponseWriter, r *http.Request, v any) bool {
	dec := json.NewDecoder(io.LimitReader(r.Body, 1<<20))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		writeError(w, http.StatusBadRequest, fmt.Errorf("request body: %w", err))
		return false
	}
	return true
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v)
}

func writeError(w http.ResponseWriter, code int, err error) {
	writeJSON(w, code, map[string]string{"error": err.Error()})
}
