// Package config is the configuration of hatchery-vsphere: the CDS engine TOML tree the
// original hatchery reads ([hatchery.vsphere] and its commonConfiguration subtree, plus the
// engine-wide [log] and [telemetry] sections), its defaults, its environment overrides, its
// validation and its redacted printing.
//
// Struct tags:
//   - mapstructure / toml: the TOML key, matched case-insensitively when loading;
//   - json: the key of the configuration object sent to the CDS API at registration
//     (protocol spec §3.6), "-" for what is never sent (secrets, local-only settings);
//   - default: the value an absent key takes (fix of quirk Q1: the original left them zero);
//   - comment: the text written above the key by `config new`.
package config

// File is a whole CDS engine configuration file. Sections of other services ([api],
// [hatchery.openstack], ...) are accepted and ignored.
type File struct {
	Log       Log       `mapstructure:"log" toml:"log" json:"log"`
	Telemetry Telemetry `mapstructure:"telemetry" toml:"telemetry" json:"telemetry"`
	Hatchery  Hatchery  `mapstructure:"hatchery" toml:"hatchery" json:"hatchery"`

	// unknownKeys are the keys of our sections that match no field (see UnknownKeys).
	unknownKeys []string
}

// Hatchery is the [hatchery] table; only its vsphere service is ours.
type Hatchery struct {
	VSphere VSphere `mapstructure:"vsphere" toml:"vsphere" json:"vsphere"`
}

// Log is the engine-wide [log] section.
type Log struct {
	Level          string     `mapstructure:"level" toml:"level" json:"level" default:"info" comment:"debug, info, warning or error"`
	Format         string     `mapstructure:"format" toml:"format" json:"format" default:"text" comment:"text, json or discard"`
	TextFields     []string   `mapstructure:"textFields" toml:"textFields" json:"textFields" comment:"Text format: fields to display (empty: all)"`
	SkipTextFields []string   `mapstructure:"skipTextFields" toml:"skipTextFields" json:"skipTextFields" comment:"Text format: skip lines carrying one of these field=value entries"`
	Graylog        LogGraylog `mapstructure:"graylog" toml:"graylog" json:"graylog"`
}

// LogGraylog is the optional GELF output of the process logs. Accepted for compatibility;
// hatchery-vsphere logs to standard output only.
type LogGraylog struct {
	Host       string `mapstructure:"host" toml:"host" json:"host"`
	Port       int    `mapstructure:"port" toml:"port" json:"port"`
	Protocol   string `mapstructure:"protocol" toml:"protocol" json:"protocol" default:"tcp"`
	ExtraKey   string `mapstructure:"extraKey" toml:"extraKey" json:"extraKey"`
	ExtraValue string `mapstructure:"extraValue" toml:"extraValue" json:"-"`
}

// Telemetry is the engine-wide [telemetry] section.
type Telemetry struct {
	TracingEnabled bool               `mapstructure:"tracingEnabled" toml:"tracingEnabled" json:"tracingEnabled"`
	Exporters      TelemetryExporters `mapstructure:"Exporters" toml:"Exporters" json:"Exporters"`
}

// TelemetryExporters holds the tracing and metrics exporter settings.
type TelemetryExporters struct {
	Jaeger     JaegerExporter     `mapstructure:"Jaeger" toml:"Jaeger" json:"Jaeger"`
	Prometheus PrometheusExporter `mapstructure:"Prometheus" toml:"Prometheus" json:"Prometheus"`
}

// JaegerExporter is accepted for compatibility; tracing is not exported.
type JaegerExporter struct {
	ServiceName         string  `mapstructure:"serviceName" toml:"serviceName" json:"serviceName"`
	CollectorEndpoint   string  `mapstructure:"collectorEndpoint" toml:"collectorEndpoint" json:"collectorEndpoint" default:"http://localhost:14268/api/traces"`
	SamplingProbability float64 `mapstructure:"samplingProbability" toml:"samplingProbability" json:"samplingProbability"`
}

// PrometheusExporter sets the metrics aggregation period.
type PrometheusExporter struct {
	ReporteringPeriod int `mapstructure:"ReporteringPeriod" toml:"ReporteringPeriod" json:"ReporteringPeriod" default:"10" comment:"Metrics aggregation period (seconds)"`
}

