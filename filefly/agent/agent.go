// Package agent is filefly's per-host agent: it takes jobs from the server,
// fetches the file's pieces from its parent in the relay (re-attaching to
// the next holder when the parent dies, stalls or sends a bad piece),
// verifies and writes each piece to a temporary file beside the
// destination, serves the pieces it holds to its own children at once, then
// checks the whole file, renames it into place and reports to the server.
// Its piece bitmaps persist in the data directory so that a restarted agent
// goes on where it stopped.
package agent

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/VictoriaMetrics/metrics"
	"golang.org/x/time/rate"

	"github.com/opskit/opskit/filefly/api"
	"github.com/opskit/opskit/filefly/confine"
	"github.com/opskit/opskit/filefly/piece"
	"github.com/opskit/opskit/filefly/throttle"
)

// Options configure an Agent.
type Options struct {
	DataDir string
	Roots   *confine.Roots
	// DestPrefix is prepended to every destination before the roots are
	// checked, so several agents can share one machine (tests, benchmarks)
	// or one agent can write into a mounted tree.
	DestPrefix string
	// Token, when set, is the shared secret: jobs must be signed with it
	// and every request must carry it as a bearer token.
	Token []byte
	// StallTimeout is how long a piece download may go without a byte
	// before the source counts as stalled.
	StallTimeout time.Duration
	// ReportInterval is how often progress goes to the server.
	ReportInterval time.Duration
	IngressRate    int64 // bytes/s, 0 = no cap
	EgressRate     int64
	// CorruptPiece is a test hook: serve this piece corrupted, once per
	// transfer (-1 = off).
	CorruptPiece int
	Log          *slog.Logger
	Metrics      *metrics.Set
	HTTP         *http.Client
}

// Agent runs jobs and serves pieces.
type Agent struct {
	opts    Options
	ingress *rate.Limiter
	egress  *rate.Limiter

	mu      sync.Mutex
	jobs    map[string]*job
	newJob  chan struct{} // closed and replaced when a job arrives
	running sync.WaitGroup

	fetched, served, corrupt, reattached *metrics.Counter
}

// job is one transfer on this host.
type job struct {
	saveMu  sync.Mutex // orders the writes of the state file
	mu      sync.Mutex
	spec    api.Job
	dest    string // resolved destination
	have    piece.Bitmap
	report  api.Report
	file    *os.File      // the temporary file while incomplete
	changed chan struct{} // closed and replaced when a piece lands or starts arriving
	// arriving holds the pieces being fetched, relayed to children as
	// their bytes come in.
	arriving map[int]*arriving
	whole    wholeSum // the file's sha256 so far, over the stored pieces in order
	limiter  *rate.Limiter
	corrupt  bool // the corrupt-piece hook already fired
}

// saved is a job as persisted in the data directory.
type saved struct {
	Job    api.Job      `json:"job"`
	Dest   string       `json:"dest"`
	Have   piece.Bitmap `json:"have"`
	Report api.Report   `json:"report"`
}

// New returns an agent; Start resumes the jobs kept in the data directory.
func New(opts Options) *Agent {
	if opts.StallTimeout <= 0 {
		opts.StallTimeout = 5 * time.Second
	}
	if opts.ReportInterval <= 0 {
		opts.ReportInterval = time.Second
	}
	if opts.HTTP == nil {
		opts.HTTP = &http.Client{Transport: &http.Transport{Proxy: nil, MaxIdleConnsPerHost: 8}}
	}
	if opts.Metrics == nil {
		opts.Metrics = metrics.NewSet()
	}
	if opts.Log == nil {
		opts.Log = slog.New(slog.DiscardHandler)
	}
	a := &Agent{
		opts: opts, jobs: map[string]*job{}, newJob: make(chan struct{}),
		ingress: throttle.NewLimiter(opts.IngressRate), egress: throttle.NewLimiter(opts.EgressRate),
		fetched:    opts.Metrics.NewCounter("opskit_filefly_agent_fetched_bytes_total"),
		served:     opts.Metrics.NewCounter("opskit_filefly_agent_served_bytes_total"),
		corrupt:    opts.Metrics.NewCounter("opskit_filefly_agent_corrupt_pieces_total"),
		reattached: opts.Metrics.NewCounter("opskit_filefly_agent_reattach_total"),
	}
	opts.Metrics.NewGauge("opskit_filefly_agent_jobs_running", func() float64 {
		a.mu.Lock()
		defer a.mu.Unlock()
		n := 0
		for _, j := range a.jobs {
			j.mu.Lock()
			if !api.Terminal(j.report.State) {
				n++
			}
			j.mu.Unlock()
		}
		return float64(n)
	})
	return a
}

