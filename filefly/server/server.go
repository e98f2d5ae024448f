// Package server is filefly's server: it keeps uploaded files as blobs
// with their piece manifests, plans each transfer as a relay over the
// destination hosts, hands every agent its job (signed), serves pieces to
// the agents at the top of the relay, gathers their reports, and keeps the
// transfers' state on disk so a restarted server carries on.
package server

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/VictoriaMetrics/metrics"
	"golang.org/x/time/rate"

	"github.com/opskit/opskit/filefly/api"
	"github.com/opskit/opskit/filefly/piece"
	"github.com/opskit/opskit/filefly/plan"
	"github.com/opskit/opskit/filefly/throttle"
)

// HostLister finds an app's hosts (configd's naming service).
type HostLister interface {
	AppHosts(ctx context.Context, app, env string) ([]string, error)
}

// Options configure a Server.
type Options struct {
	DataDir string
	// URL is the base URL agents reach this server at.
	URL string
	// Token is the agents' shared secret (jobs are signed with it); empty
	// runs without agent authentication.
	Token      []byte
	AgentPort  int // added to host names given without a port
	Hosts      HostLister
	EgressRate int64
	// LostAfter is how long a running host may go without a report before
	// the server probes its agent; an agent that does not answer the probe
	// is marked failed (lost) instead of holding the transfer to its deadline.
	LostAfter time.Duration
	// DefaultTimeout bounds a transfer that names none.
	DefaultTimeout time.Duration
	Log            *slog.Logger
	Metrics        *metrics.Set
	HTTP           *http.Client
}

// Server is the filefly server.
type Server struct {
	opts   Options
	egress *rate.Limiter
	// life is the context given to Start: background work of every
	// transfer runs until it ends, whoever created the transfer.
	life context.Context

	mu        sync.Mutex
	transfers map[string]*transfer
	wg        sync.WaitGroup

	served *metrics.Counter
}

type transfer struct {
	// saveMu orders the writes of the state file: concurrent saves
	// sharing one temporary file could otherwise interleave.
	saveMu  sync.Mutex
	mu      sync.Mutex
	status  api.Transfer
	sources [][]string // per host: its relay sources, server last
	// stripeSources is per host the sources of each stripe of a striped
	// tree (sources is then stripe 0's); nil with a single stripe.
	stripeSources [][][]string
	changed       chan struct{}
}

// New returns a server; Start loads the kept transfers.
func New(opts Options) *Server {
	if opts.AgentPort == 0 {
		opts.AgentPort = 7181
	}
	if opts.DefaultTimeout <= 0 {
		opts.DefaultTimeout = time.Hour
	}
	if opts.LostAfter <= 0 {
		opts.LostAfter = 30 * time.Second
	}
	if opts.HTTP == nil {
		opts.HTTP = &http.Client{Transport: &http.Transport{Proxy: nil, MaxIdleConnsPerHost: 4}}
	}
	if opts.Metrics == nil {
		opts.Metrics = metrics.NewSet()
	}
	if opts.Log == nil {
		opts.Log = slog.New(slog.DiscardHandler)
	}
	s := &Server{opts: opts, transfers: map[string]*transfer{}, egress: throttle.NewLimiter(opts.EgressRate),
		served: opts.Metrics.NewCounter("opskit_filefly_server_served_bytes_total")}
	for _, state := range []string{api.StatePending, api.StateUnreachable, api.StateRunning, api.StateDone, api.StateSkipped, api.StateFailed, api.StateLate} {
		opts.Metrics.NewGauge(fmt.Sprintf(`opskit_filefly_server_hosts{state=%q}`, state), func() float64 { return float64(s.countHosts(state)) })
	}
	opts.Metrics.NewGauge("opskit_filefly_server_transfers_running", func() float64 {
		s.mu.Lock()
		defer s.mu.Unlock()
		n := 0
		for _, t := range s.transfers {
			t.mu.Lock()
			if !t.status.Done {
				n++
			}
			t.mu.Unlock()
		}
		return float64(n)
	})
	return s
}

