package vspherehatchery

import (
	"fmt"
	"strings"

	"github.com/hatchery-vsphere/hatchery-vsphere/internal/cds"
	"github.com/hatchery-vsphere/hatchery-vsphere/internal/config"
	"github.com/hatchery-vsphere/hatchery-vsphere/internal/hatchery"
)

// Decision is the answer of a spawn rule: allow or not, and why, in words an operator can
// act on (it goes to the logs and, for v2 jobs, to the job's infos).
type Decision struct {
	Allow  bool
	Reason string
}

func allow(format string, args ...any) Decision {
	return Decision{Allow: true, Reason: fmt.Sprintf(format, args...)}
}

func deny(format string, args ...any) Decision {
	return Decision{Reason: fmt.Sprintf(format, args...)}
}

// FlavorName resolves the flavor a worker asks for; "" means the template's own size.
//
// Priority (seed §13.3): what the job asks, then the model's own flavor, then defaultFlavor.
//   - v2 model: runs-on.flavor, else the spec's flavor, else the first non-empty flavor
//     requirement (a v1 job on a v2 model), else defaultFlavor (protocol spec §18.4);
//   - v1 model: the first non-empty flavor requirement of the job, else
//     model_virtual_machine.flavor, else defaultFlavor. The original ignored a v1 job's
//     flavor requirement on a v1 model; the seed spec puts the job's requirement first.
func FlavorName(model *hatchery.WorkerStarterWorkerModel, requirements []cds.Requirement, defaultFlavor string) string {
	fromRequirements := ""
	for _, r := range requirements {
		if r.Type == cds.RequirementFlavor && r.Value != "" {
			fromRequirements = r.Value
			break
		}
	}
	var candidates []string
	switch {
	case model == nil:
	case model.IsV2():
		candidates = []string{model.Flavor, model.VSphereSpec.Flavor, fromRequirements}
	case model.ModelV1 != nil:
		candidates = []string{fromRequirements, model.ModelV1.ModelVirtualMachine.Flavor}
	}
	for _, c := range candidates {
		if c != "" {
			return c
		}
	}
	return defaultFlavor
}

// LookupFlavor finds a configured flavor by name, case-insensitively as the original does.
func LookupFlavor(flavors []config.Flavor, name string) (config.Flavor, bool) {
	for _, f := range flavors {
		if strings.EqualFold(f.Name, name) {
			return f, true
		}
	}
	return config.Flavor{}, false
}

// CapacityInput is everything CanAllocate weighs. The caller gathers it from one inventory
// listing and one resource-pool read.
type CapacityInput struct {
	// FlavorName is the resolved flavor (FlavorName); "" for the template's size.
	FlavorName string
	Flavors    []config.Flavor

	// TemplateKnown is false when the model names no source VM or it is not in the
	// inventory; the footprint is then unknown and the spawn is allowed, as in the original.
	TemplateKnown    bool
	TemplateCPUs     int
	TemplateMemoryMB int

	// PoolKnown is false when the resource pool runtime could not be read: the static
	// limits still apply (graceful degradation, seed §12).
	PoolKnown bool
	// PoolCPUUnreservedForVM is runtime.cpu.unreservedForVm (MHz).
	PoolCPUUnreservedForVM int64
	// PoolMemoryUnreservedForVM is runtime.memory.unreservedForVm (bytes).
	PoolMemoryUnreservedForVM int64

	// UsedCPUs and UsedMemoryMB are the hatchery's powered-on VMs (Inventory.UsedResources).
	UsedCPUs     int
	UsedMemoryMB int

	MaxCPUs                  int
	MaxMemoryMB              int
	CountSmallerFlavorToKeep int
}

// CapacityDecision is a CanAllocate answer with the footprint it assumed for the worker.
type CapacityDecision struct {
	Decision
	// Flavor is the configured flavor applied (its configured spelling), "" for the template.
	Flavor   string
	CPUs     int
	MemoryMB int
}