// VSphere is the [hatchery.vsphere] table (protocol spec §20.3).
type VSphere struct {
	CommonConfiguration CommonConfiguration `mapstructure:"commonConfiguration" toml:"commonConfiguration" json:"commonConfiguration"`

	User             string `mapstructure:"user" toml:"user" json:"user" comment:"vCenter user (mandatory)"`
	Endpoint         string `mapstructure:"endpoint" toml:"endpoint" json:"endpoint" comment:"vCenter host, e.g. vcenter.example.net (mandatory)"`
	Password         string `mapstructure:"password" toml:"password" json:"-" comment:"vCenter password (mandatory)"`
	DatacenterString string `mapstructure:"datacenterString" toml:"datacenterString" json:"datacenterString" comment:"vCenter datacenter (mandatory)"`
	DatastoreString  string `mapstructure:"datastoreString" toml:"datastoreString" json:"datastoreString" comment:"Datastore of the worker VMs (empty: the datacenter's default datastore)"`
	NetworkString    string `mapstructure:"networkString" toml:"networkString" json:"networkString" comment:"Network of the worker VMs (empty: the datacenter's default network)"`
	CardName         string `mapstructure:"cardName" toml:"cardName" json:"cardName" default:"e1000" comment:"Virtual ethernet card type (e1000, e1000e, vmxnet3, ...)"`
	IPRange          string `mapstructure:"iprange" toml:"iprange" json:"iprange,omitempty" comment:"Fixed IPs for the workers, comma-separated CIDRs, e.g. 10.0.0.16/28,10.0.1.0/29 (empty: DHCP)"`
	Gateway          string `mapstructure:"gateway" toml:"gateway" json:"gateway,omitempty" comment:"Gateway of the fixed IPs"`
	DNS              string `mapstructure:"dns" toml:"dns" json:"dns,omitempty" comment:"DNS server of the fixed IPs"`
	SubnetMask       string `mapstructure:"subnetMask" toml:"subnetMask" json:"subnetMask" default:"255.255.255.0" comment:"Subnet mask of the fixed IPs"`

	WorkerTTL                  int `mapstructure:"workerTTL" toml:"workerTTL" json:"workerTTL" default:"120" comment:"Worker time to live (minutes)"`
	WorkerRegistrationTTL      int `mapstructure:"workerRegistrationTTL" toml:"workerRegistrationTTL" json:"workerRegistrationTTL" default:"10" comment:"Time a started VM has to register its worker (minutes)"`
	WorkerProvisioningInterval int `mapstructure:"workerProvisioningInterval" toml:"workerProvisioningInterval" json:"workerProvisioningInterval" default:"120" comment:"Provisioning pass period (seconds)"`
	WorkerProvisioningPoolSize int `mapstructure:"workerProvisioningPoolSize" toml:"workerProvisioningPoolSize" json:"workerProvisioningPoolSize" default:"1" comment:"Concurrent provisioning operations"`

	WorkerProvisioning    []WorkerProvisioning    `mapstructure:"workerProvisioning" toml:"workerProvisioning" json:"workerProvisioning" comment:"Powered-off VMs kept ready per model"`
	GuestCredentials      []GuestCredential       `mapstructure:"guestCredentials" toml:"guestCredentials" json:"-" comment:"Guest OS credentials per model"`
	DefaultWorkerModelsV2 []DefaultWorkerModelsV2 `mapstructure:"defaultWorkerModelsV2" toml:"defaultWorkerModelsV2" json:"-" comment:"v2 worker models used by v1 jobs, chosen by binary requirement"`

	MaxCPUs                  int      `mapstructure:"maxCpus" toml:"maxCpus" json:"maxCpus" comment:"Maximum vCPUs of the powered-on workers of this hatchery (0: no limit)"`
	MaxMemoryMB              int      `mapstructure:"maxMemoryMB" toml:"maxMemoryMB" json:"maxMemoryMB" comment:"Maximum memory (MB) of the powered-on workers of this hatchery (0: no limit)"`
	Flavors                  []Flavor `mapstructure:"flavors" toml:"flavors" json:"flavors,omitempty" comment:"VM sizes a job can ask for with a flavor requirement"`
	DefaultFlavor            string   `mapstructure:"defaultFlavor" toml:"defaultFlavor" json:"defaultFlavor,omitempty" comment:"Flavor of the jobs that ask for none (empty: the template's size)"`
	CountSmallerFlavorToKeep int      `mapstructure:"countSmallerFlavorToKeep" toml:"countSmallerFlavorToKeep" json:"countSmallerFlavorToKeep" comment:"Smallest-flavor workers kept possible when a bigger flavor is spawned (0: off)"`

	// Keys of hatchery-vsphere that the original does not have. They are never sent to the
	// API, so the registration payload keeps the original's shape.
	Insecure    bool   `mapstructure:"insecure" toml:"insecure" json:"-" comment:"Skip TLS verification of vCenter (not recommended)"`
	CAFile      string `mapstructure:"caFile" toml:"caFile" json:"-" comment:"PEM file of the CA that signs vCenter's certificate (empty: system roots)"`
	TaskTimeout int    `mapstructure:"taskTimeout" toml:"taskTimeout" json:"-" default:"600" comment:"Longest wait for one vCenter task (seconds)"`
	CallTimeout int    `mapstructure:"callTimeout" toml:"callTimeout" json:"-" default:"15" comment:"Longest vCenter request (seconds)"`

	FinishedWorkerGracePeriod int `mapstructure:"finishedWorkerGracePeriod" toml:"finishedWorkerGracePeriod" json:"-" default:"180" comment:"A powered-off worker the API no longer knows is deleted after this delay (seconds)"`
	KillAwolServersInterval   int `mapstructure:"killAwolServersInterval" toml:"killAwolServersInterval" json:"-" default:"60" comment:"Period of the cleanup pass (seconds)"`
	MaxConcurrentClones       int `mapstructure:"maxConcurrentClones" toml:"maxConcurrentClones" json:"-" default:"10" comment:"vCenter clone tasks run at once"`
	MaxConcurrentPowerOps     int `mapstructure:"maxConcurrentPowerOps" toml:"maxConcurrentPowerOps" json:"-" default:"20" comment:"vCenter power-on/off tasks run at once"`
	MaxConcurrentDeletions    int `mapstructure:"maxConcurrentDeletions" toml:"maxConcurrentDeletions" json:"-" default:"5" comment:"vCenter destroy tasks run at once"`
	CircuitBreakerFailures    int `mapstructure:"circuitBreakerFailures" toml:"circuitBreakerFailures" json:"-" default:"5" comment:"Consecutive vCenter failures after which no job is taken until a probe succeeds (0: off)"`
	CircuitBreakerProbe       int `mapstructure:"circuitBreakerProbe" toml:"circuitBreakerProbe" json:"-" default:"30" comment:"Period of the vCenter probe while the circuit is open (seconds)"`
}

