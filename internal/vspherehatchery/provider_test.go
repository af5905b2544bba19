package vspherehatchery

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rockbears/log"
	"github.com/vmware/govmomi/vim25/mo"
	"github.com/vmware/govmomi/vim25/types"
	"go.uber.org/mock/gomock"

	"github.com/hatchery-vsphere/hatchery-vsphere/internal/cds"
	"github.com/hatchery-vsphere/hatchery-vsphere/internal/config"
	"github.com/hatchery-vsphere/hatchery-vsphere/internal/hatchery"
	"github.com/hatchery-vsphere/hatchery-vsphere/mock_vsphere"
)

// logRecorder keeps the log lines a test may assert on.
type logRecorder struct {
	mu    sync.Mutex
	lines []string
}

func (r *logRecorder) logger() *log.Logger {
	return log.NewWithFactory(func() log.Wrapper { return recordingWrapper{r} })
}

func (r *logRecorder) has(level, substr string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.ContainsFunc(r.lines, func(l string) bool { return strings.HasPrefix(l, level+" ") && strings.Contains(l, substr) })
}

func (r *logRecorder) contains(substr string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.ContainsFunc(r.lines, func(l string) bool { return strings.Contains(l, substr) })
}

type recordingWrapper struct{ r *logRecorder }

func (w recordingWrapper) add(level, format string, args ...any) {
	w.r.mu.Lock()
	defer w.r.mu.Unlock()
	w.r.lines = append(w.r.lines, level+" "+fmt.Sprintf(format, args...))
}
func (recordingWrapper) GetLevel() log.Level         { return log.LevelDebug }
func (recordingWrapper) WithField(string, any)       {}
func (w recordingWrapper) Debugf(f string, a ...any) { w.add("DEBUG", f, a...) }
func (w recordingWrapper) Infof(f string, a ...any)  { w.add("INFO", f, a...) }
func (w recordingWrapper) Warnf(f string, a ...any)  { w.add("WARN", f, a...) }
func (w recordingWrapper) Fatalf(f string, a ...any) { w.add("FATAL", f, a...) }
func (w recordingWrapper) Errorf(f string, a ...any) { w.add("ERROR", f, a...) }
func (w recordingWrapper) Panicf(f string, a ...any) { w.add("PANIC", f, a...) }

func testConfig() config.VSphere {
	var cfg config.VSphere
	cfg.CommonConfiguration.Name = "h"
	cfg.Flavors = testFlavors
	return cfg
}

// newTestProvider builds a provider on a mock whose expectations setup declares.
func newTestProvider(t *testing.T, cfg config.VSphere, setup func(m *mock_vsphere.MockVSphereClient)) (*Provider, *logRecorder) {
	t.Helper()
	ctrl := gomock.NewController(t)
	m := mock_vsphere.NewMockVSphereClient(ctrl)
	if setup != nil {
		setup(m)
	}
	rec := &logRecorder{}
	p, err := New(cfg, m, rec.logger(), newFakeClock().Now)
	if err != nil {
		t.Fatal(err)
	}
	return p, rec
}

// listing expects exactly n narrow listings returning vms.
func listing(m *mock_vsphere.MockVSphereClient, n int, vms []mo.VirtualMachine, err error) {
	m.EXPECT().ListVirtualMachinesProperties(gomock.Any(), InventoryProperties).Return(vms, err).Times(n)
}

func poolRuntime(cpuMHz, memBytes int64) types.ResourcePoolRuntimeInfo {
	var rt types.ResourcePoolRuntimeInfo
	rt.Cpu.UnreservedForVm = cpuMHz
	rt.Memory.UnreservedForVm = memBytes
	return rt
}

func fleetMO() []mo.VirtualMachine {
	mine := func(a Annotation) *Annotation { a.HatcheryName = "h"; a.Created = created; return &a }
	return []mo.VirtualMachine{
		moVM("debian12", nil, true, off, 2, 4096),
		moVM("mail-server", nil, false, on, 8, 32768, "10.0.0.1"),
		moVM("debian12-model", mine(Annotation{Model: true, WorkerModelLastModified: "1717000000"}), true, off, 2, 4096),
		moVM("worker-1", mine(Annotation{JobID: "41", IPAddress: "10.0.0.2"}), false, on, 4, 8192),
		moVM("provision-v2-a", mine(Annotation{Provisioning: true, VMwareModelPath: "debian12"}), false, off, 2, 4096),
	}
}

