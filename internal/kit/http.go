package kit

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/pprof"
	"net/url"
	"runtime"
	"strings"
	"time"

	"github.com/VictoriaMetrics/metrics"
)

func goVersion() string { return runtime.Version() }

func (d *Daemon) handler(withPprof bool) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /metrics", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
		d.Metrics.WritePrometheus(w)
		metrics.WriteProcessMetrics(w)
	})
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "ok\n")
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
		if reasons := d.readiness(); len(reasons) > 0 {
			w.Header().Set("Content-Type", "text/plain; charset=utf-8")
			w.WriteHeader(http.StatusServiceUnavailable)
			fmt.Fprintf(w, "not ready: %s\n", strings.Join(reasons, "; "))
			return
		}
		io.WriteString(w, "ready\n")
	})
	mux.Handle("/admin/", d.requireToken(http.HandlerFunc(d.serveAdmin)))
	d.registerDye(mux)
	if withPprof {
		mux.Handle("/debug/pprof/", d.requireToken(http.HandlerFunc(pprof.Index)))
		mux.Handle("/debug/pprof/cmdline", d.requireToken(http.HandlerFunc(pprof.Cmdline)))
		mux.Handle("/debug/pprof/profile", d.requireToken(http.HandlerFunc(pprof.Profile)))
		mux.Handle("/debug/pprof/symbol", d.requireToken(http.HandlerFunc(pprof.Symbol)))
		mux.Handle("/debug/pprof/trace", d.requireToken(http.HandlerFunc(pprof.Trace)))
	}
	mux.Handle("/", d.Mux)
	return mux
}

// requireToken guards admin endpoints. A token, when configured, is always
// required; without one the daemon only starts on loopback (see runDaemon).
func (d *Daemon) requireToken(next http.Handler) http.Handler {
	want := sha256.Sum256([]byte(d.token))
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if d.token != "" {
			got, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
			// Compare digests so the comparison time says nothing about the
			// token's length or prefix.
			gotSum := sha256.Sum256([]byte(got))
			if !ok || subtle.ConstantTimeCompare(gotSum[:], want[:]) != 1 {
				d.Metrics.GetOrCreateCounter(`opskit_admin_requests_total{result="unauthorized"}`).Inc()
				w.Header().Set("WWW-Authenticate", `Bearer realm="opskit admin"`)
				http.Error(w, "unauthorized: this endpoint needs the admin bearer token (Authorization: Bearer TOKEN)", http.StatusUnauthorized)
				return
			}
		}
		next.ServeHTTP(w, r)
	})
}

func (d *Daemon) serveAdmin(w http.ResponseWriter, r *http.Request) {
	cmd := strings.TrimPrefix(r.URL.Path, "/admin/")
	if r.Method == http.MethodGet && cmd == "loglevel" {
		writeJSON(w, http.StatusOK, map[string]string{"level": levelName(d.level.Level())})
		return
	}
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", "POST")
		http.Error(w, "admin commands take POST", http.StatusMethodNotAllowed)
		return
	}
	args, err := adminArgs(r)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	result := func(ok bool) {
		res := "ok"
		if !ok {
			res = "error"
		}
		d.Metrics.GetOrCreateCounter(fmt.Sprintf(`opskit_admin_requests_total{command=%q,result=%q}`, cmd, res)).Inc()
	}
	switch cmd {
	case "loglevel":
		if len(args) != 1 {
			result(false)
			http.Error(w, "loglevel takes one level: debug, info, warn or error", http.StatusBadRequest)
			return
		}
		lv, err := parseLevel(args[0])
		if err != nil {
			result(false)
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		prev := d.level.Level()
		d.level.Set(lv)
		d.Log.Info("log level changed", "from", levelName(prev), "to", levelName(lv))
		result(true)
		writeJSON(w, http.StatusOK, map[string]string{"level": levelName(lv), "previous": levelName(prev)})
	case "reload":
		ctx, cancel := context.WithTimeout(r.Context(), time.Minute)
		defer cancel()
		if err := d.Reload(ctx); err != nil {
			result(false)
			writeJSON(w, http.StatusUnprocessableEntity, map[string]string{"status": "error", "error": err.Error()})
			return
		}
		result(true)
		writeJSON(w, http.StatusOK, map[string]string{"status": "reloaded"})
	case "stop":
		result(true)
		writeJSON(w, http.StatusAccepted, map[string]string{"status": "stopping"})
		d.Stop("admin stop")
	default:
		d.mu.Lock()
		fn := d.commands[cmd]
		d.mu.Unlock()
		if fn == nil {
			result(false)
			http.Error(w, fmt.Sprintf("unknown admin command %q", cmd), http.StatusNotFound)
			return
		}
		out, err := fn(r.Context(), args)
		if err != nil {
			result(false)
			writeJSON(w, http.StatusUnprocessableEntity, map[string]string{"status": "error", "error": err.Error()})
			return
		}
		result(true)
		if out == nil {
			out = map[string]string{"status": "ok"}
		}
		writeJSON(w, http.StatusOK, out)
	}
}

// adminArgs reads a command's arguments from the form values "arg" (or
// "level"), or else from a plain-text body of whitespace-separated words.
func adminArgs(r *http.Request) ([]string, error) {
	body, err := io.ReadAll(io.LimitReader(r.Body, 1<<20))
	if err != nil {
		return nil, fmt.Errorf("reading body: %w", err)
	}
	q := r.URL.Query()
	if v := q["arg"]; len(v) > 0 {
		return v, nil
	}
	if v := q.Get("level"); v != "" {
		return []string{v}, nil
	}
	if strings.HasPrefix(r.Header.Get("Content-Type"), "application/x-www-form-urlencoded") {
		vals, err := url.ParseQuery(string(body))
		if err != nil {
			return nil, err
		}
		if v := vals["arg"]; len(v) > 0 {
			return v, nil
		}
		if v := vals["level"]; len(v) > 0 {
			return v, nil
		}
		return nil, nil
	}
	return strings.Fields(string(body)), nil
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	enc := json.NewEncoder(w)
	enc.Encode(v)
}

func parseLevel(s string) (slog.Level, error) {
	switch strings.ToLower(s) {
	case "debug":
		return slog.LevelDebug, nil
	case "info":
		return slog.LevelInfo, nil
	case "warn", "warning":
		return slog.LevelWarn, nil
	case "error":
		return slog.LevelError, nil
	}
	return 0, fmt.Errorf("unknown log level %q (want debug, info, warn or error)", s)
}

func levelName(l slog.Level) string { return strings.ToLower(l.String()) }

func newLogger(w io.Writer, format string, level *slog.LevelVar) *slog.Logger {
	opts := &slog.HandlerOptions{Level: level}
	if format == "json" {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}