// WorkerProvisioning is one entry of workerProvisioning.
type WorkerProvisioning struct {
	ModelPath   string `mapstructure:"modelPath" toml:"modelPath" json:"modelPath" comment:"v1 worker model path, group/name"`
	ModelVMWare string `mapstructure:"modelVMWare" toml:"modelVMWare" json:"modelVMWare" comment:"v2: source VM or template name in vCenter"`
	Number      int    `mapstructure:"number" toml:"number" json:"number" comment:"VMs to keep provisioned"`
}

// GuestCredential is one entry of guestCredentials.
type GuestCredential struct {
	ModelPath   string `mapstructure:"modelPath" toml:"modelPath" json:"-"`
	ModelVMWare string `mapstructure:"modelVMWare" toml:"modelVMWare" json:"-"`
	Username    string `mapstructure:"username" toml:"username" json:"-"`
	Password    string `mapstructure:"password" toml:"password" json:"-"`
}

// DefaultWorkerModelsV2 is one entry of defaultWorkerModelsV2.
type DefaultWorkerModelsV2 struct {
	WorkerModelV2 string   `mapstructure:"workerModelV2" toml:"workerModelV2" json:"workerModelV2"`
	Binaries      []string `mapstructure:"binaries" toml:"binaries" json:"binaries"`
}

// Flavor is one entry of flavors.
type Flavor struct {
	Name       string `mapstructure:"name" toml:"name" json:"name"`
	CPUs       int    `mapstructure:"cpus" toml:"cpus" json:"cpus"`
	MemoryMB   int    `mapstructure:"memoryMB" toml:"memoryMB" json:"memoryMB"`
	DiskSizeGB int    `mapstructure:"diskSizeGB" toml:"diskSizeGB" json:"-"`
}

