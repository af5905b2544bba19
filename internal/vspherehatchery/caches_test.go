package vspherehatchery

import (
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
)

func TestNameSet(t *testing.T) {
	s := NewNameSet()
	if !s.Add("b") || !s.Add("a") || s.Add("a") {
		t.Fatal("Add must report whether the name was absent")
	}
	if !s.Has("a") || s.Has("c") || s.Len() != 2 {
		t.Fatalf("unexpected content %v", s.List())
	}
	if got := s.List(); !slices.Equal(got, []string{"a", "b"}) {
		t.Fatalf("List = %v", got)
	}
	s.Remove("a")
	s.Remove("missing")
	if s.Has("a") || s.Len() != 1 {
		t.Fatalf("after Remove: %v", s.List())
	}
}

// TestNameSetClaimIsExclusive: many spawns racing to claim the same provisioned VM; exactly
// one wins.
func TestNameSetClaimIsExclusive(t *testing.T) {
	s := NewNameSet()
	var wins atomic.Int32
	var wg sync.WaitGroup
	for i := 0; i < 100; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if s.Add("provision-v2-abc") {
				wins.Add(1)
			}
			_ = s.Has("provision-v2-abc")
			_ = s.List()
		}()
	}
	wg.Wait()
	if wins.Load() != 1 {
		t.Fatalf("%d claims won, want exactly 1", wins.Load())
	}
}

func TestCachesConcurrentUse(t *testing.T) {
	c := NewCaches()
	var wg sync.WaitGroup
	for i := 0; i < 50; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			job := fmt.Sprint(i)
			vm := "provision-v1-" + job
			c.SpawnInProgress.Add(job)
			c.ProvisioningPending.Add(vm)
			if !c.ProvisionedBusy(vm) {
				t.Errorf("%s pending but not busy", vm)
			}
			c.ProvisioningPending.Remove(vm)
			if i%2 == 0 {
				c.ToDelete.Add(vm)
			}
			c.SpawnInProgress.Remove(job)
		}(i)
	}
	wg.Wait()
	if c.SpawnInProgress.Len() != 0 || c.ProvisioningPending.Len() != 0 || c.ToDelete.Len() != 25 {
		t.Fatalf("in progress %d, pending %d, to delete %d", c.SpawnInProgress.Len(), c.ProvisioningPending.Len(), c.ToDelete.Len())
	}
	if !c.ProvisionedBusy("provision-v1-0") || c.ProvisionedBusy("provision-v1-1") {
		t.Fatal("ToDelete must make a VM busy, and only it")
	}
	c.ProvisioningUsing.Add("provision-v1-1")
	if !c.ProvisionedBusy("provision-v1-1") {
		t.Fatal("a claimed VM must be busy")
	}
}
