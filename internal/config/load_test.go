package config

import (
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"strings"
	"sync"
	"testing"
)

var (
	testKeyOnce sync.Once
	testKeyPEM  string
)

// testKey is a PKCS#1 PEM key, generated once: 1024 bits keeps the tests fast.
func testKey(t testing.TB) string {
	t.Helper()
	testKeyOnce.Do(func() {
		k, err := rsa.GenerateKey(rand.Reader, 1024)
		if err != nil {
			panic(err)
		}
		testKeyPEM = string(pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(k)}))
	})
	return testKeyPEM
}

// validTOML is a minimal configuration that passes Validate, plus extra lines appended
// to the [hatchery.vsphere] table.
func validTOML(t testing.TB, extra string) string {
	return `
[hatchery.vsphere]
  user = "u"
  endpoint = "vcenter.example.net"
  password = "vcenter-secret"
  datacenterString = "DC1"
` + extra + `
  [hatchery.vsphere.commonConfiguration]
    name = "vsphere-a"
    rsaPrivateKey = """` + testKey(t) + `"""
    [hatchery.vsphere.commonConfiguration.api]
      token = "v1-secret-token"
      [hatchery.vsphere.commonConfiguration.api.http]
        url = "https://cds.example.net"
`
}

func mustParse(t *testing.T, toml string, environ ...string) *File {
	t.Helper()
	f, err := Parse([]byte(toml), environ)
	if err != nil {
		t.Fatalf("Parse: %v", err)
	}
	return f
}

func TestLoadAppliesDefaultsToAbsentKeys(t *testing.T) {
	f := mustParse(t, validTOML(t, ""))
	vs := f.Hatchery.VSphere
	p := vs.CommonConfiguration.Provision
	checks := []struct {
		name      string
		got, want any
	}{
		{"maxWorker", p.MaxWorker, 10},
		{"maxConcurrentProvisioning", p.MaxConcurrentProvisioning, 10},
		{"maxConcurrentRegistering", p.MaxConcurrentRegistering, 2},
		{"registerFrequency", p.RegisterFrequency, 60},
		{"maxAttemptsNumberBeforeFailure", p.MaxAttemptsNumberBeforeFailure, 5},
		{"workerLogsOptions.graylog.protocol", p.WorkerLogsOptions.Graylog.Protocol, "tcp"},
		{"http.port", vs.CommonConfiguration.HTTP.Port, 8086},
		{"url", vs.CommonConfiguration.URL, "http://localhost:8086"},
		{"api.requestTimeout", vs.CommonConfiguration.API.RequestTimeout, 10},
		{"api.maxHeartbeatFailures", vs.CommonConfiguration.API.MaxHeartbeatFailures, 10},
		{"cardName", vs.CardName, "e1000"},
		{"subnetMask", vs.SubnetMask, "255.255.255.0"},
		{"workerTTL", vs.WorkerTTL, 120},
		{"workerRegistrationTTL", vs.WorkerRegistrationTTL, 10},
		{"workerProvisioningInterval", vs.WorkerProvisioningInterval, 120},
		{"workerProvisioningPoolSize", vs.WorkerProvisioningPoolSize, 1},
		{"log.level", f.Log.Level, "info"},
		{"ReporteringPeriod", f.Telemetry.Exporters.Prometheus.ReporteringPeriod, 10},
		{"user (set)", vs.User, "u"},
	}
	for _, c := range checks {
		if c.got != c.want {
			t.Errorf("%s = %v, want %v", c.name, c.got, c.want)
		}
	}
	if err := f.Validate(); err != nil {
		t.Errorf("Validate: %v", err)
	}
}

func TestLoadKeepsExplicitZero(t *testing.T) {
	f := mustParse(t, `
[hatchery.vsphere]
  cardName = ""
  workerTTL = 0
  [hatchery.vsphere.commonConfiguration.provision]
    maxWorker = 0
    registerFrequency = 0
  [hatchery.vsphere.commonConfiguration.http]
    port = 0
`)
	vs := f.Hatchery.VSphere
	if vs.CommonConfiguration.Provision.MaxWorker != 0 || vs.CommonConfiguration.Provision.RegisterFrequency != 0 ||
		vs.CommonConfiguration.HTTP.Port != 0 || vs.CardName != "" || vs.WorkerTTL != 0 {
		t.Errorf("explicit zeros not kept: %+v", vs)
	}
	// The siblings of the explicit zeros still get their defaults.
	if vs.CommonConfiguration.Provision.MaxConcurrentProvisioning != 10 || vs.SubnetMask != "255.255.255.0" {
		t.Errorf("defaults of absent siblings missing: %+v", vs)
	}
	// An explicit 0 keeps the original's code-level meaning.
	if !vs.CommonConfiguration.Provision.Unlimited() || vs.WorkerTTLDuration().Minutes() != 120 || vs.CardNameOrDefault() != "e1000" {
		t.Errorf("effective values of zeros wrong")
	}
}

