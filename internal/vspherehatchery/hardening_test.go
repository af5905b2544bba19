package vspherehatchery

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/vmware/govmomi/object"
	"github.com/vmware/govmomi/vim25/mo"
	"github.com/vmware/govmomi/vim25/types"
	"go.uber.org/mock/gomock"

	"github.com/hatchery-vsphere/hatchery-vsphere/internal/cds"
	"github.com/hatchery-vsphere/hatchery-vsphere/internal/config"
	"github.com/hatchery-vsphere/hatchery-vsphere/internal/vsphere"
	"github.com/hatchery-vsphere/hatchery-vsphere/mock_vsphere"
)

func mineAt(created time.Time, a Annotation) *Annotation {
	a.HatcheryName = "h"
	a.Created = created
	return &a
}

// expectDeletions expects the deletion of each named VM (power-off when on, destroy).
func expectDeletions(m *mock_vsphere.MockVSphereClient, vms ...mo.VirtualMachine) {
	for _, vm := range vms {
		m.EXPECT().LoadVirtualMachine(gomock.Any(), vm.Name).Return(vmObj(vm.Name), nil).Times(1)
		if vm.Runtime.PowerState != off {
			m.EXPECT().ShutdownVirtualMachine(gomock.Any(), vmObj(vm.Name)).Return(nil).Times(1)
		}
		m.EXPECT().DestroyVirtualMachine(gomock.Any(), vmObj(vm.Name)).Return(nil).Times(1)
	}
}

func TestDeprovisioning(t *testing.T) {
	pv := func(name, model string, age time.Duration) mo.VirtualMachine {
		return moVM(name, mineAt(ago(age), Annotation{Provisioning: true, VMwareModelPath: model}), false, off, 2, 4096)
	}
	pv1 := func(name, path string, age time.Duration) mo.VirtualMachine {
		return moVM(name, mineAt(ago(age), Annotation{Provisioning: true, WorkerModelPath: path}), false, off, 2, 4096)
	}
	oldest, middle, newest := pv("provision-v2-a", "debian12", 3*time.Hour), pv("provision-v2-b", "debian12", 2*time.Hour), pv("provision-v2-c", "debian12", time.Hour)
	removedV2 := pv("provision-v2-gone", "ubuntu", time.Hour)
	removedV1 := pv1("provision-v1-gone", "grp/old", time.Hour)
	keptV1 := pv1("provision-v1-kept", "grp/model", time.Hour)
	pending := pv("provision-v2-pending", "debian12", 0)
	other := moVM("provision-v2-other", &Annotation{HatcheryName: "other", Provisioning: true, VMwareModelPath: "ubuntu", Created: ago(time.Hour)}, false, off, 2, 4096)

	cfg := spawnConfig()
	// debian12 lowered to 2 (3 idle VMs + 1 being made); ubuntu and grp/old removed.
	cfg.WorkerProvisioning = []config.WorkerProvisioning{{ModelVMWare: "debian12", Number: 2}, {ModelPath: "grp/model", Number: 1}}
	f := newOrch(t, cfg, func(m *mock_vsphere.MockVSphereClient) {
		listing(m, 1, []mo.VirtualMachine{oldest, middle, newest, removedV2, removedV1, keptV1, pending, other}, nil)
		// 4 debian12 VMs for 2 wanted: the 2 newest idle ones go; the oldest stays with
		// the one being made.
		expectDeletions(m, newest, middle, removedV2, removedV1)
	})
	f.o.caches.ProvisioningPending.Add(pending.Name)
	if err := f.o.killAwolServers(t.Context(), f.svc); err != nil {
		t.Fatalf("killAwolServers: %v", err)
	}
	if n := f.o.caches.ProvisioningUsing.Len(); n != 0 {
		t.Errorf("%d deprovisioned VMs left claimed", n)
	}
}

func TestDeprovisioningLeavesAVMClaimedBySpawn(t *testing.T) {
	vm := moVM("provision-v2-a", mineAt(ago(time.Hour), Annotation{Provisioning: true, VMwareModelPath: "removed"}), false, off, 2, 4096)
	f := newOrch(t, spawnConfig(), func(m *mock_vsphere.MockVSphereClient) {
		listing(m, 1, []mo.VirtualMachine{vm}, nil)
	})
	f.o.caches.ProvisioningUsing.Add(vm.Name) // a spawn is reusing it
	if err := f.o.killAwolServers(t.Context(), f.svc); err != nil {
		t.Fatalf("killAwolServers: %v", err)
	}
}

