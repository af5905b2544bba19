package simenv

import (
	"context"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vmware/govmomi"
	"github.com/vmware/govmomi/event"
	"github.com/vmware/govmomi/fault"
	"github.com/vmware/govmomi/find"
	"github.com/vmware/govmomi/guest"
	"github.com/vmware/govmomi/object"
	"github.com/vmware/govmomi/property"
	"github.com/vmware/govmomi/view"
	"github.com/vmware/govmomi/vim25/mo"
	"github.com/vmware/govmomi/vim25/types"
)

// world is a started Env with a logged-in client and a finder on the datacenter.
type world struct {
	env    *Env
	client *govmomi.Client
	finder *find.Finder
}

func newWorld(t *testing.T, opts Options) *world {
	t.Helper()
	ctx := t.Context()
	env, err := New(ctx, opts)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(env.Close)
	c, err := env.Client(ctx)
	if err != nil {
		t.Fatalf("Client: %v", err)
	}
	t.Cleanup(func() { _ = c.Logout(context.Background()) })
	f := find.NewFinder(c.Client, false)
	dc, err := f.Datacenter(ctx, env.Datacenter)
	if err != nil {
		t.Fatalf("datacenter: %v", err)
	}
	f.SetDatacenter(dc)
	return &world{env: env, client: c, finder: f}
}

// cloneSpec is shaped like the hatchery's (§18.13 of the protocol spec).
func (w *world) cloneSpec(t *testing.T, src *object.VirtualMachine, vmName, annotation, fixedIP string) types.VirtualMachineCloneSpec {
	t.Helper()
	ctx := t.Context()
	pool, err := w.finder.ResourcePool(ctx, w.env.ResourcePool)
	if err != nil {
		t.Fatalf("resource pool: %v", err)
	}
	ds, err := w.finder.Datastore(ctx, w.env.Datastore)
	if err != nil {
		t.Fatalf("datastore: %v", err)
	}
	nw, err := w.finder.Network(ctx, w.env.Network)
	if err != nil {
		t.Fatalf("network: %v", err)
	}
	backing, err := nw.EthernetCardBackingInfo(ctx)
	if err != nil {
		t.Fatalf("backing: %v", err)
	}
	devices, err := src.Device(ctx)
	if err != nil {
		t.Fatalf("devices: %v", err)
	}
	cards := devices.SelectByType((*types.VirtualEthernetCard)(nil))
	if len(cards) == 0 {
		t.Fatalf("template has no ethernet card")
	}
	card := cards[0].(types.BaseVirtualEthernetCard).GetVirtualEthernetCard()
	card.Backing = backing

	adapter := types.CustomizationIPSettings{Ip: &types.CustomizationDhcpIpGenerator{}}
	if fixedIP != "" {
		adapter = types.CustomizationIPSettings{
			Ip:         &types.CustomizationFixedIp{IpAddress: fixedIP},
			SubnetMask: "255.255.255.0",
			Gateway:    []string{"10.1.2.1"},
		}
	}
	poolRef, dsRef := pool.Reference(), ds.Reference()
	return types.VirtualMachineCloneSpec{
		Location: types.VirtualMachineRelocateSpec{
			Pool:         &poolRef,
			Datastore:    &dsRef,
			DiskMoveType: string(types.VirtualMachineRelocateDiskMoveOptionsMoveChildMostDiskBacking),
		},
		Config: &types.VirtualMachineConfigSpec{
			Annotation: annotation,
			NumCPUs:    3,
			MemoryMB:   3072,
			Tools:      &types.ToolsConfigInfo{AfterPowerOn: types.NewBool(true)},
			DeviceChange: []types.BaseVirtualDeviceConfigSpec{&types.VirtualDeviceConfigSpec{
				Operation: types.VirtualDeviceConfigSpecOperationEdit,
				Device:    cards[0],
			}},
		},
		Customization: &types.CustomizationSpec{
			Identity: &types.CustomizationLinuxPrep{
				HostName: &types.CustomizationFixedName{Name: vmName},
				Domain:   "local",
			},
			GlobalIPSettings: types.CustomizationGlobalIPSettings{DnsServerList: []string{"10.1.2.53"}},
			NicSettingMap:    []types.CustomizationAdapterMapping{{Adapter: adapter}},
		},
		PowerOn: true,
	}
}

