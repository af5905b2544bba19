package config

import (
	"encoding/json"
	"reflect"
	"sort"
	"strings"
	"testing"
)

// secretsTOML sets every secret of the configuration to a recognisable value.
func secretsTOML(t *testing.T) (string, []string) {
	extra := `
[log.graylog]
  extraValue = "secret-log-extra"
[hatchery.vsphere.commonConfiguration.provision.workerLogsOptions.graylog]
  extraValue = "secret-worker-extra"
[[hatchery.vsphere.guestCredentials]]
  modelVMWare = "debian12"
  username = "cds"
  password = "secret-guest-password"
`
	toml := strings.Replace(validTOML(t, ""), `token = "v1-secret-token"`, `token = "v1-secret-token"
      tokenV2 = "v2-secret-token"`, 1) + extra
	return toml, []string{"vcenter-secret", "v1-secret-token", "v2-secret-token", "secret-log-extra",
		"secret-worker-extra", "secret-guest-password", "PRIVATE KEY", strings.Split(testKey(t), "\n")[1]}
}

func TestRedactedHidesEverySecret(t *testing.T) {
	toml, secrets := secretsTOML(t)
	f := mustParse(t, toml)
	r := f.Redacted()
	dump, err := r.RedactedJSON()
	if err != nil {
		t.Fatal(err)
	}
	text := string(dump) + string(must(json.Marshal(r)))
	for _, s := range secrets {
		if strings.Contains(text, s) {
			t.Errorf("redacted output contains %q", s)
		}
	}
	if r.Hatchery.VSphere.Password != RedactedValue || r.Hatchery.VSphere.GuestCredentials[0].Password != RedactedValue {
		t.Errorf("secrets not replaced by %s", RedactedValue)
	}
	if r.Hatchery.VSphere.GuestCredentials[0].Username != "cds" || r.Hatchery.VSphere.User != "u" {
		t.Error("non-secrets were redacted")
	}
	// The copy is deep: the original keeps its secrets.
	if f.Hatchery.VSphere.GuestCredentials[0].Password != "secret-guest-password" || f.Hatchery.VSphere.Password != "vcenter-secret" {
		t.Error("Redacted modified the original")
	}
	// Empty secrets stay empty, so an operator sees what is unset.
	g := mustParse(t, "").Redacted()
	if g.Hatchery.VSphere.Password != "" || g.Hatchery.VSphere.CommonConfiguration.API.TokenV2 != "" {
		t.Error("empty secret shown as redacted")
	}
	if !strings.Contains(string(dump), `"guestCredentials":[{`) || !strings.Contains(string(dump), `"taskTimeout":600`) {
		t.Errorf("RedactedJSON lacks local keys: %s", dump)
	}
}

func must(b []byte, err error) []byte {
	if err != nil {
		panic(err)
	}
	return b
}

// jsonKeys lists the key paths of a JSON document ("a.b", arrays as "a[]").
func jsonKeys(prefix string, v any, out *[]string) {
	switch x := v.(type) {
	case map[string]any:
		for k, sub := range x {
			p := k
			if prefix != "" {
				p = prefix + "." + k
			}
			*out = append(*out, p)
			jsonKeys(p, sub, out)
		}
	case []any:
		for _, sub := range x {
			jsonKeys(prefix+"[]", sub, out)
		}
	}
}

