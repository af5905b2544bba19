package vspherehatchery

import (
	"context"
	"errors"
	"net/http/httptest"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"contrib.go.opencensus.io/exporter/prometheus"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"github.com/vmware/govmomi/vim25/mo"
	"github.com/vmware/govmomi/vim25/types"
	"go.opencensus.io/stats/view"
	"go.uber.org/mock/gomock"

	"github.com/hatchery-vsphere/hatchery-vsphere/mock_vsphere"
)

// sample is one scraped series: its labels and value.
type sample struct {
	labels map[string]string
	value  float64
}

// metricsHarness is a collector on a mock vCenter plus a Prometheus exporter scraped through
// its HTTP handler, as /mon/metrics serves it.
type metricsHarness struct {
	t       *testing.T
	metrics *Metrics
	logs    *logRecorder
	exp     *prometheus.Exporter
	service string
}

func newMetricsHarness(t *testing.T, service, ipRange string, setup func(m *mock_vsphere.MockVSphereClient)) *metricsHarness {
	t.Helper()
	cfg := testConfig()
	cfg.CommonConfiguration.Name = service
	cfg.IPRange = ipRange
	p, logs := newTestProvider(t, cfg, setup)
	exp, err := prometheus.NewExporter(prometheus.Options{})
	if err != nil {
		t.Fatal(err)
	}
	m := NewMetrics(p)
	if err := m.RegisterViews(); err != nil {
		t.Fatal(err)
	}
	if err := m.RegisterViews(); err != nil {
		t.Fatalf("second RegisterViews: %v", err)
	}
	// The views are process-wide: drop their rows so that the next test starts empty.
	t.Cleanup(func() {
		view.Unregister(baseViews...)
		view.Unregister(workerViews...)
	})
	return &metricsHarness{t: t, metrics: m, logs: logs, exp: exp, service: service}
}

// scrape returns the vSphere series of this hatchery by Prometheus name, checking that each
// family is a gauge.
func (h *metricsHarness) scrape() map[string][]sample {
	h.t.Helper()
	rec := httptest.NewRecorder()
	h.exp.ServeHTTP(rec, httptest.NewRequest("GET", "/mon/metrics", nil))
	if rec.Code != 200 {
		h.t.Fatalf("scrape status %d", rec.Code)
	}
	parser := expfmt.NewTextParser(model.UTF8Validation)
	families, err := parser.TextToMetricFamilies(strings.NewReader(rec.Body.String()))
	if err != nil {
		h.t.Fatalf("parse scrape: %v\n%s", err, rec.Body.String())
	}
	out := map[string][]sample{}
	for name, mf := range families {
		if !strings.HasPrefix(name, "cds_hatchery_vsphere_") {
			continue
		}
		if got := mf.GetType().String(); got != "GAUGE" {
			h.t.Errorf("%s has type %s, want GAUGE", name, got)
		}
		for _, m := range mf.GetMetric() {
			labels := map[string]string{}
			for _, l := range m.GetLabel() {
				labels[l.GetName()] = l.GetValue()
			}
			if labels["service_name"] != h.service {
				continue
			}
			out[name] = append(out[name], sample{labels: labels, value: m.GetGauge().GetValue()})
		}
	}
	return out
}

// gauge returns the single value of a hatchery-level gauge, checking its label set.
func gauge(t *testing.T, got map[string][]sample, name string) float64 {
	t.Helper()
	s := got[name]
	if len(s) != 1 {
		t.Fatalf("%s: %d series, want 1 (%v)", name, len(s), s)
	}
	if len(s[0].labels) != 2 || s[0].labels["service_type"] != "hatchery" {
		t.Errorf("%s labels = %v, want service_name and service_type=hatchery", name, s[0].labels)
	}
	return s[0].value
}

// workerSeries renders the per-worker series of a gauge as sorted "name model value" strings.
func workerSeries(t *testing.T, got map[string][]sample, name string) []string {
	t.Helper()
	var out []string
	for _, s := range got[name] {
		if len(s.labels) != 4 || s.labels["service_type"] != "hatchery" {
			t.Errorf("%s labels = %v, want service_name, service_type, worker_name, worker_model", name, s.labels)
		}
		out = append(out, s.labels["worker_name"]+" "+s.labels["worker_model"]+" "+formatFloat(s.value))
	}
	sort.Strings(out)
	return out
}

func formatFloat(f float64) string { return model.SampleValue(f).String() }

func metricsListing(ipRange bool) []string {
	props := []string{"name", "config.annotation", "config.template", "summary.config.numCpu", "summary.config.memorySizeMB"}
	if ipRange {
		props = append(props, "guest.net", "guest.ipAddress")
	}
	return props
}