func TestLoadKeysAreCaseInsensitive(t *testing.T) {
	f := mustParse(t, `
[HATCHERY.VSPHERE]
  USER = "admin"
  DatacenterString = "DC9"
  [hatchery.vsphere.commonconfiguration.PROVISION]
    MAXWORKER = 3
  [[hatchery.vsphere.FLAVORS]]
    NAME = "small"
    CPUS = 2
    memorymb = 4096
`)
	vs := f.Hatchery.VSphere
	if vs.User != "admin" || vs.DatacenterString != "DC9" || vs.CommonConfiguration.Provision.MaxWorker != 3 {
		t.Errorf("case-insensitive keys not read: %+v", vs)
	}
	if len(vs.Flavors) != 1 || vs.Flavors[0] != (Flavor{Name: "small", CPUs: 2, MemoryMB: 4096}) {
		t.Errorf("flavors = %+v", vs.Flavors)
	}
}

func TestLoadIgnoresForeignSectionsAndReportsUnknownKeys(t *testing.T) {
	f := mustParse(t, `
[api]
  defaultOS = "linux"
  [api.database]
    port = "not even an int here"
[hatchery.openstack]
  user = "someone-else"
  [[hatchery.openstack.flavors]]
    x = 1
[cdn]
  url = "x"
[hatchery.vsphere]
  user = "mine"
  ipRnage = "10.0.0.0/24"
  [hatchery.vsphere.commonConfiguration.provision]
    maxWorkers = 3
`)
	if f.Hatchery.VSphere.User != "mine" {
		t.Errorf("user = %q", f.Hatchery.VSphere.User)
	}
	got := strings.Join(f.UnknownKeys(), ",")
	want := "hatchery.vsphere.commonConfiguration.provision.maxworkers,hatchery.vsphere.iprnage"
	if got != want {
		t.Errorf("UnknownKeys = %s, want %s", got, want)
	}
}

func TestLoadArraysOfTables(t *testing.T) {
	f := mustParse(t, validTOML(t, "")+`
  [[hatchery.vsphere.workerProvisioning]]
    modelVMWare = "debian12"
    number = 2
  [[hatchery.vsphere.workerProvisioning]]
    modelPath = "grp/model"
    number = 1
  [[hatchery.vsphere.guestCredentials]]
    modelVMWare = "debian12"
    username = "cds"
    password = "guest-secret"
  [[hatchery.vsphere.defaultWorkerModelsV2]]
    workerModelV2 = "PROJ/github/org/repo/model"
    binaries = ["docker", "git"]
  [[hatchery.vsphere.flavors]]
    name = "small"
    cpus = 2
    memoryMB = 4096
`)
	vs := f.Hatchery.VSphere
	if len(vs.WorkerProvisioning) != 2 || vs.WorkerProvisioning[1] != (WorkerProvisioning{ModelPath: "grp/model", Number: 1}) {
		t.Errorf("workerProvisioning = %+v", vs.WorkerProvisioning)
	}
	if len(vs.GuestCredentials) != 1 || vs.GuestCredentials[0].Password != "guest-secret" {
		t.Errorf("guestCredentials = %+v", vs.GuestCredentials)
	}
	if len(vs.DefaultWorkerModelsV2) != 1 || strings.Join(vs.DefaultWorkerModelsV2[0].Binaries, ",") != "docker,git" {
		t.Errorf("defaultWorkerModelsV2 = %+v", vs.DefaultWorkerModelsV2)
	}
	if len(vs.Flavors) != 1 || vs.Flavors[0].MemoryMB != 4096 {
		t.Errorf("flavors = %+v", vs.Flavors)
	}
	if err := f.Validate(); err != nil {
		t.Errorf("Validate: %v", err)
	}
}

