// Package cds speaks the CDS API protocol of a hatchery (CDS v0.57.0): the JSON shapes of the
// wire (this file and its siblings) and a REST + WebSocket client holding a v1 (builtin
// consumer) or v2 (hatchery consumer) session.
//
// JSON field names are the exact wire names of the protocol specification (section 21);
// decoders ignore unknown fields.
package cds

import (
	"encoding/json"
	"fmt"
	"time"
)

// Group is a CDS group as embedded in v1 worker models and job exec groups.
type Group struct {
	ID   int64  `json:"id"`
	Name string `json:"name"`
}

// Requirement is a v1 job requirement or a v1 model capability.
type Requirement struct {
	ID       int64  `json:"id"`
	ActionID int64  `json:"action_id"`
	Name     string `json:"name"`
	Type     string `json:"type"`
	Value    string `json:"value"`
}

// ModelVirtualMachine is the VM part of a v1 worker model.
type ModelVirtualMachine struct {
	Image    string `json:"image,omitempty"`
	Flavor   string `json:"flavor,omitempty"`
	PreCmd   string `json:"pre_cmd,omitempty"`
	Cmd      string `json:"cmd,omitempty"`
	PostCmd  string `json:"post_cmd,omitempty"`
	User     string `json:"user,omitempty"`
	Password string `json:"password,omitempty"`
}

// ModelDocker is the docker part of a v1 worker model; the hatchery only reads Cmd, as a
// fallback command when the VM command is empty.
type ModelDocker struct {
	Image string `json:"image,omitempty"`
	Cmd   string `json:"cmd,omitempty"`
}

// Model is a v1 worker model (GET /worker/model/enabled, GET /worker/model/{group}/{name}).
type Model struct {
	ID                     int64               `json:"id"`
	Name                   string              `json:"name"`
	Type                   string              `json:"type"`
	GroupID                int64               `json:"group_id"`
	Group                  Group               `json:"group"`
	NeedRegistration       bool                `json:"need_registration"`
	CheckRegistration      bool                `json:"check_registration"`
	UserLastModified       time.Time           `json:"user_last_modified"`
	NbSpawnErr             int64               `json:"nb_spawn_err"`
	IsDeprecated           bool                `json:"is_deprecated"`
	RegisteredOS           *string             `json:"registered_os"`
	RegisteredArch         *string             `json:"registered_arch"`
	RegisteredCapabilities []Requirement       `json:"registered_capabilities"`
	ModelVirtualMachine    ModelVirtualMachine `json:"model_virtual_machine"`
	ModelDocker            ModelDocker         `json:"model_docker"`
}

// Path is the model's display path: "<group>/<name>", or just "<name>" for the shared
// infrastructure group. API URLs always use the group, see GroupPath.
func (m Model) Path() string {
	if m.Group.Name == SharedInfraGroupName {
		return m.Name
	}
	return m.Group.Name + "/" + m.Name
}

// GroupPath is "<group>/<name>" whatever the group, as used in API URLs, spawn infos and the
// VM annotation's worker_model_path.
func (m Model) GroupPath() string {
	return m.Group.Name + "/" + m.Name
}

// ModelSecret is one secret of a v1 worker model (GET /worker/model/{g}/{n}/secret).
type ModelSecret struct {
	ID            string    `json:"id"`
	Created       time.Time `json:"created"`
	WorkerModelID int64     `json:"worker_model_id"`
	Name          string    `json:"name"`
	Value         string    `json:"value"`
}

// V2WorkerModel is an as-code worker model (the "model" of a v2 queue info, endpoint #29).
type V2WorkerModel struct {
	Name        string          `json:"name"`
	Description string          `json:"description"`
	OSArch      string          `json:"osarch"`
	Type        string          `json:"type"`
	Spec        json.RawMessage `json:"spec,omitempty"`
}

