package vspherehatchery

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/vmware/govmomi/guest"
	"github.com/vmware/govmomi/object"
	"github.com/vmware/govmomi/vim25/mo"
	"github.com/vmware/govmomi/vim25/types"
	"go.uber.org/mock/gomock"

	"github.com/hatchery-vsphere/hatchery-vsphere/internal/cds"
	"github.com/hatchery-vsphere/hatchery-vsphere/internal/config"
	"github.com/hatchery-vsphere/hatchery-vsphere/internal/hatchery"
	"github.com/hatchery-vsphere/hatchery-vsphere/mock_vsphere"
)

// fakeServices records what the provider asks of the framework.
type fakeServices struct {
	mu            sync.Mutex
	hasV1         bool
	registered    map[string]struct{}
	pool          []hatchery.PoolWorker
	models        map[string]cds.Model // by group/name
	cached        []cds.Model
	refreshed     []cds.Model
	infos         []string // "<level> <region> <job>: <message>"
	modelErrors   []string // "<group>/<name>: <message>"
	workerModelGo []string
	released      []string // "<job> <region>"
	awaits        map[string]bool
	asked         []string // jobs JobAwaitsWorker was asked about
	awaitsErr     error
	routines      map[string]bool // goroutine status by name
}

func (f *fakeServices) HatcheryName() string { return "h" }
func (f *fakeServices) HasV1() bool          { return f.hasV1 }
func (f *fakeServices) WorkerPool(_ context.Context, statuses ...string) ([]hatchery.PoolWorker, error) {
	var out []hatchery.PoolWorker
	for _, w := range f.pool {
		for _, s := range statuses {
			if w.Status == s {
				out = append(out, w)
			}
		}
	}
	return out, nil
}
func (f *fakeServices) RegisteredWorkerNames(context.Context) (map[string]struct{}, error) {
	return f.registered, nil
}
func (f *fakeServices) WorkerModel(_ context.Context, group, name string) (cds.Model, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.workerModelGo = append(f.workerModelGo, group+"/"+name)
	m, ok := f.models[group+"/"+name]
	if !ok {
		return cds.Model{}, errors.New("model not found")
	}
	return m, nil
}
func (f *fakeServices) CachedWorkerModels() []cds.Model { return f.cached }
func (f *fakeServices) RefreshWorkerModels(context.Context) ([]cds.Model, error) {
	return f.refreshed, nil
}
func (f *fakeServices) ReportModelSpawnError(_ context.Context, group, name, message string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.modelErrors = append(f.modelErrors, group+"/"+name+": "+message)
	return nil
}
func (f *fakeServices) SendJobInfo(_ context.Context, region, jobID, level, message string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.infos = append(f.infos, level+" "+region+" "+jobID+": "+message)
}

func (f *fakeServices) SetGoroutine(name string, running bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.routines == nil {
		f.routines = map[string]bool{}
	}
	f.routines[name] = running
}

// JobAwaitsWorker answers from awaits (by job ID); a job not listed still waits for its
// worker, as a job booked by the hatchery does.
func (f *fakeServices) JobAwaitsWorker(_ context.Context, jobID, _ string) (bool, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.asked = append(f.asked, jobID)
	if f.awaitsErr != nil {
		return false, f.awaitsErr
	}
	if v, ok := f.awaits[jobID]; ok {
		return v, nil
	}
	return true, nil
}

func (f *fakeServices) ReleaseJob(_ context.Context, jobID, region string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.released = append(f.released, jobID+" "+region)
	return nil
}

func (f *fakeServices) releasedJobs() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.released...)
}

// readyTick is a tick source that is always ready: retries happen at once.
func readyTick(string, time.Duration) (<-chan time.Time, func()) {
	c := make(chan time.Time)
	close(c)
	return c, func() {}
}

type orchFixture struct {
	o   *Orchestrator
	svc *fakeServices
	log *logRecorder
}

// newOrch builds an orchestrator on a mock whose expectations setup declares, with the
// framework services already given (as Run does).
func newOrch(t *testing.T, cfg config.VSphere, setup func(m *mock_vsphere.MockVSphereClient)) orchFixture {
	t.Helper()
	p, rec := newTestProvider(t, cfg, setup)
	svc := &fakeServices{registered: map[string]struct{}{}}
	var names atomic.Int32
	o := NewOrchestrator(p, OrchestratorOptions{
		Timings:       Timings{EnvProbe: 3 * time.Second, EnvProbeEvery: time.Second},
		Tick:          readyTick,
		MetricsPeriod: -1, // the metrics collection has its own tests

		NewName: func(prefix string) string {
			return fmt.Sprintf("%s-n%d", prefix, names.Add(1))
		},
	})
	o.setServices(svc)
	return orchFixture{o: o, svc: svc, log: rec}
}

