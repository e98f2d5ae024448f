package client

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/opskit/opskit/configd/api"
)

// Remote talks to configd servers over HTTP. Given several servers (a
// primary and its replicas, or several behind no balancer) it sticks to one
// and fails over to the next on a connection error or a 5xx answer.
type Remote struct {
	servers []string
	token   string
	user    string
	http    *http.Client

	mu   sync.Mutex
	next int
}

// RemoteOptions tune a Remote.
type RemoteOptions struct {
	// Token is sent as a bearer token.
	Token string
	// User names the caller when the server runs without tokens.
	User string
	// HTTPClient defaults to one with no overall timeout (watches are
	// bounded by their own timeout).
	HTTPClient *http.Client
}

// NewRemote returns a client for the servers (base URLs such as
// http://127.0.0.1:7160, or HOST:PORT).
func NewRemote(servers []string, opts RemoteOptions) (*Remote, error) {
	if len(servers) == 0 {
		return nil, errors.New("configd client: no server given")
	}
	r := &Remote{token: opts.Token, user: opts.User, http: opts.HTTPClient}
	for _, s := range servers {
		s = strings.TrimRight(strings.TrimSpace(s), "/")
		if s == "" {
			continue
		}
		if !strings.Contains(s, "://") {
			s = "http://" + s
		}
		if _, err := url.Parse(s); err != nil {
			return nil, fmt.Errorf("configd client: server %q: %w", s, err)
		}
		r.servers = append(r.servers, s)
	}
	if len(r.servers) == 0 {
		return nil, errors.New("configd client: no server given")
	}
	if r.http == nil {
		r.http = &http.Client{Transport: &http.Transport{Proxy: nil, MaxIdleConnsPerHost: 4, IdleConnTimeout: 90 * time.Second}}
	}
	return r, nil
}

// StatusError is an answer other than success from the server.
type StatusError struct {
	Status  int
	Message string
}

func (e *StatusError) Error() string {
	return fmt.Sprintf("configd: %d %s: %s", e.Status, http.StatusText(e.Status), e.Message)
}

// IsNotFound reports whether err is a 404 from the server.
func IsNotFound(err error) bool {
	var se *StatusError
	return errors.As(err, &se) && se.Status == http.StatusNotFound
}

// Server returns the server currently in use.
func (r *Remote) Server() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.servers[r.next]
}

// do sends a request, failing over across servers. A 304 returns
// (nil, 304, nil); other non-2xx answers are a *StatusError.
func (r *Remote) do(ctx context.Context, method, path string, body []byte, contentType string) ([]byte, int, error) {
	r.mu.Lock()
	start := r.next
	r.mu.Unlock()
	var lastErr error
	for i := range r.servers {
		idx := (start + i) % len(r.servers)
		data, status, err := r.once(ctx, r.servers[idx], method, path, body, contentType)
		if err == nil && status < 500 {
			if i > 0 {
				r.mu.Lock()
				r.next = idx
				r.mu.Unlock()
			}
			if status >= 300 && status != http.StatusNotModified {
				var e struct {
					Error string `json:"error"`
				}
				if json.Unmarshal(data, &e) != nil || e.Error == "" {
					e.Error = strings.TrimSpace(string(data))
				}
				return nil, status, &StatusError{Status: status, Message: e.Error}
			}
			return data, status, nil
		}
		if ctx.Err() != nil {
			return nil, 0, ctx.Err()
		}
		if err == nil {
			err = &StatusError{Status: status, Message: strings.TrimSpace(string(data))}
		}
		lastErr = fmt.Errorf("%s: %w", r.servers[idx], err)
	}
	r.mu.Lock()
	r.next = (start + 1) % len(r.servers)
	r.mu.Unlock()
	return nil, 0, lastErr
}

func (r *Remote) once(ctx context.Context, server, method, path string, body []byte, contentType string) ([]byte, int, error) {
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, server+path, rd)
	if err != nil {
		return nil, 0, err
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	if r.token != "" {
		req.Header.Set("Authorization", "Bearer "+r.token)
	}
	if r.user != "" {
		req.Header.Set("X-Opskit-User", r.user)
	}
	resp, err := r.http.Do(req)
	if err != nil {
		return nil, 0, err
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, 0, err
	}
	return data, resp.StatusCode, nil
}

func (r *Remote) getJSON(ctx context.Context, path string, out any) (int, error) {
	data, status, err := r.do(ctx, http.MethodGet, path, nil, "")
	if err != nil || status == http.StatusNotModified {
		return status, err
	}
	if err := json.Unmarshal(data, out); err != nil {
		return status, fmt.Errorf("configd: %s: %w", path, err)
	}
	return status, nil
}

