// Package poller takes a host's tasks from deployer by long polling and
// reports their results back, per the contract in deploy/README.md:
//
//	GET  {deployer}/api/v1/hosts/{host}/tasks?after={id}&wait={seconds}s
//	     200 with a JSON array of tasks (oldest first), or 204 after wait
//	POST {deployer}/api/v1/tasks/{id}/progress   body: the task's Result,
//	     after each step (state running, best effort) and at its end
//
// Tasks are at-least-once: a redelivered task is replayed from its record
// by the applier, so deployer may resend until it has a result.
package poller

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/opskit/opskit/deploy/release"
	"github.com/opskit/opskit/internal/atomicfile"
)

// Applier runs one task; *release.Applier is one.
type Applier interface {
	Apply(ctx context.Context, t release.Task) (*release.Result, error)
}

// Poller long polls one deployer for one host.
type Poller struct {
	Deployer string // base URL, e.g. http://deployer:7170
	Host     string
	// Token, when set, is sent as a bearer token (deployer's
	// --agent-poll-token-file).
	Token   string
	Applier Applier
	HTTP    *http.Client
	// Wait is the long poll's wait, sent to deployer.
	Wait time.Duration
	// CursorFile keeps the id of the last task whose result deployer
	// acknowledged, so that a restarted agent asks for the tasks after it.
	CursorFile string
	MinBackoff time.Duration
	MaxBackoff time.Duration
	Log        *slog.Logger

	progressOnce sync.Once
	progress     chan release.Result
}

// Progress queues a running task's step for a best-effort report (the
// final result is reported reliably by Run); it never blocks, and drops
// reports when deployer is slower than the steps. Set it as the applier's
// OnStep.
func (p *Poller) Progress(r release.Result) {
	select {
	case p.progressChan() <- r:
	default:
	}
}

func (p *Poller) progressChan() chan release.Result {
	p.progressOnce.Do(func() { p.progress = make(chan release.Result, 16) })
	return p.progress
}

func (p *Poller) sendProgress(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case r := <-p.progressChan():
			if r.State != release.StateRunning {
				continue
			}
			rctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			if err := p.report(rctx, &r); err != nil {
				p.Log.Debug("progress report failed", "task", r.Task.ID, "err", err)
			}
			cancel()
		}
	}
}

type cursor struct {
	After string `json:"after"`
}

func (p *Poller) loadCursor() string {
	b, err := os.ReadFile(p.CursorFile)
	if err != nil {
		return ""
	}
	var c cursor
	_ = json.Unmarshal(b, &c)
	return c.After
}

func (p *Poller) saveCursor(id string) error {
	if err := os.MkdirAll(filepath.Dir(p.CursorFile), 0o750); err != nil {
		return err
	}
	b, _ := json.Marshal(cursor{After: id})
	return atomicfile.WriteFile(p.CursorFile, b, 0o640)
}

// Run polls until ctx ends. Failures to reach deployer are retried with
// exponential backoff; they never stop the agent.
func (p *Poller) Run(ctx context.Context) error {
	if p.Wait <= 0 {
		p.Wait = 30 * time.Second
	}
	if p.MinBackoff <= 0 {
		p.MinBackoff = time.Second
	}
	if p.MaxBackoff <= 0 {
		p.MaxBackoff = time.Minute
	}
	if p.HTTP == nil {
		p.HTTP = &http.Client{}
	}
	if p.Log == nil {
		p.Log = slog.New(slog.DiscardHandler)
	}
	p.progressChan()
	go p.sendProgress(ctx)
	after := p.loadCursor()
	backoff := p.MinBackoff
	for ctx.Err() == nil {
		began := time.Now()
		tasks, err := p.poll(ctx, after)
		if err == nil && len(tasks) == 0 && time.Since(began) < p.Wait/2 {
			// An empty answer that did not wait: do not spin.
			select {
			case <-ctx.Done():
				return nil
			case <-time.After(p.MinBackoff):
			}
		}
		if err == nil {
			for _, t := range tasks {
				if err = p.runOne(ctx, t); err != nil {
					break
				}
				after = t.ID
				if err = p.saveCursor(after); err != nil {
					break
				}
			}
		}
		if err == nil {
			backoff = p.MinBackoff
			continue
		}
		if ctx.Err() != nil {
			return nil
		}
		p.Log.Warn("deployer poll failed; retrying", "deployer", p.Deployer, "err", err, "in", backoff)
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, p.MaxBackoff)
	}
	return nil
}

func (p *Poller) poll(ctx context.Context, after string) ([]release.Task, error) {
	u := fmt.Sprintf("%s/api/v1/hosts/%s/tasks?after=%s&wait=%ds", p.Deployer, url.PathEscape(p.Host),
		url.QueryEscape(after), int(p.Wait.Seconds()))
	ctx, cancel := context.WithTimeout(ctx, p.Wait+30*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, err
	}
	p.authorize(req)
	resp, err := p.HTTP.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	switch resp.StatusCode {
	case http.StatusNoContent:
		return nil, nil
	case http.StatusOK:
	default:
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
		return nil, fmt.Errorf("GET tasks: HTTP %s: %s", resp.Status, bytes.TrimSpace(b))
	}
	var tasks []release.Task
	if err := json.NewDecoder(io.LimitReader(resp.Body, 16<<20)).Decode(&tasks); err != nil {
		return nil, fmt.Errorf("GET tasks: %w", err)
	}
	return tasks, nil
}

// runOne applies a task and reports its result until deployer takes it.
// A task deployer sent malformed is reported failed, not retried forever.
func (p *Poller) runOne(ctx context.Context, t release.Task) error {
	var res *release.Result
	if err := t.Validate(); err != nil {
		res = &release.Result{Task: t, State: release.StateFailed, Error: err.Error(), Started: time.Now().UTC(), Finished: time.Now().UTC()}
	} else {
		var err error
		res, err = p.Applier.Apply(ctx, t)
		if res == nil {
			res = &release.Result{Task: t, State: release.StateFailed, Error: err.Error(), Started: time.Now().UTC(), Finished: time.Now().UTC()}
		} else if ctx.Err() != nil {
			return ctx.Err() // cut off: resumed by the next agent
		}
	}
	return p.report(ctx, res)
}

func (p *Poller) report(ctx context.Context, res *release.Result) error {
	body, _ := json.Marshal(res)
	id := res.Task.ID
	if id == "" {
		return errors.New("deployer sent a task without an id")
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, p.Deployer+"/api/v1/tasks/"+url.PathEscape(id)+"/progress", bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	p.authorize(req)
	resp, err := p.HTTP.Do(req)
	if err != nil {
		return fmt.Errorf("report task %s: %w", id, err)
	}
	resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("report task %s: HTTP %s", id, resp.Status)
	}
	p.Log.Debug("task reported to deployer", "task", id, "state", res.State, "steps", len(res.Steps))
	return nil
}

// authorize adds the bearer token, if any, to a request for deployer.
func (p *Poller) authorize(req *http.Request) {
	if p.Token != "" {
		req.Header.Set("Authorization", "Bearer "+p.Token)
	}
}