func vmObj(name string) *object.VirtualMachine {
	return object.NewVirtualMachine(nil, types.ManagedObjectReference{Type: "VirtualMachine", Value: "vm-" + name})
}

// templateDevices is a source VM with one e1000 NIC on some old network.
func templateDevices() object.VirtualDeviceList {
	return object.VirtualDeviceList{
		&types.VirtualE1000{VirtualEthernetCard: types.VirtualEthernetCard{VirtualDevice: types.VirtualDevice{
			Key:           4000,
			ControllerKey: 100,
			Backing: &types.VirtualEthernetCardNetworkBackingInfo{
				VirtualDeviceDeviceBackingInfo: types.VirtualDeviceDeviceBackingInfo{DeviceName: "old-net"},
			},
		}}},
	}
}

var (
	poolRef   = types.ManagedObjectReference{Type: "ResourcePool", Value: "resgroup-9"}
	dsRef     = types.ManagedObjectReference{Type: "Datastore", Value: "datastore-7"}
	folderObj = object.NewFolder(nil, types.ManagedObjectReference{Type: "Folder", Value: "group-v3"})
)

// cloneCall is what CloneVirtualMachine received.
type cloneCall struct {
	source string
	name   string
	spec   *types.VirtualMachineCloneSpec
}

type cloneRecorder struct {
	mu    sync.Mutex
	calls []cloneCall
}

func (r *cloneRecorder) get() []cloneCall {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]cloneCall(nil), r.calls...)
}

// expectClones expects n clones of n different source VMs (each building its spec from the
// source's devices, the network, the pool and the datastore) and records them; the new VM
// of a clone named X is vmObj(X).
func expectClones(m *mock_vsphere.MockVSphereClient, n int, r *cloneRecorder) {
	expectClonesOf(m, n, n, r)
}

// expectClonesOf expects n clones of `sources` different source VMs: the NIC of a source
// is read and prepared once.
func expectClonesOf(m *mock_vsphere.MockVSphereClient, n, sources int, r *cloneRecorder) {
	m.EXPECT().LoadVirtualMachineDevices(gomock.Any(), gomock.Any()).DoAndReturn(
		func(context.Context, *object.VirtualMachine) (object.VirtualDeviceList, error) {
			return templateDevices(), nil // a fresh list: the spec builder edits the card
		}).Times(sources)
	reads := sources
	m.EXPECT().LoadNetwork(gomock.Any(), "workers").Return(object.NewNetwork(nil, types.ManagedObjectReference{Type: "Network", Value: "network-5"}), nil).Times(reads)
	m.EXPECT().SetupEthernetCard(gomock.Any(), gomock.Any(), "vmxnet3", gomock.Any()).DoAndReturn(
		func(_ context.Context, card *types.VirtualEthernetCard, _ string, _ object.NetworkReference) error {
			card.Backing = &types.VirtualEthernetCardNetworkBackingInfo{
				VirtualDeviceDeviceBackingInfo: types.VirtualDeviceDeviceBackingInfo{DeviceName: "workers"},
			}
			return nil
		}).Times(reads)
	m.EXPECT().LoadResourcePool(gomock.Any()).Return(object.NewResourcePool(nil, poolRef), nil).Times(n)
	m.EXPECT().LoadDatastore(gomock.Any(), "ssd").Return(object.NewDatastore(nil, dsRef), nil).Times(n)
	m.EXPECT().LoadFolder(gomock.Any()).Return(folderObj, nil).Times(n)
	m.EXPECT().CloneVirtualMachine(gomock.Any(), gomock.Any(), folderObj, gomock.Any(), gomock.Any()).DoAndReturn(
		func(_ context.Context, src *object.VirtualMachine, _ *object.Folder, name string, spec *types.VirtualMachineCloneSpec) (*types.ManagedObjectReference, error) {
			r.mu.Lock()
			r.calls = append(r.calls, cloneCall{source: src.Reference().Value, name: name, spec: spec})
			r.mu.Unlock()
			ref := vmObj(name).Reference()
			return &ref, nil
		}).Times(n)
	m.EXPECT().NewVirtualMachine(gomock.Any(), gomock.Any(), gomock.Any(), gomock.Any()).DoAndReturn(
		func(_ context.Context, _ *types.VirtualMachineCloneSpec, _ *types.ManagedObjectReference, name string) (*object.VirtualMachine, error) {
			return vmObj(name), nil
		}).Times(n)
}

// programCall is one StartProgramInGuest.
type programCall struct {
	vm, user, password, program, args string
	env                               []string
}

type programRecorder struct {
	mu    sync.Mutex
	calls []programCall
	// fail makes the calls whose program matches fail.
	fail func(c programCall) error
}

