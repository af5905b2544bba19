package vspherehatchery

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/vmware/govmomi/vim25/types"

	"github.com/hatchery-vsphere/hatchery-vsphere/internal/cds"
	"github.com/hatchery-vsphere/hatchery-vsphere/internal/hatchery"
	"github.com/hatchery-vsphere/hatchery-vsphere/internal/lifecycle"
	"github.com/hatchery-vsphere/hatchery-vsphere/internal/vsphere"
)

// awolEventTypes are the events the AWOL pass reads to date a VM's life.
var awolEventTypes = []string{"VmStartingEvent", "VmPoweredOffEvent", "VmRenamedEvent"}

// killAwolServers deletes this hatchery's VMs that are done or lost (protocol spec §18.9,
// seed §8.1), from one worker list and one listing. For each non-template VM annotated with
// this hatchery's name:
//
//  1. marked for deletion → deleted;
//  2. CDS templates (model: true) → kept; provision-… VMs → see reviewProvisioned
//     (deprovisioning, half-provisioned VMs after a restart, abandoned claims);
//  3. its latest start, power-off and rename events are read, ignoring the events of its
//     provisioning life (message containing "provision-"); no event → kept;
//  4. renamed, never started, rename older than workerRegistrationTTL → deleted;
//  5. never started → kept, unless powered off and older than taskTimeout +
//     workerRegistrationTTL (a clone whose power-on never came: leaked);
//  6. worker known by the API → deleted once start + workerTTL has passed;
//  7. worker unknown by the API → deleted finishedWorkerGracePeriod after its power-off (job
//     done; the original deleted at once, or at the next 2-minute pass), or once start +
//     workerRegistrationTTL has passed (it never registered).
//
// Every rule counts from an event at or after the VM's creation (or its claim), so the events
// are read only for the VMs old enough for a rule to fire: not one events query per VM per
// pass. A job whose VM died before its worker registered is released (jobWatch). The
// deletions run concurrently, bounded by maxConcurrentDeletions.
//
// A failed listing or worker list skips the pass. Unlike the original, a VM whose events
// cannot be read does not stop the pass: the others are still examined, and the errors are
// returned together.
func (o *Orchestrator) killAwolServers(ctx context.Context, svc hatchery.Services) error {
	registered, err := svc.RegisteredWorkerNames(ctx)
	if err != nil {
		return fmt.Errorf("AWOL pass: list workers: %w", err)
	}
	listing := o.jobs.beginListing()
	inv, err := o.inventory(ctx)
	if err != nil {
		return fmt.Errorf("AWOL pass: %w", err)
	}
	now := o.now()
	var (
		errs    []error
		actions []cleanupAction
	)
	for _, vm := range inv {
		if vm.Template || !vm.OwnedBy(o.hatcheryName()) {
			continue
		}
		vctx := vmLogContext(ctx, vm)
		if o.caches.ToDelete.Has(vm.Name) {
			actions = append(actions, o.deletion(vm, "marked for deletion"))
			continue
		}
		if vm.Annotation.Model {
			if o.abandonedBuild(vm, now) {
				actions = append(actions, o.deletion(vm, "template build abandoned"))
			}
			continue
		}
		if strings.HasPrefix(vm.Name, ProvisionPrefix) {
			continue
		}
		_, isRegistered := registered[vm.Name]
		if o.leftByEarlierRun(vm, isRegistered) {
			awaits, err := svc.JobAwaitsWorker(vctx, vm.Annotation.JobID, vm.Annotation.JobRegion)
			if err != nil {
				errs = append(errs, fmt.Errorf("AWOL pass: job %s of VM %q: %w", vm.Annotation.JobID, vm.Name, err))
				continue
			}
			if !awaits {
				actions = append(actions, o.deletion(vm, fmt.Sprintf("left by an earlier run before its worker registered; job %s no longer waits for it", vm.Annotation.JobID)))
				continue
			}
		}
		reason, err := o.awolDecision(vctx, vm, isRegistered, now)
		if err != nil {
			errs = append(errs, fmt.Errorf("AWOL pass: %w", err))
			continue
		}
		if o.observeJobVM(vm, isRegistered, reason != "") {
			why := "powered off"
			if vm.PowerState != types.VirtualMachinePowerStatePoweredOff {
				why = "deleted (" + reason + ")"
			}
			o.releaseJob(vctx, svc, vm.Name, why)
		}
		if reason != "" {
			actions = append(actions, o.deletion(vm, reason))
		}
	}
	actions = append(actions, o.reviewProvisioned(inv, now)...)
	for name, j := range o.jobs.vanished(func(name string) bool { _, ok := inv.Find(name); return ok }, listing) {
		if o.caches.SpawnInProgress.Has(j.jobID) {
			continue
		}
		o.releaseWatched(context.WithValue(ctx, fieldVMName, name), svc, name, j, "disappeared")
	}
	errs = append(errs, o.runCleanupActions(ctx, svc, actions))
	return errors.Join(errs...)
}