func (w *world) clone(t *testing.T, vmName, annotation, fixedIP string) (*object.VirtualMachine, error) {
	t.Helper()
	ctx := t.Context()
	src, err := w.finder.VirtualMachine(ctx, "debian12")
	if err != nil {
		t.Fatalf("template: %v", err)
	}
	folder, err := w.finder.Folder(ctx, w.env.Folder)
	if err != nil {
		t.Fatalf("folder: %v", err)
	}
	task, err := src.Clone(ctx, folder, vmName, w.cloneSpec(t, src, vmName, annotation, fixedIP))
	if err != nil {
		return nil, err
	}
	res, err := task.WaitForResult(ctx)
	if err != nil {
		return nil, err
	}
	return object.NewVirtualMachine(w.client.Client, res.Result.(types.ManagedObjectReference)), nil
}

func (w *world) mustClone(t *testing.T, vmName, annotation, fixedIP string) *object.VirtualMachine {
	t.Helper()
	vm, err := w.clone(t, vmName, annotation, fixedIP)
	if err != nil {
		t.Fatalf("clone %s: %v", vmName, err)
	}
	return vm
}

func props(t *testing.T, vm *object.VirtualMachine, ps ...string) mo.VirtualMachine {
	t.Helper()
	var out mo.VirtualMachine
	if err := vm.Properties(t.Context(), vm.Reference(), ps, &out); err != nil {
		t.Fatalf("properties %v: %v", ps, err)
	}
	return out
}

func TestTemplatesAreRealTemplatesWithRequestedHardware(t *testing.T) {
	w := newWorld(t, Options{})
	for _, want := range []Template{{"debian12", 2, 4096}, {"ubuntu24", 4, 8192}} {
		vm, err := w.finder.VirtualMachine(t.Context(), want.Name)
		if err != nil {
			t.Fatalf("find %s: %v", want.Name, err)
		}
		p := props(t, vm, "summary.config", "config.hardware.device")
		if !p.Summary.Config.Template || p.Summary.Config.NumCpu != want.NumCPU || p.Summary.Config.MemorySizeMB != want.MemoryMB {
			t.Errorf("%s: template=%v cpu=%d mem=%d, want template %d/%d", want.Name,
				p.Summary.Config.Template, p.Summary.Config.NumCpu, p.Summary.Config.MemorySizeMB, want.NumCPU, want.MemoryMB)
		}
		nics := object.VirtualDeviceList(p.Config.Hardware.Device).SelectByType((*types.VirtualEthernetCard)(nil))
		if len(nics) != 1 {
			t.Errorf("%s: %d ethernet cards, want 1", want.Name, len(nics))
		}
	}
}

func TestDefaultPoolAndNetworkAreUnambiguous(t *testing.T) {
	w := newWorld(t, Options{Templates: []Template{}})
	ctx := t.Context()
	if _, err := w.finder.DefaultResourcePool(ctx); err != nil {
		t.Errorf("default resource pool: %v", err)
	}
	nw, err := w.finder.DefaultNetwork(ctx)
	if err != nil {
		t.Fatalf("default network: %v", err)
	}
	if got := nw.GetInventoryPath(); !strings.HasSuffix(got, w.env.Network) {
		t.Errorf("default network %q, want %q", got, w.env.Network)
	}
	if _, err := w.finder.DefaultDatastore(ctx); err != nil {
		t.Errorf("default datastore: %v", err)
	}
}

