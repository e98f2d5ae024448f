// Package server is configd's config server: namespaces of files published
// as immutable numbered releases, gray releases, long-poll watches fanned
// out in batches, the naming service (app -> hosts) with membership events,
// apply reports with a per-release convergence view, tokens with roles, an
// audit log, and read replicas that follow a primary through the watch API.
package server

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httputil"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/VictoriaMetrics/metrics"

	"github.com/opskit/opskit/configd/api"
	"github.com/opskit/opskit/configd/diff"
	"github.com/opskit/opskit/configd/store"
)

// Config tunes a Server.
type Config struct {
	// WatchTimeout is the longest a watch waits before answering 304.
	WatchTimeout time.Duration
	// WatchBatch watchers are woken at once, then WatchBatchInterval passes
	// before the next batch.
	WatchBatch         int
	WatchBatchInterval time.Duration
	// HostTTL is how long a host may miss heartbeats before it is down.
	HostTTL time.Duration
	// MemberEvents is how many membership events are kept.
	MemberEvents int
	// MaxBodyBytes bounds request bodies (files are sent in them).
	MaxBodyBytes int64
	// Follow, when set, makes this server a read replica of the primary at
	// that URL; FollowToken is sent to it.
	Follow      string
	FollowToken string
	// FollowState is told after every sync attempt: nil once in step.
	FollowState func(err error)
	Auth        *Auth
	Logger      *slog.Logger
	Metrics     *metrics.Set
	Now         func() time.Time

	// Fleet tunes the registry of opskit daemons (see RunFleet).
	Fleet FleetConfig
}

// Server serves configd's HTTP API.
type Server struct {
	cfg     Config
	store   *store.Store
	hub     *hub
	members *members
	fleet   *fleet
	reports *reports
	auth    atomic.Pointer[Auth]
	log     *slog.Logger
	proxy   *httputil.ReverseProxy
	primary *url.URL
	client  *http.Client

	mu    sync.RWMutex
	heads map[string]api.Namespace

	rehome   rehome
	stopping atomic.Bool
	// stopped is closed when Run ends: waiting watches answer at once so
	// the daemon's graceful stop does not wait out their timeouts.
	stopped chan struct{}

	cacheMu  sync.Mutex
	relCache map[string][]byte

	publishes, watchChanged, watchTimeouts, denied *metrics.Counter
}

