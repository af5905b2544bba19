package vsphere

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/vmware/govmomi"
	"github.com/vmware/govmomi/object"
	"github.com/vmware/govmomi/vim25/mo"
	"github.com/vmware/govmomi/vim25/types"

	"github.com/hatchery-vsphere/hatchery-vsphere/internal/simenv"
)

// newEnv starts a simulated vCenter and a Client connected to it over SOAP and TLS.
func newEnv(t *testing.T, opts ...func(*Options)) (*simenv.Env, *Client) {
	t.Helper()
	ctx := t.Context()
	env, err := simenv.New(ctx, simenv.Options{})
	if err != nil {
		t.Fatalf("simenv: %v", err)
	}
	t.Cleanup(env.Close)
	o := envOptions(env)
	for _, f := range opts {
		f(&o)
	}
	c, err := Connect(ctx, o)
	if err != nil {
		t.Fatalf("Connect: %v", err)
	}
	t.Cleanup(func() { _ = c.Logout(context.Background()) })
	return env, c
}

// adminClient is a second session on the simulator, outside the client under test (an
// operator's), logged out at the end of the test.
func adminClient(t *testing.T, env *simenv.Env) *govmomi.Client {
	t.Helper()
	admin, err := env.Client(t.Context())
	if err != nil {
		t.Fatalf("admin client: %v", err)
	}
	t.Cleanup(func() { _ = admin.Logout(context.Background()) })
	return admin
}

func envOptions(env *simenv.Env) Options {
	return Options{
		Endpoint:   env.URL.Host,
		User:       env.Username,
		Password:   env.Password,
		Datacenter: env.Datacenter,
		Datastore:  env.Datastore,
		Network:    env.Network,
		CAFile:     env.CACertFile,
	}
}

type cloneParams struct {
	name       string
	annotation string
	cardName   string
	numCPUs    int32
	memoryMB   int64
	fixedIP    string
	powerOn    bool
}

// cloneSpec builds a clone spec the way the provider does (protocol spec §18.13).
func cloneSpec(t *testing.T, c *Client, template *object.VirtualMachine, p cloneParams) *types.VirtualMachineCloneSpec {
	t.Helper()
	ctx := t.Context()
	devices, err := c.LoadVirtualMachineDevices(ctx, template)
	if err != nil {
		t.Fatalf("LoadVirtualMachineDevices: %v", err)
	}
	cards := devices.SelectByType((*types.VirtualEthernetCard)(nil))
	if len(cards) == 0 {
		t.Fatalf("template has no ethernet card")
	}
	card := cards[0].(types.BaseVirtualEthernetCard).GetVirtualEthernetCard()
	network, err := c.LoadNetwork(ctx, c.opts.Network)
	if err != nil {
		t.Fatalf("LoadNetwork: %v", err)
	}
	if err := c.SetupEthernetCard(ctx, card, p.cardName, network); err != nil {
		t.Fatalf("SetupEthernetCard: %v", err)
	}
	device, err := EthernetCardDevice(card, p.cardName)
	if err != nil {
		t.Fatalf("EthernetCardDevice: %v", err)
	}
	pool, err := c.LoadResourcePool(ctx)
	if err != nil {
		t.Fatalf("LoadResourcePool: %v", err)
	}
	ds, err := c.LoadDatastore(ctx, c.opts.Datastore)
	if err != nil {
		t.Fatalf("LoadDatastore: %v", err)
	}
	poolRef, dsRef := pool.Reference(), ds.Reference()
	spec := &types.VirtualMachineCloneSpec{
		Location: types.VirtualMachineRelocateSpec{
			Pool:         &poolRef,
			Datastore:    &dsRef,
			DiskMoveType: string(types.VirtualMachineRelocateDiskMoveOptionsMoveChildMostDiskBacking),
			DeviceChange: []types.BaseVirtualDeviceConfigSpec{&types.VirtualDeviceConfigSpec{
				Operation: types.VirtualDeviceConfigSpecOperationEdit,
				Device:    device,
			}},
		},
		Config: &types.VirtualMachineConfigSpec{
			Annotation: p.annotation,
			NumCPUs:    p.numCPUs,
			MemoryMB:   p.memoryMB,
			Tools:      &types.ToolsConfigInfo{AfterPowerOn: types.NewBool(true)},
		},
		PowerOn: p.powerOn,
	}
	if p.fixedIP != "" {
		spec.Customization = &types.CustomizationSpec{
			Identity: &types.CustomizationLinuxPrep{
				HostName: &types.CustomizationFixedName{Name: p.name},
				Domain:   "local",
			},
			GlobalIPSettings: types.CustomizationGlobalIPSettings{DnsServerList: []string{"10.1.0.53"}},
			NicSettingMap: []types.CustomizationAdapterMapping{{
				Adapter: types.CustomizationIPSettings{
					Ip:         &types.CustomizationFixedIp{IpAddress: p.fixedIP},
					SubnetMask: "255.255.255.0",
					Gateway:    []string{"10.1.2.254"},
				},
			}},
		}
	}
	return spec
}

