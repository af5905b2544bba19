package vspherehatchery

import (
	"context"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/vmware/govmomi/vim25/mo"
	"github.com/vmware/govmomi/vim25/types"
	"go.uber.org/mock/gomock"

	"github.com/hatchery-vsphere/hatchery-vsphere/internal/cds"
	"github.com/hatchery-vsphere/hatchery-vsphere/internal/config"
	"github.com/hatchery-vsphere/hatchery-vsphere/internal/hatchery"
	"github.com/hatchery-vsphere/hatchery-vsphere/internal/vsphere"
	"github.com/hatchery-vsphere/hatchery-vsphere/mock_vsphere"
)

// The fake clock of the tests reads 2025-01-10 08:00 UTC; workerTTL is 120 min and
// workerRegistrationTTL 10 min (config defaults through the effective-value methods).
var cleanupNow = newFakeClock().Now()

func ago(d time.Duration) time.Time { return cleanupNow.Add(-d) }

func starting(at time.Time, msg string) types.BaseEvent {
	return &types.VmStartingEvent{VmEvent: types.VmEvent{Event: types.Event{CreatedTime: at, FullFormattedMessage: msg}}}
}

func poweredOff(at time.Time, msg string) types.BaseEvent {
	return &types.VmPoweredOffEvent{VmEvent: types.VmEvent{Event: types.Event{CreatedTime: at, FullFormattedMessage: msg}}}
}

func renamed(at time.Time, msg string) types.BaseEvent {
	return &types.VmRenamedEvent{VmEvent: types.VmEvent{Event: types.Event{CreatedTime: at, FullFormattedMessage: msg}}}
}