// CanAllocate tells whether one more worker fits (protocol spec §18.4, seed §12-13):
// the resource pool must have unreserved CPU and enough unreserved memory, and the
// hatchery's powered-on VMs plus this worker must stay within maxCpus / maxMemoryMB, keeping
// room for countSmallerFlavorToKeep workers of the next smaller flavor.
//
// An unknown flavor is refused here (fix of Q12: the original allowed it and then failed
// every spawn, burning the job's attempts).
func CanAllocate(in CapacityInput) CapacityDecision {
	var d CapacityDecision
	if in.FlavorName != "" {
		f, ok := LookupFlavor(in.Flavors, in.FlavorName)
		if !ok {
			d.Decision = deny("flavor %q not found in configuration (configured: %s)", in.FlavorName, flavorNames(in.Flavors))
			return d
		}
		d.Flavor, d.CPUs, d.MemoryMB = f.Name, f.CPUs, f.MemoryMB
	}
	if d.CPUs <= 0 || d.MemoryMB <= 0 {
		if !in.TemplateKnown {
			d.Decision = allow("footprint unknown (template not found), not checked")
			return d
		}
		// A flavor may size only one dimension; the template gives the other.
		if d.CPUs <= 0 {
			d.CPUs = in.TemplateCPUs
		}
		if d.MemoryMB <= 0 {
			d.MemoryMB = in.TemplateMemoryMB
		}
	}
	need := fmt.Sprintf("%d vCPUs, %d MB", d.CPUs, d.MemoryMB)
	if d.Flavor != "" {
		need += fmt.Sprintf(" (flavor %q)", d.Flavor)
	} else {
		need += " (template)"
	}

	if in.PoolKnown {
		if in.PoolCPUUnreservedForVM <= 0 {
			d.Decision = deny("resource pool has no unreserved CPU for VMs (%d MHz); worker needs %s", in.PoolCPUUnreservedForVM, need)
			return d
		}
		if in.PoolMemoryUnreservedForVM < int64(d.MemoryMB)*1024*1024 {
			d.Decision = deny("resource pool has %d MB unreserved for VMs; worker needs %s", in.PoolMemoryUnreservedForVM/(1024*1024), need)
			return d
		}
	}

	if in.MaxCPUs > 0 {
		if in.UsedCPUs+d.CPUs > in.MaxCPUs {
			d.Decision = deny("maxCpus reached: %d used + %s > %d", in.UsedCPUs, need, in.MaxCPUs)
			return d
		}
		if d.Flavor != "" && in.CountSmallerFlavorToKeep > 0 {
			if s := smallerFlavorCPUs(in.Flavors, d.Flavor, d.CPUs); s > 0 && s != d.CPUs {
				reserve := in.CountSmallerFlavorToKeep * s
				if d.CPUs+reserve > in.MaxCPUs-in.UsedCPUs {
					d.Decision = deny("starvation reserve: %s + %d × %d vCPUs kept for smaller flavors > %d vCPUs left of maxCpus %d",
						need, in.CountSmallerFlavorToKeep, s, in.MaxCPUs-in.UsedCPUs, in.MaxCPUs)
					return d
				}
			}
		}
	}
	if in.MaxMemoryMB > 0 && in.UsedMemoryMB+d.MemoryMB > in.MaxMemoryMB {
		d.Decision = deny("maxMemoryMB reached: %d MB used + %s > %d MB", in.UsedMemoryMB, need, in.MaxMemoryMB)
		return d
	}

	pool := "resource pool not read, static limits only"
	if in.PoolKnown {
		pool = "resource pool has room"
	}
	d.Decision = allow("worker needs %s: %s; used %d vCPUs, %d MB", need, pool, in.UsedCPUs, in.UsedMemoryMB)
	return d
}

// smallerFlavorCPUs is the smallest CPU count among the other flavors smaller than the
// requested one, 0 when there is none.
func smallerFlavorCPUs(flavors []config.Flavor, name string, cpus int) int {
	s := 0
	for _, f := range flavors {
		if strings.EqualFold(f.Name, name) || f.CPUs <= 0 || f.CPUs >= cpus {
			continue
		}
		if s == 0 || f.CPUs < s {
			s = f.CPUs
		}
	}
	return s
}

func flavorNames(flavors []config.Flavor) string {
	if len(flavors) == 0 {
		return "none"
	}
	names := make([]string, len(flavors))
	for i, f := range flavors {
		names[i] = f.Name
	}
	return strings.Join(names, ", ")
}
