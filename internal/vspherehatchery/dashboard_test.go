package vspherehatchery

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
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
	"github.com/hatchery-vsphere/hatchery-vsphere/mock_vsphere"
)

func dashboardConfig() config.VSphere {
	cfg := testConfig() // hatchery "h", flavors small/medium/large
	cfg.CommonConfiguration.Provision.MaxWorker = 10
	cfg.MaxCPUs = 16
	cfg.IPRange = "10.0.0.0/29"
	cfg.WorkerProvisioning = []config.WorkerProvisioning{
		{ModelVMWare: "debian12", Number: 3},
		{ModelPath: "grp/model", Number: 1},
	}
	return cfg
}

// dashboardFleet has a VM in every state, next to VMs the dashboard must not show.
func dashboardFleet() []mo.VirtualMachine {
	mine := func(a Annotation, age time.Duration) *Annotation {
		a.HatcheryName = "h"
		a.Created = created.Add(-age)
		return &a
	}
	v2 := Annotation{Provisioning: true, VMwareModelPath: "debian12"}
	return []mo.VirtualMachine{
		moVM("debian12", nil, true, off, 2, 4096),                     // plain template: not ours
		moVM("mail-server", nil, false, on, 8, 32768, "192.168.0.10"), // not CDS
		moVM("their-worker", &Annotation{HatcheryName: "other", Created: created}, false, on, 2, 4096),
		moVM("grp-model", mine(Annotation{Model: true, WorkerModelPath: "grp/model"}, 48*time.Hour), true, off, 2, 4096),
		moVM("provision-v2-aaa", mine(v2, 20*time.Second), false, off, 2, 4096), // clone in flight (pending cache)
		moVM("provision-v2-bbb", mine(v2, time.Minute), false, on, 2, 4096),     // waiting for its IP
		moVM("provision-v2-ccc", mine(v2, time.Hour), false, off, 2, 4096),
		moVM("provision-v2-ddd", mine(v2, 2*time.Hour), false, off, 2, 4096), // claimed by a spawn
		moVM("provision-v1-eee", mine(Annotation{Provisioning: true, WorkerModelPath: "grp/model"}, time.Hour), false, off, 2, 4096),
		moVM("worker-run", mine(Annotation{WorkerModelPath: "grp/model", JobID: "41", IPAddress: "10.0.0.5"}, 150*time.Second), false, on, 4, 8192, "10.0.0.5"),
		moVM("worker-dhcp", mine(Annotation{VMwareModelPath: "debian12", JobID: "42"}, time.Minute), false, on, 2, 4096, "fe80::1", "172.16.0.9"),
		moVM("worker-done", mine(Annotation{VMwareModelPath: "debian12", JobID: "43"}, time.Hour), false, off, 2, 4096),
		moVM("worker-bad", mine(Annotation{VMwareModelPath: "debian12", JobID: "44", IPAddress: "10.0.0.6"}, 5*time.Minute), false, on, 8, 16384),
	}
}

func dashboardPool() types.ResourcePoolRuntimeInfo {
	var rt types.ResourcePoolRuntimeInfo
	rt.Cpu.MaxUsage, rt.Cpu.UnreservedForVm = 10000, 7500
	rt.Memory.MaxUsage, rt.Memory.UnreservedForVm = 64<<30, 48<<30
	return rt
}

func newDashboardProvider(t *testing.T, cfg config.VSphere, setup func(m *mock_vsphere.MockVSphereClient)) (*Provider, *logRecorder) {
	t.Helper()
	m := mock_vsphere.NewMockVSphereClient(gomock.NewController(t))
	setup(m)
	rec := &logRecorder{}
	p, err := New(cfg, m, rec.logger(), func() time.Time { return created })
	if err != nil {
		t.Fatal(err)
	}
	p.caches.ProvisioningPending.Add("provision-v2-aaa")
	p.caches.ProvisioningUsing.Add("provision-v2-ddd")
	p.caches.ToDelete.Add("worker-bad")
	p.recordVMError("worker-bad", errors.New("wait for guest of \"worker-bad\": context deadline exceeded"))
	return p, rec
}

