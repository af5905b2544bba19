package vspherehatchery

import (
	"strings"

	"github.com/vmware/govmomi/vim25/mo"
	"github.com/vmware/govmomi/vim25/types"
)

// VM name prefixes of the original (design.md §4: kept byte for byte).
const (
	ProvisionPrefix   = "provision-"
	ProvisionV1Prefix = "provision-v1"
	ProvisionV2Prefix = "provision-v2"
	RegisterPrefix    = "register-"
	// TmpSuffix names the VM a v1 template is built in before it is renamed <model>.
	TmpSuffix = "-tmp"
)

// InventoryProperties are the only VM properties the decisions need. The original listed
// name,summary,guest,config (about 9.6 kB of XML per VM); these come to a small fraction of
// that, which is what keeps a decision fast with thousands of VMs.
var InventoryProperties = []string{
	"name",
	"config.annotation",
	"config.template",
	"runtime.powerState",
	"summary.config.numCpu",
	"summary.config.memorySizeMB",
	"guest.net",
	"guest.ipAddress",
}

// VM is the narrow snapshot of one listed VM.
type VM struct {
	Name string
	// Annotation is the parsed CDS annotation; HasAnnotation is false for non-CDS VMs.
	Annotation    Annotation
	HasAnnotation bool
	PowerState    types.VirtualMachinePowerState
	Template      bool
	NumCPU        int
	MemoryMB      int
	// GuestIPs are the addresses VMware Tools reports (guest.ipAddress and guest.net).
	GuestIPs []string
	Ref      types.ManagedObjectReference
}

// OwnedBy tells whether the VM carries a CDS annotation naming the hatchery.
func (vm VM) OwnedBy(hatcheryName string) bool {
	return vm.HasAnnotation && vm.Annotation.HatcheryName == hatcheryName
}

// Inventory is one listing of the VMs, taken once per decision.
type Inventory []VM

// NewInventory converts a listing made with InventoryProperties (or a wider one: config and
// summary are both read, whichever was fetched).
func NewInventory(vms []mo.VirtualMachine) Inventory {
	inv := make(Inventory, 0, len(vms))
	for i := range vms {
		inv = append(inv, newVM(&vms[i]))
	}
	return inv
}

func newVM(m *mo.VirtualMachine) VM {
	vm := VM{
		Name:       m.Name,
		PowerState: m.Runtime.PowerState,
		Template:   m.Summary.Config.Template,
		NumCPU:     int(m.Summary.Config.NumCpu),
		MemoryMB:   int(m.Summary.Config.MemorySizeMB),
		Ref:        m.Self,
	}
	if vm.Name == "" {
		vm.Name = m.Summary.Config.Name
	}
	annotation := m.Summary.Config.Annotation
	if m.Config != nil {
		// config is authoritative: vCenter does not refresh the summary copy of the
		// annotation after a reconfigure.
		vm.Template = m.Config.Template
		annotation = m.Config.Annotation
	}
	vm.Annotation, vm.HasAnnotation = ParseAnnotation(annotation)
	if m.Guest != nil {
		seen := map[string]struct{}{}
		add := func(ip string) {
			if ip == "" {
				return
			}
			if _, dup := seen[ip]; dup {
				return
			}
			seen[ip] = struct{}{}
			vm.GuestIPs = append(vm.GuestIPs, ip)
		}
		add(m.Guest.IpAddress)
		for _, nic := range m.Guest.Net {
			for _, ip := range nic.IpAddress {
				add(ip)
			}
		}
	}
	return vm
}

// Find returns the VM with that name.
func (inv Inventory) Find(name string) (VM, bool) {
	for _, vm := range inv {
		if vm.Name == name {
			return vm, true
		}
	}
	return VM{}, false
}

// WorkersStarted lists the workers this hatchery has started: VMs whose annotation names the
// hatchery, except templates, CDS-built templates (model: true), idle provisioned VMs and
// powered-off VMs. The original counted every non-template VM of vCenter, so unrelated VMs
// filled maxWorker (fix of Q4). A powered-off VM holds no worker any more (its worker is
// done, or it was rolled back): counted, the finished VMs waiting for the cleanup pass
// filled the pool as Pending workers and stopped every spawn once there were
// maxConcurrentProvisioning of them. A spawn whose VM is not on yet is counted by the
// framework (the jobs it admitted).
func (inv Inventory) WorkersStarted(hatcheryName string) []string {
	var names []string
	for _, vm := range inv {
		if vm.Template || !vm.OwnedBy(hatcheryName) || vm.Annotation.Model {
			continue
		}
		if vm.PowerState == types.VirtualMachinePowerStatePoweredOff {
			continue
		}
		if strings.HasPrefix(vm.Name, ProvisionPrefix) {
			continue
		}
		names = append(names, vm.Name)
	}
	return names
}

