package agent

import (
	"encoding/json"
	"net/http"
	"os"
	"path/filepath"
	"time"

	"github.com/opskit/opskit/configd/manifest"
)

// Register serves the agent's local API for applications that prefer HTTP
// to reading files:
//
//	GET /v1/status                       versions held, staleness, last results
//	GET /v1/files/{app}/{env}/{name}     the release in force, with contents
//	GET /v1/files/{app}/{env}/{name}/{file}  one file's content
//	GET /v1/watch?ns=NAME:VERSION&timeout=30s  long-poll for a switch
func (a *Agent) Register(mux *http.ServeMux) {
	mux.HandleFunc("GET /v1/status", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, a.Status())
	})
	mux.HandleFunc("GET /v1/files/{app}/{env}/{name}", func(w http.ResponseWriter, r *http.Request) {
		ns := r.PathValue("app") + "/" + r.PathValue("env") + "/" + r.PathValue("name")
		m, files, ok := a.load(w, ns)
		if !ok {
			return
		}
		type file struct {
			Name    string `json:"name"`
			SHA256  string `json:"sha256"`
			Content string `json:"content"`
		}
		out := struct {
			Namespace string `json:"namespace"`
			Version   int64  `json:"version"`
			Files     []file `json:"files"`
		}{Namespace: ns, Version: m.Version}
		for _, f := range m.Files {
			out.Files = append(out.Files, file{f.Name, f.SHA256, string(files[f.Name])})
		}
		writeJSON(w, http.StatusOK, out)
	})
	mux.HandleFunc("GET /v1/files/{app}/{env}/{name}/{file}", func(w http.ResponseWriter, r *http.Request) {
		ns := r.PathValue("app") + "/" + r.PathValue("env") + "/" + r.PathValue("name")
		m, files, ok := a.load(w, ns)
		if !ok {
			return
		}
		data, found := files[r.PathValue("file")]
		if !found {
			writeJSON(w, http.StatusNotFound, map[string]string{"error": "no such file in " + ns})
			return
		}
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		w.Header().Set("X-Configd-Version", itoa(m.Version))
		w.Write(data)
	})
	mux.HandleFunc("GET /v1/watch", func(w http.ResponseWriter, r *http.Request) {
		held, err := parseHeld(r.URL.Query()["ns"])
		if err != nil || len(held) == 0 {
			writeJSON(w, http.StatusBadRequest, map[string]string{"error": "give ?ns=app/env/name:VERSION"})
			return
		}
		timeout := 60 * time.Second
		if t, err := time.ParseDuration(r.URL.Query().Get("timeout")); err == nil && t > 0 && t < timeout {
			timeout = t
		}
		if changes := a.waitChange(r.Context(), held, timeout); changes != nil {
			writeJSON(w, http.StatusOK, changes)
			return
		}
		w.WriteHeader(http.StatusNotModified)
	})
}

func (a *Agent) load(w http.ResponseWriter, ns string) (manifest.Manifest, map[string][]byte, bool) {
	dir := a.Dir(ns)
	if dir == "" {
		writeJSON(w, http.StatusNotFound, map[string]string{"error": "this agent does not keep " + ns})
		return manifest.Manifest{}, nil, false
	}
	// Resolve the link once so every file comes from the same release.
	real, err := filepath.EvalSymlinks(filepath.Join(dir, CurrentLink))
	if err != nil {
		status := http.StatusInternalServerError
		if os.IsNotExist(err) {
			status = http.StatusNotFound
		}
		writeJSON(w, status, map[string]string{"error": "no release of " + ns + " on this host yet"})
		return manifest.Manifest{}, nil, false
	}
	m, files, err := manifest.Load(real)
	if err != nil {
		writeJSON(w, http.StatusInternalServerError, map[string]string{"error": err.Error()})
		return manifest.Manifest{}, nil, false
	}
	return m, files, true
}

func itoa(v int64) string {
	b, _ := json.Marshal(v)
	return string(b)
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.Encode(v)
}