func (r *programRecorder) get() []programCall {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]programCall(nil), r.calls...)
}

// expectGuest expects, per VM, the readiness waits and the guest programs: ready VMs
// (guest operations, IP), one process manager each, and programs programs in all.
func expectGuest(m *mock_vsphere.MockVSphereClient, vms, programs int, r *programRecorder) {
	m.EXPECT().WaitForGuestOperationsReady(gomock.Any(), gomock.Any()).Return(nil).Times(vms)
	m.EXPECT().WaitForVirtualMachineIP(gomock.Any(), gomock.Any(), gomock.Any(), gomock.Any()).Return(nil).Times(vms)
	m.EXPECT().ProcessManager(gomock.Any(), gomock.Any()).Return(&guest.ProcessManager{}, nil).Times(vms)
	m.EXPECT().StartProgramInGuest(gomock.Any(), gomock.Any(), gomock.Any()).DoAndReturn(
		func(_ context.Context, _ *guest.ProcessManager, req *types.StartProgramInGuest) (*types.StartProgramInGuestResponse, error) {
			auth := req.Auth.(*types.NamePasswordAuthentication)
			spec := req.Spec.(*types.GuestProgramSpec)
			c := programCall{vm: req.Vm.Value, user: auth.Username, password: auth.Password, program: spec.ProgramPath, args: spec.Arguments, env: spec.EnvVariables}
			r.mu.Lock()
			r.calls = append(r.calls, c)
			fail := r.fail
			r.mu.Unlock()
			if fail != nil {
				if err := fail(c); err != nil {
					return nil, err
				}
			}
			return &types.StartProgramInGuestResponse{Returnval: 42}, nil
		}).Times(programs)
}

// spawnConfig is a hatchery "h" with flavors, a network, a datastore, a vmxnet3 card and
// guest credentials for the v2 image debian12.
func spawnConfig() config.VSphere {
	cfg := testConfig()
	cfg.NetworkString = "workers"
	cfg.DatastoreString = "ssd"
	cfg.CardName = "vmxnet3"
	cfg.SubnetMask = "255.255.255.0"
	cfg.GuestCredentials = []config.GuestCredential{{ModelVMWare: "debian12", Username: "cds", Password: "s3cret"}}
	return cfg
}

func v2Args(model *hatchery.WorkerStarterWorkerModel) hatchery.SpawnArguments {
	return hatchery.SpawnArguments{
		WorkerName:   "brave-hopper",
		Model:        model,
		JobID:        jobUUID,
		Region:       "eu",
		LaunchScript: "#!/bin/sh\nworker",
		Env:          []string{"CDS_CONFIG=Zm9v"},
	}
}

