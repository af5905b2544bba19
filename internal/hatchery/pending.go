package hatchery

import (
	"sync"
	"time"
)

// pendingSet holds the IDs of the jobs this hatchery is already dealing with (protocol spec
// §7): discovered and queued for the main loop, being handled, or being started by a worker
// starter. Discovery never enqueues an ID that is in the set, and the check-and-add is one
// atomic step, so a job seen at the same time by the websocket and by polling is enqueued
// once.
//
// An entry may carry an expiry (the 10-minute job context of a v2 job, quirk Q9): an expired
// entry counts as absent.
type pendingSet struct {
	now func() time.Time

	mu      sync.Mutex
	entries map[string]time.Time // zero time: no expiry
}

func newPendingSet(now func() time.Time) *pendingSet {
	return &pendingSet{now: now, entries: make(map[string]time.Time)}
}

// add inserts id and tells whether it was absent (expired entries count as absent).
func (p *pendingSet) add(id string) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if exp, ok := p.entries[id]; ok && (exp.IsZero() || p.now().Before(exp)) {
		return false
	}
	p.entries[id] = time.Time{}
	return true
}

// has tells whether id is in the set and not expired.
func (p *pendingSet) has(id string) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	exp, ok := p.entries[id]
	if !ok {
		return false
	}
	if !exp.IsZero() && !p.now().Before(exp) {
		delete(p.entries, id)
		return false
	}
	return true
}

// expireAt makes the entry of id vanish at t (no-op when id is absent).
func (p *pendingSet) expireAt(id string, t time.Time) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if _, ok := p.entries[id]; ok {
		p.entries[id] = t
	}
}

// keep removes the expiry of id's entry, inserting it if needed: a job handed to a worker
// starter stays in the set until the starter is done with it.
func (p *pendingSet) keep(id string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.entries[id] = time.Time{}
}

func (p *pendingSet) remove(id string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	delete(p.entries, id)
}

// len counts the live entries.
func (p *pendingSet) len() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	now := p.now()
	n := 0
	for id, exp := range p.entries {
		if !exp.IsZero() && !now.Before(exp) {
			delete(p.entries, id)
			continue
		}
		n++
	}
	return n
}
