package vspherehatchery

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"

	"github.com/vmware/govmomi/object"
	"github.com/vmware/govmomi/vim25/types"

	"github.com/hatchery-vsphere/hatchery-vsphere/internal/cds"
	"github.com/hatchery-vsphere/hatchery-vsphere/internal/config"
	"github.com/hatchery-vsphere/hatchery-vsphere/internal/hatchery"
)

// provisionItem is one provisioned VM to create: from a vCenter VM (v2) or from the
// template of a v1 model.
type provisionItem struct {
	vmwareModel string     // v2: the source VM name (workerProvisioning.modelVMWare)
	model       *cds.Model // v1: the model, whose template <name> is the source
}

// provisionPass tops the provisioning pools up once (protocol spec §18.8, seed §6.3): the
// v2 pass, then the v1 pass when a v1 session exists (fix of Q25: the original crashed its
// provisioning loop without one). Each pass starts at most workerProvisioningPoolSize
// provisionings and waits for them.
func (o *Orchestrator) provisionPass(ctx context.Context, svc hatchery.Services) error {
	errV2 := o.provisionV2(ctx)
	var errV1 error
	if svc.HasV1() {
		errV1 = o.provisionV1(ctx, svc)
	}
	return errors.Join(errV2, errV1)
}

// provisionV2 queues, for each workerProvisioning entry with a modelVMWare, as many VMs as
// its provision-v2 pool lacks.
func (o *Orchestrator) provisionV2(ctx context.Context) error {
	if !slices.ContainsFunc(o.cfg.WorkerProvisioning, func(wp config.WorkerProvisioning) bool { return wp.ModelVMWare != "" && wp.Number != 0 }) {
		return nil
	}
	inv, err := o.inventory(ctx)
	if err != nil {
		return fmt.Errorf("provisioning v2: %w", err)
	}
	counts, _ := inv.ProvisionedCounts(o.hatcheryName())
	var queue []provisionItem
	for _, wp := range o.cfg.WorkerProvisioning {
		if wp.ModelVMWare == "" || wp.Number == 0 {
			continue
		}
		for range wp.Number - counts[wp.ModelVMWare] {
			queue = append(queue, provisionItem{vmwareModel: wp.ModelVMWare})
		}
	}
	return o.runProvisioning(ctx, inv, queue)
}

// provisionV1 queues, for each workerProvisioning entry with a modelPath <group>/<name>
// whose model is registered, as many VMs as its provision-v1 pool lacks, interleaving the
// models round-robin in configuration order.
func (o *Orchestrator) provisionV1(ctx context.Context, svc hatchery.Services) error {
	if !slices.ContainsFunc(o.cfg.WorkerProvisioning, func(wp config.WorkerProvisioning) bool { return wp.ModelPath != "" && wp.Number != 0 }) {
		return nil
	}
	inv, err := o.inventory(ctx)
	if err != nil {
		return fmt.Errorf("provisioning v1: %w", err)
	}
	_, counts := inv.ProvisionedCounts(o.hatcheryName())
	var perModel [][]provisionItem
	for _, wp := range o.cfg.WorkerProvisioning {
		if wp.ModelPath == "" || wp.Number == 0 {
			continue
		}
		group, name, ok := strings.Cut(wp.ModelPath, "/")
		if !ok || group == "" || name == "" || strings.Contains(name, "/") {
			o.log.Warn(ctx, "provisioning: modelPath %q is not <group>/<name>, skipped", wp.ModelPath)
			continue
		}
		deficit := wp.Number - counts[wp.ModelPath]
		if deficit <= 0 {
			continue
		}
		model, err := svc.WorkerModel(ctx, group, name)
		if err != nil {
			o.log.Warn(ctx, "provisioning: model %q: %v", wp.ModelPath, err)
			continue
		}
		if model.NeedRegistration || model.CheckRegistration {
			o.log.Info(ctx, "provisioning: model %q waits for its registration", wp.ModelPath)
			continue
		}
		items := make([]provisionItem, deficit)
		for i := range items {
			items[i] = provisionItem{model: &model}
		}
		perModel = append(perModel, items)
	}
	var queue []provisionItem
	for i := 0; ; i++ {
		added := false
		for _, items := range perModel {
			if i < len(items) {
				queue = append(queue, items[i])
				added = true
			}
		}
		if !added {
			break
		}
	}
	return o.runProvisioning(ctx, inv, queue)
}