func TestSpawnV2FreshCloneBuildsTheCloneSpec(t *testing.T) {
	cfg := spawnConfig()
	cfg.IPRange = "10.0.0.10/31"
	cfg.Gateway = "10.0.0.1"
	cfg.DNS = "10.0.0.53"
	clones, programs := &cloneRecorder{}, &programRecorder{}
	var waitedIP string
	f := newOrch(t, cfg, func(m *mock_vsphere.MockVSphereClient) {
		listing(m, 1, []mo.VirtualMachine{
			moVM("debian12", nil, true, off, 2, 4096),
			moVM("mail", nil, false, on, 1, 1024, "10.0.0.10"), // holds the first address
		}, nil)
		m.EXPECT().LoadVirtualMachine(gomock.Any(), "debian12").Return(vmObj("debian12"), nil).Times(1)
		expectClones(m, 1, clones)
		expectGuest(m, 0, 2, programs)
		m.EXPECT().WaitForGuestOperationsReady(gomock.Any(), gomock.Any()).Return(nil).Times(1)
		m.EXPECT().WaitForVirtualMachineIP(gomock.Any(), gomock.Any(), gomock.Any(), "brave-hopper").DoAndReturn(
			func(_ context.Context, _ *object.VirtualMachine, ip *string, _ string) error {
				waitedIP = *ip
				return nil
			}).Times(1)
		m.EXPECT().ProcessManager(gomock.Any(), gomock.Any()).Return(&guest.ProcessManager{}, nil).Times(1)
	})
	model := v2Model()
	model.Flavor = "LARGE" // flavor names are case-insensitive

	if err := f.o.SpawnWorker(t.Context(), v2Args(model)); err != nil {
		t.Fatalf("SpawnWorker: %v", err)
	}

	calls := clones.get()
	if len(calls) != 1 || calls[0].name != "brave-hopper" || calls[0].source != "vm-debian12" {
		t.Fatalf("clones = %+v, want brave-hopper from debian12", calls)
	}
	spec := calls[0].spec
	nic := spec.Location.DeviceChange[0].(*types.VirtualDeviceConfigSpec)
	card, ok := nic.Device.(*types.VirtualVmxnet3)
	if !ok || nic.Operation != types.VirtualDeviceConfigSpecOperationEdit {
		t.Fatalf("NIC change = %s %T, want an edit of a vmxnet3 card", nic.Operation, nic.Device)
	}
	if card.Key != 4000 || card.Backing.(*types.VirtualEthernetCardNetworkBackingInfo).DeviceName != "workers" {
		t.Errorf("NIC key %d backing %+v, want key 4000 on network workers", card.Key, card.Backing)
	}
	if *spec.Location.Pool != poolRef || *spec.Location.Datastore != dsRef {
		t.Errorf("location pool %v datastore %v", spec.Location.Pool, spec.Location.Datastore)
	}
	if spec.Location.DiskMoveType != "moveChildMostDiskBacking" {
		t.Errorf("disk move type = %q", spec.Location.DiskMoveType)
	}
	if !spec.PowerOn || spec.Template {
		t.Errorf("power on %v template %v, want a powered-on VM", spec.PowerOn, spec.Template)
	}
	if spec.Config.NumCPUs != 8 || spec.Config.MemoryMB != 16384 {
		t.Errorf("flavor: %d vCPUs %d MB, want large 8/16384", spec.Config.NumCPUs, spec.Config.MemoryMB)
	}
	if spec.Config.Tools == nil || !*spec.Config.Tools.AfterPowerOn {
		t.Errorf("tools after power on not set")
	}
	prep := spec.Customization.Identity.(*types.CustomizationLinuxPrep)
	if prep.HostName.(*types.CustomizationFixedName).Name != "brave-hopper" {
		t.Errorf("hostname = %+v", prep.HostName)
	}
	ipSettings := spec.Customization.NicSettingMap[0].Adapter
	if ip := ipSettings.Ip.(*types.CustomizationFixedIp).IpAddress; ip != "10.0.0.11" {
		t.Errorf("fixed IP = %s, want the first free address 10.0.0.11", ip)
	}
	if ipSettings.SubnetMask != "255.255.255.0" || len(ipSettings.Gateway) != 1 || ipSettings.Gateway[0] != "10.0.0.1" {
		t.Errorf("mask %q gateway %v", ipSettings.SubnetMask, ipSettings.Gateway)
	}
	if dns := spec.Customization.GlobalIPSettings.DnsServerList; len(dns) != 1 || dns[0] != "10.0.0.53" {
		t.Errorf("DNS = %v", dns)
	}
	var a map[string]any
	if err := json.Unmarshal([]byte(spec.Config.Annotation), &a); err != nil {
		t.Fatalf("annotation %q: %v", spec.Config.Annotation, err)
	}
	want := map[string]any{
		"hatchery_name": "h", "worker_name": "brave-hopper", "worker_model_path": "deb",
		"vmware_model_path": "debian12", "created": "2025-01-10T08:00:00Z", "job_id": jobUUID,
		"ip_address": "10.0.0.11",
		"job_region": "eu", // ours, to release the v2 job in its region
	}
	if len(a) != len(want) {
		t.Errorf("annotation = %s, want exactly the keys %v", spec.Config.Annotation, want)
	}
	for k, v := range want {
		if a[k] != v {
			t.Errorf("annotation %s = %v, want %v", k, a[k], v)
		}
	}
	if waitedIP != "10.0.0.11" {
		t.Errorf("waited for IP %q, want the fixed 10.0.0.11", waitedIP)
	}

	progs := programs.get()
	if progs[0].program != "env" || len(progs[0].env) != 0 {
		t.Errorf("first program = %+v, want the env probe", progs[0])
	}
	launch := progs[1]
	if launch.program != "/bin/echo" || launch.args != "-n ;#!/bin/sh\nworker" || strings.Join(launch.env, ",") != "CDS_CONFIG=Zm9v" {
		t.Errorf("launch = %+v", launch)
	}
	if launch.user != "cds" || launch.password != "s3cret" || launch.vm != "vm-brave-hopper" {
		t.Errorf("launch as %s/%s in %s", launch.user, launch.password, launch.vm)
	}
	if got := strings.Join(f.svc.infos, "\n"); got != `info eu `+jobUUID+`: Worker "brave-hopper" will use flavor "large" (8 vCPUs, 16384 MB RAM)` {
		t.Errorf("job infos = %q", got)
	}
	if f.o.caches.SpawnInProgress.Has(jobUUID) {
		t.Errorf("job still in the spawn-in-progress set")
	}
}

