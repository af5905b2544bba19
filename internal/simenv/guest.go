package simenv

import (
	"fmt"
	"path"
	"strings"
	"sync"
	"time"

	"github.com/vmware/govmomi/simulator"
	"github.com/vmware/govmomi/vim25/methods"
	"github.com/vmware/govmomi/vim25/mo"
	"github.com/vmware/govmomi/vim25/soap"
	"github.com/vmware/govmomi/vim25/types"
)

// GuestProgram is one StartProgramInGuest call as the guest saw it.
type GuestProgram struct {
	VMName             string
	Username, Password string
	ProgramPath        string
	Arguments          string
	Env                []string
	WorkingDirectory   string
	PID                int64
}

// guestProcess is a started program and, once finished, its end.
type guestProcess struct {
	GuestProgram
	vm       types.ManagedObjectReference
	start    time.Time
	end      *time.Time
	exitCode int32
}

// guestState is what the simulated guests know: which VMs are up, their IPs, the
// programs they ran. It is a leaf lock: nothing is called while mu is held.
type guestState struct {
	mu      sync.Mutex
	dhcp    *ipPool
	plain   *ipPool
	running map[types.ManagedObjectReference]bool
	fixed   map[types.ManagedObjectReference]string // customized IPs, re-applied on each power-on
	leases  map[types.ManagedObjectReference]string // DHCP leases, kept until the VM is destroyed
	used    map[string]bool                         // every IP held by a VM
	procs   []*guestProcess
	nextPID int64
}

func newGuestState(dhcp, plain *ipPool) *guestState {
	return &guestState{
		dhcp:    dhcp,
		plain:   plain,
		running: make(map[types.ManagedObjectReference]bool),
		fixed:   make(map[types.ManagedObjectReference]string),
		leases:  make(map[types.ManagedObjectReference]string),
		used:    make(map[string]bool),
		nextPID: 1000,
	}
}

// poweredOn records the VM as up and returns the IP its guest reports. customized is the
// IP the simulator's customization has just set ("" if none).
func (g *guestState) poweredOn(ref types.ManagedObjectReference, name, customized string) string {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.running[ref] = true
	if customized != "" {
		g.fixed[ref] = customized
		g.used[customized] = true
	}
	if ip := g.fixed[ref]; ip != "" {
		return ip
	}
	if ip := g.leases[ref]; ip != "" {
		return ip
	}
	pool := g.dhcp
	if strings.HasPrefix(name, PlainVMPrefix) {
		pool = g.plain
	}
	ip, ok := pool.allocate(func(s string) bool { return g.used[s] })
	if !ok {
		return "" // pool exhausted: the guest never gets an address, like a real DHCP miss
	}
	g.leases[ref] = ip
	g.used[ip] = true
	return ip
}

// poweredOff records the VM as down; its running programs end.
func (g *guestState) poweredOff(ref types.ManagedObjectReference, now time.Time) {
	g.mu.Lock()
	defer g.mu.Unlock()
	delete(g.running, ref)
	for _, p := range g.procs {
		if p.vm == ref && p.end == nil {
			end := now
			p.end = &end
		}
	}
}

// removed forgets a destroyed VM and frees its addresses.
func (g *guestState) removed(ref types.ManagedObjectReference) {
	g.mu.Lock()
	defer g.mu.Unlock()
	delete(g.running, ref)
	if ip, ok := g.leases[ref]; ok {
		delete(g.leases, ref)
		delete(g.used, ip)
		g.dhcp.release(ip)
		g.plain.release(ip)
	}
	if ip, ok := g.fixed[ref]; ok {
		delete(g.fixed, ref)
		delete(g.used, ip)
	}
}

func (g *guestState) isRunning(ref types.ManagedObjectReference) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.running[ref]
}

func (g *guestState) start(ref types.ManagedObjectReference, p GuestProgram, now time.Time) GuestProgram {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.nextPID++
	p.PID = g.nextPID
	g.procs = append(g.procs, &guestProcess{GuestProgram: p, vm: ref, start: now})
	return p
}

func (g *guestState) programs() []GuestProgram {
	g.mu.Lock()
	defer g.mu.Unlock()
	out := make([]GuestProgram, 0, len(g.procs))
	for _, p := range g.procs {
		gp := p.GuestProgram
		gp.Env = append([]string(nil), p.Env...)
		out = append(out, gp)
	}
	return out
}

func (g *guestState) finish(pid int64, exitCode int32, now time.Time) error {
	g.mu.Lock()
	defer g.mu.Unlock()
	for _, p := range g.procs {
		if p.PID == pid {
			if p.end == nil {
				end := now
				p.end = &end
			}
			p.exitCode = exitCode
			return nil
		}
	}
	return fmt.Errorf("guest process %d: not found", pid)
}