func TestDashboardShowsEveryStateFromOneListing(t *testing.T) {
	p, _ := newDashboardProvider(t, dashboardConfig(), func(m *mock_vsphere.MockVSphereClient) {
		listing(m, 1, dashboardFleet(), nil)
		m.EXPECT().ResourcePoolRuntime(gomock.Any()).Return(dashboardPool(), nil).Times(1)
	})
	d, err := p.Dashboard(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if d.Hatchery != "h" || !d.Now.Equal(created) {
		t.Errorf("identity = %q %v", d.Hatchery, d.Now)
	}

	want := map[string]hatchery.VMRow{
		"grp-model":        {State: hatchery.VMStateTemplate, Model: "grp/model", Flavor: "small", AgeSeconds: 48 * 3600},
		"provision-v2-aaa": {State: hatchery.VMStateProvisioning, Model: "debian12", Flavor: "small", AgeSeconds: 20},
		"provision-v2-bbb": {State: hatchery.VMStateProvisioning, Model: "debian12", Flavor: "small", AgeSeconds: 60},
		"provision-v2-ccc": {State: hatchery.VMStateIdle, Model: "debian12", Flavor: "small", AgeSeconds: 3600},
		"provision-v2-ddd": {State: hatchery.VMStateClaimed, Model: "debian12", Flavor: "small", AgeSeconds: 7200},
		"provision-v1-eee": {State: hatchery.VMStateIdle, Model: "grp/model", Flavor: "small", AgeSeconds: 3600},
		"worker-run":       {State: hatchery.VMStateRunning, Model: "grp/model", Flavor: "medium", JobID: "41", IP: "10.0.0.5", AgeSeconds: 150},
		"worker-dhcp":      {State: hatchery.VMStateRunning, Model: "debian12", Flavor: "small", JobID: "42", IP: "172.16.0.9", AgeSeconds: 60},
		"worker-done":      {State: hatchery.VMStateFinished, Model: "debian12", Flavor: "small", JobID: "43", AgeSeconds: 3600},
		"worker-bad": {State: hatchery.VMStateMarkedForDeletion, Model: "debian12", Flavor: "large", JobID: "44", IP: "10.0.0.6", AgeSeconds: 300,
			LastError: `wait for guest of "worker-bad": context deadline exceeded`},
	}
	if len(d.VMs) != len(want) {
		var names []string
		for _, r := range d.VMs {
			names = append(names, r.Name)
		}
		t.Fatalf("rows = %v, want only this hatchery's %d VMs", names, len(want))
	}
	for _, got := range d.VMs {
		w, ok := want[got.Name]
		if !ok {
			t.Errorf("unexpected row %q", got.Name)
			continue
		}
		w.Name = got.Name
		w.Created = created.Add(-time.Duration(w.AgeSeconds) * time.Second)
		if got != w {
			t.Errorf("row %s =\n %+v, want\n %+v", got.Name, got, w)
		}
	}

	wantPools := []hatchery.ProvisioningPool{
		{Template: "debian12", Wanted: 3, Ready: 1, Starting: 2},
		{Template: "grp/model", Wanted: 1, Ready: 1, Starting: 0},
	}
	if !slices.Equal(d.Pools, wantPools) {
		t.Errorf("pools = %+v, want %+v", d.Pools, wantPools)
	}

	wantGauges := []hatchery.CapacityGauge{
		// worker-run, worker-dhcp, worker-bad: worker-done is off and holds no worker.
		{Name: GaugeWorkers, Unit: "workers", Used: 3, Limit: 10},
		{Name: GaugeVCPUs, Unit: "vCPUs", Used: 16, Limit: 16},
		{Name: GaugeMemory, Unit: "MB", Used: 32768, Limit: 0},
		{Name: GaugeResourcePoolCPU, Unit: "MHz", Used: 2500, Limit: 10000},
		{Name: GaugeResourcePoolMemory, Unit: "MB", Used: 16384, Limit: 65536},
		{Name: GaugeIPAddresses, Unit: "IPs", Used: 2, Limit: 8},
	}
	if !slices.Equal(d.Capacity, wantGauges) {
		t.Errorf("capacity =\n %+v, want\n %+v", d.Capacity, wantGauges)
	}
}

func TestDashboardWithoutResourcePoolLeavesItsGaugesOut(t *testing.T) {
	cfg := dashboardConfig()
	cfg.IPRange = "" // DHCP: no IP gauge either
	p, rec := newDashboardProvider(t, cfg, func(m *mock_vsphere.MockVSphereClient) {
		listing(m, 1, dashboardFleet(), nil)
		m.EXPECT().ResourcePoolRuntime(gomock.Any()).Return(types.ResourcePoolRuntimeInfo{}, errors.New("permission denied")).Times(1)
	})
	d, err := p.Dashboard(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, g := range d.Capacity {
		names = append(names, g.Name)
	}
	if want := []string{GaugeWorkers, GaugeVCPUs, GaugeMemory}; !slices.Equal(names, want) {
		t.Errorf("gauges = %v, want %v", names, want)
	}
	if len(d.VMs) != 10 {
		t.Errorf("%d rows, want 10", len(d.VMs))
	}
	if !rec.has("WARN", "permission denied") {
		t.Errorf("the unreadable resource pool is not logged")
	}
}

func TestDashboardFailsOnAFailedListing(t *testing.T) {
	p, _ := newDashboardProvider(t, dashboardConfig(), func(m *mock_vsphere.MockVSphereClient) {
		listing(m, 1, nil, errors.New("connection refused"))
		// No resource pool read: the page shows the failure instead.
	})
	if _, err := p.Dashboard(context.Background()); err == nil || !strings.Contains(err.Error(), "connection refused") {
		t.Errorf("err = %v, want the listing error", err)
	}
}

// TestStatusPageHasNoSecret serves the page and its JSON for a hatchery configured with
// every kind of secret, through the framework's composition.
func TestStatusPageHasNoSecret(t *testing.T) {
	secrets := []string{"vc-Pa55word", "guest-Pa55word", "v1-token-s3cret", "v2-token-s3cret", "BEGIN RSA PRIVATE KEY-fake-s3cret", "graylog-s3cret"}
	cfg := dashboardConfig()
	cfg.User = "admin@vsphere.local"
	cfg.Password = secrets[0]
	cfg.GuestCredentials = []config.GuestCredential{{ModelVMWare: "debian12", Username: "root", Password: secrets[1]}}
	cfg.CommonConfiguration.API.Token = secrets[2]
	cfg.CommonConfiguration.API.TokenV2 = secrets[3]
	cfg.CommonConfiguration.RSAPrivateKey = secrets[4]
	cfg.CommonConfiguration.Provision.InjectEnvVars = []string{"SECRET=" + secrets[5]}

	p, _ := newDashboardProvider(t, cfg, func(m *mock_vsphere.MockVSphereClient) {
		listing(m, 4, dashboardFleet(), nil) // Dashboard and Status, once per request
		m.EXPECT().ResourcePoolRuntime(gomock.Any()).Return(dashboardPool(), nil).Times(2)
	})
	var clockTick time.Duration
	src := hatchery.NewDashboardSource(hatchery.DashboardOptions{
		Hatchery: "h",
		Status: func(ctx context.Context) cds.MonitoringStatus {
			return cds.MonitoringStatus{Lines: p.Status(ctx)}
		},
		Provider: p,
		// Each request is a new interval, so both build from vCenter.
		Now: func() time.Time { clockTick += time.Minute; return created.Add(clockTick) },
	})
	srv := httptest.NewServer(hatchery.NewHTTPHandler(hatchery.HTTPOptions{Extra: hatchery.NewUIHandlers(src)}))
	defer srv.Close()

	for _, path := range []string{hatchery.UIPathPage, hatchery.UIPathVMs} {
		resp, err := srv.Client().Get(srv.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		body, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil {
			t.Fatal(err)
		}
		if resp.StatusCode != http.StatusOK || !strings.Contains(string(body), "worker-run") {
			t.Fatalf("%s: status %d, body %s", path, resp.StatusCode, body)
		}
		for _, s := range secrets {
			if strings.Contains(string(body), s) {
				t.Errorf("%s shows the secret %q", path, s)
			}
		}
	}
}

func TestVMErrorsExpireAndAreBounded(t *testing.T) {
	e := newVMErrors()
	e.record("a", "old failure", created)
	e.record("b", strings.Repeat("x", 1000), created.Add(30*time.Minute))
	if got := e.get("b"); len([]rune(got)) != vmErrorMaxLen || !strings.HasSuffix(got, "…") {
		t.Errorf("long error kept as %d runes", len([]rune(got)))
	}
	e.record("c", "new failure", created.Add(vmErrorTTL+time.Minute))
	if e.get("a") != "" || e.get("b") == "" || e.get("c") != "new failure" {
		t.Errorf("after expiry: a=%q b set=%v c=%q", e.get("a"), e.get("b") != "", e.get("c"))
	}
	e.clear("c")
	if e.get("c") != "" {
		t.Errorf("cleared error still shown")
	}
}

func TestProviderVMErrors(t *testing.T) {
	p, err := New(testConfig(), nil, nil, func() time.Time { return created })
	if err != nil {
		t.Fatal(err)
	}
	other, err := New(testConfig(), nil, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	p.recordVMError("vm-1", errors.New("clone failed"))
	p.recordVMError("vm-2", nil) // no error, nothing recorded
	if p.lastErrors().get("vm-1") != "clone failed" || p.lastErrors().get("vm-2") != "" {
		t.Errorf("recorded errors wrong")
	}
	if other.lastErrors().get("vm-1") != "" {
		t.Errorf("errors leak between providers")
	}
	p.clearVMError("vm-1")
	if p.lastErrors().get("vm-1") != "" {
		t.Errorf("cleared error still shown")
	}
}