// cloneVM clones the debian12 template and returns the new VM.
func cloneVM(t *testing.T, c *Client, p cloneParams) *object.VirtualMachine {
	t.Helper()
	ctx := t.Context()
	template, err := c.LoadVirtualMachine(ctx, "debian12")
	if err != nil {
		t.Fatalf("LoadVirtualMachine: %v", err)
	}
	folder, err := c.LoadFolder(ctx)
	if err != nil {
		t.Fatalf("LoadFolder: %v", err)
	}
	spec := cloneSpec(t, c, template, p)
	ref, err := c.CloneVirtualMachine(ctx, template, folder, p.name, spec)
	if err != nil {
		t.Fatalf("CloneVirtualMachine: %v", err)
	}
	vm, err := c.NewVirtualMachine(ctx, spec, ref, p.name)
	if err != nil {
		t.Fatalf("NewVirtualMachine: %v", err)
	}
	return vm
}

func findVM(t *testing.T, vms []mo.VirtualMachine, name string) mo.VirtualMachine {
	t.Helper()
	for _, vm := range vms {
		if vm.Name == name {
			return vm
		}
	}
	t.Fatalf("VM %q not listed", name)
	return mo.VirtualMachine{}
}

func TestCloneAppliesAnnotationNICFlavorAndFixedIP(t *testing.T) {
	env, c := newEnv(t)
	ctx := t.Context()
	const annotation = `{"hatchery_name":"h1","worker_name":"w1","created":"2025-01-10T08:00:00Z"}`

	vm := cloneVM(t, c, cloneParams{
		name: "w1", annotation: annotation, cardName: "vmxnet3",
		numCPUs: 3, memoryMB: 6144, fixedIP: "10.1.2.3", powerOn: true,
	})
	if err := c.WaitForGuestOperationsReady(ctx, vm); err != nil {
		t.Fatalf("WaitForGuestOperationsReady: %v", err)
	}
	ip := "10.1.2.3"
	if err := c.WaitForVirtualMachineIP(ctx, vm, &ip, "w1"); err != nil {
		t.Fatalf("WaitForVirtualMachineIP(fixed): %v", err)
	}

	vms, err := c.ListVirtualMachines(ctx)
	if err != nil {
		t.Fatalf("ListVirtualMachines: %v", err)
	}
	got := findVM(t, vms, "w1")
	if got.Config == nil || got.Config.Annotation != annotation {
		t.Errorf("annotation = %+v, want %s", got.Config, annotation)
	}
	if got.Summary.Config.NumCpu != 3 || got.Summary.Config.MemorySizeMB != 6144 {
		t.Errorf("flavor = %d vCPU / %d MB, want 3 / 6144", got.Summary.Config.NumCpu, got.Summary.Config.MemorySizeMB)
	}
	if got.Guest == nil || got.Guest.IpAddress != "10.1.2.3" {
		t.Errorf("guest IP = %+v, want 10.1.2.3", got.Guest)
	}
	if got.Summary.Config.Template {
		t.Errorf("clone is a template")
	}
	template := findVM(t, vms, "debian12")
	if !template.Summary.Config.Template {
		t.Errorf("debian12 is not listed as a template")
	}

	devices, err := c.LoadVirtualMachineDevices(ctx, vm)
	if err != nil {
		t.Fatalf("LoadVirtualMachineDevices: %v", err)
	}
	nics := devices.SelectByType((*types.VirtualEthernetCard)(nil))
	if len(nics) != 1 {
		t.Fatalf("clone has %d NICs, want 1", len(nics))
	}
	if _, ok := nics[0].(*types.VirtualVmxnet3); !ok {
		t.Errorf("NIC type = %T, want *types.VirtualVmxnet3", nics[0])
	}
	if got := devices.Name(nics[0]); got == "" {
		t.Errorf("NIC has no name")
	}

	state, err := c.GetVirtualMachinePowerState(ctx, vm)
	if err != nil || state != types.VirtualMachinePowerStatePoweredOn {
		t.Errorf("power state = %q, %v; want poweredOn", state, err)
	}
	if a, err := env.VMAnnotation("w1"); err != nil || a != annotation {
		t.Errorf("simulator annotation = %q, %v", a, err)
	}
}

