package vsphere

import (
	"context"
	"errors"
	"fmt"
	"net"
	"slices"
	"sort"

	"github.com/vmware/govmomi/fault"
	"github.com/vmware/govmomi/find"
	"github.com/vmware/govmomi/guest"
	"github.com/vmware/govmomi/object"
	"github.com/vmware/govmomi/view"
	"github.com/vmware/govmomi/vim25/methods"
	"github.com/vmware/govmomi/vim25/mo"
	"github.com/vmware/govmomi/vim25/types"
)

// defaultCardName is the Ethernet card type used when the configuration names none.
const defaultCardName = "e1000"

// ListProperties are the properties ListVirtualMachines retrieves, those of the original.
var ListProperties = []string{"name", "summary", "guest", "config"}

// ListVirtualMachines returns every VM and template of the datacenter's VM folder, nested
// folders included, with the properties of ListProperties. It is expensive on large
// inventories: callers needing less should use ListVirtualMachinesProperties.
func (c *Client) ListVirtualMachines(ctx context.Context) ([]mo.VirtualMachine, error) {
	return c.ListVirtualMachinesProperties(ctx, ListProperties...)
}

// ListVirtualMachinesProperties is ListVirtualMachines retrieving only props (property paths
// such as "config.annotation" or "runtime.powerState"); no props means ListProperties.
// The name is always retrieved. A failure is an error, never a partial or empty list.
func (c *Client) ListVirtualMachinesProperties(ctx context.Context, props ...string) ([]mo.VirtualMachine, error) {
	if len(props) == 0 {
		props = ListProperties
	}
	if !slices.Contains(props, "name") {
		props = append([]string{"name"}, props...)
	}
	var vms []mo.VirtualMachine
	if err := c.retrieveVMs(ctx, props, &vms); err != nil {
		return nil, fmt.Errorf("list virtual machines: %w", err)
	}
	return vms, nil
}

// retrieveVMs reads props of every VM under the datacenter's VM folder through a container
// view, which costs one round trip for the whole inventory instead of one per folder.
func (c *Client) retrieveVMs(ctx context.Context, props []string, dst *[]mo.VirtualMachine) error {
	ctx, cancel := c.callContext(ctx)
	defer cancel()
	v, err := view.NewManager(c.vc).CreateContainerView(ctx, c.folder.Reference(), []string{"VirtualMachine"}, true)
	if err != nil {
		return fmt.Errorf("create container view: %w", err)
	}
	defer func() {
		// Destroy even when ctx is done: vCenter keeps views until the session ends.
		dctx, dcancel := c.callContext(context.WithoutCancel(ctx))
		defer dcancel()
		_ = v.Destroy(dctx)
	}()
	if err := v.Retrieve(ctx, []string{"VirtualMachine"}, props, dst); err != nil {
		return fmt.Errorf("retrieve %v: %w", props, err)
	}
	return nil
}

// LoadVirtualMachine finds the VM or template named name anywhere under the datacenter's VM
// folder. The name is compared exactly (no glob). An absent VM is an error wrapping
// ErrNotFound; several VMs with that name is an error too.
func (c *Client) LoadVirtualMachine(ctx context.Context, name string) (*object.VirtualMachine, error) {
	var vms []mo.VirtualMachine
	if err := c.retrieveVMs(ctx, []string{"name"}, &vms); err != nil {
		return nil, fmt.Errorf("load virtual machine %q: %w", name, err)
	}
	var found []types.ManagedObjectReference
	for _, vm := range vms {
		if vm.Name == name {
			found = append(found, vm.Reference())
		}
	}
	switch len(found) {
	case 0:
		return nil, fmt.Errorf("virtual machine %q %w", name, ErrNotFound)
	case 1:
	default:
		return nil, fmt.Errorf("load virtual machine %q: %d virtual machines have that name", name, len(found))
	}
	vm := object.NewVirtualMachine(c.vc, found[0])
	// Only the base of the path is used (vm.Name(), in error messages); the real folder path
	// would cost one more request.
	vm.InventoryPath = c.folder.InventoryPath + "/" + name
	return vm, nil
}

// vmLabel names a VM in error messages without a request to vCenter.
func vmLabel(vm *object.VirtualMachine) string {
	if vm == nil {
		return "<nil>"
	}
	if vm.InventoryPath != "" {
		return vm.Name()
	}
	return vm.Reference().Value
}

