package config

import (
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"net/netip"
	"net/url"
	"strings"
)

// Key paths used in validation messages.
const (
	vspherePath   = "hatchery.vsphere"
	commonPath    = vspherePath + ".commonConfiguration"
	provisionPath = commonPath + ".provision"
	apiPath       = commonPath + ".api"
)

// maxIPRangeBits bounds ParseIPRange: blocks of at most /16 and 65,536 addresses in all.
// More is almost certainly a typo and would cost memory for every candidate.
const maxIPRangeBits = 16

// Validate checks the configuration the way the original does at startup (protocol spec
// §20.6) plus type and range checks. It reports every problem at once, each prefixed
// with the full TOML path of its key.
func (f *File) Validate() error {
	v := validator{}
	vs := &f.Hatchery.VSphere
	cc := &vs.CommonConfiguration
	p := &cc.Provision

	// Counts and durations.
	v.nonNegative(provisionPath+".maxWorker", p.MaxWorker)
	v.nonNegative(provisionPath+".maxConcurrentProvisioning", p.MaxConcurrentProvisioning)
	v.atLeast(provisionPath+".maxConcurrentRegistering", p.MaxConcurrentRegistering, -1, "-1 disables registration")
	v.nonNegative(provisionPath+".registerFrequency", p.RegisterFrequency)
	v.atLeast(provisionPath+".maxAttemptsNumberBeforeFailure", p.MaxAttemptsNumberBeforeFailure, -1, "-1 disables the limit")
	if p.MaxWorker > 0 && p.MaxConcurrentProvisioning > p.MaxWorker {
		v.add(provisionPath+".maxConcurrentProvisioning", "%d is greater than maxWorker (%d)", p.MaxConcurrentProvisioning, p.MaxWorker)
	}
	if p.MaxWorker > 0 && p.MaxConcurrentRegistering > p.MaxWorker {
		v.add(provisionPath+".maxConcurrentRegistering", "%d is greater than maxWorker (%d)", p.MaxConcurrentRegistering, p.MaxWorker)
	}
	for i, e := range p.InjectEnvVars {
		if k, _, ok := strings.Cut(e, "="); !ok || k == "" {
			v.add(fmt.Sprintf("%s.injectEnvVars[%d]", provisionPath, i), "%q is not KEY=VALUE", e)
		}
	}
	v.nonNegative(apiPath+".requestTimeout", cc.API.RequestTimeout)
	v.nonNegative(apiPath+".maxHeartbeatFailures", cc.API.MaxHeartbeatFailures)
	v.port(commonPath+".http.port", cc.HTTP.Port)
	v.nonNegative(commonPath+".logOptions.spawnOptions.thresholdCritical", cc.LogOptions.SpawnOptions.ThresholdCritical)
	v.nonNegative(commonPath+".logOptions.spawnOptions.thresholdWarning", cc.LogOptions.SpawnOptions.ThresholdWarning)

	// CDS API and identity.
	switch {
	case cc.API.HTTP.URL == "":
		v.add(apiPath+".http.url", "is mandatory")
	default:
		v.httpURL(apiPath+".http.url", cc.API.HTTP.URL)
	}
	v.optionalHTTPURL(provisionPath+".workerApiHttp.url", p.WorkerAPIHTTP.URL)
	v.optionalHTTPURL(commonPath+".cdn.url", cc.CDN.URL)
	v.optionalHTTPURL(provisionPath+".workerCdn.url", p.WorkerCDN.URL)
	if cc.API.Token == "" && cc.API.TokenV2 == "" {
		v.add(apiPath+".token", "token and tokenV2 are both empty: at least one is required")
	}
	if cc.Name == "" {
		v.add(commonPath+".name", "is mandatory")
	}
	if cc.RSAPrivateKey == "" {
		v.add(commonPath+".rsaPrivateKey", "is mandatory")
	} else if _, err := ParseRSAPrivateKey(cc.RSAPrivateKey); err != nil {
		v.add(commonPath+".rsaPrivateKey", "%v", err)
	}
	for i, oa := range cc.OSArch {
		if os, arch, ok := strings.Cut(oa, "/"); !ok || os == "" || arch == "" {
			v.add(fmt.Sprintf("%s.osArch[%d]", commonPath, i), "%q is not os/arch (e.g. linux/amd64)", oa)
		}
	}

	// vCenter.
	for _, m := range []struct{ key, val string }{
		{"user", vs.User}, {"endpoint", vs.Endpoint}, {"password", vs.Password}, {"datacenterString", vs.DatacenterString},
	} {
		if m.val == "" {
			v.add(vspherePath+"."+m.key, "is mandatory")
		}
	}
	v.nonNegative(vspherePath+".workerTTL", vs.WorkerTTL)
	v.nonNegative(vspherePath+".workerRegistrationTTL", vs.WorkerRegistrationTTL)
	v.nonNegative(vspherePath+".workerProvisioningInterval", vs.WorkerProvisioningInterval)
	v.nonNegative(vspherePath+".workerProvisioningPoolSize", vs.WorkerProvisioningPoolSize)
	v.nonNegative(vspherePath+".maxCpus", vs.MaxCPUs)
	v.nonNegative(vspherePath+".maxMemoryMB", vs.MaxMemoryMB)
	v.nonNegative(vspherePath+".countSmallerFlavorToKeep", vs.CountSmallerFlavorToKeep)
	v.nonNegative(vspherePath+".taskTimeout", vs.TaskTimeout)
	v.nonNegative(vspherePath+".callTimeout", vs.CallTimeout)

	// Fixed IPs.
	if vs.IPRange != "" {
		if _, err := ParseIPRange(vs.IPRange); err != nil {
			v.add(vspherePath+".iprange", "%v", err)
		}
	}
	v.optionalIPv4(vspherePath+".gateway", vs.Gateway)
	v.optionalIPv4(vspherePath+".dns", vs.DNS)
	if vs.SubnetMask != "" {
		if !isNetmask(vs.SubnetMask) {
			v.add(vspherePath+".subnetMask", "%q is not an IPv4 subnet mask", vs.SubnetMask)
		}
	}

	// Arrays of tables.
	for i, wp := range vs.WorkerProvisioning {
		key := fmt.Sprintf("%s.workerProvisioning[%d]", vspherePath, i)
		switch {
		case wp.ModelPath == "" && wp.ModelVMWare == "":
			v.add(key, "one of modelPath (v1) or modelVMWare (v2) is required")
		case wp.ModelPath != "" && wp.ModelVMWare != "":
			v.add(key, "modelPath (v1) and modelVMWare (v2) are both set: one entry serves one model")
		}
		v.modelPath(key+".modelPath", wp.ModelPath)
		v.nonNegative(key+".number", wp.Number)
	}
	for i, gc := range vs.GuestCredentials {
		key := fmt.Sprintf("%s.guestCredentials[%d]", vspherePath, i)
		if gc.ModelPath == "" && gc.ModelVMWare == "" {
			v.add(key, "one of modelPath (v1) or modelVMWare (v2) is required")
		}
		v.modelPath(key+".modelPath", gc.ModelPath)
		if gc.Username == "" {
			v.add(key+".username", "is mandatory")
		}
	}
	for i, dm := range vs.DefaultWorkerModelsV2 {
		key := fmt.Sprintf("%s.defaultWorkerModelsV2[%d].workerModelV2", vspherePath, i)
		ref, _, _ := strings.Cut(dm.WorkerModelV2, "@")
		switch {
		case dm.WorkerModelV2 == "":
			v.add(key, "is mandatory")
		case len(strings.Split(ref, "/")) < 4:
			v.add(key, "%q is not <projKey>/<vcs>/<repo>/<model>[@<branch>]", dm.WorkerModelV2)
		}
	}
	seen := make(map[string]int, len(vs.Flavors))
	for i, fl := range vs.Flavors {
		key := fmt.Sprintf("%s.flavors[%d]", vspherePath, i)
		if fl.Name == "" {
			v.add(key+".name", "is mandatory")
		} else if j, dup := seen[strings.ToLower(fl.Name)]; dup {
			v.add(key+".name", "%q is already the name of flavors[%d] (names are case-insensitive)", fl.Name, j)
		} else {
			seen[strings.ToLower(fl.Name)] = i
		}
		if fl.CPUs <= 0 {
			v.add(key+".cpus", "must be greater than 0, got %d", fl.CPUs)
		}
		if fl.MemoryMB <= 0 {
			v.add(key+".memoryMB", "must be greater than 0, got %d", fl.MemoryMB)
		}
		v.nonNegative(key+".diskSizeGB", fl.DiskSizeGB)
	}
	if vs.DefaultFlavor != "" {
		if _, ok := vs.FindFlavor(vs.DefaultFlavor); !ok {
			v.add(vspherePath+".defaultFlavor", "%q is not the name of a configured flavor", vs.DefaultFlavor)
		}
	}

	// Process settings.
	v.nonNegative("telemetry.Exporters.Prometheus.ReporteringPeriod", f.Telemetry.Exporters.Prometheus.ReporteringPeriod)
	return errors.Join(v.errs...)
}