func TestHalfProvisionedVMsAfterRestart(t *testing.T) {
	// The guest-ready + IP budget is 6 min by default.
	withIP := moVM("provision-v2-ip", mineAt(ago(7*time.Minute), Annotation{Provisioning: true, VMwareModelPath: "debian12", IPAddress: "10.0.0.12"}), false, on, 2, 4096, "10.0.0.12")
	dhcp := moVM("provision-v2-dhcp", mineAt(ago(7*time.Minute), Annotation{Provisioning: true, VMwareModelPath: "debian12"}), false, on, 2, 4096, "fe80::1", "192.168.1.20")
	noIP := moVM("provision-v2-noip", mineAt(ago(7*time.Minute), Annotation{Provisioning: true, VMwareModelPath: "debian12", IPAddress: "10.0.0.13"}), false, on, 2, 4096, "169.254.0.1")
	young := moVM("provision-v2-young", mineAt(ago(5*time.Minute), Annotation{Provisioning: true, VMwareModelPath: "debian12"}), false, on, 2, 4096)
	ours := moVM("provision-v2-ours", mineAt(ago(time.Hour), Annotation{Provisioning: true, VMwareModelPath: "debian12"}), false, on, 2, 4096)
	abandoned := moVM("provision-v2-claimed", mineAt(ago(time.Hour), Annotation{Provisioning: true, VMwareModelPath: "debian12", Claimed: ago(11 * time.Minute), ClaimedBy: "w"}), false, off, 2, 4096)
	claimed := moVM("provision-v2-claiming", mineAt(ago(time.Hour), Annotation{Provisioning: true, VMwareModelPath: "debian12", Claimed: ago(time.Minute), ClaimedBy: "w2"}), false, off, 2, 4096)

	cfg := spawnConfig()
	cfg.WorkerProvisioning = []config.WorkerProvisioning{{ModelVMWare: "debian12", Number: 10}}
	f := newOrch(t, cfg, func(m *mock_vsphere.MockVSphereClient) {
		listing(m, 1, []mo.VirtualMachine{withIP, dhcp, noIP, young, ours, abandoned, claimed}, nil)
		// Those that got their IP are powered off and kept: they are provisioned VMs now.
		for _, name := range []string{withIP.Name, dhcp.Name} {
			m.EXPECT().LoadVirtualMachine(gomock.Any(), name).Return(vmObj(name), nil).Times(1)
			m.EXPECT().ShutdownVirtualMachine(gomock.Any(), vmObj(name)).Return(nil).Times(1)
		}
		expectProvisionedStamps(t, m, 2)
		expectDeletions(m, noIP, abandoned)
	})
	f.o.caches.ProvisioningPending.Add(ours.Name) // this process is provisioning it
	if err := f.o.killAwolServers(t.Context(), f.svc); err != nil {
		t.Fatalf("killAwolServers: %v", err)
	}
}

func TestFinishedWorkerDeletedOnlyAfterTheGracePeriod(t *testing.T) {
	clock := newFakeClock()
	vm := moVM("w", mineAt(ago(time.Hour), Annotation{JobID: "41"}), false, off, 2, 4096)
	events := []types.BaseEvent{starting(ago(30*time.Minute), "w is starting"), poweredOff(clock.Now(), "w is powered off")}
	cfg := spawnConfig()
	cfg.FinishedWorkerGracePeriod = 120
	f := newOrch(t, cfg, func(m *mock_vsphere.MockVSphereClient) {
		listing(m, 3, []mo.VirtualMachine{vm}, nil)
		m.EXPECT().LoadVirtualMachine(gomock.Any(), "w").Return(vmObj("w"), nil).Times(4)
		m.EXPECT().LoadVirtualMachineEvents(gomock.Any(), vmObj("w"), "VmStartingEvent", "VmPoweredOffEvent", "VmRenamedEvent").Return(events, nil).Times(3)
		m.EXPECT().DestroyVirtualMachine(gomock.Any(), vmObj("w")).Return(nil).Times(1)
	})
	f.o.now = clock.Now
	for _, at := range []time.Duration{0, 119 * time.Second} {
		clock.Advance(at - clock.Now().Sub(cleanupNow))
		if err := f.o.killAwolServers(t.Context(), f.svc); err != nil {
			t.Fatalf("killAwolServers at +%s: %v", at, err)
		}
	}
	clock.Advance(time.Second) // +120 s
	if err := f.o.killAwolServers(t.Context(), f.svc); err != nil {
		t.Fatalf("killAwolServers: %v", err)
	}
}

