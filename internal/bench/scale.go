package bench

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/hatchery-vsphere/hatchery-vsphere/internal/cds"
	"github.com/hatchery-vsphere/hatchery-vsphere/internal/config"
	"github.com/hatchery-vsphere/hatchery-vsphere/internal/daemon"
	"github.com/hatchery-vsphere/hatchery-vsphere/internal/hatchery"
	"github.com/hatchery-vsphere/hatchery-vsphere/internal/vsphere"
	"github.com/hatchery-vsphere/hatchery-vsphere/internal/vspherehatchery"
)

// FullListingProperties are the properties the original listed for every decision.
var FullListingProperties = []string{"name", "summary", "guest", "config"}

// changeFeedMethod is the property collector's long poll, the inventory cache's change feed.
const changeFeedMethod = "WaitForUpdatesEx"

// fullListingTimeout bounds the comparison listing, which takes tens of seconds at 5,000
// VMs in the simulator (more than the daemon's 15 s call timeout).
const fullListingTimeout = 5 * time.Minute

// runScale runs the decision, idle and memory scenarios on one simulated vCenter whose
// inventory of unrelated VMs grows from one size to the next (creating 5,000 VMs takes
// tens of seconds: it is done once).
func (b *runner) runScale(ctx context.Context) {
	p := b.params
	var sizes []int
	if b.has(ScenarioDecision) {
		sizes = append(sizes, p.DecisionSizes...)
	}
	if b.has(ScenarioIdle) {
		sizes = append(sizes, p.IdleVMs)
	}
	if b.has(ScenarioMemory) {
		sizes = append(sizes, p.MemoryVMs)
	}
	slices.Sort(sizes)
	sizes = slices.Compact(sizes)

	b.progress("starting the simulated vCenter and CDS API")
	h, err := b.newHarness(ctx, daemon.HarnessOptions{})
	if err != nil {
		for _, s := range []string{ScenarioDecision, ScenarioIdle, ScenarioMemory} {
			if b.has(s) {
				b.report.addError(s, err)
			}
		}
		return
	}
	defer h.Close()
	inv := &inventory{h: h}

	for _, n := range sizes {
		if ctx.Err() != nil {
			b.report.addError("run", ctx.Err())
			return
		}
		b.progress("creating plain VMs up to %d", n)
		begin := time.Now()
		if err := inv.grow(ctx, n); err != nil {
			b.report.addError(fmt.Sprintf("inventory of %d VMs", n), err)
			return
		}
		b.progress("%d plain VMs ready in %s", n, time.Since(begin).Round(time.Millisecond))

		decision := b.has(ScenarioDecision) && slices.Contains(p.DecisionSizes, n)
		idle := b.has(ScenarioIdle) && n == p.IdleVMs
		if decision {
			b.progress("%d VMs: direct decisions and a full listing", n)
			d, err := b.measureDecisions(ctx, h, n)
			if err != nil {
				b.report.addError(fmt.Sprintf("decision at %d VMs", n), err)
			} else {
				b.report.Decision = append(b.report.Decision, d)
			}
		}
		if decision || idle {
			window := p.ShortIdleWindow
			if idle {
				window = p.IdleWindow
			}
			b.progress("%d VMs: daemon idle for %s%s", n, window, map[bool]string{true: ", then one job", false: ""}[decision])
			w, job, err := b.measureDaemon(ctx, h, n, window, decision)
			if err != nil {
				b.report.addError(fmt.Sprintf("daemon at %d VMs", n), err)
			}
			if w != nil {
				w.Scenario = idle
				b.report.Idle = append(b.report.Idle, *w)
			}
			if job != nil {
				for i := range b.report.Decision {
					if b.report.Decision[i].VMs == n {
						b.report.Decision[i].Job = job
					}
				}
			}
		}
		if b.has(ScenarioMemory) && n == p.MemoryVMs {
			b.progress("%d VMs: daemon in a child process for its peak RSS", n)
			m, w, err := b.measureMemory(ctx, h, n)
			if err != nil {
				b.report.addError(ScenarioMemory, err)
			}
			if w != nil {
				b.report.Idle = append(b.report.Idle, *w)
			}
			b.report.Memory = m
		}
	}
}