func TestProviderModelType(t *testing.T) {
	p, _ := newTestProvider(t, testConfig(), nil)
	if p.ModelType() != "vsphere" {
		t.Fatalf("ModelType = %q", p.ModelType())
	}
}

func TestNewRejectsBadIPRange(t *testing.T) {
	cfg := testConfig()
	cfg.IPRange = "10.0.0.0/33"
	if _, err := New(cfg, nil, nil, nil); err == nil || !strings.Contains(err.Error(), "iprange") {
		t.Fatalf("err = %v, want an iprange error", err)
	}
}

func TestProviderWorkersStarted(t *testing.T) {
	p, _ := newTestProvider(t, testConfig(), func(m *mock_vsphere.MockVSphereClient) { listing(m, 1, fleetMO(), nil) })
	got, err := p.WorkersStarted(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(got, []string{"worker-1"}) {
		t.Fatalf("WorkersStarted = %v, want only this hatchery's worker", got)
	}

	boom := errors.New("listing timed out")
	p, _ = newTestProvider(t, testConfig(), func(m *mock_vsphere.MockVSphereClient) { listing(m, 1, nil, boom) })
	if got, err := p.WorkersStarted(context.Background()); !errors.Is(err, boom) || got != nil {
		t.Fatalf("failed listing: got %v, %v; want the error, never an empty list", got, err)
	}
}

func TestProviderNeedRegistration(t *testing.T) {
	model := func(name string, lastModified int64, need bool) *cds.Model {
		return &cds.Model{Name: name, Group: cds.Group{Name: "grp"}, NeedRegistration: need, UserLastModified: time.Unix(lastModified, 0)}
	}
	tests := []struct {
		name     string
		model    *cds.Model
		listErr  error
		toDelete bool
		want     bool
	}{
		{"template up to date", model("debian12-model", 1717000000, false), nil, false, false},
		{"model changed since the template was built", model("debian12-model", 1717000001, false), nil, false, true},
		{"API asks for registration", model("debian12-model", 1717000000, true), nil, false, true},
		{"no template", model("ubuntu", 1717000000, false), nil, false, true},
		{"plain template is not a CDS template", model("debian12", 1717000000, false), nil, false, true},
		{"template marked for deletion", model("debian12-model", 1, true), nil, true, false},
		{"listing fails: no rebuild", model("ubuntu", 1, true), errors.New("timeout"), false, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, _ := newTestProvider(t, testConfig(), func(m *mock_vsphere.MockVSphereClient) { listing(m, 1, fleetMO(), tt.listErr) })
			if tt.toDelete {
				p.caches.ToDelete.Add("debian12-model")
			}
			if got := p.NeedRegistration(context.Background(), tt.model); got != tt.want {
				t.Fatalf("NeedRegistration = %v, want %v", got, tt.want)
			}
		})
	}
}

func TestProviderDefaultModelV2Name(t *testing.T) {
	cfg := testConfig()
	cfg.DefaultWorkerModelsV2 = []config.DefaultWorkerModelsV2{
		{WorkerModelV2: "PROJ/github/org/repo/generic", Binaries: []string{"bash"}},
		{WorkerModelV2: "PROJ/github/org/repo/go", Binaries: []string{"go", "gcc"}},
	}
	p, _ := newTestProvider(t, cfg, nil)
	bin := func(vs ...string) []cds.Requirement {
		var out []cds.Requirement
		for _, v := range vs {
			out = append(out, cds.Requirement{Type: cds.RequirementBinary, Value: v})
		}
		return out
	}
	ctx := context.Background()
	for _, tt := range []struct {
		reqs []cds.Requirement
		want string
	}{
		{nil, "PROJ/github/org/repo/generic"},
		{[]cds.Requirement{{Type: cds.RequirementRegion, Value: "eu"}}, "PROJ/github/org/repo/generic"},
		{bin("gcc"), "PROJ/github/org/repo/go"},
		{bin("python", "go"), "PROJ/github/org/repo/go"},
		{bin("python"), ""},
	} {
		if got := p.DefaultModelV2Name(ctx, tt.reqs); got != tt.want {
			t.Errorf("requirements %v: got %q, want %q", tt.reqs, got, tt.want)
		}
	}
	p, _ = newTestProvider(t, testConfig(), nil)
	if got := p.DefaultModelV2Name(ctx, nil); got != "" {
		t.Errorf("no defaults configured: got %q", got)
	}
}