// runProvisioning runs the first workerProvisioningPoolSize items of queue concurrently and
// waits for them.
func (o *Orchestrator) runProvisioning(ctx context.Context, inv Inventory, queue []provisionItem) error {
	queue = queue[:min(len(queue), o.cfg.ProvisioningPoolSize())]
	var (
		wg   sync.WaitGroup
		mu   sync.Mutex
		errs []error
	)
	for _, item := range queue {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := o.provisionOne(ctx, inv, item); err != nil {
				mu.Lock()
				errs = append(errs, err)
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	return errors.Join(errs...)
}

// provisionOne creates one provisioned VM: clone the source powered on (no flavor: a
// provisioned VM is sized when it is reused), wait for its guest and IP, power it off.
// Any failure after the clone marks the VM for deletion.
func (o *Orchestrator) provisionOne(ctx context.Context, inv Inventory, item provisionItem) error {
	prefix, sourceName := hatchery.PrefixProvisionV2, item.vmwareModel
	if item.model != nil {
		prefix, sourceName = hatchery.PrefixProvisionV1, item.model.Name
	}
	name := o.newName(prefix)
	o.caches.ProvisioningPending.Add(name)
	defer o.caches.ProvisioningPending.Remove(name)
	ctx = context.WithValue(ctx, fieldVMName, name)
	if item.model != nil {
		ctx = context.WithValue(ctx, fieldModel, item.model.GroupPath())
	} else {
		ctx = context.WithValue(ctx, fieldModel, item.vmwareModel)
	}

	source, err := o.client.LoadVirtualMachine(ctx, sourceName)
	if err != nil {
		return fmt.Errorf("provision %q: source: %w", name, err)
	}
	ip, err := o.reserveIP(inv)
	if err != nil {
		return fmt.Errorf("provision %q: %w", name, err)
	}
	a := Annotation{
		HatcheryName: o.hatcheryName(),
		WorkerName:   name,
		Provisioning: true,
		Created:      o.now(),
		IPAddress:    ip,
	}
	if item.model != nil {
		a.WorkerModelPath = item.model.GroupPath()
		a.WorkerModelLastModified = lastModified(item.model)
	} else {
		a.VMwareModelPath = item.vmwareModel
	}
	vm, err := o.clone(ctx, cloneRequest{Name: name, Source: source, SourceName: sourceName, Annotation: a, FixedIP: ip})
	if err != nil {
		if ip != "" {
			o.ips.Release(ip)
		}
		return fmt.Errorf("provision %q: %w", name, err)
	}
	o.log.Info(ctx, "VM %q cloned from %q and powered on for provisioning", name, sourceName)
	gctx, cancel := context.WithTimeout(ctx, o.timings.GuestReady)
	err = o.client.WaitForGuestOperationsReady(gctx, vm)
	cancel()
	if err == nil {
		err = o.waitIP(ctx, vm, name, ip)
	}
	if err == nil {
		err = o.client.ShutdownVirtualMachine(ctx, vm)
	}
	if err != nil {
		return o.abandon(ctx, vm, name, fmt.Errorf("provision %q: %w", name, err))
	}
	o.stampProvisioned(ctx, vm, a)
	o.log.Info(ctx, "VM %q provisioned from %q and powered off", name, sourceName)
	return nil
}

// stampProvisioned records on a powered-off provisioned VM that its provisioning is
// complete, so that a spawn reusing it reads that from the inventory instead of asking
// vCenter for the VM's events. Without the stamp the VM is still reusable (the events
// decide, as for the original's VMs): a failure is only logged.
func (o *Orchestrator) stampProvisioned(ctx context.Context, vm *object.VirtualMachine, a Annotation) {
	a.Provisioned = o.now()
	annotation, err := a.Marshal()
	if err == nil {
		err = o.client.ReconfigureVirtualMachine(ctx, vm, types.VirtualMachineConfigSpec{Annotation: annotation})
	}
	if err != nil {
		o.log.Warn(ctx, "VM %q: stamp its provisioning as complete: %v (its events will tell when it is reused)", a.WorkerName, err)
	}
}