func TestKillAwolServers(t *testing.T) {
	// The VMs of the table were created 6 h ago unless said otherwise: every rule may fire,
	// so the events are read.
	old := ago(6 * time.Hour)
	mine := func(a Annotation) *Annotation {
		a.HatcheryName = "h"
		if a.Created.IsZero() {
			a.Created = old
		}
		return &a
	}
	tests := []struct {
		name       string
		vm         mo.VirtualMachine
		marked     bool
		registered bool
		// events is nil when the rule decides before reading them.
		events  []types.BaseEvent
		readsEv bool
		deleted bool
		// at is how long after the orchestrator's start the pass runs.
		at time.Duration
	}{
		{name: "marked for deletion", vm: moVM("w", mine(Annotation{}), false, on, 2, 4096), marked: true, deleted: true},
		{name: "provisioned VM of a configured pool skipped", vm: moVM("provision-v2-x", mine(Annotation{Provisioning: true, VMwareModelPath: "debian12"}), false, off, 2, 4096)},
		{name: "CDS template build of this run skipped", vm: moVM("mymodel-tmp", mine(Annotation{Model: true, Created: cleanupNow}), false, on, 2, 4096)},
		{name: "CDS template skipped", vm: moVM("mymodel", mine(Annotation{Model: true}), true, off, 2, 4096)},
		// Begun before this process started and not built by it: a crash mid-build, which
		// would keep the model from registering for ever.
		{name: "template build of an earlier run deleted", vm: moVM("mymodel-tmp", mine(Annotation{Model: true}), false, on, 2, 4096), deleted: true},
		// Renamed but not marked as template, longer ago than a build may take.
		{name: "half-built template deleted", vm: moVM("mymodel", mine(Annotation{Model: true, Created: cleanupNow.Add(time.Second)}), false, off, 2, 4096), deleted: true, at: 16 * time.Minute},
		{name: "half-built template within the build bound kept", vm: moVM("mymodel", mine(Annotation{Model: true, Created: cleanupNow.Add(time.Second)}), false, off, 2, 4096), at: 14 * time.Minute},
		{name: "other hatchery's VM skipped", vm: moVM("w", &Annotation{HatcheryName: "other"}, false, off, 2, 4096)},
		{name: "non-CDS VM skipped", vm: moVM("mail", nil, false, off, 2, 4096)},
		{name: "no events kept", vm: moVM("w", mine(Annotation{}), false, on, 2, 4096), readsEv: true},
		{
			name: "renamed long ago, never started", vm: moVM("w", mine(Annotation{}), false, off, 2, 4096), readsEv: true,
			events: []types.BaseEvent{renamed(ago(11*time.Minute), "renamed x to w")}, deleted: true,
		},
		{
			name: "renamed recently, never started", vm: moVM("w", mine(Annotation{}), false, off, 2, 4096), readsEv: true,
			events: []types.BaseEvent{renamed(ago(9*time.Minute), "renamed x to w")},
		},
		{
			// A clone whose power-on never came (taskTimeout 10 min + workerRegistrationTTL
			// 10 min): the original kept it for ever.
			name: "powered off, never started, long ago: leaked", vm: moVM("w", mine(Annotation{}), false, off, 2, 4096), readsEv: true,
			events: []types.BaseEvent{poweredOff(ago(time.Hour), "w is powered off")}, deleted: true,
		},
		{
			name: "powered off, never started, recent: a clone in progress", vm: moVM("w", mine(Annotation{Created: ago(15 * time.Minute)}), false, off, 2, 4096), readsEv: true,
		},
		{
			name: "powered on, no start event kept", vm: moVM("w", mine(Annotation{}), false, on, 2, 4096), readsEv: true,
			events: []types.BaseEvent{poweredOff(ago(time.Hour), "w is powered off")},
		},
		{
			name: "only provisioning events: not started as a worker", vm: moVM("w", mine(Annotation{Provisioning: true}), false, on, 2, 4096), readsEv: true,
			events: []types.BaseEvent{starting(ago(5*time.Hour), "provision-v2-x is starting"), poweredOff(ago(5*time.Hour), "provision-v2-x is powered off")},
		},
		{
			name: "registered worker past workerTTL", vm: moVM("w", mine(Annotation{}), false, on, 2, 4096), readsEv: true, registered: true,
			events: []types.BaseEvent{starting(ago(121*time.Minute), "w is starting")}, deleted: true,
		},
		{
			name: "registered worker within workerTTL", vm: moVM("w", mine(Annotation{}), false, on, 2, 4096), readsEv: true, registered: true,
			events: []types.BaseEvent{starting(ago(119*time.Minute), "w is starting")},
		},
		{
			// Created less than workerTTL ago: it cannot have started longer ago, no events.
			name: "young registered worker: no events read", vm: moVM("w", mine(Annotation{Created: ago(119 * time.Minute)}), false, on, 2, 4096), registered: true,
		},
		{
			name: "unregistered worker finished beyond the grace period", vm: moVM("w", mine(Annotation{}), false, off, 2, 4096), readsEv: true,
			events: []types.BaseEvent{poweredOff(ago(181*time.Second), "w is powered off"), starting(ago(5*time.Minute), "w is starting")}, deleted: true,
		},
		{
			name: "unregistered worker finished within the grace period", vm: moVM("w", mine(Annotation{}), false, off, 2, 4096), readsEv: true,
			events: []types.BaseEvent{poweredOff(ago(179*time.Second), "w is powered off"), starting(ago(5*time.Minute), "w is starting")},
		},
		{
			name: "power-off older than the start ignored", vm: moVM("w", mine(Annotation{}), false, on, 2, 4096), readsEv: true,
			events: []types.BaseEvent{starting(ago(3*time.Minute), "w is starting"), poweredOff(ago(4*time.Minute), "w is powered off")},
		},
		{
			name: "unregistered worker past workerRegistrationTTL", vm: moVM("w", mine(Annotation{}), false, on, 2, 4096), readsEv: true,
			events: []types.BaseEvent{starting(ago(11*time.Minute), "w is starting")}, deleted: true,
		},
		{
			name: "unregistered worker within workerRegistrationTTL", vm: moVM("w", mine(Annotation{}), false, on, 2, 4096), readsEv: true,
			events: []types.BaseEvent{starting(ago(9*time.Minute), "w is starting")},
		},
		{
			// A reused provisioned VM counts from its claim, not from its provisioning.
			name: "freshly claimed VM: no events read", vm: moVM("w", mine(Annotation{Provisioning: true, Claimed: ago(9 * time.Minute)}), false, on, 2, 4096),
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cfg := spawnConfig()
			cfg.WorkerProvisioning = []config.WorkerProvisioning{{ModelVMWare: "debian12", Number: 1}}
			f := newOrch(t, cfg, func(m *mock_vsphere.MockVSphereClient) {
				listing(m, 1, []mo.VirtualMachine{tc.vm}, nil)
				loads := 0
				if tc.readsEv {
					loads++
					m.EXPECT().LoadVirtualMachineEvents(gomock.Any(), vmObj(tc.vm.Name), "VmStartingEvent", "VmPoweredOffEvent", "VmRenamedEvent").Return(tc.events, nil).Times(1)
				}
				if tc.deleted {
					loads++
					shutdowns := 0
					if tc.vm.Runtime.PowerState != off {
						shutdowns = 1
					}
					m.EXPECT().ShutdownVirtualMachine(gomock.Any(), vmObj(tc.vm.Name)).Return(nil).Times(shutdowns)
					m.EXPECT().DestroyVirtualMachine(gomock.Any(), vmObj(tc.vm.Name)).Return(nil).Times(1)
				}
				m.EXPECT().LoadVirtualMachine(gomock.Any(), tc.vm.Name).Return(vmObj(tc.vm.Name), nil).Times(loads)
			})
			if tc.registered {
				f.svc.registered[tc.vm.Name] = struct{}{}
			}
			if tc.marked {
				f.o.caches.ToDelete.Add(tc.vm.Name)
			}
			if tc.at != 0 {
				f.o.now = func() time.Time { return cleanupNow.Add(tc.at) }
			}
			if err := f.o.killAwolServers(t.Context(), f.svc); err != nil {
				t.Fatalf("killAwolServers: %v", err)
			}
			if f.o.caches.ToDelete.Has(tc.vm.Name) {
				t.Errorf("VM still marked for deletion")
			}
		})
	}
}