func TestNarrowListingReturnsOnlyAskedProperties(t *testing.T) {
	_, c := newEnv(t)
	ctx := t.Context()
	cloneVM(t, c, cloneParams{name: "narrow", annotation: `{"created":"2025-01-10T08:00:00Z"}`})

	vms, err := c.ListVirtualMachinesProperties(ctx, "config.annotation", "runtime.powerState", "summary.config.numCpu")
	if err != nil {
		t.Fatalf("ListVirtualMachinesProperties: %v", err)
	}
	if len(vms) != 3 { // two templates and the clone
		t.Fatalf("listed %d VMs, want 3", len(vms))
	}
	got := findVM(t, vms, "narrow")
	if got.Config == nil || got.Config.Annotation == "" {
		t.Errorf("config.annotation missing: %+v", got.Config)
	}
	if got.Runtime.PowerState != types.VirtualMachinePowerStatePoweredOff {
		t.Errorf("power state = %q, want poweredOff", got.Runtime.PowerState)
	}
	if got.Summary.Config.NumCpu != 2 {
		t.Errorf("numCpu = %d, want 2 (template's)", got.Summary.Config.NumCpu)
	}
	if got.Guest != nil {
		t.Errorf("guest retrieved although not asked for")
	}
}

func TestLoadVirtualMachineNotFound(t *testing.T) {
	_, c := newEnv(t)
	_, err := c.LoadVirtualMachine(t.Context(), "no-such-vm")
	if !errors.Is(err, ErrNotFound) || !IsNotFound(err) {
		t.Fatalf("err = %v, want ErrNotFound", err)
	}
	if !strings.Contains(err.Error(), `"no-such-vm"`) {
		t.Errorf("error %q does not name the VM", err)
	}
}

