package vspherehatchery

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/hatchery-vsphere/hatchery-vsphere/internal/hatchery"
	"github.com/hatchery-vsphere/hatchery-vsphere/internal/lifecycle"
)

// Timings are the waits of the vSphere side (protocol spec §18.10). The zero value of a
// field means the original's value (DefaultTimings).
type Timings struct {
	// GuestReady bounds the wait for guest operations after a power-on (3 min).
	GuestReady time.Duration
	// IP bounds the wait for the VM's IPv4 address (3 min).
	IP time.Duration
	// EnvProbe bounds the `env` probe that proves guest operations run (1 min), retried
	// every EnvProbeEvery (1 s).
	EnvProbe      time.Duration
	EnvProbeEvery time.Duration
	// TemplatePowerOff bounds the wait for the template VM to shut down after its
	// post-command (10 min); TemplateBuild bounds a whole template build (15 min).
	TemplatePowerOff time.Duration
	TemplateBuild    time.Duration
	// Cleanup is the period of the AWOL and disabled-worker passes (the original's 2 min;
	// zero means killAwolServersInterval, 60 s by default).
	Cleanup time.Duration
	// FinishedGrace is how long a finished worker VM is kept after its power-off (zero
	// means finishedWorkerGracePeriod, 180 s by default; the key has whole seconds, tests
	// of the whole daemon want less).
	FinishedGrace time.Duration
}

// DefaultTimings are the original's values.
func DefaultTimings() Timings {
	return Timings{
		GuestReady:       3 * time.Minute,
		IP:               3 * time.Minute,
		EnvProbe:         time.Minute,
		EnvProbeEvery:    time.Second,
		TemplatePowerOff: 10 * time.Minute,
		TemplateBuild:    15 * time.Minute,
		Cleanup:          2 * time.Minute,
	}
}

func (t Timings) withDefaults() Timings {
	d := DefaultTimings()
	fill := func(v *time.Duration, def time.Duration) {
		if *v <= 0 {
			*v = def
		}
	}
	fill(&t.GuestReady, d.GuestReady)
	fill(&t.IP, d.IP)
	fill(&t.EnvProbe, d.EnvProbe)
	fill(&t.EnvProbeEvery, d.EnvProbeEvery)
	fill(&t.TemplatePowerOff, d.TemplatePowerOff)
	fill(&t.TemplateBuild, d.TemplateBuild)
	fill(&t.Cleanup, d.Cleanup)
	return t
}

// OrchestratorOptions tune an Orchestrator; the zero value is the production setting.
type OrchestratorOptions struct {
	Timings Timings
	// Tick makes the tick sources of the loops ("vsphere-cleanup", "vsphere-provisioning")
	// and of the guest `env` probe ("vsphere-env-probe"); nil means real tickers. Tests
	// inject ready channels instead of sleeping.
	Tick hatchery.TickFunc
	// NewName draws a VM name with a prefix (provisioned VMs); nil means
	// hatchery.GenerateWorkerName.
	NewName func(prefix string) string
	// MetricsPeriod is the period of the vSphere metrics collection (30 s when zero);
	// negative turns the collection off (tests that count vCenter calls).
	MetricsPeriod time.Duration
	// Rand draws the jitter of the backoff after failed passes, in [0, 1); nil means
	// math/rand/v2.
	Rand func() float64
}

// Orchestrator is the part of the vSphere provider that acts on vCenter: it spawns workers
// (fresh clone, reuse of a provisioned VM, v1 template build), keeps the provisioning pools
// filled and deletes the VMs that are done. It embeds the decision part (Provider) and
// shares its caches and IP pool, so together they implement hatchery.Provider.
//
// It is a separate type only because the two halves were written side by side; its fields
// can move into Provider without other change.
type Orchestrator struct {
	*Provider

	timings       Timings
	metricsPeriod time.Duration
	tick          hatchery.TickFunc
	newName       func(prefix string) string
	rand          func() float64
	// building holds the v1 models whose template this process is building.
	building *NameSet
	// started is when this process began: a VM made or claimed before it was left by an
	// earlier run (a crash, a restart), whose in-memory state is lost.
	started time.Time
	// nics are the NICs prepared for the clones of each source VM (clonespec.go).
	nics nicCache

	mu  sync.Mutex
	svc hatchery.Services // set by Run; SpawnWorker may run before it
}

