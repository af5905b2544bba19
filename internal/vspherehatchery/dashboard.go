package vspherehatchery

import (
	"cmp"
	"context"
	"fmt"
	"net/netip"
	"strings"
	"sync"
	"time"

	"github.com/vmware/govmomi/vim25/types"

	"github.com/hatchery-vsphere/hatchery-vsphere/internal/hatchery"
)

// Names and units of the capacity gauges of the status page.
const (
	GaugeWorkers            = "Workers"
	GaugeVCPUs              = "vCPUs"
	GaugeMemory             = "Memory"
	GaugeResourcePoolCPU    = "Resource pool CPU reserved"
	GaugeResourcePoolMemory = "Resource pool memory reserved"
	GaugeIPAddresses        = "IP addresses"
)

// Dashboard describes the hatchery's VMs, capacity and provisioning pools for the status
// page (hatchery.DashboardSource), from one narrow listing and one resource pool read. The
// identity and health lines are the framework's (hatchery.NewDashboardSource). A failed
// listing is an error; an unreadable resource pool only leaves its gauges out.
func (p *Provider) Dashboard(ctx context.Context) (hatchery.Dashboard, error) {
	inv, err := p.inventory(ctx)
	if err != nil {
		return hatchery.Dashboard{}, fmt.Errorf("dashboard: %w", err)
	}
	rt, rtErr := p.client.ResourcePoolRuntime(ctx)
	if rtErr != nil {
		p.log.Warn(ctx, "dashboard: resource pool runtime unreadable, its gauges are left out: %v", rtErr)
	}
	now := p.now()
	name := p.hatcheryName()
	errs := p.lastErrors()

	d := hatchery.Dashboard{Hatchery: name, Version: hatchery.Version, Now: now}
	var states []hatchery.VMState // parallel to the owned VMs, for the pools
	var owned []VM
	for _, vm := range inv {
		if !vm.OwnedBy(name) {
			continue
		}
		state := p.vmState(vm)
		owned, states = append(owned, vm), append(states, state)
		row := hatchery.VMRow{
			Name:      vm.Name,
			State:     state,
			Model:     cmp.Or(vm.Annotation.WorkerModelPath, vm.Annotation.VMwareModelPath),
			Flavor:    p.flavorOf(vm),
			JobID:     vm.Annotation.JobID,
			IP:        cmp.Or(vm.Annotation.IPAddress, preferIPv4(vm.GuestIPs)),
			LastError: errs.get(vm.Name),
		}
		if c := vm.Annotation.Created; !c.IsZero() {
			row.Created = c
			row.AgeSeconds = max(0, int64(now.Sub(c)/time.Second))
		}
		d.VMs = append(d.VMs, row)
	}
	d.Pools = p.provisioningPools(owned, states)
	d.Capacity = p.capacityGauges(inv, rt, rtErr == nil)
	return d, nil
}

// vmState places an owned VM in its lifecycle (hatchery.VMState). The caches come before
// the name and power rules: a provisioned VM keeps its provision- name while a spawn
// claims it, and a VM is marked for deletion whatever it was doing.
func (p *Provider) vmState(vm VM) hatchery.VMState {
	on := vm.PowerState == types.VirtualMachinePowerStatePoweredOn
	provisioned := strings.HasPrefix(vm.Name, ProvisionPrefix)
	switch {
	case vm.Annotation.Model || vm.Template:
		return hatchery.VMStateTemplate
	case p.caches.ToDelete.Has(vm.Name):
		return hatchery.VMStateMarkedForDeletion
	case p.caches.ProvisioningUsing.Has(vm.Name):
		return hatchery.VMStateClaimed
	case provisioned && (on || p.caches.ProvisioningPending.Has(vm.Name)):
		return hatchery.VMStateProvisioning
	case provisioned:
		return hatchery.VMStateIdle
	case on:
		return hatchery.VMStateRunning
	}
	return hatchery.VMStateFinished
}

// flavorOf names the configured flavor whose size the VM has exactly, or "".
func (p *Provider) flavorOf(vm VM) string {
	for _, f := range p.cfg.Flavors {
		if f.CPUs == vm.NumCPU && f.MemoryMB == vm.MemoryMB {
			return f.Name
		}
	}
	return ""
}

// preferIPv4 returns the first IPv4 address, else the first address, else "".
func preferIPv4(ips []string) string {
	for _, ip := range ips {
		if a, err := netip.ParseAddr(ip); err == nil && a.Is4() {
			return ip
		}
	}
	if len(ips) > 0 {
		return ips[0]
	}
	return ""
}