func TestPowerCycleRenameTemplateAndDestroy(t *testing.T) {
	env, c := newEnv(t)
	ctx := t.Context()
	vm := cloneVM(t, c, cloneParams{name: "provision-v2-abc", annotation: `{"provisioning":true,"created":"2025-01-10T08:00:00Z"}`})

	if err := c.StartVirtualMachine(ctx, vm); err != nil {
		t.Fatalf("StartVirtualMachine: %v", err)
	}
	// No fixed IP: any IPv4 the guest gets will do (fix of Q7).
	if err := c.WaitForVirtualMachineIP(ctx, vm, nil, "provision-v2-abc"); err != nil {
		t.Fatalf("WaitForVirtualMachineIP(any): %v", err)
	}
	empty := ""
	if err := c.WaitForVirtualMachineIP(ctx, vm, &empty, "provision-v2-abc"); err != nil {
		t.Fatalf("WaitForVirtualMachineIP(empty): %v", err)
	}

	// A guest shutdown is what WaitForVirtualMachineShutdown sees.
	waitErr := make(chan error, 1)
	go func() { waitErr <- c.WaitForVirtualMachineShutdown(ctx, vm) }()
	if err := env.PowerOffVM(ctx, "provision-v2-abc"); err != nil {
		t.Fatalf("PowerOffVM: %v", err)
	}
	if err := <-waitErr; err != nil {
		t.Fatalf("WaitForVirtualMachineShutdown: %v", err)
	}
	// Powering off a powered-off VM is fine.
	if err := c.ShutdownVirtualMachine(ctx, vm); err != nil {
		t.Fatalf("ShutdownVirtualMachine on a powered-off VM: %v", err)
	}

	// Flavor resize while powered off, then rename: the provisioned-VM reuse path.
	err := c.ReconfigureVirtualMachine(ctx, vm, types.VirtualMachineConfigSpec{NumCPUs: 8, MemoryMB: 16384, Annotation: `{"created":"2025-01-11T08:00:00Z"}`})
	if err != nil {
		t.Fatalf("ReconfigureVirtualMachine: %v", err)
	}
	if err := c.RenameVirtualMachine(ctx, vm, "calm-turing"); err != nil {
		t.Fatalf("RenameVirtualMachine: %v", err)
	}
	renamed, err := c.LoadVirtualMachine(ctx, "calm-turing")
	if err != nil {
		t.Fatalf("LoadVirtualMachine(renamed): %v", err)
	}
	if renamed.Reference() != vm.Reference() {
		t.Errorf("renamed VM is %v, want %v", renamed.Reference(), vm.Reference())
	}
	if _, err := c.LoadVirtualMachine(ctx, "provision-v2-abc"); !IsNotFound(err) {
		t.Errorf("old name still found: %v", err)
	}
	vms, err := c.ListVirtualMachinesProperties(ctx, "config.annotation", "summary.config.numCpu", "summary.config.memorySizeMB")
	if err != nil {
		t.Fatalf("list: %v", err)
	}
	got := findVM(t, vms, "calm-turing")
	if got.Summary.Config.NumCpu != 8 || got.Summary.Config.MemorySizeMB != 16384 {
		t.Errorf("after reconfigure %d vCPU / %d MB, want 8 / 16384", got.Summary.Config.NumCpu, got.Summary.Config.MemorySizeMB)
	}
	if got.Config.Annotation != `{"created":"2025-01-11T08:00:00Z"}` {
		t.Errorf("annotation after reconfigure = %q", got.Config.Annotation)
	}

	if err := c.StartVirtualMachine(ctx, renamed); err != nil {
		t.Fatalf("StartVirtualMachine: %v", err)
	}
	if err := c.ShutdownVirtualMachine(ctx, renamed); err != nil {
		t.Fatalf("ShutdownVirtualMachine: %v", err)
	}
	if state, err := env.VMPowerState("calm-turing"); err != nil || state != types.VirtualMachinePowerStatePoweredOff {
		t.Fatalf("power state = %q, %v; want poweredOff", state, err)
	}

	if err := c.MarkVirtualMachineAsTemplate(ctx, renamed); err != nil {
		t.Fatalf("MarkVirtualMachineAsTemplate: %v", err)
	}
	vms, err = c.ListVirtualMachinesProperties(ctx, "config.template")
	if err != nil {
		t.Fatalf("list: %v", err)
	}
	if got := findVM(t, vms, "calm-turing"); !got.Config.Template {
		t.Errorf("calm-turing is not a template")
	}

	if err := c.DestroyVirtualMachine(ctx, renamed); err != nil {
		t.Fatalf("DestroyVirtualMachine: %v", err)
	}
	if _, err := c.LoadVirtualMachine(ctx, "calm-turing"); !IsNotFound(err) {
		t.Errorf("destroyed VM still found: %v", err)
	}
	if err := c.DestroyVirtualMachine(ctx, renamed); !IsNotFound(err) {
		t.Errorf("destroying a destroyed VM: err = %v, want ErrNotFound", err)
	}
}

