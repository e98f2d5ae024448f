// Package fleet routes operators' work other than releases to an app's
// hosts through their deploy agents: process control (start, stop,
// restart a program everywhere or on one host), host statistics, allowed
// diagnostic commands with their output streamed back prefixed by host,
// and scheduled jobs (package cron) that run such commands on a schedule.
//
// The agents' own allowlists are the enforcement; the deployer may keep a
// narrower list of names (Fleet.Allow) to refuse earlier.
package fleet

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"sync"

	"github.com/opskit/opskit/deployer/hosts"
)

// Fleet reaches the hosts of apps through their agents.
type Fleet struct {
	Hosts  hosts.Source
	Agents *AgentClient
	// Concurrency bounds the agents called at once by one request
	// (default 32).
	Concurrency int
	// Allow, when not empty, lists the diagnostic names the deployer lets
	// through to the agents (which still check their own allowlists).
	Allow []string
}

// Target picks an app's hosts: all of the app's hosts in Env (DefaultEnv
// when empty), or only the one named Host.
type Target struct {
	App  string `json:"app"`
	Env  string `json:"env,omitempty"`
	Host string `json:"host,omitempty"`
}

// DefaultEnv is the environment of a target that names none (as for
// deploys).
const DefaultEnv = "prod"

// ErrNoSuchHost is wrapped when Target.Host is not one of the app's hosts.
var ErrNoSuchHost = errors.New("no such host")

// ErrBadRequest is wrapped for a malformed request (a missing app,
// program or command name).
var ErrBadRequest = errors.New("bad request")

// Resolve lists the target's hosts, sorted by name.
func (f *Fleet) Resolve(ctx context.Context, t Target) ([]hosts.Host, error) {
	if t.App == "" {
		return nil, fmt.Errorf("%w: an app is required", ErrBadRequest)
	}
	if t.Env == "" {
		t.Env = DefaultEnv
	}
	hs, err := f.Hosts.Hosts(ctx, t.App, t.Env)
	if err != nil {
		return nil, err
	}
	for i := range hs {
		if hs[i].Addr == "" {
			hs[i].Addr = hs[i].Name
		}
	}
	if t.Host == "" {
		return hs, nil
	}
	for _, h := range hs {
		if h.Name == t.Host {
			return []hosts.Host{h}, nil
		}
	}
	return nil, fmt.Errorf("%s is not a host of %s/%s: %w", t.Host, t.App, t.Env, ErrNoSuchHost)
}

// CheckAllowed refuses a diagnostic name outside Allow (when set).
func (f *Fleet) CheckAllowed(name string) error {
	if name == "" {
		return fmt.Errorf("%w: a command name is required", ErrBadRequest)
	}
	if len(f.Allow) > 0 && !slices.Contains(f.Allow, name) {
		return fmt.Errorf("%w: %q is not in the deployer's allowlist (%s)", ErrRefused, name, strings.Join(f.Allow, ", "))
	}
	return nil
}

// eachHost calls fn for every host, at most Concurrency at a time, and
// returns when all have returned.
func (f *Fleet) eachHost(ctx context.Context, hs []hosts.Host, fn func(ctx context.Context, i int, h hosts.Host)) {
	limit := f.Concurrency
	if limit <= 0 {
		limit = 32
	}
	sem := make(chan struct{}, limit)
	var wg sync.WaitGroup
	for i, h := range hs {
		sem <- struct{}{} // calls watch ctx, so a slot frees soon after it ends
		wg.Go(func() {
			defer func() { <-sem }()
			fn(ctx, i, h)
		})
	}
	wg.Wait()
}

// errorText is err's message, "" for nil.
func errorText(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

// hostErrorText is how a host's failure reads in its result: an agent's
// refusal is its own message (the result says it was refused).
func hostErrorText(err error) string {
	var ae *AgentError
	if errors.As(err, &ae) && ae.Status == http.StatusForbidden {
		return ae.Message
	}
	return errorText(err)
}
