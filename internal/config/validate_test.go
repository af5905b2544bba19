package config

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"net/netip"
	"strings"
	"testing"
)

func TestValidateReportsEveryProblemWithItsKey(t *testing.T) {
	f := mustParse(t, `
[hatchery.vsphere]
  iprange = "10.0.0.0/33"
  gateway = "fe80::1"
  defaultFlavor = "huge"
  [hatchery.vsphere.commonConfiguration]
    rsaPrivateKey = "not a key"
    [hatchery.vsphere.commonConfiguration.api.http]
      url = "https://cds.example.net/"
  [hatchery.vsphere.commonConfiguration.provision]
    maxWorker = 2
    maxConcurrentProvisioning = 5
  [[hatchery.vsphere.flavors]]
    name = "small"
    cpus = 0
    memoryMB = 1024
  [[hatchery.vsphere.workerProvisioning]]
    number = 1
`)
	err := f.Validate()
	if err == nil {
		t.Fatal("Validate accepted a broken configuration")
	}
	for _, key := range []string{
		"hatchery.vsphere.user: is mandatory",
		"hatchery.vsphere.endpoint: is mandatory",
		"hatchery.vsphere.password: is mandatory",
		"hatchery.vsphere.datacenterString: is mandatory",
		"hatchery.vsphere.commonConfiguration.name: is mandatory",
		"hatchery.vsphere.commonConfiguration.api.token: ",
		"hatchery.vsphere.commonConfiguration.api.http.url: \"https://cds.example.net/\" must not end with /",
		"hatchery.vsphere.commonConfiguration.rsaPrivateKey: ",
		"hatchery.vsphere.commonConfiguration.provision.maxConcurrentProvisioning: 5 is greater than maxWorker (2)",
		"hatchery.vsphere.iprange: ",
		"hatchery.vsphere.gateway: ",
		"hatchery.vsphere.defaultFlavor: ",
		"hatchery.vsphere.flavors[0].cpus: ",
		"hatchery.vsphere.workerProvisioning[0]: one of modelPath",
	} {
		if !strings.Contains(err.Error(), key) {
			t.Errorf("missing problem %q in:\n%v", key, err)
		}
	}
	if n := len(strings.Split(err.Error(), "\n")); n != 14 {
		t.Errorf("%d problems reported, want 14:\n%v", n, err)
	}
}

