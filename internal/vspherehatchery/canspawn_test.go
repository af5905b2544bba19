package vspherehatchery

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/hatchery-vsphere/hatchery-vsphere/internal/cds"
	"github.com/hatchery-vsphere/hatchery-vsphere/internal/hatchery"
)

func v1Model() *hatchery.WorkerStarterWorkerModel {
	return &hatchery.WorkerStarterWorkerModel{
		ModelV1: &cds.Model{Name: "debian12", Type: cds.ModelTypeVSphere, Group: cds.Group{Name: "grp"}},
		Cmd:     "worker",
	}
}

func v2Model() *hatchery.WorkerStarterWorkerModel {
	return &hatchery.WorkerStarterWorkerModel{
		ModelV2:     &cds.V2WorkerModel{Name: "deb", Type: cds.ModelTypeVSphere, Spec: json.RawMessage(`{"image":"debian12"}`)},
		VSphereSpec: cds.V2WorkerModelVSphereSpec{Image: "debian12"},
		Cmd:         "PATH=$PATH worker",
	}
}

func annotated(name string, a Annotation) VM {
	return VM{Name: name, Annotation: a, HasAnnotation: true}
}

const jobUUID = "0b0e6f4c-2e57-4d2e-9f43-6a1c1b3b9d10"

func TestCanSpawn(t *testing.T) {
	fleet := Inventory{
		{Name: "unrelated"},
		annotated("worker-a", Annotation{HatcheryName: "h", JobID: "41"}),
		annotated("worker-b", Annotation{HatcheryName: "other", JobID: jobUUID}),
	}
	tests := []struct {
		name   string
		in     SpawnCheck
		allow  bool
		reason string
	}{
		{name: "v1 job allowed", in: SpawnCheck{Model: v1Model(), JobID: "42", Inventory: fleet}, allow: true},
		{name: "v2 job allowed", in: SpawnCheck{Model: v2Model(), JobID: "1b0e6f4c-2e57-4d2e-9f43-6a1c1b3b9d10", Inventory: fleet}, allow: true},
		{name: "no model", in: SpawnCheck{JobID: "42"}, reason: "no worker model"},
		{name: "v1 model of another type", in: SpawnCheck{Model: func() *hatchery.WorkerStarterWorkerModel {
			m := v1Model()
			m.ModelV1.Type = cds.ModelTypeDocker
			return m
		}(), JobID: "42"}, reason: `type "docker"`},
		{name: "v2 model of another type", in: SpawnCheck{Model: func() *hatchery.WorkerStarterWorkerModel {
			m := v2Model()
			m.ModelV2.Type = cds.ModelTypeOpenstack
			return m
		}(), JobID: jobUUID}, reason: `type "openstack"`},
		{name: "service requirement", in: SpawnCheck{Model: v1Model(), JobID: "42",
			Requirements: []cds.Requirement{{Name: "pg", Type: cds.RequirementService}}}, reason: "not supported"},
		{name: "memory requirement", in: SpawnCheck{Model: v1Model(), JobID: "42",
			Requirements: []cds.Requirement{{Name: "mem", Type: cds.RequirementMemory}}}, reason: "not supported"},
		{name: "hostname requirement", in: SpawnCheck{Model: v1Model(), JobID: "42",
			Requirements: []cds.Requirement{{Name: "h", Type: cds.RequirementHostname}}}, reason: "not supported"},
		{name: "flavor, binary, plugin requirements accepted", in: SpawnCheck{Model: v1Model(), JobID: "42",
			Requirements: []cds.Requirement{{Type: cds.RequirementFlavor, Value: "large"}, {Type: cds.RequirementBinary}, {Type: cds.RequirementPlugin}}}, allow: true},
		{name: "empty command with a requirement (Q11)", in: SpawnCheck{Model: func() *hatchery.WorkerStarterWorkerModel {
			m := v1Model()
			m.Cmd = ""
			return m
		}(), JobID: "42", Requirements: []cds.Requirement{{Type: cds.RequirementBinary, Value: "git"}}}, reason: "no worker command"},
		{name: "empty command without requirement passes (Q11)", in: SpawnCheck{Model: func() *hatchery.WorkerStarterWorkerModel {
			m := v1Model()
			m.Cmd = ""
			return m
		}(), JobID: "42"}, allow: true},
		{name: "v1 job already has a VM", in: SpawnCheck{Model: v1Model(), JobID: "41", Inventory: fleet}, reason: "already exists for job 41"},
		{name: "v2 job already has a VM of another hatchery", in: SpawnCheck{Model: v2Model(), JobID: jobUUID, Inventory: fleet}, reason: "already exists"},
		{name: "job spawn in progress", in: SpawnCheck{Model: v1Model(), JobID: "42", SpawnInProgress: true}, reason: "already being spawned"},
		{name: "no free IP", in: SpawnCheck{Model: v1Model(), JobID: "42", IPExhausted: true}, reason: "no free IP"},
		{name: "registration allowed", in: SpawnCheck{Model: v1Model(), JobID: "0", Inventory: fleet}, allow: true},
		{name: "registration ignores the in-progress set of jobs", in: SpawnCheck{Model: v1Model(), JobID: "0", SpawnInProgress: true}, allow: true},
		{name: "registration of a v2 model", in: SpawnCheck{Model: v2Model(), JobID: "0"}, reason: "cannot be registered"},
		{name: "registration while template is built", in: SpawnCheck{Model: v1Model(), JobID: "0",
			Inventory: Inventory{annotated("debian12-tmp", Annotation{HatcheryName: "h", Model: true})}}, reason: `VM "debian12-tmp" exists`},
		{name: "registration while a register VM runs (fix of Q10)", in: SpawnCheck{Model: v1Model(), JobID: "0",
			Inventory: Inventory{annotated("register-debian12-x", Annotation{HatcheryName: "h", WorkerModelPath: "grp/debian12", RegisterOnly: true})}},
			reason: "being registered"},
		{name: "registration: register VM of another model", in: SpawnCheck{Model: v1Model(), JobID: "0",
			Inventory: Inventory{annotated("register-x", Annotation{WorkerModelPath: "grp/other"})}}, allow: true},
		{name: "registration without free IP", in: SpawnCheck{Model: v1Model(), JobID: "0", IPExhausted: true}, reason: "no free IP"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := CanSpawn(tt.in)
			if d.Allow != tt.allow {
				t.Fatalf("allow = %v (%s), want %v", d.Allow, d.Reason, tt.allow)
			}
			if !strings.Contains(d.Reason, tt.reason) {
				t.Fatalf("reason %q does not contain %q", d.Reason, tt.reason)
			}
		})
	}
}

func TestIsRegistration(t *testing.T) {
	for id, want := range map[string]bool{"0": true, "-1": true, "": true, "42": false, jobUUID: false} {
		if got := IsRegistration(id); got != want {
			t.Errorf("IsRegistration(%q) = %v, want %v", id, got, want)
		}
	}
}
