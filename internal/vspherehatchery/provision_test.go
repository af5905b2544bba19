package vspherehatchery

import (
	"context"
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/vmware/govmomi/object"
	"github.com/vmware/govmomi/vim25/mo"
	"github.com/vmware/govmomi/vim25/types"
	"go.uber.org/mock/gomock"

	"github.com/hatchery-vsphere/hatchery-vsphere/internal/cds"
	"github.com/hatchery-vsphere/hatchery-vsphere/internal/config"
	"github.com/hatchery-vsphere/hatchery-vsphere/mock_vsphere"
)

func TestProvisionPassV2FillsTheDeficitUpToThePoolSize(t *testing.T) {
	mine := func(a Annotation) *Annotation { a.HatcheryName = "h"; a.Created = created; return &a }
	cfg := spawnConfig()
	cfg.IPRange = "10.0.0.20/30"
	cfg.WorkerProvisioningPoolSize = 2
	cfg.WorkerProvisioning = []config.WorkerProvisioning{
		{ModelVMWare: "debian12", Number: 4}, // 1 exists: 3 missing, 2 made in this pass
		{ModelPath: "grp/mymodel", Number: 1},
	}
	clones := &cloneRecorder{}
	f := newOrch(t, cfg, func(m *mock_vsphere.MockVSphereClient) {
		listing(m, 1, []mo.VirtualMachine{
			moVM("debian12", nil, true, off, 2, 4096),
			moVM("provision-v2-old", mine(Annotation{Provisioning: true, VMwareModelPath: "debian12", IPAddress: "10.0.0.20"}), false, off, 2, 4096),
		}, nil)
		m.EXPECT().LoadVirtualMachine(gomock.Any(), "debian12").Return(vmObj("debian12"), nil).Times(2)
		expectClonesOf(m, 2, 1, clones) // one source: its NIC is prepared once
		m.EXPECT().WaitForGuestOperationsReady(gomock.Any(), gomock.Any()).Return(nil).Times(2)
		m.EXPECT().WaitForVirtualMachineIP(gomock.Any(), gomock.Any(), gomock.Any(), gomock.Any()).Return(nil).Times(2)
		m.EXPECT().ShutdownVirtualMachine(gomock.Any(), gomock.Any()).Return(nil).Times(2)
		expectProvisionedStamps(t, m, 2)
	})
	f.svc.hasV1 = false // no v1 session: the v1 pass is skipped (fix of Q25)

	if err := f.o.provisionPass(t.Context(), f.svc); err != nil {
		t.Fatalf("provisionPass: %v", err)
	}
	var ips []string
	for _, c := range clones.get() {
		a, ok := ParseAnnotation(c.spec.Config.Annotation)
		if !ok || !a.Provisioning || a.HatcheryName != "h" || a.VMwareModelPath != "debian12" || a.WorkerName != c.name || a.JobID != "" {
			t.Errorf("annotation of %s = %s", c.name, c.spec.Config.Annotation)
		}
		if c.spec.Config.NumCPUs != 0 || c.spec.Config.MemoryMB != 0 {
			t.Errorf("provisioned VM %s sized %d/%d; it must keep the template's size", c.name, c.spec.Config.NumCPUs, c.spec.Config.MemoryMB)
		}
		if len(c.name) < len(ProvisionV2Prefix) || c.name[:len(ProvisionV2Prefix)] != ProvisionV2Prefix {
			t.Errorf("provisioned VM named %q", c.name)
		}
		ips = append(ips, a.IPAddress)
	}
	slices.Sort(ips)
	if !slices.Equal(ips, []string{"10.0.0.21", "10.0.0.22"}) {
		t.Errorf("IPs = %v, want two distinct free addresses", ips)
	}
	if len(f.svc.workerModelGo) != 0 {
		t.Errorf("v1 models fetched without a v1 session: %v", f.svc.workerModelGo)
	}
	if f.o.caches.ProvisioningPending.Len() != 0 {
		t.Errorf("pending set not emptied: %v", f.o.caches.ProvisioningPending.List())
	}
}

func TestProvisionPassV1InterleavesModelsAndSkipsUnregistered(t *testing.T) {
	cfg := spawnConfig()
	cfg.WorkerProvisioningPoolSize = 2
	cfg.WorkerProvisioning = []config.WorkerProvisioning{
		{ModelPath: "grp/a", Number: 2},
		{ModelPath: "grp/pending", Number: 1},
		{ModelPath: "no-group", Number: 1},
		{ModelPath: "grp/b", Number: 1},
	}
	clones := &cloneRecorder{}
	f := newOrch(t, cfg, func(m *mock_vsphere.MockVSphereClient) {
		listing(m, 1, nil, nil) // the v2 pass has nothing to do and lists nothing
		m.EXPECT().LoadVirtualMachine(gomock.Any(), "a").Return(vmObj("a"), nil).Times(1)
		m.EXPECT().LoadVirtualMachine(gomock.Any(), "b").Return(vmObj("b"), nil).Times(1)
		expectClones(m, 2, clones)
		m.EXPECT().WaitForGuestOperationsReady(gomock.Any(), gomock.Any()).Return(nil).Times(2)
		m.EXPECT().WaitForVirtualMachineIP(gomock.Any(), gomock.Any(), nil, gomock.Any()).Return(nil).Times(2)
		m.EXPECT().ShutdownVirtualMachine(gomock.Any(), gomock.Any()).Return(nil).Times(2)
		expectProvisionedStamps(t, m, 2)
	})
	f.svc.hasV1 = true
	f.svc.models = map[string]cds.Model{
		"grp/a":       {Name: "a", Group: cds.Group{Name: "grp"}, UserLastModified: time.Unix(1717000000, 0)},
		"grp/b":       {Name: "b", Group: cds.Group{Name: "grp"}, UserLastModified: time.Unix(1717000001, 0)},
		"grp/pending": {Name: "pending", Group: cds.Group{Name: "grp"}, NeedRegistration: true},
	}
	if err := f.o.provisionPass(t.Context(), f.svc); err != nil {
		t.Fatalf("provisionPass: %v", err)
	}
	// Round robin: a, b (the second a would come third, beyond the pool size).
	var got []string
	for _, c := range clones.get() {
		a, _ := ParseAnnotation(c.spec.Config.Annotation)
		if !a.Provisioning || a.VMwareModelPath != "" || a.WorkerModelLastModified == "" || c.name[:len(ProvisionV1Prefix)] != ProvisionV1Prefix {
			t.Errorf("clone %s annotation %s", c.name, c.spec.Config.Annotation)
		}
		got = append(got, c.source+"="+a.WorkerModelPath)
	}
	slices.Sort(got)
	if !slices.Equal(got, []string{"vm-a=grp/a", "vm-b=grp/b"}) {
		t.Errorf("provisioned = %v, want one of grp/a and one of grp/b from their templates", got)
	}
}

