// Package simenv runs an in-process vCenter (govmomi's simulator, vcsim) shaped for the
// hatchery: one datacenter, one cluster with its resource pool, one datastore, one network,
// real templates, guest IPs on power-on, a recording guest process manager, clones that keep
// their annotation, and fault and latency knobs.
//
// It exists for tests, benchmarks and the demo; nothing in the daemon imports it.
package simenv

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net/url"
	"sync"
	"time"

	"github.com/vmware/govmomi"
	"github.com/vmware/govmomi/find"
	"github.com/vmware/govmomi/object"
	"github.com/vmware/govmomi/property"
	"github.com/vmware/govmomi/session"
	"github.com/vmware/govmomi/simulator"
	"github.com/vmware/govmomi/vim25"
	"github.com/vmware/govmomi/vim25/methods"
	"github.com/vmware/govmomi/vim25/mo"
	"github.com/vmware/govmomi/vim25/soap"
	"github.com/vmware/govmomi/vim25/types"
)

// Names of the inventory objects every Env has.
const (
	DatacenterName   = "DC0"
	ClusterName      = "DC0_C0"
	DatastoreName    = "LocalDS_0"
	NetworkName      = "VM Network"
	ResourcePoolPath = "/DC0/host/DC0_C0/Resources"
	VMFolderPath     = "/DC0/vm"
)

// PlainVMPrefix starts the name of every VM made by CreatePlainVMs.
const PlainVMPrefix = "plain-vm-"

// plainVMRange is where plain VMs get their guest IPs: the shared address space
// (RFC 6598), so that it does not overlap the private ranges tests give the hatchery as
// its iprange (the hatchery counts every guest IP it sees as used).
const plainVMRange = "100.64.0.0/10"

// Template describes a template created at start.
type Template struct {
	Name     string
	NumCPU   int32
	MemoryMB int32
}

// Options shape the simulated vCenter.
type Options struct {
	// Templates are created as real templates (one e1000 NIC on NetworkName).
	// Default: debian12 2 vCPU/4096 MB and ubuntu24 4 vCPU/8192 MB.
	Templates []Template
	// PlainVMs unrelated powered-on VMs are created at start (scale tests).
	PlainVMs int
	// DHCPRange is the CIDR guest IPs are drawn from when no fixed IP was customized.
	// Default "192.168.100.0/22".
	DHCPRange string
	// GuestUsername and GuestPassword, when set, are the only guest credentials guest
	// operations accept (others fail with InvalidGuestLogin). Empty accepts anything.
	GuestUsername, GuestPassword string
	// OnGuestProgram is called for every successful StartProgramInGuest, synchronously,
	// before the call answers but with the simulator released: it may call the Env (for
	// example PowerOffVM). Every client call waits for it: keep it short or hand the work
	// to a goroutine you own.
	OnGuestProgram func(GuestProgram)
}

func (o *Options) setDefaults() {
	if o.Templates == nil {
		o.Templates = []Template{
			{Name: "debian12", NumCPU: 2, MemoryMB: 4096},
			{Name: "ubuntu24", NumCPU: 4, MemoryMB: 8192},
		}
	}
	if o.DHCPRange == "" {
		o.DHCPRange = "192.168.100.0/22"
	}
}

// Env is a running simulated vCenter. It is safe for concurrent use: every SOAP call, and
// every helper touching the simulator's objects, runs alone in the simulator and returns
// only once the tasks it started have finished (vcsim is not free of data races
// otherwise). Method delays and long-poll waits do not hold the simulator.
type Env struct {
	// URL is the SDK endpoint (https, path /sdk) with Username:Password as user info.
	URL                *url.URL
	Username, Password string
	Datacenter         string // "DC0"
	Cluster            string // "DC0_C0"
	Datastore          string // "LocalDS_0"
	Network            string // "VM Network"
	ResourcePool       string // inventory path of the cluster's root pool (the datacenter default)
	Folder             string // inventory path of the datacenter VM folder
	// CACertFile is a PEM file with the server certificate: TLS is on and verifiable.
	CACertFile string
	// RootCAs holds the server certificate, for clients that take a pool.
	RootCAs *x509.CertPool

	// Model and Server give raw access to the simulator for what this type does not cover.
	// Touch Model's objects only inside Locked.
	Model  *simulator.Model
	Server *simulator.Server

	opts     Options
	internal *vim25.Client // in-memory client: bypasses faults and delays
	hooks    *methodHooks
	guest    *guestState
	sim      *serializer
	feed     *changeFeed
	closing  chan struct{}

	plainMu sync.Mutex
	plainN  int

	closeOnce sync.Once
}