// V2WorkerModelVSphereSpec is the spec of a v2 model of type vsphere.
type V2WorkerModelVSphereSpec struct {
	Image    string `json:"image"`
	Flavor   string `json:"flavor,omitempty"`
	Username string `json:"username,omitempty"`
	Password string `json:"password,omitempty"`
}

// VSphereSpec decodes the model spec as a vSphere spec. It fails when the model is not of
// type vsphere or the spec is not a JSON object.
func (m V2WorkerModel) VSphereSpec() (V2WorkerModelVSphereSpec, error) {
	var spec V2WorkerModelVSphereSpec
	if m.Type != ModelTypeVSphere {
		return spec, fmt.Errorf("worker model %q has type %q, not %q", m.Name, m.Type, ModelTypeVSphere)
	}
	if len(m.Spec) == 0 || string(m.Spec) == "null" {
		return spec, nil
	}
	if err := json.Unmarshal(m.Spec, &spec); err != nil {
		return spec, fmt.Errorf("decode vsphere spec of worker model %q: %w", m.Name, err)
	}
	return spec, nil
}

// ServiceRef identifies who booked a v1 job.
type ServiceRef struct {
	Name string `json:"name,omitempty"`
	ID   int64  `json:"id,omitempty"`
}

// Action is the part of a v1 job's action the hatchery reads.
type Action struct {
	Name         string        `json:"name,omitempty"`
	Requirements []Requirement `json:"requirements"`
}

// ExecutedJob is the "job" of a v1 job run.
type ExecutedJob struct {
	Action Action `json:"action"`
}

// WorkflowNodeJobRun is a v1 job (GET /queue/workflows, GET /queue/workflows/{id}/infos).
type WorkflowNodeJobRun struct {
	ID                int64             `json:"id"`
	ProjectID         int64             `json:"project_id"`
	WorkflowNodeRunID int64             `json:"workflow_node_run_id"`
	Status            string            `json:"status"`
	Queued            time.Time         `json:"queued"`
	BookedBy          ServiceRef        `json:"bookedby"`
	ExecGroups        []Group           `json:"exec_groups"`
	Job               ExecutedJob       `json:"job"`
	Region            *string           `json:"region"`
	ModelType         string            `json:"model_type"`
	Header            map[string]string `json:"header,omitempty"`
}

// WorkflowNodeJobRunBooked is the response of a v1 book (logging only).
type WorkflowNodeJobRunBooked struct {
	ProjectKey   string `json:"project_key"`
	WorkflowName string `json:"workflow_name"`
	WorkflowID   int64  `json:"workflow_id"`
	RunID        int64  `json:"run_id"`
	NodeRunName  string `json:"node_run_name"`
	NodeRunID    int64  `json:"node_run_id"`
	JobName      string `json:"job_name"`
}

// BookRequest is the body of POST /queue/workflows/{id}/book; the hatchery always sends 0
// (API default delay).
type BookRequest struct {
	Delay int64 `json:"delay"`
}

// V2RunsOn is a v2 job's "runs-on": on the wire either a bare model reference string or an
// object {"model","memory","flavor"}; both decode into this struct.
type V2RunsOn struct {
	Model  string `json:"model"`
	Memory string `json:"memory,omitempty"`
	Flavor string `json:"flavor,omitempty"`
}

// UnmarshalJSON accepts the string and the object forms.
func (r *V2RunsOn) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err == nil {
		*r = V2RunsOn{Model: s}
		return nil
	}
	type plain V2RunsOn // no methods: avoids recursion
	var p plain
	if err := json.Unmarshal(b, &p); err != nil {
		return fmt.Errorf("runs-on is neither a string nor an object: %w", err)
	}
	*r = V2RunsOn(p)
	return nil
}

// V2Job is the "job" of a v2 run job.
type V2Job struct {
	RunsOn   V2RunsOn                   `json:"runs-on"`
	Services map[string]json.RawMessage `json:"services,omitempty"`
}