func TestSpawnWithoutIPRangeUsesDHCPAndWaitsForAnyIPv4(t *testing.T) {
	clones, programs := &cloneRecorder{}, &programRecorder{}
	f := newOrch(t, spawnConfig(), func(m *mock_vsphere.MockVSphereClient) {
		listing(m, 1, nil, nil)
		m.EXPECT().LoadVirtualMachine(gomock.Any(), "debian12").Return(vmObj("debian12"), nil).Times(1)
		expectClones(m, 1, clones)
		m.EXPECT().WaitForGuestOperationsReady(gomock.Any(), gomock.Any()).Return(nil).Times(1)
		m.EXPECT().WaitForVirtualMachineIP(gomock.Any(), gomock.Any(), nil, "brave-hopper").Return(nil).Times(1)
		m.EXPECT().ProcessManager(gomock.Any(), gomock.Any()).Return(&guest.ProcessManager{}, nil).Times(1)
		expectGuest(m, 0, 2, programs)
	})
	if err := f.o.SpawnWorker(t.Context(), v2Args(v2Model())); err != nil {
		t.Fatalf("SpawnWorker: %v", err)
	}
	spec := clones.get()[0].spec
	if _, dhcp := spec.Customization.NicSettingMap[0].Adapter.Ip.(*types.CustomizationDhcpIpGenerator); !dhcp {
		t.Errorf("NIC IP = %T, want DHCP", spec.Customization.NicSettingMap[0].Adapter.Ip)
	}
	if spec.Config.NumCPUs != 0 || spec.Config.MemoryMB != 0 {
		t.Errorf("no flavor asked, yet the clone is sized %d/%d", spec.Config.NumCPUs, spec.Config.MemoryMB)
	}
	if got := strings.Join(f.svc.infos, "\n"); !strings.HasSuffix(got, `Worker "brave-hopper" will use template resources (no flavor)`) {
		t.Errorf("job infos = %q", got)
	}
}

func TestSpawnV2ReusesProvisionedVMWithFlavor(t *testing.T) {
	mine := func(a Annotation) *Annotation { a.HatcheryName = "h"; a.Created = created; return &a }
	programs := &programRecorder{}
	var reconfigured types.VirtualMachineConfigSpec
	var waitedIP string
	f := newOrch(t, spawnConfig(), func(m *mock_vsphere.MockVSphereClient) {
		listing(m, 1, []mo.VirtualMachine{
			moVM("debian12", nil, true, off, 2, 4096),
			moVM("provision-v2-fresh", mine(Annotation{Provisioning: true, VMwareModelPath: "debian12"}), false, off, 2, 4096),
			moVM("provision-v2-ok", mine(Annotation{WorkerName: "provision-v2-ok", Provisioning: true, VMwareModelPath: "debian12", IPAddress: "10.0.0.12", Provisioned: created}), false, off, 2, 4096),
		}, nil)
		m.EXPECT().LoadVirtualMachine(gomock.Any(), "debian12").Return(vmObj("debian12"), nil).Times(1)
		// The first candidate has no "provisioned" stamp (made by the original, or its stamp
		// failed): its events decide, and it has never been powered off, so its
		// provisioning is not over.
		m.EXPECT().LoadVirtualMachine(gomock.Any(), "provision-v2-fresh").Return(vmObj("provision-v2-fresh"), nil).Times(1)
		m.EXPECT().LoadVirtualMachineEvents(gomock.Any(), vmObj("provision-v2-fresh"), "VmPoweredOffEvent").Return(nil, nil).Times(1)
		// The second is stamped: reused without reading its events (gomock fails any other
		// call).
		m.EXPECT().LoadVirtualMachine(gomock.Any(), "provision-v2-ok").Return(vmObj("provision-v2-ok"), nil).Times(1)
		gomock.InOrder(
			m.EXPECT().ReconfigureVirtualMachine(gomock.Any(), vmObj("provision-v2-ok"), gomock.Any()).DoAndReturn(
				func(_ context.Context, _ *object.VirtualMachine, spec types.VirtualMachineConfigSpec) error {
					reconfigured = spec
					return nil
				}).Times(1),
			m.EXPECT().RenameVirtualMachine(gomock.Any(), vmObj("provision-v2-ok"), "brave-hopper").Return(nil).Times(1),
			m.EXPECT().StartVirtualMachine(gomock.Any(), vmObj("provision-v2-ok")).Return(nil).Times(1),
		)
		m.EXPECT().WaitForGuestOperationsReady(gomock.Any(), gomock.Any()).Return(nil).Times(1)
		m.EXPECT().WaitForVirtualMachineIP(gomock.Any(), gomock.Any(), gomock.Any(), "brave-hopper").DoAndReturn(
			func(_ context.Context, _ *object.VirtualMachine, ip *string, _ string) error {
				waitedIP = *ip
				return nil
			}).Times(1)
		m.EXPECT().ProcessManager(gomock.Any(), gomock.Any()).Return(&guest.ProcessManager{}, nil).Times(1)
		expectGuest(m, 0, 2, programs)
	})
	model := v2Model()
	model.Flavor = "medium"
	if err := f.o.SpawnWorker(t.Context(), v2Args(model)); err != nil {
		t.Fatalf("SpawnWorker: %v", err)
	}
	if reconfigured.NumCPUs != 4 || reconfigured.MemoryMB != 8192 {
		t.Errorf("reconfigured to %d/%d, want medium 4/8192", reconfigured.NumCPUs, reconfigured.MemoryMB)
	}
	a, ok := ParseAnnotation(reconfigured.Annotation)
	if !ok || !a.Provisioning || a.WorkerName != "provision-v2-ok" || a.JobID != jobUUID || a.IPAddress != "10.0.0.12" || !a.Provisioned.Equal(created) {
		t.Errorf("annotation = %q, want the provisioning one plus the job ID", reconfigured.Annotation)
	}
	// The claim is stamped in the reconfigure that precedes the rename and the power-on
	// (InOrder above): a restart finds it on the VM.
	if !a.Claimed.Equal(cleanupNow) || a.ClaimedBy != "brave-hopper" || a.JobRegion != "eu" {
		t.Errorf("claim = %v by %q region %q, want now by brave-hopper in eu", a.Claimed, a.ClaimedBy, a.JobRegion)
	}
	if f.o.jobs.len() != 1 {
		t.Errorf("the worker VM of the job is not watched")
	}
	if waitedIP != "10.0.0.12" {
		t.Errorf("waited for IP %q, want the provisioned VM's 10.0.0.12", waitedIP)
	}
	if progs := programs.get(); progs[1].vm != "vm-provision-v2-ok" || progs[1].program != "/bin/echo" {
		t.Errorf("launch = %+v", progs[1])
	}
	if f.o.caches.ProvisioningUsing.Len() != 0 {
		t.Errorf("claim not released: %v", f.o.caches.ProvisioningUsing.List())
	}
}