// abandonedBuild tells whether a VM annotated as a CDS template is a build that will never
// finish: not a template (yet), named <model>-tmp or already <model>, and not being built by
// this process, begun by an earlier run (a crash mid-build) or longer ago than a build may
// take (a build whose rename or mark as template failed without its rollback knowing
// under which name the VM is). It would keep the model from registering and its v1 jobs
// from starting for ever.
func (o *Orchestrator) abandonedBuild(vm VM, now time.Time) bool {
	if vm.Template || o.building.Has(strings.TrimSuffix(vm.Name, TmpSuffix)) {
		return false
	}
	created := vm.Annotation.Created
	return created.Before(o.started) || now.Sub(created) > o.timings.TemplateBuild
}

// leftByEarlierRun tells whether a powered-on worker VM of a job was made (or claimed) by an
// earlier run of this hatchery and its worker has not registered: the spawn that made it
// died with that run, so whether its worker was ever launched is unknown. Such a VM is kept
// only while its job still waits for a worker of this hatchery; otherwise (the job was
// released at shutdown, served elsewhere, or is gone) it is deleted at once so that the job
// can be served again, instead of after workerRegistrationTTL.
func (o *Orchestrator) leftByEarlierRun(vm VM, registered bool) bool {
	a := vm.Annotation
	return !registered && a.JobID != "" && !IsRegistration(a.JobID) &&
		vm.PowerState == types.VirtualMachinePowerStatePoweredOn &&
		born(a).Before(o.started) && !o.caches.SpawnInProgress.Has(a.JobID)
}

// cleanupAction is one change a cleanup pass makes to a VM (delete it, power it off).
type cleanupAction struct {
	vm     VM
	reason string
	run    func(ctx context.Context, svc hatchery.Services) error
}

func (o *Orchestrator) deletion(vm VM, reason string) cleanupAction {
	return cleanupAction{vm: vm, reason: reason, run: func(ctx context.Context, svc hatchery.Services) error {
		return o.deleteServer(ctx, svc, vm, reason)
	}}
}