var _ hatchery.Provider = (*Orchestrator)(nil)

// NewOrchestrator builds the acting half of the provider around p.
func NewOrchestrator(p *Provider, opts OrchestratorOptions) *Orchestrator {
	o := &Orchestrator{
		Provider:      p,
		timings:       opts.Timings.withDefaults(),
		metricsPeriod: opts.MetricsPeriod,
		tick:          opts.Tick,
		newName:       opts.NewName,
		rand:          opts.Rand,
		building:      NewNameSet(),
		started:       p.now(),
	}
	if opts.Timings.Cleanup <= 0 {
		o.timings.Cleanup = p.cfg.CleanupInterval()
	}
	if opts.Timings.FinishedGrace <= 0 {
		o.timings.FinishedGrace = p.cfg.FinishedWorkerGrace()
	}
	if o.tick == nil {
		o.tick = func(_ string, d time.Duration) (<-chan time.Time, func()) {
			t := time.NewTicker(d)
			return t.C, t.Stop
		}
	}
	if o.newName == nil {
		o.newName = hatchery.GenerateWorkerName
	}
	if o.metricsPeriod == 0 {
		o.metricsPeriod = MetricsPeriod
	}
	return o
}

func (o *Orchestrator) services() hatchery.Services {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.svc
}

func (o *Orchestrator) setServices(svc hatchery.Services) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.svc = svc
}

// Names of the provider's loops in the goroutine/<name> status lines, as the original
// reports them (protocol spec §4.2). One cleanup loop runs both passes, so it answers for
// the two names.
const (
	routineProvisioning = "hatchery-vsphere-provisioning"
	routineKillAwol     = "hatchery-vsphere-kill-awol-servers"
	routineKillDisabled = "hatchery-vsphere-kill-disable-workers"
	routineMetrics      = "hatchery-vsphere-metrics"
)

// GoroutineNames implements hatchery.GoroutineNamer: the loops Run starts, in the
// original's order.
func (o *Orchestrator) GoroutineNames() []string {
	var names []string
	if len(o.cfg.WorkerProvisioning) > 0 {
		names = append(names, routineProvisioning)
	}
	names = append(names, routineKillAwol, routineKillDisabled)
	if o.metricsPeriod > 0 {
		names = append(names, routineMetrics)
	}
	return names
}

// tracked runs loop reported as running under names until it returns.
func tracked(svc hatchery.Services, loop func(), names ...string) {
	for _, n := range names {
		svc.SetGoroutine(n, true)
	}
	defer func() {
		for _, n := range names {
			svc.SetGoroutine(n, false)
		}
	}()
	loop()
}

// Run runs the background loops until ctx is done: the cleanup loop (AWOL VMs, provisioned
// VMs, then disabled workers, every killAwolServersInterval); when workerProvisioning is
// configured, the provisioning loop (every workerProvisioningInterval, skipped while the
// vCenter circuit is open); when the circuit breaker is on, its probe loop (every
// circuitBreakerProbe). A failed pass is logged and the next passes back off (see loop);
// Run returns nil once ctx is done and all loops have stopped.
func (o *Orchestrator) Run(ctx context.Context, svc hatchery.Services) error {
	if svc == nil {
		return errors.New("vsphere provider: run without framework services")
	}
	o.setServices(svc)
	ctx = o.withHatchery(ctx)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		tracked(svc, func() { o.cleanupLoop(ctx, svc) }, routineKillAwol, routineKillDisabled)
	}()
	if len(o.cfg.WorkerProvisioning) > 0 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			tracked(svc, func() { o.provisioningLoop(ctx, svc) }, routineProvisioning)
		}()
	}
	if o.breaker.Enabled() {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ticks, stop := o.tick("vsphere-breaker-probe", o.cfg.BreakerProbeInterval())
			defer stop()
			for {
				select {
				case <-ctx.Done():
					return
				case <-ticks:
					o.probe(ctx)
				}
			}
		}()
	}
	if o.metricsPeriod > 0 {
		metrics := NewMetrics(o.Provider)
		if err := metrics.RegisterViews(); err != nil {
			o.log.Warn(ctx, "vSphere metrics not exported: %v", err)
		} else {
			wg.Add(1)
			go func() {
				defer wg.Done()
				tracked(svc, func() { metrics.Run(ctx, o.metricsPeriod) }, routineMetrics)
			}()
		}
	}
	wg.Wait()
	return nil
}

