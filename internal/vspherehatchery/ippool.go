package vspherehatchery

import (
	"errors"
	"fmt"
	"sync"
	"time"
)

// ErrNoFreeIP is returned when every address of iprange is used by a VM or reserved by a
// spawn in flight.
var ErrNoFreeIP = errors.New("no free IP address in iprange")

// IPReservationTTL is how long a handed-out address stays reserved when no VM shows it
// (protocol spec §18.10): long enough for a clone to appear in the inventory.
const IPReservationTTL = 5 * time.Minute

// IPPool hands out the fixed addresses of iprange (protocol spec §18.12). An address is free
// when no VM uses it (annotation ip_address or guest IP) and no spawn has reserved it.
//
// Finding and reserving are one step under one mutex (fix of Q17: the original looked up and
// reserved in two steps, and a race between two spawns left its mutex locked for good).
// Reservations expire by the injected clock instead of one goroutine per reservation.
type IPPool struct {
	candidates []string
	ttl        time.Duration
	now        func() time.Time

	mu       sync.Mutex
	reserved map[string]time.Time // address -> expiry
}

// NewIPPool builds a pool over the candidate addresses, in the order they are handed out
// (config.ParseIPRange order). An empty candidate list is a disabled pool: DHCP mode.
func NewIPPool(candidates []string, now func() time.Time) *IPPool {
	if now == nil {
		now = time.Now
	}
	return &IPPool{
		candidates: append([]string(nil), candidates...),
		ttl:        IPReservationTTL,
		now:        now,
		reserved:   make(map[string]time.Time),
	}
}

// Enabled tells whether iprange is configured; without it VMs get their address by DHCP.
func (p *IPPool) Enabled() bool { return len(p.candidates) > 0 }

// FindAndReserve returns the first candidate address that is neither in used nor reserved,
// and reserves it. used are the addresses the inventory shows (Inventory.UsedIPs); a
// reservation whose address shows up in used has done its job and is dropped.
func (p *IPPool) FindAndReserve(used ...string) (string, error) {
	set := toSet(used)
	p.mu.Lock()
	defer p.mu.Unlock()
	p.refreshLocked(set)
	for _, ip := range p.candidates {
		if _, inUse := set[ip]; inUse {
			continue
		}
		if _, taken := p.reserved[ip]; taken {
			continue
		}
		p.reserved[ip] = p.now().Add(p.ttl)
		return ip, nil
	}
	return "", fmt.Errorf("%w: %d addresses, %d used, %d reserved", ErrNoFreeIP, len(p.candidates), p.countUsed(set), len(p.reserved))
}

// HasFree tells whether FindAndReserve would succeed now, without reserving anything.
func (p *IPPool) HasFree(used ...string) bool {
	set := toSet(used)
	p.mu.Lock()
	defer p.mu.Unlock()
	p.refreshLocked(set)
	for _, ip := range p.candidates {
		_, inUse := set[ip]
		_, taken := p.reserved[ip]
		if !inUse && !taken {
			return true
		}
	}
	return false
}

// Release drops the reservation of ip, e.g. when the clone it was reserved for failed.
func (p *IPPool) Release(ip string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	delete(p.reserved, ip)
}

// Counts returns how many candidate addresses the inventory shows in use, and how many
// candidates there are (the ip_used_count and ip_total_count metrics).
func (p *IPPool) Counts(used ...string) (inUse, total int) {
	return p.countUsed(toSet(used)), len(p.candidates)
}

// Reserved returns the number of live reservations.
func (p *IPPool) Reserved() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.refreshLocked(nil)
	return len(p.reserved)
}

// refreshLocked drops expired reservations and those of addresses now seen in use.
func (p *IPPool) refreshLocked(used map[string]struct{}) {
	now := p.now()
	for ip, expiry := range p.reserved {
		_, inUse := used[ip]
		if inUse || !now.Before(expiry) {
			delete(p.reserved, ip)
		}
	}
}

func (p *IPPool) countUsed(used map[string]struct{}) int {
	n := 0
	for _, ip := range p.candidates {
		if _, ok := used[ip]; ok {
			n++
		}
	}
	return n
}

func toSet(ss []string) map[string]struct{} {
	set := make(map[string]struct{}, len(ss))
	for _, s := range ss {
		set[s] = struct{}{}
	}
	return set
}