func TestRegistrationConfigHasTheKeysOfTheProtocol(t *testing.T) {
	toml, secrets := secretsTOML(t)
	f := mustParse(t, toml)
	vs := &f.Hatchery.VSphere
	vs.IPRange, vs.Gateway, vs.DNS, vs.DefaultFlavor = "10.0.0.0/28", "10.0.0.1", "10.0.0.2", "small"
	vs.Flavors = []Flavor{{Name: "small", CPUs: 2, MemoryMB: 4096, DiskSizeGB: 20}}
	vs.WorkerProvisioning = []WorkerProvisioning{{ModelVMWare: "debian12", Number: 1}}
	vs.DefaultWorkerModelsV2 = []DefaultWorkerModelsV2{{WorkerModelV2: "P/g/o/r/m", Binaries: []string{"git"}}}
	vs.CommonConfiguration.Provision.InjectEnvVars = []string{"A=1"}

	b, err := f.RegistrationConfig()
	if err != nil {
		t.Fatal(err)
	}
	var doc any
	if err := json.Unmarshal(b, &doc); err != nil {
		t.Fatal(err)
	}
	var got []string
	jsonKeys("", doc, &got)
	sort.Strings(got)

	// Protocol spec §3.6, written out key by key.
	c := "commonConfiguration."
	p := c + "provision."
	want := []string{
		"commonConfiguration", c + "name", c + "osArch", c + "url",
		c + "http", c + "http.addr", c + "http.port", c + "http.header_w_forwarded_for",
		c + "api", c + "api.http", c + "api.http.url", c + "api.http.insecure", c + "api.requestTimeout", c + "api.maxHeartbeatFailures",
		c + "cdn", c + "cdn.url", c + "cdn.tcp", c + "cdn.tcp.enable_tls", c + "cdn.tcp.url",
		c + "provision", p + "maxWorker", p + "maxConcurrentProvisioning", p + "maxConcurrentRegistering",
		p + "registerFrequency", p + "region", p + "ignoreJobWithNoRegion",
		p + "workerApiHttp", p + "workerApiHttp.url", p + "workerApiHttp.insecure",
		p + "workerCdn", p + "workerCdn.url", p + "workerCdn.tcp", p + "workerCdn.tcp.enable_tls", p + "workerCdn.tcp.url",
		p + "workerBasedir", p + "workerLogsOptions", p + "workerLogsOptions.level",
		p + "workerLogsOptions.graylog", p + "workerLogsOptions.graylog.host", p + "workerLogsOptions.graylog.port",
		p + "workerLogsOptions.graylog.protocol", p + "workerLogsOptions.graylog.extraKey",
		p + "workerLogsOptions.syslog", p + "workerLogsOptions.syslog.host", p + "workerLogsOptions.syslog.port",
		p + "workerLogsOptions.syslog.protocol", p + "workerLogsOptions.syslog.extraTag",
		p + "maxAttemptsNumberBeforeFailure",
		c + "logOptions", c + "logOptions.spawnOptions", c + "logOptions.spawnOptions.thresholdCritical", c + "logOptions.spawnOptions.thresholdWarning",
		"user", "endpoint", "datacenterString", "datastoreString", "networkString", "cardName", "iprange", "gateway", "dns",
		"subnetMask", "workerTTL", "workerRegistrationTTL", "workerProvisioningInterval", "workerProvisioningPoolSize",
		"workerProvisioning", "workerProvisioning[].modelPath", "workerProvisioning[].modelVMWare", "workerProvisioning[].number",
		"maxCpus", "maxMemoryMB", "flavors", "flavors[].name", "flavors[].cpus", "flavors[].memoryMB",
		"defaultFlavor", "countSmallerFlavorToKeep",
	}
	sort.Strings(want)
	if !reflect.DeepEqual(got, want) {
		t.Errorf("registration config keys differ from §3.6\n got: %v\nwant: %v", got, want)
	}
	for _, s := range append(secrets, "A=1", "P/g/o/r/m") {
		if strings.Contains(string(b), s) {
			t.Errorf("registration config contains %q", s)
		}
	}

	// Empty optional keys are omitted, and unset lists are null, as in the original.
	f = mustParse(t, validTOML(t, ""))
	b, _ = f.RegistrationConfig()
	for _, k := range []string{`"iprange"`, `"gateway"`, `"dns"`, `"flavors"`, `"defaultFlavor"`} {
		if strings.Contains(string(b), k) {
			t.Errorf("empty %s not omitted: %s", k, b)
		}
	}
	if !strings.Contains(string(b), `"osArch":null`) || !strings.Contains(string(b), `"workerProvisioning":null`) {
		t.Errorf("unset lists are not null: %s", b)
	}
}

