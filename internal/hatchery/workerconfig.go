package hatchery

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"

	"github.com/hatchery-vsphere/hatchery-vsphere/internal/config"
)

// WorkerConfigEnv is the guest environment variable carrying the worker configuration.
const WorkerConfigEnv = "CDS_CONFIG"

// WorkerConfig is the configuration handed to a worker (spec §16), read by the CDS worker
// from CDS_CONFIG. Keys and omission rules are the worker's, byte for byte.
type WorkerConfig struct {
	Name                     string            `json:"name"`
	Basedir                  string            `json:"basedir"`
	Log                      WorkerLogConfig   `json:"log"`
	HatcheryName             string            `json:"hatchery_name"`
	APIEndpoint              string            `json:"api_endpoint"`
	APIEndpointInsecure      bool              `json:"api_endpoint_insecure,omitempty"`
	APIToken                 string            `json:"api_token"`
	CDNEndpoint              string            `json:"cdn_endpoint"`
	GelfServiceAddr          string            `json:"gelf_service_addr"`
	GelfServiceAddrEnableTLS bool              `json:"gelf_service_addr_enable_tls,omitempty"`
	Model                    string            `json:"model"`
	BookedJobID              int64             `json:"booked_job_id,omitempty"`
	RunJobID                 string            `json:"run_job_id,omitempty"`
	Region                   string            `json:"region,omitempty"`
	InjectEnvVars            map[string]string `json:"inject_env_vars,omitempty"`
}

// WorkerLogConfig is the "log" object of the worker configuration. The worker decodes it
// into a struct without JSON tags, so the keys are Go field names and all are present.
type WorkerLogConfig struct {
	Level                      string
	Format                     string
	TextFields                 []string
	SkipTextFields             []string
	GraylogHost                string
	GraylogPort                string
	GraylogProtocol            string
	GraylogExtraKey            string
	GraylogExtraValue          string
	GraylogFieldCDSServiceType string
	GraylogFieldCDSServiceName string
	GraylogFieldCDSVersion     string
	GraylogFieldCDSOS          string
	GraylogFieldCDSArch        string
	SyslogHost                 string
	SyslogPort                 string
	SyslogProtocol             string
	SyslogExtraTag             string
}

// WorkerConfigInput is what BuildWorkerConfig needs for one worker.
type WorkerConfigInput struct {
	// Common is the hatchery's commonConfiguration.
	Common *config.CommonConfiguration
	// CDNURL, CDNTCPURL and CDNTCPEnableTLS are the CDN addresses the hatchery uses: the
	// configured ones, or those fetched from the API when not configured (spec §3.8).
	CDNURL          string
	CDNTCPURL       string
	CDNTCPEnableTLS bool

	WorkerName string
	// Token is the worker JWT (SignWorkerTokenV1 / SignWorkerTokenV2).
	Token string
	// Model is "<group>/<name>" for a v1 model, the model name for a v2 model (also for a v1
	// job running on a v2 model, quirk Q18).
	Model string
	// JobID is the v1 job ID; 0 for a v2 job or a registration.
	JobID int64
	// RunJobID is the v2 run job UUID; "" for v1.
	RunJobID string
	// V2Region is the region of a v2 job; v1 workers get provision.region instead.
	V2Region string
}

// BuildWorkerConfig builds the configuration of one worker. The returned warnings name the
// provision.injectEnvVars entries that were skipped (no "="); the caller logs them.
func BuildWorkerConfig(in WorkerConfigInput) (WorkerConfig, []string) {
	c := in.Common
	if c == nil {
		c = &config.CommonConfiguration{}
	}
	p := c.Provision
	logs := p.WorkerLogsOptions

	apiEndpoint, apiInsecure := c.API.HTTP.URL, c.API.HTTP.Insecure
	if p.WorkerAPIHTTP.URL != "" {
		apiEndpoint, apiInsecure = p.WorkerAPIHTTP.URL, p.WorkerAPIHTTP.Insecure
	}
	cdnEndpoint := in.CDNURL
	if p.WorkerCDN.URL != "" {
		cdnEndpoint = p.WorkerCDN.URL
	}
	gelfAddr, gelfTLS := in.CDNTCPURL, in.CDNTCPEnableTLS
	if p.WorkerCDN.TCP.URL != "" {
		gelfAddr, gelfTLS = p.WorkerCDN.TCP.URL, p.WorkerCDN.TCP.EnableTLS
	}
	region := p.Region
	if in.RunJobID != "" {
		region = in.V2Region
	}
	inject, warnings := ParseInjectEnvVars(p.InjectEnvVars)

	return WorkerConfig{
		Name:    in.WorkerName,
		Basedir: p.WorkerBasedir,
		Log: WorkerLogConfig{
			Level:                      logs.Level,
			GraylogHost:                logs.Graylog.Host,
			GraylogPort:                strconv.Itoa(logs.Graylog.Port),
			GraylogExtraKey:            logs.Graylog.ExtraKey,
			GraylogExtraValue:          logs.Graylog.ExtraValue,
			GraylogFieldCDSServiceType: "worker",
			GraylogFieldCDSServiceName: in.WorkerName,
			SyslogHost:                 logs.Syslog.Host,
			SyslogPort:                 strconv.Itoa(logs.Syslog.Port),
			SyslogProtocol:             logs.Syslog.Protocol,
			SyslogExtraTag:             logs.Syslog.ExtraTag,
		},
		HatcheryName:             c.Name,
		APIEndpoint:              apiEndpoint,
		APIEndpointInsecure:      apiInsecure,
		APIToken:                 in.Token,
		CDNEndpoint:              cdnEndpoint,
		GelfServiceAddr:          gelfAddr,
		GelfServiceAddrEnableTLS: gelfTLS,
		Model:                    in.Model,
		BookedJobID:              in.JobID,
		RunJobID:                 in.RunJobID,
		Region:                   region,
		InjectEnvVars:            inject,
	}, warnings
}

// ParseInjectEnvVars parses provision.injectEnvVars: each entry is split at its first "=".
// Entries without "=" are skipped and reported in the warnings (by index only: the entry
// may hold a secret). The map is nil when no entry is kept.
func ParseInjectEnvVars(entries []string) (map[string]string, []string) {
	var vars map[string]string
	var warnings []string
	for i, entry := range entries {
		key, value, ok := strings.Cut(entry, "=")
		if !ok {
			warnings = append(warnings, fmt.Sprintf("provision.injectEnvVars[%d]: no \"=\" in the entry, skipped", i))
			continue
		}
		if vars == nil {
			vars = make(map[string]string)
		}
		vars[key] = value
	}
	return vars, warnings
}

// Encode serialises the configuration as compact JSON in standard base64 with padding, the
// form of CDS_CONFIG and of {{.Config}}.
func (w WorkerConfig) Encode() (string, error) {
	b, err := json.Marshal(w)
	if err != nil {
		return "", fmt.Errorf("encode worker configuration of %q: %w", w.Name, err)
	}
	return base64.StdEncoding.EncodeToString(b), nil
}