func TestCloneKeepsAnnotationAndFixedIP(t *testing.T) {
	w := newWorld(t, Options{})
	annotation := `{"hatchery_name":"h","worker_name":"w1","created":"2025-01-10T08:00:00Z","ip_address":"10.1.2.42"}`
	vm := w.mustClone(t, "w1", annotation, "10.1.2.42")

	p := props(t, vm, "config.annotation", "summary.config", "guest", "runtime.powerState")
	if p.Config.Annotation != annotation {
		t.Errorf("config.annotation = %q, want %q", p.Config.Annotation, annotation)
	}
	if p.Summary.Config.Annotation != annotation {
		t.Errorf("summary.config.annotation = %q, want %q", p.Summary.Config.Annotation, annotation)
	}
	if p.Summary.Config.NumCpu != 3 || p.Summary.Config.MemorySizeMB != 3072 {
		t.Errorf("hardware %d vCPU/%d MB, want 3/3072 from the clone spec", p.Summary.Config.NumCpu, p.Summary.Config.MemorySizeMB)
	}
	if p.Runtime.PowerState != types.VirtualMachinePowerStatePoweredOn {
		t.Errorf("power state %s, want poweredOn", p.Runtime.PowerState)
	}
	if p.Guest.IpAddress != "10.1.2.42" {
		t.Errorf("guest.ipAddress = %q, want the customized 10.1.2.42", p.Guest.IpAddress)
	}
	if len(p.Guest.Net) == 0 || len(p.Guest.Net[0].IpAddress) == 0 || p.Guest.Net[0].IpAddress[0] != "10.1.2.42" {
		t.Errorf("guest.net = %+v, want 10.1.2.42 on the first NIC", p.Guest.Net)
	}
	if p.Guest.GuestOperationsReady == nil || !*p.Guest.GuestOperationsReady {
		t.Errorf("guestOperationsReady = %v, want true after power-on", p.Guest.GuestOperationsReady)
	}
	if got, err := w.env.VMAnnotation("w1"); err != nil || got != annotation {
		t.Errorf("VMAnnotation = %q, %v", got, err)
	}
	// govmomi's own wait works: the IP was published through the property collector.
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	if ip, err := vm.WaitForIP(ctx, true); err != nil || ip != "10.1.2.42" {
		t.Errorf("WaitForIP = %q, %v", ip, err)
	}
}

func TestCloneWithoutAnnotationHasNone(t *testing.T) {
	w := newWorld(t, Options{})
	vm := w.mustClone(t, "bare", "", "")
	if p := props(t, vm, "config.annotation"); p.Config != nil && p.Config.Annotation != "" {
		t.Errorf("annotation %q, want empty", p.Config.Annotation)
	}
}

func TestDHCPAddressesAreDistinctAndInRange(t *testing.T) {
	w := newWorld(t, Options{DHCPRange: "172.20.0.0/24"})
	seen := map[string]string{}
	for _, name := range []string{"a", "b", "c"} {
		vm := w.mustClone(t, name, "", "")
		ip := props(t, vm, "guest.ipAddress").Guest.IpAddress
		if !strings.HasPrefix(ip, "172.20.0.") {
			t.Errorf("%s: ip %q not from 172.20.0.0/24", name, ip)
		}
		if other, dup := seen[ip]; dup {
			t.Errorf("%s and %s both got %s", other, name, ip)
		}
		seen[ip] = name
	}
}