// New builds a server over an open store.
func New(cfg Config, st *store.Store) (*Server, error) {
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	if cfg.Metrics == nil {
		cfg.Metrics = metrics.NewSet()
	}
	if cfg.Auth == nil {
		cfg.Auth = &Auth{}
	}
	if cfg.MemberEvents <= 0 {
		cfg.MemberEvents = 10000
	}
	if cfg.MaxBodyBytes <= 0 {
		cfg.MaxBodyBytes = 16 << 20
	}
	if cfg.WatchTimeout <= 0 {
		cfg.WatchTimeout = 60 * time.Second
	}
	s := &Server{cfg: cfg, store: st, hub: newHub(cfg.WatchBatch, cfg.WatchBatchInterval), reports: newReports(), log: cfg.Logger,
		heads: map[string]api.Namespace{}, relCache: map[string][]byte{}, stopped: make(chan struct{})}
	s.auth.Store(cfg.Auth)
	s.rehome.idle = cfg.WatchTimeout + 30*time.Second
	heads, err := st.Namespaces()
	if err != nil {
		return nil, err
	}
	for _, h := range heads {
		s.heads[h.Name] = h
	}
	if s.members, err = newMembers(st, cfg.HostTTL, cfg.MemberEvents, cfg.Now); err != nil {
		return nil, err
	}
	if s.fleet, err = newFleet(cfg.Fleet, cfg.Now, cfg.Logger, cfg.Metrics); err != nil {
		return nil, err
	}
	s.members.onEvent = func(e api.MemberEvent) {
		s.log.Info("membership", "event", e.Type, "app", e.App, "host", e.Host, "seq", e.Seq)
	}
	if cfg.Follow != "" {
		u, err := url.Parse(strings.TrimRight(cfg.Follow, "/"))
		if err != nil || u.Scheme == "" || u.Host == "" {
			return nil, fmt.Errorf("--follow %q: want a URL such as http://primary:7160", cfg.Follow)
		}
		s.primary = u
		s.proxy = httputil.NewSingleHostReverseProxy(u)
		s.client = &http.Client{Timeout: cfg.WatchTimeout + 15*time.Second}
	}
	m := cfg.Metrics
	s.publishes = m.NewCounter("opskit_configd_publishes_total")
	s.watchChanged = m.NewCounter(`opskit_configd_watch_responses_total{result="changed"}`)
	s.watchTimeouts = m.NewCounter(`opskit_configd_watch_responses_total{result="timeout"}`)
	s.denied = m.NewCounter("opskit_configd_requests_denied_total")
	m.NewGauge("opskit_configd_watchers", func() float64 { return float64(s.hub.watchers()) })
	fanout := m.NewHistogram("opskit_configd_watch_fanout_seconds")
	s.hub.fanout = func(n int, took time.Duration) {
		fanout.Update(took.Seconds())
		if n > 0 {
			s.log.Debug("woke watchers", "watchers", n, "took", took)
		}
	}
	m.NewGauge("opskit_configd_namespaces", func() float64 { s.mu.RLock(); defer s.mu.RUnlock(); return float64(len(s.heads)) })
	m.NewGauge(`opskit_configd_hosts{state="up"}`, func() float64 { up, _ := s.members.counts(); return float64(up) })
	m.NewGauge(`opskit_configd_hosts{state="down"}`, func() float64 { _, down := s.members.counts(); return float64(down) })
	m.NewGauge("opskit_configd_rev", func() float64 { rev, _ := st.Rev(); return float64(rev) })
	return s, nil
}

// SetAuth replaces the tokens (on reload).
func (s *Server) SetAuth(a *Auth) { s.auth.Store(a) }

// Replica reports whether this server follows a primary.
func (s *Server) Replica() bool { return s.primary != nil }

// Run does the background work until ctx ends: on a primary, marking
// silent hosts down; on a replica, following the primary.
func (s *Server) Run(ctx context.Context) error {
	defer func() {
		close(s.stopped)
		stopCtx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
		defer cancel()
		s.closeParked(stopCtx)
	}()
	if s.Replica() {
		return s.follow(ctx)
	}
	every := max(s.cfg.HostTTL/4, 10*time.Millisecond)
	return s.members.runSweeper(ctx, every, func(err error) { s.log.Error("membership sweep", "err", err) })
}

func (s *Server) head(name string) (api.Namespace, bool) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	h, ok := s.heads[name]
	return h, ok
}

// changed records a namespace's new head and wakes its watchers.
func (s *Server) changed(h api.Namespace) {
	s.mu.Lock()
	if old, ok := s.heads[h.Name]; !ok || old.Rev <= h.Rev {
		s.heads[h.Name] = h
	}
	s.mu.Unlock()
	s.hub.notify(h.Name)
}

// route kinds: local routes are served by replicas from their copy; the
// others are forwarded to the primary.
const (
	local   = true
	primary = false
)

