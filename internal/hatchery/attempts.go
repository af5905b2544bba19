package hatchery

import (
	"sync"
	"time"
)

// Attempt cache numbers of protocol spec §12.4.
const (
	attemptTTL         = time.Hour
	defaultMaxAttempts = 5
)

// attemptCounter counts, per job ID, how many times this hatchery handled a job within the
// last hour (§12.4). Entries expire one hour after their creation; expired entries are
// dropped lazily, which replaces the original's 2-hour cleanup pass.
type attemptCounter struct {
	now func() time.Time

	mu      sync.Mutex
	entries map[string]attemptEntry
}

type attemptEntry struct {
	count   int
	expires time.Time
}

func newAttemptCounter(now func() time.Time) *attemptCounter {
	return &attemptCounter{now: now, entries: make(map[string]attemptEntry)}
}

// inc increments the counter of id with the original's quirky semantics (kept, Q14): an
// absent key is created with value 1 but the call returns 0; otherwise the incremented value
// is returned.
func (a *attemptCounter) inc(id string) int {
	a.mu.Lock()
	defer a.mu.Unlock()
	now := a.now()
	a.pruneLocked(now)
	e, ok := a.entries[id]
	if !ok {
		a.entries[id] = attemptEntry{count: 1, expires: now.Add(attemptTTL)}
		return 0
	}
	e.count++
	a.entries[id] = e
	return e.count
}

// get returns the stored value of id (0 when absent or expired).
func (a *attemptCounter) get(id string) int {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.pruneLocked(a.now())
	return a.entries[id].count
}

func (a *attemptCounter) pruneLocked(now time.Time) {
	for id, e := range a.entries {
		if !now.Before(e.expires) {
			delete(a.entries, id)
		}
	}
}

// maxAttempts is the configured maximum: -1 (or below) disables the mechanism (ok=false),
// 0 means 5.
func maxAttempts(configured int) (max int, ok bool) {
	switch {
	case configured < 0:
		return 0, false
	case configured == 0:
		return defaultMaxAttempts, true
	}
	return configured, true
}