func testPoolRuntime() types.ResourcePoolRuntimeInfo {
	var rt types.ResourcePoolRuntimeInfo
	rt.Cpu.MaxUsage, rt.Cpu.OverallUsage, rt.Cpu.UnreservedForVm = 48000, 12000, 30000
	rt.Memory.MaxUsage, rt.Memory.OverallUsage, rt.Memory.UnreservedForVm = 256<<30, 64<<30, 128<<30
	return rt
}

// mixedFleet is a vCenter shared by this hatchery, another one and non-CDS workloads.
func mixedFleet(service string) []mo.VirtualMachine {
	mine := func(a Annotation) *Annotation { a.HatcheryName = service; a.Created = created; return &a }
	other := &Annotation{HatcheryName: "other", Created: created}
	otherProvisioned := &Annotation{HatcheryName: "other", Provisioning: true, VMwareModelPath: "debian12", Created: created}
	return []mo.VirtualMachine{
		moVM("debian12", nil, true, off, 2, 4096),                            // plain template
		moVM("mail-server", nil, false, on, 8, 32768, "10.0.0.1"),            // not CDS, uses an IP of the range
		moVM("notes", &Annotation{}, false, on, 1, 1024, "192.168.1.9"),      // annotation without owner
		moVM("grp-model", mine(Annotation{Model: true}), true, off, 2, 4096), // CDS template
		moVM("worker-1", mine(Annotation{JobID: "41", WorkerModelPath: "grp/model", IPAddress: "10.0.0.2"}), false, on, 4, 8192, "10.0.0.2", "fe80::1"),
		moVM("worker-2", mine(Annotation{JobID: "42", VMwareModelPath: "debian12"}), false, off, 2, 2048),
		moVM("provision-v2-a", mine(Annotation{Provisioning: true, VMwareModelPath: "debian12", IPAddress: "10.0.0.3"}), false, off, 2, 4096),
		moVM("other-worker", other, false, on, 16, 65536, "10.0.0.7", "192.168.1.5"),
		moVM("provision-v2-other", otherProvisioned, false, off, 2, 4096),
	}
}

func TestCollectMixedInventory(t *testing.T) {
	const service = "h-mixed"
	h := newMetricsHarness(t, service, "10.0.0.0/29", func(m *mock_vsphere.MockVSphereClient) {
		m.EXPECT().ListVirtualMachinesProperties(gomock.Any(), metricsListing(true)).Return(mixedFleet(service), nil).Times(1)
		m.EXPECT().ResourcePoolRuntime(gomock.Any()).Return(testPoolRuntime(), nil).Times(1)
	})
	if err := h.metrics.Collect(context.Background()); err != nil {
		t.Fatal(err)
	}
	got := h.scrape()
	want := map[string]float64{
		// worker-1, worker-2, provision-v2-a: powered-off ones count too.
		"cds_hatchery_vsphere_allocated_vcpus":      8,
		"cds_hatchery_vsphere_allocated_memory_mb":  8192 + 2048 + 4096,
		"cds_hatchery_vsphere_vm_count":             3,
		"cds_hatchery_vsphere_provisioned_vm_count": 1,
		"cds_hatchery_vsphere_template_vcpus":       2,
		"cds_hatchery_vsphere_template_memory_mb":   4096,
		"cds_hatchery_vsphere_template_count":       1,
		// Every listed VM and template, whoever owns it.
		"cds_hatchery_vsphere_pool_total_vcpus":     2 + 8 + 1 + 2 + 4 + 2 + 2 + 16 + 2,
		"cds_hatchery_vsphere_pool_total_memory_mb": 4096 + 32768 + 1024 + 4096 + 8192 + 2048 + 4096 + 65536 + 4096,
		"cds_hatchery_vsphere_pool_total_vm_count":  9,

		"cds_hatchery_vsphere_resource_pool_cpu_max_mhz":             48000,
		"cds_hatchery_vsphere_resource_pool_cpu_usage_mhz":           12000,
		"cds_hatchery_vsphere_resource_pool_cpu_unreserved_mhz":      30000,
		"cds_hatchery_vsphere_resource_pool_memory_max_bytes":        256 << 30,
		"cds_hatchery_vsphere_resource_pool_memory_usage_bytes":      64 << 30,
		"cds_hatchery_vsphere_resource_pool_memory_unreserved_bytes": 128 << 30,

		// 10.0.0.1 (guest of a non-CDS VM), .2 (annotation and guest), .3 (annotation), .7
		// (guest of another hatchery's VM); 192.168.x and fe80::1 are outside the range.
		"cds_hatchery_vsphere_ip_used_count":  4,
		"cds_hatchery_vsphere_ip_total_count": 8,
	}
	for name, v := range want {
		if g := gauge(t, got, name); g != v {
			t.Errorf("%s = %v, want %v", name, g, v)
		}
	}
	if diff := len(got) - len(want) - 2; diff != 0 {
		t.Errorf("scrape has %d families, want %d: %v", len(got), len(want)+2, slices.Sorted(mapKeys(got)))
	}
	wantCPUs := []string{"provision-v2-a debian12 2", "worker-1 grp/model 4", "worker-2 debian12 2"}
	if g := workerSeries(t, got, "cds_hatchery_vsphere_worker_vcpus"); !slices.Equal(g, wantCPUs) {
		t.Errorf("worker_vcpus = %v, want %v", g, wantCPUs)
	}
	wantMem := []string{"provision-v2-a debian12 4096", "worker-1 grp/model 8192", "worker-2 debian12 2048"}
	if g := workerSeries(t, got, "cds_hatchery_vsphere_worker_memory_mb"); !slices.Equal(g, wantMem) {
		t.Errorf("worker_memory_mb = %v, want %v", g, wantMem)
	}
}

