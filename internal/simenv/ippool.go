package simenv

import (
	"encoding/binary"
	"fmt"
	"net/netip"
)

// ipPool hands out the host addresses of one IPv4 block round-robin, like a DHCP server
// that prefers addresses nobody had recently. It is not safe for concurrent use: its
// owner (guestState) guards it.
type ipPool struct {
	first, last uint32 // usable host addresses, inclusive
	next        uint32
	inUse       map[uint32]bool
}

func newIPPool(cidr string) (*ipPool, error) {
	p, err := netip.ParsePrefix(cidr)
	if err != nil {
		return nil, fmt.Errorf("parse: %w", err)
	}
	p = p.Masked()
	if !p.Addr().Is4() {
		return nil, fmt.Errorf("not an IPv4 block")
	}
	if p.Bits() > 30 {
		return nil, fmt.Errorf("block /%d too small", p.Bits())
	}
	base := ipToUint(p.Addr())
	size := uint32(1) << (32 - p.Bits())
	// Network and broadcast addresses are never leased.
	return &ipPool{first: base + 1, last: base + size - 2, next: base + 1, inUse: make(map[uint32]bool)}, nil
}

// allocate returns a free address, skipping those taken says are used elsewhere; false
// when the pool is exhausted.
func (p *ipPool) allocate(taken func(string) bool) (string, bool) {
	n := p.last - p.first + 1
	for range n {
		ip := p.next
		if p.next == p.last {
			p.next = p.first
		} else {
			p.next++
		}
		s := uintToIP(ip).String()
		if p.inUse[ip] || taken(s) {
			continue
		}
		p.inUse[ip] = true
		return s, true
	}
	return "", false
}

func (p *ipPool) release(s string) {
	a, err := netip.ParseAddr(s)
	if err != nil || !a.Is4() {
		return
	}
	delete(p.inUse, ipToUint(a))
}

func ipToUint(a netip.Addr) uint32 {
	b := a.As4()
	return binary.BigEndian.Uint32(b[:])
}

func uintToIP(v uint32) netip.Addr {
	var b [4]byte
	binary.BigEndian.PutUint32(b[:], v)
	return netip.AddrFrom4(b)
}
