package vspherehatchery

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/rockbears/log"
	"github.com/vmware/govmomi/object"
	"github.com/vmware/govmomi/vim25/types"

	"github.com/hatchery-vsphere/hatchery-vsphere/internal/cds"
	"github.com/hatchery-vsphere/hatchery-vsphere/internal/config"
	"github.com/hatchery-vsphere/hatchery-vsphere/internal/hatchery"
	"github.com/hatchery-vsphere/hatchery-vsphere/internal/lifecycle"
)

// rollbackTimeout bounds the power-off of a failed VM.
const rollbackTimeout = 2 * time.Minute

// Log fields of the orchestration (the framework registers "worker"; "vm" is ours).
var (
	fieldWorkerName = log.Field("worker")
	fieldVMName     = log.Field("vm")
)

// SpawnWorker starts a worker VM for args and launches the worker in it (protocol spec
// §18.6, seed §6.2):
//
//  1. job ID "0" is only valid for a registration; a real job ID is held in the
//     spawn-in-progress set for the call (never two VMs for one job);
//  2. the flavor is resolved (an unknown flavor is an error naming it) and, for a v2 job,
//     announced in the job's infos;
//  3. the source VM: the v2 spec image (must exist), or the v1 model's template, built
//     first when missing or outdated (the new template is then used, fix of Q8);
//  4. a powered-off provisioned VM of the model is reused when one can be claimed
//     (reconfigured to the flavor, renamed, powered on), else the source is cloned;
//  5. the guest is waited for and the launch script started in it.
//
// Once a VM exists, any failure powers it off and marks it for deletion before the error is
// returned, so the framework can release the job.
func (o *Orchestrator) SpawnWorker(ctx context.Context, args hatchery.SpawnArguments) (err error) {
	defer func() { lifecycle.RecordSpawn(ctx, spawnResult(err)) }()
	model := args.Model
	if model == nil || (model.ModelV1 == nil && model.ModelV2 == nil) {
		return fmt.Errorf("spawn worker %q: no worker model", args.WorkerName)
	}
	ctx = o.withHatchery(ctx)
	ctx = context.WithValue(ctx, fieldWorkerName, args.WorkerName)
	ctx = context.WithValue(ctx, fieldJobID, args.JobID)
	ctx = context.WithValue(ctx, fieldModel, model.Name())

	if args.JobID == "0" && !args.RegisterOnly {
		return fmt.Errorf("spawn worker %q: job ID 0 is only valid for a model registration", args.WorkerName)
	}
	if args.JobID != "0" && args.JobID != "" {
		if !o.caches.SpawnInProgress.Add(args.JobID) {
			return fmt.Errorf("spawn worker %q: a worker is already being spawned for job %s", args.WorkerName, args.JobID)
		}
		defer o.caches.SpawnInProgress.Remove(args.JobID)
		// Watched before the job leaves the spawn-in-progress set: from then on a death of
		// the VM releases the job (jobwatch.go).
		defer func() {
			if err == nil {
				o.watchSpawned(args)
			}
		}()
	}
	if args.RegisterOnly && model.IsV2() {
		return fmt.Errorf("spawn worker %q: v2 model %q cannot be registered", args.WorkerName, model.Name())
	}

	flavor, err := o.resolveFlavor(model, args.Requirements)
	if err != nil {
		return fmt.Errorf("spawn worker %q: %w", args.WorkerName, err)
	}
	creds, err := o.credentialsFor(model)
	if err != nil {
		return fmt.Errorf("spawn worker %q: %w", args.WorkerName, err)
	}
	if model.IsV2() && cds.IsUUID(args.JobID) {
		o.announceFlavor(ctx, args, flavor)
	}

	inv, err := o.inventory(ctx)
	if err != nil {
		return fmt.Errorf("spawn worker %q: %w", args.WorkerName, err)
	}
	source, sourceName, built, err := o.sourceVM(ctx, model, inv)
	if err != nil {
		return fmt.Errorf("spawn worker %q: %w", args.WorkerName, err)
	}
	if built {
		// The template build took minutes: the addresses in use have changed.
		if inv, err = o.inventory(ctx); err != nil {
			return fmt.Errorf("spawn worker %q: %w", args.WorkerName, err)
		}
	}

	if !args.RegisterOnly {
		if candidate, vm, ok := o.claimProvisioned(ctx, model, inv); ok {
			defer o.caches.ProvisioningUsing.Remove(candidate.Name)
			return o.reuseProvisioned(ctx, args, candidate, vm, flavor, creds)
		}
	}
	return o.spawnFromClone(ctx, args, source, sourceName, inv, flavor, creds)
}