type validator struct {
	errs []error
}

func (v *validator) add(key, format string, args ...any) {
	v.errs = append(v.errs, fmt.Errorf("%s: %s", key, fmt.Sprintf(format, args...)))
}

func (v *validator) nonNegative(key string, n int) {
	if n < 0 {
		v.add(key, "must not be negative, got %d", n)
	}
}

func (v *validator) atLeast(key string, n, lowest int, why string) {
	if n < lowest {
		v.add(key, "must be %d or more (%s), got %d", lowest, why, n)
	}
}

func (v *validator) port(key string, n int) {
	if n < 0 || n > 65535 {
		v.add(key, "must be a TCP port (0 to 65535), got %d", n)
	}
}

// httpURL checks the CDS API URL: the client appends paths to it, so a trailing slash
// would double it.
func (v *validator) httpURL(key, s string) {
	if v.baseURL(key, s) && strings.HasSuffix(s, "/") {
		v.add(key, "%q must not end with /", s)
	}
}

func (v *validator) optionalHTTPURL(key, s string) {
	if s != "" {
		v.baseURL(key, s)
	}
}

// baseURL checks that s is an absolute http(s) URL with a host.
func (v *validator) baseURL(key, s string) bool {
	u, err := url.Parse(s)
	switch {
	case err != nil:
		v.add(key, "%q is not a URL: %v", s, err)
	case u.Scheme != "http" && u.Scheme != "https":
		v.add(key, "%q must start with http:// or https://", s)
	case u.Host == "":
		v.add(key, "%q has no host", s)
	default:
		return true
	}
	return false
}

