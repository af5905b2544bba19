package vspherehatchery

import (
	"slices"
	"testing"
	"time"

	"github.com/vmware/govmomi/vim25/mo"
	"github.com/vmware/govmomi/vim25/types"
)

const (
	on  = types.VirtualMachinePowerStatePoweredOn
	off = types.VirtualMachinePowerStatePoweredOff
)

// moVM builds a listed VM the way a narrow listing fills it.
func moVM(name string, a *Annotation, template bool, power types.VirtualMachinePowerState, cpus, memMB int32, guestIPs ...string) mo.VirtualMachine {
	vm := mo.VirtualMachine{}
	vm.Self = types.ManagedObjectReference{Type: "VirtualMachine", Value: "vm-" + name}
	vm.Name = name
	vm.Config = &types.VirtualMachineConfigInfo{Template: template}
	if a != nil {
		s, err := a.Marshal()
		if err != nil {
			panic(err)
		}
		vm.Config.Annotation = s
	}
	vm.Runtime.PowerState = power
	vm.Summary.Config.NumCpu = cpus
	vm.Summary.Config.MemorySizeMB = memMB
	if len(guestIPs) > 0 {
		vm.Guest = &types.GuestInfo{IpAddress: guestIPs[0], Net: []types.GuestNicInfo{{IpAddress: guestIPs}}}
	}
	return vm
}

var created = time.Date(2025, 1, 10, 8, 0, 0, 0, time.UTC)

// testFleet is a vCenter shared with other workloads and another hatchery.
func testFleet() Inventory {
	mine := func(a Annotation) *Annotation { a.HatcheryName = "h"; a.Created = created; return &a }
	return NewInventory([]mo.VirtualMachine{
		moVM("debian12", nil, true, off, 2, 4096),                                                                         // plain template
		moVM("mail-server", nil, false, on, 8, 32768, "192.168.0.10"),                                                     // not CDS
		moVM("notes-vm", &Annotation{}, false, on, 1, 1024),                                                               // annotation without owner
		moVM("grp-model", mine(Annotation{Model: true, WorkerModelPath: "grp/model"}), true, off, 2, 4096),                // CDS template
		moVM("worker-1", mine(Annotation{JobID: "41", IPAddress: "10.0.0.5"}), false, on, 4, 8192, "10.0.0.5", "fe80::1"), // running worker
		moVM("worker-2", mine(Annotation{JobID: "42"}), false, off, 4, 8192),                                              // finished worker
		moVM("register-x", mine(Annotation{RegisterOnly: true, WorkerModelPath: "grp/model"}), false, on, 2, 4096),
		moVM("provision-v2-a", mine(Annotation{Provisioning: true, VMwareModelPath: "debian12", IPAddress: "10.0.0.6"}), false, off, 2, 4096),
		moVM("provision-v2-b", mine(Annotation{Provisioning: true, VMwareModelPath: "debian12"}), false, on, 2, 4096),
		moVM("provision-v2-c", mine(Annotation{Provisioning: true, VMwareModelPath: "ubuntu"}), false, off, 2, 4096),
		moVM("provision-v1-a", mine(Annotation{Provisioning: true, WorkerModelPath: "grp/model"}), false, off, 2, 4096),
		moVM("provision-v2-other", &Annotation{HatcheryName: "other", Provisioning: true, VMwareModelPath: "debian12"}, false, off, 2, 4096),
		moVM("other-worker", &Annotation{HatcheryName: "other", JobID: "43"}, false, on, 16, 65536, "10.0.0.7"),
		// A reused provisioned VM: renamed, but it keeps its provisioning annotation (Q23).
		moVM("worker-3", mine(Annotation{Provisioning: true, WorkerName: "provision-v2-z", VMwareModelPath: "debian12"}), false, on, 8, 16384),
	})
}

func TestNewInventoryReadsNarrowProperties(t *testing.T) {
	inv := testFleet()
	w, ok := inv.Find("worker-1")
	if !ok {
		t.Fatal("worker-1 not found")
	}
	if !w.HasAnnotation || w.Annotation.JobID != "41" || w.PowerState != on || w.NumCPU != 4 || w.MemoryMB != 8192 || w.Template {
		t.Fatalf("worker-1 read as %+v", w)
	}
	if !slices.Equal(w.GuestIPs, []string{"10.0.0.5", "fe80::1"}) {
		t.Fatalf("guest IPs %v (want deduplicated, ipAddress first)", w.GuestIPs)
	}
	if w.Ref.Value != "vm-worker-1" {
		t.Fatalf("ref %v", w.Ref)
	}
	if m, _ := inv.Find("mail-server"); m.HasAnnotation {
		t.Fatal("a VM without annotation read as CDS")
	}
	if tpl, _ := inv.Find("debian12"); !tpl.Template {
		t.Fatal("template flag lost")
	}
}

func TestNewInventoryFallsBackToSummary(t *testing.T) {
	// A wide listing without config (or a VM whose config is not readable yet).
	vm := mo.VirtualMachine{}
	vm.Summary.Config.Name = "from-summary"
	vm.Summary.Config.Template = true
	vm.Summary.Config.Annotation = `{"hatchery_name":"h","created":"2025-01-10T08:00:00Z"}`
	got := NewInventory([]mo.VirtualMachine{vm})[0]
	if got.Name != "from-summary" || !got.Template || !got.OwnedBy("h") {
		t.Fatalf("got %+v", got)
	}
}