func TestKillAwolServersToleratesAVMAlreadyGone(t *testing.T) {
	mine := func(a Annotation) *Annotation { a.HatcheryName = "h"; a.Created = created; return &a }
	f := newOrch(t, spawnConfig(), func(m *mock_vsphere.MockVSphereClient) {
		listing(m, 1, []mo.VirtualMachine{
			moVM("gone", mine(Annotation{}), false, on, 2, 4096),
			moVM("done", mine(Annotation{}), false, off, 2, 4096),
		}, nil)
		m.EXPECT().LoadVirtualMachine(gomock.Any(), "gone").Return(nil, vsphere.ErrNotFound).Times(1)
		m.EXPECT().LoadVirtualMachine(gomock.Any(), "done").Return(vmObj("done"), nil).Times(1)
		// Powered off already: destroyed without a power-off.
		m.EXPECT().DestroyVirtualMachine(gomock.Any(), vmObj("done")).Return(nil).Times(1)
	})
	f.o.caches.ToDelete.Add("gone")
	f.o.caches.ToDelete.Add("done")
	if err := f.o.killAwolServers(t.Context(), f.svc); err != nil {
		t.Fatalf("killAwolServers: %v", err)
	}
	if n := f.o.caches.ToDelete.Len(); n != 0 {
		t.Errorf("%d VMs still marked", n)
	}
}

func TestDeleteRegisterVMReportsTheRegistrationFailure(t *testing.T) {
	model := func(need bool) cds.Model {
		return cds.Model{Name: "mymodel", Group: cds.Group{Name: "grp"}, NeedRegistration: need}
	}
	tests := []struct {
		name             string
		cached, fresh    bool
		wantReportedOnce bool
	}{
		{"still needs registration", true, true, true},
		{"registered meanwhile", true, false, false},
		{"cache says registered", false, true, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			v := VM{
				Name:          "register-calm-turing",
				HasAnnotation: true,
				Annotation:    Annotation{HatcheryName: "h", WorkerModelPath: "grp/mymodel", RegisterOnly: true},
				PowerState:    off,
			}
			f := newOrch(t, spawnConfig(), func(m *mock_vsphere.MockVSphereClient) {
				m.EXPECT().LoadVirtualMachine(gomock.Any(), v.Name).Return(vmObj(v.Name), nil).Times(1)
				m.EXPECT().DestroyVirtualMachine(gomock.Any(), vmObj(v.Name)).Return(nil).Times(1)
			})
			f.svc.cached = []cds.Model{{Name: "other", Group: cds.Group{Name: "grp"}, NeedRegistration: true}, model(tc.cached)}
			f.svc.refreshed = []cds.Model{model(tc.fresh)}
			if err := f.o.deleteServer(t.Context(), f.svc, v, "test"); err != nil {
				t.Fatalf("deleteServer: %v", err)
			}
			if tc.wantReportedOnce {
				if len(f.svc.modelErrors) != 1 || !strings.HasPrefix(f.svc.modelErrors[0], "grp/mymodel: ") {
					t.Errorf("model errors = %q, want one report on grp/mymodel", f.svc.modelErrors)
				}
			} else if len(f.svc.modelErrors) != 0 {
				t.Errorf("model errors = %q, want none", f.svc.modelErrors)
			}
		})
	}
}