func TestSpawnV1BuildsTemplateThenClonesFromTheNewTemplate(t *testing.T) {
	mine := func(a Annotation) *Annotation { a.HatcheryName = "h"; a.Created = created; return &a }
	clones, programs := &cloneRecorder{}, &programRecorder{}
	model := &hatchery.WorkerStarterWorkerModel{
		ModelV1: &cds.Model{
			Name: "mymodel", Type: cds.ModelTypeVSphere, Group: cds.Group{Name: "grp"},
			UserLastModified: time.Unix(1717000500, 0),
			ModelVirtualMachine: cds.ModelVirtualMachine{
				Image: "debian12", Cmd: "worker", PostCmd: "sudo shutdown -h now", User: "admin", Password: "pw",
			},
		},
		Cmd: "worker",
	}
	// The template on vCenter was built from an older version of the model.
	fleet := []mo.VirtualMachine{
		moVM("debian12", nil, true, off, 2, 4096),
		moVM("mymodel", mine(Annotation{Model: true, WorkerModelPath: "grp/mymodel", WorkerModelLastModified: "1717000000"}), true, off, 2, 4096),
	}
	f := newOrch(t, spawnConfig(), func(m *mock_vsphere.MockVSphereClient) {
		listing(m, 2, fleet, nil)
		m.EXPECT().LoadVirtualMachine(gomock.Any(), "debian12").Return(vmObj("debian12"), nil).Times(1)
		expectClones(m, 2, clones)
		expectGuest(m, 2, 4, programs)
		gomock.InOrder(
			m.EXPECT().WaitForVirtualMachineShutdown(gomock.Any(), vmObj("mymodel-tmp")).Return(nil).Times(1),
			m.EXPECT().LoadVirtualMachine(gomock.Any(), "mymodel").Return(vmObj("mymodel"), nil).Times(1),
			m.EXPECT().DestroyVirtualMachine(gomock.Any(), vmObj("mymodel")).Return(nil).Times(1),
			m.EXPECT().RenameVirtualMachine(gomock.Any(), vmObj("mymodel-tmp"), "mymodel").Return(nil).Times(1),
			m.EXPECT().MarkVirtualMachineAsTemplate(gomock.Any(), vmObj("mymodel-tmp")).Return(nil).Times(1),
		)
	})
	args := hatchery.SpawnArguments{
		WorkerName: "register-calm-turing", Model: model, JobID: "0", RegisterOnly: true,
		LaunchScript: "worker register", Env: []string{"CDS_CONFIG=eA=="},
	}
	if err := f.o.SpawnWorker(t.Context(), args); err != nil {
		t.Fatalf("SpawnWorker: %v", err)
	}
	calls := clones.get()
	if len(calls) != 2 {
		t.Fatalf("%d clones, want 2", len(calls))
	}
	if calls[0].name != "mymodel-tmp" || calls[0].source != "vm-debian12" {
		t.Errorf("first clone %s from %s, want mymodel-tmp from the image", calls[0].name, calls[0].source)
	}
	tmpl, _ := ParseAnnotation(calls[0].spec.Config.Annotation)
	if !tmpl.Model || tmpl.WorkerModelPath != "grp/mymodel" || tmpl.WorkerModelLastModified != "1717000500" || tmpl.HatcheryName != "h" {
		t.Errorf("template annotation = %s", calls[0].spec.Config.Annotation)
	}
	// Fix of Q8: the registering worker comes from the template just built (the renamed
	// mymodel-tmp VM), not from the image.
	if calls[1].name != "register-calm-turing" || calls[1].source != "vm-mymodel-tmp" {
		t.Errorf("second clone %s from %s, want register-calm-turing from the new template", calls[1].name, calls[1].source)
	}
	reg, _ := ParseAnnotation(calls[1].spec.Config.Annotation)
	if !reg.RegisterOnly || reg.VMwareModelPath != "mymodel" || reg.WorkerModelPath != "grp/mymodel" || reg.JobID != "0" {
		t.Errorf("registration annotation = %s", calls[1].spec.Config.Annotation)
	}
	progs := programs.get()
	post := progs[1]
	if post.vm != "vm-mymodel-tmp" || post.program != "/bin/echo" || post.args != "-n ;sudo shutdown -h now" || len(post.env) != 0 {
		t.Errorf("template post-command = %+v, want only the post-command, no environment", post)
	}
	// No guestCredentials entry for this model: the model's own user is used (fix of Q13).
	if post.user != "admin" || post.password != "pw" {
		t.Errorf("template built as %s/%s, want the model's admin/pw", post.user, post.password)
	}
	if launch := progs[3]; launch.vm != "vm-register-calm-turing" || launch.args != "-n ;worker register" {
		t.Errorf("registration launch = %+v", launch)
	}
}