// Register adds the API to mux.
func (s *Server) Register(mux *http.ServeMux) {
	ns := "/v1/ns/{app}/{env}/{name}"
	s.handle(mux, "GET /v1/namespaces", local, s.read(s.listNamespaces))
	s.handle(mux, "GET "+ns, local, s.read(s.getNamespace))
	s.handle(mux, "GET "+ns+"/files/{file}", local, s.read(s.getFile))
	s.handle(mux, "PUT "+ns+"/files/{file}", primary, s.write("put", s.putFile))
	s.handle(mux, "DELETE "+ns+"/files/{file}", primary, s.write("delete", s.deleteFile))
	s.handle(mux, "PUT "+ns+"/settings", primary, s.write("settings", s.putSettings))
	s.handle(mux, "POST "+ns+"/publish", primary, s.write("publish", s.publish))
	s.handle(mux, "POST "+ns+"/rollback", primary, s.write("rollback", s.rollback))
	s.handle(mux, "POST "+ns+"/promote", primary, s.write("promote", s.promote))
	s.handle(mux, "POST "+ns+"/abandon", primary, s.write("abandon", s.abandon))
	s.handle(mux, "GET "+ns+"/releases", local, s.read(s.listReleases))
	s.handle(mux, "GET "+ns+"/releases/{version}", local, s.read(s.getRelease))
	s.handle(mux, "GET "+ns+"/releases/{version}/status", primary, s.read(s.releaseStatus))
	s.handle(mux, "GET "+ns+"/diff", local, s.read(s.diff))
	s.handle(mux, "GET "+ns+"/history", primary, s.read(s.history))
	s.handle(mux, "GET "+ns+"/config", local, s.read(s.config))
	s.handle(mux, "GET /v1/watch", local, s.read(s.watch))
	s.handle(mux, "POST /v1/hosts", primary, s.agent(s.register))
	s.handle(mux, "GET /v1/hosts", primary, s.read(s.listHosts))
	s.handle(mux, "GET /v1/apps/{app}/hosts", primary, s.read(s.listHosts))
	s.handle(mux, "GET /v1/apps/{app}/events", primary, s.read(s.events))
	s.handle(mux, "GET /v1/events", primary, s.read(s.events))
	s.handle(mux, "POST /v1/reports", primary, s.agent(s.report))
	s.handle(mux, "GET /v1/audit", primary, s.admin(s.auditLog))
	s.registerFleet(mux)
}

func (s *Server) handle(mux *http.ServeMux, pattern string, isLocal bool, h http.HandlerFunc) {
	if s.Replica() && !isLocal {
		mux.Handle(pattern, s.proxy)
		return
	}
	mux.HandleFunc(pattern, h)
}

type handlerFunc func(w http.ResponseWriter, r *http.Request, id Identity) error

// httpError carries a status to writeError.
type httpError struct {
	status int
	err    error
}

func (e *httpError) Error() string { return e.err.Error() }
func (e *httpError) Unwrap() error { return e.err }

func badRequest(format string, args ...any) error {
	return &httpError{http.StatusBadRequest, fmt.Errorf(format, args...)}
}

func writeError(w http.ResponseWriter, err error) {
	status := http.StatusInternalServerError
	var he *httpError
	switch {
	case errors.As(err, &he):
		status = he.status
	case errors.Is(err, store.ErrNotFound):
		status = http.StatusNotFound
	case errors.Is(err, store.ErrInvalid):
		status = http.StatusBadRequest
	case errors.Is(err, store.ErrConflict):
		status = http.StatusConflict
	}
	writeJSON(w, status, map[string]string{"error": err.Error()})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.Encode(v)
}

func (s *Server) identify(w http.ResponseWriter, r *http.Request) (Identity, bool) {
	id, ok := s.auth.Load().Identify(r)
	if !ok {
		s.denied.Inc()
		w.Header().Set("WWW-Authenticate", `Bearer realm="configd"`)
		writeJSON(w, http.StatusUnauthorized, map[string]string{"error": "unauthorized: send a configd token (Authorization: Bearer TOKEN)"})
	}
	return id, ok
}

func (s *Server) read(fn handlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		id, ok := s.identify(w, r)
		if !ok {
			return
		}
		if err := fn(w, r, id); err != nil {
			writeError(w, err)
		}
	}
}

// agent guards what host agents do: register and report. Any known token
// may (readers included).
func (s *Server) agent(fn handlerFunc) http.HandlerFunc { return s.read(fn) }

func (s *Server) admin(fn handlerFunc) http.HandlerFunc {
	return s.read(func(w http.ResponseWriter, r *http.Request, id Identity) error {
		if id.Role != RoleAdmin {
			s.denied.Inc()
			return &httpError{http.StatusForbidden, fmt.Errorf("forbidden: %s is %s; this needs admin", id.Name, id.Role)}
		}
		return fn(w, r, id)
	})
}

