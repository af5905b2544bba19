package hatchery

import (
	"context"

	"github.com/hatchery-vsphere/hatchery-vsphere/internal/cds"
)

// Provider is what the framework needs from a VM back-end (the vSphere provider of
// internal/vspherehatchery, or a fake in tests). The framework decides which job to serve,
// books it, signs the worker token and renders the worker configuration and launch script; the
// provider decides whether it can host the worker and starts it.
type Provider interface {
	// ModelType is the worker model type this provider serves ("vsphere").
	ModelType() string

	// CanSpawn tells whether the provider could host a worker of this model for this job at
	// all (requirements it supports, template known, job not already being spawned).
	// jobID is "0" for a v1 model registration.
	CanSpawn(ctx context.Context, model *WorkerStarterWorkerModel, jobID string, requirements []cds.Requirement) bool

	// CanAllocateResources tells whether there is room for one more worker of this model now
	// (resource pool, maxCpus/maxMemoryMB, flavors). An error aborts the job handling.
	CanAllocateResources(ctx context.Context, model *WorkerStarterWorkerModel, jobID string, requirements []cds.Requirement) (bool, error)

	// SpawnWorker starts the worker VM and launches the worker in it. It returns once the
	// worker process is started in the guest, or with an error after having rolled back what
	// it created (the framework then releases the job).
	SpawnWorker(ctx context.Context, args SpawnArguments) error

	// WorkersStarted lists the names of the workers this provider has started (running VMs of
	// this hatchery, provisioned VMs excluded).
	WorkersStarted(ctx context.Context) ([]string, error)

	// NeedRegistration tells whether a v1 model needs a registration (template missing or
	// outdated, or asked by the API).
	NeedRegistration(ctx context.Context, model *cds.Model) bool

	// DefaultModelV2Name picks the v2 model reference a v1 job without model requirement may
	// run on (protocol spec §9.3), or "".
	DefaultModelV2Name(ctx context.Context, requirements []cds.Requirement) string

	// Status returns the provider's monitoring lines (Workers, VirtualMachines, its loops).
	Status(ctx context.Context) []cds.MonitoringStatusLine

	// Run runs the provider's background loops (provisioning, cleanup, metrics) until ctx is
	// done. It is given the framework services it may call back.
	Run(ctx context.Context, svc Services) error
}

// Services is what the framework offers to a provider's background loops.
type Services interface {
	// HatcheryName is the configured hatchery name.
	HatcheryName() string
	// HasV1 tells whether a v1 session exists (v1 passes are skipped without one, fix of Q25).
	HasV1() bool
	// WorkerPool is the pool of §11.1 (registered and started workers), filtered on the
	// given statuses when any are given.
	WorkerPool(ctx context.Context, statuses ...string) ([]PoolWorker, error)
	// RegisteredWorkerNames lists the workers the API knows (v1 and v2).
	RegisteredWorkerNames(ctx context.Context) (map[string]struct{}, error)
	// WorkerModel fetches one v1 model (GET /worker/model/{group}/{name}).
	WorkerModel(ctx context.Context, group, name string) (cds.Model, error)
	// CachedWorkerModels is the last list of enabled v1 models.
	CachedWorkerModels() []cds.Model
	// RefreshWorkerModels re-reads the enabled v1 models.
	RefreshWorkerModels(ctx context.Context) ([]cds.Model, error)
	// ReportModelSpawnError sends PUT /worker/model/{group}/{name}/error.
	ReportModelSpawnError(ctx context.Context, group, name, message string) error
	// SendJobInfo posts an info message on a v2 job (errors are only logged).
	SendJobInfo(ctx context.Context, region, jobID, level, message string)
	// ReleaseJob gives a job back to the queue: DELETE book for a v1 job ID, DELETE take
	// for a v2 run-job UUID in region (the hatchery's v2 region when empty).
	ReleaseJob(ctx context.Context, jobID, region string) error
	// JobAwaitsWorker tells whether the API still shows the job waiting for a worker of this
	// hatchery (v1: Waiting and booked by it; v2: Scheduling). A job the API no longer has
	// does not; an API failure is an error.
	JobAwaitsWorker(ctx context.Context, jobID, region string) (bool, error)
	// SetGoroutine reports one of the provider's loops running or stopped, for its
	// goroutine/<name> status line (names declared by GoroutineNamer).
	SetGoroutine(name string, running bool)
}

// GoroutineNamer is implemented by a provider whose Run starts long-lived loops: their
// names, declared before Run so that their status lines come first, in this order.
type GoroutineNamer interface {
	GoroutineNames() []string
}

// PoolWorker is one entry of the worker pool: a registered worker or a started VM not yet
// registered.
type PoolWorker struct {
	ID     string `json:"id,omitempty"`
	Name   string `json:"name"`
	Status string `json:"status"`
	// V1 is true for a v1 registered worker.
	V1 bool `json:"-"`
}

// WorkerStarterWorkerModel is the model a worker is started from: a v1 model, or a v2 model
// (for a v2 job or for a v1 job running on a v2 model), with the commands of §17.3.
type WorkerStarterWorkerModel struct {
	// ModelV1 is set for a v1 model.
	ModelV1 *cds.Model
	// ModelV2 is set for a v2 model; VSphereSpec is its parsed spec.
	ModelV2     *cds.V2WorkerModel
	VSphereSpec cds.V2WorkerModelVSphereSpec

	PreCmd  string
	Cmd     string
	PostCmd string

	// Flavor is the flavor asked by the job (v2 runs-on.flavor); v1 jobs carry it as a
	// flavor requirement.
	Flavor string
	// Memory is the v2 runs-on.memory, when given (MB).
	Memory int64
}

// IsV2 tells whether the model is a v2 (as-code) model.
func (m *WorkerStarterWorkerModel) IsV2() bool { return m.ModelV2 != nil }

// Name is the model name: <group>/<name> for a v1 model, the model name for a v2 one.
func (m *WorkerStarterWorkerModel) Name() string {
	switch {
	case m.ModelV2 != nil:
		return m.ModelV2.Name
	case m.ModelV1 != nil:
		return m.ModelV1.Group.Name + "/" + m.ModelV1.Name
	}
	return ""
}

// SpawnArguments is one spawn request handed to the provider.
type SpawnArguments struct {
	WorkerName   string
	WorkerToken  string
	Model        *WorkerStarterWorkerModel
	JobID        string
	RegisterOnly bool
	Requirements []cds.Requirement
	Region       string

	// LaunchScript is the rendered launch script (§17.1-§17.3); the provider runs
	// "/bin/echo" with "-n ;"+LaunchScript in the guest (§17.4).
	LaunchScript string
	// Env is the guest environment: CDS_CONFIG=<base64> then one KEY=VALUE per injected
	// variable. It carries secrets: never log it.
	Env []string
}
