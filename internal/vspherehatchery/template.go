package vspherehatchery

import (
	"context"
	"fmt"

	"github.com/vmware/govmomi/object"

	"github.com/hatchery-vsphere/hatchery-vsphere/internal/hatchery"
	"github.com/hatchery-vsphere/hatchery-vsphere/internal/vsphere"
)

// buildTemplate builds the vSphere template of a v1 model (protocol spec §18.6, seed §4.1):
// clone the model's image to <model>-tmp with a `model: true` annotation, run only the
// model's post-command in the guest (it is expected to shut the VM down), wait for the
// power-off, replace the previous template, rename <model>-tmp to <model> and mark it as a
// template. It returns the new template, from which the registering worker is then cloned
// (the original returned the image, Q8).
//
// One build per model at a time in this process; CanSpawn keeps registrations away while
// <model>-tmp exists.
func (o *Orchestrator) buildTemplate(ctx context.Context, model *hatchery.WorkerStarterWorkerModel, inv Inventory) (*object.VirtualMachine, error) {
	m := model.ModelV1
	name := m.Name
	tmpName := name + TmpSuffix
	if !o.building.Add(name) {
		return nil, fmt.Errorf("template of model %q is already being built", model.Name())
	}
	defer o.building.Remove(name)

	ctx, cancel := context.WithTimeout(ctx, o.timings.TemplateBuild)
	defer cancel()
	ctx = context.WithValue(ctx, fieldVMName, tmpName)

	image := m.ModelVirtualMachine.Image
	if image == "" {
		return nil, fmt.Errorf("build template of model %q: the model has no image", model.Name())
	}
	creds, err := o.credentialsFor(model)
	if err != nil {
		return nil, fmt.Errorf("build template of model %q: %w", model.Name(), err)
	}
	source, err := o.client.LoadVirtualMachine(ctx, image)
	if err != nil {
		return nil, fmt.Errorf("build template of model %q: image: %w", model.Name(), err)
	}
	ip, err := o.reserveIP(inv)
	if err != nil {
		return nil, fmt.Errorf("build template of model %q: %w", model.Name(), err)
	}
	vm, err := o.clone(ctx, cloneRequest{
		Name:       tmpName,
		Source:     source,
		SourceName: image,
		Annotation: Annotation{
			HatcheryName:            o.hatcheryName(),
			WorkerModelLastModified: lastModified(m),
			WorkerModelPath:         m.GroupPath(),
			Model:                   true,
			Created:                 o.now(),
			IPAddress:               ip,
		},
		FixedIP: ip,
	})
	if err != nil {
		if ip != "" {
			o.ips.Release(ip)
		}
		return nil, fmt.Errorf("build template of model %q: %w", model.Name(), err)
	}
	o.log.Info(ctx, "VM %q cloned from %q and powered on to build the template of model %q", tmpName, image, model.Name())

	current := tmpName
	// A template holds no address: the build VM's is given back once the VM is off, whether
	// it became the template, is marked for deletion, or is a template after all because the
	// answer to its mark as template was lost.
	releaseIP := func() {
		if ip != "" {
			o.ips.Release(ip)
		}
	}
	fail := func(err error) (*object.VirtualMachine, error) {
		err = fmt.Errorf("build template of model %q: %w", model.Name(), err)
		if o.rollback(ctx, vm, current, err) {
			releaseIP()
		}
		return nil, err
	}
	session, err := o.waitReady(ctx, vm, tmpName, ip, creds)
	if err != nil {
		return fail(err)
	}
	if err := session.launch(ctx, m.ModelVirtualMachine.PostCmd, nil); err != nil {
		return fail(err)
	}
	wctx, wcancel := context.WithTimeout(ctx, o.timings.TemplatePowerOff)
	err = o.client.WaitForVirtualMachineShutdown(wctx, vm)
	wcancel()
	if err != nil {
		return fail(fmt.Errorf("VM %q did not power off after the post-command: %w", tmpName, err))
	}
	o.log.Info(ctx, "VM %q powered off by the post-command of model %q", tmpName, model.Name())
	if _, ok := inv.ModelTemplate(name); ok {
		if err := o.destroyByName(ctx, name); err != nil {
			return fail(fmt.Errorf("delete the previous template: %w", err))
		}
		o.log.Info(context.WithValue(ctx, fieldVMName, name), "previous template %q of model %q deleted", name, model.Name())
	}
	if err := o.client.RenameVirtualMachine(ctx, vm, name); err != nil {
		// A rename whose answer was lost (a dropped connection) may have happened: the
		// rollback marks the VM under both names, and the cleanup pass deletes whichever
		// exists (never a template).
		o.markForDeletion(name)
		return fail(err)
	}
	current = name
	ctx = context.WithValue(ctx, fieldVMName, name)
	if err := o.client.MarkVirtualMachineAsTemplate(ctx, vm); err != nil {
		return fail(err)
	}
	releaseIP()
	o.log.Info(ctx, "template %q of model %q built (VM %q renamed and marked as template)", name, model.Name(), tmpName)
	return vm, nil
}

// destroyByName destroys the VM named name; a VM already gone is not an error.
func (o *Orchestrator) destroyByName(ctx context.Context, name string) error {
	vm, err := o.client.LoadVirtualMachine(ctx, name)
	if vsphere.IsNotFound(err) {
		return nil
	}
	if err != nil {
		return err
	}
	if err := o.client.DestroyVirtualMachine(ctx, vm); err != nil && !vsphere.IsNotFound(err) {
		return err
	}
	return nil
}