// HasJob tells whether a CDS VM was created for the job (annotation job_id), whichever
// hatchery made it.
func (inv Inventory) HasJob(jobID string) bool {
	for _, vm := range inv {
		if vm.HasAnnotation && vm.Annotation.JobID == jobID {
			return true
		}
	}
	return false
}

// UsedIPs are the addresses the VMs show: any annotation ip_address and any guest IP, of any
// VM (protocol spec §18.12), for IPPool.
func (inv Inventory) UsedIPs() []string {
	var out []string
	for _, vm := range inv {
		// A template never runs: the address its build VM had is free again (the original
		// counted it for ever, one address lost per v1 model).
		if vm.Template {
			continue
		}
		if vm.HasAnnotation && vm.Annotation.IPAddress != "" {
			out = append(out, vm.Annotation.IPAddress)
		}
		out = append(out, vm.GuestIPs...)
	}
	return out
}

// UsedResources sums the vCPUs and memory of the hatchery's VMs that consume them: its
// powered-on VMs, templates and CDS-built templates excluded (protocol spec §18.4 step 4).
// Powered-off provisioned VMs hold no CPU or memory in the resource pool.
func (inv Inventory) UsedResources(hatcheryName string) (cpus, memoryMB int) {
	for _, vm := range inv {
		if vm.Template || !vm.OwnedBy(hatcheryName) || vm.Annotation.Model {
			continue
		}
		if vm.PowerState != types.VirtualMachinePowerStatePoweredOn {
			continue
		}
		cpus += vm.NumCPU
		memoryMB += vm.MemoryMB
	}
	return cpus, memoryMB
}

// ProvisionedCounts counts the hatchery's provisioned VMs per model for the provisioning
// passes (protocol spec §18.8): provision-v2… VMs by vmware_model_path and provision-v1… VMs
// by worker_model_path.
func (inv Inventory) ProvisionedCounts(hatcheryName string) (v2ByVMwareModel, v1ByModelPath map[string]int) {
	v2ByVMwareModel, v1ByModelPath = map[string]int{}, map[string]int{}
	for _, vm := range inv {
		if !vm.OwnedBy(hatcheryName) || !vm.Annotation.Provisioning {
			continue
		}
		switch {
		case strings.HasPrefix(vm.Name, ProvisionV2Prefix):
			v2ByVMwareModel[vm.Annotation.VMwareModelPath]++
		case strings.HasPrefix(vm.Name, ProvisionV1Prefix):
			v1ByModelPath[vm.Annotation.WorkerModelPath]++
		}
	}
	return v2ByVMwareModel, v1ByModelPath
}

// ProvisionedFilter says which provisioned VMs a spawn may reuse.
type ProvisionedFilter struct {
	HatcheryName string
	// V2 selects provision-v2 VMs matched on vmware_model_path, else provision-v1 VMs matched
	// on worker_model_path.
	V2 bool
	// ModelPath is the v2 spec image or the v1 "<group>/<name>".
	ModelPath string
	// Skip tells whether a VM name is busy: being provisioned, marked for deletion or already
	// being reused.
	Skip func(name string) bool
}

// FindProvisioned returns the reuse candidates in inventory order (protocol spec §18.8,
// seed §6.3.4), before the VmPoweredOffEvent check the caller makes on the one it picks.
// Unlike the original, a candidate must belong to this hatchery (another hatchery sharing the
// vCenter keeps its pool) and be powered off now (a reused VM is reconfigured while off).
func (inv Inventory) FindProvisioned(f ProvisionedFilter) []VM {
	prefix := ProvisionV1Prefix
	if f.V2 {
		prefix = ProvisionV2Prefix
	}
	var out []VM
	for _, vm := range inv {
		if vm.Template || !strings.HasPrefix(vm.Name, prefix) || !vm.OwnedBy(f.HatcheryName) {
			continue
		}
		a := vm.Annotation
		// A claimed VM belongs to a worker already, or to a claim a restart abandoned.
		if !a.Provisioning || !a.Claimed.IsZero() {
			continue
		}
		if f.V2 && a.VMwareModelPath != f.ModelPath || !f.V2 && a.WorkerModelPath != f.ModelPath {
			continue
		}
		if vm.PowerState != types.VirtualMachinePowerStatePoweredOff {
			continue
		}
		if f.Skip != nil && f.Skip(vm.Name) {
			continue
		}
		out = append(out, vm)
	}
	return out
}

// ModelTemplate returns the CDS-built template of a v1 model: the template VM named
// <model name> whose annotation says model: true (protocol spec §18.5).
func (inv Inventory) ModelTemplate(name string) (VM, bool) {
	for _, vm := range inv {
		if vm.Name == name && vm.Template && vm.HasAnnotation && vm.Annotation.Model {
			return vm, true
		}
	}
	return VM{}, false
}