func TestPowerOffClearsGuestAndPowerOnRestoresFixedIP(t *testing.T) {
	w := newWorld(t, Options{})
	ctx := t.Context()
	vm := w.mustClone(t, "p1", `{"hatchery_name":"h"}`, "10.1.2.7")

	if err := w.env.PowerOffVM(ctx, "p1"); err != nil {
		t.Fatalf("PowerOffVM: %v", err)
	}
	p := props(t, vm, "guest", "runtime.powerState")
	if p.Runtime.PowerState != types.VirtualMachinePowerStatePoweredOff {
		t.Errorf("power state %s, want poweredOff", p.Runtime.PowerState)
	}
	if p.Guest.IpAddress != "" || (len(p.Guest.Net) > 0 && len(p.Guest.Net[0].IpAddress) > 0) {
		t.Errorf("guest IP still reported after power-off: %q %+v", p.Guest.IpAddress, p.Guest.Net)
	}
	if p.Guest.GuestOperationsReady == nil || *p.Guest.GuestOperationsReady {
		t.Errorf("guestOperationsReady = %v, want false after power-off", p.Guest.GuestOperationsReady)
	}
	if err := w.env.PowerOffVM(ctx, "p1"); err != nil {
		t.Errorf("second PowerOffVM: %v", err)
	}

	// A provisioned VM woken up again reports its fixed IP again.
	task, err := vm.PowerOn(ctx)
	if err != nil {
		t.Fatalf("power on: %v", err)
	}
	if err := task.Wait(ctx); err != nil {
		t.Fatalf("power on: %v", err)
	}
	if ip := props(t, vm, "guest.ipAddress").Guest.IpAddress; ip != "10.1.2.7" {
		t.Errorf("ip after power-on again = %q, want 10.1.2.7", ip)
	}

	// The power-off is visible as an event, which the hatchery's cleanup relies on.
	if events := queryEvents(t, w, vm, "VmPoweredOffEvent"); len(events) == 0 {
		t.Errorf("no VmPoweredOffEvent after PowerOffVM")
	}
}

func queryEvents(t *testing.T, w *world, vm *object.VirtualMachine, kinds ...string) []types.BaseEvent {
	t.Helper()
	ref := vm.Reference()
	filter := types.EventFilterSpec{
		Entity:      &types.EventFilterSpecByEntity{Entity: ref, Recursion: types.EventFilterSpecRecursionOptionSelf},
		EventTypeId: kinds,
		MaxCount:    50,
	}
	events, err := event.NewManager(w.client.Client).QueryEvents(t.Context(), filter)
	if err != nil {
		t.Fatalf("query events: %v", err)
	}
	return events
}

