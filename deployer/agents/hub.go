// Package agents hands tasks to deploy agents: parked long polls per host
// (the agent's side is deploy/poller) or, optionally, a Kafka topic keyed
// by host (deploy/kafkatasks).
package agents

import (
	"context"
	"sync"
	"time"

	"github.com/opskit/opskit/deploy/release"
)

// Hub holds each host's pending tasks until its agent reports their final
// result. An idle long poll costs one parked goroutine and a channel.
type Hub struct {
	mu    sync.Mutex
	hosts map[string]*hostQueue
}

type hostQueue struct {
	tasks []release.Task
	// wake is closed when a task is added.
	wake chan struct{}
	// polls counts long polls parked now.
	polls int
}

// NewHub returns an empty hub.
func NewHub() *Hub { return &Hub{hosts: map[string]*hostQueue{}} }

func (h *Hub) queue(host string) *hostQueue {
	q, ok := h.hosts[host]
	if !ok {
		q = &hostQueue{wake: make(chan struct{})}
		h.hosts[host] = q
	}
	return q
}

// Send queues a task for host (again: a task already pending is kept once).
func (h *Hub) Send(_ context.Context, host string, t release.Task) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	q := h.queue(host)
	for _, p := range q.tasks {
		if p.ID == t.ID {
			return nil
		}
	}
	q.tasks = append(q.tasks, t)
	close(q.wake)
	q.wake = make(chan struct{})
	return nil
}

// Withdraw removes a task: its result is in, or its deploy stopped.
func (h *Hub) Withdraw(host, taskID string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	q, ok := h.hosts[host]
	if !ok {
		return
	}
	for i, p := range q.tasks {
		if p.ID == taskID {
			q.tasks = append(q.tasks[:i:i], q.tasks[i+1:]...)
			break
		}
	}
	h.gc(host, q)
}

func (h *Hub) gc(host string, q *hostQueue) {
	if len(q.tasks) == 0 && q.polls == 0 {
		delete(h.hosts, host)
	}
}

// Poll answers a host's long poll: its pending tasks, oldest first
// (without the one named after, whose result the agent already has
// acknowledged), at once if there are any, else when one comes or after
// wait (nil).
func (h *Hub) Poll(ctx context.Context, host, after string, wait time.Duration) []release.Task {
	timer := time.NewTimer(wait)
	defer timer.Stop()
	for {
		h.mu.Lock()
		q := h.queue(host)
		var out []release.Task
		for _, t := range q.tasks {
			if t.ID != after {
				out = append(out, t)
			}
		}
		if len(out) > 0 {
			h.gc(host, q)
			h.mu.Unlock()
			return out
		}
		q.polls++
		wake := q.wake
		h.mu.Unlock()
		var done bool
		select {
		case <-wake:
		case <-timer.C:
			done = true
		case <-ctx.Done():
			done = true
		}
		h.mu.Lock()
		q.polls--
		h.gc(host, q)
		h.mu.Unlock()
		if done {
			return nil
		}
	}
}

// Parked returns how many long polls are waiting now.
func (h *Hub) Parked() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	n := 0
	for _, q := range h.hosts {
		n += q.polls
	}
	return n
}

// Pending returns how many tasks wait for results.
func (h *Hub) Pending() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	n := 0
	for _, q := range h.hosts {
		n += len(q.tasks)
	}
	return n
}