func TestKillDisabledWorkersMarksTheirVMs(t *testing.T) {
	mine := func(a Annotation) *Annotation { a.HatcheryName = "h"; a.Created = created; return &a }
	f := newOrch(t, spawnConfig(), func(m *mock_vsphere.MockVSphereClient) {
		listing(m, 1, []mo.VirtualMachine{
			moVM("w1", mine(Annotation{}), false, on, 2, 4096),
			moVM("w2", mine(Annotation{}), false, on, 2, 4096),
			moVM("w3", &Annotation{HatcheryName: "other"}, false, on, 2, 4096),
		}, nil)
	})
	f.svc.pool = []hatchery.PoolWorker{
		{Name: "w1", Status: cds.StatusDisabled},
		{Name: "w2", Status: cds.StatusBuilding},
		{Name: "w3", Status: cds.StatusDisabled},
		{Name: "w4", Status: cds.StatusDisabled},
	}
	if err := f.o.killDisabledWorkers(t.Context(), f.svc); err != nil {
		t.Fatalf("killDisabledWorkers: %v", err)
	}
	if got := strings.Join(f.o.caches.ToDelete.List(), ","); got != "w1" {
		t.Errorf("marked = %q, want w1 only", got)
	}
}

func TestClaimProvisionedSkipRules(t *testing.T) {
	mine := func(a Annotation) *Annotation { a.HatcheryName = "h"; a.Created = created; return &a }
	pv := func(name string) mo.VirtualMachine {
		return moVM(name, mine(Annotation{Provisioning: true, VMwareModelPath: "debian12"}), false, off, 2, 4096)
	}
	fleet := []mo.VirtualMachine{
		pv("provision-v2-pending"),
		pv("provision-v2-todelete"),
		pv("provision-v2-using"),
		moVM("provision-v2-on", mine(Annotation{Provisioning: true, VMwareModelPath: "debian12"}), false, on, 2, 4096),
		moVM("provision-v2-ubuntu", mine(Annotation{Provisioning: true, VMwareModelPath: "ubuntu"}), false, off, 2, 4096),
		moVM("provision-v2-other", &Annotation{HatcheryName: "other", Provisioning: true, VMwareModelPath: "debian12"}, false, off, 2, 4096),
		moVM("provision-v1-v1", mine(Annotation{Provisioning: true, VMwareModelPath: "debian12"}), false, off, 2, 4096),
		pv("provision-v2-gone"),
		pv("provision-v2-fresh"),
		pv("provision-v2-good"),
		pv("provision-v2-next"),
	}
	f := newOrch(t, spawnConfig(), func(m *mock_vsphere.MockVSphereClient) {
		m.EXPECT().LoadVirtualMachine(gomock.Any(), "provision-v2-gone").Return(nil, vsphere.ErrNotFound).Times(1)
		m.EXPECT().LoadVirtualMachine(gomock.Any(), "provision-v2-fresh").Return(vmObj("provision-v2-fresh"), nil).Times(1)
		m.EXPECT().LoadVirtualMachineEvents(gomock.Any(), vmObj("provision-v2-fresh"), "VmPoweredOffEvent").Return(nil, nil).Times(1)
		m.EXPECT().LoadVirtualMachine(gomock.Any(), "provision-v2-good").Return(vmObj("provision-v2-good"), nil).Times(1)
		m.EXPECT().LoadVirtualMachineEvents(gomock.Any(), vmObj("provision-v2-good"), "VmPoweredOffEvent").Return([]types.BaseEvent{poweredOff(ago(time.Hour), "")}, nil).Times(1)
	})
	f.o.caches.ProvisioningPending.Add("provision-v2-pending")
	f.o.caches.ToDelete.Add("provision-v2-todelete")
	f.o.caches.ProvisioningUsing.Add("provision-v2-using")

	candidate, vm, ok := f.o.claimProvisioned(t.Context(), v2Model(), NewInventory(fleet))
	if !ok || candidate.Name != "provision-v2-good" || vm.Reference().Value != "vm-provision-v2-good" {
		t.Fatalf("claimed %q (ok %v), want provision-v2-good", candidate.Name, ok)
	}
	if !f.o.caches.ProvisioningUsing.Has("provision-v2-good") {
		t.Errorf("the claimed VM is not in the using set")
	}
	for _, n := range []string{"provision-v2-gone", "provision-v2-fresh"} {
		if f.o.caches.ProvisioningUsing.Has(n) {
			t.Errorf("skipped VM %s left claimed", n)
		}
	}
}

