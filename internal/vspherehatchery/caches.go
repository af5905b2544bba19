package vspherehatchery

import (
	"slices"
	"sync"
)

// NameSet is a set of names (VM names or job IDs) safe for concurrent use. The caches of the
// original (seed §10) are NameSets; they only speed decisions up and guard against races
// inside this process. The VM annotations stay the durable state, so losing them on restart
// is harmless.
type NameSet struct {
	mu    sync.Mutex
	names map[string]struct{}
}

// NewNameSet returns an empty set.
func NewNameSet() *NameSet { return &NameSet{names: make(map[string]struct{})} }

// Add adds name and reports whether it was absent: a true return is a claim nobody else
// holds, which is how a provisioned VM is reserved for one spawn.
func (s *NameSet) Add(name string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.names[name]; ok {
		return false
	}
	s.names[name] = struct{}{}
	return true
}

// Remove removes name (no-op when absent).
func (s *NameSet) Remove(name string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.names, name)
}

// Has tells whether name is in the set.
func (s *NameSet) Has(name string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	_, ok := s.names[name]
	return ok
}

// Len is the number of names.
func (s *NameSet) Len() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.names)
}

// List returns the names, sorted.
func (s *NameSet) List() []string {
	s.mu.Lock()
	out := make([]string, 0, len(s.names))
	for n := range s.names {
		out = append(out, n)
	}
	s.mu.Unlock()
	slices.Sort(out)
	return out
}

// Caches are the in-memory state of the provider (seed §10); the IP reservations live in
// IPPool.
type Caches struct {
	// SpawnInProgress holds the IDs of the jobs a spawn is running for (never two VMs for
	// one job; reused provisioned VMs carry no job_id, Q23).
	SpawnInProgress *NameSet
	// ToDelete holds the names of VMs marked for deletion by the next cleanup pass.
	ToDelete *NameSet
	// ProvisioningPending holds the names of provisioned VMs being created.
	ProvisioningPending *NameSet
	// ProvisioningUsing holds the names of provisioned VMs claimed by a spawn.
	ProvisioningUsing *NameSet
}

// NewCaches returns empty caches.
func NewCaches() *Caches {
	return &Caches{
		SpawnInProgress:     NewNameSet(),
		ToDelete:            NewNameSet(),
		ProvisioningPending: NewNameSet(),
		ProvisioningUsing:   NewNameSet(),
	}
}

// ProvisionedBusy tells whether a provisioned VM may not be reused now: still being
// created, marked for deletion or claimed by another spawn (for ProvisionedFilter.Skip).
func (c *Caches) ProvisionedBusy(name string) bool {
	return c.ProvisioningPending.Has(name) || c.ToDelete.Has(name) || c.ProvisioningUsing.Has(name)
}
