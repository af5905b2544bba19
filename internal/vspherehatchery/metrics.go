package vspherehatchery

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/vmware/govmomi/vim25/types"
	"go.opencensus.io/stats"
	"go.opencensus.io/stats/view"
	"go.opencensus.io/tag"

	"github.com/hatchery-vsphere/hatchery-vsphere/internal/cds"
)

// MetricsPeriod is how often the vSphere gauges are collected (seed §13).
const MetricsPeriod = 30 * time.Second

// Tags of the vSphere views (seed §14.1-14.5). service_name and service_type carry the same
// keys as the framework's views, so both sets join in Prometheus.
var (
	tagServiceName = tag.MustNewKey("service_name")
	tagServiceType = tag.MustNewKey("service_type")
	tagWorkerName  = tag.MustNewKey("worker_name")
	tagWorkerModel = tag.MustNewKey("worker_model")
)

// vSphere measures. OpenCensus measures are process-wide, hence package-level; the names are
// the seed's byte for byte (the exporter turns "/" into "_": cds_hatchery_vsphere_...).
var (
	mWorkerVCPUs    = stats.Int64("cds/hatchery/vsphere/worker_vcpus", "Number of vCPUs for a worker VM", "1")
	mWorkerMemoryMB = stats.Int64("cds/hatchery/vsphere/worker_memory_mb", "Memory allocated to a worker VM", "MBy")

	mAllocatedVCPUs     = stats.Int64("cds/hatchery/vsphere/allocated_vcpus", "Total vCPUs allocated by this hatchery's VMs", "1")
	mAllocatedMemoryMB  = stats.Int64("cds/hatchery/vsphere/allocated_memory_mb", "Total memory allocated by this hatchery's VMs", "MBy")
	mVMCount            = stats.Int64("cds/hatchery/vsphere/vm_count", "Total number of VMs managed by this hatchery (workers + provisioned)", "1")
	mProvisionedVMCount = stats.Int64("cds/hatchery/vsphere/provisioned_vm_count", "Number of pre-provisioned (idle) VMs", "1")
	mTemplateVCPUs      = stats.Int64("cds/hatchery/vsphere/template_vcpus", "Total vCPUs defined by template VMs", "1")
	mTemplateMemoryMB   = stats.Int64("cds/hatchery/vsphere/template_memory_mb", "Total memory defined by template VMs", "MBy")
	mTemplateCount      = stats.Int64("cds/hatchery/vsphere/template_count", "Number of template VMs managed by this hatchery", "1")

	mPoolTotalVCPUs    = stats.Int64("cds/hatchery/vsphere/pool_total_vcpus", "Total vCPUs across ALL VMs in the datacenter", "1")
	mPoolTotalMemoryMB = stats.Int64("cds/hatchery/vsphere/pool_total_memory_mb", "Total memory across ALL VMs in the datacenter", "MBy")
	mPoolTotalVMCount  = stats.Int64("cds/hatchery/vsphere/pool_total_vm_count", "Total number of VMs in the datacenter", "1")

	mRPCPUMaxMHz             = stats.Int64("cds/hatchery/vsphere/resource_pool_cpu_max_mhz", "Resource Pool maximum CPU capacity", "MHz")
	mRPCPUUsageMHz           = stats.Int64("cds/hatchery/vsphere/resource_pool_cpu_usage_mhz", "Resource Pool current CPU usage", "MHz")
	mRPCPUUnreservedMHz      = stats.Int64("cds/hatchery/vsphere/resource_pool_cpu_unreserved_mhz", "Resource Pool CPU unreserved for VMs", "MHz")
	mRPMemoryMaxBytes        = stats.Int64("cds/hatchery/vsphere/resource_pool_memory_max_bytes", "Resource Pool maximum memory capacity", stats.UnitBytes)
	mRPMemoryUsageBytes      = stats.Int64("cds/hatchery/vsphere/resource_pool_memory_usage_bytes", "Resource Pool current memory usage", stats.UnitBytes)
	mRPMemoryUnreservedBytes = stats.Int64("cds/hatchery/vsphere/resource_pool_memory_unreserved_bytes", "Resource Pool memory unreserved for VMs", stats.UnitBytes)

	mIPUsedCount  = stats.Int64("cds/hatchery/vsphere/ip_used_count", "Number of IP addresses from the configured range currently in use", "1")
	mIPTotalCount = stats.Int64("cds/hatchery/vsphere/ip_total_count", "Total number of IP addresses in the configured range", "1")
)

// lastValueViews makes one LastValue view per measure, named after it.
func lastValueViews(keys []tag.Key, ms ...*stats.Int64Measure) []*view.View {
	views := make([]*view.View, 0, len(ms))
	for _, m := range ms {
		views = append(views, &view.View{
			Name:        m.Name(),
			Description: m.Description(),
			Measure:     m,
			Aggregation: view.LastValue(),
			TagKeys:     keys,
		})
	}
	return views
}