func (r *Remote) sendJSON(ctx context.Context, method, path string, in, out any) error {
	body, err := json.Marshal(in)
	if err != nil {
		return err
	}
	data, _, err := r.do(ctx, method, path, body, "application/json")
	if err != nil || out == nil || len(data) == 0 {
		return err
	}
	if err := json.Unmarshal(data, out); err != nil {
		return fmt.Errorf("configd: %s: %w", path, err)
	}
	return nil
}

func nsPath(ns string) string { return "/v1/ns/" + ns }

// Namespaces lists every namespace's head (without drafts).
func (r *Remote) Namespaces(ctx context.Context) ([]api.Namespace, error) {
	var out []api.Namespace
	_, err := r.getJSON(ctx, "/v1/namespaces", &out)
	return out, err
}

// Namespace returns a namespace's head.
func (r *Remote) Namespace(ctx context.Context, ns string) (api.Namespace, error) {
	var out api.Namespace
	_, err := r.getJSON(ctx, nsPath(ns), &out)
	return out, err
}

// Put sets one file of the namespace's draft.
func (r *Remote) Put(ctx context.Context, ns, file string, content []byte) (api.Namespace, error) {
	var out api.Namespace
	data, _, err := r.do(ctx, http.MethodPut, nsPath(ns)+"/files/"+url.PathEscape(file), content, "application/octet-stream")
	if err == nil {
		err = json.Unmarshal(data, &out)
	}
	return out, err
}

// DeleteDraft removes a file from the draft.
func (r *Remote) DeleteDraft(ctx context.Context, ns, file string) (api.Namespace, error) {
	var out api.Namespace
	data, _, err := r.do(ctx, http.MethodDelete, nsPath(ns)+"/files/"+url.PathEscape(file), nil, "")
	if err == nil {
		err = json.Unmarshal(data, &out)
	}
	return out, err
}

// SetSettings replaces a namespace's publish rules.
func (r *Remote) SetSettings(ctx context.Context, ns string, st api.Settings) (api.Namespace, error) {
	var out api.Namespace
	err := r.sendJSON(ctx, http.MethodPut, nsPath(ns)+"/settings", st, &out)
	return out, err
}

// Publish creates the namespace's next release (of req.Files, or of the draft).
func (r *Remote) Publish(ctx context.Context, ns string, req api.PublishRequest) (api.Release, error) {
	var out api.Release
	err := r.sendJSON(ctx, http.MethodPost, nsPath(ns)+"/publish", req, &out)
	return out, err
}

// Rollback publishes a copy of release `to` (0: the one before current).
func (r *Remote) Rollback(ctx context.Context, ns string, to int64, comment string) (api.Release, error) {
	var out api.Release
	err := r.sendJSON(ctx, http.MethodPost, nsPath(ns)+"/rollback", api.RollbackRequest{To: to, Comment: comment}, &out)
	return out, err
}

// Promote makes the gray release current.
func (r *Remote) Promote(ctx context.Context, ns string) (api.Namespace, error) {
	var out api.Namespace
	err := r.sendJSON(ctx, http.MethodPost, nsPath(ns)+"/promote", struct{}{}, &out)
	return out, err
}

// Abandon ends the gray release.
func (r *Remote) Abandon(ctx context.Context, ns string) (api.Namespace, error) {
	var out api.Namespace
	err := r.sendJSON(ctx, http.MethodPost, nsPath(ns)+"/abandon", struct{}{}, &out)
	return out, err
}

// Releases lists releases after `after`, without contents.
func (r *Remote) Releases(ctx context.Context, ns string, after int64) ([]api.Release, error) {
	var out []api.Release
	_, err := r.getJSON(ctx, nsPath(ns)+"/releases?after="+strconv.FormatInt(after, 10), &out)
	return out, err
}

// Release returns one release with its files.
func (r *Remote) Release(ctx context.Context, ns string, version int64) (api.Release, error) {
	var out api.Release
	_, err := r.getJSON(ctx, nsPath(ns)+"/releases/"+strconv.FormatInt(version, 10), &out)
	return out, err
}

// Config returns the full release the host (with labels) should hold.
func (r *Remote) Config(ctx context.Context, ns, host string, labels map[string]string) (api.Release, error) {
	var out api.Release
	_, err := r.getJSON(ctx, nsPath(ns)+"/config?"+hostQuery(host, labels).Encode(), &out)
	return out, err
}