// cleanupLoop runs the AWOL and disabled-worker passes every killAwolServersInterval.
func (o *Orchestrator) cleanupLoop(ctx context.Context, svc hatchery.Services) {
	o.loop(ctx, "vsphere-cleanup", o.timings.Cleanup, func(ctx context.Context) error {
		var errs []error
		if err := o.killAwolServers(ctx, svc); err != nil {
			errs = append(errs, fmt.Errorf("cleanup of AWOL VMs: %w", err))
		}
		if err := o.killDisabledWorkers(ctx, svc); err != nil {
			errs = append(errs, fmt.Errorf("cleanup of disabled workers: %w", err))
		}
		return errors.Join(errs...)
	})
}

// provisioningLoop tops the provisioning pools up every workerProvisioningInterval, except
// while the vCenter circuit is open.
func (o *Orchestrator) provisioningLoop(ctx context.Context, svc hatchery.Services) {
	o.loop(ctx, "vsphere-provisioning", o.cfg.ProvisioningInterval(), func(ctx context.Context) error {
		if ok, reason := o.breaker.Accepting(); !ok {
			o.log.Info(ctx, "provisioning skipped: vCenter %s", reason)
			return nil
		}
		if err := o.provisionPass(ctx, svc); err != nil {
			return fmt.Errorf("provisioning: %w", err)
		}
		return nil
	})
}

// loop runs pass at every tick until ctx is done. Each pass gets a deadline of a few
// periods so that a hung vCenter call cannot stall the loop for ever. A failed pass is
// logged here, and the passes after it back off exponentially with jitter (passBackoff):
// the ticks that come before the end of the backoff are skipped.
func (o *Orchestrator) loop(ctx context.Context, name string, period time.Duration, pass func(context.Context) error) {
	ticks, stop := o.tick(name, period)
	defer stop()
	schedule := passSchedule{backoff: o.passBackoff(period)}
	for {
		select {
		case <-ctx.Done():
			return
		case <-ticks:
		}
		if !schedule.due(o.now()) {
			o.log.Debug(ctx, "%s: pass skipped, backing off until %s after %d failed passes", name, schedule.notBefore.Format(time.RFC3339), schedule.failures)
			continue
		}
		// A provisioning pass may build several VMs, each waiting minutes for its IP.
		pctx, cancel := context.WithTimeout(ctx, max(period*5, 20*time.Minute))
		start := o.now()
		err := pass(pctx)
		cancel()
		if ctx.Err() != nil {
			return
		}
		end := o.now()
		lifecycle.RecordPassAt(ctx, strings.TrimPrefix(name, "vsphere-"), end, end.Sub(start), err == nil)
		if delay := schedule.record(err, o.now()); err != nil {
			o.log.Error(ctx, "%s (failed pass %d, next pass in %s at the earliest): %v", name, schedule.failures, delay.Round(time.Second), err)
		}
	}
}

// passSchedule decides whether a tick of a loop runs a pass, from the outcome of the
// previous passes: after a failed one, none before the backoff delay has passed.
type passSchedule struct {
	backoff   Backoff
	failures  int // consecutive failed passes
	notBefore time.Time
}

func (s *passSchedule) due(now time.Time) bool { return !now.Before(s.notBefore) }

// record takes the outcome of a pass that ended at now and returns the backoff delay set.
func (s *passSchedule) record(err error, now time.Time) time.Duration {
	if err == nil {
		s.failures, s.notBefore = 0, time.Time{}
		return 0
	}
	s.failures++
	d := s.backoff.Delay(s.failures)
	s.notBefore = now.Add(d)
	return d
}

// passBackoff is the backoff of a loop of period period: the wait after the n-th failed
// pass in a row is about 2^n periods (jittered in [half, full)), at most 16 periods or
// 30 min, whichever is shorter, but never less than one period.
func (o *Orchestrator) passBackoff(period time.Duration) Backoff {
	return Backoff{Base: 2 * period, Max: max(period, min(16*period, 30*time.Minute)), Rand: o.rand}
}