func TestWaitForIPIsBoundedAndMatchesTheExpectedIP(t *testing.T) {
	_, c := newEnv(t)
	ctx := t.Context()
	vm := cloneVM(t, c, cloneParams{name: "w-ip", fixedIP: "10.1.2.7", powerOn: true})
	off := cloneVM(t, c, cloneParams{name: "w-off"})
	// Only the waits get the short task timeout, so that a loaded machine cannot make the
	// clones above time out.
	short, err := newClientWith(t, c, func(o *Options) { o.TaskTimeout = 300 * time.Millisecond })
	if err != nil {
		t.Fatal(err)
	}

	other := "10.1.2.8"
	err = short.WaitForVirtualMachineIP(ctx, vm, &other, "w-ip")
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("waiting for an IP the guest never reports: err = %v, want deadline", err)
	}
	if !strings.Contains(err.Error(), "10.1.2.8") || !strings.Contains(err.Error(), `"w-ip"`) {
		t.Errorf("error %q does not name the IP and the VM", err)
	}
	if err := short.WaitForVirtualMachineIP(ctx, off, nil, "w-off"); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("waiting for any IP of a powered-off VM: err = %v, want deadline", err)
	}
	if err := short.WaitForGuestOperationsReady(ctx, off); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("waiting for guest operations of a powered-off VM: err = %v, want deadline", err)
	}
	// The caller's context bounds the wait too.
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if err := c.WaitForVirtualMachineShutdown(cctx, vm); !errors.Is(err, context.Canceled) {
		t.Fatalf("waiting for power-off with a cancelled context: err = %v, want canceled", err)
	}
}

func TestEventsAfterPowerOperations(t *testing.T) {
	_, c := newEnv(t)
	ctx := t.Context()
	vm := cloneVM(t, c, cloneParams{name: "w-events"})

	const cycles = 6 // 18 power events: more than the 10 vCenter returns by default
	for range cycles {
		if err := c.StartVirtualMachine(ctx, vm); err != nil {
			t.Fatalf("StartVirtualMachine: %v", err)
		}
		if err := c.ShutdownVirtualMachine(ctx, vm); err != nil {
			t.Fatalf("ShutdownVirtualMachine: %v", err)
		}
	}

	events, err := c.LoadVirtualMachineEvents(ctx, vm, "VmStartingEvent", "VmPoweredOffEvent", "VmRenamedEvent")
	if err != nil {
		t.Fatalf("LoadVirtualMachineEvents: %v", err)
	}
	var starts, offs int
	for _, e := range events {
		switch e.(type) {
		case *types.VmStartingEvent:
			starts++
		case *types.VmPoweredOffEvent:
			offs++
		default:
			t.Errorf("unexpected event %T", e)
		}
	}
	if starts != cycles || offs != cycles {
		t.Errorf("got %d starting / %d powered-off events, want %d each", starts, offs, cycles)
	}
	if _, ok := events[0].(*types.VmPoweredOffEvent); !ok {
		t.Errorf("newest event is %T, want the last power-off", events[0])
	}
	for i := 1; i < len(events); i++ {
		if events[i].GetEvent().CreatedTime.After(events[i-1].GetEvent().CreatedTime) {
			t.Fatalf("events not newest first at %d", i)
		}
	}

	all, err := c.LoadVirtualMachineEvents(ctx, vm)
	if err != nil {
		t.Fatalf("LoadVirtualMachineEvents(all): %v", err)
	}
	if len(all) <= 3*cycles {
		t.Errorf("got %d events in all, want more than %d", len(all), 3*cycles)
	}

	small, err := newClientWith(t, c, func(o *Options) { o.EventPageSize = 4 })
	if err != nil {
		t.Fatal(err)
	}
	page, err := small.LoadVirtualMachineEvents(ctx, vm, "VmStartingEvent")
	if err != nil {
		t.Fatalf("LoadVirtualMachineEvents(page 4): %v", err)
	}
	if len(page) != 4 {
		t.Errorf("page size 4 returned %d events", len(page))
	}
}