func TestValidateRules(t *testing.T) {
	tests := []struct {
		name    string
		extra   string // appended to [hatchery.vsphere]
		mutate  func(f *File)
		wantErr string // "" = valid
	}{
		{name: "valid"},
		{name: "maxWorker 0 skips the concurrency checks", mutate: func(f *File) {
			p := &f.Hatchery.VSphere.CommonConfiguration.Provision
			p.MaxWorker, p.MaxConcurrentProvisioning, p.MaxConcurrentRegistering = 0, 50, 50
		}},
		{name: "negative maxWorker", mutate: func(f *File) { f.Hatchery.VSphere.CommonConfiguration.Provision.MaxWorker = -1 },
			wantErr: "provision.maxWorker: must not be negative"},
		{name: "registering above maxWorker", mutate: func(f *File) {
			f.Hatchery.VSphere.CommonConfiguration.Provision.MaxConcurrentRegistering = 11
		}, wantErr: "provision.maxConcurrentRegistering: 11 is greater than maxWorker (10)"},
		{name: "registering -1 is allowed", mutate: func(f *File) {
			f.Hatchery.VSphere.CommonConfiguration.Provision.MaxConcurrentRegistering = -1
		}},
		{name: "registering -2", mutate: func(f *File) {
			f.Hatchery.VSphere.CommonConfiguration.Provision.MaxConcurrentRegistering = -2
		}, wantErr: "maxConcurrentRegistering: must be -1 or more"},
		{name: "attempts -1 allowed", mutate: func(f *File) {
			f.Hatchery.VSphere.CommonConfiguration.Provision.MaxAttemptsNumberBeforeFailure = -1
		}},
		{name: "negative workerTTL", mutate: func(f *File) { f.Hatchery.VSphere.WorkerTTL = -5 },
			wantErr: "hatchery.vsphere.workerTTL: must not be negative"},
		{name: "port out of range", mutate: func(f *File) { f.Hatchery.VSphere.CommonConfiguration.HTTP.Port = 70000 },
			wantErr: "commonConfiguration.http.port: must be a TCP port"},
		{name: "only tokenV2", mutate: func(f *File) {
			f.Hatchery.VSphere.CommonConfiguration.API.Token = ""
			f.Hatchery.VSphere.CommonConfiguration.API.TokenV2 = "t"
		}},
		{name: "API URL without scheme", mutate: func(f *File) { f.Hatchery.VSphere.CommonConfiguration.API.HTTP.URL = "cds.example.net" },
			wantErr: "api.http.url: \"cds.example.net\" must start with http:// or https://"},
		{name: "worker API URL not http", mutate: func(f *File) {
			f.Hatchery.VSphere.CommonConfiguration.Provision.WorkerAPIHTTP.URL = "ftp://x"
		}, wantErr: "provision.workerApiHttp.url:"},
		{name: "osArch malformed", mutate: func(f *File) { f.Hatchery.VSphere.CommonConfiguration.OSArch = []string{"linux/amd64", "linux"} },
			wantErr: "commonConfiguration.osArch[1]: \"linux\" is not os/arch"},
		{name: "injectEnvVars without =", mutate: func(f *File) {
			f.Hatchery.VSphere.CommonConfiguration.Provision.InjectEnvVars = []string{"A=1", "B"}
		}, wantErr: "provision.injectEnvVars[1]"},
		{name: "fixed IP settings", extra: `iprange = "10.0.0.16/28, 10.0.1.0/29"
gateway = "10.0.0.1"
dns = "10.0.0.2"
subnetMask = "255.255.240.0"`},
		{name: "dns not IPv4", extra: `dns = "dns.example.net"`, wantErr: "hatchery.vsphere.dns: \"dns.example.net\" is not an IPv4 address"},
		{name: "subnet mask not contiguous", extra: `subnetMask = "255.0.255.0"`, wantErr: "hatchery.vsphere.subnetMask:"},
		{name: "iprange IPv6", extra: `iprange = "fd00::/120"`, wantErr: "hatchery.vsphere.iprange: \"fd00::/120\" is not an IPv4 block"},
		{name: "provisioning with both models", extra: `[[hatchery.vsphere.workerProvisioning]]
modelPath = "g/m"
modelVMWare = "debian12"
number = 1`, wantErr: "workerProvisioning[0]: modelPath (v1) and modelVMWare (v2) are both set"},
		{name: "provisioning modelPath not group/name", extra: `[[hatchery.vsphere.workerProvisioning]]
modelPath = "model"
number = 1`, wantErr: "workerProvisioning[0].modelPath: \"model\" is not group/name"},
		{name: "provisioning negative number", extra: `[[hatchery.vsphere.workerProvisioning]]
modelVMWare = "debian12"
number = -1`, wantErr: "workerProvisioning[0].number: must not be negative"},
		{name: "guest credentials without user", extra: `[[hatchery.vsphere.guestCredentials]]
modelVMWare = "debian12"
password = "x"`, wantErr: "guestCredentials[0].username: is mandatory"},
		{name: "default v2 model too short", extra: `[[hatchery.vsphere.defaultWorkerModelsV2]]
workerModelV2 = "PROJ/model"`, wantErr: "defaultWorkerModelsV2[0].workerModelV2:"},
		{name: "flavors", extra: `defaultFlavor = "SMALL"
[[hatchery.vsphere.flavors]]
name = "small"
cpus = 2
memoryMB = 4096`},
		{name: "duplicate flavor ignoring case", extra: `[[hatchery.vsphere.flavors]]
name = "small"
cpus = 2
memoryMB = 4096
[[hatchery.vsphere.flavors]]
name = "Small"
cpus = 4
memoryMB = 4096`, wantErr: "flavors[1].name: \"Small\" is already the name of flavors[0]"},
		{name: "empty flavor name and no memory", extra: `[[hatchery.vsphere.flavors]]
cpus = 2`, wantErr: "flavors[0].name: is mandatory\nhatchery.vsphere.flavors[0].memoryMB: must be greater than 0"},
		{name: "unknown default flavor", extra: `defaultFlavor = "medium"`, wantErr: "hatchery.vsphere.defaultFlavor: \"medium\" is not the name of a configured flavor"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := mustParse(t, validTOML(t, tt.extra))
			if tt.mutate != nil {
				tt.mutate(f)
			}
			err := f.Validate()
			switch {
			case tt.wantErr == "" && err != nil:
				t.Errorf("Validate: %v", err)
			case tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)):
				t.Errorf("Validate = %v, want %q", err, tt.wantErr)
			}
		})
	}
}