func (s *Server) countHosts(state string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for _, t := range s.transfers {
		t.mu.Lock()
		for _, h := range t.status.Hosts {
			if h.State == state {
				n++
			}
		}
		t.mu.Unlock()
	}
	return n
}

func (s *Server) blobDir() string     { return filepath.Join(s.opts.DataDir, "blobs") }
func (s *Server) transferDir() string { return filepath.Join(s.opts.DataDir, "transfers") }

// Start loads the kept transfers and carries on with the unfinished ones.
func (s *Server) Start(ctx context.Context) error {
	s.life = ctx
	for _, dir := range []string{s.blobDir(), s.transferDir()} {
		if err := os.MkdirAll(dir, 0o750); err != nil {
			return fmt.Errorf("data dir: %w", err)
		}
	}
	entries, err := os.ReadDir(s.transferDir())
	if err != nil {
		return fmt.Errorf("transfers dir: %w", err)
	}
	for _, e := range entries {
		if !strings.HasSuffix(e.Name(), ".json") {
			continue
		}
		b, err := os.ReadFile(filepath.Join(s.transferDir(), e.Name()))
		if err != nil {
			return fmt.Errorf("transfer state: %w", err)
		}
		var k kept
		if err := json.Unmarshal(b, &k); err != nil || len(k.Sources) != len(k.Status.Hosts) {
			s.opts.Log.Warn("ignoring unreadable transfer state", "file", e.Name(), "err", err)
			continue
		}
		if k.StripeSources != nil && len(k.StripeSources) != len(k.Status.Hosts) {
			s.opts.Log.Warn("ignoring unreadable transfer state", "file", e.Name(), "err", "stripe sources do not match the hosts")
			continue
		}
		t := &transfer{status: k.Status, sources: k.Sources, stripeSources: k.StripeSources, changed: make(chan struct{})}
		s.mu.Lock()
		s.transfers[t.status.ID] = t
		s.mu.Unlock()
		s.transferMetrics(t)
		if !t.status.Done {
			s.opts.Log.Info("resuming transfer", "id", t.status.ID)
			s.launch(ctx, t)
		}
	}
	return nil
}

// transferMetrics exposes a transfer's progress on /metrics, as status
// shows it: bytes held over all hosts, the total wanted, and hosts by state.
func (s *Server) transferMetrics(t *transfer) {
	id := t.status.ID
	sum := func(f func(h api.HostStatus) float64) func() float64 {
		return func() float64 {
			t.mu.Lock()
			defer t.mu.Unlock()
			v := 0.0
			for _, h := range t.status.Hosts {
				v += f(h)
			}
			return v
		}
	}
	s.opts.Metrics.NewGauge(fmt.Sprintf(`opskit_filefly_server_transfer_bytes{transfer=%q}`, id), sum(func(h api.HostStatus) float64 { return float64(h.Bytes) }))
	s.opts.Metrics.NewGauge(fmt.Sprintf(`opskit_filefly_server_transfer_bytes_wanted{transfer=%q}`, id), sum(func(api.HostStatus) float64 { return float64(t.status.Manifest.Size) }))
	for _, state := range []string{api.StateRunning, api.StateDone, api.StateSkipped, api.StateFailed, api.StateLate, api.StateUnreachable} {
		s.opts.Metrics.NewGauge(fmt.Sprintf(`opskit_filefly_server_transfer_hosts{transfer=%q,state=%q}`, id, state), sum(func(h api.HostStatus) float64 {
			if h.State == state {
				return 1
			}
			return 0
		}))
	}
}

// Wait waits for the background work to end after ctx ends.
func (s *Server) Wait() { s.wg.Wait() }

// kept is a transfer as persisted.
type kept struct {
	Status  api.Transfer `json:"status"`
	Sources [][]string   `json:"sources"`
	// StripeSources is per host the sources of each stripe; absent with a
	// single stripe.
	StripeSources [][][]string `json:"stripe_sources,omitempty"`
}