// resolveFlavor returns the configured flavor the worker asks for, nil for the template's
// own size (seed §13.3 priority, see FlavorName).
func (o *Orchestrator) resolveFlavor(model *hatchery.WorkerStarterWorkerModel, requirements []cds.Requirement) (*config.Flavor, error) {
	name := FlavorName(model, requirements, o.cfg.DefaultFlavor)
	if name == "" {
		return nil, nil
	}
	f, ok := LookupFlavor(o.cfg.Flavors, name)
	if !ok {
		return nil, fmt.Errorf("flavor %q not found in configuration (configured: %s)", name, flavorNames(o.cfg.Flavors))
	}
	return &f, nil
}

// announceFlavor tells a v2 job which size its worker gets (protocol spec §18.6 step 5).
func (o *Orchestrator) announceFlavor(ctx context.Context, args hatchery.SpawnArguments, flavor *config.Flavor) {
	svc := o.services()
	if svc == nil {
		o.log.Debug(ctx, "no framework services yet: flavor info not sent")
		return
	}
	msg := fmt.Sprintf("Worker %q will use template resources (no flavor)", args.WorkerName)
	if flavor != nil {
		msg = fmt.Sprintf("Worker %q will use flavor %q (%d vCPUs, %d MB RAM)", args.WorkerName, flavor.Name, flavor.CPUs, flavor.MemoryMB)
	}
	svc.SendJobInfo(ctx, args.Region, args.JobID, cds.V2InfoLevelInfo, msg)
}

// sourceVM returns the VM to clone: the v2 spec image, or the v1 model's template, built
// when there is no CDS template of the model, the API asks for a registration or the
// template is older than the model. built tells that a template was just built.
func (o *Orchestrator) sourceVM(ctx context.Context, model *hatchery.WorkerStarterWorkerModel, inv Inventory) (vm *object.VirtualMachine, name string, built bool, err error) {
	if model.IsV2() {
		name = model.VSphereSpec.Image
		if name == "" {
			return nil, "", false, fmt.Errorf("v2 model %q has no image", model.Name())
		}
		vm, err = o.client.LoadVirtualMachine(ctx, name)
		if err != nil {
			return nil, "", false, fmt.Errorf("source VM of model %q: %w", model.Name(), err)
		}
		return vm, name, false, nil
	}
	m := model.ModelV1
	name = m.Name
	tpl, ok := inv.ModelTemplate(name)
	outdated := ok && tpl.Annotation.WorkerModelLastModified != lastModified(m)
	if !ok || m.NeedRegistration || outdated {
		vm, err = o.buildTemplate(ctx, model, inv)
		if err != nil {
			return nil, "", false, err
		}
		return vm, name, true, nil
	}
	vm, err = o.client.LoadVirtualMachine(ctx, name)
	if err != nil {
		return nil, "", false, fmt.Errorf("template of model %q: %w", model.Name(), err)
	}
	return vm, name, false, nil
}

// lastModified is the annotation form of a v1 model's last modification: decimal Unix
// seconds.
func lastModified(m *cds.Model) string {
	return strconv.FormatInt(m.UserLastModified.Unix(), 10)
}

// spawnFromClone clones the source into a new worker VM and launches the worker in it.
func (o *Orchestrator) spawnFromClone(ctx context.Context, args hatchery.SpawnArguments, source *object.VirtualMachine, sourceName string, inv Inventory, flavor *config.Flavor, creds guestCredentials) error {
	ip, err := o.reserveIP(inv)
	if err != nil {
		// Fix of Q16: the original returned success here and the job stayed booked with no
		// worker; an error makes the framework release it.
		return spawnFailed(lifecycle.SpawnCapacity, fmt.Errorf("spawn worker %q: %w", args.WorkerName, err))
	}
	model := args.Model
	a := Annotation{
		HatcheryName:    o.hatcheryName(),
		WorkerName:      args.WorkerName,
		RegisterOnly:    args.RegisterOnly,
		WorkerModelPath: model.Name(),
		VMwareModelPath: sourceName,
		Created:         o.now(),
		JobID:           args.JobID,
		IPAddress:       ip,
	}
	if !IsRegistration(args.JobID) {
		a.JobRegion = args.Region
	}
	if !model.IsV2() {
		a.WorkerModelLastModified = lastModified(model.ModelV1)
	}
	cloneStart := o.now()
	vm, err := o.clone(ctx, cloneRequest{
		Name:       args.WorkerName,
		Source:     source,
		SourceName: sourceName,
		Annotation: a,
		FixedIP:    ip,
		Flavor:     flavor,
	})
	if err != nil {
		if ip != "" {
			o.ips.Release(ip)
		}
		return spawnFailed(lifecycle.SpawnClone, fmt.Errorf("spawn worker %q: %w", args.WorkerName, err))
	}
	lifecycle.RecordCloneDuration(ctx, o.now().Sub(cloneStart))
	ctx = context.WithValue(ctx, fieldVMName, args.WorkerName)
	o.log.Info(ctx, "VM %q cloned from %q and powered on", args.WorkerName, sourceName)
	if err := o.startWorker(ctx, vm, args.WorkerName, ip, args, creds); err != nil {
		return o.abandon(ctx, vm, args.WorkerName, fmt.Errorf("spawn worker %q: %w", args.WorkerName, err))
	}
	return nil
}