// write guards a namespace mutation by the caller's role and records it in
// the audit log, denied and failed attempts included.
func (s *Server) write(action string, fn handlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		id, ok := s.identify(w, r)
		if !ok {
			return
		}
		target := nsName(r)
		if f := r.PathValue("file"); f != "" {
			target += "/" + f
		}
		entry := api.AuditEntry{Time: s.cfg.Now().UTC(), Who: id.Name, Role: id.Role, Action: action, Target: target, Remote: r.RemoteAddr}
		var err error
		if !id.CanWrite(r.PathValue("app")) {
			s.denied.Inc()
			err = &httpError{http.StatusForbidden, fmt.Errorf("forbidden: %s (%s) may not change namespaces of app %s", id.Name, id.Role, r.PathValue("app"))}
		} else {
			rec := &auditDetail{ResponseWriter: w}
			err = fn(rec, r, id)
			entry.Detail = rec.detail
		}
		entry.OK = err == nil
		if err != nil {
			entry.Detail = err.Error()
		}
		if aerr := s.store.Audit(entry); aerr != nil {
			s.log.Error("audit", "err", aerr)
		}
		if err != nil {
			writeError(w, err)
		}
	}
}

// auditDetail lets a handler note a detail for the audit entry.
type auditDetail struct {
	http.ResponseWriter
	detail string
}

func setDetail(w http.ResponseWriter, format string, args ...any) {
	if a, ok := w.(*auditDetail); ok {
		a.detail = fmt.Sprintf(format, args...)
	}
}

func nsName(r *http.Request) string {
	return r.PathValue("app") + "/" + r.PathValue("env") + "/" + r.PathValue("name")
}

func (s *Server) listNamespaces(w http.ResponseWriter, r *http.Request, _ Identity) error {
	s.mu.RLock()
	out := make([]api.Namespace, 0, len(s.heads))
	for _, h := range s.heads {
		h.Draft = nil
		out = append(out, h)
	}
	s.mu.RUnlock()
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	writeJSON(w, http.StatusOK, out)
	return nil
}

func (s *Server) getNamespace(w http.ResponseWriter, r *http.Request, _ Identity) error {
	h, ok := s.head(nsName(r))
	if !ok {
		return fmt.Errorf("namespace %s: %w", nsName(r), store.ErrNotFound)
	}
	writeJSON(w, http.StatusOK, h)
	return nil
}

// getFile serves one file's raw content: of ?version=N, of ?draft=1, or of
// the release the asking host (?host=) should hold.
func (s *Server) getFile(w http.ResponseWriter, r *http.Request, _ Identity) error {
	name, file := nsName(r), r.PathValue("file")
	var files []api.File
	if r.URL.Query().Get("draft") != "" {
		h, ok := s.head(name)
		if !ok {
			return fmt.Errorf("namespace %s: %w", name, store.ErrNotFound)
		}
		files = h.Draft
	} else {
		rel, err := s.resolve(r, name)
		if err != nil {
			return err
		}
		files = rel.Files
		w.Header().Set("X-Configd-Version", strconv.FormatInt(rel.Version, 10))
	}
	for _, f := range files {
		if f.Name == file {
			w.Header().Set("Content-Type", "text/plain; charset=utf-8")
			w.Header().Set("X-Configd-Sha256", f.SHA256)
			io.WriteString(w, f.Content)
			return nil
		}
	}
	return fmt.Errorf("file %s in %s: %w", file, name, store.ErrNotFound)
}

// resolve finds the release a request means: ?version=N, else the one for
// ?host= (with its labels), else current.
func (s *Server) resolve(r *http.Request, name string) (api.Release, error) {
	v, err := s.resolveVersion(r, name)
	if err != nil {
		return api.Release{}, err
	}
	return s.store.Release(name, v)
}