func (s *Server) save(t *transfer) error {
	t.saveMu.Lock()
	defer t.saveMu.Unlock()
	t.mu.Lock()
	b, err := json.Marshal(kept{Status: t.status, Sources: t.sources, StripeSources: t.stripeSources})
	id := t.status.ID
	t.mu.Unlock()
	if err != nil {
		return err
	}
	path := filepath.Join(s.transferDir(), id+".json")
	if err := os.WriteFile(path+".tmp", b, 0o640); err != nil {
		return fmt.Errorf("save transfer: %w", err)
	}
	return os.Rename(path+".tmp", path)
}

// Register adds the server's API to mux.
func (s *Server) Register(mux *http.ServeMux) {
	mux.HandleFunc("PUT /v1/blobs/{sha}", s.handlePutBlob)
	mux.HandleFunc("GET /v1/blobs/{sha}", s.handleGetBlob)
	mux.HandleFunc("POST /v1/transfers", s.handleSend)
	mux.HandleFunc("GET /v1/transfers", s.handleList)
	mux.HandleFunc("GET /v1/transfers/{id}", s.handleStatus)
	mux.HandleFunc("POST /v1/transfers/{id}/report", s.handleReport)
	mux.HandleFunc("GET /v1/transfers/{id}/pieces/{n}", s.handlePiece)
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	json.NewEncoder(w).Encode(v)
}

func httpError(w http.ResponseWriter, code int, format string, args ...any) {
	http.Error(w, fmt.Sprintf(format, args...), code)
}

func validSum(s string) bool {
	if len(s) != 64 {
		return false
	}
	_, err := hex.DecodeString(s)
	return err == nil
}

// handlePutBlob stores an uploaded file whose sha256 is in the path.
func (s *Server) handlePutBlob(w http.ResponseWriter, r *http.Request) {
	sum := r.PathValue("sha")
	if !validSum(sum) {
		httpError(w, http.StatusBadRequest, "blob name must be the file's hex sha256")
		return
	}
	if m, err := s.manifest(sum); err == nil {
		writeJSON(w, http.StatusOK, m)
		return
	}
	tmp, err := os.CreateTemp(s.blobDir(), ".upload-*")
	if err != nil {
		httpError(w, http.StatusInternalServerError, "%v", err)
		return
	}
	defer os.Remove(tmp.Name())
	defer tmp.Close()
	size, err := io.Copy(tmp, r.Body)
	if err != nil {
		httpError(w, http.StatusBadRequest, "upload: %v", err)
		return
	}
	if _, err := tmp.Seek(0, io.SeekStart); err != nil {
		httpError(w, http.StatusInternalServerError, "%v", err)
		return
	}
	m, err := piece.Compute(tmp, size)
	if err != nil {
		httpError(w, http.StatusInternalServerError, "%v", err)
		return
	}
	if m.SHA256 != sum {
		httpError(w, http.StatusBadRequest, "upload sha256 is %s, not %s", m.SHA256, sum)
		return
	}
	if err := tmp.Sync(); err != nil {
		httpError(w, http.StatusInternalServerError, "%v", err)
		return
	}
	mb, _ := json.Marshal(m)
	if err := os.WriteFile(filepath.Join(s.blobDir(), sum+".json"), mb, 0o640); err != nil {
		httpError(w, http.StatusInternalServerError, "%v", err)
		return
	}
	if err := os.Rename(tmp.Name(), filepath.Join(s.blobDir(), sum)); err != nil {
		httpError(w, http.StatusInternalServerError, "%v", err)
		return
	}
	s.opts.Log.Info("blob stored", "sha256", sum, "size", size, "pieces", m.Count(), "piece_size", m.PieceSize)
	writeJSON(w, http.StatusCreated, m)
}