// New starts a simulated vCenter. Close it when done.
func New(ctx context.Context, opts Options) (*Env, error) {
	opts.setDefaults()
	dhcp, err := newIPPool(opts.DHCPRange)
	if err != nil {
		return nil, fmt.Errorf("dhcp range %q: %w", opts.DHCPRange, err)
	}
	plain, err := newIPPool(plainVMRange)
	if err != nil {
		return nil, fmt.Errorf("plain VM range: %w", err)
	}

	m := simulator.VPX()
	// No standalone host and no distributed portgroup: the default resource pool and the
	// default network are then unambiguous, as on a simple real vCenter.
	m.Host = 0
	m.Portgroup = 0
	m.ClusterHost = 2
	m.Machine = 0
	m.Autostart = false
	if err := m.Create(); err != nil {
		return nil, fmt.Errorf("create simulator model: %w", err)
	}

	e := &Env{
		Datacenter:   DatacenterName,
		Cluster:      ClusterName,
		Datastore:    DatastoreName,
		Network:      NetworkName,
		ResourcePool: ResourcePoolPath,
		Folder:       VMFolderPath,
		Model:        m,
		opts:         opts,
		closing:      make(chan struct{}),
	}
	e.guest = newGuestState(dhcp, plain)
	e.hooks = newMethodHooks()
	e.feed = newChangeFeed()
	tasks := newTaskTracker()

	reg := m.Map()
	e.sim = newSerializer(reg, tasks, e.closing)
	// The hooks go in before the server starts so that no call ever sees the stock
	// behaviour (the stock guest process manager hangs the simulator on plain VMs) nor
	// runs outside the serializer.
	reg.Handler = e.hooks.handle
	reg.AddHandler(&guestHook{state: e.guest})
	reg.AddHandler(tasks)
	reg.AddHandler(e.feed)
	if err := e.installProcessManager(); err != nil {
		m.Remove()
		return nil, err
	}
	e.installSDKHandler()

	m.Service.TLS = new(tls.Config)
	e.Server = m.Service.NewServer()
	e.URL = e.Server.URL
	e.Username = e.URL.User.Username()
	e.Password, _ = e.URL.User.Password()

	if err := e.start(ctx); err != nil {
		e.Close()
		return nil, err
	}
	return e, nil
}

func (e *Env) start(ctx context.Context) error {
	certFile, err := e.Server.CertificateFile()
	if err != nil {
		return fmt.Errorf("server certificate: %w", err)
	}
	e.CACertFile = certFile
	e.RootCAs = x509.NewCertPool()
	e.RootCAs.AddCert(e.Server.Certificate())

	e.internal, err = vim25.NewClient(ctx, lockedService{e: e})
	if err != nil {
		return fmt.Errorf("in-memory client: %w", err)
	}
	for _, t := range e.opts.Templates {
		if err := e.createTemplate(ctx, t); err != nil {
			return err
		}
	}
	if e.opts.PlainVMs > 0 {
		if err := e.CreatePlainVMs(ctx, e.opts.PlainVMs); err != nil {
			return err
		}
	}
	return nil
}

// Close stops the server and removes the simulator's files. Safe to call twice.
func (e *Env) Close() {
	e.closeOnce.Do(func() {
		close(e.closing) // wakes calls sleeping in a method delay
		if e.Server != nil {
			e.Server.Close()
		}
		e.Model.Remove()
	})
}