// The views are built once: OpenCensus accepts registering a view again only when it is the
// same definition, and the per-worker ones are unregistered and registered every cycle.
var (
	workerViews = lastValueViews([]tag.Key{tagServiceName, tagServiceType, tagWorkerName, tagWorkerModel},
		mWorkerVCPUs, mWorkerMemoryMB)
	baseViews = lastValueViews([]tag.Key{tagServiceName, tagServiceType},
		mAllocatedVCPUs, mAllocatedMemoryMB, mVMCount, mProvisionedVMCount,
		mTemplateVCPUs, mTemplateMemoryMB, mTemplateCount,
		mPoolTotalVCPUs, mPoolTotalMemoryMB, mPoolTotalVMCount,
		mRPCPUMaxMHz, mRPCPUUsageMHz, mRPCPUUnreservedMHz,
		mRPMemoryMaxBytes, mRPMemoryUsageBytes, mRPMemoryUnreservedBytes,
		mIPUsedCount, mIPTotalCount)
)

// metricsProperties are the VM properties the gauges need: ownership and templates from the
// annotation, sizes from the summary. No whole config, summary or guest: those cost ~10x more
// on large inventories. The guest addresses are added only when iprange is set.
var metricsProperties = []string{
	"name",
	"config.annotation",
	"config.template",
	"summary.config.numCpu",
	"summary.config.memorySizeMB",
}

var metricsGuestProperties = []string{"guest.net", "guest.ipAddress"}

// Metrics collects the vSphere gauges of seed §13 (protocol spec §23) from one narrow VM
// listing and one resource pool read per cycle.
type Metrics struct {
	p        *Provider
	mutators []tag.Mutator

	// mu serialises cycles: two interleaved cycles would unregister each other's per-worker
	// series.
	mu sync.Mutex
}

// NewMetrics builds the collector of the provider's vSphere gauges, tagged with its
// hatchery name.
func NewMetrics(p *Provider) *Metrics {
	return &Metrics{
		p: p,
		mutators: []tag.Mutator{
			tag.Upsert(tagServiceName, p.hatcheryName()),
			tag.Upsert(tagServiceType, cds.ServiceTypeHatchery),
		},
	}
}

// RegisterViews registers the vSphere views with OpenCensus. Registering them again is a
// no-op, so the daemon and tests may call it more than once.
func (m *Metrics) RegisterViews() error {
	if err := view.Register(baseViews...); err != nil {
		return fmt.Errorf("register vSphere metric views: %w", err)
	}
	if err := view.Register(workerViews...); err != nil {
		return fmt.Errorf("register vSphere worker metric views: %w", err)
	}
	return nil
}

// Run collects the gauges at once, then every period (MetricsPeriod when period <= 0), until
// ctx is done. A failed cycle is logged and the next one tries again.
func (m *Metrics) Run(ctx context.Context, period time.Duration) {
	if period <= 0 {
		period = MetricsPeriod
	}
	t := time.NewTicker(period)
	defer t.Stop()
	m.run(ctx, period, t.C)
}

func (m *Metrics) run(ctx context.Context, period time.Duration, ticks <-chan time.Time) {
	for {
		cctx, cancel := context.WithTimeout(ctx, period)
		if err := m.Collect(cctx); err != nil {
			m.p.log.Error(ctx, "vSphere metrics: %v", err)
		}
		cancel()
		select {
		case <-ctx.Done():
			return
		case <-ticks:
		}
	}
}

// vsphereGauges are the values of one cycle.
type vsphereGauges struct {
	workers []workerGauge

	allocatedVCPUs, allocatedMemoryMB, vmCount, provisionedVMCount int64
	templateVCPUs, templateMemoryMB, templateCount                 int64
	poolVCPUs, poolMemoryMB, poolVMCount                           int64

	ipEnabled     bool
	ipUsed, ipAll int64
}

type workerGauge struct {
	name, model     string
	vcpus, memoryMB int64
}

// computeGauges derives the gauges from one listing (protocol spec §23, vSphere views).
func computeGauges(inv Inventory, hatcheryName string, ips *IPPool) vsphereGauges {
	var g vsphereGauges
	for _, vm := range inv {
		cpus, mem := int64(vm.NumCPU), int64(vm.MemoryMB)
		g.poolVCPUs += cpus
		g.poolMemoryMB += mem
		g.poolVMCount++
		if !vm.OwnedBy(hatcheryName) {
			continue
		}
		if vm.Annotation.Model {
			g.templateVCPUs += cpus
			g.templateMemoryMB += mem
			g.templateCount++
			continue
		}
		// Powered-off VMs count too: they are what this hatchery holds, not what it burns
		// (CanAllocateResources counts the latter).
		g.allocatedVCPUs += cpus
		g.allocatedMemoryMB += mem
		g.vmCount++
		if strings.HasPrefix(vm.Name, ProvisionPrefix) {
			g.provisionedVMCount++
		}
		model := vm.Annotation.WorkerModelPath
		if model == "" {
			model = vm.Annotation.VMwareModelPath
		}
		g.workers = append(g.workers, workerGauge{name: vm.Name, model: model, vcpus: cpus, memoryMB: mem})
	}
	if ips != nil && ips.Enabled() {
		used, total := ips.Counts(inv.UsedIPs()...)
		g.ipEnabled, g.ipUsed, g.ipAll = true, int64(used), int64(total)
	}
	return g
}

