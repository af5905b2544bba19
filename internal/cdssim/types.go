package cdssim

import (
	"encoding/json"
	"net/http"
	"net/url"
	"time"
)

// The structs in this file are written from section 21 of the protocol spec, independently of
// internal/cds on purpose: a wire mistake on either side then shows up as a failing test.

// APIError is the CDS API error object (spec §2.5).
type APIError struct {
	ID        int    `json:"id"`
	Message   string `json:"message"`
	RequestID string `json:"request_id,omitempty"`
	From      string `json:"from,omitempty"`
}

// Group is a CDS group reference.
type Group struct {
	ID   int64  `json:"id"`
	Name string `json:"name"`
}

// Requirement is a v1 job requirement or a registered model capability (spec §21.5).
type Requirement struct {
	ID       int64  `json:"id"`
	ActionID int64  `json:"action_id"`
	Name     string `json:"name"`
	Type     string `json:"type"`
	Value    string `json:"value"`
}

// CDNConfig is served by GET /config/cdn and GET /v2/config/cdn (spec §3.8).
type CDNConfig struct {
	TCPURL          string `json:"tcp_url"`
	TCPURLEnableTLS bool   `json:"tcp_url_enable_tls"`
	HTTPURL         string `json:"http_url"`
}

// MonitoringLine is one line of a heartbeat (spec §4.2).
type MonitoringLine struct {
	Status    string `json:"status"`
	Component string `json:"component"`
	Value     string `json:"value"`
	Type      string `json:"type"`
	Service   string `json:"service"`
	Hostname  string `json:"hostname"`
	Session   string `json:"session,omitempty"`
	Consumer  string `json:"consumer,omitempty"`
}

// MonitoringStatus is the heartbeat body (spec §4.2).
type MonitoringStatus struct {
	Now   time.Time        `json:"now"`
	Lines []MonitoringLine `json:"lines"`
}

// VirtualMachineModel is the `model_virtual_machine` member of a v1 model.
type VirtualMachineModel struct {
	Image    string `json:"image,omitempty"`
	Flavor   string `json:"flavor,omitempty"`
	PreCmd   string `json:"pre_cmd,omitempty"`
	Cmd      string `json:"cmd,omitempty"`
	PostCmd  string `json:"post_cmd,omitempty"`
	User     string `json:"user,omitempty"`
	Password string `json:"password,omitempty"`
}

// DockerModel is the `model_docker` member of a v1 model (only cmd matters to a hatchery).
type DockerModel struct {
	Image string `json:"image,omitempty"`
	Cmd   string `json:"cmd,omitempty"`
}

// V1Model is a v1 worker model (spec §21.1).
type V1Model struct {
	ID                     int64               `json:"id"`
	Name                   string              `json:"name"`
	Description            string              `json:"description"`
	Type                   string              `json:"type"`
	Disabled               bool                `json:"disabled"`
	Restricted             bool                `json:"restricted"`
	GroupID                int64               `json:"group_id"`
	Group                  *Group              `json:"group,omitempty"`
	NeedRegistration       bool                `json:"need_registration"`
	CheckRegistration      bool                `json:"check_registration"`
	UserLastModified       time.Time           `json:"user_last_modified"`
	LastRegistration       time.Time           `json:"last_registration"`
	NbSpawnErr             int64               `json:"nb_spawn_err"`
	LastSpawnErr           *string             `json:"last_spawn_err"`
	IsDeprecated           bool                `json:"is_deprecated"`
	RegisteredOS           *string             `json:"registered_os"`
	RegisteredArch         *string             `json:"registered_arch"`
	RegisteredCapabilities []Requirement       `json:"registered_capabilities"`
	ModelVirtualMachine    VirtualMachineModel `json:"model_virtual_machine"`
	ModelDocker            DockerModel         `json:"model_docker"`
}

// Path returns "<group>/<name>", the form used in API URLs and in CDS_CONFIG `model`.
func (m V1Model) Path() string {
	if m.Group == nil {
		return m.Name
	}
	return m.Group.Name + "/" + m.Name
}