// LoadVirtualMachineDevices returns the VM's virtual hardware.
func (c *Client) LoadVirtualMachineDevices(ctx context.Context, vm *object.VirtualMachine) (object.VirtualDeviceList, error) {
	ctx, cancel := c.callContext(ctx)
	defer cancel()
	devices, err := vm.Device(ctx)
	if err != nil {
		return nil, fmt.Errorf("load devices of virtual machine %q: %w", vmLabel(vm), markNotFound(err))
	}
	return devices, nil
}

// runTask issues a task-returning request bounded by the call timeout, then waits for the
// task bounded by wait through the client's shared task waiter, and returns the task's
// result; a failed task's error carries its fault like Task.WaitForResult's.
func (c *Client) runTask(ctx context.Context, wait func(context.Context) (context.Context, context.CancelFunc), start func(context.Context) (*object.Task, error)) (*types.TaskInfo, error) {
	cctx, cancel := c.callContext(ctx)
	task, err := start(cctx)
	cancel()
	if err != nil {
		return nil, err
	}
	wctx, wcancel := wait(ctx)
	defer wcancel()
	info, err := c.tasks.wait(wctx, task.Reference())
	if err != nil {
		return nil, fmt.Errorf("wait for task %s: %w", task.Reference().Value, err)
	}
	return info, nil
}

// StartVirtualMachine powers the VM on and waits for the power-on task.
func (c *Client) StartVirtualMachine(ctx context.Context, vm *object.VirtualMachine) error {
	if _, err := c.runTask(ctx, c.taskContext, vm.PowerOn); err != nil {
		return fmt.Errorf("power on virtual machine %q: %w", vmLabel(vm), markNotFound(err))
	}
	return nil
}

// ShutdownVirtualMachine powers the VM off (hard, like pulling the plug) and waits for the
// task. A VM that is already powered off is not an error.
func (c *Client) ShutdownVirtualMachine(ctx context.Context, vm *object.VirtualMachine) error {
	_, err := c.runTask(ctx, c.taskContext, vm.PowerOff)
	if err == nil {
		return nil
	}
	if fault.Is(err, &types.InvalidPowerState{}) {
		state, serr := c.GetVirtualMachinePowerState(ctx, vm)
		if serr == nil && state == types.VirtualMachinePowerStatePoweredOff {
			return nil
		}
	}
	return fmt.Errorf("power off virtual machine %q: %w", vmLabel(vm), markNotFound(err))
}

// DestroyVirtualMachine deletes the VM and its disks and waits for the task.
func (c *Client) DestroyVirtualMachine(ctx context.Context, vm *object.VirtualMachine) error {
	if _, err := c.runTask(ctx, c.taskContext, vm.Destroy); err != nil {
		return fmt.Errorf("destroy virtual machine %q: %w", vmLabel(vm), markNotFound(err))
	}
	c.tasks.vmGone(vm.Reference())
	return nil
}

// CloneVirtualMachine clones vm into folder under name with config, waits for the clone
// task, and returns the new VM's reference.
func (c *Client) CloneVirtualMachine(ctx context.Context, vm *object.VirtualMachine, folder *object.Folder, name string, config *types.VirtualMachineCloneSpec) (*types.ManagedObjectReference, error) {
	if folder == nil || config == nil {
		return nil, fmt.Errorf("clone %q from %q: folder and clone spec are required", name, vmLabel(vm))
	}
	info, err := c.runTask(ctx, c.taskContext, func(ctx context.Context) (*object.Task, error) {
		return vm.Clone(ctx, folder, name, *config)
	})
	if err != nil {
		return nil, fmt.Errorf("clone %q from %q: %w", name, vmLabel(vm), markNotFound(err))
	}
	ref, ok := info.Result.(types.ManagedObjectReference)
	if !ok {
		return nil, fmt.Errorf("clone %q from %q: task result is %T, not a reference", name, vmLabel(vm), info.Result)
	}
	return &ref, nil
}

// GetVirtualMachinePowerState reads the VM's runtime power state.
func (c *Client) GetVirtualMachinePowerState(ctx context.Context, vm *object.VirtualMachine) (types.VirtualMachinePowerState, error) {
	ctx, cancel := c.callContext(ctx)
	defer cancel()
	state, err := vm.PowerState(ctx)
	if err != nil {
		return "", fmt.Errorf("read power state of virtual machine %q: %w", vmLabel(vm), markNotFound(err))
	}
	return state, nil
}