// File returns one file of release `version` (0: current) and the version.
func (r *Remote) File(ctx context.Context, ns, file string, version int64) (string, error) {
	q := url.Values{}
	if version > 0 {
		q.Set("version", strconv.FormatInt(version, 10))
	}
	data, _, err := r.do(ctx, http.MethodGet, nsPath(ns)+"/files/"+url.PathEscape(file)+"?"+q.Encode(), nil, "")
	return string(data), err
}

// Diff returns the unified diff between two releases.
func (r *Remote) Diff(ctx context.Context, ns string, from, to int64) (string, error) {
	data, _, err := r.do(ctx, http.MethodGet, fmt.Sprintf("%s/diff?from=%d&to=%d", nsPath(ns), from, to), nil, "")
	return string(data), err
}

// History lists the changes of the namespace's head.
func (r *Remote) History(ctx context.Context, ns string) ([]api.HistoryEntry, error) {
	var out []api.HistoryEntry
	_, err := r.getJSON(ctx, nsPath(ns)+"/history", &out)
	return out, err
}

// Status returns the convergence view of a release.
func (r *Remote) Status(ctx context.Context, ns string, version int64) (api.Convergence, error) {
	var out api.Convergence
	_, err := r.getJSON(ctx, nsPath(ns)+"/releases/"+strconv.FormatInt(version, 10)+"/status", &out)
	return out, err
}

func hostQuery(host string, labels map[string]string) url.Values {
	q := url.Values{}
	if host != "" {
		q.Set("host", host)
	}
	keys := make([]string, 0, len(labels))
	for k := range labels {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		q.Add("label", k+"="+labels[k])
	}
	return q
}

// Watch long-polls for namespaces whose version for this host differs from
// the held one. It returns the changes, or nil when the timeout passed with
// none.
func (r *Remote) Watch(ctx context.Context, held map[string]int64, host string, labels map[string]string, timeout time.Duration) ([]api.Change, error) {
	return r.watch(ctx, held, host, labels, timeout, false)
}

// WatchContent is Watch with each change carrying its full release
// (Change.Release), as agents use it: one request per change instead of two.
func (r *Remote) WatchContent(ctx context.Context, held map[string]int64, host string, labels map[string]string, timeout time.Duration) ([]api.Change, error) {
	return r.watch(ctx, held, host, labels, timeout, true)
}

func (r *Remote) watch(ctx context.Context, held map[string]int64, host string, labels map[string]string, timeout time.Duration, content bool) ([]api.Change, error) {
	q := hostQuery(host, labels)
	if content {
		q.Set("content", "1")
	}
	names := make([]string, 0, len(held))
	for n := range held {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		q.Add("ns", n+":"+strconv.FormatInt(held[n], 10))
	}
	if timeout > 0 {
		q.Set("timeout", timeout.String())
	}
	var out []api.Change
	_, err := r.getJSON(ctx, "/v1/watch?"+q.Encode(), &out)
	return out, err
}

// Register records the host as a member of its apps; call it again as a
// heartbeat.
func (r *Remote) Register(ctx context.Context, h api.Host) error {
	return r.sendJSON(ctx, http.MethodPost, "/v1/hosts", h, nil)
}

// Report tells the server the outcome of applying a release.
func (r *Remote) Report(ctx context.Context, rep api.Report) error {
	return r.sendJSON(ctx, http.MethodPost, "/v1/reports", rep, nil)
}

// Hosts lists the live hosts of app ("" = every app); all includes down ones.
func (r *Remote) Hosts(ctx context.Context, app string, all bool) ([]api.Host, error) {
	path := "/v1/hosts"
	if app != "" {
		path = "/v1/apps/" + url.PathEscape(app) + "/hosts"
	}
	if all {
		path += "?all=1"
	}
	var out []api.Host
	_, err := r.getJSON(ctx, path, &out)
	return out, err
}

// Events long-polls membership events of app ("" = every app) after seq;
// timeout 0 answers at once.
func (r *Remote) Events(ctx context.Context, app string, after int64, timeout time.Duration) (api.EventsResponse, error) {
	path := "/v1/events"
	if app != "" {
		path = "/v1/apps/" + url.PathEscape(app) + "/events"
	}
	q := url.Values{"after": {strconv.FormatInt(after, 10)}, "timeout": {timeout.String()}}
	var out api.EventsResponse
	_, err := r.getJSON(ctx, path+"?"+q.Encode(), &out)
	return out, err
}

// Audit returns the last `limit` audit entries (admin only).
func (r *Remote) Audit(ctx context.Context, limit int) ([]api.AuditEntry, error) {
	var out []api.AuditEntry
	_, err := r.getJSON(ctx, "/v1/audit?limit="+strconv.Itoa(limit), &out)
	return out, err
}