// reserveIP takes a free address of iprange, atomically (fix of Q17); "" without iprange.
func (o *Orchestrator) reserveIP(inv Inventory) (string, error) {
	if !o.ips.Enabled() {
		return "", nil
	}
	ip, err := o.ips.FindAndReserve(inv.UsedIPs()...)
	if err != nil {
		return "", fmt.Errorf("reserve an IP address: %w", err)
	}
	return ip, nil
}

// startWorker waits for the guest of a powered-on VM and launches the worker script.
func (o *Orchestrator) startWorker(ctx context.Context, vm *object.VirtualMachine, name, ip string, args hatchery.SpawnArguments, creds guestCredentials) error {
	session, err := o.waitReady(ctx, vm, name, ip, creds)
	if err != nil {
		return err
	}
	if err := session.launch(ctx, args.LaunchScript, args.Env); err != nil {
		return spawnFailed(lifecycle.SpawnLaunch, err)
	}
	o.log.Info(ctx, "worker %q launched in VM %q", args.WorkerName, name)
	return nil
}

// claimProvisioned finds a provisioned VM of the model that may be reused and claims it in
// the "using" set (seed §6.3.4): first candidate that is still loadable and has been
// powered off at least once (its provisioning is complete). The caller releases the claim.
func (o *Orchestrator) claimProvisioned(ctx context.Context, model *hatchery.WorkerStarterWorkerModel, inv Inventory) (VM, *object.VirtualMachine, bool) {
	filter := ProvisionedFilter{
		HatcheryName: o.hatcheryName(),
		V2:           model.IsV2(),
		ModelPath:    model.Name(),
		Skip:         o.caches.ProvisionedBusy,
	}
	if model.IsV2() {
		filter.ModelPath = model.VSphereSpec.Image
	}
	for _, candidate := range inv.FindProvisioned(filter) {
		if !o.caches.ProvisioningUsing.Add(candidate.Name) {
			continue
		}
		vm, err := o.provisionedReady(ctx, candidate)
		if err != nil {
			o.caches.ProvisioningUsing.Remove(candidate.Name)
			o.log.Debug(ctx, "provisioned VM %q not reusable: %v", candidate.Name, err)
			continue
		}
		return candidate, vm, true
	}
	return VM{}, nil, false
}

var errNotPoweredOffYet = errors.New("never powered off (provisioning not finished)")

// provisionedReady loads a reuse candidate once its provisioning is known complete: from
// its "provisioned" stamp, or else (a VM of the original, or one whose stamp failed) from a
// VmPoweredOffEvent, as the original decides.
func (o *Orchestrator) provisionedReady(ctx context.Context, candidate VM) (*object.VirtualMachine, error) {
	vm, err := o.client.LoadVirtualMachine(ctx, candidate.Name)
	if err != nil {
		return nil, err
	}
	if !candidate.Annotation.Provisioned.IsZero() {
		return vm, nil
	}
	events, err := o.client.LoadVirtualMachineEvents(ctx, vm, "VmPoweredOffEvent")
	if err != nil {
		return nil, err
	}
	if len(events) == 0 {
		return nil, errNotPoweredOffYet
	}
	return vm, nil
}