// runCleanupActions runs the actions of a pass, at most maxConcurrentDeletions at once (the
// vCenter tasks they start are bounded by Limits anyway; this also bounds the lookups), and
// waits for them.
func (o *Orchestrator) runCleanupActions(ctx context.Context, svc hatchery.Services, actions []cleanupAction) error {
	var (
		wg   sync.WaitGroup
		mu   sync.Mutex
		errs []error
		sem  = make(chan struct{}, o.cfg.DeletionLimit())
	)
	for _, a := range actions {
		select {
		case sem <- struct{}{}:
		case <-ctx.Done():
			wg.Wait()
			return errors.Join(append(errs, ctx.Err())...)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			if err := a.run(vmLogContext(ctx, a.vm), svc); err != nil {
				mu.Lock()
				errs = append(errs, err)
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	return errors.Join(errs...)
}

// awolDecision returns why an own worker VM must be deleted, or "" to keep it. The events are
// read only when the VM is old enough for a rule to fire.
func (o *Orchestrator) awolDecision(ctx context.Context, vm VM, registered bool, now time.Time) (string, error) {
	r := awolRules{
		workerTTL:       o.cfg.WorkerTTLDuration(),
		registrationTTL: o.cfg.WorkerRegistrationTTLDuration(),
		grace:           o.timings.FinishedGrace,
		neverStarted:    o.cfg.TaskTimeoutDuration() + o.cfg.WorkerRegistrationTTLDuration(),
	}
	poweredOff := vm.PowerState == types.VirtualMachinePowerStatePoweredOff
	if !r.mayFire(vm.Annotation, registered, poweredOff, now) {
		return "", nil
	}
	life, err := o.vmLife(ctx, vm.Name)
	if vsphere.IsNotFound(err) {
		return "", nil // deleted meanwhile
	}
	if err != nil {
		return "", err
	}
	return r.reason(life, vm.Annotation, registered, poweredOff, now), nil
}

// vmLife is what the events tell of a VM: its latest start, power-off and rename (zero
// when none).
type vmLife struct {
	Started, PoweredOff, Renamed time.Time
}

func (o *Orchestrator) vmLife(ctx context.Context, name string) (vmLife, error) {
	vm, err := o.client.LoadVirtualMachine(ctx, name)
	if err != nil {
		return vmLife{}, err
	}
	events, err := o.client.LoadVirtualMachineEvents(ctx, vm, awolEventTypes...)
	if err != nil {
		return vmLife{}, err
	}
	var life vmLife
	latest := func(t *time.Time, e *types.Event) {
		if e.CreatedTime.After(*t) {
			*t = e.CreatedTime
		}
	}
	for _, be := range events {
		e := be.GetEvent()
		// The provisioning life of a reused VM (its first boot and power-off, its rename
		// from provision-…) says nothing about its worker.
		if strings.Contains(e.FullFormattedMessage, ProvisionPrefix) {
			continue
		}
		switch be.(type) {
		case *types.VmStartingEvent:
			latest(&life.Started, e)
		case *types.VmPoweredOffEvent:
			latest(&life.PoweredOff, e)
		case *types.VmRenamedEvent:
			latest(&life.Renamed, e)
		}
	}
	return life, nil
}

// awolRules are the delays of the AWOL rules.
type awolRules struct {
	workerTTL, registrationTTL, grace time.Duration
	// neverStarted is how long a powered-off VM that never started is kept.
	neverStarted time.Duration
}

// born is the earliest time any event of the VM's worker life can have: its creation, or the
// claim of a provisioned VM (whose creation is its provisioning).
func born(a Annotation) time.Time {
	if a.Claimed.After(a.Created) {
		return a.Claimed
	}
	return a.Created
}

// mayFire tells whether a rule could delete the VM now, judging from its annotation alone:
// each rule waits at least its delay after an event that cannot precede born.
func (r awolRules) mayFire(a Annotation, registered, poweredOff bool, now time.Time) bool {
	b := born(a)
	if b.IsZero() {
		return true
	}
	wait := r.registrationTTL
	switch {
	case registered:
		wait = r.workerTTL
	case poweredOff:
		wait = min(r.grace, r.registrationTTL, r.neverStarted)
	}
	return !now.Before(b.Add(wait))
}

// reason applies rules 4-7 of killAwolServers and returns why the VM must go, or "" to keep
// it.
func (r awolRules) reason(life vmLife, a Annotation, registered, poweredOff bool, now time.Time) string {
	if life.Started.IsZero() {
		if !life.Renamed.IsZero() && now.After(life.Renamed.Add(r.registrationTTL)) {
			return fmt.Sprintf("renamed %s ago and never started", now.Sub(life.Renamed).Round(time.Second))
		}
		if b := born(a); poweredOff && life.Renamed.IsZero() && !b.IsZero() && now.After(b.Add(r.neverStarted)) {
			return fmt.Sprintf("created %s ago and never started", now.Sub(b).Round(time.Second))
		}
		return ""
	}
	if registered {
		if now.After(life.Started.Add(r.workerTTL)) {
			return fmt.Sprintf("worker started %s ago, beyond workerTTL %s", now.Sub(life.Started).Round(time.Second), r.workerTTL)
		}
		return ""
	}
	if life.PoweredOff.After(life.Started) {
		if now.Sub(life.PoweredOff) >= r.grace {
			return fmt.Sprintf("finished worker (powered off %s ago)", now.Sub(life.PoweredOff).Round(time.Second))
		}
		return ""
	}
	if now.After(life.Started.Add(r.registrationTTL)) {
		return fmt.Sprintf("worker started %s ago and not registered within workerRegistrationTTL %s", now.Sub(life.Started).Round(time.Second), r.registrationTTL)
	}
	return ""
}

// deleteServer deletes a VM of this hatchery (protocol spec §18.9): for a register-… VM,
// report the model registration as failed if the model still needs it; power the VM off
// unless it is off already; forget its deletion mark; destroy it. A VM already gone is not
// an error.
func (o *Orchestrator) deleteServer(ctx context.Context, svc hatchery.Services, v VM, reason string) error {
	if !v.HasAnnotation {
		return nil
	}
	o.log.Debug(ctx, "deleting VM %q: %s", v.Name, reason)
	if strings.HasPrefix(v.Name, RegisterPrefix) {
		o.checkRegistrationFailed(ctx, svc, v)
	}
	vm, err := o.client.LoadVirtualMachine(ctx, v.Name)
	if vsphere.IsNotFound(err) {
		o.caches.ToDelete.Remove(v.Name)
		o.jobs.forget(v.Name)
		o.log.Debug(ctx, "VM %q already gone", v.Name)
		return nil
	}
	if err != nil {
		return fmt.Errorf("delete VM %q: %w", v.Name, err)
	}
	if v.PowerState != types.VirtualMachinePowerStatePoweredOff {
		if err := o.client.ShutdownVirtualMachine(ctx, vm); err != nil && !vsphere.IsNotFound(err) {
			// Destroy fails on a powered-on VM and says so; the next pass retries.
			o.log.Warn(ctx, "power off VM %q before deletion: %v", v.Name, err)
		} else if err == nil {
			o.log.Info(ctx, "VM %q powered off before deletion", v.Name)
		}
	}
	o.caches.ToDelete.Remove(v.Name)
	o.jobs.forget(v.Name)
	if err := o.client.DestroyVirtualMachine(ctx, vm); err != nil && !vsphere.IsNotFound(err) {
		// Marked again so that the next pass retries whatever the VM's age.
		o.caches.ToDelete.Add(v.Name)
		return fmt.Errorf("delete VM %q: %w", v.Name, err)
	}
	o.log.Info(ctx, "VM %q deleted: %s", v.Name, reason)
	// The VM is gone: so is any claim on its address, even if no listing saw it in use
	// (a spawn that failed right after its clone would otherwise hold it for 5 minutes).
	if ip := v.Annotation.IPAddress; ip != "" {
		o.ips.Release(ip)
	}
	lifecycle.RecordDeletion(ctx, deletionKind(reason))
	return nil
}

// deletionKind maps the reason of a deletion to the closed set of the deletions metric.
func deletionKind(reason string) string {
	switch {
	case strings.HasPrefix(reason, "marked"):
		return lifecycle.DeletionMarked
	case strings.HasPrefix(reason, "disabled"):
		return lifecycle.DeletionDisabled
	case strings.HasPrefix(reason, "worker done"), strings.HasPrefix(reason, "finished"):
		return lifecycle.DeletionFinished
	case strings.Contains(reason, "beyond workerTTL"):
		return lifecycle.DeletionExpired
	}
	return lifecycle.DeletionAWOL
}

// checkRegistrationFailed reports a model registration as failed when its registering VM
// is deleted while the model still needs registration (protocol spec §13.3): checked in the
// cached models, then confirmed on a fresh list.
func (o *Orchestrator) checkRegistrationFailed(ctx context.Context, svc hatchery.Services, v VM) {
	path := v.Annotation.WorkerModelPath
	needs := func(models []cds.Model) bool {
		for _, m := range models {
			if m.GroupPath() == path {
				return m.NeedRegistration
			}
		}
		return false
	}
	if !needs(svc.CachedWorkerModels()) {
		return
	}
	models, err := svc.RefreshWorkerModels(ctx)
	if err != nil {
		o.log.Warn(ctx, "registration check of model %q: %v", path, err)
		return
	}
	if !needs(models) {
		return
	}
	group, name, _ := strings.Cut(path, "/")
	msg := fmt.Sprintf("worker model registration failed: VM %q was deleted before the worker registered the model", v.Name)
	if err := svc.ReportModelSpawnError(ctx, group, name, msg); err != nil {
		o.log.Error(ctx, "report registration failure of model %q: %v", path, err)
		return
	}
	o.log.Warn(ctx, "registration of model %q failed (VM %q)", path, v.Name)
}

// killDisabledWorkers marks for deletion the VMs of this hatchery whose worker the API has
// disabled (protocol spec §18.9); the next AWOL pass deletes them.
func (o *Orchestrator) killDisabledWorkers(ctx context.Context, svc hatchery.Services) error {
	disabled, err := svc.WorkerPool(ctx, cds.StatusDisabled)
	if err != nil {
		return fmt.Errorf("disabled workers: %w", err)
	}
	if len(disabled) == 0 {
		return nil
	}
	inv, err := o.inventory(ctx)
	if err != nil {
		return fmt.Errorf("disabled workers: %w", err)
	}
	for _, w := range disabled {
		vm, ok := inv.Find(w.Name)
		if !ok || vm.Template || !vm.OwnedBy(o.hatcheryName()) {
			continue
		}
		if o.caches.ToDelete.Add(vm.Name) {
			o.log.Info(vmLogContext(ctx, vm), "VM %q marked for deletion: worker disabled", vm.Name)
		}
	}
	return nil
}