// newClientWith connects a second client to the same vCenter with modified options.
func newClientWith(t *testing.T, c *Client, f func(*Options)) (*Client, error) {
	t.Helper()
	o := c.opts
	f(&o)
	other, err := Connect(t.Context(), o)
	if err != nil {
		return nil, err
	}
	t.Cleanup(func() { _ = other.Logout(context.Background()) })
	return other, nil
}

func TestStartProgramInGuestIsRecordedWithItsEnvironment(t *testing.T) {
	env, c := newEnv(t)
	ctx := t.Context()
	vm := cloneVM(t, c, cloneParams{name: "w-guest", powerOn: true})
	if err := c.WaitForGuestOperationsReady(ctx, vm); err != nil {
		t.Fatalf("WaitForGuestOperationsReady: %v", err)
	}
	procman, err := c.ProcessManager(ctx, vm)
	if err != nil {
		t.Fatalf("ProcessManager: %v", err)
	}
	req := &types.StartProgramInGuest{
		Vm:   vm.Reference(),
		Auth: &types.NamePasswordAuthentication{Username: "root", Password: "s3cret"},
		Spec: &types.GuestProgramSpec{
			ProgramPath:  "/bin/echo",
			Arguments:    "-n ;./worker",
			EnvVariables: []string{"CDS_CONFIG=eyJ9", "FOO=bar"},
		},
	}
	res, err := c.StartProgramInGuest(ctx, procman, req)
	if err != nil {
		t.Fatalf("StartProgramInGuest: %v", err)
	}
	programs := env.GuestPrograms()
	if len(programs) != 1 {
		t.Fatalf("guest saw %d programs, want 1", len(programs))
	}
	p := programs[0]
	if p.VMName != "w-guest" || p.ProgramPath != "/bin/echo" || p.Arguments != "-n ;./worker" ||
		p.Username != "root" || p.Password != "s3cret" || p.PID != res.Returnval {
		t.Errorf("guest program = %+v, pid %d", p, res.Returnval)
	}
	if strings.Join(p.Env, ",") != "CDS_CONFIG=eyJ9,FOO=bar" {
		t.Errorf("guest env = %v", p.Env)
	}
}

func TestResourcePoolRuntime(t *testing.T) {
	env, c := newEnv(t)
	if err := env.SetResourcePoolRuntime(12000, 64<<30); err != nil {
		t.Fatalf("SetResourcePoolRuntime: %v", err)
	}
	rt, err := c.ResourcePoolRuntime(t.Context())
	if err != nil {
		t.Fatalf("ResourcePoolRuntime: %v", err)
	}
	if rt.Cpu.UnreservedForVm != 12000 || rt.Memory.UnreservedForVm != 64<<30 {
		t.Errorf("runtime = cpu %d, memory %d; want 12000, %d", rt.Cpu.UnreservedForVm, rt.Memory.UnreservedForVm, int64(64<<30))
	}
}