// Collect runs one cycle: it lists the VMs once (narrow properties) and reads the resource
// pool once, then records every gauge. A failed listing records nothing and is returned: a
// vCenter outage must not look like an empty datacenter. An unreadable resource pool only
// skips the resource pool gauges, with a warning. When Collect returns, the values are
// visible to the exporter.
func (m *Metrics) Collect(ctx context.Context) error {
	m.mu.Lock()
	defer m.mu.Unlock()

	props := metricsProperties
	if m.p.ips.Enabled() {
		props = append(append([]string(nil), metricsProperties...), metricsGuestProperties...)
	}
	vms, err := m.p.client.ListVirtualMachinesProperties(ctx, props...)
	if err != nil {
		return fmt.Errorf("collect vSphere metrics: list virtual machines: %w", err)
	}
	g := computeGauges(NewInventory(vms), m.p.hatcheryName(), m.p.ips)

	rt, rtErr := m.p.client.ResourcePoolRuntime(ctx)
	if rtErr != nil {
		m.p.log.Warn(ctx, "vSphere metrics: resource pool gauges skipped: %v", rtErr)
	}

	if err := m.RegisterViews(); err != nil {
		return err
	}
	ms := []stats.Measurement{
		mAllocatedVCPUs.M(g.allocatedVCPUs), mAllocatedMemoryMB.M(g.allocatedMemoryMB),
		mVMCount.M(g.vmCount), mProvisionedVMCount.M(g.provisionedVMCount),
		mTemplateVCPUs.M(g.templateVCPUs), mTemplateMemoryMB.M(g.templateMemoryMB),
		mTemplateCount.M(g.templateCount),
		mPoolTotalVCPUs.M(g.poolVCPUs), mPoolTotalMemoryMB.M(g.poolMemoryMB),
		mPoolTotalVMCount.M(g.poolVMCount),
	}
	if rtErr == nil {
		ms = append(ms, resourcePoolMeasurements(rt)...)
	}
	if g.ipEnabled {
		ms = append(ms, mIPUsedCount.M(g.ipUsed), mIPTotalCount.M(g.ipAll))
	}
	if err := stats.RecordWithTags(ctx, m.mutators, ms...); err != nil {
		return fmt.Errorf("collect vSphere metrics: record: %w", err)
	}

	m.recordWorkers(ctx, g.workers)

	// Recording is asynchronous in OpenCensus but the exporter reads the views directly; a
	// retrieval goes through the same queue as the records, so once it returns they are
	// applied.
	if _, err := view.RetrieveData(mVMCount.Name()); err != nil {
		return fmt.Errorf("collect vSphere metrics: flush: %w", err)
	}
	return nil
}

// recordWorkers replaces the per-worker series: unregistering the views drops the series of
// VMs gone since the last cycle (the swarm hatchery's pattern, seed §14.1).
func (m *Metrics) recordWorkers(ctx context.Context, workers []workerGauge) {
	view.Unregister(workerViews...)
	if err := view.Register(workerViews...); err != nil {
		m.p.log.Error(ctx, "vSphere metrics: register worker views: %v", err)
		return
	}
	for _, w := range workers {
		mutators := append(append([]tag.Mutator(nil), m.mutators...),
			tag.Upsert(tagWorkerName, w.name),
			tag.Upsert(tagWorkerModel, w.model))
		if err := stats.RecordWithTags(ctx, mutators, mWorkerVCPUs.M(w.vcpus), mWorkerMemoryMB.M(w.memoryMB)); err != nil {
			// Only an invalid tag value (a name OpenCensus refuses) gets here: skip that VM.
			m.p.log.Warn(ctx, "vSphere metrics: worker %q: %v", w.name, err)
		}
	}
}

func resourcePoolMeasurements(rt types.ResourcePoolRuntimeInfo) []stats.Measurement {
	return []stats.Measurement{
		mRPCPUMaxMHz.M(rt.Cpu.MaxUsage),
		mRPCPUUsageMHz.M(rt.Cpu.OverallUsage),
		mRPCPUUnreservedMHz.M(rt.Cpu.UnreservedForVm),
		mRPMemoryMaxBytes.M(rt.Memory.MaxUsage),
		mRPMemoryUsageBytes.M(rt.Memory.OverallUsage),
		mRPMemoryUnreservedBytes.M(rt.Memory.UnreservedForVm),
	}
}