// CommonConfiguration is [hatchery.vsphere.commonConfiguration] (protocol spec §20.2).
type CommonConfiguration struct {
	Name          string     `mapstructure:"name" toml:"name" json:"name" comment:"Hatchery name; must equal the v2 hatchery declared in CDS (mandatory)"`
	OSArch        []string   `mapstructure:"osArch" toml:"osArch" json:"osArch" comment:"OS/arch of the v2 jobs to poll, e.g. [\"linux/amd64\"] (empty: no filter)"`
	RSAPrivateKey string     `mapstructure:"rsaPrivateKey" toml:"rsaPrivateKey" json:"-" comment:"PEM RSA private key signing the worker tokens (mandatory)"`
	URL           string     `mapstructure:"url" toml:"url" json:"url" default:"http://localhost:8086" comment:"Public URL of this hatchery"`
	HTTP          HTTP       `mapstructure:"http" toml:"http" json:"http"`
	API           API        `mapstructure:"api" toml:"api" json:"api"`
	CDN           CDN        `mapstructure:"cdn" toml:"cdn" json:"cdn"`
	Provision     Provision  `mapstructure:"provision" toml:"provision" json:"provision"`
	LogOptions    LogOptions `mapstructure:"logOptions" toml:"logOptions" json:"logOptions"`
}

// HTTP is the hatchery's own HTTP server.
type HTTP struct {
	Addr                string `mapstructure:"addr" toml:"addr" json:"addr" comment:"Listen address (empty: all interfaces)"`
	Port                int    `mapstructure:"port" toml:"port" json:"port" default:"8086" comment:"Listen port"`
	HeaderXForwardedFor string `mapstructure:"headerXForwardedFor" toml:"headerXForwardedFor" json:"header_w_forwarded_for" comment:"Header carrying the client IP for logs"`
	EnablePprof         bool   `mapstructure:"enablePprof" toml:"enablePprof" json:"-" comment:"Serve /debug/pprof/* (off by default)"`
}

// API is how the hatchery reaches the CDS API.
type API struct {
	HTTP                 APIHTTP `mapstructure:"http" toml:"http" json:"http"`
	Token                string  `mapstructure:"token" toml:"token" json:"-" comment:"v1 builtin consumer sign-in token (empty: no v1 jobs)"`
	TokenV2              string  `mapstructure:"tokenV2" toml:"tokenV2" json:"-" comment:"v2 hatchery consumer sign-in token (empty: no v2 jobs)"`
	RequestTimeout       int     `mapstructure:"requestTimeout" toml:"requestTimeout" json:"requestTimeout" default:"10" comment:"CDS API request timeout (seconds)"`
	MaxHeartbeatFailures int     `mapstructure:"maxHeartbeatFailures" toml:"maxHeartbeatFailures" json:"maxHeartbeatFailures" default:"10" comment:"Consecutive heartbeat failures tolerated"`
}

// APIHTTP is the CDS API address.
type APIHTTP struct {
	URL      string `mapstructure:"url" toml:"url" json:"url" comment:"CDS API URL, without trailing slash (mandatory)"`
	Insecure bool   `mapstructure:"insecure" toml:"insecure" json:"insecure" comment:"Skip TLS verification of the CDS API (not recommended)"`
	CAFile   string `mapstructure:"caFile" toml:"caFile" json:"-" comment:"PEM file of the CA that signs the CDS API certificate (empty: system roots)"`
}

// CDN is the CDS CDN address (taken from the API when empty).
type CDN struct {
	URL string `mapstructure:"url" toml:"url" json:"url" comment:"CDN HTTP URL (empty: asked to the API)"`
	TCP CDNTCP `mapstructure:"tcp" toml:"tcp" json:"tcp"`
}

// CDNTCP is the CDN log intake.
type CDNTCP struct {
	EnableTLS bool   `mapstructure:"enableTLS" toml:"enableTLS" json:"enable_tls"`
	URL       string `mapstructure:"url" toml:"url" json:"url" comment:"CDN TCP address host:port (empty: asked to the API)"`
}