func TestGuestProgramRecordedWithEnvAndCredentials(t *testing.T) {
	var mu sync.Mutex
	var seen []GuestProgram
	w := newWorld(t, Options{
		GuestUsername: "root",
		GuestPassword: "s3cret",
		OnGuestProgram: func(p GuestProgram) {
			mu.Lock()
			defer mu.Unlock()
			seen = append(seen, p)
		},
	})
	ctx := t.Context()
	vm := w.mustClone(t, "gp", "", "")

	ops := guest.NewOperationsManager(w.client.Client, vm.Reference())
	pm, err := ops.ProcessManager(ctx)
	if err != nil {
		t.Fatalf("process manager: %v", err)
	}
	auth := &types.NamePasswordAuthentication{Username: "root", Password: "s3cret"}
	spec := &types.GuestProgramSpec{
		ProgramPath:  "/bin/echo",
		Arguments:    "-n ;echo hello",
		EnvVariables: []string{"CDS_CONFIG=eyJ9", "FOO=bar"},
	}
	pid, err := pm.StartProgram(ctx, auth, spec)
	if err != nil {
		t.Fatalf("StartProgram: %v", err)
	}
	want := GuestProgram{VMName: "gp", Username: "root", Password: "s3cret", ProgramPath: "/bin/echo",
		Arguments: "-n ;echo hello", Env: []string{"CDS_CONFIG=eyJ9", "FOO=bar"}, PID: pid}
	got := w.env.GuestPrograms()
	if len(got) != 1 || !sameProgram(got[0], want) {
		t.Fatalf("GuestPrograms = %+v, want [%+v]", got, want)
	}
	mu.Lock()
	if len(seen) != 1 || !sameProgram(seen[0], want) {
		t.Errorf("callback saw %+v, want [%+v]", seen, want)
	}
	mu.Unlock()

	procs, err := pm.ListProcesses(ctx, auth, []int64{pid})
	if err != nil || len(procs) != 1 || procs[0].EndTime != nil {
		t.Fatalf("ListProcesses = %+v, %v; want one running process", procs, err)
	}
	if err := w.env.FinishGuestProgram(pid, 3); err != nil {
		t.Fatalf("FinishGuestProgram: %v", err)
	}
	procs, err = pm.ListProcesses(ctx, auth, []int64{pid})
	if err != nil || len(procs) != 1 || procs[0].EndTime == nil || procs[0].ExitCode != 3 {
		t.Errorf("ListProcesses after finish = %+v, %v; want ended with exit code 3", procs, err)
	}

	// Wrong credentials are refused, as a guest would.
	_, err = pm.StartProgram(ctx, &types.NamePasswordAuthentication{Username: "root", Password: "nope"}, spec)
	if !fault.Is(err, &types.InvalidGuestLogin{}) {
		t.Errorf("StartProgram with a bad password: %v, want InvalidGuestLogin", err)
	}
	// A powered-off guest runs nothing.
	if err := w.env.PowerOffVM(ctx, "gp"); err != nil {
		t.Fatalf("PowerOffVM: %v", err)
	}
	_, err = pm.StartProgram(ctx, auth, spec)
	if !fault.Is(err, &types.GuestOperationsUnavailable{}) {
		t.Errorf("StartProgram on a powered-off VM: %v, want GuestOperationsUnavailable", err)
	}
	if n := len(w.env.GuestPrograms()); n != 1 {
		t.Errorf("%d programs recorded, want 1 (refused calls are not programs)", n)
	}
}

func sameProgram(a, b GuestProgram) bool {
	return a.VMName == b.VMName && a.Username == b.Username && a.Password == b.Password &&
		a.ProgramPath == b.ProgramPath && a.Arguments == b.Arguments && a.PID == b.PID &&
		a.WorkingDirectory == b.WorkingDirectory && strings.Join(a.Env, "\n") == strings.Join(b.Env, "\n")
}

func TestFaultMakesCloneFailThenClears(t *testing.T) {
	w := newWorld(t, Options{})
	w.env.AddFault("CloneVM_Task", &types.InsufficientResourcesFault{}, 1)
	_, err := w.clone(t, "f1", "", "")
	if !fault.Is(err, &types.InsufficientResourcesFault{}) {
		t.Fatalf("clone with a fault rule: %v, want InsufficientResourcesFault", err)
	}
	if _, err := w.clone(t, "f1", "", ""); err != nil {
		t.Errorf("clone after the single fault was used: %v", err)
	}
	if n := w.env.CallCount("CloneVM_Task"); n != 2 {
		t.Errorf("CallCount(CloneVM_Task) = %d, want 2", n)
	}
}

func TestMethodDelayDelaysTheCall(t *testing.T) {
	w := newWorld(t, Options{})
	ctx := t.Context()
	vm, err := w.finder.VirtualMachine(ctx, "debian12")
	if err != nil {
		t.Fatalf("template: %v", err)
	}
	w.env.SetMethodDelay("RetrievePropertiesEx", time.Hour)
	// A delayed call outlives a short deadline: the client gives up, proving the delay
	// without measuring time.
	short, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
	defer cancel()
	var out mo.VirtualMachine
	err = vm.Properties(short, vm.Reference(), []string{"name"}, &out)
	if err == nil {
		t.Fatalf("delayed call returned before its deadline")
	}
	w.env.SetMethodDelay("RetrievePropertiesEx", 0)
	if err := vm.Properties(ctx, vm.Reference(), []string{"name"}, &out); err != nil {
		t.Errorf("call after removing the delay: %v", err)
	}
}

