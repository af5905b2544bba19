package config

import (
	"net/netip"
	"testing"
)

func FuzzParseIPRange(f *testing.F) {
	for _, s := range []string{"10.0.0.16/28", "10.0.0.16/28,10.0.1.0/29", "", ",", "10.0.0.0/16", "::1/128",
		"255.255.255.255/32", " 1.2.3.4/30 ,5.6.7.8/31", "1.2.3.4/-1", "0.0.0.0/0"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		addrs, err := ParseIPRange(s)
		if err != nil {
			return
		}
		if len(addrs) == 0 {
			t.Fatalf("%q: no error and no address", s)
		}
		for _, a := range addrs {
			if !a.Is4() {
				t.Fatalf("%q: non-IPv4 address %v", s, a)
			}
		}
		if len(addrs) > 1<<maxIPRangeBits {
			t.Fatalf("%q: %d addresses", s, len(addrs))
		}
		seen := make(map[netip.Addr]bool, len(addrs))
		for _, a := range addrs {
			if seen[a] {
				t.Fatalf("%q: %v listed twice", s, a)
			}
			seen[a] = true
		}
	})
}

func FuzzParse(f *testing.F) {
	f.Add([]byte(""))
	f.Add([]byte("[hatchery.vsphere]\nuser = 1\n[[hatchery.vsphere.flavors]]\nname = 2\n"))
	f.Add([]byte("[HATCHERY.vsphere.commonConfiguration.provision]\nmaxWorker = \"x\"\n[hatchery.VSPHERE]\nflavors = 3\n"))
	f.Add([]byte("hatchery = 1\nlog = [1, 2]\n"))
	f.Add([]byte("[hatchery.vsphere]\nflavors = [{name = \"a\", cpus = 1.5}]\nworkerTTL = 1e300\n"))
	f.Add([]byte("[hatchery.vsphere.commonConfiguration]\nosArch = [[1], {a = 2}]\nname = 1979-05-27T07:32:00Z\n"))
	f.Add([]byte("[a]\nb = 1\n[A]\nc = 2\n[a.B]\nd = 1\n[A.b]\ne = 3\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		cfg, err := Parse(data, []string{"CDS_HATCHERY_VSPHERE_WORKERTTL=5"})
		if err != nil {
			return
		}
		// Whatever loads can be validated, redacted and serialised without panicking.
		_ = cfg.Validate()
		if _, err := cfg.RedactedJSON(); err != nil {
			t.Fatalf("RedactedJSON: %v", err)
		}
		if _, err := cfg.RegistrationConfig(); err != nil {
			t.Fatalf("RegistrationConfig: %v", err)
		}
	})
}
