package vspherehatchery

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/rockbears/log"
	"github.com/vmware/govmomi/vim25/types"

	"github.com/hatchery-vsphere/hatchery-vsphere/internal/cds"
	"github.com/hatchery-vsphere/hatchery-vsphere/internal/config"
	"github.com/hatchery-vsphere/hatchery-vsphere/internal/hatchery"
	"github.com/hatchery-vsphere/hatchery-vsphere/internal/vsphere"
)

// Log fields, the same names as the framework's.
var (
	fieldJobID = log.Field("job_id")
	fieldModel = log.Field("model")
)

// Provider is the vSphere provider of the hatchery framework: it decides from one narrow
// inventory listing per decision and starts worker VMs through a vsphere.VSphereClient.
// The acting half (SpawnWorker, Run and its loops) is the Orchestrator, which embeds it.
type Provider struct {
	cfg    config.VSphere
	client vsphere.VSphereClient
	log    *log.Logger
	now    func() time.Time

	ips    *IPPool
	caches *Caches
	// errors is the last error of each VM, shown on the status page.
	errors *vmErrors

	// breaker stops the taking of jobs while vCenter keeps failing; limits bounds the
	// vCenter tasks run at once. client is wrapped to feed and obey both (guardedClient).
	breaker *Breaker
	limits  *Limits
	// jobs watches the VMs of jobs, to give a job back when its VM dies (jobwatch.go).
	jobs *jobWatch
	// pool is the last resource pool runtime read, shared by the decisions of a burst.
	pool poolRuntimeCache
}

// poolRuntimeTTL is how long a resource pool runtime read serves the capacity decisions:
// in a burst the main loop decides for many jobs a second, and a vCenter round trip each
// (queued behind the clones in flight) would pace the whole burst. The pool's unreserved
// figures only move when VMs with reservations power on or off, and a clone the pool
// cannot hold fails and gives its job back anyway.
const poolRuntimeTTL = time.Second

type poolRuntimeCache struct {
	mu sync.Mutex
	at time.Time
	rt types.ResourcePoolRuntimeInfo
}

// poolRuntime returns the resource pool runtime, read from vCenter at most once per
// poolRuntimeTTL. A failed read is not cached.
func (p *Provider) poolRuntime(ctx context.Context) (types.ResourcePoolRuntimeInfo, error) {
	c := &p.pool
	c.mu.Lock()
	defer c.mu.Unlock()
	now := p.now()
	if !c.at.IsZero() && now.Sub(c.at) < poolRuntimeTTL && !now.Before(c.at) {
		return c.rt, nil
	}
	rt, err := p.client.ResourcePoolRuntime(ctx)
	if err != nil {
		return rt, err
	}
	c.at, c.rt = now, rt
	return rt, nil
}

// New builds the provider. cfg is the [hatchery.vsphere] table, already validated; logger
// nil means a default logger and now nil means time.Now.
func New(cfg config.VSphere, client vsphere.VSphereClient, logger *log.Logger, now func() time.Time) (*Provider, error) {
	if logger == nil {
		logger = log.New()
	}
	registerLogFields(logger)
	if now == nil {
		now = time.Now
	}
	var candidates []string
	if cfg.IPRange != "" {
		addrs, err := config.ParseIPRange(cfg.IPRange)
		if err != nil {
			return nil, fmt.Errorf("iprange %q: %w", cfg.IPRange, err)
		}
		candidates = make([]string, len(addrs))
		for i, a := range addrs {
			candidates[i] = a.String()
		}
	}
	breaker := NewBreaker(cfg.CircuitBreakerFailures, now)
	limits := NewLimits(cfg.CloneLimit(), cfg.PowerOpLimit(), cfg.DeletionLimit())
	return &Provider{
		cfg:     cfg,
		client:  newGuardedClient(client, limits, breaker),
		log:     logger,
		now:     now,
		ips:     NewIPPool(candidates, now),
		caches:  NewCaches(),
		errors:  newVMErrors(),
		breaker: breaker,
		limits:  limits,
		jobs:    newJobWatch(),
	}, nil
}

func (p *Provider) hatcheryName() string { return p.cfg.CommonConfiguration.Name }

// ModelType is the worker model type served: "vsphere".
func (p *Provider) ModelType() string { return cds.ModelTypeVSphere }

// inventory lists the VMs with the narrow property set. A failed listing is an error, never
// an empty inventory: the original took a timed-out listing for an empty vCenter and rebuilt
// templates for nothing.
func (p *Provider) inventory(ctx context.Context) (Inventory, error) {
	vms, err := p.client.ListVirtualMachinesProperties(ctx, InventoryProperties...)
	if err != nil {
		return nil, fmt.Errorf("list virtual machines: %w", err)
	}
	return NewInventory(vms), nil
}

// WorkersStarted lists the VMs of this hatchery that hold a worker (Inventory.WorkersStarted,
// fix of Q4).
func (p *Provider) WorkersStarted(ctx context.Context) ([]string, error) {
	inv, err := p.inventory(ctx)
	if err != nil {
		return nil, err
	}
	return inv.WorkersStarted(p.hatcheryName()), nil
}

// NeedRegistration tells whether a v1 model's template must be (re)built (protocol spec
// §18.5): no CDS template named after the model, the API asks for it, or the template was
// built from an older version of the model. A template marked for deletion is being replaced
// already. When vCenter cannot be listed the answer is false: a rebuild decided on a failed
// listing would replace a good template.
func (p *Provider) NeedRegistration(ctx context.Context, model *cds.Model) bool {
	if model == nil {
		return false
	}
	ctx = context.WithValue(ctx, fieldModel, model.GroupPath())
	inv, err := p.inventory(ctx)
	if err != nil {
		p.log.Warn(ctx, "need registration of model %q: %v", model.GroupPath(), err)
		return false
	}
	tpl, ok := inv.ModelTemplate(model.Name)
	if !ok {
		return true
	}
	if p.caches.ToDelete.Has(tpl.Name) {
		return false
	}
	outdated := strconv.FormatInt(model.UserLastModified.Unix(), 10) != tpl.Annotation.WorkerModelLastModified
	return model.NeedRegistration || outdated
}