func mapKeys(m map[string][]sample) func(func(string) bool) {
	return func(yield func(string) bool) {
		for k := range m {
			if !yield(k) {
				return
			}
		}
	}
}

func TestCollectDropsGoneWorkers(t *testing.T) {
	const service = "h-gone"
	fleet := mixedFleet(service)
	withoutWorker1 := slices.DeleteFunc(slices.Clone(fleet), func(vm mo.VirtualMachine) bool { return vm.Name == "worker-1" })
	h := newMetricsHarness(t, service, "", func(m *mock_vsphere.MockVSphereClient) {
		gomock.InOrder(
			m.EXPECT().ListVirtualMachinesProperties(gomock.Any(), metricsListing(false)).Return(fleet, nil),
			m.EXPECT().ListVirtualMachinesProperties(gomock.Any(), metricsListing(false)).Return(withoutWorker1, nil),
		)
		m.EXPECT().ResourcePoolRuntime(gomock.Any()).Return(testPoolRuntime(), nil).Times(2)
	})
	ctx := context.Background()
	if err := h.metrics.Collect(ctx); err != nil {
		t.Fatal(err)
	}
	if g := workerSeries(t, h.scrape(), "cds_hatchery_vsphere_worker_vcpus"); len(g) != 3 {
		t.Fatalf("first cycle: worker_vcpus = %v, want 3 series", g)
	}
	if err := h.metrics.Collect(ctx); err != nil {
		t.Fatal(err)
	}
	got := h.scrape()
	want := []string{"provision-v2-a debian12 2", "worker-2 debian12 2"}
	if g := workerSeries(t, got, "cds_hatchery_vsphere_worker_vcpus"); !slices.Equal(g, want) {
		t.Errorf("second cycle: worker_vcpus = %v, want %v", g, want)
	}
	if g := workerSeries(t, got, "cds_hatchery_vsphere_worker_memory_mb"); len(g) != 2 {
		t.Errorf("second cycle: worker_memory_mb = %v, want 2 series", g)
	}
	if g := gauge(t, got, "cds_hatchery_vsphere_vm_count"); g != 2 {
		t.Errorf("vm_count = %v, want 2", g)
	}
}

func TestCollectPoolReadFailureSkipsOnlyPoolGauges(t *testing.T) {
	const service = "h-nopool"
	h := newMetricsHarness(t, service, "10.0.0.0/29", func(m *mock_vsphere.MockVSphereClient) {
		m.EXPECT().ListVirtualMachinesProperties(gomock.Any(), metricsListing(true)).Return(mixedFleet(service), nil).Times(1)
		m.EXPECT().ResourcePoolRuntime(gomock.Any()).Return(types.ResourcePoolRuntimeInfo{}, errors.New("permission denied")).Times(1)
	})
	if err := h.metrics.Collect(context.Background()); err != nil {
		t.Fatalf("Collect = %v, want nil: the other gauges are recorded", err)
	}
	got := h.scrape()
	for name := range got {
		if strings.HasPrefix(name, "cds_hatchery_vsphere_resource_pool_") {
			t.Errorf("%s recorded although the resource pool could not be read", name)
		}
	}
	if g := gauge(t, got, "cds_hatchery_vsphere_pool_total_vm_count"); g != 9 {
		t.Errorf("pool_total_vm_count = %v, want 9", g)
	}
	if g := gauge(t, got, "cds_hatchery_vsphere_ip_used_count"); g != 4 {
		t.Errorf("ip_used_count = %v, want 4", g)
	}
	if len(workerSeries(t, got, "cds_hatchery_vsphere_worker_vcpus")) != 3 {
		t.Error("worker gauges missing")
	}
	if !h.logs.has("WARN", "permission denied") {
		t.Error("no warning about the resource pool")
	}
}

