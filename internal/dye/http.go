package dye

import (
	"encoding/json"
	"errors"
	"io"
	"net/http"
)

// Names by which dyed alerts and requests carry their dye themselves.
const (
	// Annotation is the alert annotation judge sets on alerts of a dyed
	// series; alarm traces alerts carrying it.
	Annotation = "opskit_dye"
	// Header marks a request through the ratelimit gateway as dyed.
	Header = "X-Opskit-Dye"
)

// maxRuleBody bounds the body of POST /admin/dye.
const maxRuleBody = 64 << 10

// Register serves the admin endpoints (see the package documentation) on
// mux, each wrapped by guard (the admin token check).
func (t *Tracer) Register(mux *http.ServeMux, guard func(http.Handler) http.Handler) {
	mux.Handle("POST /admin/dye", guard(http.HandlerFunc(t.serveSet)))
	mux.Handle("GET /admin/dye", guard(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rules := t.Rules()
		if rules == nil {
			rules = []Rule{}
		}
		writeJSON(w, http.StatusOK, rules)
	})))
	mux.Handle("DELETE /admin/dye/{id}", guard(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		id := r.PathValue("id")
		if !t.Delete(id) {
			writeJSON(w, http.StatusNotFound, map[string]string{"error": "no dye rule " + id})
			return
		}
		writeJSON(w, http.StatusOK, map[string]string{"status": "removed", "id": id})
	})))
	mux.Handle("GET /admin/trace", guard(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/x-ndjson")
		enc := json.NewEncoder(w)
		for _, rec := range t.Trace(r.URL.Query().Get("id")) {
			if enc.Encode(rec) != nil {
				return
			}
		}
	})))
}

func (t *Tracer) serveSet(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(io.LimitReader(r.Body, maxRuleBody+1))
	if err != nil {
		writeJSON(w, http.StatusBadRequest, map[string]string{"error": "reading body: " + err.Error()})
		return
	}
	if len(body) > maxRuleBody {
		writeJSON(w, http.StatusRequestEntityTooLarge, map[string]string{"error": "rule body over 64 KiB"})
		return
	}
	rule, err := DecodeRule(body, t.opts.Now(), NewID)
	if err == nil {
		err = t.Set(rule)
	}
	if err != nil {
		code := http.StatusInternalServerError
		if errors.Is(err, ErrBadRule) {
			code = http.StatusBadRequest
		}
		writeJSON(w, code, map[string]string{"error": err.Error()})
		return
	}
	writeJSON(w, http.StatusOK, rule)
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	json.NewEncoder(w).Encode(v)
}
