package vspherehatchery

import (
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"
)

// fakeClock is a settable clock for reservation expiry.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func newFakeClock() *fakeClock { return &fakeClock{t: time.Date(2025, 1, 10, 8, 0, 0, 0, time.UTC)} }

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

func ips(prefix string, from, to int) []string {
	var out []string
	for i := from; i <= to; i++ {
		out = append(out, fmt.Sprintf("%s%d", prefix, i))
	}
	return out
}

func TestIPPoolHandsOutFirstFreeInOrder(t *testing.T) {
	clock := newFakeClock()
	p := NewIPPool(ips("10.0.0.", 0, 3), clock.Now)
	// .0 is in an annotation, .1 is a guest IP: both used.
	ip, err := p.FindAndReserve("10.0.0.0", "10.0.0.1", "192.168.1.5")
	if err != nil || ip != "10.0.0.2" {
		t.Fatalf("got %q, %v; want 10.0.0.2", ip, err)
	}
	// The reservation holds while no VM shows the address yet.
	ip, err = p.FindAndReserve("10.0.0.0", "10.0.0.1")
	if err != nil || ip != "10.0.0.3" {
		t.Fatalf("got %q, %v; want 10.0.0.3", ip, err)
	}
	_, err = p.FindAndReserve("10.0.0.0", "10.0.0.1")
	if !errors.Is(err, ErrNoFreeIP) {
		t.Fatalf("exhausted pool: err = %v, want ErrNoFreeIP", err)
	}
	if p.HasFree("10.0.0.0", "10.0.0.1") {
		t.Fatal("HasFree true on an exhausted pool")
	}
}

func TestIPPoolReservationExpiresAfterFiveMinutes(t *testing.T) {
	clock := newFakeClock()
	p := NewIPPool([]string{"10.0.0.1"}, clock.Now)
	if _, err := p.FindAndReserve(); err != nil {
		t.Fatal(err)
	}
	clock.Advance(IPReservationTTL - time.Second)
	if p.HasFree() {
		t.Fatal("reservation dropped before 5 minutes")
	}
	clock.Advance(time.Second)
	if ip, err := p.FindAndReserve(); err != nil || ip != "10.0.0.1" {
		t.Fatalf("after expiry got %q, %v", ip, err)
	}
}

func TestIPPoolReservationDroppedWhenSeenInUse(t *testing.T) {
	clock := newFakeClock()
	p := NewIPPool([]string{"10.0.0.1", "10.0.0.2"}, clock.Now)
	ip, _ := p.FindAndReserve()
	if p.Reserved() != 1 {
		t.Fatalf("reserved = %d, want 1", p.Reserved())
	}
	// The clone now shows the address: the reservation is no longer needed...
	if !p.HasFree(ip) {
		t.Fatal("second address should be free")
	}
	if p.Reserved() != 0 {
		t.Fatalf("reservation of an address seen in use not dropped")
	}
	// ...and once the VM is gone the address is free again at once, not after 5 minutes.
	if got, err := p.FindAndReserve(); err != nil || got != ip {
		t.Fatalf("got %q, %v; want %q back", got, err, ip)
	}
}

func TestIPPoolRelease(t *testing.T) {
	p := NewIPPool([]string{"10.0.0.1"}, newFakeClock().Now)
	ip, err := p.FindAndReserve()
	if err != nil {
		t.Fatal(err)
	}
	p.Release(ip)
	if got, err := p.FindAndReserve(); err != nil || got != ip {
		t.Fatalf("after release got %q, %v", got, err)
	}
}

func TestIPPoolDisabledAndCounts(t *testing.T) {
	if NewIPPool(nil, nil).Enabled() {
		t.Fatal("pool without iprange is enabled")
	}
	if _, err := NewIPPool(nil, nil).FindAndReserve(); !errors.Is(err, ErrNoFreeIP) {
		t.Fatalf("disabled pool FindAndReserve err = %v", err)
	}
	p := NewIPPool(ips("10.0.0.", 1, 8), nil)
	used, total := p.Counts("10.0.0.1", "10.0.0.5", "10.0.0.5", "172.16.0.1")
	if used != 2 || total != 8 {
		t.Fatalf("counts = %d/%d, want 2/8", used, total)
	}
}

// TestIPPoolConcurrentNeverHandsOutTwice is the Q17 regression: many spawns racing for
// addresses each get a distinct one, the rest get ErrNoFreeIP, and nothing deadlocks.
func TestIPPoolConcurrentNeverHandsOutTwice(t *testing.T) {
	const candidates, workers = 50, 200
	p := NewIPPool(ips("10.1.0.", 1, candidates), newFakeClock().Now)
	var (
		wg    sync.WaitGroup
		mu    sync.Mutex
		got   = map[string]int{}
		empty int
	)
	for i := 0; i < workers; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ip, err := p.FindAndReserve("10.1.0.1")
			mu.Lock()
			defer mu.Unlock()
			switch {
			case errors.Is(err, ErrNoFreeIP):
				empty++
			case err != nil:
				t.Errorf("unexpected error %v", err)
			default:
				got[ip]++
			}
		}()
	}
	wg.Wait()
	for ip, n := range got {
		if n != 1 {
			t.Errorf("%s handed out %d times", ip, n)
		}
	}
	if len(got) != candidates-1 || empty != workers-(candidates-1) {
		t.Fatalf("handed out %d distinct, %d refused; want %d and %d", len(got), empty, candidates-1, workers-(candidates-1))
	}
}

func BenchmarkFindAndReserve(b *testing.B) {
	// A /22 (1,024 addresses) with 1,000 VMs showing an address each: the lookup cost a spawn
	// pays with a large fleet.
	var cands []string
	for i := 0; i < 1024; i++ {
		cands = append(cands, fmt.Sprintf("10.2.%d.%d", i/256, i%256))
	}
	used := cands[:1000]
	clock := newFakeClock()
	p := NewIPPool(cands, clock.Now)
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		ip, err := p.FindAndReserve(used...)
		if err != nil {
			b.Fatal(err)
		}
		p.Release(ip)
	}
}