// reuseProvisioned turns a claimed provisioned VM into the worker (protocol spec §18.6 step
// 6, seed §13.6): resize it to the flavor while it is off, rename it to the worker name,
// power it on, wait for its guest and launch the worker. The annotation keeps its
// provisioning keys (Q23) so the original still recognises the VM; it gains the job_id, so
// that after a restart no second VM is made for the job.
func (o *Orchestrator) reuseProvisioned(ctx context.Context, args hatchery.SpawnArguments, candidate VM, vm *object.VirtualMachine, flavor *config.Flavor, creds guestCredentials) error {
	ctx = context.WithValue(ctx, fieldVMName, candidate.Name)
	claimStart := o.now()
	current := candidate.Name
	fail := func(err error) error {
		return o.abandon(ctx, vm, current, fmt.Errorf("spawn worker %q on provisioned VM %q: %w", args.WorkerName, candidate.Name, err))
	}

	// The claim is stamped on the VM before anything else happens to it, in the same
	// reconfigure as the flavor: after a restart the inventory alone tells that the VM is
	// no longer idle, for which worker and job, and since when (reviewProvisioned,
	// killAwolServers).
	var spec types.VirtualMachineConfigSpec
	if flavor != nil {
		spec.NumCPUs, spec.MemoryMB = int32(flavor.CPUs), int64(flavor.MemoryMB)
	}
	a := candidate.Annotation
	a.Claimed, a.ClaimedBy = o.now(), args.WorkerName
	if !IsRegistration(args.JobID) {
		a.JobID, a.JobRegion = args.JobID, args.Region
	}
	annotation, err := a.Marshal()
	if err != nil {
		return fail(err)
	}
	spec.Annotation = annotation
	if err := o.client.ReconfigureVirtualMachine(ctx, vm, spec); err != nil {
		return fail(err)
	}
	o.log.Info(ctx, "provisioned VM %q claimed for worker %q", candidate.Name, args.WorkerName)
	if err := o.client.RenameVirtualMachine(ctx, vm, args.WorkerName); err != nil {
		return fail(err)
	}
	current = args.WorkerName
	// From here on the lines (and a rollback's) name the VM by its new name.
	ctx = context.WithValue(ctx, fieldVMName, current)
	o.log.Info(ctx, "provisioned VM %q renamed to %q", candidate.Name, args.WorkerName)
	// The original paused 2 s here; the rename task has completed, nothing to wait for.
	if err := o.client.StartVirtualMachine(ctx, vm); err != nil {
		return fail(spawnFailed(lifecycle.SpawnPowerOn, err))
	}
	lifecycle.RecordClaimLatency(ctx, o.now().Sub(claimStart))
	o.log.Info(ctx, "VM %q powered on (provisioned VM %q reused)", args.WorkerName, candidate.Name)
	if err := o.startWorker(ctx, vm, args.WorkerName, candidate.Annotation.IPAddress, args, creds); err != nil {
		return fail(err)
	}
	return nil
}

// abandon powers a failed VM off and marks it for deletion by the next cleanup pass, then
// returns cause. The power-off is best effort: the cleanup pass powers off again.
func (o *Orchestrator) abandon(ctx context.Context, vm *object.VirtualMachine, name string, cause error) error {
	o.rollback(ctx, vm, name, cause)
	return cause
}

// rollback is abandon, reporting whether the VM was powered off.
func (o *Orchestrator) rollback(ctx context.Context, vm *object.VirtualMachine, name string, cause error) (poweredOff bool) {
	// The spawn may have failed because ctx ended; the rollback must still happen.
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), rollbackTimeout)
	defer cancel()
	ctx = context.WithValue(ctx, fieldVMName, name)
	poweredOff = true
	if err := o.client.ShutdownVirtualMachine(rctx, vm); err != nil {
		poweredOff = false
		o.log.Warn(ctx, "power off failed VM %q: %v", name, err)
	}
	o.markForDeletion(name)
	if poweredOff {
		o.log.Info(ctx, "VM %q powered off and marked for deletion: %v", name, cause)
	} else {
		o.log.Info(ctx, "VM %q marked for deletion: %v", name, cause)
	}
	o.recordVMError(name, cause)
	return poweredOff
}

// markForDeletion records a VM for the next cleanup pass, which deletes it.
func (o *Orchestrator) markForDeletion(name string) {
	o.caches.ToDelete.Add(name)
}

// spawnFailure carries the stage at which a spawn failed, for the spawns metric.
type spawnFailure struct {
	stage string
	err   error
}

func (f *spawnFailure) Error() string { return f.err.Error() }
func (f *spawnFailure) Unwrap() error { return f.err }

func spawnFailed(stage string, err error) error { return &spawnFailure{stage: stage, err: err} }

// spawnResult is the spawns metric result of a SpawnWorker outcome.
func spawnResult(err error) string {
	if err == nil {
		return lifecycle.SpawnOK
	}
	var f *spawnFailure
	if errors.As(err, &f) {
		return f.stage
	}
	if errors.Is(err, ErrNoFreeIP) {
		return lifecycle.SpawnCapacity
	}
	return lifecycle.Other
}