func TestInjectedCloneFaultIsAnError(t *testing.T) {
	env, c := newEnv(t)
	ctx := t.Context()
	env.AddFault("CloneVM_Task", &types.InsufficientResourcesFault{}, 1)
	template, err := c.LoadVirtualMachine(ctx, "debian12")
	if err != nil {
		t.Fatalf("LoadVirtualMachine: %v", err)
	}
	folder, _ := c.LoadFolder(ctx)
	spec := cloneSpec(t, c, template, cloneParams{name: "w-fault"})
	_, err = c.CloneVirtualMachine(ctx, template, folder, "w-fault", spec)
	if err == nil {
		t.Fatal("clone succeeded despite the fault")
	}
	if !strings.Contains(err.Error(), `clone "w-fault" from "debian12"`) {
		t.Errorf("error %q does not name the clone and its source", err)
	}
	if _, err := c.LoadVirtualMachine(ctx, "w-fault"); !IsNotFound(err) {
		t.Errorf("failed clone exists: %v", err)
	}
	// The fault was for one call only.
	if _, err := c.CloneVirtualMachine(ctx, template, folder, "w-fault", spec); err != nil {
		t.Fatalf("second clone: %v", err)
	}
}

func TestSlowCallHitsTheCallTimeout(t *testing.T) {
	env, c := newEnv(t)
	ctx := t.Context()
	vm, err := c.LoadVirtualMachine(ctx, "debian12")
	if err != nil {
		t.Fatalf("LoadVirtualMachine: %v", err)
	}
	short, err := newClientWith(t, c, func(o *Options) { o.CallTimeout = 200 * time.Millisecond })
	if err != nil {
		t.Fatal(err)
	}
	// The simulator holds the call until the env closes: only the call timeout ends it.
	env.SetMethodDelay("RetrievePropertiesEx", time.Hour)
	_, err = short.GetVirtualMachinePowerState(ctx, vm)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("err = %v, want deadline exceeded", err)
	}
	if !strings.Contains(err.Error(), `"debian12"`) {
		t.Errorf("error %q does not name the VM", err)
	}
}

func TestSessionLossIsRecoveredByReLogin(t *testing.T) {
	env, c := newEnv(t)
	ctx := t.Context()
	admin := adminClient(t, env)

	current, err := c.sessionKey(ctx)
	if err != nil {
		t.Fatalf("session key: %v", err)
	}
	if err := admin.SessionManager.TerminateSession(ctx, []string{current}); err != nil {
		t.Fatalf("TerminateSession: %v", err)
	}
	if _, err := c.LoadVirtualMachine(ctx, "debian12"); err != nil {
		t.Fatalf("call after session loss: %v", err)
	}
	renewed, err := c.sessionKey(ctx)
	if err != nil || renewed == current {
		t.Fatalf("session key after re-login = %q, %v; want a new one", renewed, err)
	}

	// After Logout, a lost session stays lost.
	if err := c.Logout(ctx); err != nil {
		t.Fatalf("Logout: %v", err)
	}
	if _, err := c.LoadVirtualMachine(ctx, "debian12"); err == nil {
		t.Fatal("call after Logout succeeded")
	}
}

func TestConnectNamesWhatIsMissing(t *testing.T) {
	env, err := simenv.New(t.Context(), simenv.Options{Templates: []simenv.Template{}})
	if err != nil {
		t.Fatalf("simenv: %v", err)
	}
	t.Cleanup(env.Close)

	tests := []struct {
		name string
		edit func(*Options)
		want string
	}{
		{"datacenter", func(o *Options) { o.Datacenter = "DC9" }, `datacenter "DC9" not found`},
		{"datastore", func(o *Options) { o.Datastore = "nope-ds" }, `datastore "nope-ds" not found`},
		{"network", func(o *Options) { o.Network = "nope-net" }, `network "nope-net" not found`},
		{"resource pool", func(o *Options) { o.ResourcePool = "nope-pool" }, `resource pool "nope-pool" not found`},
		{"untrusted certificate", func(o *Options) { o.CAFile = "" }, "certificate"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			o := envOptions(env)
			tt.edit(&o)
			c, err := Connect(t.Context(), o)
			if err == nil {
				_ = c.Logout(context.Background())
				t.Fatal("Connect succeeded")
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("err = %q, want it to contain %q", err, tt.want)
			}
		})
	}

	t.Run("defaults", func(t *testing.T) {
		o := envOptions(env)
		o.Datastore, o.Network = "", ""
		c, err := Connect(t.Context(), o)
		if err != nil {
			t.Fatalf("Connect with default datastore and network: %v", err)
		}
		defer func() { _ = c.Logout(context.Background()) }()
		ds, err := c.LoadDatastore(t.Context(), "")
		if err != nil || ds.Name() != env.Datastore {
			t.Errorf("default datastore = %v, %v; want %s", ds, err, env.Datastore)
		}
		if _, err := c.LoadDatastore(t.Context(), "missing"); !IsNotFound(err) {
			t.Errorf("LoadDatastore(missing) err = %v, want ErrNotFound", err)
		}
		if _, err := c.LoadNetwork(t.Context(), "missing"); !IsNotFound(err) {
			t.Errorf("LoadNetwork(missing) err = %v, want ErrNotFound", err)
		}
	})
}