func TestClaimProvisionedIsExclusive(t *testing.T) {
	mine := func(a Annotation) *Annotation { a.HatcheryName = "h"; a.Created = created; return &a }
	fleet := NewInventory([]mo.VirtualMachine{
		moVM("provision-v2-only", mine(Annotation{Provisioning: true, VMwareModelPath: "debian12"}), false, off, 2, 4096),
	})
	f := newOrch(t, spawnConfig(), func(m *mock_vsphere.MockVSphereClient) {
		m.EXPECT().LoadVirtualMachine(gomock.Any(), "provision-v2-only").Return(vmObj("provision-v2-only"), nil).Times(1)
		m.EXPECT().LoadVirtualMachineEvents(gomock.Any(), gomock.Any(), "VmPoweredOffEvent").Return([]types.BaseEvent{poweredOff(ago(time.Hour), "")}, nil).Times(1)
	})
	const n = 8
	got := make(chan bool, n)
	for range n {
		go func() {
			_, _, ok := f.o.claimProvisioned(context.Background(), v2Model(), fleet)
			got <- ok
		}()
	}
	claimed := 0
	for range n {
		if <-got {
			claimed++
		}
	}
	if claimed != 1 {
		t.Fatalf("%d spawns claimed the one provisioned VM, want 1", claimed)
	}
}

// A spawn that fails right after its clone leaves a VM that no listing may ever have seen:
// deleting it must free its address at once, not 5 minutes later.
func TestDeleteServerFreesTheVMAddress(t *testing.T) {
	cfg := spawnConfig()
	cfg.IPRange = "10.0.0.0/30"
	v := VM{
		Name:          "calm-turing",
		HasAnnotation: true,
		Annotation:    Annotation{HatcheryName: "h", IPAddress: "10.0.0.1", JobID: "42"},
		PowerState:    off,
	}
	f := newOrch(t, cfg, func(m *mock_vsphere.MockVSphereClient) {
		m.EXPECT().LoadVirtualMachine(gomock.Any(), v.Name).Return(vmObj(v.Name), nil).Times(1)
		m.EXPECT().DestroyVirtualMachine(gomock.Any(), vmObj(v.Name)).Return(nil).Times(1)
	})
	var reserved []string
	for {
		ip, err := f.o.ips.FindAndReserve()
		if err != nil {
			break
		}
		reserved = append(reserved, ip)
	}
	if !slices.Contains(reserved, "10.0.0.1") {
		t.Fatalf("test setup: 10.0.0.1 not in the reserved addresses %v", reserved)
	}
	if err := f.o.deleteServer(t.Context(), f.svc, v, "marked for deletion"); err != nil {
		t.Fatalf("deleteServer: %v", err)
	}
	if ip, err := f.o.ips.FindAndReserve(); err != nil || ip != "10.0.0.1" {
		t.Errorf("after the deletion FindAndReserve = %q, %v; want the deleted VM's 10.0.0.1", ip, err)
	}
}