func (g *guestState) list(ref types.ManagedObjectReference, pids []int64) []types.GuestProcessInfo {
	g.mu.Lock()
	defer g.mu.Unlock()
	want := make(map[int64]bool, len(pids))
	for _, pid := range pids {
		want[pid] = true
	}
	var out []types.GuestProcessInfo
	for _, p := range g.procs {
		if p.vm != ref || (len(want) > 0 && !want[p.PID]) {
			continue
		}
		info := types.GuestProcessInfo{
			Name:      path.Base(p.ProgramPath),
			Pid:       p.PID,
			Owner:     p.Username,
			CmdLine:   strings.TrimSpace(p.ProgramPath + " " + p.Arguments),
			StartTime: p.start,
		}
		if p.end != nil {
			end := *p.end
			info.EndTime = &end
			info.ExitCode = p.exitCode
		}
		out = append(out, info)
	}
	return out
}

// guestHook watches power-state changes of every VM (a simulator RegisterObject) and
// plays the guest: tools up, guest operations ready and an IP after power-on; all gone
// after power-off. It runs inside the power task, which holds the VM's lock.
type guestHook struct {
	state *guestState
}

func (h *guestHook) Reference() types.ManagedObjectReference {
	return types.ManagedObjectReference{Type: "SimenvGuestHook", Value: "simenv-guest-hook"}
}

func (h *guestHook) PutObject(*simulator.Context, mo.Reference) {}

func (h *guestHook) RemoveObject(_ *simulator.Context, ref types.ManagedObjectReference) {
	if ref.Type == "VirtualMachine" {
		h.state.removed(ref)
	}
}

func (h *guestHook) UpdateObject(ctx *simulator.Context, obj mo.Reference, changes []types.PropertyChange) {
	vm, ok := obj.(*mo.VirtualMachine)
	if !ok {
		return
	}
	for _, c := range changes {
		if c.Name != "runtime.powerState" {
			continue
		}
		switch fmt.Sprint(c.Val) {
		case string(types.VirtualMachinePowerStatePoweredOn):
			h.poweredOn(ctx, vm)
		case string(types.VirtualMachinePowerStatePoweredOff):
			h.poweredOff(ctx, vm)
		}
		return
	}
}

func (h *guestHook) poweredOn(ctx *simulator.Context, vm *mo.VirtualMachine) {
	customized := ""
	if vm.Guest != nil {
		customized = vm.Guest.IpAddress // set by LinuxPrep customization during this power-on
	}
	ip := h.state.poweredOn(vm.Self, vm.Name, customized)
	ctx.Update(vm, guestChanges(vm, ip, true))
}

func (h *guestHook) poweredOff(ctx *simulator.Context, vm *mo.VirtualMachine) {
	h.state.poweredOff(vm.Self, time.Now())
	ctx.Update(vm, guestChanges(vm, "", false))
}

// guestChanges are the property changes of a guest coming up with ip, or going down.
func guestChanges(vm *mo.VirtualMachine, ip string, up bool) []types.PropertyChange {
	var nets []types.GuestNicInfo
	if vm.Guest != nil {
		// A copy: earlier change notifications may still reference the old slice.
		nets = append(nets, vm.Guest.Net...)
	}
	if len(nets) == 0 && ip != "" {
		nets = []types.GuestNicInfo{{Connected: true, DeviceConfigId: 4000}}
	}
	for i := range nets {
		nets[i].IpAddress = nil
		nets[i].IpConfig = nil
		nets[i].Connected = up
	}
	if ip != "" {
		nets[0].IpAddress = []string{ip}
		nets[0].IpConfig = &types.NetIpConfigInfo{
			IpAddress: []types.NetIpConfigInfoIpAddress{{IpAddress: ip, PrefixLength: 24, State: "preferred"}},
		}
	}
	tools := types.VirtualMachineToolsRunningStatusGuestToolsNotRunning
	status := types.VirtualMachineToolsStatusToolsNotRunning
	guestState := "notRunning"
	if up {
		tools = types.VirtualMachineToolsRunningStatusGuestToolsRunning
		status = types.VirtualMachineToolsStatusToolsOk
		guestState = "running"
	}
	return []types.PropertyChange{
		{Name: "guest.net", Val: nets},
		{Name: "guest.ipAddress", Val: ip},
		{Name: "summary.guest.ipAddress", Val: ip},
		{Name: "guest.guestOperationsReady", Val: up},
		{Name: "guest.interactiveGuestOperationsReady", Val: up},
		{Name: "guest.toolsRunningStatus", Val: string(tools)},
		{Name: "summary.guest.toolsRunningStatus", Val: string(tools)},
		{Name: "guest.toolsStatus", Val: status},
		{Name: "summary.guest.toolsStatus", Val: status},
		{Name: "guest.guestState", Val: guestState},
	}
}

