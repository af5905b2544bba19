package simenv

import (
	"context"
	"fmt"

	"github.com/vmware/govmomi/simulator"
	"github.com/vmware/govmomi/vim25/methods"
	"github.com/vmware/govmomi/vim25/types"
	"golang.org/x/sync/errgroup"
)

// plainVMWorkers bounds the concurrent creations of CreatePlainVMs, and plainVMBatch is
// how many VMs one turn of the serializer creates: concurrent creations and power-ons of
// unrelated VMs are race-free in vcsim, and holding the simulator for a bounded batch lets
// the calls of others through in between.
const (
	plainVMWorkers = 32
	plainVMBatch   = 4 * plainVMWorkers
)

// CreatePlainVMs adds n powered-on VMs unrelated to CDS (no annotation, 1 vCPU, 512 MB,
// one NIC, named PlainVMPrefix + a number, guest IPs from plainVMRange).
//
// It calls the simulator's methods directly rather than through a client: a client waits
// for each task through the property collector, whose in-memory path copies every
// request and response through XML, which made 1,000 VMs take 15 s.
func (e *Env) CreatePlainVMs(ctx context.Context, n int) error {
	if n <= 0 {
		return nil
	}
	f, err := e.finder(ctx)
	if err != nil {
		return err
	}
	folderRef, err := f.Folder(ctx, e.Folder)
	if err != nil {
		return fmt.Errorf("folder %q: %w", e.Folder, err)
	}
	poolRef, err := f.ResourcePool(ctx, e.ResourcePool)
	if err != nil {
		return fmt.Errorf("resource pool %q: %w", e.ResourcePool, err)
	}
	backing, err := e.nicBacking(ctx, f)
	if err != nil {
		return err
	}
	folder, ok := e.Model.Map().Get(folderRef.Reference()).(*simulator.Folder)
	if !ok {
		return fmt.Errorf("folder %q: not in the simulator registry", e.Folder)
	}

	e.plainMu.Lock()
	first := e.plainN
	e.plainN += n
	e.plainMu.Unlock()

	for start := first; start < first+n; start += plainVMBatch {
		if err := ctx.Err(); err != nil {
			return err
		}
		end := min(start+plainVMBatch, first+n)
		var err error
		e.sim.do(func() {
			var g errgroup.Group
			g.SetLimit(plainVMWorkers)
			for i := start; i < end; i++ {
				name := fmt.Sprintf("%s%06d", PlainVMPrefix, i)
				g.Go(func() error {
					spec, err := newVMSpec(name, e.Datastore, backing, 1, 512)
					if err != nil {
						return err
					}
					return e.createPlainVM(folder, poolRef.Reference(), spec)
				})
			}
			err = g.Wait()
		})
		if err != nil {
			return err
		}
	}
	return nil
}

// createPlainVM creates and powers on one VM. It runs under the serializer (several at a
// time, in the goroutines of one batch).
func (e *Env) createPlainVM(folder *simulator.Folder, pool types.ManagedObjectReference, spec types.VirtualMachineConfigSpec) error {
	// One context per VM: simulator object locks are owned by a context.
	sctx := e.sessionContext()
	var res *methods.CreateVM_TaskBody
	sctx.WithLock(folder, func() {
		res, _ = folder.CreateVMTask(sctx, &types.CreateVM_Task{This: folder.Self, Config: spec, Pool: pool}).(*methods.CreateVM_TaskBody)
	})
	if res == nil || res.Res == nil {
		return fmt.Errorf("create %q: no task", spec.Name)
	}
	info, err := e.waitTask(res.Res.Returnval)
	if err != nil {
		return fmt.Errorf("create %q: %w", spec.Name, err)
	}
	vm, ok := sctx.Map.Get(info.Result.(types.ManagedObjectReference)).(*simulator.VirtualMachine)
	if !ok {
		return fmt.Errorf("create %q: no VM in the registry", spec.Name)
	}
	var power *methods.PowerOnVM_TaskBody
	sctx.WithLock(vm, func() {
		power, _ = vm.PowerOnVMTask(sctx, &types.PowerOnVM_Task{This: vm.Self}).(*methods.PowerOnVM_TaskBody)
	})
	if power.Fault_ != nil {
		return fmt.Errorf("power on %q: %s", spec.Name, power.Fault_.String)
	}
	if _, err := e.waitTask(power.Res.Returnval); err != nil {
		return fmt.Errorf("power on %q: %w", spec.Name, err)
	}
	return nil
}

// waitTask waits for a simulator task started under the serializer and returns its final
// info. It runs under the serializer.
func (e *Env) waitTask(ref types.ManagedObjectReference) (types.TaskInfo, error) {
	e.sim.tasks.wait(e.Model.Map(), ref, e.closing)
	return e.taskInfo(ref)
}
