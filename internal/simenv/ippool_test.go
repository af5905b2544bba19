package simenv

import "testing"

func TestIPPoolLeasesHostAddressesOnceUntilReleased(t *testing.T) {
	p, err := newIPPool("10.9.0.0/30") // hosts .1 and .2 only
	if err != nil {
		t.Fatalf("newIPPool: %v", err)
	}
	none := func(string) bool { return false }
	a, okA := p.allocate(none)
	b, okB := p.allocate(none)
	if !okA || !okB || a != "10.9.0.1" || b != "10.9.0.2" {
		t.Fatalf("leases %q %q, want 10.9.0.1 and 10.9.0.2", a, b)
	}
	if ip, ok := p.allocate(none); ok {
		t.Fatalf("exhausted pool leased %q", ip)
	}
	p.release(a)
	if ip, ok := p.allocate(none); !ok || ip != a {
		t.Errorf("after release got %q, %v; want %q", ip, ok, a)
	}
}

func TestIPPoolSkipsAddressesTakenElsewhere(t *testing.T) {
	p, err := newIPPool("10.9.0.0/29")
	if err != nil {
		t.Fatalf("newIPPool: %v", err)
	}
	ip, ok := p.allocate(func(s string) bool { return s == "10.9.0.1" }) // a fixed IP of another VM
	if !ok || ip != "10.9.0.2" {
		t.Errorf("got %q, %v; want 10.9.0.2", ip, ok)
	}
}

func TestIPPoolRejectsBadRanges(t *testing.T) {
	for _, cidr := range []string{"", "nope", "10.0.0.1/31", "fd00::/64"} {
		if _, err := newIPPool(cidr); err == nil {
			t.Errorf("newIPPool(%q) accepted", cidr)
		}
	}
}