func (s *Server) manifest(sum string) (piece.Manifest, error) {
	var m piece.Manifest
	if _, err := os.Stat(filepath.Join(s.blobDir(), sum)); err != nil {
		return m, err
	}
	b, err := os.ReadFile(filepath.Join(s.blobDir(), sum+".json"))
	if err != nil {
		return m, err
	}
	if err := json.Unmarshal(b, &m); err != nil {
		return m, err
	}
	return m, m.Validate()
}

func (s *Server) handleGetBlob(w http.ResponseWriter, r *http.Request) {
	sum := r.PathValue("sha")
	if !validSum(sum) {
		httpError(w, http.StatusBadRequest, "blob name must be the file's hex sha256")
		return
	}
	m, err := s.manifest(sum)
	if err != nil {
		httpError(w, http.StatusNotFound, "no such blob")
		return
	}
	writeJSON(w, http.StatusOK, m)
}

func newID() string {
	b := make([]byte, 8)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// hostAddr adds the agent port to a host given without one.
func (s *Server) hostAddr(h string) string {
	h = strings.TrimSpace(h)
	if _, _, err := net.SplitHostPort(h); err == nil {
		return h
	}
	return net.JoinHostPort(strings.Trim(h, "[]"), strconv.Itoa(s.opts.AgentPort))
}

// Create starts a transfer; ctx bounds only the host lookup, the
// transfer runs until the server stops. Start must have been called.
func (s *Server) Create(ctx context.Context, req api.SendRequest) (api.Transfer, error) {
	m, err := s.manifest(req.SHA256)
	if err != nil {
		return api.Transfer{}, fmt.Errorf("%w: blob %s: upload it first", ErrBadRequest, req.SHA256)
	}
	if !filepath.IsAbs(req.Dest) {
		return api.Transfer{}, fmt.Errorf("%w: --dest must be an absolute path", ErrBadRequest)
	}
	hosts := req.Hosts
	if len(hosts) == 0 && req.App != "" {
		if s.opts.Hosts == nil {
			return api.Transfer{}, fmt.Errorf("%w: --app needs the server to run with --configd", ErrBadRequest)
		}
		hosts, err = s.opts.Hosts.AppHosts(ctx, req.App, req.Env)
		if err != nil {
			return api.Transfer{}, fmt.Errorf("hosts of app %s: %w", req.App, err)
		}
	}
	seen := map[string]bool{}
	var addrs []string
	for _, h := range hosts {
		a := s.hostAddr(h)
		if a != "" && !seen[a] {
			seen[a] = true
			addrs = append(addrs, a)
		}
	}
	if len(addrs) == 0 {
		return api.Transfer{}, fmt.Errorf("%w: no hosts (give --hosts, or an --app with hosts in configd)", ErrBadRequest)
	}
	if req.Topology == "" {
		req.Topology = api.TopologyTree
	}
	stripes, err := plan.Stripes(addrs, req.Topology, req.Fanout)
	if err != nil {
		return api.Transfer{}, fmt.Errorf("%w: %v", ErrBadRequest, err)
	}
	timeout := time.Duration(req.Timeout)
	if timeout <= 0 {
		timeout = s.opts.DefaultTimeout
	}
	now := time.Now().UTC()
	t := &transfer{changed: make(chan struct{}), status: api.Transfer{
		ID: newID(), Request: req, Manifest: m, Created: now, Deadline: now.Add(timeout)}}
	for i, a := range addrs {
		var perStripe [][]string
		var parents []string
		for _, ancestors := range stripes[i] {
			var srcs []string
			for _, anc := range ancestors {
				if anc == plan.Server {
					srcs = append(srcs, s.opts.URL)
				} else {
					srcs = append(srcs, "http://"+anc)
				}
			}
			perStripe = append(perStripe, srcs)
			parent := ancestors[0]
			if parent == plan.Server {
				parent = "server"
			}
			parents = append(parents, parent)
		}
		t.sources = append(t.sources, perStripe[0])
		if len(perStripe) > 1 {
			t.stripeSources = append(t.stripeSources, perStripe)
		}
		// One parent per stripe, comma-separated.
		parent := strings.Join(parents, ",")
		t.status.Hosts = append(t.status.Hosts, api.HostStatus{
			Report: api.Report{Host: a, State: api.StatePending}, Parent: parent, Update: now})
	}
	if err := s.save(t); err != nil {
		return api.Transfer{}, err
	}
	s.mu.Lock()
	s.transfers[t.status.ID] = t
	s.mu.Unlock()
	s.transferMetrics(t)
	s.opts.Log.Info("transfer created", "id", t.status.ID, "sha256", m.SHA256, "dest", req.Dest, "hosts", len(addrs), "topology", req.Topology)
	s.launch(s.life, t)
	return t.snapshot(), nil
}

// ErrBadRequest marks an error the client caused.
var ErrBadRequest = errors.New("bad request")

func (t *transfer) snapshot() api.Transfer {
	t.mu.Lock()
	defer t.mu.Unlock()
	out := t.status
	out.Hosts = append([]api.HostStatus(nil), t.status.Hosts...)
	return out
}

func (s *Server) handleSend(w http.ResponseWriter, r *http.Request) {
	var req api.SendRequest
	if err := json.NewDecoder(io.LimitReader(r.Body, 8<<20)).Decode(&req); err != nil {
		httpError(w, http.StatusBadRequest, "request: %v", err)
		return
	}
	t, err := s.Create(r.Context(), req)
	if errors.Is(err, ErrBadRequest) {
		httpError(w, http.StatusBadRequest, "%v", err)
		return
	}
	if err != nil {
		httpError(w, http.StatusBadGateway, "%v", err)
		return
	}
	writeJSON(w, http.StatusCreated, t)
}

func (s *Server) lookup(id string) *transfer {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.transfers[id]
}

// handleStatus answers a transfer's status; ?wait=DURATION waits for a
// change first (long poll).
func (s *Server) handleStatus(w http.ResponseWriter, r *http.Request) {
	t := s.lookup(r.PathValue("id"))
	if t == nil {
		httpError(w, http.StatusNotFound, "no such transfer")
		return
	}
	if wait, err := time.ParseDuration(r.URL.Query().Get("wait")); err == nil && wait > 0 {
		t.mu.Lock()
		ch, done := t.changed, t.status.Done
		t.mu.Unlock()
		if !done {
			select {
			case <-ch:
			case <-time.After(min(wait, time.Minute)):
			case <-r.Context().Done():
			}
		}
	}
	writeJSON(w, http.StatusOK, t.snapshot())
}

func (s *Server) handleList(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	ts := make([]*transfer, 0, len(s.transfers))
	for _, t := range s.transfers {
		ts = append(ts, t)
	}
	s.mu.Unlock()
	out := make([]api.Transfer, 0, len(ts))
	for _, t := range ts {
		out = append(out, t.snapshot())
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Created.Before(out[j].Created) })
	writeJSON(w, http.StatusOK, out)
}

