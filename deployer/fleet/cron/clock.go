package cron

import (
	"sync"
	"time"
)

// Clock tells the time and wakes the scheduler; tests inject a FakeClock.
type Clock interface {
	Now() time.Time
	// At returns a channel that receives once the clock has reached t
	// (at once if it already has).
	At(t time.Time) <-chan time.Time
}

// RealClock is the system clock. Waits are capped at a minute, so a
// wall-clock step (NTP, a suspended machine) is noticed within a minute.
type RealClock struct{}

// Now returns time.Now().
func (RealClock) Now() time.Time { return time.Now() }

// At fires at t or after a minute, whichever comes first; the scheduler
// checks the time again when woken.
func (RealClock) At(t time.Time) <-chan time.Time {
	return time.After(min(time.Until(t), time.Minute))
}

// FakeClock is a Clock that moves only when told to.
type FakeClock struct {
	mu      sync.Mutex
	now     time.Time
	waiters []fakeWaiter
}

type fakeWaiter struct {
	at time.Time
	ch chan time.Time
}

// NewFakeClock returns a clock standing at now.
func NewFakeClock(now time.Time) *FakeClock { return &FakeClock{now: now} }

// Now returns the clock's time.
func (c *FakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

// At returns a channel that receives when the clock is set to t or later.
func (c *FakeClock) At(t time.Time) <-chan time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	ch := make(chan time.Time, 1)
	if !t.After(c.now) {
		ch <- c.now
		return ch
	}
	c.waiters = append(c.waiters, fakeWaiter{at: t, ch: ch})
	return ch
}

// Set moves the clock to now and wakes the waiters it has reached.
func (c *FakeClock) Set(now time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = now
	kept := c.waiters[:0]
	for _, w := range c.waiters {
		if w.at.After(now) {
			kept = append(kept, w)
			continue
		}
		w.ch <- now
	}
	c.waiters = kept
}

// Advance moves the clock forward by d.
func (c *FakeClock) Advance(d time.Duration) { c.Set(c.Now().Add(d)) }