func TestJobOfADeadVMIsReleased(t *testing.T) {
	running := func(name, job string) mo.VirtualMachine {
		return moVM(name, mineAt(ago(2*time.Minute), Annotation{JobID: job, JobRegion: "eu"}), false, on, 2, 4096)
	}
	stopped := func(vm mo.VirtualMachine) mo.VirtualMachine {
		vm.Runtime.PowerState = off
		return vm
	}
	died, worked, vanished, spawning := running("died", jobUUID), running("worked", "42"), running("vanished", "43"), running("spawning", "44")
	restarted := stopped(running("unknown-history", "45"))
	// The VMs were made 2 min ago: nothing is old enough to delete or to read events for.
	passes := [][]mo.VirtualMachine{
		{died, worked, vanished, spawning},
		{stopped(died), stopped(worked), stopped(spawning), restarted},
		{stopped(died), stopped(worked), stopped(spawning), restarted},
	}
	var pass atomic.Int32
	f := newOrch(t, spawnConfig(), func(m *mock_vsphere.MockVSphereClient) {
		m.EXPECT().ListVirtualMachinesProperties(gomock.Any(), InventoryProperties).DoAndReturn(
			func(context.Context, ...string) ([]mo.VirtualMachine, error) {
				return passes[pass.Add(1)-1], nil
			}).Times(len(passes))
	})
	f.o.caches.SpawnInProgress.Add("44") // its spawn fails and rolls back: the framework releases
	if err := f.o.killAwolServers(t.Context(), f.svc); err != nil {
		t.Fatalf("first pass: %v", err)
	}
	f.svc.registered["worked"] = struct{}{} // registered at some point: its job ran
	for range 2 {
		if err := f.o.killAwolServers(t.Context(), f.svc); err != nil {
			t.Fatalf("pass: %v", err)
		}
		delete(f.svc.registered, "worked")
	}
	got := f.svc.releasedJobs()
	slices.Sort(got)
	want := []string{jobUUID + " eu", "43 eu"} // died (powered off) and vanished, once each
	if !slices.Equal(got, want) {
		t.Errorf("released %q, want %q", got, want)
	}
}

func TestIPPoolRebuiltFromAnnotationsAfterRestart(t *testing.T) {
	cfg := spawnConfig()
	cfg.IPRange = "10.0.0.10/31"
	// A fresh process sees two VMs in creation (powered off, no guest IP yet) whose
	// annotations hold the two addresses: none is free, although nothing is reserved here.
	inCreation := []mo.VirtualMachine{
		moVM("debian12", nil, true, off, 2, 4096),
		moVM("w1", mineAt(created, Annotation{IPAddress: "10.0.0.10", JobID: "1"}), false, off, 2, 4096),
		moVM("provision-v2-x", mineAt(created, Annotation{IPAddress: "10.0.0.11", Provisioning: true, VMwareModelPath: "debian12"}), false, off, 2, 4096),
	}
	p, _ := newTestProvider(t, cfg, func(m *mock_vsphere.MockVSphereClient) {
		listing(m, 1, inCreation, nil)
	})
	if p.CanSpawn(t.Context(), v2Model(), jobUUID, nil) {
		t.Errorf("CanSpawn = true with every address held by a VM in creation")
	}
	if ip, err := p.ips.FindAndReserve(NewInventory(inCreation).UsedIPs()...); !errors.Is(err, ErrNoFreeIP) {
		t.Errorf("reserved %q (%v), want no free IP", ip, err)
	}
}