// Client returns a logged-in govmomi client that trusts the server certificate.
func (e *Env) Client(ctx context.Context) (*govmomi.Client, error) {
	sc := soap.NewClient(e.URL, false)
	if err := sc.SetRootCAs(e.CACertFile); err != nil {
		return nil, fmt.Errorf("trust %s: %w", e.CACertFile, err)
	}
	vc, err := vim25.NewClient(ctx, sc)
	if err != nil {
		return nil, fmt.Errorf("connect %s: %w", e.URL.Host, err)
	}
	c := &govmomi.Client{Client: vc, SessionManager: session.NewManager(vc)}
	if err := c.Login(ctx, e.URL.User); err != nil {
		return nil, fmt.Errorf("login %s: %w", e.URL.Host, err)
	}
	return c, nil
}

// Locked runs f with the simulator to itself, after every task started by earlier calls
// has finished: the way to read or change Model's objects directly. f must not call the
// Env nor a client of it (that would wait for f forever).
func (e *Env) Locked(f func()) {
	e.sim.do(f)
}

func (e *Env) finder(ctx context.Context) (*find.Finder, error) {
	f := find.NewFinder(e.internal, false)
	dc, err := f.Datacenter(ctx, e.Datacenter)
	if err != nil {
		return nil, fmt.Errorf("datacenter %q: %w", e.Datacenter, err)
	}
	f.SetDatacenter(dc)
	return f, nil
}

func (e *Env) createTemplate(ctx context.Context, t Template) error {
	f, err := e.finder(ctx)
	if err != nil {
		return err
	}
	folder, err := f.Folder(ctx, e.Folder)
	if err != nil {
		return fmt.Errorf("folder %q: %w", e.Folder, err)
	}
	pool, err := f.ResourcePool(ctx, e.ResourcePool)
	if err != nil {
		return fmt.Errorf("resource pool %q: %w", e.ResourcePool, err)
	}
	spec, err := e.vmSpec(ctx, f, t.Name, t.NumCPU, t.MemoryMB)
	if err != nil {
		return err
	}
	task, err := folder.CreateVM(ctx, spec, pool, nil)
	if err != nil {
		return fmt.Errorf("create template %q: %w", t.Name, err)
	}
	res, err := e.taskResult(task.Reference())
	if err != nil {
		return fmt.Errorf("create template %q: %w", t.Name, err)
	}
	ref, ok := res.Result.(types.ManagedObjectReference)
	if !ok {
		return fmt.Errorf("create template %q: no VM in the task result", t.Name)
	}
	vm := object.NewVirtualMachine(e.internal, ref)
	if err := vm.MarkAsTemplate(ctx); err != nil {
		return fmt.Errorf("mark %q as template: %w", t.Name, err)
	}
	return nil
}

// vmSpec is the config of a minimal Linux VM with one e1000 NIC on the env's network.
func (e *Env) vmSpec(ctx context.Context, f *find.Finder, name string, cpus, memoryMB int32) (types.VirtualMachineConfigSpec, error) {
	backing, err := e.nicBacking(ctx, f)
	if err != nil {
		return types.VirtualMachineConfigSpec{}, err
	}
	return newVMSpec(name, e.Datastore, backing, cpus, memoryMB)
}

func (e *Env) nicBacking(ctx context.Context, f *find.Finder) (types.BaseVirtualDeviceBackingInfo, error) {
	nw, err := f.Network(ctx, e.Network)
	if err != nil {
		return nil, fmt.Errorf("network %q: %w", e.Network, err)
	}
	backing, err := nw.EthernetCardBackingInfo(ctx)
	if err != nil {
		return nil, fmt.Errorf("network %q backing: %w", e.Network, err)
	}
	return backing, nil
}

