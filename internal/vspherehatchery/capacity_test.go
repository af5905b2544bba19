package vspherehatchery

import (
	"strings"
	"testing"

	"github.com/hatchery-vsphere/hatchery-vsphere/internal/cds"
	"github.com/hatchery-vsphere/hatchery-vsphere/internal/config"
	"github.com/hatchery-vsphere/hatchery-vsphere/internal/hatchery"
)

var testFlavors = []config.Flavor{
	{Name: "small", CPUs: 2, MemoryMB: 4096},
	{Name: "medium", CPUs: 4, MemoryMB: 8192},
	{Name: "large", CPUs: 8, MemoryMB: 16384},
}

const mb = 1024 * 1024

// roomyPool is a resource pool with plenty of room and a known 2 vCPU / 4 GB template.
func roomyPool() CapacityInput {
	return CapacityInput{
		Flavors:                   testFlavors,
		TemplateKnown:             true,
		TemplateCPUs:              2,
		TemplateMemoryMB:          4096,
		PoolKnown:                 true,
		PoolCPUUnreservedForVM:    100000,
		PoolMemoryUnreservedForVM: 1 << 40,
	}
}

func TestCanAllocate(t *testing.T) {
	tests := []struct {
		name       string
		edit       func(in *CapacityInput)
		allow      bool
		reason     string // substring of the reason
		cpus, memo int
	}{
		{name: "template footprint fits", edit: func(in *CapacityInput) {}, allow: true, cpus: 2, memo: 4096},
		{name: "flavor footprint replaces template", edit: func(in *CapacityInput) { in.FlavorName = "LARGE" },
			allow: true, cpus: 8, memo: 16384, reason: `flavor "large"`},
		{name: "unknown flavor refused (fix of Q12)", edit: func(in *CapacityInput) { in.FlavorName = "huge" },
			reason: `flavor "huge" not found in configuration (configured: small, medium, large)`},
		{name: "unknown flavor with no flavors configured", edit: func(in *CapacityInput) { in.FlavorName = "medium"; in.Flavors = nil },
			reason: "configured: none"},
		{name: "no template and no flavor: allowed unchecked", edit: func(in *CapacityInput) {
			in.TemplateKnown = false
			in.PoolCPUUnreservedForVM = 0
		}, allow: true, reason: "template not found"},
		{name: "no template but full flavor: checked", edit: func(in *CapacityInput) {
			in.TemplateKnown = false
			in.FlavorName = "small"
			in.PoolCPUUnreservedForVM = 0
		}, reason: "no unreserved CPU"},
		{name: "flavor without memory takes template memory", edit: func(in *CapacityInput) {
			in.Flavors = []config.Flavor{{Name: "cpu-only", CPUs: 6}}
			in.FlavorName = "cpu-only"
		}, allow: true, cpus: 6, memo: 4096},
		{name: "pool denies CPU", edit: func(in *CapacityInput) { in.PoolCPUUnreservedForVM = 0 }, reason: "no unreserved CPU"},
		{name: "pool denies memory in bytes", edit: func(in *CapacityInput) { in.PoolMemoryUnreservedForVM = 4096*mb - 1 },
			reason: "resource pool has 4095 MB unreserved"},
		{name: "pool memory exactly enough", edit: func(in *CapacityInput) { in.PoolMemoryUnreservedForVM = 4096 * mb },
			allow: true, cpus: 2, memo: 4096},
		{name: "pool unreadable: static limits still apply", edit: func(in *CapacityInput) {
			in.PoolKnown = false
			in.PoolCPUUnreservedForVM = 0
			in.MaxCPUs, in.UsedCPUs = 10, 9
		}, reason: "maxCpus reached"},
		{name: "pool unreadable: allowed on static limits", edit: func(in *CapacityInput) {
			in.PoolKnown = false
			in.PoolCPUUnreservedForVM = 0
		}, allow: true, reason: "static limits only"},
		{name: "static CPU limit exact fit", edit: func(in *CapacityInput) { in.MaxCPUs, in.UsedCPUs = 10, 8 }, allow: true, cpus: 2, memo: 4096},
		{name: "static CPU limit", edit: func(in *CapacityInput) { in.MaxCPUs, in.UsedCPUs = 10, 9 },
			reason: "maxCpus reached: 9 used + 2 vCPUs, 4096 MB (template) > 10"},
		{name: "static memory limit", edit: func(in *CapacityInput) { in.MaxMemoryMB, in.UsedMemoryMB = 8192, 4097 },
			reason: "maxMemoryMB reached"},
		{name: "static memory limit exact fit", edit: func(in *CapacityInput) { in.MaxMemoryMB, in.UsedMemoryMB = 8192, 4096 }, allow: true, cpus: 2, memo: 4096},
		{name: "starvation reserve denies large", edit: func(in *CapacityInput) {
			// 8 + 2×2 = 12 > 20 − 10 left.
			in.FlavorName, in.MaxCPUs, in.UsedCPUs, in.CountSmallerFlavorToKeep = "large", 20, 10, 2
		}, reason: "starvation reserve"},
		{name: "starvation reserve leaves room", edit: func(in *CapacityInput) {
			in.FlavorName, in.MaxCPUs, in.UsedCPUs, in.CountSmallerFlavorToKeep = "large", 20, 8, 2
		}, allow: true, cpus: 8, memo: 16384},
		{name: "starvation reserve does not apply to the smallest flavor", edit: func(in *CapacityInput) {
			in.FlavorName, in.MaxCPUs, in.UsedCPUs, in.CountSmallerFlavorToKeep = "small", 20, 17, 5
		}, allow: true, cpus: 2, memo: 4096},
		{name: "starvation reserve needs maxCpus", edit: func(in *CapacityInput) {
			in.FlavorName, in.UsedCPUs, in.CountSmallerFlavorToKeep = "large", 1000, 50
		}, allow: true, cpus: 8, memo: 16384},
		{name: "starvation reserve ignores template-sized workers", edit: func(in *CapacityInput) {
			in.TemplateCPUs, in.MaxCPUs, in.UsedCPUs, in.CountSmallerFlavorToKeep = 8, 20, 10, 2
		}, allow: true, cpus: 8, memo: 4096},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			in := roomyPool()
			tt.edit(&in)
			d := CanAllocate(in)
			if d.Allow != tt.allow {
				t.Fatalf("allow = %v (%s), want %v", d.Allow, d.Reason, tt.allow)
			}
			if !strings.Contains(d.Reason, tt.reason) {
				t.Fatalf("reason %q does not contain %q", d.Reason, tt.reason)
			}
			if tt.allow && tt.cpus != 0 && (d.CPUs != tt.cpus || d.MemoryMB != tt.memo) {
				t.Fatalf("footprint %d vCPUs / %d MB, want %d / %d", d.CPUs, d.MemoryMB, tt.cpus, tt.memo)
			}
		})
	}
}