func TestEthernetCardTypes(t *testing.T) {
	_, c := newEnv(t)
	ctx := t.Context()
	network, err := c.LoadNetwork(ctx, "")
	if err != nil {
		t.Fatalf("LoadNetwork: %v", err)
	}
	existing := types.VirtualEthernetCard{VirtualDevice: types.VirtualDevice{Key: 4000, ControllerKey: 100, UnitNumber: types.NewInt32(7)}}

	tests := []struct {
		name string
		want types.BaseVirtualDevice
	}{
		{"", &types.VirtualE1000{}},
		{"e1000", &types.VirtualE1000{}},
		{"e1000e", &types.VirtualE1000e{}},
		{"vmxnet2", &types.VirtualVmxnet2{}},
		{"vmxnet3", &types.VirtualVmxnet3{}},
		{"pcnet32", &types.VirtualPCNet32{}},
	}
	for _, tt := range tests {
		card := existing
		if err := c.SetupEthernetCard(ctx, &card, tt.name, network); err != nil {
			t.Fatalf("SetupEthernetCard(%q): %v", tt.name, err)
		}
		if card.Key != 4000 || card.ControllerKey != 100 || card.UnitNumber == nil || *card.UnitNumber != 7 {
			t.Errorf("%q: key/controller/unit not kept: %+v", tt.name, card.VirtualDevice)
		}
		backing, ok := card.Backing.(*types.VirtualEthernetCardNetworkBackingInfo)
		if !ok || backing.DeviceName != "VM Network" {
			t.Errorf("%q: backing = %#v, want VM Network", tt.name, card.Backing)
		}
		device, err := EthernetCardDevice(&card, tt.name)
		if err != nil {
			t.Fatalf("EthernetCardDevice(%q): %v", tt.name, err)
		}
		if gotType, wantType := fmt.Sprintf("%T", device), fmt.Sprintf("%T", tt.want); gotType != wantType {
			t.Errorf("%q: device type %s, want %s", tt.name, gotType, wantType)
		}
		if device.GetVirtualDevice().Key != 4000 {
			t.Errorf("%q: device key = %d, want 4000", tt.name, device.GetVirtualDevice().Key)
		}
	}

	card := existing
	if err := c.SetupEthernetCard(ctx, &card, "token-ring", network); err == nil {
		t.Error("SetupEthernetCard accepted an unknown card type")
	}
	card = existing
	if err := c.SetupEthernetCard(ctx, &card, "", namelessNetwork{network}); err == nil || !strings.Contains(err.Error(), "no name") {
		t.Errorf("a network answering no name gave %v, want an error (a clone on it fails)", err)
	}
}

// namelessNetwork answers a backing without a name, as a name read while the session is
// being lost does.
type namelessNetwork struct{ object.NetworkReference }

func (namelessNetwork) EthernetCardBackingInfo(context.Context) (types.BaseVirtualDeviceBackingInfo, error) {
	return &types.VirtualEthernetCardNetworkBackingInfo{}, nil
}