// NewVirtualMachine wraps the reference of a VM cloned into the datacenter's folder under
// vmName. It makes no request; cloneSpec is accepted for compatibility and unused.
func (c *Client) NewVirtualMachine(_ context.Context, _ *types.VirtualMachineCloneSpec, ref *types.ManagedObjectReference, vmName string) (*object.VirtualMachine, error) {
	if ref == nil {
		return nil, fmt.Errorf("virtual machine %q: no reference", vmName)
	}
	vm := object.NewVirtualMachine(c.vc, *ref)
	vm.InventoryPath = c.folder.InventoryPath + "/" + vmName
	return vm, nil
}

// RenameVirtualMachine renames the VM; the task wait is bounded by one minute like the
// original (or by the task timeout when shorter).
func (c *Client) RenameVirtualMachine(ctx context.Context, vm *object.VirtualMachine, newName string) error {
	wait := func(ctx context.Context) (context.Context, context.CancelFunc) {
		return context.WithTimeout(ctx, min(renameTimeout, c.opts.TaskTimeout))
	}
	_, err := c.runTask(ctx, wait, func(ctx context.Context) (*object.Task, error) {
		return vm.Rename(ctx, newName)
	})
	if err != nil {
		return fmt.Errorf("rename virtual machine %q to %q: %w", vmLabel(vm), newName, markNotFound(err))
	}
	return nil
}

// MarkVirtualMachineAsTemplate turns the (powered-off) VM into a template.
func (c *Client) MarkVirtualMachineAsTemplate(ctx context.Context, vm *object.VirtualMachine) error {
	ctx, cancel := c.callContext(ctx)
	defer cancel()
	if err := vm.MarkAsTemplate(ctx); err != nil {
		return fmt.Errorf("mark virtual machine %q as template: %w", vmLabel(vm), markNotFound(err))
	}
	return nil
}

// ReconfigureVirtualMachine applies spec to the VM and waits for the task. It is an addition
// to the original's interface: flavor resize of a powered-off provisioned VM, annotation
// updates.
func (c *Client) ReconfigureVirtualMachine(ctx context.Context, vm *object.VirtualMachine, spec types.VirtualMachineConfigSpec) error {
	_, err := c.runTask(ctx, c.taskContext, func(ctx context.Context) (*object.Task, error) {
		return vm.Reconfigure(ctx, spec)
	})
	if err != nil {
		return fmt.Errorf("reconfigure virtual machine %q: %w", vmLabel(vm), markNotFound(err))
	}
	return nil
}

// WaitForVirtualMachineShutdown waits until the VM is powered off, bounded by ctx and the
// task timeout. It watches the VM through the client's shared waiter.
func (c *Client) WaitForVirtualMachineShutdown(ctx context.Context, vm *object.VirtualMachine) error {
	ctx, cancel := c.taskContext(ctx)
	defer cancel()
	if err := c.tasks.waitVM(ctx, vm.Reference(), poweredOff); err != nil {
		return fmt.Errorf("wait for virtual machine %q to power off: %w", vmLabel(vm), markNotFound(err))
	}
	return nil
}

// WaitForVirtualMachineIP waits until the guest reports IPAddress (in guest.ipAddress or on
// any NIC) or, when IPAddress is nil or empty, any IPv4 address. Unlike govmomi's WaitForIP
// it never waits forever: it is bounded by ctx and the task timeout. It watches the VM
// through the client's shared waiter.
func (c *Client) WaitForVirtualMachineIP(ctx context.Context, vm *object.VirtualMachine, IPAddress *string, vmName string) error {
	want := ""
	if IPAddress != nil {
		want = *IPAddress
	}
	if vmName == "" {
		vmName = vmLabel(vm)
	}
	ctx, cancel := c.taskContext(ctx)
	defer cancel()
	if err := c.tasks.waitVM(ctx, vm.Reference(), guestHasIPCondition(want)); err != nil {
		if want == "" {
			return fmt.Errorf("wait for an IPv4 address on virtual machine %q: %w", vmName, markNotFound(err))
		}
		return fmt.Errorf("wait for IP %s on virtual machine %q: %w", want, vmName, markNotFound(err))
	}
	return nil
}

func guestNICs(v any) []types.GuestNicInfo {
	switch nics := v.(type) {
	case types.ArrayOfGuestNicInfo:
		return nics.GuestNicInfo
	case []types.GuestNicInfo:
		return nics
	}
	return nil
}

// guestHasIP says whether the guest reports want, or any usable IPv4 address if want is "".
func guestHasIP(want, ipAddress string, nics []types.GuestNicInfo) bool {
	matches := func(ip string) bool {
		if want != "" {
			return ip == want
		}
		parsed := net.ParseIP(ip)
		return parsed != nil && parsed.To4() != nil && !parsed.IsUnspecified() && !parsed.IsLinkLocalUnicast()
	}
	if matches(ipAddress) {
		return true
	}
	for _, nic := range nics {
		if slices.ContainsFunc(nic.IpAddress, matches) {
			return true
		}
	}
	return false
}