func TestFlavorName(t *testing.T) {
	flavorReq := []cds.Requirement{{Type: cds.RequirementBinary, Value: "git"}, {Type: cds.RequirementFlavor, Value: ""}, {Type: cds.RequirementFlavor, Value: "large"}}
	v1 := func(flavor string) *hatchery.WorkerStarterWorkerModel {
		return &hatchery.WorkerStarterWorkerModel{ModelV1: &cds.Model{Name: "m", ModelVirtualMachine: cds.ModelVirtualMachine{Flavor: flavor}}}
	}
	v2 := func(runsOn, spec string) *hatchery.WorkerStarterWorkerModel {
		return &hatchery.WorkerStarterWorkerModel{ModelV2: &cds.V2WorkerModel{Name: "m"}, Flavor: runsOn, VSphereSpec: cds.V2WorkerModelVSphereSpec{Flavor: spec}}
	}
	tests := []struct {
		name  string
		model *hatchery.WorkerStarterWorkerModel
		reqs  []cds.Requirement
		want  string
	}{
		{"v2 runs-on first", v2("small", "medium"), flavorReq, "small"},
		{"v2 spec flavor", v2("", "medium"), flavorReq, "medium"},
		{"v2 flavor requirement", v2("", ""), flavorReq, "large"},
		{"v2 default flavor", v2("", ""), nil, "dflt"},
		{"v1 job requirement first", v1("medium"), flavorReq, "large"},
		{"v1 model flavor", v1("medium"), nil, "medium"},
		{"v1 default flavor", v1(""), nil, "dflt"},
		{"no model", nil, nil, "dflt"},
	}
	for _, tt := range tests {
		if got := FlavorName(tt.model, tt.reqs, "dflt"); got != tt.want {
			t.Errorf("%s: got %q, want %q", tt.name, got, tt.want)
		}
	}
	if got := FlavorName(v1(""), nil, ""); got != "" {
		t.Errorf("no flavor anywhere: got %q, want template", got)
	}
}

func BenchmarkCanAllocate(b *testing.B) {
	in := roomyPool()
	in.FlavorName, in.MaxCPUs, in.MaxMemoryMB, in.UsedCPUs, in.CountSmallerFlavorToKeep = "large", 512, 1<<20, 100, 2
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		if d := CanAllocate(in); !d.Allow {
			b.Fatal(d.Reason)
		}
	}
}