// newVMSpec builds a fresh spec each time, backing included: the simulator mutates the
// devices it is given, and CreatePlainVMs hands specs to it directly, without a copy.
func newVMSpec(name, datastore string, backing types.BaseVirtualDeviceBackingInfo, cpus, memoryMB int32) (types.VirtualMachineConfigSpec, error) {
	if b, ok := backing.(*types.VirtualEthernetCardNetworkBackingInfo); ok {
		c := *b
		if b.Network != nil {
			ref := *b.Network
			c.Network = &ref
		}
		backing = &c
	}
	nic, err := object.EthernetCardTypes().CreateEthernetCard("e1000", backing)
	if err != nil {
		return types.VirtualMachineConfigSpec{}, fmt.Errorf("ethernet card: %w", err)
	}
	return types.VirtualMachineConfigSpec{
		Name:     name,
		GuestId:  string(types.VirtualMachineGuestOsIdentifierOtherLinux64Guest),
		NumCPUs:  cpus,
		MemoryMB: int64(memoryMB),
		Files:    &types.VirtualMachineFileInfo{VmPathName: "[" + datastore + "]"},
		DeviceChange: []types.BaseVirtualDeviceConfigSpec{
			&types.VirtualDeviceConfigSpec{
				Operation: types.VirtualDeviceConfigSpecOperationAdd,
				Device:    nic,
			},
		},
	}, nil
}

// GuestPrograms returns every program started so far, in order.
func (e *Env) GuestPrograms() []GuestProgram {
	return e.guest.programs()
}

// FinishGuestProgram makes ListProcessesInGuest report the process as ended with exitCode.
func (e *Env) FinishGuestProgram(pid int64, exitCode int32) error {
	return e.guest.finish(pid, exitCode, time.Now())
}

// AddFault makes the next count calls of method (a SOAP method name such as
// "CloneVM_Task") fail with fault; count <= 0 means every call until ClearFaults.
// Calls the Env makes itself are never faulted.
func (e *Env) AddFault(method string, fault types.BaseMethodFault, count int) {
	e.hooks.addFault(method, fault, count)
}

// ClearFaults removes every pending fault.
func (e *Env) ClearFaults() {
	e.hooks.clearFaults()
}

// SetMethodDelay delays every later client call of method by d before it runs (0 removes
// it). The simulator serves other calls meanwhile: concurrent delayed calls overlap.
func (e *Env) SetMethodDelay(method string, d time.Duration) {
	e.hooks.setDelay(method, d)
}

// CallCount is the number of SOAP calls of method received from clients so far.
func (e *Env) CallCount(method string) int {
	return e.hooks.callCount(method)
}

// SetResourcePoolRuntime sets the default resource pool's runtime figures read by
// capacity checks: CPU in MHz, memory in bytes, as vCenter reports them.
func (e *Env) SetResourcePoolRuntime(cpuMHz, memoryBytes int64) error {
	rt, err := e.ResourcePoolRuntime()
	if err != nil {
		return err
	}
	rt.Cpu.UnreservedForVm = cpuMHz
	rt.Memory.UnreservedForVm = memoryBytes
	return e.SetResourcePoolRuntimeInfo(rt)
}

// ResourcePoolRuntime returns the default resource pool's current runtime.
func (e *Env) ResourcePoolRuntime() (types.ResourcePoolRuntimeInfo, error) {
	rp, err := e.resourcePool()
	if err != nil {
		return types.ResourcePoolRuntimeInfo{}, err
	}
	var rt types.ResourcePoolRuntimeInfo
	e.sim.do(func() {
		e.simContext().WithLock(rp, func() { rt = rp.Runtime })
	})
	return rt, nil
}

// SetResourcePoolRuntimeInfo replaces the default resource pool's runtime (and the copy in
// its summary) with rt.
func (e *Env) SetResourcePoolRuntimeInfo(rt types.ResourcePoolRuntimeInfo) error {
	rp, err := e.resourcePool()
	if err != nil {
		return err
	}
	changes := []types.PropertyChange{{Name: "runtime", Val: rt}}
	e.sim.do(func() {
		sctx := e.simContext()
		sctx.WithLock(rp, func() {
			if rp.Summary != nil && rp.Summary.GetResourcePoolSummary() != nil {
				rp.Summary.GetResourcePoolSummary().Runtime = rt
			}
			sctx.Update(rp, changes)
		})
	})
	return nil
}