// processManager replaces the simulator's GuestProcessManager, which runs programs in a
// container and crashes on VMs without one. This one records programs and fakes PIDs.
type processManager struct {
	mo.GuestProcessManager
	state          *guestState
	username       string
	password       string
	onGuestProgram func(GuestProgram)
	// later runs a function once the simulator is released (serializer.later): the
	// callback may call the Env, which would deadlock under the serializer's mutex.
	later func(func())
}

func (e *Env) installProcessManager() error {
	reg := e.Model.Map()
	ref := e.Model.ServiceContent.GuestOperationsManager
	if ref == nil {
		return fmt.Errorf("install guest process manager: no GuestOperationsManager in the service content")
	}
	gom, ok := reg.Get(*ref).(*simulator.GuestOperationsManager)
	if !ok || gom.ProcessManager == nil {
		return fmt.Errorf("install guest process manager: no GuestProcessManager in the simulator")
	}
	pm := &processManager{
		state:          e.guest,
		username:       e.opts.GuestUsername,
		password:       e.opts.GuestPassword,
		onGuestProgram: e.opts.OnGuestProgram,
		later:          e.sim.later,
	}
	pm.Self = *gom.ProcessManager
	reg.Put(pm) // same reference: replaces the stock manager
	return nil
}

// check validates the call's VM and credentials and returns the VM's current name.
func (m *processManager) check(ctx *simulator.Context, ref types.ManagedObjectReference, auth types.BaseGuestAuthentication) (string, *types.NamePasswordAuthentication, types.BaseMethodFault) {
	vm, ok := ctx.Map.Get(ref).(*simulator.VirtualMachine)
	if !ok {
		return "", nil, &types.ManagedObjectNotFound{Obj: ref}
	}
	var name string
	ctx.WithLock(vm, func() { name = vm.Name })
	if !m.state.isRunning(ref) {
		return "", nil, &types.GuestOperationsUnavailable{}
	}
	creds, ok := auth.(*types.NamePasswordAuthentication)
	if !ok || creds.Username == "" {
		return "", nil, &types.InvalidGuestLogin{}
	}
	if m.username != "" && (creds.Username != m.username || creds.Password != m.password) {
		return "", nil, &types.InvalidGuestLogin{}
	}
	return name, creds, nil
}

func (m *processManager) StartProgramInGuest(ctx *simulator.Context, req *types.StartProgramInGuest) soap.HasFault {
	body := new(methods.StartProgramInGuestBody)
	name, creds, fault := m.check(ctx, req.Vm, req.Auth)
	if fault != nil {
		body.Fault_ = simulator.Fault("", fault)
		return body
	}
	spec, ok := req.Spec.(*types.GuestProgramSpec)
	if !ok {
		body.Fault_ = simulator.Fault("", &types.InvalidArgument{InvalidProperty: "spec"})
		return body
	}
	p := m.state.start(req.Vm, GuestProgram{
		VMName:           name,
		Username:         creds.Username,
		Password:         creds.Password,
		ProgramPath:      spec.ProgramPath,
		Arguments:        spec.Arguments,
		Env:              append([]string(nil), spec.EnvVariables...),
		WorkingDirectory: spec.WorkingDirectory,
	}, time.Now())
	if m.onGuestProgram != nil {
		cb := p
		cb.Env = append([]string(nil), p.Env...)
		m.later(func() { m.onGuestProgram(cb) })
	}
	body.Res = &types.StartProgramInGuestResponse{Returnval: p.PID}
	return body
}

func (m *processManager) ListProcessesInGuest(ctx *simulator.Context, req *types.ListProcessesInGuest) soap.HasFault {
	body := new(methods.ListProcessesInGuestBody)
	if _, _, fault := m.check(ctx, req.Vm, req.Auth); fault != nil {
		body.Fault_ = simulator.Fault("", fault)
		return body
	}
	body.Res = &types.ListProcessesInGuestResponse{Returnval: m.state.list(req.Vm, req.Pids)}
	return body
}

func (m *processManager) TerminateProcessInGuest(ctx *simulator.Context, req *types.TerminateProcessInGuest) soap.HasFault {
	body := new(methods.TerminateProcessInGuestBody)
	if _, _, fault := m.check(ctx, req.Vm, req.Auth); fault != nil {
		body.Fault_ = simulator.Fault("", fault)
		return body
	}
	if err := m.state.finish(req.Pid, 143, time.Now()); err != nil {
		body.Fault_ = simulator.Fault(err.Error(), &types.GuestProcessNotFound{Pid: req.Pid})
		return body
	}
	body.Res = new(types.TerminateProcessInGuestResponse)
	return body
}