func TestResourcePoolRuntimeIsVisible(t *testing.T) {
	w := newWorld(t, Options{})
	ctx := t.Context()
	const mem = int64(6) << 30
	if err := w.env.SetResourcePoolRuntime(12000, mem); err != nil {
		t.Fatalf("SetResourcePoolRuntime: %v", err)
	}
	pool, err := w.finder.DefaultResourcePool(ctx)
	if err != nil {
		t.Fatalf("default pool: %v", err)
	}
	var rp mo.ResourcePool
	pc := property.DefaultCollector(w.client.Client)
	if err := pc.RetrieveOne(ctx, pool.Reference(), []string{"runtime", "summary"}, &rp); err != nil {
		t.Fatalf("retrieve pool: %v", err)
	}
	if rp.Runtime.Cpu.UnreservedForVm != 12000 || rp.Runtime.Memory.UnreservedForVm != mem {
		t.Errorf("runtime cpu=%d mem=%d, want 12000/%d", rp.Runtime.Cpu.UnreservedForVm, rp.Runtime.Memory.UnreservedForVm, mem)
	}
	if s := rp.Summary.GetResourcePoolSummary(); s == nil || s.Runtime.Memory.UnreservedForVm != mem {
		t.Errorf("summary runtime not updated: %+v", s)
	}
}

func TestCreatePlainVMsListedByContainerView(t *testing.T) {
	w := newWorld(t, Options{})
	ctx := t.Context()
	const n = 1000
	if err := w.env.CreatePlainVMs(ctx, n); err != nil {
		t.Fatalf("CreatePlainVMs: %v", err)
	}
	m := view.NewManager(w.client.Client)
	v, err := m.CreateContainerView(ctx, w.client.ServiceContent.RootFolder, []string{"VirtualMachine"}, true)
	if err != nil {
		t.Fatalf("container view: %v", err)
	}
	defer func() { _ = v.Destroy(context.Background()) }()
	var vms []mo.VirtualMachine
	if err := v.Retrieve(ctx, []string{"VirtualMachine"}, []string{"name", "runtime.powerState", "config.template", "guest.ipAddress"}, &vms); err != nil {
		t.Fatalf("retrieve: %v", err)
	}
	plain, ips := 0, map[string]bool{}
	for _, vm := range vms {
		if !strings.HasPrefix(vm.Name, PlainVMPrefix) {
			continue
		}
		plain++
		if vm.Runtime.PowerState != types.VirtualMachinePowerStatePoweredOn {
			t.Fatalf("%s is %s, want poweredOn", vm.Name, vm.Runtime.PowerState)
		}
		if vm.Guest == nil || vm.Guest.IpAddress == "" || ips[vm.Guest.IpAddress] {
			t.Fatalf("%s: missing or duplicate guest IP", vm.Name)
		}
		ips[vm.Guest.IpAddress] = true
	}
	if plain != n {
		t.Errorf("listed %d plain VMs, want %d", plain, n)
	}
	if got := len(w.env.VMNames()); got != n+2 {
		t.Errorf("VMNames has %d names, want %d plain VMs + 2 templates", got, n)
	}
}

func TestExpireSessionsForcesLoginAgain(t *testing.T) {
	w := newWorld(t, Options{Templates: []Template{}})
	ctx := t.Context()
	n, err := w.env.ExpireSessions(ctx)
	if err != nil || n != 1 {
		t.Fatalf("ExpireSessions = %d, %v; want 1 session ended", n, err)
	}
	if _, err := w.finder.DefaultResourcePool(ctx); !fault.Is(err, &types.NotAuthenticated{}) {
		t.Fatalf("call after expiry: %v, want NotAuthenticated", err)
	}
	if err := w.client.Login(ctx, w.env.URL.User); err != nil {
		t.Fatalf("login again: %v", err)
	}
	if _, err := w.finder.DefaultResourcePool(ctx); err != nil {
		t.Errorf("call after login again: %v", err)
	}
}