// ModelSecret is one element of GET /worker/model/{g}/{n}/secret (spec §21.11).
type ModelSecret struct {
	ID            string    `json:"id"`
	Created       time.Time `json:"created"`
	WorkerModelID int64     `json:"worker_model_id"`
	Name          string    `json:"name"`
	Value         string    `json:"value"`
}

// ModelSpawnError is a PUT /worker/model/{g}/{n}/error body as received.
type ModelSpawnError struct {
	ModelPath string
	Error     string
	Logs      []byte
	Time      time.Time
}

// V2ModelSpec is the `spec` of a vsphere v2 worker model (spec §21.2).
type V2ModelSpec struct {
	Image    string `json:"image"`
	Flavor   string `json:"flavor,omitempty"`
	Username string `json:"username,omitempty"`
	Password string `json:"password,omitempty"`
}

// V2WorkerModel is an as-code worker model (spec §21.2).
type V2WorkerModel struct {
	Name        string      `json:"name"`
	Description string      `json:"description"`
	OSArch      string      `json:"osarch"`
	Type        string      `json:"type"`
	Spec        V2ModelSpec `json:"spec"`
}

// V2RunsOn is the object form of `job.runs-on`; a plain string is the other accepted form.
type V2RunsOn struct {
	Model  string `json:"model"`
	Memory string `json:"memory,omitempty"`
	Flavor string `json:"flavor,omitempty"`
}

// V2JobSpec is the `job` member of a v2 run job. RunsOn holds a string or a V2RunsOn.
type V2JobSpec struct {
	RunsOn   any            `json:"runs-on,omitempty"`
	Services map[string]any `json:"services,omitempty"`
}

// V2RunJob is a v2 run job (spec §21.3).
type V2RunJob struct {
	ID            string    `json:"id"`
	JobID         string    `json:"job_id"`
	WorkflowRunID string    `json:"workflow_run_id"`
	ProjectKey    string    `json:"project_key"`
	WorkflowName  string    `json:"workflow_name"`
	RunNumber     int64     `json:"run_number"`
	RunAttempt    int64     `json:"run_attempt"`
	Status        string    `json:"status"`
	Queued        time.Time `json:"queued"`
	Region        string    `json:"region"`
	HatcheryName  string    `json:"hatchery_name"`
	ModelType     string    `json:"model_type"`
	ModelOSArch   string    `json:"model_osarch"`
	Job           V2JobSpec `json:"job"`
}

// V2JobInfo is a POST /v2/queue/{region}/job/{id}/info body (spec §21.7).
type V2JobInfo struct {
	Level   string    `json:"level"`
	Message string    `json:"message"`
	Time    time.Time `json:"time"`
}

// SpawnMessage is the `message` member of a v1 spawn info.
type SpawnMessage struct {
	ID   string   `json:"id"`
	Args []string `json:"args"`
	Type string   `json:"type,omitempty"`
}

// SpawnInfo is one element of a POST /queue/workflows/{id}/spawn/infos body (spec §21.7).
type SpawnInfo struct {
	APITime     time.Time    `json:"api_time"`
	RemoteTime  time.Time    `json:"remote_time"`
	Message     SpawnMessage `json:"message"`
	UserMessage string       `json:"user_message,omitempty"`
}

// V1JobResult is a POST /queue/workflows/{id}/result body (spec §21.8).
type V1JobResult struct {
	ID         int64     `json:"id"`
	BuildID    int64     `json:"buildID"`
	Status     string    `json:"status"`
	Reason     string    `json:"reason"`
	RemoteTime time.Time `json:"remoteTime"`
}

// V1Job is what a test queues with AddV1Job. Region "" travels as null.
type V1Job struct {
	ID                int64
	ProjectID         int64
	ProjectKey        string
	WorkflowName      string
	WorkflowID        int64
	RunID             int64
	NodeRunName       string
	WorkflowNodeRunID int64
	JobName           string
	ExecGroups        []Group
	Requirements      []Requirement
	Region            string
	ModelType         string
	Header            map[string]string
	Queued            time.Time
}

// wire shapes of a v1 job (spec §21.5).
type wireBookedBy struct {
	Name string `json:"name,omitempty"`
	ID   int64  `json:"id,omitempty"`
}