func TestCloneFailureMarksTheNameForDeletion(t *testing.T) {
	f := newOrch(t, spawnConfig(), func(m *mock_vsphere.MockVSphereClient) {
		listing(m, 1, []mo.VirtualMachine{moVM("debian12", nil, true, off, 2, 4096)}, nil)
		m.EXPECT().LoadVirtualMachine(gomock.Any(), "debian12").Return(vmObj("debian12"), nil).Times(1)
		m.EXPECT().LoadVirtualMachineDevices(gomock.Any(), gomock.Any()).Return(templateDevices(), nil).Times(1)
		m.EXPECT().LoadNetwork(gomock.Any(), "workers").Return(object.NewNetwork(nil, types.ManagedObjectReference{Type: "Network", Value: "network-5"}), nil).Times(1)
		m.EXPECT().SetupEthernetCard(gomock.Any(), gomock.Any(), "vmxnet3", gomock.Any()).Return(nil).Times(1)
		m.EXPECT().LoadResourcePool(gomock.Any()).Return(object.NewResourcePool(nil, poolRef), nil).Times(1)
		m.EXPECT().LoadDatastore(gomock.Any(), "ssd").Return(object.NewDatastore(nil, dsRef), nil).Times(1)
		m.EXPECT().LoadFolder(gomock.Any()).Return(folderObj, nil).Times(1)
		m.EXPECT().CloneVirtualMachine(gomock.Any(), gomock.Any(), folderObj, "brave-hopper", gomock.Any()).
			Return(nil, fmt.Errorf("wait for task task-1: %w", context.DeadlineExceeded)).Times(1)
	})
	if err := f.o.SpawnWorker(t.Context(), v2Args(v2Model())); err == nil {
		t.Fatal("SpawnWorker succeeded")
	}
	if !f.o.caches.ToDelete.Has("brave-hopper") {
		t.Errorf("a VM the expired clone task may still create is not marked for deletion")
	}
}

// inflight counts the calls in progress in a mock and holds them until released.
type inflight struct {
	mu        sync.Mutex
	now, peak int
	entered   chan struct{}
	gate      chan struct{}
}

func newInflight(n int) *inflight {
	return &inflight{entered: make(chan struct{}, n), gate: make(chan struct{})}
}

func (c *inflight) call() {
	c.mu.Lock()
	c.now++
	c.peak = max(c.peak, c.now)
	c.mu.Unlock()
	c.entered <- struct{}{}
	<-c.gate
	c.mu.Lock()
	c.now--
	c.mu.Unlock()
}

func TestLimitsAreNeverExceeded(t *testing.T) {
	const calls = 12
	tests := []struct {
		name  string
		limit int
		cfg   func(*config.VSphere, int)
		setup func(m *mock_vsphere.MockVSphereClient, c *inflight)
		call  func(ctx context.Context, g *guardedClient) error
	}{
		{
			name: "clones", limit: 3, cfg: func(c *config.VSphere, n int) { c.MaxConcurrentClones = n },
			setup: func(m *mock_vsphere.MockVSphereClient, c *inflight) {
				m.EXPECT().CloneVirtualMachine(gomock.Any(), gomock.Any(), gomock.Any(), gomock.Any(), gomock.Any()).DoAndReturn(
					func(context.Context, *object.VirtualMachine, *object.Folder, string, *types.VirtualMachineCloneSpec) (*types.ManagedObjectReference, error) {
						c.call()
						return &types.ManagedObjectReference{}, nil
					}).Times(calls)
			},
			call: func(ctx context.Context, g *guardedClient) error {
				_, err := g.CloneVirtualMachine(ctx, vmObj("src"), folderObj, "x", &types.VirtualMachineCloneSpec{})
				return err
			},
		},
		{
			name: "power operations", limit: 4, cfg: func(c *config.VSphere, n int) { c.MaxConcurrentPowerOps = n },
			setup: func(m *mock_vsphere.MockVSphereClient, c *inflight) {
				m.EXPECT().StartVirtualMachine(gomock.Any(), gomock.Any()).DoAndReturn(func(context.Context, *object.VirtualMachine) error { c.call(); return nil }).Times(calls / 2)
				m.EXPECT().ShutdownVirtualMachine(gomock.Any(), gomock.Any()).DoAndReturn(func(context.Context, *object.VirtualMachine) error { c.call(); return nil }).Times(calls / 2)
			},
			call: func() func(ctx context.Context, g *guardedClient) error {
				var n atomic.Int32
				return func(ctx context.Context, g *guardedClient) error {
					if n.Add(1)%2 == 0 {
						return g.StartVirtualMachine(ctx, vmObj("x"))
					}
					return g.ShutdownVirtualMachine(ctx, vmObj("x"))
				}
			}(),
		},
		{
			name: "deletions", limit: 2, cfg: func(c *config.VSphere, n int) { c.MaxConcurrentDeletions = n },
			setup: func(m *mock_vsphere.MockVSphereClient, c *inflight) {
				m.EXPECT().DestroyVirtualMachine(gomock.Any(), gomock.Any()).DoAndReturn(func(context.Context, *object.VirtualMachine) error { c.call(); return nil }).Times(calls)
			},
			call: func(ctx context.Context, g *guardedClient) error { return g.DestroyVirtualMachine(ctx, vmObj("x")) },
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := newInflight(calls)
			cfg := testConfig()
			tc.cfg(&cfg, tc.limit)
			p, _ := newTestProvider(t, cfg, func(m *mock_vsphere.MockVSphereClient) { tc.setup(m, c) })
			g := p.client.(*guardedClient)
			errs := make(chan error, calls)
			for range calls {
				go func() { errs <- tc.call(t.Context(), g) }()
			}
			for range tc.limit {
				<-c.entered
			}
			close(c.gate) // the first ones finish; the queued ones pass as slots free up
			for range calls {
				if err := <-errs; err != nil {
					t.Fatal(err)
				}
			}
			if c.peak != tc.limit {
				t.Errorf("peak of %d calls in flight, want the limit %d", c.peak, tc.limit)
			}
		})
	}
}