// measureDecisions times the provider's decision calls (CanSpawn then
// CanAllocateResources for one v2 job) on vCenter clients of their own: one that lists
// the VMs from vCenter at each decision, one whose narrow listings are answered by the
// live inventory cache (vsphere.Inventory); and one full listing of the properties the
// original asked for.
func (b *runner) measureDecisions(ctx context.Context, h *daemon.Harness, n int) (DecisionAtSize, error) {
	res := DecisionAtSize{VMs: n, Decisions: b.params.DecisionsPerSize}

	direct, err := b.connectMeasured(ctx, h)
	if err != nil {
		return res, err
	}
	defer direct.close()
	cfg := daemonConfig(h, direct.proxy).Hatchery.VSphere
	if res.Direct, err = b.decide(ctx, cfg, direct.proxy, vsphere.Instrument(direct.vc), n, "direct"); err != nil {
		return res, err
	}

	cached, err := b.connectMeasured(ctx, h)
	if err != nil {
		return res, err
	}
	defer cached.close()
	inv := vsphere.NewInventory(cached.vc, vsphere.InventoryOptions{})
	ictx, stopInventory := context.WithCancel(ctx)
	invDone := make(chan struct{})
	go func() {
		defer close(invDone)
		_ = inv.Run(ictx) // returns nil once ictx ends; failures show as a cache never live
	}()
	defer func() {
		stopInventory()
		<-invDone
	}()
	before := cached.proxy.Snapshot()
	start := time.Now()
	wctx, cancel := context.WithTimeout(ctx, readyTimeout)
	err = inv.WaitReady(wctx)
	cancel()
	if err != nil {
		return res, fmt.Errorf("first sync of the inventory cache: %w", err)
	}
	res.CacheSync = time.Since(start)
	res.CacheSyncTraffic = cached.proxy.Snapshot().Sub(before)
	figures, err := b.decide(ctx, cfg, cached.proxy, vsphere.NewCachedClient(vsphere.Instrument(cached.vc), inv), n, "cached")
	if err != nil {
		return res, err
	}
	res.Cached = &figures

	before = direct.proxy.Snapshot()
	start = time.Now()
	vms, err := direct.vc.ListVirtualMachinesProperties(ctx, FullListingProperties...)
	if err != nil {
		return res, fmt.Errorf("full listing: %w", err)
	}
	res.FullListingWall = time.Since(start)
	d := direct.proxy.Snapshot().Sub(before)
	res.FullListingCalls, res.FullListingBytes, res.FullListingVMs = d.Calls, d.Bytes, len(vms)
	return res, nil
}

// measuredClient is a vCenter client whose traffic goes through a proxy of its own.
type measuredClient struct {
	proxy *vcenterProxy
	vc    *vsphere.Client
}

func (m *measuredClient) close() {
	_ = m.vc.Close() // the simulated session ends with the harness anyway
	m.proxy.Close()
}

// connectMeasured connects a client the way the daemon does, with a call timeout long
// enough for the full listing at 5,000 VMs.
func (b *runner) connectMeasured(ctx context.Context, h *daemon.Harness) (*measuredClient, error) {
	proxy, err := newVCenterProxy(h.VCenter, b.dir)
	if err != nil {
		return nil, err
	}
	vopts := daemon.VSphereOptions(daemonConfig(h, proxy).Hatchery.VSphere)
	vopts.CallTimeout = fullListingTimeout
	vc, err := vsphere.Connect(ctx, vopts)
	if err != nil {
		proxy.Close()
		return nil, fmt.Errorf("connect to the simulated vCenter: %w", err)
	}
	return &measuredClient{proxy: proxy, vc: vc}, nil
}