func TestNewExample(t *testing.T) {
	out, err := NewExample("", nil)
	if err != nil {
		t.Fatal(err)
	}
	text := string(out)
	f := mustParse(t, text)
	if len(f.UnknownKeys()) != 0 {
		t.Errorf("unknown keys in the example: %v", f.UnknownKeys())
	}
	if !strings.HasPrefix(f.Hatchery.VSphere.CommonConfiguration.Name, "cds-hatchery-vsphere-") {
		t.Errorf("name = %q", f.Hatchery.VSphere.CommonConfiguration.Name)
	}
	key, err := ParseRSAPrivateKey(f.Hatchery.VSphere.CommonConfiguration.RSAPrivateKey)
	if err != nil || key.N.BitLen() != 2048 || !strings.HasPrefix(f.Hatchery.VSphere.CommonConfiguration.RSAPrivateKey, "-----BEGIN RSA PRIVATE KEY-----") {
		t.Errorf("key: %v", err)
	}
	// Every value written is the documented default.
	want := Defaults()
	want.Hatchery.VSphere.CommonConfiguration.Name = f.Hatchery.VSphere.CommonConfiguration.Name
	want.Hatchery.VSphere.CommonConfiguration.RSAPrivateKey = f.Hatchery.VSphere.CommonConfiguration.RSAPrivateKey
	gotJSON, _ := f.RedactedJSON()
	wantJSON, _ := want.RedactedJSON()
	// Lists written as [] read back empty where the defaults have nil: compare as JSON
	// with empty lists normalised.
	norm := func(b []byte) string { return strings.ReplaceAll(string(b), "null", "[]") }
	if norm(gotJSON) != norm(wantJSON) {
		t.Errorf("example values differ from the defaults\n got: %s\nwant: %s", gotJSON, wantJSON)
	}
	// Every comment tag is written, above its key.
	for _, c := range []string{
		"# Maximum simultaneous workers (0: unlimited)\n        maxWorker = 10\n",
		"# vCenter user (mandatory)\n    # Fill this in.\n    user = \"\"\n",
		"# CDS API URL, without trailing slash (mandatory)\n          # Fill this in.\n          url = \"\"\n",
		"# Worker time to live (minutes)\n    workerTTL = 120\n",
		"# [[hatchery.vsphere.flavors]]\n    #   name = \"small\"\n",
		"# [[hatchery.vsphere.workerProvisioning]]\n",
		"# [[hatchery.vsphere.guestCredentials]]\n",
		"# [[hatchery.vsphere.defaultWorkerModelsV2]]\n",
	} {
		if !strings.Contains(text, c) {
			t.Errorf("example lacks %q", c)
		}
	}
	// Uncommenting a sample entry gives a valid entry.
	uncommented := strings.ReplaceAll(text, "    # [[hatchery.vsphere.flavors]]\n    #   name = \"small\"\n    #   cpus = 2\n    #   memoryMB = 4096\n",
		"[[hatchery.vsphere.flavors]]\nname = \"small\"\ncpus = 2\nmemoryMB = 4096\n")
	if g := mustParse(t, uncommented); len(g.Hatchery.VSphere.Flavors) != 1 {
		t.Errorf("uncommented flavor not read: %+v", g.Hatchery.VSphere.Flavors)
	}
}

func TestConfigExampleFileIsValid(t *testing.T) {
	f, err := Load("../../config.example.toml", nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Validate(); err != nil {
		t.Errorf("Validate: %v", err)
	}
	if len(f.UnknownKeys()) != 0 {
		t.Errorf("unknown keys: %v", f.UnknownKeys())
	}
	vs := f.Hatchery.VSphere
	if len(vs.Flavors) == 0 || len(vs.WorkerProvisioning) == 0 || len(vs.GuestCredentials) == 0 || vs.IPRange == "" {
		t.Errorf("the example lacks flavors, provisioning, guest credentials or an IP range: %+v", vs)
	}
}

func TestLoadRejectsKeysRepeatedWithAnotherCase(t *testing.T) {
	_, err := Parse([]byte("[hatchery.vsphere]\nuser = \"a\"\nUSER = \"b\"\n"), nil)
	if err == nil || !strings.Contains(err.Error(), "key given twice") {
		t.Errorf("err = %v", err)
	}
}