func (e *Env) resourcePool() (*simulator.ResourcePool, error) {
	ctx := context.Background()
	f, err := e.finder(ctx)
	if err != nil {
		return nil, err
	}
	ref, err := f.ResourcePool(ctx, e.ResourcePool)
	if err != nil {
		return nil, fmt.Errorf("resource pool %q: %w", e.ResourcePool, err)
	}
	// The registry has its own lock: Get is safe outside the serializer.
	rp, ok := e.Model.Map().Get(ref.Reference()).(*simulator.ResourcePool)
	if !ok {
		return nil, fmt.Errorf("resource pool %q: not in the simulator registry", e.ResourcePool)
	}
	return rp, nil
}

// simContext is a fresh simulator context for touching objects outside a SOAP call; a
// fresh one per use, because object locks are owned by a context.
func (e *Env) simContext() *simulator.Context {
	return &simulator.Context{Context: context.Background(), Map: e.Model.Map()}
}

// vm finds a VM or template by name in the datacenter.
func (e *Env) vm(ctx context.Context, name string) (*object.VirtualMachine, error) {
	f, err := e.finder(ctx)
	if err != nil {
		return nil, err
	}
	vm, err := f.VirtualMachine(ctx, name)
	if err != nil {
		return nil, fmt.Errorf("vm %q: %w", name, err)
	}
	return vm, nil
}

// Stats returns how much the simulator has worked since it started.
func (e *Env) Stats() Stats { return e.sim.readStats() }

// ErrVMNotFound is returned for a VM name the inventory does not have.
var ErrVMNotFound = errors.New("not found")

// PowerOffVM powers the VM off the way a guest `shutdown -h now` does: power state off,
// VmPoweredOffEvent, guest IP gone. A VM already off is left alone. Never faulted or delayed.
//
// It takes the simulator once, ahead of client calls waiting for it, and acts on its
// objects directly: a guest shutting down does not queue behind the vCenter's clients.
func (e *Env) PowerOffVM(ctx context.Context, name string) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("power off %q: %w", name, err)
	}
	var err error
	e.sim.doUrgent(func() { err = e.powerOff(name) })
	return err
}

// powerOff runs under the serializer.
func (e *Env) powerOff(name string) error {
	vm := e.vmNamed(name)
	if vm == nil {
		return fmt.Errorf("vm %q: %w", name, ErrVMNotFound)
	}
	sctx := e.sessionContext()
	var state types.VirtualMachinePowerState
	var res *methods.PowerOffVM_TaskBody
	sctx.WithLock(vm, func() {
		state = vm.Runtime.PowerState
		if state != types.VirtualMachinePowerStatePoweredOff {
			res, _ = vm.PowerOffVMTask(sctx, &types.PowerOffVM_Task{This: vm.Self}).(*methods.PowerOffVM_TaskBody)
		}
	})
	if state == types.VirtualMachinePowerStatePoweredOff {
		return nil
	}
	if res == nil || res.Fault_ != nil || res.Res == nil {
		return fmt.Errorf("power off %q: refused by the simulator", name)
	}
	if _, err := e.waitTask(res.Res.Returnval); err != nil {
		return fmt.Errorf("power off %q: %w", name, err)
	}
	return nil
}

// vmNamed finds a VM or template by name; nil if there is none. It runs under the
// serializer.
func (e *Env) vmNamed(name string) *simulator.VirtualMachine {
	sctx := e.simContext()
	for _, obj := range e.Model.Map().All("VirtualMachine") {
		vm, ok := obj.(*simulator.VirtualMachine)
		if !ok {
			continue
		}
		var match bool
		sctx.WithLock(vm, func() { match = vm.Name == name })
		if match {
			return vm
		}
	}
	return nil
}

// sessionContext is a simulator context with a session, for calling methods (which
// record the user in events) outside a SOAP call.
func (e *Env) sessionContext() *simulator.Context {
	sctx := e.simContext()
	sctx.Session = &simulator.Session{
		UserSession: types.UserSession{Key: "simenv", UserName: e.Username},
		Registry:    simulator.NewRegistry(),
		Map:         sctx.Map,
	}
	return sctx
}

