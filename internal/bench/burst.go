package bench

import (
	"context"
	"fmt"
	"time"

	"github.com/hatchery-vsphere/hatchery-vsphere/internal/config"
	"github.com/hatchery-vsphere/hatchery-vsphere/internal/daemon"
	"github.com/hatchery-vsphere/hatchery-vsphere/internal/hatchery"
)

// burstPoll is the job polling period of the burst daemon. The websocket announces each
// job at once; polling only catches what the hatchery had no room for when announced, and
// at the default 20 s it would measure the polling period rather than the clone pipeline.
const burstPoll = time.Second

// burstTimeout bounds the wait for the burst's workers: ten times the physical limit at
// the figures.
const burstTimeout = 2 * time.Minute

// runBurst queues BurstJobs v2 jobs at once on a vCenter whose clone calls each take
// BurstCloneDelay, with maxWorker = 0 and maxConcurrentClones = BurstConcurrency, and
// measures the time until every worker is launched. One job run alone first gives the
// launch time (queued → launched, less the clone) that the physical limit adds.
func (b *runner) runBurst(ctx context.Context) (*BurstResult, error) {
	p := b.params
	res := &BurstResult{Jobs: p.BurstJobs, Concurrency: p.BurstConcurrency, CloneDelay: p.BurstCloneDelay, Provisioning: p.BurstProvisioning, Poll: burstPoll}
	b.progress("burst: starting the simulated vCenter and CDS API")
	// Workers hold their job: the VMs stay powered on as they would while real jobs run,
	// and no power-off or deletion competes with the clones.
	h, err := b.newHarness(ctx, daemon.HarnessOptions{HoldJobs: true})
	if err != nil {
		return nil, err
	}
	defer h.Close()
	// simenv holds each CloneVM_Task call for the delay before the simulator creates the
	// task; the task itself then completes at once. Concurrent calls wait concurrently.
	h.VCenter.SetMethodDelay("CloneVM_Task", p.BurstCloneDelay)

	d, err := b.startDaemon(ctx, h, func(cfg *config.File) {
		vs := &cfg.Hatchery.VSphere
		vs.MaxConcurrentClones = p.BurstConcurrency
		vs.CommonConfiguration.Provision.MaxWorker = 0
		vs.CommonConfiguration.Provision.MaxConcurrentProvisioning = p.BurstProvisioning
	}, daemon.WithIntervals(hatchery.Intervals{Poll: burstPoll}))
	if err != nil {
		return nil, err
	}
	defer func() { _ = d.stop() }()
	if err := waitReady(ctx, h, d.proxy, d.alive, b.quiet()); err != nil {
		if d.alive.Err() != nil {
			return nil, d.died()
		}
		return nil, err
	}

	b.progress("burst: one job alone")
	start := time.Now()
	queueJobs(h, 1)
	if err := waitLaunched(ctx, h, d.alive, 1, launchTimeout); err != nil {
		return nil, fmt.Errorf("single job: %w", err)
	}
	res.Single = time.Since(start)

	b.progress("burst: %d jobs at once", p.BurstJobs)
	before := d.proxy.Snapshot()
	simBefore := h.VCenter.Stats()
	start = time.Now()
	queueJobs(h, p.BurstJobs)
	// A burst not over after burstTimeout (ten times the limit) is a figure too: the
	// report gives how many workers were launched by then.
	err = waitLaunched(ctx, h, d.alive, 1+p.BurstJobs, burstTimeout)
	res.Total = time.Since(start)
	res.Launched = h.WorkersLaunched() - 1
	res.Traffic = d.proxy.Snapshot().Sub(before)
	sim := h.VCenter.Stats().Sub(simBefore)
	res.SimBusy, res.SimLongPolls = sim.Busy, sim.LongPolls
	res.SimClones, res.SimCloneCalls = sim.Clones, sim.CloneCalls
	if err != nil && (d.alive.Err() != nil || ctx.Err() != nil) {
		return nil, fmt.Errorf("burst: %w", err)
	}
	if problems := h.Problems(); len(problems) > 0 {
		return res, fmt.Errorf("%d workers refused by the simulated API, first: %w", len(problems), problems[0])
	}
	return res, nil
}