func (s *Server) resolveVersion(r *http.Request, name string) (int64, error) {
	q := r.URL.Query()
	if v := q.Get("version"); v != "" {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil || n < 1 {
			return 0, badRequest("version %q: want a release number", v)
		}
		return n, nil
	}
	h, ok := s.head(name)
	if !ok {
		return 0, fmt.Errorf("namespace %s: %w", name, store.ErrNotFound)
	}
	host := q.Get("host")
	labels, err := parseLabels(q["label"])
	if err != nil {
		return 0, err
	}
	if len(labels) == 0 && !s.Replica() {
		labels = s.members.labelsOf(host)
	}
	v := h.VersionFor(host, labels)
	if v == 0 {
		return 0, fmt.Errorf("namespace %s has no release yet: %w", name, store.ErrNotFound)
	}
	return v, nil
}

// releaseJSON returns a release encoded for the wire. Releases never
// change, so the encoding is cached: after a publish every watcher fetches
// the same one.
func (s *Server) releaseJSON(name string, v int64) ([]byte, error) {
	key := name + "@" + strconv.FormatInt(v, 10)
	s.cacheMu.Lock()
	b, ok := s.relCache[key]
	s.cacheMu.Unlock()
	if ok {
		return b, nil
	}
	rel, err := s.store.Release(name, v)
	if err != nil {
		return nil, err
	}
	if b, err = json.Marshal(rel); err != nil {
		return nil, err
	}
	s.cacheMu.Lock()
	if len(s.relCache) >= releaseCacheSize {
		for k := range s.relCache { // evict one at random
			delete(s.relCache, k)
			break
		}
	}
	s.relCache[key] = b
	s.cacheMu.Unlock()
	return b, nil
}

// changesJSON encodes a watch answer. The common answer — one namespace,
// the same new version for thousands of watchers — is encoded once.
func (s *Server) changesJSON(changes []api.Change, withContent bool) ([]byte, error) {
	if len(changes) != 1 {
		for i, c := range changes {
			if withContent && c.Version > 0 {
				// A failure here only costs the watcher a fetch.
				changes[i].Release, _ = s.releaseJSON(c.Namespace, c.Version)
			}
		}
		return json.Marshal(changes)
	}
	c := changes[0]
	key := "answer:" + c.Namespace + "@" + strconv.FormatInt(c.Version, 10)
	if withContent {
		key += "+content"
	}
	s.cacheMu.Lock()
	b, ok := s.relCache[key]
	s.cacheMu.Unlock()
	if ok {
		return b, nil
	}
	if withContent && c.Version > 0 {
		if rel, err := s.releaseJSON(c.Namespace, c.Version); err == nil {
			changes[0].Release = rel
		}
	}
	b, err := json.Marshal(changes)
	if err != nil {
		return nil, err
	}
	s.cacheMu.Lock()
	if len(s.relCache) >= releaseCacheSize {
		for k := range s.relCache {
			delete(s.relCache, k)
			break
		}
	}
	s.relCache[key] = b
	s.cacheMu.Unlock()
	return b, nil
}

// releaseCacheSize bounds the encoded releases kept in memory.
const releaseCacheSize = 256

func writeRaw(w http.ResponseWriter, b []byte) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("Content-Length", strconv.Itoa(len(b)))
	w.Write(b)
}

func parseLabels(list []string) (map[string]string, error) {
	if len(list) == 0 {
		return nil, nil
	}
	out := make(map[string]string, len(list))
	for _, l := range list {
		for _, kv := range strings.Split(l, ",") {
			k, v, ok := strings.Cut(kv, "=")
			if !ok || k == "" {
				return nil, badRequest("label %q: want key=value", kv)
			}
			out[k] = v
		}
	}
	return out, nil
}

func (s *Server) putFile(w http.ResponseWriter, r *http.Request, _ Identity) error {
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, s.cfg.MaxBodyBytes))
	if err != nil {
		return &httpError{http.StatusRequestEntityTooLarge, fmt.Errorf("body: %w", err)}
	}
	h, err := s.store.PutDraft(nsName(r), r.PathValue("file"), body)
	if err != nil {
		return err
	}
	s.changed(h)
	setDetail(w, "%d bytes sha256 %s", len(body), api.Digest(string(body)))
	writeJSON(w, http.StatusOK, h)
	return nil
}