// provisioningPools reports each workerProvisioning entry: a v2 pool for its modelVMWare
// and a v1 pool for its modelPath, counted like the provisioning passes count them.
func (p *Provider) provisioningPools(owned []VM, states []hatchery.VMState) []hatchery.ProvisioningPool {
	count := func(prefix string, model func(Annotation) string, want string) (ready, starting int) {
		for i, vm := range owned {
			if !vm.Annotation.Provisioning || !strings.HasPrefix(vm.Name, prefix) || model(vm.Annotation) != want {
				continue
			}
			switch states[i] {
			case hatchery.VMStateIdle:
				ready++
			case hatchery.VMStateProvisioning:
				starting++
			}
		}
		return ready, starting
	}
	v2Model := func(a Annotation) string { return a.VMwareModelPath }
	v1Model := func(a Annotation) string { return a.WorkerModelPath }
	var pools []hatchery.ProvisioningPool
	for _, wp := range p.cfg.WorkerProvisioning {
		if wp.ModelVMWare != "" {
			ready, starting := count(ProvisionV2Prefix, v2Model, wp.ModelVMWare)
			pools = append(pools, hatchery.ProvisioningPool{Template: wp.ModelVMWare, Wanted: wp.Number, Ready: ready, Starting: starting})
		}
		if wp.ModelPath != "" {
			ready, starting := count(ProvisionV1Prefix, v1Model, wp.ModelPath)
			pools = append(pools, hatchery.ProvisioningPool{Template: wp.ModelPath, Wanted: wp.Number, Ready: ready, Starting: starting})
		}
	}
	return pools
}

// capacityGauges are the figures the spawn decisions weigh: workers against maxWorker, the
// vCPUs and memory of the hatchery's powered-on VMs against maxCpus and maxMemoryMB, what
// the resource pool has left for VM reservations (what CanAllocateResources checks), and
// the fixed IPs in use.
func (p *Provider) capacityGauges(inv Inventory, rt types.ResourcePoolRuntimeInfo, rtKnown bool) []hatchery.CapacityGauge {
	name := p.hatcheryName()
	cpus, memMB := inv.UsedResources(name)
	gauges := []hatchery.CapacityGauge{
		{Name: GaugeWorkers, Unit: "workers", Used: float64(len(inv.WorkersStarted(name))), Limit: float64(max(0, p.cfg.CommonConfiguration.Provision.MaxWorker))},
		{Name: GaugeVCPUs, Unit: "vCPUs", Used: float64(cpus), Limit: float64(max(0, p.cfg.MaxCPUs))},
		{Name: GaugeMemory, Unit: "MB", Used: float64(memMB), Limit: float64(max(0, p.cfg.MaxMemoryMB))},
	}
	// A pool without a maximum cannot be drawn as a share; "unlimited" would be wrong too.
	if rtKnown && rt.Cpu.MaxUsage > 0 {
		gauges = append(gauges, hatchery.CapacityGauge{Name: GaugeResourcePoolCPU, Unit: "MHz",
			Used: float64(max(0, rt.Cpu.MaxUsage-rt.Cpu.UnreservedForVm)), Limit: float64(rt.Cpu.MaxUsage)})
	}
	if rtKnown && rt.Memory.MaxUsage > 0 {
		const mib = 1 << 20 // the runtime counts memory in bytes
		gauges = append(gauges, hatchery.CapacityGauge{Name: GaugeResourcePoolMemory, Unit: "MB",
			Used: float64(max(0, rt.Memory.MaxUsage-rt.Memory.UnreservedForVm) / mib), Limit: float64(rt.Memory.MaxUsage / mib)})
	}
	if p.ips.Enabled() {
		used, total := p.ips.Counts(inv.UsedIPs()...)
		gauges = append(gauges, hatchery.CapacityGauge{Name: GaugeIPAddresses, Unit: "IPs", Used: float64(used), Limit: float64(total)})
	}
	return gauges
}

// Last VM errors shown on the status page.
const (
	// vmErrorTTL bounds the memory of failures: the VM of an old failure is long deleted.
	vmErrorTTL = time.Hour
	// vmErrorMaxLen keeps a long vSphere fault from swamping the VM table.
	vmErrorMaxLen = 300
)

// recordVMError keeps err as the last error of the VM, for the status page. The spawn and
// provisioning code calls it when it gives a VM up.
func (p *Provider) recordVMError(vm string, err error) {
	if err == nil {
		return
	}
	p.lastErrors().record(vm, err.Error(), p.now())
}

// clearVMError forgets the last error of the VM (it was deleted, or a retry succeeded).
func (p *Provider) clearVMError(vm string) {
	p.lastErrors().clear(vm)
}

func (p *Provider) lastErrors() *vmErrors {
	return p.errors
}

// vmErrors is the last error of each VM, by VM name. Entries expire after vmErrorTTL, so
// the map stays as small as the recent failures.
type vmErrors struct {
	mu   sync.Mutex
	byVM map[string]vmError
}

type vmError struct {
	message string
	at      time.Time
}

func newVMErrors() *vmErrors { return &vmErrors{byVM: make(map[string]vmError)} }

func (e *vmErrors) record(vm, message string, now time.Time) {
	if r := []rune(message); len(r) > vmErrorMaxLen {
		message = string(r[:vmErrorMaxLen-1]) + "…"
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	for name, old := range e.byVM {
		if now.Sub(old.at) > vmErrorTTL {
			delete(e.byVM, name)
		}
	}
	e.byVM[vm] = vmError{message: message, at: now}
}

func (e *vmErrors) clear(vm string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	delete(e.byVM, vm)
}

func (e *vmErrors) get(vm string) string {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.byVM[vm].message
}