func TestLimitWaitEndsWithTheContext(t *testing.T) {
	l := NewLimits(1, 1, 1)
	release, err := l.acquire(t.Context(), taskClone)
	if err != nil {
		t.Fatal(err)
	}
	defer release()
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if _, err := l.acquire(ctx, taskClone); !errors.Is(err, context.Canceled) {
		t.Fatalf("acquire on a full limit with a cancelled context = %v", err)
	}
}

func TestBreakerOpensRefusesProbesAndCloses(t *testing.T) {
	cfg := testConfig()
	cfg.CircuitBreakerFailures = 3
	down := errors.New("connection refused")
	var listings atomic.Int32
	var failing atomic.Bool
	failing.Store(true)
	p, rec := newTestProvider(t, cfg, func(m *mock_vsphere.MockVSphereClient) {
		m.EXPECT().ListVirtualMachinesProperties(gomock.Any(), InventoryProperties).DoAndReturn(
			func(context.Context, ...string) ([]mo.VirtualMachine, error) {
				listings.Add(1)
				if failing.Load() {
					return nil, down
				}
				return fleetMO(), nil
			}).AnyTimes()
		// "Not found" says nothing about vCenter's health.
		m.EXPECT().LoadVirtualMachine(gomock.Any(), "gone").Return(nil, vsphere.ErrNotFound).Times(5)
		m.EXPECT().ResourcePoolRuntime(gomock.Any()).Return(poolRuntime(1000, 1<<40), nil).Times(1)
	})
	for range 5 {
		_, _ = p.client.LoadVirtualMachine(t.Context(), "gone")
	}
	for i := range 3 {
		if p.breaker.State() != BreakerClosed {
			t.Fatalf("circuit %s after %d failures, want closed", p.breaker.State(), i)
		}
		if _, err := p.CanAllocateResources(t.Context(), v2Model(), jobUUID, nil); err == nil {
			t.Fatalf("CanAllocateResources with vCenter down: no error")
		}
	}
	if p.breaker.State() != BreakerOpen {
		t.Fatalf("circuit %s after 3 failures, want open", p.breaker.State())
	}

	// Open: no job is booked, and nothing is asked of vCenter to say so.
	before := listings.Load()
	if ok, err := p.CanAllocateResources(t.Context(), v2Model(), jobUUID, nil); ok || err != nil {
		t.Errorf("CanAllocateResources = %v, %v; want false without error", ok, err)
	}
	ok, reason := p.Accepting(t.Context())
	wantReason := "circuit open since 2025-01-10T08:00:00Z: connection refused"
	if ok || !strings.Contains(reason, wantReason) {
		t.Errorf("Accepting = %v %q, want false %q", ok, reason, wantReason)
	}
	lines := p.Status(t.Context())
	want := cds.MonitoringStatusLine{Status: "AL", Component: "vCenter", Value: wantReason}
	if !slices.Contains(lines, want) {
		t.Errorf("Status = %+v, want the line %+v", lines, want)
	}
	if n := listings.Load(); n != before {
		t.Errorf("%d listings while the circuit is open, want none", n-before)
	}

	// A failed probe keeps it open; a successful one closes it.
	p.probe(t.Context())
	if p.breaker.State() != BreakerOpen || !rec.has("WARN", "vCenter probe failed") {
		t.Errorf("after a failed probe: circuit %s", p.breaker.State())
	}
	failing.Store(false)
	p.probe(t.Context())
	if p.breaker.State() != BreakerClosed {
		t.Fatalf("after a successful probe: circuit %s, want closed", p.breaker.State())
	}
	if ok, _ := p.Accepting(t.Context()); !ok {
		t.Errorf("not accepting after the circuit closed")
	}
	if ok, err := p.CanAllocateResources(t.Context(), v2Model(), jobUUID, nil); !ok || err != nil {
		t.Errorf("CanAllocateResources after recovery = %v, %v", ok, err)
	}
}