func (s *Server) authorized(r *http.Request) bool {
	return len(s.opts.Token) == 0 || r.Header.Get("Authorization") == "Bearer "+string(s.opts.Token)
}

func (s *Server) handleReport(w http.ResponseWriter, r *http.Request) {
	if !s.authorized(r) {
		httpError(w, http.StatusUnauthorized, "missing or wrong agent token")
		return
	}
	t := s.lookup(r.PathValue("id"))
	if t == nil {
		httpError(w, http.StatusNotFound, "no such transfer")
		return
	}
	var rep api.Report
	if err := json.NewDecoder(io.LimitReader(r.Body, 1<<20)).Decode(&rep); err != nil {
		httpError(w, http.StatusBadRequest, "report: %v", err)
		return
	}
	if !s.applyReport(t, rep) {
		httpError(w, http.StatusNotFound, "host %s is not part of transfer", rep.Host)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

// applyReport records an agent's report; a host already final (e.g. late)
// keeps its state.
func (s *Server) applyReport(t *transfer, rep api.Report) bool {
	t.mu.Lock()
	i := t.hostIndex(rep.Host)
	if i < 0 {
		t.mu.Unlock()
		return false
	}
	h := &t.status.Hosts[i]
	final := api.Terminal(h.State)
	if !final {
		h.Report = rep
		h.Update = time.Now().UTC()
		if el := h.Update.Sub(rep.Started).Seconds(); el > 0 && !rep.Started.IsZero() {
			if !rep.Finished.IsZero() {
				el = rep.Finished.Sub(rep.Started).Seconds()
			}
			h.Rate = float64(rep.BytesFetched) / max(el, 1e-3)
			if h.Rate > 0 && !api.Terminal(rep.State) {
				h.ETA = float64(t.status.Manifest.Size-rep.Bytes) / h.Rate
			} else {
				h.ETA = 0
			}
		}
		if api.Terminal(rep.State) {
			s.opts.Log.Info("host finished", "id", t.status.ID, "host", rep.Host, "state", rep.State, "err", rep.Error)
		}
	}
	becameTerminal := !final && api.Terminal(rep.State)
	t.touchLocked()
	t.mu.Unlock()
	if becameTerminal {
		s.checkDone(t)
	}
	return true
}

func (t *transfer) hostIndex(host string) int {
	for i := range t.status.Hosts {
		if t.status.Hosts[i].Host == host {
			return i
		}
	}
	return -1
}

// touchLocked wakes the status long polls.
func (t *transfer) touchLocked() {
	close(t.changed)
	t.changed = make(chan struct{})
}

// checkDone marks the transfer done once every host is final, and saves.
func (s *Server) checkDone(t *transfer) {
	t.mu.Lock()
	done := true
	for _, h := range t.status.Hosts {
		if !api.Terminal(h.State) {
			done = false
		}
	}
	if done && !t.status.Done {
		t.status.Done = true
		t.touchLocked()
		s.opts.Log.Info("transfer done", "id", t.status.ID)
	}
	t.mu.Unlock()
	if err := s.save(t); err != nil {
		s.opts.Log.Error("cannot save transfer", "id", t.status.ID, "err", err)
	}
}

// handlePiece serves a piece of the transfer's blob.
func (s *Server) handlePiece(w http.ResponseWriter, r *http.Request) {
	if !s.authorized(r) {
		httpError(w, http.StatusUnauthorized, "missing or wrong agent token")
		return
	}
	t := s.lookup(r.PathValue("id"))
	if t == nil {
		httpError(w, http.StatusNotFound, "no such transfer")
		return
	}
	n, err := strconv.Atoi(r.PathValue("n"))
	m := t.status.Manifest // immutable after creation
	if err != nil || n < 0 || n >= m.Count() {
		httpError(w, http.StatusBadRequest, "bad piece number")
		return
	}
	f, err := os.Open(filepath.Join(s.blobDir(), m.SHA256))
	if err != nil {
		httpError(w, http.StatusInternalServerError, "blob: %v", err)
		return
	}
	defer f.Close()
	off, length := m.Span(n)
	from, ok := api.ParseRangeFrom(r.Header.Get("Range"))
	if !ok || from > 0 && from >= length {
		httpError(w, http.StatusRequestedRangeNotSatisfiable, "piece %d has %d bytes; only bytes=N- is served", n, length)
		return
	}
	w.Header().Set("Content-Length", strconv.FormatInt(length-from, 10))
	w.Header().Set("Content-Type", "application/octet-stream")
	if from > 0 {
		// A child resuming a piece whose body ended early.
		w.Header().Set("Content-Range", fmt.Sprintf("bytes %d-%d/%d", from, length-1, length))
		w.WriteHeader(http.StatusPartialContent)
	}
	written, _ := io.Copy(throttle.Writer(r.Context(), w, s.egress), io.NewSectionReader(f, off+from, length-from))
	s.served.Add(int(written))
}