// Provision holds the job-scheduling settings.
type Provision struct {
	DisableV2QueuePolling          bool              `mapstructure:"disableV2QueuePolling" toml:"disableV2QueuePolling" json:"-" comment:"Do not discover v2 jobs"`
	InjectEnvVars                  []string          `mapstructure:"injectEnvVars" toml:"injectEnvVars" json:"-" comment:"KEY=VALUE entries given to every worker"`
	MaxWorker                      int               `mapstructure:"maxWorker" toml:"maxWorker" json:"maxWorker" default:"10" comment:"Maximum simultaneous workers (0: unlimited)"`
	MaxConcurrentProvisioning      int               `mapstructure:"maxConcurrentProvisioning" toml:"maxConcurrentProvisioning" json:"maxConcurrentProvisioning" default:"10" comment:"Maximum workers being started at once"`
	MaxConcurrentRegistering       int               `mapstructure:"maxConcurrentRegistering" toml:"maxConcurrentRegistering" json:"maxConcurrentRegistering" default:"2" comment:"Maximum v1 model registrations at once (-1: registration off)"`
	RegisterFrequency              int               `mapstructure:"registerFrequency" toml:"registerFrequency" json:"registerFrequency" default:"60" comment:"v1 model registration check period (seconds)"`
	Region                         string            `mapstructure:"region" toml:"region" json:"region" comment:"v1 region of this hatchery"`
	IgnoreJobWithNoRegion          bool              `mapstructure:"ignoreJobWithNoRegion" toml:"ignoreJobWithNoRegion" json:"ignoreJobWithNoRegion" comment:"Ignore v1 jobs without a region requirement"`
	WorkerAPIHTTP                  WorkerAPIHTTP     `mapstructure:"workerApiHttp" toml:"workerApiHttp" json:"workerApiHttp"`
	WorkerCDN                      CDN               `mapstructure:"workerCdn" toml:"workerCdn" json:"workerCdn"`
	WorkerBasedir                  string            `mapstructure:"workerBasedir" toml:"workerBasedir" json:"workerBasedir" comment:"Worker base directory (empty: the OS temp dir)"`
	WorkerLogsOptions              WorkerLogsOptions `mapstructure:"workerLogsOptions" toml:"workerLogsOptions" json:"workerLogsOptions"`
	MaxAttemptsNumberBeforeFailure int               `mapstructure:"maxAttemptsNumberBeforeFailure" toml:"maxAttemptsNumberBeforeFailure" json:"maxAttemptsNumberBeforeFailure" default:"5" comment:"Spawn attempts for one job before giving up (-1: no limit)"`
	ShutdownTimeout                int               `mapstructure:"shutdownTimeout" toml:"shutdownTimeout" json:"-" default:"60" comment:"On SIGTERM, how long in-flight spawns may take to finish or roll back (seconds)"`
}

// WorkerAPIHTTP is the CDS API address given to workers.
type WorkerAPIHTTP struct {
	URL      string `mapstructure:"url" toml:"url" json:"url" comment:"CDS API URL for the workers (empty: api.http.url)"`
	Insecure bool   `mapstructure:"insecure" toml:"insecure" json:"insecure"`
}

// WorkerLogsOptions is forwarded to workers in CDS_CONFIG.
type WorkerLogsOptions struct {
	Level   string        `mapstructure:"level" toml:"level" json:"level"`
	Graylog WorkerGraylog `mapstructure:"graylog" toml:"graylog" json:"graylog"`
	Syslog  WorkerSyslog  `mapstructure:"syslog" toml:"syslog" json:"syslog"`
}

// WorkerGraylog is the workers' GELF output.
type WorkerGraylog struct {
	Host       string `mapstructure:"host" toml:"host" json:"host"`
	Port       int    `mapstructure:"port" toml:"port" json:"port"`
	Protocol   string `mapstructure:"protocol" toml:"protocol" json:"protocol" default:"tcp"`
	ExtraKey   string `mapstructure:"extraKey" toml:"extraKey" json:"extraKey"`
	ExtraValue string `mapstructure:"extraValue" toml:"extraValue" json:"-"`
}

// WorkerSyslog is the workers' syslog output.
type WorkerSyslog struct {
	Host     string `mapstructure:"host" toml:"host" json:"host"`
	Port     int    `mapstructure:"port" toml:"port" json:"port"`
	Protocol string `mapstructure:"protocol" toml:"protocol" json:"protocol" default:"tcp"`
	ExtraTag string `mapstructure:"extraTag" toml:"extraTag" json:"extraTag"`
}

// LogOptions is accepted and sent at registration; otherwise unused, as in the original.
type LogOptions struct {
	SpawnOptions SpawnOptions `mapstructure:"spawnOptions" toml:"spawnOptions" json:"spawnOptions"`
}

// SpawnOptions are spawn-duration thresholds (seconds).
type SpawnOptions struct {
	ThresholdCritical int `mapstructure:"thresholdCritical" toml:"thresholdCritical" json:"thresholdCritical" default:"480"`
	ThresholdWarning  int `mapstructure:"thresholdWarning" toml:"thresholdWarning" json:"thresholdWarning" default:"360"`
}