// After a restart, a powered-on worker VM of a job made by the earlier run and whose worker
// never registered is kept only while its job still waits for this hatchery's worker.
func TestKillAwolServersVMsLeftByAnEarlierRun(t *testing.T) {
	mine := func(a Annotation) *Annotation { a.HatcheryName = "h"; return &a }
	before := ago(time.Minute) // this process started at cleanupNow
	tests := []struct {
		name       string
		vm         mo.VirtualMachine
		awaits     bool
		registered bool
		inProgress bool
		asked      bool
		deleted    bool
	}{
		{name: "job released at shutdown: deleted at once", vm: moVM("w", mine(Annotation{Created: before, JobID: "41"}), false, on, 2, 4096), asked: true, deleted: true},
		{name: "v2 job gone: deleted at once", vm: moVM("w", mine(Annotation{Created: before, JobID: "0b9a1f4e-3a3c-4c8e-9a50-4d5b3b3c2a11", JobRegion: "eu"}), false, on, 2, 4096), asked: true, deleted: true},
		{name: "job still booked for it: kept", vm: moVM("w", mine(Annotation{Created: before, JobID: "41"}), false, on, 2, 4096), awaits: true, asked: true},
		{name: "claimed provisioned VM of an earlier run", vm: moVM("w", mine(Annotation{Created: ago(time.Hour), Provisioning: true, Claimed: before, JobID: "41"}), false, on, 2, 4096), asked: true, deleted: true},
		{name: "registered worker: not asked", vm: moVM("w", mine(Annotation{Created: before, JobID: "41"}), false, on, 2, 4096), registered: true},
		{name: "made by this run: not asked", vm: moVM("w", mine(Annotation{Created: cleanupNow, JobID: "41"}), false, on, 2, 4096)},
		{name: "spawn of this run in progress for the job: not asked", vm: moVM("w", mine(Annotation{Created: before, JobID: "41"}), false, on, 2, 4096), inProgress: true},
		{name: "powered off: the finished-worker rules decide", vm: moVM("w", mine(Annotation{Created: before, JobID: "41"}), false, off, 2, 4096)},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f := newOrch(t, spawnConfig(), func(m *mock_vsphere.MockVSphereClient) {
				listing(m, 1, []mo.VirtualMachine{tc.vm}, nil)
				if tc.deleted {
					m.EXPECT().LoadVirtualMachine(gomock.Any(), "w").Return(vmObj("w"), nil).Times(1)
					m.EXPECT().ShutdownVirtualMachine(gomock.Any(), vmObj("w")).Return(nil).Times(1)
					m.EXPECT().DestroyVirtualMachine(gomock.Any(), vmObj("w")).Return(nil).Times(1)
				}
				// Young VMs: no AWOL rule may fire yet, so no events are read.
			})
			a, _ := ParseAnnotation(tc.vm.Config.Annotation)
			f.svc.awaits = map[string]bool{a.JobID: tc.awaits}
			if tc.registered {
				f.svc.registered["w"] = struct{}{}
			}
			if tc.inProgress {
				f.o.caches.SpawnInProgress.Add(a.JobID)
			}
			if err := f.o.killAwolServers(t.Context(), f.svc); err != nil {
				t.Fatalf("killAwolServers: %v", err)
			}
			if asked := len(f.svc.asked) > 0; asked != tc.asked {
				t.Errorf("API asked about the job: %v, want %v", asked, tc.asked)
			}
			if len(f.svc.released) != 0 {
				t.Errorf("released %v: a job that no longer waits for the VM is not released", f.svc.released)
			}
		})
	}
}

// An API that cannot say whether the job still waits keeps the VM and fails the pass.
func TestKillAwolServersKeepsAnEarlierRunsVMWhenTheAPIFails(t *testing.T) {
	vm := moVM("w", &Annotation{HatcheryName: "h", Created: ago(time.Minute), JobID: "41"}, false, on, 2, 4096)
	f := newOrch(t, spawnConfig(), func(m *mock_vsphere.MockVSphereClient) {
		listing(m, 1, []mo.VirtualMachine{vm}, nil)
	})
	f.svc.awaitsErr = errors.New("API down")
	if err := f.o.killAwolServers(t.Context(), f.svc); err == nil || !strings.Contains(err.Error(), "API down") {
		t.Fatalf("killAwolServers = %v, want the API failure", err)
	}
}
