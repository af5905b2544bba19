package simenv

import (
	"context"
	"fmt"

	"github.com/vmware/govmomi/simulator"
	"github.com/vmware/govmomi/vim25/methods"
	"github.com/vmware/govmomi/vim25/types"
	"golang.org/x/sync/errgroup"
)

// plainVMWorkers bounds the concurrent creations of CreatePlainVMs. Most of a creation is
// spent in the simulator's 10 ms task polling, so many run at once even on 2 cores.
const plainVMWorkers = 32

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
	ictx := internalContext(ctx)
	f, err := e.finder(ictx)
	if err != nil {
		return err
	}
	folderRef, err := f.Folder(ictx, e.Folder)
	if err != nil {
		return fmt.Errorf("folder %q: %w", e.Folder, err)
	}
	poolRef, err := f.ResourcePool(ictx, e.ResourcePool)
	if err != nil {
		return fmt.Errorf("resource pool %q: %w", e.ResourcePool, err)
	}
	backing, err := e.nicBacking(ictx, f)
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

	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(plainVMWorkers)
	for i := first; i < first+n; i++ {
		if gctx.Err() != nil {
			break
		}
		name := fmt.Sprintf("%s%06d", PlainVMPrefix, i)
		g.Go(func() error {
			spec, err := newVMSpec(name, e.Datastore, backing, 1, 512)
			if err != nil {
				return err
			}
			return e.createPlainVM(folder, poolRef.Reference(), spec)
		})
	}
	if err := g.Wait(); err != nil {
		return err
	}
	return ctx.Err()
}

func (e *Env) createPlainVM(folder *simulator.Folder, pool types.ManagedObjectReference, spec types.VirtualMachineConfigSpec) error {
	// One context per VM: simulator object locks are owned by a context.
	sctx := e.simContext()
	sctx.Session = &simulator.Session{
		UserSession: types.UserSession{Key: "simenv", UserName: e.Username},
		Registry:    simulator.NewRegistry(),
		Map:         sctx.Map,
	}
	var res *methods.CreateVM_TaskBody
	sctx.WithLock(folder, func() {
		res, _ = folder.CreateVMTask(sctx, &types.CreateVM_Task{This: folder.Self, Config: spec, Pool: pool}).(*methods.CreateVM_TaskBody)
	})
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

// waitTask waits for a simulator task and returns its final info.
func (e *Env) waitTask(ref types.ManagedObjectReference) (types.TaskInfo, error) {
	task, ok := e.Model.Map().Get(ref).(*simulator.Task)
	if !ok {
		return types.TaskInfo{}, fmt.Errorf("task %s not in the registry", ref)
	}
	task.Wait()
	var info types.TaskInfo
	sctx := e.simContext()
	sctx.WithLock(task, func() { info = task.Info })
	if info.Error != nil {
		return info, fmt.Errorf("%s: %T", info.DescriptionId, info.Error.Fault)
	}
	return info, nil
}