type wireAction struct {
	Name         string        `json:"name"`
	Requirements []Requirement `json:"requirements"`
}

type wireExecutedJob struct {
	Action wireAction `json:"action"`
}

type wireV1Job struct {
	ID                int64             `json:"id"`
	ProjectID         int64             `json:"project_id"`
	WorkflowNodeRunID int64             `json:"workflow_node_run_id"`
	Job               wireExecutedJob   `json:"job"`
	Status            string            `json:"status"`
	Queued            time.Time         `json:"queued"`
	Start             time.Time         `json:"start"`
	Done              time.Time         `json:"done"`
	BookedBy          wireBookedBy      `json:"bookedby"`
	ExecGroups        []Group           `json:"exec_groups"`
	Region            *string           `json:"region"`
	ModelType         string            `json:"model_type"`
	Header            map[string]string `json:"header,omitempty"`
	SpawnInfos        []SpawnInfo       `json:"spawninfos"`
}

type wireV1Booked struct {
	ProjectKey   string `json:"project_key"`
	WorkflowName string `json:"workflow_name"`
	WorkflowID   int64  `json:"workflow_id"`
	RunID        int64  `json:"run_id"`
	NodeRunName  string `json:"node_run_name"`
	NodeRunID    int64  `json:"node_run_id"`
	JobName      string `json:"job_name"`
}

type wireV2QueueInfo struct {
	RunJob V2RunJob      `json:"runjob"`
	Model  V2WorkerModel `json:"model"`
}

// V1Worker is an element of GET /worker (spec §21.9).
type V1Worker struct {
	ID           string    `json:"id"`
	Name         string    `json:"name"`
	LastBeat     time.Time `json:"lastbeat"`
	ModelID      *int64    `json:"model_id"`
	ModelName    *string   `json:"model_name"`
	JobRunID     *int64    `json:"job_run_id"`
	Status       string    `json:"status"`
	HatcheryID   *int64    `json:"hatchery_id,omitempty"`
	HatcheryName string    `json:"hatchery_name"`
	Uptodate     bool      `json:"uptodate"`
	Version      string    `json:"version"`
	OS           string    `json:"os"`
	Arch         string    `json:"arch"`
}

// V2Worker is an element of GET /v2/worker (spec §21.9).
type V2Worker struct {
	ID           string    `json:"id"`
	Name         string    `json:"name"`
	LastBeat     time.Time `json:"last_beat"`
	ModelName    string    `json:"model_name"`
	RunJobID     string    `json:"run_job_id"`
	Status       string    `json:"status"`
	HatcheryID   string    `json:"hatchery_id,omitempty"`
	HatcheryName string    `json:"hatchery_name"`
	Version      string    `json:"version"`
	OS           string    `json:"os"`
	Arch         string    `json:"arch"`
}

// v1 service registration as received and stored (spec §3.3).
type wireService struct {
	ID                    int64            `json:"id"`
	Name                  string           `json:"name"`
	Type                  string           `json:"type"`
	HTTPURL               string           `json:"http_url"`
	Config                json.RawMessage  `json:"config"`
	PublicKey             []byte           `json:"public_key"`
	Region                *string          `json:"region"`
	IgnoreJobWithNoRegion *bool            `json:"ignore_job_with_no_region"`
	LastHeartbeat         time.Time        `json:"last_heartbeat"`
	MonitoringStatus      MonitoringStatus `json:"monitoring_status"`
	Version               string           `json:"version"`
	UpToDate              bool             `json:"up_to_date"`
}

type wireV1SigninRequest struct {
	Token   string       `json:"token"`
	Service *wireService `json:"service"`
}

type wireUser struct {
	ID       string `json:"id"`
	Username string `json:"username"`
	Fullname string `json:"fullname"`
	Ring     string `json:"ring"`
}

type wireV1SigninResponse struct {
	Token   string      `json:"token"`
	APIURL  string      `json:"api_url"`
	User    wireUser    `json:"user"`
	Service wireService `json:"service"`
}

type wireV2SigninRequest struct {
	Token     string          `json:"token"`
	Name      string          `json:"name"`
	Type      string          `json:"type"`
	HTTPURL   string          `json:"http_url"`
	Config    json.RawMessage `json:"config"`
	PublicKey []byte          `json:"public_key"`
	Version   string          `json:"version"`
}

