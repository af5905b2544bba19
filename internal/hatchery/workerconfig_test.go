package hatchery

import (
	"encoding/base64"
	"strings"
	"testing"

	"github.com/hatchery-vsphere/hatchery-vsphere/internal/config"
)

func workerConfigTestCommon() *config.CommonConfiguration {
	c := &config.CommonConfiguration{Name: "vsphere-a"}
	c.API.HTTP.URL = "https://cds-api.example"
	c.Provision.Region = "eu"
	c.Provision.InjectEnvVars = []string{"HTTP_PROXY=http://proxy:3128", "BROKEN", "OPTS=a=b"}
	c.Provision.WorkerLogsOptions.Graylog.Host = "gl.example"
	c.Provision.WorkerLogsOptions.Graylog.Port = 12202
	// Not forwarded to workers (spec §16).
	c.Provision.WorkerLogsOptions.Graylog.Protocol = "tcp"
	return c
}

const workerConfigLogGolden = `"log":{"Level":"","Format":"","TextFields":null,"SkipTextFields":null,` +
	`"GraylogHost":"gl.example","GraylogPort":"12202","GraylogProtocol":"","GraylogExtraKey":"","GraylogExtraValue":"",` +
	`"GraylogFieldCDSServiceType":"worker","GraylogFieldCDSServiceName":"%NAME%","GraylogFieldCDSVersion":"",` +
	`"GraylogFieldCDSOS":"","GraylogFieldCDSArch":"","SyslogHost":"","SyslogPort":"0","SyslogProtocol":"","SyslogExtraTag":""}`

func TestWorkerConfigGolden(t *testing.T) {
	logFor := func(name string) string { return strings.ReplaceAll(workerConfigLogGolden, "%NAME%", name) }
	tests := []struct {
		name string
		in   WorkerConfigInput
		want string
	}{
		{
			name: "v1 job",
			in: WorkerConfigInput{WorkerName: "calm-turing", Token: "h.p.s", Model: "mygroup/debian12", JobID: 98765,
				CDNURL: "https://cds-cdn.example", CDNTCPURL: "cds-cdn.example:8090"},
			want: `{"name":"calm-turing","basedir":"",` + logFor("calm-turing") + `,"hatchery_name":"vsphere-a",` +
				`"api_endpoint":"https://cds-api.example","api_token":"h.p.s","cdn_endpoint":"https://cds-cdn.example",` +
				`"gelf_service_addr":"cds-cdn.example:8090","model":"mygroup/debian12","booked_job_id":98765,"region":"eu",` +
				`"inject_env_vars":{"HTTP_PROXY":"http://proxy:3128","OPTS":"a=b"}}`,
		},
		{
			name: "v1 registration",
			in: WorkerConfigInput{WorkerName: "register-kind-noether", Token: "h.p.s", Model: "mygroup/debian12",
				CDNURL: "https://cds-cdn.example", CDNTCPURL: "cds-cdn.example:8090", CDNTCPEnableTLS: true},
			want: `{"name":"register-kind-noether","basedir":"",` + logFor("register-kind-noether") + `,"hatchery_name":"vsphere-a",` +
				`"api_endpoint":"https://cds-api.example","api_token":"h.p.s","cdn_endpoint":"https://cds-cdn.example",` +
				`"gelf_service_addr":"cds-cdn.example:8090","gelf_service_addr_enable_tls":true,"model":"mygroup/debian12","region":"eu",` +
				`"inject_env_vars":{"HTTP_PROXY":"http://proxy:3128","OPTS":"a=b"}}`,
		},
		{
			name: "v2 job",
			in: WorkerConfigInput{WorkerName: "brave-hopper", Token: "h.p.s", Model: "debian12-vsphere",
				RunJobID: "0b9a1f4e-3a3c-4c8e-9a50-4d5b3b3c2a11", V2Region: "fr",
				CDNURL: "https://cds-cdn.example", CDNTCPURL: "cds-cdn.example:8090"},
			want: `{"name":"brave-hopper","basedir":"",` + logFor("brave-hopper") + `,"hatchery_name":"vsphere-a",` +
				`"api_endpoint":"https://cds-api.example","api_token":"h.p.s","cdn_endpoint":"https://cds-cdn.example",` +
				`"gelf_service_addr":"cds-cdn.example:8090","model":"debian12-vsphere","run_job_id":"0b9a1f4e-3a3c-4c8e-9a50-4d5b3b3c2a11",` +
				`"region":"fr","inject_env_vars":{"HTTP_PROXY":"http://proxy:3128","OPTS":"a=b"}}`,
		},
		{
			name: "v1 job on a v2 model",
			in: WorkerConfigInput{WorkerName: "stoic-kirch", Token: "h.p.s", Model: "debian12-vsphere", JobID: 98766,
				CDNURL: "https://cds-cdn.example", CDNTCPURL: "cds-cdn.example:8090"},
			want: `{"name":"stoic-kirch","basedir":"",` + logFor("stoic-kirch") + `,"hatchery_name":"vsphere-a",` +
				`"api_endpoint":"https://cds-api.example","api_token":"h.p.s","cdn_endpoint":"https://cds-cdn.example",` +
				`"gelf_service_addr":"cds-cdn.example:8090","model":"debian12-vsphere","booked_job_id":98766,"region":"eu",` +
				`"inject_env_vars":{"HTTP_PROXY":"http://proxy:3128","OPTS":"a=b"}}`,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.in.Common = workerConfigTestCommon()
			cfg, warnings := BuildWorkerConfig(tt.in)
			if len(warnings) != 1 || !strings.Contains(warnings[0], "injectEnvVars[1]") || strings.Contains(warnings[0], "BROKEN") {
				t.Errorf("warnings = %q, want one naming entry 1 without its content", warnings)
			}
			encoded, err := cfg.Encode()
			if err != nil {
				t.Fatal(err)
			}
			raw, err := base64.StdEncoding.DecodeString(encoded)
			if err != nil {
				t.Fatalf("CDS_CONFIG is not standard base64: %v", err)
			}
			if string(raw) != tt.want {
				t.Errorf("CDS_CONFIG\n got %s\nwant %s", raw, tt.want)
			}
		})
	}
}

