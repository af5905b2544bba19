package vspherehatchery

import (
	"strconv"
	"strings"

	"github.com/hatchery-vsphere/hatchery-vsphere/internal/cds"
	"github.com/hatchery-vsphere/hatchery-vsphere/internal/hatchery"
)

// SpawnCheck is everything CanSpawn weighs.
type SpawnCheck struct {
	Model        *hatchery.WorkerStarterWorkerModel
	JobID        string
	Requirements []cds.Requirement
	// Inventory is one listing of the VMs (job_id annotations, registration VMs).
	Inventory Inventory
	// SpawnInProgress tells whether this hatchery is already spawning a worker for the job.
	SpawnInProgress bool
	// IPExhausted is true when iprange is configured and no address is free.
	IPExhausted bool
}

// IsRegistration tells whether a job ID stands for a v1 model registration: not a UUID and
// numerically ≤ 0 (the framework passes "0").
func IsRegistration(jobID string) bool {
	if cds.IsUUID(jobID) {
		return false
	}
	// As in the original, an unparsable ID reads as 0.
	n, _ := strconv.ParseInt(jobID, 10, 64)
	return n <= 0
}

// CanSpawn tells whether this hatchery could host a worker of the model for the job at all
// (protocol spec §18.3, seed §6.5). The rules, in order:
//
//  1. the model is a vsphere model;
//  2. no requirement of type service, memory or hostname; with at least one requirement,
//     the model has a command (quirk Q11: checked only inside the requirement loop);
//  3. registration (job "0"): a v1 model, no <model>-tmp VM (a template build in flight),
//     no register-… VM registering that model;
//  4. no VM annotated with the job's ID;
//  5. no spawn of this hatchery in flight for the job;
//  6. with iprange, a free address.
func CanSpawn(in SpawnCheck) Decision {
	m := in.Model
	switch {
	case m == nil || (m.ModelV1 == nil && m.ModelV2 == nil):
		return deny("no worker model")
	case m.IsV2() && m.ModelV2.Type != cds.ModelTypeVSphere:
		return deny("v2 model %q has type %q, not %q", m.ModelV2.Name, m.ModelV2.Type, cds.ModelTypeVSphere)
	case !m.IsV2() && m.ModelV1.Type != cds.ModelTypeVSphere:
		return deny("model %q has type %q, not %q", m.Name(), m.ModelV1.Type, cds.ModelTypeVSphere)
	}
	for _, r := range in.Requirements {
		switch r.Type {
		case cds.RequirementService, cds.RequirementMemory, cds.RequirementHostname:
			return deny("requirement %q of type %q is not supported by vSphere workers", r.Name, r.Type)
		}
		if m.Cmd == "" {
			return deny("model %q has no worker command", m.Name())
		}
	}

	if IsRegistration(in.JobID) {
		if m.IsV2() {
			return deny("v2 model %q cannot be registered", m.Name())
		}
		name := m.ModelV1.Name
		for _, vm := range in.Inventory {
			if vm.Name == name+TmpSuffix {
				return deny("template of model %q is being built (VM %q exists)", m.Name(), vm.Name)
			}
			// The original compared worker_model_path with the bare model name, which never
			// matches (Q10); compare with the path it writes, keeping the bare name too.
			if vm.HasAnnotation && strings.HasPrefix(vm.Name, RegisterPrefix) &&
				(vm.Annotation.WorkerModelPath == m.ModelV1.GroupPath() || vm.Annotation.WorkerModelPath == name) {
				return deny("model %q is being registered by VM %q", m.Name(), vm.Name)
			}
		}
	} else {
		if in.Inventory.HasJob(in.JobID) {
			return deny("a VM already exists for job %s", in.JobID)
		}
		if in.SpawnInProgress {
			return deny("a worker is already being spawned for job %s", in.JobID)
		}
	}
	// Registration needs an address too: the template is built in a VM of its own.
	if in.IPExhausted {
		return deny("no free IP address in iprange")
	}
	return allow("vSphere can host model %q", m.Name())
}