func (a *Agent) jobsDir() string { return filepath.Join(a.opts.DataDir, "jobs") }

// Start loads the persisted jobs and resumes the unfinished ones.
func (a *Agent) Start(ctx context.Context) error {
	if err := os.MkdirAll(a.jobsDir(), 0o750); err != nil {
		return fmt.Errorf("jobs dir: %w", err)
	}
	entries, err := os.ReadDir(a.jobsDir())
	if err != nil {
		return fmt.Errorf("jobs dir: %w", err)
	}
	for _, e := range entries {
		if !strings.HasSuffix(e.Name(), ".json") {
			continue
		}
		b, err := os.ReadFile(filepath.Join(a.jobsDir(), e.Name()))
		if err != nil {
			return fmt.Errorf("job state: %w", err)
		}
		var s saved
		if err := json.Unmarshal(b, &s); err != nil || s.Job.Manifest.Validate() != nil {
			a.opts.Log.Warn("ignoring unreadable job state", "file", e.Name(), "err", err)
			continue
		}
		j := a.newJobFrom(s)
		a.mu.Lock()
		a.jobs[s.Job.ID] = j
		a.mu.Unlock()
		if !api.Terminal(s.Report.State) {
			a.opts.Log.Info("resuming transfer", "id", s.Job.ID, "pieces", j.have.Count(s.Job.Manifest.Count()))
			a.launch(ctx, j)
		}
	}
	return nil
}

// Wait waits for the running jobs to stop (after ctx ends).
func (a *Agent) Wait() { a.running.Wait() }

func (a *Agent) newJobFrom(s saved) *job {
	if len(s.Have) != len(piece.NewBitmap(s.Job.Manifest.Count())) {
		s.Have = piece.NewBitmap(s.Job.Manifest.Count())
	}
	return &job{spec: s.Job, dest: s.Dest, have: s.Have, report: s.Report,
		changed: make(chan struct{}), arriving: map[int]*arriving{}, limiter: throttle.NewLimiter(s.Job.Rate)}
}

func (a *Agent) launch(ctx context.Context, j *job) {
	a.running.Add(1)
	go func() {
		defer a.running.Done()
		a.run(ctx, j)
	}()
}

// Handler serves the agent's API.
func (a *Agent) Register(ctx context.Context, mux *http.ServeMux) {
	mux.HandleFunc("POST /v1/jobs", func(w http.ResponseWriter, r *http.Request) { a.handleJob(ctx, w, r) })
	mux.HandleFunc("GET /v1/jobs/{id}", a.handleJobStatus)
	mux.HandleFunc("GET /v1/transfers/{id}/pieces/{n}", a.handlePiece)
}

func (a *Agent) authorized(r *http.Request) bool {
	if len(a.opts.Token) == 0 {
		return true
	}
	return r.Header.Get("Authorization") == "Bearer "+string(a.opts.Token)
}

func httpError(w http.ResponseWriter, code int, format string, args ...any) {
	http.Error(w, fmt.Sprintf(format, args...), code)
}