// V2WorkflowRunJob is a v2 run job (v2 queue, take response, "runjob" of a queue info).
type V2WorkflowRunJob struct {
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
	Job           V2Job     `json:"job"`
}

// V2QueueJobInfo is the response of GET /v2/queue/{region}/job/{id}: the run job and the
// model the API resolved for it.
type V2QueueJobInfo struct {
	RunJob V2WorkflowRunJob `json:"runjob"`
	Model  V2WorkerModel    `json:"model"`
}

// Worker is a v1 worker (GET /worker). Note the wire name "lastbeat" (quirk Q20).
type Worker struct {
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

// V2Worker is a v2 worker (GET /v2/worker). Note the wire name "last_beat" (quirk Q20).
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

// MonitoringStatus is the heartbeat body and the /mon/status shape.
type MonitoringStatus struct {
	Now   time.Time              `json:"now"`
	Lines []MonitoringStatusLine `json:"lines"`
}

// MonitoringStatusLine is one component line of a MonitoringStatus.
type MonitoringStatusLine struct {
	Status    string `json:"status"`
	Component string `json:"component"`
	Value     string `json:"value"`
	Type      string `json:"type"`
	Service   string `json:"service"`
	Hostname  string `json:"hostname"`
	Session   string `json:"session,omitempty"`
	Consumer  string `json:"consumer,omitempty"`
}

// SpawnMsg is the message of a v1 spawn info: an id (MsgSpawnInfo...) and string args.
type SpawnMsg struct {
	ID   string   `json:"id"`
	Args []string `json:"args"`
	Type string   `json:"type,omitempty"`
}

// SpawnInfo is one element of the body of POST /queue/workflows/{id}/spawn/infos.
// APITime is left zero: the API sets it.
type SpawnInfo struct {
	APITime     time.Time `json:"api_time"`
	RemoteTime  time.Time `json:"remote_time"`
	Message     SpawnMsg  `json:"message"`
	UserMessage string    `json:"user_message,omitempty"`
}

// V2SendJobRunInfo is the body of POST /v2/queue/{region}/job/{id}/info.
type V2SendJobRunInfo struct {
	Level   string    `json:"level"`
	Message string    `json:"message"`
	Time    time.Time `json:"time"`
}

// Result is the body of POST /queue/workflows/{id}/result, used to fail a v1 job after too
// many attempts. Note the camel-case wire names "buildID"/"remoteTime" (quirk Q20).
type Result struct {
	ID         int64     `json:"id"`
	BuildID    int64     `json:"buildID"`
	Status     string    `json:"status"`
	Reason     string    `json:"reason"`
	RemoteTime time.Time `json:"remoteTime"`
}

// SpawnErrorForm is the body of PUT /worker/model/{g}/{n}/error. Note the capitalised wire
// names (quirk Q20); nil Logs travel as null, others as standard base64.
type SpawnErrorForm struct {
	Error string `json:"Error"`
	Logs  []byte `json:"Logs"`
}

// CDNConfig is the response of GET /config/cdn and GET /v2/config/cdn.
type CDNConfig struct {
	TCPURL          string `json:"tcp_url"`
	TCPURLEnableTLS bool   `json:"tcp_url_enable_tls"`
	HTTPURL         string `json:"http_url"`
}

// Service is the v1 service registration sent at sign-in and returned by the API.
// PublicKey holds the PEM text (see PublicKeyPEM); JSON carries it as standard base64.
// Region and IgnoreJobWithNoRegion are null unless set (section 3.3).
type Service struct {
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

// V1SigninRequest is the body of POST /auth/consumer/builtin/signin.
type V1SigninRequest struct {
	Token   string  `json:"token"`
	Service Service `json:"service"`
}

// V1SigninResponse is the response of the v1 sign-in.
type V1SigninResponse struct {
	Token   string          `json:"token"`
	APIURL  string          `json:"api_url"`
	User    json.RawMessage `json:"user,omitempty"`
	Service *Service        `json:"service"`
}

// V2SigninRequest is the body of POST /v2/auth/consumer/hatchery/signin.
type V2SigninRequest struct {
	Token     string          `json:"token"`
	Name      string          `json:"name"`
	Type      string          `json:"type"`
	HTTPURL   string          `json:"http_url"`
	Config    json.RawMessage `json:"config"`
	PublicKey []byte          `json:"public_key"`
	Version   string          `json:"version"`
}

// Hatchery is the v2 hatchery entity returned by the v2 sign-in.
type Hatchery struct {
	ID            string          `json:"id"`
	Name          string          `json:"name"`
	ModelType     string          `json:"model_type"`
	Config        json.RawMessage `json:"config,omitempty"`
	LastHeartbeat time.Time       `json:"last_heartbeat"`
	PublicKey     []byte          `json:"public_key"`
	HTTPURL       string          `json:"http_url"`
}

// V2SigninResponse is the response of the v2 sign-in. Region is the region the hatchery is
// granted on: the hatchery's "v2 region" from then on.
type V2SigninResponse struct {
	UpToDate bool      `json:"up_to_date"`
	APIURL   string    `json:"api_url"`
	Token    string    `json:"token"`
	Hatchery *Hatchery `json:"hatchery"`
	Region   string    `json:"region"`
}

// WebsocketFilter is one filter object sent by the v1 client on /ws.
type WebsocketFilter struct {
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

// Event is the "event" of a v1 WebsocketEvent.
type Event struct {
	TypeEvent         string          `json:"type_event"`
	Status            string          `json:"status"`
	Payload           json.RawMessage `json:"payload,omitempty"`
	Timestamp         time.Time       `json:"timestamp"`
	Hostname          string          `json:"hostname,omitempty"`
	CDSName           string          `json:"cdsname,omitempty"`
	Attempt           int64           `json:"attempt,omitempty"`
	ProjectKey        string          `json:"project_key,omitempty"`
	WorkflowName      string          `json:"workflow_name,omitempty"`
	WorkflowRunNum    int64           `json:"workflow_run_num,omitempty"`
	WorkflowNodeRunID int64           `json:"workflow_node_run_id,omitempty"`
	Region            string          `json:"region,omitempty"`
	ModelType         string          `json:"model_type,omitempty"`
}

// EventRunWorkflowJob is the payload of a v1 job event (type_event EventTypeRunWorkflowJob).
type EventRunWorkflowJob struct {
	ID     int64  `json:"id"`
	Status string `json:"status"`
	Start  int64  `json:"start"`
	Done   int64  `json:"done"`
}

// RunWorkflowJob decodes the payload of a job event.
func (e Event) RunWorkflowJob() (EventRunWorkflowJob, error) {
	var p EventRunWorkflowJob
	if e.TypeEvent != EventTypeRunWorkflowJob {
		return p, fmt.Errorf("event of type %q is not %q", e.TypeEvent, EventTypeRunWorkflowJob)
	}
	if err := json.Unmarshal(e.Payload, &p); err != nil {
		return p, fmt.Errorf("decode %s payload: %w", e.TypeEvent, err)
	}
	return p, nil
}

// WebsocketEvent is a message of the v1 /ws stream.
type WebsocketEvent struct {
	Status string `json:"status"`
	Error  string `json:"error"`
	Event  Event  `json:"event"`
}

// WebsocketJobQueueEvent is a message of the v2 /v2/hatchery/ws stream.
type WebsocketJobQueueEvent struct {
	JobRunID     string `json:"job_run_id"`
	Region       string `json:"region"`
	ModelType    string `json:"model_type"`
	ModelOSArch  string `json:"model_osarch"`
	ProjectKey   string `json:"project_key"`
	WorkflowName string `json:"workflow_name"`
	JobID        string `json:"job_id"`
	RunNumber    int64  `json:"run_number"`
}
