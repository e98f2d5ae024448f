package agent

import (
	"bufio"
	"context"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"strconv"
	"time"

	"github.com/opskit/opskit/deploy/diag"
	"github.com/opskit/opskit/deploy/host"
	"github.com/opskit/opskit/deploy/release"
	"github.com/opskit/opskit/deploy/supervise"
)

// StatusAnswer is GET /api/v1/status.
type StatusAnswer struct {
	Programs []supervise.Status `json:"programs"`
	Apps     []AppStatus        `json:"apps"`
}

// AppStatus is an app's current release.
type AppStatus struct {
	App     string `json:"app"`
	Current string `json:"current"`
}

// Status returns the programs and the apps' current releases.
func (a *Agent) Status() StatusAnswer {
	ans := StatusAnswer{Programs: a.Supervisor.Status(), Apps: []AppStatus{}}
	apps, _ := a.Store.Apps()
	for _, app := range apps {
		cur, _ := a.Store.Current(app)
		ans.Apps = append(ans.Apps, AppStatus{App: app, Current: cur})
	}
	return ans
}

// Register serves the local API:
//
//	GET  /api/v1/status
//	POST /api/v1/programs/{name}/{start,stop,restart}
//	GET  /api/v1/programs/{name}/logs?stream=out|err&tail=BYTES&follow=1
//	GET  /api/v1/apps/{app}/releases
//	POST /api/v1/apps/{app}/rollback?version=V
//	POST /api/v1/tasks          (body: a release.Task; answers its release.Result)
//	GET  /api/v1/tasks/{id}
//	GET  /api/v1/host                 (host metrics, programs' CPU and memory)
//	GET  /api/v1/diag                 (the allowlist)
//	POST /api/v1/diag/{name}          (body {"args": [...]}; streams the output)
//
// These can run commands on the host, so without a token only loopback
// clients are served; with one, every request must bear it.
func (a *Agent) Register(mux *http.ServeMux, token string) {
	inner := http.NewServeMux()
	mux.Handle("/api/v1/", guard(token, inner))
	mux = inner
	mux.HandleFunc("GET /api/v1/status", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, a.Status())
	})
	mux.HandleFunc("POST /api/v1/programs/{name}/{action}", func(w http.ResponseWriter, r *http.Request) {
		name := r.PathValue("name")
		var err error
		switch r.PathValue("action") {
		case "start":
			err = a.Supervisor.Start(r.Context(), name)
		case "stop":
			err = a.Supervisor.Stop(r.Context(), name)
		case "restart":
			err = a.Supervisor.Restart(r.Context(), name)
		default:
			writeError(w, http.StatusNotFound, errors.New("action: want start, stop or restart"))
			return
		}
		for _, st := range a.Supervisor.Status() {
			if st.Name == name {
				if err != nil {
					writeJSON(w, http.StatusConflict, map[string]any{"error": err.Error(), "program": st})
					return
				}
				writeJSON(w, http.StatusOK, st)
				return
			}
		}
		writeError(w, http.StatusNotFound, err)
	})
	mux.HandleFunc("GET /api/v1/programs/{name}/logs", a.serveLogs)
	mux.HandleFunc("GET /api/v1/apps/{app}/releases", func(w http.ResponseWriter, r *http.Request) {
		rels, err := a.Store.Releases(r.PathValue("app"))
		if err != nil {
			writeError(w, http.StatusInternalServerError, err)
			return
		}
		if rels == nil {
			rels = []release.Release{}
		}
		writeJSON(w, http.StatusOK, rels)
	})
	mux.HandleFunc("POST /api/v1/apps/{app}/rollback", func(w http.ResponseWriter, r *http.Request) {
		v, err := a.Rollback(r.Context(), r.PathValue("app"), r.URL.Query().Get("version"))
		if err != nil {
			writeError(w, http.StatusConflict, err)
			return
		}
		writeJSON(w, http.StatusOK, map[string]string{"app": r.PathValue("app"), "current": v})
	})
	mux.HandleFunc("POST /api/v1/tasks", func(w http.ResponseWriter, r *http.Request) {
		var t release.Task
		dec := json.NewDecoder(io.LimitReader(r.Body, 1<<20))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&t); err != nil {
			writeError(w, http.StatusBadRequest, err)
			return
		}
		if err := t.Validate(); err != nil {
			writeError(w, http.StatusBadRequest, err)
			return
		}
		res, err := a.Applier.Apply(r.Context(), t)
		if res == nil {
			writeError(w, http.StatusConflict, err)
			return
		}
		code := http.StatusOK
		if res.State == release.StateFailed {
			code = http.StatusUnprocessableEntity
		}
		writeJSON(w, code, res)
	})
	mux.HandleFunc("GET /api/v1/host", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, a.HostView())
	})
	mux.HandleFunc("GET /api/v1/diag", func(w http.ResponseWriter, r *http.Request) {
		if a.Diag == nil {
			writeJSON(w, http.StatusOK, []diag.Command{})
			return
		}
		writeJSON(w, http.StatusOK, a.Diag.Names())
	})
	mux.HandleFunc("POST /api/v1/diag/{name}", a.serveDiag)
	mux.HandleFunc("GET /api/v1/tasks/{id}", func(w http.ResponseWriter, r *http.Request) {
		res, err := a.Applier.Load(r.PathValue("id"))
		if errors.Is(err, os.ErrNotExist) {
			writeError(w, http.StatusNotFound, errors.New("no such task"))
			return
		}
		if err != nil {
			writeError(w, http.StatusBadRequest, err)
			return
		}
		writeJSON(w, http.StatusOK, res)
	})
}