func (a *Agent) handleJob(ctx context.Context, w http.ResponseWriter, r *http.Request) {
	if !a.authorized(r) {
		httpError(w, http.StatusUnauthorized, "missing or wrong agent token")
		return
	}
	var spec api.Job
	if err := json.NewDecoder(io.LimitReader(r.Body, 16<<20)).Decode(&spec); err != nil {
		httpError(w, http.StatusBadRequest, "job: %v", err)
		return
	}
	if err := spec.Manifest.Validate(); err != nil {
		httpError(w, http.StatusBadRequest, "job: %v", err)
		return
	}
	if spec.ID == "" || strings.ContainsAny(spec.ID, "/\\.") || len(spec.Sources) == 0 || !stripesHaveSources(spec) {
		httpError(w, http.StatusBadRequest, "job: bad id or no sources")
		return
	}
	if len(a.opts.Token) > 0 && !spec.Verify(a.opts.Token) {
		httpError(w, http.StatusForbidden, "job %s: signature does not match the server's", spec.ID)
		return
	}
	a.mu.Lock()
	if j, ok := a.jobs[spec.ID]; ok {
		a.mu.Unlock()
		j.mu.Lock()
		rep := j.report
		j.mu.Unlock()
		writeJSON(w, http.StatusOK, rep)
		return
	}
	a.mu.Unlock()
	dest, err := a.opts.Roots.Resolve(a.prefixed(spec.Dest))
	if err != nil {
		a.opts.Log.Warn("refused destination", "id", spec.ID, "dest", spec.Dest, "err", err)
		httpError(w, http.StatusForbidden, "%v", err)
		return
	}
	j := a.newJobFrom(saved{Job: spec, Dest: dest,
		Report: api.Report{Host: spec.Host, State: api.StateRunning, Started: time.Now().UTC()}})
	a.mu.Lock()
	if old, ok := a.jobs[spec.ID]; ok { // a concurrent duplicate won
		a.mu.Unlock()
		writeJSON(w, http.StatusOK, old.snapshot())
		return
	}
	a.jobs[spec.ID] = j
	close(a.newJob)
	a.newJob = make(chan struct{})
	a.mu.Unlock()
	if err := a.save(j); err != nil {
		a.opts.Log.Error("cannot persist job", "id", spec.ID, "err", err)
	}
	a.opts.Log.Info("job accepted", "id", spec.ID, "dest", dest, "size", spec.Manifest.Size, "sources", spec.Sources)
	a.launch(ctx, j)
	writeJSON(w, http.StatusAccepted, j.snapshot())
}

func (j *job) snapshot() api.Report {
	j.mu.Lock()
	defer j.mu.Unlock()
	return j.report
}

func (a *Agent) handleJobStatus(w http.ResponseWriter, r *http.Request) {
	if !a.authorized(r) {
		httpError(w, http.StatusUnauthorized, "missing or wrong agent token")
		return
	}
	a.mu.Lock()
	j, ok := a.jobs[r.PathValue("id")]
	a.mu.Unlock()
	if !ok {
		httpError(w, http.StatusNotFound, "no such transfer")
		return
	}
	writeJSON(w, http.StatusOK, j.snapshot())
}

// handlePiece serves piece n when held, and relays it while it arrives
// (cut-through); otherwise it waits up to ?wait for it to start arriving
// and then answers 503 with how many pieces it holds, so the child can
// tell a slow-but-progressing parent from a stuck one. "Range: bytes=N-"
// asks for the piece from byte N on (206), for a child resuming a piece
// whose body ended early.
func (a *Agent) handlePiece(w http.ResponseWriter, r *http.Request) {
	if !a.authorized(r) {
		httpError(w, http.StatusUnauthorized, "missing or wrong agent token")
		return
	}
	id := r.PathValue("id")
	n, err := strconv.Atoi(r.PathValue("n"))
	if err != nil {
		httpError(w, http.StatusBadRequest, "bad piece number")
		return
	}
	from, ok := api.ParseRangeFrom(r.Header.Get("Range"))
	if !ok {
		httpError(w, http.StatusRequestedRangeNotSatisfiable, "only one range of the form bytes=N- is served")
		return
	}
	wait, _ := time.ParseDuration(r.URL.Query().Get("wait"))
	wait = min(max(wait, 0), time.Minute)
	pause := wait
	if pause <= 0 {
		pause = a.opts.StallTimeout / 2
	}
	deadline := time.Now().Add(wait)
	timer := time.NewTimer(wait)
	defer timer.Stop()
	for {
		a.mu.Lock()
		j, ok := a.jobs[id]
		arrived := a.newJob
		a.mu.Unlock()
		if !ok {
			select {
			case <-arrived:
				continue
			case <-timer.C:
			case <-r.Context().Done():
			}
			w.Header().Set("X-Filefly-Pieces", "-1")
			httpError(w, http.StatusServiceUnavailable, "transfer not started here yet")
			return
		}
		if n < 0 || n >= j.spec.Manifest.Count() {
			httpError(w, http.StatusBadRequest, "piece %d out of range", n)
			return
		}
		if _, length := j.spec.Manifest.Span(n); from >= length && length > 0 {
			httpError(w, http.StatusRequestedRangeNotSatisfiable, "piece %d has %d bytes", n, length)
			return
		}
		j.mu.Lock()
		has, changed, count := j.have.Has(n), j.changed, j.have.Count(j.spec.Manifest.Count())
		p := j.arriving[n]
		j.mu.Unlock()
		if has {
			a.servePiece(w, r, j, n, from)
			return
		}
		if p != nil {
			if a.relayArriving(w, r, j, n, p, from, max(time.Until(deadline), 0), pause) {
				return
			}
		} else {
			select {
			case <-changed:
				continue
			case <-timer.C:
			case <-r.Context().Done():
			}
		}
		w.Header().Set("X-Filefly-Pieces", strconv.Itoa(count))
		httpError(w, http.StatusServiceUnavailable, "piece %d not here yet", n)
		return
	}
}