func TestProviderCanSpawn(t *testing.T) {
	ctx := context.Background()
	t.Run("unsupported requirement costs no vCenter call", func(t *testing.T) {
		p, _ := newTestProvider(t, testConfig(), nil) // any call fails the test
		if p.CanSpawn(ctx, v1Model(), "42", []cds.Requirement{{Type: cds.RequirementService}}) {
			t.Fatal("service requirement accepted")
		}
	})
	t.Run("job in progress costs no vCenter call", func(t *testing.T) {
		p, _ := newTestProvider(t, testConfig(), nil)
		p.caches.SpawnInProgress.Add("42")
		if p.CanSpawn(ctx, v1Model(), "42", nil) {
			t.Fatal("job spawned twice")
		}
	})
	t.Run("one listing per decision", func(t *testing.T) {
		p, _ := newTestProvider(t, testConfig(), func(m *mock_vsphere.MockVSphereClient) { listing(m, 2, fleetMO(), nil) })
		if !p.CanSpawn(ctx, v1Model(), "42", nil) {
			t.Fatal("free job refused")
		}
		if p.CanSpawn(ctx, v1Model(), "41", nil) {
			t.Fatal("job with a VM accepted")
		}
	})
	t.Run("failed listing refuses", func(t *testing.T) {
		p, rec := newTestProvider(t, testConfig(), func(m *mock_vsphere.MockVSphereClient) { listing(m, 1, nil, errors.New("timeout")) })
		if p.CanSpawn(ctx, v1Model(), "42", nil) {
			t.Fatal("accepted on a failed listing")
		}
		if !rec.has("WARN", "timeout") {
			t.Fatal("listing failure not logged")
		}
	})
	t.Run("iprange exhausted", func(t *testing.T) {
		cfg := testConfig()
		cfg.IPRange = "10.0.0.0/31" // .0 and .1; .1 is mail-server's guest IP
		p, _ := newTestProvider(t, cfg, func(m *mock_vsphere.MockVSphereClient) { listing(m, 2, fleetMO(), nil) })
		if !p.CanSpawn(ctx, v1Model(), "42", nil) {
			t.Fatal("refused with 10.0.0.0 free")
		}
		if _, err := p.ips.FindAndReserve(); err != nil {
			t.Fatal(err)
		}
		if p.CanSpawn(ctx, v1Model(), "43", nil) {
			t.Fatal("accepted with no free IP")
		}
	})
}

// The decisions of a burst share one resource pool read per poolRuntimeTTL; a failed read
// is not kept, and a read older than the TTL is made again.
func TestCanAllocateResourcesSharesThePoolReadWithinASecond(t *testing.T) {
	ctx := context.Background()
	clock := newFakeClock()
	ctrl := gomock.NewController(t)
	m := mock_vsphere.NewMockVSphereClient(ctrl)
	m.EXPECT().ListVirtualMachinesProperties(gomock.Any(), InventoryProperties).Return(fleetMO(), nil).AnyTimes()
	gomock.InOrder(
		m.EXPECT().ResourcePoolRuntime(gomock.Any()).Return(types.ResourcePoolRuntimeInfo{}, errors.New("busy")).Times(1),
		m.EXPECT().ResourcePoolRuntime(gomock.Any()).Return(poolRuntime(1000, 1<<40), nil).Times(1),
		// A second later the pool is full: the next decision must see it.
		m.EXPECT().ResourcePoolRuntime(gomock.Any()).Return(poolRuntime(1000, 0), nil).Times(1),
	)
	p, err := New(testConfig(), m, (&logRecorder{}).logger(), clock.Now)
	if err != nil {
		t.Fatal(err)
	}
	decide := func() bool {
		t.Helper()
		ok, err := p.CanAllocateResources(ctx, v2Model(), "42", nil)
		if err != nil {
			t.Fatal(err)
		}
		return ok
	}
	decide() // the failed read: static limits only, and nothing kept
	for i := range 5 {
		if !decide() {
			t.Fatalf("decision %d refused with room in the pool", i)
		}
		clock.Advance(poolRuntimeTTL / 10)
	}
	clock.Advance(poolRuntimeTTL / 2)
	if decide() {
		t.Fatal("a decision after the TTL used the old read: allowed on a full pool")
	}
}