func (s *Server) deleteFile(w http.ResponseWriter, r *http.Request, _ Identity) error {
	h, err := s.store.DeleteDraft(nsName(r), r.PathValue("file"))
	if err != nil {
		return err
	}
	s.changed(h)
	writeJSON(w, http.StatusOK, h)
	return nil
}

func (s *Server) decode(w http.ResponseWriter, r *http.Request, out any) error {
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, s.cfg.MaxBodyBytes))
	dec.DisallowUnknownFields()
	if err := dec.Decode(out); err != nil && !errors.Is(err, io.EOF) {
		return badRequest("request body: %v", err)
	}
	return nil
}

func (s *Server) putSettings(w http.ResponseWriter, r *http.Request, id Identity) error {
	var st api.Settings
	if err := s.decode(w, r, &st); err != nil {
		return err
	}
	h, err := s.store.SetSettings(nsName(r), st, id.Name)
	if err != nil {
		return err
	}
	s.changed(h)
	setDetail(w, "allow_empty=%v schema=%d bytes", st.AllowEmpty, len(st.Schema))
	writeJSON(w, http.StatusOK, h)
	return nil
}

func (s *Server) publish(w http.ResponseWriter, r *http.Request, id Identity) error {
	var req api.PublishRequest
	if err := s.decode(w, r, &req); err != nil {
		return err
	}
	if g := req.Gray; g != nil && (g.Percent < 0 || g.Percent > 100 || (g.Percent == 0 && len(g.Labels) == 0)) {
		return badRequest("gray: give labels and/or a percent from 1 to 100")
	}
	rel, h, err := s.store.Publish(nsName(r), store.PublishInput{Author: id.Name, Comment: req.Comment, Files: req.Files, Gray: req.Gray})
	if err != nil {
		return err
	}
	s.publishes.Inc()
	s.changed(h)
	kind := "release"
	if req.Gray != nil {
		kind = "gray release"
	}
	setDetail(w, "%s %d (%d files)", kind, rel.Version, len(rel.Files))
	s.log.Info("published", "namespace", rel.Namespace, "version", rel.Version, "author", id.Name, "gray", req.Gray != nil)
	writeJSON(w, http.StatusOK, rel.Summary())
	return nil
}

func (s *Server) rollback(w http.ResponseWriter, r *http.Request, id Identity) error {
	var req api.RollbackRequest
	if err := s.decode(w, r, &req); err != nil {
		return err
	}
	name := nsName(r)
	if req.To == 0 {
		// Default: the release before the current one.
		h, ok := s.head(name)
		if !ok {
			return fmt.Errorf("namespace %s: %w", name, store.ErrNotFound)
		}
		cur, err := s.store.Release(name, h.Current)
		if err != nil {
			return err
		}
		req.To = h.Current - 1
		if cur.RollbackOf > 0 {
			req.To = cur.RollbackOf - 1
		}
		if req.To < 1 {
			return badRequest("namespace %s: no earlier release to roll back to", name)
		}
	}
	rel, h, err := s.store.Rollback(name, req.To, id.Name, req.Comment)
	if err != nil {
		return err
	}
	s.publishes.Inc()
	s.changed(h)
	setDetail(w, "release %d copies %d", rel.Version, req.To)
	writeJSON(w, http.StatusOK, rel.Summary())
	return nil
}

func (s *Server) promote(w http.ResponseWriter, r *http.Request, id Identity) error {
	h, err := s.store.Promote(nsName(r), id.Name)
	if err != nil {
		return err
	}
	s.changed(h)
	setDetail(w, "current is now %d", h.Current)
	writeJSON(w, http.StatusOK, h)
	return nil
}

func (s *Server) abandon(w http.ResponseWriter, r *http.Request, id Identity) error {
	h, err := s.store.Abandon(nsName(r), id.Name)
	if err != nil {
		return err
	}
	s.changed(h)
	writeJSON(w, http.StatusOK, h)
	return nil
}