func TestLoadReportsTypeErrorsWithTheirKey(t *testing.T) {
	_, err := Parse([]byte(`
[hatchery.vsphere]
  workerTTL = "soon"
  [hatchery.vsphere.commonConfiguration]
    osArch = [1.5, {a = 1}]
  [hatchery.vsphere.commonConfiguration.provision]
    maxWorker = true
    maxConcurrentProvisioning = "7"
  [[hatchery.vsphere.flavors]]
    name = "x"
    cpus = "many"
`), nil)
	if err == nil {
		t.Fatal("no error")
	}
	for _, want := range []string{
		`hatchery.vsphere.workerTTL: expected an integer, got "soon"`,
		"hatchery.vsphere.commonConfiguration.osArch: entry 1: expected a string, got a table",
		`hatchery.vsphere.flavors[0].cpus: expected an integer, got "many"`,
	} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q\ndoes not contain %q", err, want)
		}
	}
	// Lenient like the original: a quoted number is a number.
	if strings.Contains(err.Error(), "maxConcurrentProvisioning") {
		t.Errorf("a quoted integer was refused: %v", err)
	}
}

func TestLoadRejectsInvalidTOML(t *testing.T) {
	if _, err := Parse([]byte("[hatchery.vsphere\nuser = "), nil); err == nil {
		t.Error("no error for broken TOML")
	}
	if _, err := Load("/nonexistent/hatchery.toml", nil); err == nil {
		t.Error("no error for a missing file")
	}
}

func TestEnvOverrides(t *testing.T) {
	base := validTOML(t, `  iprange = "10.0.0.0/29"`)
	tests := []struct {
		name  string
		env   string
		check func(f *File) bool
	}{
		{"string, original name", "CDS_HATCHERY_VSPHERE_IPRANGE=10.1.0.0/28",
			func(f *File) bool { return f.Hatchery.VSphere.IPRange == "10.1.0.0/28" }},
		{"int, original name", "CDS_HATCHERY_VSPHERE_WORKERTTL=45",
			func(f *File) bool { return f.Hatchery.VSphere.WorkerTTL == 45 }},
		{"int of the original, absent from the file", "CDS_HATCHERY_VSPHERE_MAXCPUS=32",
			func(f *File) bool { return f.Hatchery.VSphere.MaxCPUs == 32 }},
		{"secret", "CDS_HATCHERY_VSPHERE_PASSWORD=from-env",
			func(f *File) bool { return f.Hatchery.VSphere.Password == "from-env" }},
		{"common key (fix of Q2)", "CDS_HATCHERY_VSPHERE_COMMONCONFIGURATION_API_TOKENV2=v2tok",
			func(f *File) bool { return f.Hatchery.VSphere.CommonConfiguration.API.TokenV2 == "v2tok" }},
		{"nested int", "CDS_HATCHERY_VSPHERE_COMMONCONFIGURATION_PROVISION_MAXWORKER=0",
			func(f *File) bool { return f.Hatchery.VSphere.CommonConfiguration.Provision.MaxWorker == 0 }},
		{"bool", "CDS_HATCHERY_VSPHERE_COMMONCONFIGURATION_API_HTTP_INSECURE=true",
			func(f *File) bool { return f.Hatchery.VSphere.CommonConfiguration.API.HTTP.Insecure }},
		{"log level", "CDS_LOG_LEVEL=debug",
			func(f *File) bool { return f.Log.Level == "debug" }},
		{"telemetry", "CDS_TELEMETRY_EXPORTERS_PROMETHEUS_REPORTERINGPERIOD=30",
			func(f *File) bool { return f.Telemetry.Exporters.Prometheus.ReporteringPeriod == 30 }},
		{"string list", "CDS_HATCHERY_VSPHERE_COMMONCONFIGURATION_OSARCH=linux/amd64, linux/arm64",
			func(f *File) bool {
				return strings.Join(f.Hatchery.VSphere.CommonConfiguration.OSArch, "|") == "linux/amd64|linux/arm64"
			}},
		{"string list as JSON (values with commas)", `CDS_HATCHERY_VSPHERE_COMMONCONFIGURATION_PROVISION_INJECTENVVARS=["A=1,2","B=3"]`,
			func(f *File) bool {
				return strings.Join(f.Hatchery.VSphere.CommonConfiguration.Provision.InjectEnvVars, "|") == "A=1,2|B=3"
			}},
		{"array of tables", `CDS_HATCHERY_VSPHERE_FLAVORS=[{"name":"small","cpus":2,"memoryMB":4096},{"NAME":"big","cpus":"8","memorymb":16384}]`,
			func(f *File) bool {
				fl := f.Hatchery.VSphere.Flavors
				return len(fl) == 2 && fl[0] == Flavor{Name: "small", CPUs: 2, MemoryMB: 4096} && fl[1] == Flavor{Name: "big", CPUs: 8, MemoryMB: 16384}
			}},
		{"empty value is no override", "CDS_HATCHERY_VSPHERE_IPRANGE=",
			func(f *File) bool { return f.Hatchery.VSphere.IPRange == "10.0.0.0/29" }},
		{"other variables ignored", "HATCHERY_VSPHERE_IPRANGE=1.2.3.4/32",
			func(f *File) bool { return f.Hatchery.VSphere.IPRange == "10.0.0.0/29" }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := mustParse(t, base, "PATH=/bin", tt.env)
			if !tt.check(f) {
				t.Errorf("%s not applied: %+v", tt.env, f.Hatchery.VSphere)
			}
		})
	}
}