func TestParseIPRange(t *testing.T) {
	tests := []struct {
		in          string
		first, last string
		n           int
		wantErr     string
	}{
		{in: "10.0.0.16/28", first: "10.0.0.16", last: "10.0.0.31", n: 16},
		{in: "10.0.0.16/28,10.0.1.0/30", first: "10.0.0.16", last: "10.0.1.3", n: 20},
		{in: " 192.0.2.7/32 , 192.0.2.9/32", first: "192.0.2.7", last: "192.0.2.9", n: 2},
		{in: "10.0.0.17/28", first: "10.0.0.16", last: "10.0.0.31", n: 16},
		{in: "10.0.0.0/16", first: "10.0.0.0", last: "10.0.255.255", n: 65536},
		{in: "255.255.255.254/31", first: "255.255.255.254", last: "255.255.255.255", n: 2},
		{in: "10.0.0.0/29,10.0.0.4/30,10.0.0.8/31", first: "10.0.0.0", last: "10.0.0.9", n: 10},
		{in: "", wantErr: "empty IP range"},
		{in: "10.0.0.0/16,10.1.0.0/32", wantErr: "more than 65536 addresses in all"},
		{in: "10.0.0.0/24,", wantErr: "element 2 is empty"},
		{in: "10.0.0.1", wantErr: "not a CIDR block"},
		{in: "10.0.0.0/15", wantErr: "too large"},
		{in: "2001:db8::/126", wantErr: "not an IPv4 block"},
		{in: "::ffff:10.0.0.0/120", wantErr: "not an IPv4 block"},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := ParseIPRange(tt.in)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if len(got) != tt.n || got[0] != netip.MustParseAddr(tt.first) || got[len(got)-1] != netip.MustParseAddr(tt.last) {
				t.Errorf("got %d addresses %v..%v, want %d %s..%s", len(got), got[0], got[len(got)-1], tt.n, tt.first, tt.last)
			}
			for i := 1; i < len(got); i++ {
				if got[i] == got[i-1] {
					t.Fatalf("duplicate address %v", got[i])
				}
			}
		})
	}
}

func TestParseRSAPrivateKey(t *testing.T) {
	if _, err := ParseRSAPrivateKey(testKey(t)); err != nil {
		t.Errorf("PKCS#1: %v", err)
	}
	k, _ := ParseRSAPrivateKey(testKey(t))
	der, err := x509.MarshalPKCS8PrivateKey(k)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ParseRSAPrivateKey(string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}))); err != nil {
		t.Errorf("PKCS#8: %v", err)
	}
	ec, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	der, _ = x509.MarshalPKCS8PrivateKey(ec)
	if _, err := ParseRSAPrivateKey(string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}))); err == nil || !strings.Contains(err.Error(), "not an RSA key") {
		t.Errorf("EC key: err = %v", err)
	}
	if _, err := ParseRSAPrivateKey("-----BEGIN RSA PRIVATE KEY-----\nAAAA\n-----END RSA PRIVATE KEY-----\n"); err == nil {
		t.Error("garbage accepted")
	}
	if _, err := ParseRSAPrivateKey(""); err == nil {
		t.Error("empty accepted")
	}
}