func TestWorkerConfigWorkerEndpoints(t *testing.T) {
	c := workerConfigTestCommon()
	c.API.HTTP.Insecure = true
	c.Provision.InjectEnvVars = nil
	c.Provision.Region = ""
	c.Provision.WorkerBasedir = "/var/lib/cds"

	// The hatchery's own endpoints, when the worker ones are not configured.
	cfg, warnings := BuildWorkerConfig(WorkerConfigInput{Common: c, WorkerName: "w", CDNURL: "http://cdn", CDNTCPURL: "cdn:8090", CDNTCPEnableTLS: true})
	if len(warnings) != 0 {
		t.Errorf("warnings = %q", warnings)
	}
	if cfg.APIEndpoint != "https://cds-api.example" || !cfg.APIEndpointInsecure || cfg.CDNEndpoint != "http://cdn" ||
		cfg.GelfServiceAddr != "cdn:8090" || !cfg.GelfServiceAddrEnableTLS || cfg.Basedir != "/var/lib/cds" {
		t.Errorf("hatchery endpoints not used: %+v", cfg)
	}
	if cfg.Region != "" || cfg.InjectEnvVars != nil {
		t.Errorf("region %q and inject %v should be empty", cfg.Region, cfg.InjectEnvVars)
	}

	// The worker endpoints win, each with its own TLS flag.
	c.Provision.WorkerAPIHTTP.URL = "https://cds-api.internal"
	c.Provision.WorkerCDN.URL = "https://cdn.internal"
	c.Provision.WorkerCDN.TCP.URL = "cdn.internal:8090"
	cfg, _ = BuildWorkerConfig(WorkerConfigInput{Common: c, WorkerName: "w", CDNURL: "http://cdn", CDNTCPURL: "cdn:8090", CDNTCPEnableTLS: true})
	if cfg.APIEndpoint != "https://cds-api.internal" || cfg.APIEndpointInsecure || cfg.CDNEndpoint != "https://cdn.internal" ||
		cfg.GelfServiceAddr != "cdn.internal:8090" || cfg.GelfServiceAddrEnableTLS {
		t.Errorf("worker endpoints not used: %+v", cfg)
	}
}

func TestParseInjectEnvVars(t *testing.T) {
	vars, warnings := ParseInjectEnvVars([]string{"A=1", "B==2", "C=", "NOPE", "A=3"})
	if len(vars) != 3 || vars["A"] != "3" || vars["B"] != "=2" || vars["C"] != "" {
		t.Errorf("vars = %v", vars)
	}
	if len(warnings) != 1 {
		t.Errorf("warnings = %q", warnings)
	}
	if vars, _ := ParseInjectEnvVars(nil); vars != nil {
		t.Errorf("no entries should give a nil map (omitted from CDS_CONFIG), got %v", vars)
	}
}