func TestSpawnFailureAfterTheVMExistsPowersOffAndMarksForDeletion(t *testing.T) {
	boom := errors.New("boom")
	tests := []struct {
		name  string
		setup func(m *mock_vsphere.MockVSphereClient, programs *programRecorder)
	}{
		{"guest operations never ready", func(m *mock_vsphere.MockVSphereClient, _ *programRecorder) {
			m.EXPECT().WaitForGuestOperationsReady(gomock.Any(), gomock.Any()).Return(boom).Times(1)
		}},
		{"no IP", func(m *mock_vsphere.MockVSphereClient, _ *programRecorder) {
			m.EXPECT().WaitForGuestOperationsReady(gomock.Any(), gomock.Any()).Return(nil).Times(1)
			m.EXPECT().WaitForVirtualMachineIP(gomock.Any(), gomock.Any(), gomock.Any(), gomock.Any()).Return(boom).Times(1)
		}},
		{"env probe never succeeds", func(m *mock_vsphere.MockVSphereClient, programs *programRecorder) {
			programs.fail = func(programCall) error { return boom }
			m.EXPECT().WaitForGuestOperationsReady(gomock.Any(), gomock.Any()).Return(nil).Times(1)
			m.EXPECT().WaitForVirtualMachineIP(gomock.Any(), gomock.Any(), gomock.Any(), gomock.Any()).Return(nil).Times(1)
			m.EXPECT().ProcessManager(gomock.Any(), gomock.Any()).Return(&guest.ProcessManager{}, nil).Times(1)
			expectGuest(m, 0, 3, programs) // 1 min every 1 s, scaled down to 3 attempts
		}},
		{"launch fails", func(m *mock_vsphere.MockVSphereClient, programs *programRecorder) {
			programs.fail = func(c programCall) error {
				if c.program == "/bin/echo" {
					return boom
				}
				return nil
			}
			expectGuest(m, 1, 2, programs)
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			programs := &programRecorder{}
			f := newOrch(t, spawnConfig(), func(m *mock_vsphere.MockVSphereClient) {
				listing(m, 1, nil, nil)
				m.EXPECT().LoadVirtualMachine(gomock.Any(), "debian12").Return(vmObj("debian12"), nil).Times(1)
				expectClones(m, 1, &cloneRecorder{})
				tc.setup(m, programs)
				m.EXPECT().ShutdownVirtualMachine(gomock.Any(), vmObj("brave-hopper")).Return(nil).Times(1)
			})
			err := f.o.SpawnWorker(t.Context(), v2Args(v2Model()))
			if !errors.Is(err, boom) {
				t.Fatalf("err = %v, want the failure", err)
			}
			if !f.o.caches.ToDelete.Has("brave-hopper") {
				t.Errorf("VM not marked for deletion")
			}
		})
	}
}