// HostAnswer is GET /api/v1/host.
type HostAnswer struct {
	Time     time.Time      `json:"time,omitzero"`
	Samples  []host.Sample  `json:"samples"`
	Error    string         `json:"error,omitempty"`
	Programs []ProgramUsage `json:"programs"`
}

// ProgramUsage is one running program's CPU time and memory.
type ProgramUsage struct {
	Name string `json:"name"`
	PID  int    `json:"pid"`
	host.Usage
}

// HostView returns the latest host metrics and the programs' usage.
func (a *Agent) HostView() HostAnswer {
	ans := HostAnswer{Samples: []host.Sample{}, Programs: []ProgramUsage{}}
	if a.Host != nil {
		var err error
		ans.Time, ans.Samples, err = a.Host.Snapshot()
		if err != nil {
			ans.Error = err.Error()
		}
	}
	for _, st := range a.Supervisor.Status() {
		if st.PID == 0 {
			continue
		}
		if u, err := host.ProcessUsage(st.PID); err == nil {
			ans.Programs = append(ans.Programs, ProgramUsage{Name: st.Name, PID: st.PID, Usage: u})
		}
	}
	return ans
}

// serveDiag runs an allowlisted diagnostic command (args in the body as
// {"args": [...]}) and streams its output; the exit code and any error
// follow as trailers X-Exit-Code and X-Error.
func (a *Agent) serveDiag(w http.ResponseWriter, r *http.Request) {
	if a.Diag == nil {
		writeError(w, http.StatusNotFound, errors.New("no diagnostics are configured (the agent config's diagnostics: section)"))
		return
	}
	var req struct {
		Args []string `json:"args"`
	}
	if r.ContentLength != 0 {
		if err := json.NewDecoder(io.LimitReader(r.Body, 64<<10)).Decode(&req); err != nil {
			writeError(w, http.StatusBadRequest, err)
			return
		}
	}
	name := r.PathValue("name")
	if _, _, err := a.Diag.Check(name, req.Args); err != nil {
		_, _ = a.Diag.Run(r.Context(), r.RemoteAddr, name, req.Args, io.Discard) // audited refusal
		writeError(w, http.StatusForbidden, err)
		return
	}
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("Trailer", "X-Exit-Code, X-Error")
	flusher, _ := w.(http.Flusher)
	code, err := a.Diag.Run(r.Context(), r.RemoteAddr, name, req.Args, flushWriter{w, flusher})
	w.Header().Set("X-Exit-Code", strconv.Itoa(code))
	if err != nil {
		w.Header().Set("X-Error", err.Error())
	}
}

type flushWriter struct {
	w io.Writer
	f http.Flusher
}

func (f flushWriter) Write(p []byte) (int, error) {
	n, err := f.w.Write(p)
	if f.f != nil {
		f.f.Flush()
	}
	return n, err
}

// serveLogs sends the tail of a program's log and, with follow=1, what is
// appended until the client goes away.
func (a *Agent) serveLogs(w http.ResponseWriter, r *http.Request) {
	stream := r.URL.Query().Get("stream")
	if stream == "" {
		stream = "out"
	}
	path, err := a.Supervisor.LogPath(r.PathValue("name"), stream)
	if err != nil {
		writeError(w, http.StatusNotFound, err)
		return
	}
	tail := int64(64 << 10)
	if s := r.URL.Query().Get("tail"); s != "" {
		if tail, err = strconv.ParseInt(s, 10, 64); err != nil || tail < 0 {
			writeError(w, http.StatusBadRequest, errors.New("tail: want a byte count"))
			return
		}
	}
	f, err := os.Open(path)
	if errors.Is(err, os.ErrNotExist) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		if r.URL.Query().Get("follow") == "" {
			return
		}
		f, err = waitForFile(r.Context(), path)
	}
	if err != nil {
		writeError(w, http.StatusInternalServerError, err)
		return
	}
	defer f.Close()
	st, _ := f.Stat()
	if st != nil && st.Size() > tail {
		f.Seek(st.Size()-tail, io.SeekStart)
	}
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	io.Copy(w, f)
	if r.URL.Query().Get("follow") == "" {
		return
	}
	flusher, _ := w.(http.Flusher)
	bw := bufio.NewWriter(w)
	for {
		if flusher != nil {
			bw.Flush()
			flusher.Flush()
		}
		select {
		case <-r.Context().Done():
			return
		case <-time.After(200 * time.Millisecond):
		}
		pos, _ := f.Seek(0, io.SeekCurrent)
		if st, err := os.Stat(path); err == nil && st.Size() < pos {
			f.Seek(0, io.SeekStart) // truncated by rotation
		}
		io.Copy(bw, f)
	}
}

func waitForFile(ctx context.Context, path string) (*os.File, error) {
	for {
		f, err := os.Open(path)
		if err == nil || !errors.Is(err, os.ErrNotExist) {
			return f, err
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
}

func guard(token string, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if token != "" {
			if subtle.ConstantTimeCompare([]byte(r.Header.Get("Authorization")), []byte("Bearer "+token)) != 1 {
				writeError(w, http.StatusUnauthorized, errors.New("the deploy API needs Authorization: Bearer <--api-token>"))
				return
			}
		} else if host, _, err := net.SplitHostPort(r.RemoteAddr); err != nil || !net.ParseIP(host).IsLoopback() {
			writeError(w, http.StatusForbidden, errors.New("the deploy API serves only loopback clients unless --api-token is set"))
			return
		}
		next.ServeHTTP(w, r)
	})
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.Encode(v)
}

func writeError(w http.ResponseWriter, code int, err error) {
	if err == nil {
		err = errors.New(http.StatusText(code))
	}
	writeJSON(w, code, map[string]string{"error": err.Error()})
}