// WaitForGuestOperationsReady waits until VMware Tools accept guest operations
// (guest.guestOperationsReady), bounded by ctx and the task timeout. It is an addition to
// the original's interface. It watches the VM through the client's shared waiter.
func (c *Client) WaitForGuestOperationsReady(ctx context.Context, vm *object.VirtualMachine) error {
	ctx, cancel := c.taskContext(ctx)
	defer cancel()
	if err := c.tasks.waitVM(ctx, vm.Reference(), guestOperationsReady); err != nil {
		return fmt.Errorf("wait for guest operations on virtual machine %q: %w", vmLabel(vm), markNotFound(err))
	}
	return nil
}

// LoadFolder returns the datacenter's VM folder, resolved at Connect.
func (c *Client) LoadFolder(context.Context) (*object.Folder, error) {
	return c.folder, nil
}

// SetupEthernetCard rewrites card in place as a new card of type ethernetCardName (e1000,
// e1000e, vmxnet2, vmxnet3, pcnet32; empty means e1000) backed by
// network, keeping the device key, controller and unit number of the existing card so that
// it can be sent as an "edit" of that card. The concrete device type cannot travel in a
// *types.VirtualEthernetCard: wrap the result with EthernetCardDevice for the device spec.
func (c *Client) SetupEthernetCard(ctx context.Context, card *types.VirtualEthernetCard, ethernetCardName string, network object.NetworkReference) error {
	if card == nil || network == nil {
		return errors.New("setup ethernet card: card and network are required")
	}
	if ethernetCardName == "" {
		ethernetCardName = defaultCardName
	}
	cctx, cancel := c.callContext(ctx)
	defer cancel()
	backing, err := network.EthernetCardBackingInfo(cctx)
	if err != nil {
		return fmt.Errorf("setup ethernet card: backing of network %q: %w", network.Reference().Value, err)
	}
	// The backing of a standard network names it; a name read while the session was being
	// lost comes back empty without an error, and a clone on it fails (or, in vcsim,
	// crashes the simulator).
	if b, ok := backing.(*types.VirtualEthernetCardNetworkBackingInfo); ok && b.DeviceName == "" {
		return fmt.Errorf("setup ethernet card: network %q answered no name", network.Reference().Value)
	}
	device, err := object.EthernetCardTypes().CreateEthernetCard(ethernetCardName, backing)
	if err != nil {
		return fmt.Errorf("setup ethernet card: %w", err)
	}
	fresh := device.(types.BaseVirtualEthernetCard).GetVirtualEthernetCard()
	fresh.Key = card.Key
	fresh.ControllerKey = card.ControllerKey
	fresh.UnitNumber = card.UnitNumber
	*card = *fresh
	return nil
}

// EthernetCardDevice wraps card into the concrete device type named ethernetCardName
// (e1000 when empty), ready for a VirtualDeviceConfigSpec.
func EthernetCardDevice(card *types.VirtualEthernetCard, ethernetCardName string) (types.BaseVirtualDevice, error) {
	if ethernetCardName == "" {
		ethernetCardName = defaultCardName
	}
	device, err := object.EthernetCardTypes().CreateEthernetCard(ethernetCardName, card.Backing)
	if err != nil {
		return nil, fmt.Errorf("ethernet card device: %w", err)
	}
	*device.(types.BaseVirtualEthernetCard).GetVirtualEthernetCard() = *card
	return device, nil
}

// LoadNetwork returns the network named name in the datacenter; empty means the datacenter's
// default network. The network named in Options is resolved once at Connect.
func (c *Client) LoadNetwork(ctx context.Context, name string) (object.NetworkReference, error) {
	if name == c.opts.Network {
		return c.network, nil
	}
	ctx, cancel := c.callContext(ctx)
	defer cancel()
	network, err := c.finder.NetworkOrDefault(ctx, name)
	if err != nil {
		return nil, inventoryError("network", name, err)
	}
	return network, nil
}

// LoadResourcePool returns the resource pool resolved at Connect (the datacenter's default
// one unless Options.ResourcePool names another).
func (c *Client) LoadResourcePool(context.Context) (*object.ResourcePool, error) {
	return c.pool, nil
}