// decide runs DecisionsPerSize decisions through client and averages their cost.
func (b *runner) decide(ctx context.Context, cfg config.VSphere, proxy *vcenterProxy, client vsphere.VSphereClient, n int, stack string) (DecisionFigures, error) {
	var out DecisionFigures
	provider, err := vspherehatchery.New(cfg, client, b.opts.Logger, nil)
	if err != nil {
		return out, fmt.Errorf("build the provider: %w", err)
	}
	model := &hatchery.WorkerStarterWorkerModel{
		ModelV2:     &cds.V2WorkerModel{Name: benchModel.Name, Type: cds.ModelTypeVSphere, OSArch: benchModel.OSArch},
		VSphereSpec: cds.V2WorkerModelVSphereSpec{Image: benchModel.Spec.Image},
	}
	var total Traffic
	var wall time.Duration
	for i := range b.params.DecisionsPerSize {
		// A v2 run job ID is a UUID (other IDs read as model registrations).
		jobID := fmt.Sprintf("%08x-0000-4000-8000-%012x", n, i)
		before := proxy.Snapshot()
		start := time.Now()
		if !provider.CanSpawn(ctx, model, jobID, nil) {
			return out, fmt.Errorf("%s: CanSpawn refused job %s: the decision measured would not be a normal one", stack, jobID)
		}
		ok, err := provider.CanAllocateResources(ctx, model, jobID, nil)
		if err != nil {
			return out, fmt.Errorf("%s: CanAllocateResources: %w", stack, err)
		}
		if !ok {
			return out, fmt.Errorf("%s: CanAllocateResources refused job %s", stack, jobID)
		}
		wall += time.Since(start)
		total = total.add(proxy.Snapshot().Sub(before))
	}
	// The cache's change feed runs whether or not a decision is made: it is idle cost,
	// counted there, not a decision's.
	out.FeedCalls = total.ByMethod[changeFeedMethod]
	total.Calls -= out.FeedCalls
	total.Bytes -= total.BytesByMethod[changeFeedMethod]
	delete(total.ByMethod, changeFeedMethod)
	k := float64(b.params.DecisionsPerSize)
	out.CallsPerDecision = float64(total.Calls) / k
	out.BytesPerDecision = float64(total.Bytes) / k
	out.Wall = wall / time.Duration(b.params.DecisionsPerSize)
	out.Methods = map[string]float64{}
	for m, c := range total.ByMethod {
		out.Methods[m] = float64(c) / k
	}
	return out, nil
}

// add sums two traffic deltas.
func (t Traffic) add(o Traffic) Traffic {
	out := Traffic{Calls: t.Calls + o.Calls, Bytes: t.Bytes + o.Bytes, ByMethod: map[string]int{}, BytesByMethod: map[string]int64{}}
	for _, x := range []Traffic{t, o} {
		for m, c := range x.ByMethod {
			out.ByMethod[m] += c
		}
		for m, c := range x.BytesByMethod {
			out.BytesByMethod[m] += c
		}
	}
	return out
}

// measureDaemon runs the daemon with its production settings, counts its vCenter traffic
// while idle for window, then, if job, queues one v2 job and measures what it took until
// the worker was launched in its VM.
func (b *runner) measureDaemon(ctx context.Context, h *daemon.Harness, n int, window time.Duration, job bool) (*IdleWindow, *JobCost, error) {
	d, err := b.startDaemon(ctx, h, func(cfg *config.File) {
		cfg.Hatchery.VSphere.CommonConfiguration.Provision.MaxWorker = 0
	})
	if err != nil {
		return nil, nil, err
	}
	defer func() { _ = d.stop() }()
	if err := waitReady(ctx, h, d.proxy, d.alive, b.quiet()); err != nil {
		if d.alive.Err() != nil {
			return nil, nil, d.died()
		}
		return nil, nil, err
	}
	idle, err := countIdle(ctx, d.proxy, d.alive, n, window)
	if err != nil {
		return nil, nil, err
	}
	if !job {
		return &idle, nil, nil
	}
	launched := h.WorkersLaunched()
	before := d.proxy.Snapshot()
	start := time.Now()
	queueJobs(h, 1)
	if err := waitLaunched(ctx, h, d.alive, launched+1, launchTimeout); err != nil {
		return &idle, nil, err
	}
	cost := &JobCost{Latency: time.Since(start), Traffic: d.proxy.Snapshot().Sub(before), Idle: idle}
	return &idle, cost, nil
}

// quiet is how long a daemon's vCenter traffic must pause for its start-up to count as over.
func (b *runner) quiet() time.Duration {
	if b.opts.Quick {
		return 300 * time.Millisecond
	}
	return 2 * time.Second
}

// errNoDaemonCommand says the memory scenario has no daemon binary to run.
var errNoDaemonCommand = errors.New("no daemon binary to run in a child process (bench.Options.DaemonCommand is empty)")