func TestWorkersStartedCountsOnlyThisHatcheryWorkers(t *testing.T) {
	got := testFleet().WorkersStarted("h")
	slices.Sort(got)
	// Not: templates, plain or foreign VMs (fix of Q4), idle provisioned VMs, model: true,
	// and worker-2, powered off: its worker is done, it only waits for the cleanup pass.
	want := []string{"register-x", "worker-1", "worker-3"}
	if !slices.Equal(got, want) {
		t.Fatalf("WorkersStarted = %v, want %v", got, want)
	}
	if got := testFleet().WorkersStarted("nobody"); len(got) != 0 {
		t.Fatalf("unknown hatchery sees %v", got)
	}
}

func TestUsedResources(t *testing.T) {
	cpus, mem := testFleet().UsedResources("h")
	// Powered-on and owned: worker-1 (4/8192), register-x (2/4096), provision-v2-b
	// (2/4096, being provisioned), worker-3 (8/16384).
	if cpus != 16 || mem != 32768 {
		t.Fatalf("used %d vCPUs / %d MB, want 16 / 32768", cpus, mem)
	}
}

func TestUsedIPs(t *testing.T) {
	got := testFleet().UsedIPs()
	for _, ip := range []string{"192.168.0.10", "10.0.0.5", "10.0.0.6", "10.0.0.7"} {
		if !slices.Contains(got, ip) {
			t.Errorf("%s missing from used IPs %v", ip, got)
		}
	}
}

func TestHasJob(t *testing.T) {
	inv := testFleet()
	if !inv.HasJob("42") || !inv.HasJob("43") || inv.HasJob("44") {
		t.Fatal("HasJob must see the job_id of any CDS VM")
	}
}

func TestProvisionedCounts(t *testing.T) {
	v2, v1 := testFleet().ProvisionedCounts("h")
	// worker-3 was renamed: it is no longer provisioned stock.
	if v2["debian12"] != 2 || v2["ubuntu"] != 1 || len(v2) != 2 {
		t.Fatalf("v2 counts %v", v2)
	}
	if v1["grp/model"] != 1 || len(v1) != 1 {
		t.Fatalf("v1 counts %v", v1)
	}
}

func TestFindProvisioned(t *testing.T) {
	inv := testFleet()
	names := func(vms []VM) []string {
		var out []string
		for _, vm := range vms {
			out = append(out, vm.Name)
		}
		return out
	}
	tests := []struct {
		name string
		f    ProvisionedFilter
		want []string
	}{
		// provision-v2-b is powered on (being provisioned); the other hatchery's VM is not ours.
		{"v2 by image", ProvisionedFilter{HatcheryName: "h", V2: true, ModelPath: "debian12"}, []string{"provision-v2-a"}},
		{"v1 by model path", ProvisionedFilter{HatcheryName: "h", ModelPath: "grp/model"}, []string{"provision-v1-a"}},
		{"v1 does not take v2 VMs", ProvisionedFilter{HatcheryName: "h", ModelPath: "debian12"}, nil},
		{"busy VM skipped", ProvisionedFilter{HatcheryName: "h", V2: true, ModelPath: "debian12",
			Skip: func(n string) bool { return n == "provision-v2-a" }}, nil},
		{"other hatchery", ProvisionedFilter{HatcheryName: "other", V2: true, ModelPath: "debian12"}, []string{"provision-v2-other"}},
	}
	for _, tt := range tests {
		if got := names(inv.FindProvisioned(tt.f)); !slices.Equal(got, tt.want) {
			t.Errorf("%s: got %v, want %v", tt.name, got, tt.want)
		}
	}
}

func TestModelTemplate(t *testing.T) {
	inv := testFleet()
	if _, ok := inv.ModelTemplate("grp-model"); !ok {
		t.Fatal("CDS template not found")
	}
	if _, ok := inv.ModelTemplate("debian12"); ok {
		t.Fatal("a plain template is not a CDS model template")
	}
	if _, ok := inv.ModelTemplate("worker-1"); ok {
		t.Fatal("a VM is not a template")
	}
}

func BenchmarkNewInventory(b *testing.B) {
	// 3,000 VMs, most of them CDS workers: the conversion cost a decision pays.
	mos := make([]mo.VirtualMachine, 3000)
	for i := range mos {
		mos[i] = moVM("worker", &Annotation{HatcheryName: "h", JobID: "1", Created: created}, false, on, 2, 4096, "10.0.0.1")
	}
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		inv := NewInventory(mos)
		_, _ = inv.UsedResources("h")
	}
}

func TestUsedIPsIgnoresTemplates(t *testing.T) {
	// A v1 template keeps the ip_address its build VM had: it never runs again, so that
	// address is free (the original kept it used for ever, one address lost per model).
	mine := func(a Annotation) *Annotation { a.HatcheryName = "h"; a.Created = created; return &a }
	inv := NewInventory([]mo.VirtualMachine{
		moVM("debian12-v1", mine(Annotation{Model: true, IPAddress: "10.0.0.9"}), true, off, 2, 4096),
		moVM("worker-1", mine(Annotation{JobID: "41", IPAddress: "10.0.0.5"}), false, on, 2, 4096),
	})
	got := inv.UsedIPs()
	if slices.Contains(got, "10.0.0.9") || !slices.Contains(got, "10.0.0.5") {
		t.Errorf("used IPs %v, want the worker's 10.0.0.5 and not the template's 10.0.0.9", got)
	}
}