func TestBreakerOffWithZeroThreshold(t *testing.T) {
	b := NewBreaker(0, nil)
	for range 100 {
		b.Failure(errors.New("down"))
	}
	if ok, _ := b.Accepting(); !ok || b.Enabled() {
		t.Errorf("a breaker with threshold 0 opened")
	}
}

func TestBreakerSuccessResetsTheCount(t *testing.T) {
	b := NewBreaker(2, nil)
	b.Failure(errors.New("1"))
	b.Success()
	b.Failure(errors.New("2"))
	if b.State() != BreakerClosed {
		t.Errorf("opened on failures that were not consecutive")
	}
	b.Failure(errors.New("3"))
	if b.State() != BreakerOpen {
		t.Errorf("not open after 2 consecutive failures")
	}
	b.Success() // an unrelated call working does not close it: only the probe does
	if b.State() != BreakerOpen {
		t.Errorf("closed by a call other than the probe")
	}
}

func TestBackoffGrowsAndIsJittered(t *testing.T) {
	fixed := func(r float64) func() float64 { return func() float64 { return r } }
	b := Backoff{Base: 10 * time.Second, Max: time.Minute}
	tests := []struct {
		n    int
		r    float64
		want time.Duration
	}{
		{0, 0.5, 0},
		{1, 0, 5 * time.Second},
		{1, 0.5, 7500 * time.Millisecond},
		{2, 0, 10 * time.Second},
		{3, 0, 20 * time.Second},
		{4, 0.5, 45 * time.Second},            // 40 s nominal
		{5, 0, 30 * time.Second},              // 60 s: capped
		{50, 0.999, 59970 * time.Millisecond}, // no overflow
	}
	for _, tc := range tests {
		b.Rand = fixed(tc.r)
		if got := b.Delay(tc.n); got != tc.want {
			t.Errorf("Delay(%d) with draw %v = %s, want %s", tc.n, tc.r, got, tc.want)
		}
	}
	// With the real source, two hatcheries do not wait the same.
	b.Rand = nil
	seen := map[time.Duration]bool{}
	for range 20 {
		d := b.Delay(3)
		if d < 20*time.Second || d >= 40*time.Second {
			t.Fatalf("Delay(3) = %s, outside [20s, 40s)", d)
		}
		seen[d] = true
	}
	if len(seen) < 2 {
		t.Errorf("no jitter: %v", seen)
	}
}

func TestPassesBackOffAfterFailures(t *testing.T) {
	f := newOrch(t, spawnConfig(), nil)
	f.o.rand = func() float64 { return 0 } // the shortest wait: half the nominal one
	s := passSchedule{backoff: f.o.passBackoff(time.Minute)}
	now := cleanupNow
	// run ticks every minute until a pass is due, runs it with outcome err, and returns
	// the number of ticks it took.
	run := func(err error) int {
		for n := 1; ; n++ {
			now = now.Add(time.Minute)
			if s.due(now) {
				s.record(err, now)
				return n
			}
		}
	}
	down := errors.New("vCenter down")
	var got []int
	for range 6 {
		got = append(got, run(down))
	}
	got = append(got, run(nil), run(nil))
	// Nominal waits after 1, 2, 3... failures: 2, 4, 8, 16 periods (16 is the cap), halved
	// by the draw 0. After a success, every tick.
	want := []int{1, 1, 2, 4, 8, 8, 8, 1}
	if !slices.Equal(got, want) {
		t.Errorf("ticks per pass = %v, want %v", got, want)
	}
}