func TestProviderCanAllocateResources(t *testing.T) {
	ctx := context.Background()
	v2 := func(flavor string) *hatchery.WorkerStarterWorkerModel { m := v2Model(); m.Flavor = flavor; return m }
	tests := []struct {
		name    string
		cfg     func(c *config.VSphere)
		model   *hatchery.WorkerStarterWorkerModel
		setup   func(m *mock_vsphere.MockVSphereClient)
		want    bool
		wantErr bool
		log     string
	}{
		{name: "room in pool and limits", model: v2(""), cfg: func(c *config.VSphere) { c.MaxCPUs = 8 },
			setup: func(m *mock_vsphere.MockVSphereClient) {
				listing(m, 1, fleetMO(), nil)
				m.EXPECT().ResourcePoolRuntime(gomock.Any()).Return(poolRuntime(1000, 1<<40), nil).Times(1)
			}, want: true},
		{name: "maxCpus counts only this hatchery's powered-on VMs", model: v2(""), cfg: func(c *config.VSphere) { c.MaxCPUs = 5 },
			setup: func(m *mock_vsphere.MockVSphereClient) {
				listing(m, 1, fleetMO(), nil) // worker-1 (4) + template footprint 2 > 5
				m.EXPECT().ResourcePoolRuntime(gomock.Any()).Return(poolRuntime(1000, 1<<40), nil).Times(1)
			}, log: "maxCpus reached: 4 used"},
		{name: "flavor footprint", model: v2("large"), cfg: func(c *config.VSphere) { c.MaxCPUs = 11 },
			setup: func(m *mock_vsphere.MockVSphereClient) {
				listing(m, 1, fleetMO(), nil) // 4 + 8 > 11
				m.EXPECT().ResourcePoolRuntime(gomock.Any()).Return(poolRuntime(1000, 1<<40), nil).Times(1)
			}, log: `flavor "large"`},
		{name: "pool memory short", model: v2(""),
			setup: func(m *mock_vsphere.MockVSphereClient) {
				listing(m, 1, fleetMO(), nil)
				m.EXPECT().ResourcePoolRuntime(gomock.Any()).Return(poolRuntime(1000, 4095*mb), nil).Times(1)
			}, log: "resource pool has 4095 MB"},
		{name: "pool unreadable degrades to static limits", model: v2(""),
			setup: func(m *mock_vsphere.MockVSphereClient) {
				listing(m, 1, fleetMO(), nil)
				m.EXPECT().ResourcePoolRuntime(gomock.Any()).Return(types.ResourcePoolRuntimeInfo{}, errors.New("no permission")).Times(1)
			}, want: true, log: "no permission"},
		{name: "unknown flavor refused before any call (fix of Q12)", model: v2("huge"),
			want: false, log: `flavor "huge" not found`},
		{name: "default flavor without matching entry refused", model: v2(""), cfg: func(c *config.VSphere) { c.DefaultFlavor = "medum" },
			want: false, log: `flavor "medum" not found`},
		{name: "failed listing is an error", model: v2(""),
			setup:   func(m *mock_vsphere.MockVSphereClient) { listing(m, 1, nil, errors.New("timeout")) },
			wantErr: true},
		{name: "unknown image: allowed unchecked", model: func() *hatchery.WorkerStarterWorkerModel {
			m := v2Model()
			m.VSphereSpec.Image = "missing"
			return m
		}(), setup: func(m *mock_vsphere.MockVSphereClient) {
			listing(m, 1, fleetMO(), nil)
			m.EXPECT().ResourcePoolRuntime(gomock.Any()).Return(poolRuntime(0, 0), nil).Times(1)
		}, want: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := testConfig()
			if tt.cfg != nil {
				tt.cfg(&cfg)
			}
			p, rec := newTestProvider(t, cfg, tt.setup)
			got, err := p.CanAllocateResources(ctx, tt.model, "42", nil)
			if (err != nil) != tt.wantErr {
				t.Fatalf("err = %v, wantErr %v", err, tt.wantErr)
			}
			if got != tt.want {
				t.Fatalf("CanAllocateResources = %v, want %v", got, tt.want)
			}
			if tt.log != "" && !rec.contains(tt.log) {
				t.Fatalf("no log line with %q in %v", tt.log, rec.lines)
			}
		})
	}
}