// DefaultModelV2Name picks the v2 model a v1 job without model requirement runs on
// (protocol spec §9.3): with no binary requirement the first defaultWorkerModelsV2 entry,
// else the first entry listing any of the job's binaries, else "".
func (p *Provider) DefaultModelV2Name(ctx context.Context, requirements []cds.Requirement) string {
	defaults := p.cfg.DefaultWorkerModelsV2
	var binaries []string
	for _, r := range requirements {
		if r.Type == cds.RequirementBinary {
			binaries = append(binaries, r.Value)
		}
	}
	if len(binaries) == 0 {
		if len(defaults) == 0 {
			return ""
		}
		return defaults[0].WorkerModelV2
	}
	for _, d := range defaults {
		for _, b := range binaries {
			if slices.Contains(d.Binaries, b) {
				return d.WorkerModelV2
			}
		}
	}
	return ""
}

// CanSpawn applies the rules of CanSpawn (protocol spec §18.3). The rules that need no
// inventory run first, so an unsupported job costs no vCenter call; the others share one
// listing. A failed listing refuses the job for this round.
func (p *Provider) CanSpawn(ctx context.Context, model *hatchery.WorkerStarterWorkerModel, jobID string, requirements []cds.Requirement) bool {
	ctx = context.WithValue(ctx, fieldJobID, jobID)
	check := SpawnCheck{
		Model:           model,
		JobID:           jobID,
		Requirements:    requirements,
		SpawnInProgress: p.caches.SpawnInProgress.Has(jobID),
	}
	if d := CanSpawn(check); !d.Allow {
		p.log.Debug(ctx, "cannot spawn: %s", d.Reason)
		return false
	}
	inv, err := p.inventory(ctx)
	if err != nil {
		p.log.Warn(ctx, "cannot spawn: %v", err)
		return false
	}
	check.Inventory = inv
	check.IPExhausted = p.ips.Enabled() && !p.ips.HasFree(inv.UsedIPs()...)
	d := CanSpawn(check)
	if !d.Allow {
		p.log.Debug(ctx, "cannot spawn: %s", d.Reason)
	}
	return d.Allow
}

// CanAllocateResources tells whether one more worker of the model fits now (protocol spec
// §18.4); never while the vCenter circuit breaker is open. One listing for the template footprint and the hatchery's used resources, one
// read of the resource pool. A failed listing is an error (the job is retried on a later
// round); an unreadable resource pool only leaves the static limits.
func (p *Provider) CanAllocateResources(ctx context.Context, model *hatchery.WorkerStarterWorkerModel, jobID string, requirements []cds.Requirement) (bool, error) {
	ctx = context.WithValue(ctx, fieldJobID, jobID)
	if ok, reason := p.breaker.Accepting(); !ok {
		// Not even a listing: vCenter is failing, and a job booked now could not be served.
		p.log.Debug(ctx, "cannot allocate resources: vCenter %s", reason)
		return false, nil
	}
	in := CapacityInput{
		FlavorName:               FlavorName(model, requirements, p.cfg.DefaultFlavor),
		Flavors:                  p.cfg.Flavors,
		MaxCPUs:                  p.cfg.MaxCPUs,
		MaxMemoryMB:              p.cfg.MaxMemoryMB,
		CountSmallerFlavorToKeep: p.cfg.CountSmallerFlavorToKeep,
	}
	if in.FlavorName != "" {
		if _, ok := LookupFlavor(in.Flavors, in.FlavorName); !ok {
			// A configuration problem, not a capacity one: say it loudly (fix of Q12).
			d := CanAllocate(in)
			p.log.Warn(ctx, "cannot allocate resources: %s", d.Reason)
			return false, nil
		}
	}
	inv, err := p.inventory(ctx)
	if err != nil {
		return false, fmt.Errorf("can allocate resources for job %s: %w", jobID, err)
	}
	if tpl, ok := inv.Find(sourceVMName(model)); ok && tpl.Name != "" && (tpl.NumCPU > 0 || tpl.MemoryMB > 0) {
		in.TemplateKnown, in.TemplateCPUs, in.TemplateMemoryMB = true, tpl.NumCPU, tpl.MemoryMB
	}
	in.UsedCPUs, in.UsedMemoryMB = inv.UsedResources(p.hatcheryName())
	rt, err := p.poolRuntime(ctx)
	if err != nil {
		p.log.Warn(ctx, "resource pool runtime unreadable, checking static limits only: %v", err)
	} else {
		in.PoolKnown = true
		in.PoolCPUUnreservedForVM = rt.Cpu.UnreservedForVm
		in.PoolMemoryUnreservedForVM = rt.Memory.UnreservedForVm
	}
	d := CanAllocate(in)
	if !d.Allow {
		p.log.Info(ctx, "cannot allocate resources: %s", d.Reason)
	} else {
		p.log.Debug(ctx, "can allocate resources: %s", d.Reason)
	}
	return d.Allow, nil
}

// sourceVMName is the VM a worker of the model is cloned from, as named by the model: the v2
// spec image or the v1 model's image ("" when the model names none).
func sourceVMName(model *hatchery.WorkerStarterWorkerModel) string {
	switch {
	case model == nil:
		return ""
	case model.IsV2():
		return model.VSphereSpec.Image
	case model.ModelV1 != nil:
		return model.ModelV1.ModelVirtualMachine.Image
	}
	return ""
}