func TestCallbackCanShutTheGuestDown(t *testing.T) {
	var env *Env
	errs := make(chan error, 1)
	w := newWorld(t, Options{OnGuestProgram: func(p GuestProgram) {
		// A simulated worker that finishes at once and shuts its VM down.
		errs <- env.PowerOffVM(context.Background(), p.VMName)
	}})
	env = w.env
	ctx := t.Context()
	vm := w.mustClone(t, "short-job", "", "")
	pm, err := guest.NewOperationsManager(w.client.Client, vm.Reference()).ProcessManager(ctx)
	if err != nil {
		t.Fatalf("process manager: %v", err)
	}
	auth := &types.NamePasswordAuthentication{Username: "u", Password: "p"}
	if _, err := pm.StartProgram(ctx, auth, &types.GuestProgramSpec{ProgramPath: "/bin/echo"}); err != nil {
		t.Fatalf("StartProgram: %v", err)
	}
	if err := <-errs; err != nil {
		t.Fatalf("PowerOffVM from the callback: %v", err)
	}
	if state, err := env.VMPowerState("short-job"); err != nil || state != types.VirtualMachinePowerStatePoweredOff {
		t.Errorf("power state %s, %v; want poweredOff", state, err)
	}
	if ip, err := env.VMGuestIP("short-job"); err != nil || ip != "" {
		t.Errorf("guest IP %q, %v after shutdown; want none", ip, err)
	}
}

// A clone whose NIC names a network the inventory does not have is refused with a fault,
// as vCenter does; the simulator's own clone task would crash the process on it.
func TestCloneOnAnUnknownNetworkIsRefused(t *testing.T) {
	w := newWorld(t, Options{})
	ctx := t.Context()
	src, err := w.finder.VirtualMachine(ctx, "debian12")
	if err != nil {
		t.Fatal(err)
	}
	folder, err := w.finder.Folder(ctx, w.env.Folder)
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"", "no-such-network"} {
		spec := w.cloneSpec(t, src, "lost", "", "")
		card := spec.Config.DeviceChange[0].GetVirtualDeviceConfigSpec().Device.(types.BaseVirtualEthernetCard).GetVirtualEthernetCard()
		card.Backing.(*types.VirtualEthernetCardNetworkBackingInfo).DeviceName = name
		task, err := src.Clone(ctx, folder, "lost", spec)
		if err == nil {
			_, err = task.WaitForResult(ctx)
		}
		if !fault.Is(err, &types.InvalidArgument{}) {
			t.Errorf("clone on network %q: %v, want InvalidArgument", name, err)
		}
	}
	if _, err := w.finder.VirtualMachine(ctx, "lost"); err == nil {
		t.Error("a refused clone left a VM")
	}
}

// Stats grow with the work the simulator does, long polls apart.
func TestStatsCountTheSimulatorsWork(t *testing.T) {
	w := newWorld(t, Options{})
	before := w.env.Stats()
	vm := w.mustClone(t, "busy", "", "")
	afterClone := w.env.Stats().Sub(before)
	if afterClone.Busy <= 0 || afterClone.CloneCalls != 1 || afterClone.Clones <= 0 || afterClone.Clones > afterClone.Busy {
		t.Errorf("after one clone: %+v, want one clone call with a positive share of Busy", afterClone)
	}
	if err := property.Wait(t.Context(), property.DefaultCollector(w.client.Client), vm.Reference(), []string{"runtime.powerState"}, func(pc []types.PropertyChange) bool {
		return len(pc) > 0
	}); err != nil {
		t.Fatal(err)
	}
	afterWait := w.env.Stats().Sub(before)
	if afterWait.LongPolls <= 0 || afterWait.LongPolls > afterWait.Busy {
		t.Errorf("after a property wait: long polls %s of busy %s, want a positive part", afterWait.LongPolls, afterWait.Busy)
	}
}