func TestSpawnReuseFailureAtPowerOnMarksTheRenamedVM(t *testing.T) {
	mine := func(a Annotation) *Annotation { a.HatcheryName = "h"; a.Created = created; return &a }
	boom := errors.New("no host can power it on")
	f := newOrch(t, spawnConfig(), func(m *mock_vsphere.MockVSphereClient) {
		listing(m, 1, []mo.VirtualMachine{
			moVM("provision-v2-ok", mine(Annotation{Provisioning: true, VMwareModelPath: "debian12"}), false, off, 2, 4096),
		}, nil)
		m.EXPECT().LoadVirtualMachine(gomock.Any(), "debian12").Return(vmObj("debian12"), nil).Times(1)
		m.EXPECT().LoadVirtualMachine(gomock.Any(), "provision-v2-ok").Return(vmObj("provision-v2-ok"), nil).Times(1)
		m.EXPECT().LoadVirtualMachineEvents(gomock.Any(), gomock.Any(), "VmPoweredOffEvent").Return([]types.BaseEvent{&types.VmPoweredOffEvent{}}, nil).Times(1)
		m.EXPECT().ReconfigureVirtualMachine(gomock.Any(), gomock.Any(), gomock.Any()).Return(nil).Times(1)
		m.EXPECT().RenameVirtualMachine(gomock.Any(), gomock.Any(), "brave-hopper").Return(nil).Times(1)
		m.EXPECT().StartVirtualMachine(gomock.Any(), gomock.Any()).Return(boom).Times(1)
		m.EXPECT().ShutdownVirtualMachine(gomock.Any(), vmObj("provision-v2-ok")).Return(nil).Times(1)
	})
	err := f.o.SpawnWorker(t.Context(), v2Args(v2Model()))
	if !errors.Is(err, boom) {
		t.Fatalf("err = %v, want the power-on failure", err)
	}
	if !f.o.caches.ToDelete.Has("brave-hopper") || f.o.caches.ToDelete.Has("provision-v2-ok") {
		t.Errorf("marked for deletion: %v, want the VM under its new name", f.o.caches.ToDelete.List())
	}
}

func TestSpawnWithNoFreeIPFailsWithoutCloning(t *testing.T) {
	cfg := spawnConfig()
	cfg.IPRange = "10.0.0.10/32"
	f := newOrch(t, cfg, func(m *mock_vsphere.MockVSphereClient) {
		listing(m, 1, []mo.VirtualMachine{moVM("mail", nil, false, on, 1, 1024, "10.0.0.10")}, nil)
		m.EXPECT().LoadVirtualMachine(gomock.Any(), "debian12").Return(vmObj("debian12"), nil).Times(1)
		// No clone expected: gomock fails the test on any other call.
	})
	err := f.o.SpawnWorker(t.Context(), v2Args(v2Model()))
	if !errors.Is(err, ErrNoFreeIP) {
		t.Fatalf("err = %v, want ErrNoFreeIP so that the job is released (fix of Q16)", err)
	}
}

func TestSpawnRefusals(t *testing.T) {
	tests := []struct {
		name string
		args func() hatchery.SpawnArguments
		want string
	}{
		{"job 0 without register-only", func() hatchery.SpawnArguments {
			a := v2Args(v2Model())
			a.JobID = "0"
			return a
		}, "job ID 0"},
		{"unknown flavor", func() hatchery.SpawnArguments {
			m := v2Model()
			m.Flavor = "huge"
			return v2Args(m)
		}, `flavor "huge" not found`},
		{"v2 model registration", func() hatchery.SpawnArguments {
			a := v2Args(v2Model())
			a.JobID, a.RegisterOnly = "0", true
			return a
		}, "cannot be registered"},
		{"no guest credentials", func() hatchery.SpawnArguments {
			m := v2Model()
			m.VSphereSpec.Image = "ubuntu"
			return v2Args(m)
		}, "guest credentials not configured"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f := newOrch(t, spawnConfig(), nil) // no vCenter call at all
			err := f.o.SpawnWorker(t.Context(), tc.args())
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want %q", err, tc.want)
			}
		})
	}
}

func TestSpawnRefusesASecondSpawnForTheSameJob(t *testing.T) {
	f := newOrch(t, spawnConfig(), nil)
	f.o.caches.SpawnInProgress.Add(jobUUID)
	err := f.o.SpawnWorker(t.Context(), v2Args(v2Model()))
	if err == nil || !strings.Contains(err.Error(), "already being spawned") {
		t.Fatalf("err = %v", err)
	}
	if !f.o.caches.SpawnInProgress.Has(jobUUID) {
		t.Errorf("the other spawn's claim was dropped")
	}
}