func (s *Server) listReleases(w http.ResponseWriter, r *http.Request, _ Identity) error {
	q := r.URL.Query()
	after, _ := strconv.ParseInt(q.Get("after"), 10, 64)
	limit, _ := strconv.Atoi(q.Get("limit"))
	rels, err := s.store.Releases(nsName(r), after, limit, q.Get("content") != "")
	if err != nil {
		return err
	}
	if rels == nil {
		rels = []api.Release{}
	}
	writeJSON(w, http.StatusOK, rels)
	return nil
}

func pathVersion(r *http.Request) (int64, error) {
	v, err := strconv.ParseInt(r.PathValue("version"), 10, 64)
	if err != nil || v < 1 {
		return 0, badRequest("version %q: want a release number", r.PathValue("version"))
	}
	return v, nil
}

func (s *Server) getRelease(w http.ResponseWriter, r *http.Request, _ Identity) error {
	v, err := pathVersion(r)
	if err != nil {
		return err
	}
	b, err := s.releaseJSON(nsName(r), v)
	if err != nil {
		return err
	}
	writeRaw(w, b)
	return nil
}

func (s *Server) diff(w http.ResponseWriter, r *http.Request, _ Identity) error {
	name := nsName(r)
	q := r.URL.Query()
	from, err1 := strconv.ParseInt(q.Get("from"), 10, 64)
	to, err2 := strconv.ParseInt(q.Get("to"), 10, 64)
	if err1 != nil || err2 != nil {
		return badRequest("give ?from=N&to=M (release numbers)")
	}
	a, err := s.store.Release(name, from)
	if err != nil {
		return err
	}
	b, err := s.store.Release(name, to)
	if err != nil {
		return err
	}
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	io.WriteString(w, DiffReleases(a, b))
	return nil
}

// DiffReleases is the unified diff of every file of two releases.
func DiffReleases(a, b api.Release) string {
	files := map[string][2]*api.File{}
	for i := range a.Files {
		p := files[a.Files[i].Name]
		p[0] = &a.Files[i]
		files[a.Files[i].Name] = p
	}
	for i := range b.Files {
		p := files[b.Files[i].Name]
		p[1] = &b.Files[i]
		files[b.Files[i].Name] = p
	}
	names := make([]string, 0, len(files))
	for n := range files {
		names = append(names, n)
	}
	sort.Strings(names)
	var sb strings.Builder
	for _, n := range names {
		p := files[n]
		nameA, nameB := fmt.Sprintf("%s@%d/%s", a.Namespace, a.Version, n), fmt.Sprintf("%s@%d/%s", b.Namespace, b.Version, n)
		var ca, cb string
		if p[0] != nil {
			ca = p[0].Content
		} else {
			nameA = "/dev/null"
		}
		if p[1] != nil {
			cb = p[1].Content
		} else {
			nameB = "/dev/null"
		}
		sb.WriteString(diff.Unified(nameA, nameB, ca, cb, 3))
	}
	return sb.String()
}

func (s *Server) history(w http.ResponseWriter, r *http.Request, _ Identity) error {
	h, err := s.store.History(nsName(r))
	if err != nil {
		return err
	}
	if h == nil {
		h = []api.HistoryEntry{}
	}
	writeJSON(w, http.StatusOK, h)
	return nil
}

// config serves the full release a host should hold (?host=, ?label=k=v).
func (s *Server) config(w http.ResponseWriter, r *http.Request, _ Identity) error {
	name := nsName(r)
	v, err := s.resolveVersion(r, name)
	if err != nil {
		return err
	}
	b, err := s.releaseJSON(name, v)
	if err != nil {
		return err
	}
	writeRaw(w, b)
	return nil
}

func (s *Server) auditLog(w http.ResponseWriter, r *http.Request, _ Identity) error {
	limit, _ := strconv.Atoi(r.URL.Query().Get("limit"))
	if limit <= 0 {
		limit = 100
	}
	log, err := s.store.AuditLog(limit)
	if err != nil {
		return err
	}
	if log == nil {
		log = []api.AuditEntry{}
	}
	writeJSON(w, http.StatusOK, log)
	return nil
}
