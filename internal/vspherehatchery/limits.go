package vspherehatchery

import (
	"context"
	"fmt"

	"github.com/vmware/govmomi/object"
	"github.com/vmware/govmomi/vim25/mo"
	"github.com/vmware/govmomi/vim25/types"

	"github.com/hatchery-vsphere/hatchery-vsphere/internal/vsphere"
)

// taskKind is a kind of vCenter task with its own concurrency limit.
type taskKind int

const (
	taskClone taskKind = iota
	taskPower
	taskDestroy
)

func (k taskKind) String() string {
	switch k {
	case taskClone:
		return "clone"
	case taskPower:
		return "power"
	case taskDestroy:
		return "destroy"
	}
	return "task"
}

// Limits bounds the vCenter tasks of each kind run at once (maxConcurrentClones,
// maxConcurrentPowerOps, maxConcurrentDeletions): a burst of jobs or a big cleanup queues
// here instead of flooding vCenter.
type Limits struct {
	slots [3]chan struct{}
}

// NewLimits returns limits of clones, power operations and deletions; values below 1 mean 1.
func NewLimits(clones, powerOps, deletions int) *Limits {
	l := &Limits{}
	for k, n := range []int{clones, powerOps, deletions} {
		l.slots[k] = make(chan struct{}, max(n, 1))
	}
	return l
}

// acquire waits for a slot of kind k; the returned func gives it back.
func (l *Limits) acquire(ctx context.Context, k taskKind) (func(), error) {
	select {
	case l.slots[k] <- struct{}{}:
		return func() { <-l.slots[k] }, nil
	case <-ctx.Done():
		return nil, fmt.Errorf("wait for a %s slot: %w", k, ctx.Err())
	}
}

// guardedClient is the VSphereClient the provider talks through: clone, power and destroy
// tasks run under Limits, and the outcome of every vCenter call that says something about
// vCenter's health feeds the Breaker. Guest operations and the waits the provider bounds
// itself (guest ready, IP, shutdown) do not: a slow guest is not a vCenter failure. Neither
// do the resource pool runtime (an unreadable pool is tolerated by design) nor "not found".
type guardedClient struct {
	vsphere.VSphereClient
	limits  *Limits
	breaker *Breaker
}

func newGuardedClient(c vsphere.VSphereClient, limits *Limits, breaker *Breaker) *guardedClient {
	return &guardedClient{VSphereClient: c, limits: limits, breaker: breaker}
}

// observe feeds the breaker with the outcome of a call made with ctx.
func (g *guardedClient) observe(ctx context.Context, err error) {
	switch {
	case err == nil:
		g.breaker.Success()
	case vsphere.IsNotFound(err), ctx.Err() != nil:
		// The object is gone, or the caller gave up: nothing is wrong with vCenter.
	default:
		g.breaker.Failure(err)
	}
}

func (g *guardedClient) limited(ctx context.Context, k taskKind, call func() error) error {
	release, err := g.limits.acquire(ctx, k)
	if err != nil {
		return err
	}
	defer release()
	err = call()
	g.observe(ctx, err)
	return err
}

func (g *guardedClient) CloneVirtualMachine(ctx context.Context, vm *object.VirtualMachine, folder *object.Folder, name string, config *types.VirtualMachineCloneSpec) (*types.ManagedObjectReference, error) {
	var ref *types.ManagedObjectReference
	err := g.limited(ctx, taskClone, func() (err error) {
		ref, err = g.VSphereClient.CloneVirtualMachine(ctx, vm, folder, name, config)
		return err
	})
	return ref, err
}

func (g *guardedClient) StartVirtualMachine(ctx context.Context, vm *object.VirtualMachine) error {
	return g.limited(ctx, taskPower, func() error { return g.VSphereClient.StartVirtualMachine(ctx, vm) })
}

func (g *guardedClient) ShutdownVirtualMachine(ctx context.Context, vm *object.VirtualMachine) error {
	return g.limited(ctx, taskPower, func() error { return g.VSphereClient.ShutdownVirtualMachine(ctx, vm) })
}

func (g *guardedClient) DestroyVirtualMachine(ctx context.Context, vm *object.VirtualMachine) error {
	return g.limited(ctx, taskDestroy, func() error { return g.VSphereClient.DestroyVirtualMachine(ctx, vm) })
}

func (g *guardedClient) ListVirtualMachines(ctx context.Context) ([]mo.VirtualMachine, error) {
	vms, err := g.VSphereClient.ListVirtualMachines(ctx)
	g.observe(ctx, err)
	return vms, err
}

func (g *guardedClient) ListVirtualMachinesProperties(ctx context.Context, props ...string) ([]mo.VirtualMachine, error) {
	vms, err := g.VSphereClient.ListVirtualMachinesProperties(ctx, props...)
	g.observe(ctx, err)
	return vms, err
}

func (g *guardedClient) LoadVirtualMachine(ctx context.Context, name string) (*object.VirtualMachine, error) {
	vm, err := g.VSphereClient.LoadVirtualMachine(ctx, name)
	g.observe(ctx, err)
	return vm, err
}

func (g *guardedClient) LoadVirtualMachineEvents(ctx context.Context, vm *object.VirtualMachine, eventTypes ...string) ([]types.BaseEvent, error) {
	events, err := g.VSphereClient.LoadVirtualMachineEvents(ctx, vm, eventTypes...)
	g.observe(ctx, err)
	return events, err
}

func (g *guardedClient) RenameVirtualMachine(ctx context.Context, vm *object.VirtualMachine, newName string) error {
	err := g.VSphereClient.RenameVirtualMachine(ctx, vm, newName)
	g.observe(ctx, err)
	return err
}

func (g *guardedClient) ReconfigureVirtualMachine(ctx context.Context, vm *object.VirtualMachine, spec types.VirtualMachineConfigSpec) error {
	err := g.VSphereClient.ReconfigureVirtualMachine(ctx, vm, spec)
	g.observe(ctx, err)
	return err
}

func (g *guardedClient) MarkVirtualMachineAsTemplate(ctx context.Context, vm *object.VirtualMachine) error {
	err := g.VSphereClient.MarkVirtualMachineAsTemplate(ctx, vm)
	g.observe(ctx, err)
	return err
}
