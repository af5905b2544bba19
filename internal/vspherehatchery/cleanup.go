package vspherehatchery

import (
	"context"
	"errors"
	"fmt"
	"strings"
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
// seed §8.1). For each non-template VM annotated with this hatchery's name:
//
//  1. marked for deletion → deleted;
//  2. provision-… VMs and CDS templates (model: true) → kept;
//  3. its latest start, power-off and rename events are read, ignoring the events of its
//     provisioning life (message containing "provision-"); no event → kept;
//  4. renamed, never started, rename older than workerRegistrationTTL → deleted;
//  5. never started → kept;
//  6. worker known by the API → deleted once start + workerTTL has passed;
//  7. worker unknown by the API → deleted if powered off after its start (job done), or
//     once start + workerRegistrationTTL has passed (it never registered).
//
// A failed listing or worker list skips the pass. Unlike the original, a VM whose events
// cannot be read does not stop the pass: the others are still examined, and the errors
// are returned together.
func (o *Orchestrator) killAwolServers(ctx context.Context, svc hatchery.Services) error {
	registered, err := svc.RegisteredWorkerNames(ctx)
	if err != nil {
		return fmt.Errorf("AWOL pass: list workers: %w", err)
	}
	inv, err := o.inventory(ctx)
	if err != nil {
		return fmt.Errorf("AWOL pass: %w", err)
	}
	now := o.now()
	workerTTL := o.cfg.WorkerTTLDuration()
	registrationTTL := o.cfg.WorkerRegistrationTTLDuration()
	var errs []error
	for _, vm := range inv {
		if vm.Template || !vm.OwnedBy(o.hatcheryName()) {
			continue
		}
		vctx := context.WithValue(ctx, fieldVMName, vm.Name)
		if o.caches.ToDelete.Has(vm.Name) {
			errs = append(errs, o.deleteServer(vctx, svc, vm, "marked for deletion"))
			continue
		}
		if strings.HasPrefix(vm.Name, ProvisionPrefix) || vm.Annotation.Model {
			continue
		}
		life, err := o.vmLife(vctx, vm.Name)
		if vsphere.IsNotFound(err) {
			continue // deleted meanwhile
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("AWOL pass: %w", err))
			continue
		}
		reason := awolReason(life, now, registered, vm.Name, workerTTL, registrationTTL)
		if reason == "" {
			continue
		}
		errs = append(errs, o.deleteServer(vctx, svc, vm, reason))
	}
	return errors.Join(errs...)
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

// awolReason applies rules 4-7 of killAwolServers and returns why the VM must go, or ""
// to keep it.
func awolReason(life vmLife, now time.Time, registered map[string]struct{}, name string, workerTTL, registrationTTL time.Duration) string {
	if life.Started.IsZero() {
		if !life.Renamed.IsZero() && now.After(life.Renamed.Add(registrationTTL)) {
			return fmt.Sprintf("renamed %s ago and never started", now.Sub(life.Renamed).Round(time.Second))
		}
		return ""
	}
	if _, ok := registered[name]; ok {
		if now.After(life.Started.Add(workerTTL)) {
			return fmt.Sprintf("worker started %s ago, beyond workerTTL %s", now.Sub(life.Started).Round(time.Second), workerTTL)
		}
		return ""
	}
	if life.PoweredOff.After(life.Started) {
		return "worker done (powered off)"
	}
	if now.After(life.Started.Add(registrationTTL)) {
		return fmt.Sprintf("worker started %s ago and not registered within workerRegistrationTTL %s", now.Sub(life.Started).Round(time.Second), registrationTTL)
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
	o.log.Info(ctx, "deleting VM %q: %s", v.Name, reason)
	if strings.HasPrefix(v.Name, RegisterPrefix) {
		o.checkRegistrationFailed(ctx, svc, v)
	}
	vm, err := o.client.LoadVirtualMachine(ctx, v.Name)
	if vsphere.IsNotFound(err) {
		o.caches.ToDelete.Remove(v.Name)
		return nil
	}
	if err != nil {
		return fmt.Errorf("delete VM %q: %w", v.Name, err)
	}
	if v.PowerState != types.VirtualMachinePowerStatePoweredOff {
		if err := o.client.ShutdownVirtualMachine(ctx, vm); err != nil && !vsphere.IsNotFound(err) {
			// Destroy fails on a powered-on VM and says so; the next pass retries.
			o.log.Warn(ctx, "power off VM %q before deletion: %v", v.Name, err)
		}
	}
	o.caches.ToDelete.Remove(v.Name)
	if err := o.client.DestroyVirtualMachine(ctx, vm); err != nil && !vsphere.IsNotFound(err) {
		// Marked again so that the next pass retries whatever the VM's age.
		o.caches.ToDelete.Add(v.Name)
		return fmt.Errorf("delete VM %q: %w", v.Name, err)
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
			o.log.Info(context.WithValue(ctx, fieldVMName, vm.Name), "VM %q marked for deletion: worker disabled", vm.Name)
		}
	}
	return nil
}