func (v *validator) optionalIPv4(key, s string) {
	if s == "" {
		return
	}
	if a, err := netip.ParseAddr(s); err != nil || !a.Is4() {
		v.add(key, "%q is not an IPv4 address", s)
	}
}

func (v *validator) modelPath(key, s string) {
	if s == "" {
		return
	}
	group, name, ok := strings.Cut(s, "/")
	if !ok || group == "" || name == "" || strings.Contains(name, "/") {
		v.add(key, "%q is not group/name", s)
	}
}

// isNetmask tells whether s is a dotted IPv4 mask of contiguous leading ones.
func isNetmask(s string) bool {
	a, err := netip.ParseAddr(s)
	if err != nil || !a.Is4() {
		return false
	}
	b := a.As4()
	m := uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3])
	inv := ^m
	return inv&(inv+1) == 0
}

// ParseIPRange expands iprange (comma-separated IPv4 CIDRs, e.g.
// "10.0.0.16/28,10.0.1.0/29") into every address of each block, in order, network and
// broadcast addresses included (protocol spec §18.12). Spaces around elements are
// ignored; an address in overlapping blocks is listed once. IPv6 blocks, empty elements,
// blocks larger than /16 and more than 65,536 addresses in all are errors.
func ParseIPRange(s string) ([]netip.Addr, error) {
	if strings.TrimSpace(s) == "" {
		return nil, errors.New("empty IP range")
	}
	var addrs []netip.Addr
	seen := make(map[netip.Addr]bool)
	for i, elem := range strings.Split(s, ",") {
		elem = strings.TrimSpace(elem)
		if elem == "" {
			return nil, fmt.Errorf("element %d is empty", i+1)
		}
		prefix, err := netip.ParsePrefix(elem)
		if err != nil {
			return nil, fmt.Errorf("%q is not a CIDR block (e.g. 10.0.0.16/28): %w", elem, err)
		}
		if !prefix.Addr().Is4() {
			return nil, fmt.Errorf("%q is not an IPv4 block", elem)
		}
		if prefix.Bits() < 32-maxIPRangeBits {
			return nil, fmt.Errorf("%q is too large: at most /%d (%d addresses) per block", elem, 32-maxIPRangeBits, 1<<maxIPRangeBits)
		}
		// A block written with host bits set (10.0.0.17/28) means the block containing it.
		prefix = prefix.Masked()
		if len(addrs)+1<<(32-prefix.Bits()) > 1<<maxIPRangeBits {
			return nil, fmt.Errorf("more than %d addresses in all", 1<<maxIPRangeBits)
		}
		for a := prefix.Addr(); a.IsValid() && prefix.Contains(a); a = a.Next() {
			// Overlapping blocks list an address once, at its first place.
			if !seen[a] {
				seen[a] = true
				addrs = append(addrs, a)
			}
		}
	}
	return addrs, nil
}

// ParseRSAPrivateKey parses a PEM RSA private key, PKCS#1 ("RSA PRIVATE KEY") or PKCS#8
// ("PRIVATE KEY").
func ParseRSAPrivateKey(pemText string) (*rsa.PrivateKey, error) {
	block, _ := pem.Decode([]byte(pemText))
	if block == nil {
		return nil, errors.New("no PEM block found (expected -----BEGIN RSA PRIVATE KEY-----)")
	}
	if key, err := x509.ParsePKCS1PrivateKey(block.Bytes); err == nil {
		return key, nil
	}
	parsed, err := x509.ParsePKCS8PrivateKey(block.Bytes)
	if err != nil {
		return nil, fmt.Errorf("PEM block %q is neither a PKCS#1 nor a PKCS#8 private key: %w", block.Type, err)
	}
	key, ok := parsed.(*rsa.PrivateKey)
	if !ok {
		return nil, fmt.Errorf("private key is a %T, not an RSA key", parsed)
	}
	return key, nil
}