// taskResult returns the outcome of a task started by an earlier call, which is over:
// no call returns before the tasks it started have finished.
func (e *Env) taskResult(ref types.ManagedObjectReference) (types.TaskInfo, error) {
	var info types.TaskInfo
	var err error
	e.sim.do(func() { info, err = e.taskInfo(ref) })
	return info, err
}

// taskInfo reads the info of a finished task. It runs under the serializer.
func (e *Env) taskInfo(ref types.ManagedObjectReference) (types.TaskInfo, error) {
	task, ok := e.Model.Map().Get(ref).(*simulator.Task)
	if !ok {
		return types.TaskInfo{}, fmt.Errorf("task %s not in the registry", ref)
	}
	var info types.TaskInfo
	e.simContext().WithLock(task, func() { info = task.Info })
	if info.Error != nil {
		return info, fmt.Errorf("%s: %T", info.DescriptionId, info.Error.Fault)
	}
	return info, nil
}

// VMAnnotation returns the VM's config.annotation.
func (e *Env) VMAnnotation(name string) (string, error) {
	vm, err := e.vmProperties(name, "config.annotation")
	if err != nil {
		return "", err
	}
	if vm.Config == nil {
		return "", nil
	}
	return vm.Config.Annotation, nil
}

// VMPowerState returns the VM's runtime.powerState.
func (e *Env) VMPowerState(name string) (types.VirtualMachinePowerState, error) {
	vm, err := e.vmProperties(name, "runtime.powerState")
	if err != nil {
		return "", err
	}
	return vm.Runtime.PowerState, nil
}

// VMGuestIP returns the VM's guest.ipAddress ("" when it has none).
func (e *Env) VMGuestIP(name string) (string, error) {
	vm, err := e.vmProperties(name, "guest.ipAddress")
	if err != nil {
		return "", err
	}
	if vm.Guest == nil {
		return "", nil
	}
	return vm.Guest.IpAddress, nil
}

func (e *Env) vmProperties(name string, props ...string) (mo.VirtualMachine, error) {
	ctx := context.Background()
	var out mo.VirtualMachine
	vm, err := e.vm(ctx, name)
	if err != nil {
		return out, err
	}
	if err := vm.Properties(ctx, vm.Reference(), props, &out); err != nil {
		return out, fmt.Errorf("properties of %q: %w", name, err)
	}
	return out, nil
}

// VMNames returns the names of every VM and template of the vCenter.
func (e *Env) VMNames() []string {
	var names []string
	e.sim.do(func() {
		sctx := e.simContext()
		for _, obj := range e.Model.Map().All("VirtualMachine") {
			vm, ok := obj.(*simulator.VirtualMachine)
			if !ok {
				continue
			}
			sctx.WithLock(vm, func() { names = append(names, vm.Name) })
		}
	})
	return names
}

// ExpireSessions ends every client session, as a vCenter session timeout would: the next
// call of each logged-in client fails with NotAuthenticated until it logs in again.
// It returns the number of sessions ended.
func (e *Env) ExpireSessions(ctx context.Context) (int, error) {
	ref := *e.internal.ServiceContent.SessionManager
	var sm mo.SessionManager
	if err := property.DefaultCollector(e.internal).RetrieveOne(ctx, ref, []string{"sessionList"}, &sm); err != nil {
		return 0, fmt.Errorf("list sessions: %w", err)
	}
	keys := make([]string, 0, len(sm.SessionList))
	for _, s := range sm.SessionList {
		keys = append(keys, s.Key)
	}
	if len(keys) == 0 {
		return 0, nil
	}
	if _, err := methods.TerminateSession(ctx, e.internal, &types.TerminateSession{This: ref, SessionId: keys}); err != nil {
		return 0, fmt.Errorf("terminate %d sessions: %w", len(keys), err)
	}
	return len(keys), nil
}