type wireHatchery struct {
	ID            string          `json:"id"`
	Name          string          `json:"name"`
	ModelType     string          `json:"model_type"`
	Config        json.RawMessage `json:"config"`
	LastHeartbeat time.Time       `json:"last_heartbeat"`
	PublicKey     []byte          `json:"public_key"`
	HTTPURL       string          `json:"http_url"`
}

type wireV2SigninResponse struct {
	UpToDate bool         `json:"up_to_date"`
	APIURL   string       `json:"api_url"`
	Token    string       `json:"token"`
	Hatchery wireHatchery `json:"hatchery"`
	Region   string       `json:"region"`
}

// WebSocket messages (spec §21.10).
type wireWSFilter struct {
	Type              string `json:"type"`
	ProjectKey        string `json:"project_key"`
	ApplicationName   string `json:"application_name"`
	PipelineName      string `json:"pipeline_name"`
	EnvironmentName   string `json:"environment_name"`
	WorkflowName      string `json:"workflow_name"`
	WorkflowRunNumber int64  `json:"workflow_run_num"`
	WorkflowNodeRunID int64  `json:"workflow_node_run_id"`
	OperationUUID     string `json:"operation_uuid"`
	HatcheryType      string `json:"hatchery_type"`
}

type wireJobEventPayload struct {
	ID     int64  `json:"id"`
	Status string `json:"status"`
	Start  int64  `json:"start"`
	Done   int64  `json:"done"`
}

type wireEvent struct {
	Timestamp         time.Time           `json:"timestamp"`
	Hostname          string              `json:"hostname"`
	CDSName           string              `json:"cdsname"`
	EventType         string              `json:"type_event"`
	Status            string              `json:"status"`
	Payload           wireJobEventPayload `json:"payload"`
	Attempt           int                 `json:"attempt"`
	ProjectKey        string              `json:"project_key,omitempty"`
	WorkflowName      string              `json:"workflow_name,omitempty"`
	WorkflowRunNum    int64               `json:"workflow_run_num,omitempty"`
	WorkflowNodeRunID int64               `json:"workflow_node_run_id,omitempty"`
	Region            string              `json:"region,omitempty"`
	ModelType         string              `json:"model_type,omitempty"`
}

type wireWSEvent struct {
	Status string     `json:"status"`
	Error  string     `json:"error"`
	Event  *wireEvent `json:"event,omitempty"`
}

type wireV2QueueEvent struct {
	JobRunID     string `json:"job_run_id"`
	Region       string `json:"region"`
	ModelType    string `json:"model_type"`
	ModelOSArch  string `json:"model_osarch"`
	ProjectKey   string `json:"project_key"`
	WorkflowName string `json:"workflow_name"`
	JobID        string `json:"job_id"`
	RunNumber    int64  `json:"run_number"`
}

// Request is one HTTP request received by the simulator, recorded for assertions.
type Request struct {
	Method string
	// Path is the decoded path; EscapedPath keeps %2F and friends as sent.
	Path        string
	EscapedPath string
	RawQuery    string
	Query       url.Values
	Header      http.Header
	Body        []byte
	// Status is the response status; 0 while the handler still runs (e.g. an open websocket).
	Status int
	Time   time.Time
}

// Heartbeat is a recorded POST /services/heartbeat (V2 false) or /v2/hatchery/heartbeat (V2 true).
type Heartbeat struct {
	V2     bool
	Name   string
	Status MonitoringStatus
	Time   time.Time
}

// Service is a v1 service registered through the builtin sign-in.
type Service struct {
	ID                    int64
	Name                  string
	Type                  string
	HTTPURL               string
	Config                json.RawMessage
	PublicKeyPEM          []byte
	Region                *string
	IgnoreJobWithNoRegion *bool
	SigninCount           int
}

// Hatchery is a v2 hatchery registered through the hatchery sign-in.
type Hatchery struct {
	ID           string
	Name         string
	Type         string
	HTTPURL      string
	Config       json.RawMessage
	PublicKeyPEM []byte
	Version      string
	SigninCount  int
}
