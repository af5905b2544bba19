package vspherehatchery

import (
	"fmt"
	"sync"
	"time"
)

// BreakerState is the state of the vCenter circuit breaker.
//
//	           N consecutive failures
//	┌────────┐ ─────────────────────► ┌──────┐
//	│ Closed │                        │ Open │ ◄──┐
//	└────────┘ ◄───┐                  └──────┘    │ probe failed
//	               │ probe succeeded     │ probe   │
//	               │                     ▼ tick    │
//	               │                 ┌──────────┐  │
//	               └──────────────── │ HalfOpen │ ─┘
//	                                 └──────────┘
//
// Closed: jobs are taken; every failed vCenter call counts, a successful one resets the
// count. Open: no job is taken (CanAllocateResources refuses without calling vCenter, the
// framework's Gate says why, Status shows an AL line); the calls the loops still make do not
// close the circuit. HalfOpen: one probe (a narrow listing) is in flight; its result decides.
type BreakerState int

const (
	BreakerClosed BreakerState = iota
	BreakerOpen
	BreakerHalfOpen
)

func (s BreakerState) String() string {
	switch s {
	case BreakerClosed:
		return "closed"
	case BreakerOpen:
		return "open"
	case BreakerHalfOpen:
		return "half-open"
	}
	return fmt.Sprintf("BreakerState(%d)", int(s))
}

// Breaker is the vCenter circuit breaker: after repeated vCenter failures the hatchery stops
// taking jobs it could not serve, keeps heartbeating with an alert, and resumes by itself
// once a probe succeeds. A threshold of 0 turns it off (it never opens).
type Breaker struct {
	threshold int
	now       func() time.Time

	mu       sync.Mutex
	state    BreakerState
	failures int
	since    time.Time // when the circuit opened
	lastErr  string
}

// NewBreaker returns a closed breaker that opens after threshold consecutive failures.
func NewBreaker(threshold int, now func() time.Time) *Breaker {
	if now == nil {
		now = time.Now
	}
	return &Breaker{threshold: max(threshold, 0), now: now}
}

// Enabled tells whether the breaker can open at all.
func (b *Breaker) Enabled() bool { return b.threshold > 0 }

// Success records a vCenter call that worked. Only a closed circuit listens: an open one
// waits for its probe.
func (b *Breaker) Success() {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.state == BreakerClosed {
		b.failures = 0
	}
}

// Failure records a vCenter call that failed; the threshold-th consecutive one opens the
// circuit.
func (b *Breaker) Failure(err error) {
	if err == nil {
		return
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	b.lastErr = err.Error()
	if b.state != BreakerClosed || b.threshold == 0 {
		return
	}
	b.failures++
	if b.failures >= b.threshold {
		b.state, b.since = BreakerOpen, b.now()
	}
}

// State returns the current state.
func (b *Breaker) State() BreakerState {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.state
}

// Accepting tells whether jobs may be taken, and if not why.
func (b *Breaker) Accepting() (bool, string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.state == BreakerClosed {
		return true, ""
	}
	return false, fmt.Sprintf("circuit open since %s: %s", b.since.UTC().Format(time.RFC3339), b.lastErr)
}

// BeginProbe moves an open circuit to half-open and reports whether the caller must probe.
func (b *Breaker) BeginProbe() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.state != BreakerOpen {
		return false
	}
	b.state = BreakerHalfOpen
	return true
}

// EndProbe closes the circuit when the probe worked (err nil) and opens it again otherwise.
func (b *Breaker) EndProbe(err error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.state != BreakerHalfOpen {
		return
	}
	if err == nil {
		b.state, b.failures = BreakerClosed, 0
		return
	}
	b.lastErr = err.Error()
	b.state = BreakerOpen
}