func TestProvisionFailureMarksTheVMForDeletion(t *testing.T) {
	cfg := spawnConfig()
	cfg.WorkerProvisioning = []config.WorkerProvisioning{{ModelVMWare: "debian12", Number: 1}}
	boom := errors.New("no IP")
	f := newOrch(t, cfg, func(m *mock_vsphere.MockVSphereClient) {
		listing(m, 1, nil, nil)
		m.EXPECT().LoadVirtualMachine(gomock.Any(), "debian12").Return(vmObj("debian12"), nil).Times(1)
		expectClones(m, 1, &cloneRecorder{})
		m.EXPECT().WaitForGuestOperationsReady(gomock.Any(), gomock.Any()).Return(nil).Times(1)
		m.EXPECT().WaitForVirtualMachineIP(gomock.Any(), gomock.Any(), gomock.Any(), gomock.Any()).Return(boom).Times(1)
		m.EXPECT().ShutdownVirtualMachine(gomock.Any(), vmObj("provision-v2-n1")).Return(nil).Times(1)
	})
	if err := f.o.provisionPass(t.Context(), f.svc); !errors.Is(err, boom) {
		t.Fatalf("provisionPass: %v, want the IP failure", err)
	}
	if !f.o.caches.ToDelete.Has("provision-v2-n1") {
		t.Errorf("failed provisioned VM not marked: %v", f.o.caches.ToDelete.List())
	}
}

// expectProvisionedStamps expects n reconfigures that stamp a provisioned VM as complete:
// its annotation unchanged but for the provisioned time, the clock's now.
func expectProvisionedStamps(t *testing.T, m *mock_vsphere.MockVSphereClient, n int) {
	t.Helper()
	m.EXPECT().ReconfigureVirtualMachine(gomock.Any(), gomock.Any(), gomock.Any()).DoAndReturn(
		func(_ context.Context, vm *object.VirtualMachine, spec types.VirtualMachineConfigSpec) error {
			a, ok := ParseAnnotation(spec.Annotation)
			if !ok || !a.Provisioning || !a.Provisioned.Equal(created) {
				t.Errorf("stamp of %s: annotation %s, want provisioning with provisioned = %s", vm.Reference().Value, spec.Annotation, created.Format(time.RFC3339))
			}
			if spec.NumCPUs != 0 || spec.MemoryMB != 0 || spec.DeviceChange != nil {
				t.Errorf("stamp of %s changes more than the annotation: %+v", vm.Reference().Value, spec)
			}
			return nil
		}).Times(n)
}

// The clones of one source within a minute share its prepared NIC; a source's NIC is
// prepared again once the minute has passed, and another source has its own.
func TestClonesOfOneSourceShareItsNICForAMinute(t *testing.T) {
	clones := &cloneRecorder{}
	f := newOrch(t, spawnConfig(), func(m *mock_vsphere.MockVSphereClient) {
		// 5 clones: debian12 ×3 (read once), ubuntu ×1 (its own read), debian12 after
		// the TTL (read again).
		expectClonesOf(m, 5, 3, clones)
	})
	now := created
	f.o.now = func() time.Time { return now }
	clone := func(name, source string) {
		t.Helper()
		if _, err := f.o.clone(t.Context(), cloneRequest{Name: name, Source: vmObj(source), SourceName: source}); err != nil {
			t.Fatalf("clone %s: %v", name, err)
		}
	}
	clone("a", "debian12")
	clone("b", "debian12")
	now = now.Add(sourceNICTTL - time.Second)
	clone("c", "debian12")
	clone("d", "ubuntu")
	now = now.Add(time.Second)
	clone("e", "debian12")
	for _, c := range clones.get() {
		nic := c.spec.Location.DeviceChange[0].GetVirtualDeviceConfigSpec().Device
		card := nic.(types.BaseVirtualEthernetCard).GetVirtualEthernetCard()
		backing, ok := card.Backing.(*types.VirtualEthernetCardNetworkBackingInfo)
		if _, vmxnet3 := nic.(*types.VirtualVmxnet3); !vmxnet3 || card.Key != 4000 || !ok || backing.DeviceName != "workers" {
			t.Errorf("clone %s: NIC %T key %d backing %#v, want the source's card 4000 as vmxnet3 on workers", c.name, nic, card.Key, card.Backing)
		}
	}
}
