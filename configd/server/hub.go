package server

import (
	"runtime"
	"sync"
	"sync/atomic"
	"time"
)

// hub wakes long-polling watchers when a namespace changes. A change wakes
// its watchers in batches with a pause between them, so a publish to a
// namespace every host watches does not answer thousands of requests (and
// draw thousands of reconnects) in the same instant.
type hub struct {
	batch    int
	interval time.Duration
	// fanout is told how long waking all watchers of a change took.
	fanout func(watchers int, took time.Duration)

	mu    sync.Mutex
	byNS  map[string]map[*waiter]struct{}
	byRev map[*waiter]struct{}
	count int
}

type waiter struct {
	ch         chan struct{}
	namespaces []string
	rev        bool
	// park is set when the watch waits without a goroutine: waking it
	// runs its check instead of signalling ch.
	park atomic.Pointer[parked]
}

func newHub(batch int, interval time.Duration) *hub {
	if batch <= 0 {
		batch = 1
	}
	return &hub{batch: batch, interval: interval, byNS: map[string]map[*waiter]struct{}{}, byRev: map[*waiter]struct{}{}}
}

// subscribe registers a waiter for changes of the namespaces, or of any
// namespace when rev is set. Subscribe before reading the state you
// compare against, so no change falls between the read and the wait.
func (h *hub) subscribe(namespaces []string, rev bool) *waiter {
	w := &waiter{ch: make(chan struct{}, 1), namespaces: namespaces, rev: rev}
	h.mu.Lock()
	defer h.mu.Unlock()
	h.count++
	if rev {
		h.byRev[w] = struct{}{}
		return w
	}
	for _, ns := range namespaces {
		set := h.byNS[ns]
		if set == nil {
			set = map[*waiter]struct{}{}
			h.byNS[ns] = set
		}
		set[w] = struct{}{}
	}
	return w
}

// all returns every waiter.
func (h *hub) all() []*waiter {
	h.mu.Lock()
	defer h.mu.Unlock()
	seen := map[*waiter]bool{}
	var out []*waiter
	for w := range h.byRev {
		out = append(out, w)
	}
	for _, set := range h.byNS {
		for w := range set {
			if !seen[w] {
				seen[w] = true
				out = append(out, w)
			}
		}
	}
	return out
}

func (h *hub) unsubscribe(w *waiter) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.count--
	if w.rev {
		delete(h.byRev, w)
		return
	}
	for _, ns := range w.namespaces {
		if set := h.byNS[ns]; set != nil {
			delete(set, w)
			if len(set) == 0 {
				delete(h.byNS, ns)
			}
		}
	}
}

// watchers is the number of waiting requests.
func (h *hub) watchers() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.count
}

// notify wakes the watchers of ns, and every rev watcher, in batches. It
// returns at once; the later batches are woken in the background.
func (h *hub) notify(ns string) {
	h.mu.Lock()
	list := make([]*waiter, 0, len(h.byRev)+len(h.byNS[ns]))
	// Replicas first: they fan the change out further.
	for w := range h.byRev {
		list = append(list, w)
	}
	for w := range h.byNS[ns] {
		list = append(list, w)
	}
	h.mu.Unlock()
	start := time.Now()
	if len(list) <= h.batch {
		wake(list)
		if h.fanout != nil {
			h.fanout(len(list), time.Since(start))
		}
		return
	}
	go func() {
		if h.fanout != nil {
			defer func() { h.fanout(len(list), time.Since(start)) }()
		}
		// Batch k is due at start + k × interval. Pacing by schedule
		// rather than by sleeping between batches keeps a slow batch (or a
		// busy machine) from pushing every later batch back as well.
		for k, from := 0, 0; from < len(list); k, from = k+1, from+h.batch {
			if d := time.Until(start.Add(time.Duration(k) * h.interval)); d > 0 {
				time.Sleep(d)
			}
			wake(list[from:min(from+h.batch, len(list))])
		}
	}()
}

// wake signals waiting goroutines and answers parked watches, the latter
// spread over one worker per CPU (each answer is a check and a write).
func wake(list []*waiter) {
	var parked []*parked
	for _, w := range list {
		if p := w.park.Load(); p != nil {
			parked = append(parked, p)
			continue
		}
		select {
		case w.ch <- struct{}{}:
		default:
		}
	}
	workers := min(runtime.GOMAXPROCS(0), (len(parked)+63)/64)
	if workers <= 1 {
		for _, p := range parked {
			p.wake()
		}
		return
	}
	var wg sync.WaitGroup
	for i := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := i; j < len(parked); j += workers {
				parked[j].wake()
			}
		}()
	}
	wg.Wait()
}