func TestCollectWithoutIPRangeHasNoIPGauges(t *testing.T) {
	const service = "h-dhcp"
	h := newMetricsHarness(t, service, "", func(m *mock_vsphere.MockVSphereClient) {
		// No guest properties asked: without iprange nothing needs them.
		m.EXPECT().ListVirtualMachinesProperties(gomock.Any(), metricsListing(false)).Return(mixedFleet(service), nil).Times(1)
		m.EXPECT().ResourcePoolRuntime(gomock.Any()).Return(testPoolRuntime(), nil).Times(1)
	})
	if err := h.metrics.Collect(context.Background()); err != nil {
		t.Fatal(err)
	}
	got := h.scrape()
	for _, name := range []string{"cds_hatchery_vsphere_ip_used_count", "cds_hatchery_vsphere_ip_total_count"} {
		if _, ok := got[name]; ok {
			t.Errorf("%s exported without iprange", name)
		}
	}
	if g := gauge(t, got, "cds_hatchery_vsphere_vm_count"); g != 3 {
		t.Errorf("vm_count = %v, want 3", g)
	}
}

func TestCollectListingErrorRecordsNothing(t *testing.T) {
	const service = "h-down"
	listErr := errors.New("connection refused")
	h := newMetricsHarness(t, service, "10.0.0.0/29", func(m *mock_vsphere.MockVSphereClient) {
		gomock.InOrder(
			m.EXPECT().ListVirtualMachinesProperties(gomock.Any(), metricsListing(true)).Return(nil, listErr),
			m.EXPECT().ListVirtualMachinesProperties(gomock.Any(), metricsListing(true)).Return(mixedFleet(service), nil),
			m.EXPECT().ListVirtualMachinesProperties(gomock.Any(), metricsListing(true)).Return(nil, listErr),
		)
		// The cycles whose listing failed do not read the pool either.
		m.EXPECT().ResourcePoolRuntime(gomock.Any()).Return(testPoolRuntime(), nil).Times(1)
	})
	ctx := context.Background()
	if err := h.metrics.Collect(ctx); !errors.Is(err, listErr) {
		t.Fatalf("Collect = %v, want the listing error", err)
	}
	if got := h.scrape(); len(got) != 0 {
		t.Fatalf("failed first cycle exported %v", slices.Sorted(mapKeys(got)))
	}
	if err := h.metrics.Collect(ctx); err != nil {
		t.Fatal(err)
	}
	before := h.scrape()
	if err := h.metrics.Collect(ctx); !errors.Is(err, listErr) {
		t.Fatalf("Collect = %v, want the listing error", err)
	}
	after := h.scrape()
	// A vCenter outage must not read as an empty datacenter: the last values stay.
	for _, name := range []string{"cds_hatchery_vsphere_vm_count", "cds_hatchery_vsphere_pool_total_vm_count", "cds_hatchery_vsphere_ip_used_count"} {
		if b, a := gauge(t, before, name), gauge(t, after, name); a != b || a == 0 {
			t.Errorf("%s = %v after a failed cycle, want %v", name, a, b)
		}
	}
	if g := workerSeries(t, after, "cds_hatchery_vsphere_worker_vcpus"); len(g) != 3 {
		t.Errorf("worker series after a failed cycle = %v, want the 3 of the last good cycle", g)
	}
}

func TestMetricsRunCollectsAtStartAndOnEachTick(t *testing.T) {
	const service = "h-run"
	collected := make(chan struct{})
	h := newMetricsHarness(t, service, "", func(m *mock_vsphere.MockVSphereClient) {
		m.EXPECT().ListVirtualMachinesProperties(gomock.Any(), metricsListing(false)).
			DoAndReturn(func(context.Context, ...string) ([]mo.VirtualMachine, error) {
				collected <- struct{}{}
				return mixedFleet(service), nil
			}).Times(2)
		m.EXPECT().ResourcePoolRuntime(gomock.Any()).Return(testPoolRuntime(), nil).Times(2)
	})
	ctx, cancel := context.WithCancel(context.Background())
	ticks := make(chan time.Time)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		h.metrics.run(ctx, time.Minute, ticks)
	}()
	<-collected // at start
	ticks <- time.Time{}
	<-collected // on the tick
	cancel()
	wg.Wait()
	// Run returned after the second cycle, whose gauges are out.
	if g := gauge(t, h.scrape(), "cds_hatchery_vsphere_vm_count"); g != 3 {
		t.Errorf("vm_count = %v, want 3", g)
	}
}
