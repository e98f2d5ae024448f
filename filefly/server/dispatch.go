package server

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/opskit/opskit/filefly/api"
)

// launch hands every unfinished host its job and watches the deadline.
func (s *Server) launch(ctx context.Context, t *transfer) {
	t.mu.Lock()
	var pending []int
	for i, h := range t.status.Hosts {
		if !api.Terminal(h.State) {
			pending = append(pending, i)
		}
	}
	deadline := t.status.Deadline
	t.mu.Unlock()
	for _, i := range pending {
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			s.dispatch(ctx, t, i)
		}()
	}
	s.wg.Add(2)
	go func() {
		defer s.wg.Done()
		s.watchDeadline(ctx, t, deadline)
	}()
	go func() {
		defer s.wg.Done()
		s.watchLost(ctx, t)
	}()
}

// watchLost probes the agents of running hosts that went quiet, and marks
// the ones that do not answer failed.
func (s *Server) watchLost(ctx context.Context, t *transfer) {
	tick := time.NewTicker(s.opts.LostAfter / 4)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		t.mu.Lock()
		if t.status.Done {
			t.mu.Unlock()
			return
		}
		var quiet []string
		for _, h := range t.status.Hosts {
			if h.State == api.StateRunning && time.Since(h.Update) > s.opts.LostAfter {
				quiet = append(quiet, h.Host)
			}
		}
		id := t.status.ID
		t.mu.Unlock()
		for _, host := range quiet {
			err := s.probe(ctx, host, id)
			if err == nil || ctx.Err() != nil {
				continue
			}
			t.mu.Lock()
			i := t.hostIndex(host)
			h := &t.status.Hosts[i]
			lost := h.State == api.StateRunning && time.Since(h.Update) > s.opts.LostAfter
			if lost {
				h.State = api.StateFailed
				h.Error = fmt.Sprintf("agent lost: no report for %s and the probe failed: %v", s.opts.LostAfter, err)
				h.Finished = time.Now().UTC()
				t.touchLocked()
			}
			t.mu.Unlock()
			if lost {
				s.opts.Log.Warn("agent lost", "id", id, "host", host, "err", err)
				s.checkDone(t)
			}
		}
	}
}

// probe asks an agent for its job.
func (s *Server) probe(ctx context.Context, host, id string) error {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+host+"/v1/jobs/"+id, nil)
	if err != nil {
		return err
	}
	if len(s.opts.Token) > 0 {
		req.Header.Set("Authorization", "Bearer "+string(s.opts.Token))
	}
	resp, err := s.opts.HTTP.Do(req)
	if err != nil {
		return err
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("agent: %s", resp.Status)
	}
	return nil
}

func (s *Server) job(t *transfer, i int) api.Job {
	t.mu.Lock()
	defer t.mu.Unlock()
	req := t.status.Request
	j := api.Job{
		ID: t.status.ID, Host: t.status.Hosts[i].Host, Manifest: t.status.Manifest,
		Dest: req.Dest, Mode: req.Mode, Owner: req.Owner, PostCmd: req.PostCmd,
		PostCmdTimeout: req.PostCmdTimeout, Rate: req.Rate,
		Sources: t.sources[i], Server: s.opts.URL,
	}
	if t.stripeSources != nil {
		j.StripeSources = t.stripeSources[i]
	}
	if len(s.opts.Token) > 0 {
		j.Signature = j.Sign(s.opts.Token)
	}
	return j
}

// dispatch posts the job to the host's agent until it takes it, refuses
// it, or the deadline passes. Re-posting is safe: the agent answers a
// job it already has with its current report.
func (s *Server) dispatch(ctx context.Context, t *transfer, i int) {
	j := s.job(t, i)
	body, _ := json.Marshal(j)
	backoff := 200 * time.Millisecond
	for {
		rep, refused, err := s.post(ctx, j.Host, body)
		if ctx.Err() != nil {
			return
		}
		t.mu.Lock()
		h := &t.status.Hosts[i]
		if api.Terminal(h.State) {
			t.mu.Unlock()
			return
		}
		switch {
		case err == nil:
			if h.State == api.StatePending || h.State == api.StateUnreachable || rep.State != api.StateRunning {
				h.Report = rep
			}
			h.Update = time.Now().UTC()
		case refused:
			h.State = api.StateFailed
			h.Error = err.Error()
			h.Finished = time.Now().UTC()
			s.opts.Log.Warn("agent refused the job", "id", j.ID, "host", j.Host, "err", err)
		default:
			if h.State != api.StateUnreachable {
				s.opts.Log.Warn("agent unreachable; retrying until the deadline", "id", j.ID, "host", j.Host, "err", err)
			}
			h.State = api.StateUnreachable
			h.Error = err.Error()
		}
		t.touchLocked()
		final := api.Terminal(h.State)
		t.mu.Unlock()
		if err == nil || refused {
			if final {
				s.checkDone(t)
			} else {
				s.save(t)
			}
			return
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 5*time.Second)
	}
}

// post sends a job; refused says the agent answered with a definite no.
func (s *Server) post(ctx context.Context, host string, body []byte) (rep api.Report, refused bool, err error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, "http://"+host+"/v1/jobs", bytes.NewReader(body))
	if err != nil {
		return rep, true, err
	}
	req.Header.Set("Content-Type", "application/json")
	if len(s.opts.Token) > 0 {
		req.Header.Set("Authorization", "Bearer "+string(s.opts.Token))
	}
	resp, err := s.opts.HTTP.Do(req)
	if err != nil {
		return rep, false, err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	switch {
	case resp.StatusCode == http.StatusOK || resp.StatusCode == http.StatusAccepted:
		if err := json.Unmarshal(b, &rep); err != nil {
			return rep, false, fmt.Errorf("agent answer: %w", err)
		}
		return rep, false, nil
	case resp.StatusCode >= 400 && resp.StatusCode < 500:
		return rep, true, fmt.Errorf("agent refused: %s", strings.TrimSpace(string(b)))
	default:
		return rep, false, fmt.Errorf("agent: %s: %s", resp.Status, strings.TrimSpace(string(b)))
	}
}

// watchDeadline marks the hosts not final by the deadline late.
func (s *Server) watchDeadline(ctx context.Context, t *transfer, deadline time.Time) {
	timer := time.NewTimer(time.Until(deadline))
	defer timer.Stop()
	select {
	case <-ctx.Done():
		return
	case <-timer.C:
	}
	t.mu.Lock()
	late := 0
	for i := range t.status.Hosts {
		h := &t.status.Hosts[i]
		if !api.Terminal(h.State) {
			if h.Error == "" {
				h.Error = "not finished by the deadline"
			} else {
				h.Error = "not finished by the deadline: " + h.Error
			}
			h.State = api.StateLate
			late++
		}
	}
	t.mu.Unlock()
	if late > 0 {
		s.opts.Log.Warn("deadline passed", "id", t.status.ID, "late_hosts", late)
	}
	s.checkDone(t)
}