// LoadDatastore returns the datastore named name in the datacenter; empty means the
// datacenter's default datastore. The datastore named in Options is resolved once at Connect.
func (c *Client) LoadDatastore(ctx context.Context, name string) (*object.Datastore, error) {
	if name == c.opts.Datastore {
		return c.datastore, nil
	}
	ctx, cancel := c.callContext(ctx)
	defer cancel()
	ds, err := c.finder.DatastoreOrDefault(ctx, name)
	if err != nil {
		return nil, inventoryError("datastore", name, err)
	}
	return ds, nil
}

// ResourcePoolRuntime reads the runtime usage of the resource pool (memory figures in
// bytes, CPU in MHz). It is an addition to the original's interface.
func (c *Client) ResourcePoolRuntime(ctx context.Context) (types.ResourcePoolRuntimeInfo, error) {
	ctx, cancel := c.callContext(ctx)
	defer cancel()
	var pool mo.ResourcePool
	if err := c.pool.Properties(ctx, c.pool.Reference(), []string{"runtime"}, &pool); err != nil {
		return types.ResourcePoolRuntimeInfo{}, fmt.Errorf("read runtime of resource pool %q: %w", c.pool.InventoryPath, err)
	}
	return pool.Runtime, nil
}

// ProcessManager returns the guest process manager for vm.
func (c *Client) ProcessManager(ctx context.Context, vm *object.VirtualMachine) (*guest.ProcessManager, error) {
	ctx, cancel := c.callContext(ctx)
	defer cancel()
	pm, err := guest.NewOperationsManager(c.vc, vm.Reference()).ProcessManager(ctx)
	if err != nil {
		return nil, fmt.Errorf("guest process manager of virtual machine %q: %w", vmLabel(vm), markNotFound(err))
	}
	return pm, nil
}

// StartProgramInGuest starts req's program in the guest and returns once it is started (the
// program is not waited for). req.This defaults to procman; req.Vm and req.Auth must be set.
func (c *Client) StartProgramInGuest(ctx context.Context, procman *guest.ProcessManager, req *types.StartProgramInGuest) (*types.StartProgramInGuestResponse, error) {
	if procman == nil || req == nil {
		return nil, errors.New("start program in guest: process manager and request are required")
	}
	r := *req
	if r.This.Value == "" {
		r.This = procman.Reference()
	}
	ctx, cancel := c.callContext(ctx)
	defer cancel()
	res, err := methods.StartProgramInGuest(ctx, c.vc, &r)
	if err != nil {
		return nil, fmt.Errorf("start program in guest of virtual machine %q: %w", r.Vm.Value, err)
	}
	return res, nil
}

// LoadVirtualMachineEvents returns the newest events of vm (at most Options.EventPageSize,
// newest first), restricted to eventTypes (such as "VmStartingEvent") when given.
func (c *Client) LoadVirtualMachineEvents(ctx context.Context, vm *object.VirtualMachine, eventTypes ...string) ([]types.BaseEvent, error) {
	ctx, cancel := c.callContext(ctx)
	defer cancel()
	ref := vm.Reference()
	filter := types.EventFilterSpec{
		Entity: &types.EventFilterSpecByEntity{
			Entity:    ref,
			Recursion: types.EventFilterSpecRecursionOptionSelf,
		},
		EventTypeId: eventTypes,
		MaxCount:    int32(c.opts.EventPageSize),
	}
	events, err := c.events.QueryEvents(ctx, filter)
	if err != nil {
		return nil, fmt.Errorf("load events of virtual machine %q: %w", vmLabel(vm), markNotFound(err))
	}
	// vCenter documents no order for QueryEvents; callers look for the latest event of a
	// kind, so the order is made explicit.
	sort.SliceStable(events, func(i, j int) bool {
		a, b := events[i].GetEvent(), events[j].GetEvent()
		if !a.CreatedTime.Equal(b.CreatedTime) {
			return a.CreatedTime.After(b.CreatedTime)
		}
		return a.Key > b.Key
	})
	return events, nil
}

// markNotFound makes err match ErrNotFound when vSphere says the object is gone (a VM
// destroyed meanwhile, for instance), so that callers can treat it as already done.
func markNotFound(err error) error {
	var nf *find.NotFoundError
	if errors.As(err, &nf) || fault.Is(err, &types.ManagedObjectNotFound{}) {
		return notFoundError{err}
	}
	return err
}

type notFoundError struct{ err error }

func (e notFoundError) Error() string        { return e.err.Error() }
func (e notFoundError) Unwrap() error        { return e.err }
func (e notFoundError) Is(target error) bool { return target == ErrNotFound }