func TestEnvOverrideErrorsNameTheVariable(t *testing.T) {
	tests := []struct{ env, want string }{
		{"CDS_HATCHERY_VSPHERE_WORKERTTL=abc", "CDS_HATCHERY_VSPHERE_WORKERTTL"},
		{"CDS_HATCHERY_VSPHERE_COMMONCONFIGURATION_API_HTTP_INSECURE=maybe", "CDS_HATCHERY_VSPHERE_COMMONCONFIGURATION_API_HTTP_INSECURE"},
		{`CDS_HATCHERY_VSPHERE_FLAVORS="small"`, "CDS_HATCHERY_VSPHERE_FLAVORS"},
		{`CDS_HATCHERY_VSPHERE_FLAVORS=[{"name":"x","cpus":"lots"}]`, "CDS_HATCHERY_VSPHERE_FLAVORS"},
		{`CDS_HATCHERY_VSPHERE_FLAVORS=[{"name":`, "CDS_HATCHERY_VSPHERE_FLAVORS"},
	}
	for _, tt := range tests {
		t.Run(tt.env, func(t *testing.T) {
			_, err := Parse([]byte(validTOML(t, "")), []string{tt.env})
			if err == nil || !strings.Contains(err.Error(), "environment variable "+tt.want) {
				t.Errorf("error = %v, want one naming %s", err, tt.want)
			}
		})
	}
}

func TestEffectiveValues(t *testing.T) {
	var p Provision
	if p.MaxConcurrentProvisioningOrDefault() != 10 || p.MaxConcurrentRegisteringOrDefault() != 2 || p.MaxAttempts() != 5 {
		t.Error("zero provision fallbacks wrong")
	}
	p = Provision{MaxConcurrentProvisioning: 3, MaxConcurrentRegistering: -1, MaxAttemptsNumberBeforeFailure: -1, RegisterFrequency: 60}
	if p.MaxConcurrentProvisioningOrDefault() != 3 || p.RegistrationEnabled() || p.MaxAttempts() != -1 {
		t.Error("explicit provision values wrong")
	}
	p = Provision{RegisterFrequency: 0}
	if p.RegistrationEnabled() || p.RegisterInterval() != 0 {
		t.Error("registerFrequency 0 must disable registration")
	}
	if (API{}).RequestTimeoutDuration().Seconds() != 60 || (API{RequestTimeout: 5}).RequestTimeoutDuration().Seconds() != 5 {
		t.Error("request timeout fallback wrong")
	}
	var vs VSphere
	if vs.WorkerRegistrationTTLDuration().Minutes() != 10 || vs.ProvisioningInterval().Seconds() != 120 || vs.ProvisioningPoolSize() != 1 {
		t.Error("vSphere fallbacks wrong")
	}
	vs.Flavors = []Flavor{{Name: "Large", CPUs: 8, MemoryMB: 1}}
	if fl, ok := vs.FindFlavor("lArGe"); !ok || fl.CPUs != 8 {
		t.Error("FindFlavor is not case-insensitive")
	}
	if _, ok := vs.FindFlavor("small"); ok {
		t.Error("FindFlavor found a missing flavor")
	}
}