// servePiece serves a held piece from byte from on.
func (a *Agent) servePiece(w http.ResponseWriter, r *http.Request, j *job, n int, from int64) {
	off, length := j.spec.Manifest.Span(n)
	buf := make([]byte, length)
	if err := j.readPiece(buf, off); err != nil {
		httpError(w, http.StatusInternalServerError, "read piece %d: %v", n, err)
		return
	}
	if from == 0 {
		buf = a.maybeCorrupt(j, n, buf)
	}
	w.Header().Set("Content-Length", strconv.FormatInt(length-from, 10))
	w.Header().Set("Content-Type", "application/octet-stream")
	if from > 0 {
		w.Header().Set("Content-Range", fmt.Sprintf("bytes %d-%d/%d", from, length-1, length))
		w.WriteHeader(http.StatusPartialContent)
	}
	out := throttle.Writer(r.Context(), w, a.egress)
	m, _ := out.Write(buf[from:])
	a.served.Add(m)
}

// readPiece reads from the temporary file while the job runs, from the
// destination once it is in place.
func (j *job) readPiece(buf []byte, off int64) error {
	j.mu.Lock()
	f, dest, verified := j.file, j.dest, j.report.SHA256Verified
	j.mu.Unlock()
	if f != nil {
		_, err := f.ReadAt(buf, off)
		return err
	}
	if !verified {
		// The job failed before its file was checked and put in place:
		// what lies at the destination is not this file.
		return errors.New("this host no longer holds the piece")
	}
	df, err := os.Open(dest)
	if err != nil {
		return err
	}
	defer df.Close()
	_, err = df.ReadAt(buf, off)
	return err
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	json.NewEncoder(w).Encode(v)
}

// save persists the job's state (written to a temporary name and renamed,
// so a crash leaves the old state or the new).
func (a *Agent) save(j *job) error {
	j.saveMu.Lock()
	defer j.saveMu.Unlock()
	j.mu.Lock()
	b, err := json.Marshal(saved{Job: j.spec, Dest: j.dest, Have: j.have, Report: j.report})
	j.mu.Unlock()
	if err != nil {
		return err
	}
	path := filepath.Join(a.jobsDir(), j.spec.ID+".json")
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, b, 0o640); err != nil {
		return fmt.Errorf("save job: %w", err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("save job: %w", err)
	}
	return nil
}

var errNotYet = errors.New("source does not hold the piece yet")

func (a *Agent) prefixed(dest string) string {
	if a.opts.DestPrefix == "" || !filepath.IsAbs(dest) {
		return dest
	}
	return filepath.Join(a.opts.DestPrefix, dest)
}

// stripesHaveSources reports whether every stripe of a job has a source.
func stripesHaveSources(spec api.Job) bool {
	for _, srcs := range spec.StripeSources {
		if len(srcs) == 0 {
			return false
		}
	}
	return true
}
