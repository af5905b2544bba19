package faults

import (
	"context"
	"fmt"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/vmware/govmomi/find"
	"github.com/vmware/govmomi/vim25/types"

	"github.com/hatchery-vsphere/hatchery-vsphere/internal/config"
	"github.com/hatchery-vsphere/hatchery-vsphere/internal/vspherehatchery"
)

func runtimeStack(buf []byte) int { return runtime.Stack(buf, true) }

// TestFaults runs the scenarios one after the other (one harness at a time, so that the
// goroutine check of each is exact) and records one row of the report each.
func TestFaults(t *testing.T) {
	if testing.Short() {
		t.Skip("fault-injection suite: about a minute and a half; not with -short")
	}
	for _, sc := range scenarios() {
		t.Run(sc.name, func(t *testing.T) { runScenario(t, sc) })
	}
}

// injected is the vCenter fault the knobs answer with.
func injected() types.BaseMethodFault {
	return &types.SystemError{Reason: "injected by the fault suite"}
}

func scenarios() []scenario {
	return []scenario{
		{name: "no fault (baseline)", notes: "reference run"},
		{
			name:  "vCenter unreachable at start",
			notes: "connections refused until the hatchery tried 3 times; expected: retries, then serves",
			before: func(e *env) {
				e.link.Set(LinkRefused)
			},
			start: func(e *env) {
				d := e.startDaemon(e.cfg, nil)
				e.wait("the hatchery to try the vCenter 3 times or give up", func() bool {
					return e.link.CutOff() >= 3 || d.exited()
				})
				e.link.Set(LinkUp)
				if d.exited() {
					e.problem("the daemon gave up at start instead of retrying: Run = %v (restarted by hand to go on)", d.err)
					d.reported = true
					e.startDaemon(e.cfg, nil)
				}
			},
		},
		{
			name:  "vCenter down for 30 s mid-run",
			notes: "connections refused and dropped for 30 s of simulated time while jobs run",
			run: func(e *env) {
				e.wait("a first worker to start", func() bool { return e.workersStarted() >= 1 })
				e.link.Set(LinkRefused)
				e.wait("the hatchery to hit the dead link 5 times", func() bool { return e.link.CutOff() >= 5 })
				e.clock.Advance(30 * time.Second)
				e.link.Set(LinkUp)
			},
		},
		{
			name:  "vCenter session expiring every few seconds",
			notes: "every session ended every 300 ms (every few seconds, scaled) until the jobs are done",
			run: func(e *env) {
				stop := e.every(300*time.Millisecond, func(ctx context.Context) {
					if _, err := e.h.VCenter.ExpireSessions(ctx); err != nil && ctx.Err() == nil {
						e.t.Logf("expire sessions: %v", err)
					}
				})
				e.afterJobs(stop)
			},
		},
		{
			name:  "30% of clones failing",
			notes: "one clone in three fails (SystemError), for the first 30 clones",
			run: func(e *env) {
				for range 10 {
					e.h.VCenter.AddFault("CloneVM_Task", injected(), 1)
					// A rule without a fault lets its calls through: two good clones.
					e.h.VCenter.AddFault("CloneVM_Task", nil, 2)
				}
				e.afterJobs(e.h.VCenter.ClearFaults)
			},
		},
		{
			name:  "power-on failing",
			notes: "PowerOnVM_Task fails (pool of 2 provisioned VMs) until both were claimed and failed",
			configure: func(e *env, cfg *config.File) {
				cfg.Hatchery.VSphere.WorkerProvisioning = []config.WorkerProvisioning{{ModelVMWare: "debian12", Number: 2}}
			},
			// The 2 ready provisioned VMs keep their address of the iprange.
			ipProbe: rangeSize - 2,
			before:  func(e *env) { e.h.VCenter.AddFault("PowerOnVM_Task", injected(), 0) },
			// The jobs come once both provisioned VMs are ready (made by clones powered on by
			// their clone spec, which the fault does not touch): each job then claims one,
			// and its power-on fails.
			start: func(e *env) {
				e.startDaemon(e.cfg, nil)
				e.wait("2 provisioned VMs ready", func() bool {
					ready := 0
					for _, v := range e.vms() {
						if strings.HasPrefix(v.Name, vspherehatchery.ProvisionV2Prefix) && v.PowerState == "poweredOff" && !v.Annotation.Provisioned.IsZero() {
							ready++
						}
					}
					return ready >= 2
				})
			},
			run: func(e *env) {
				// Both provisioned VMs claimed and failed; the jobs then go to fresh clones.
				e.wait("2 failed power-ons", func() bool { return e.h.VCenter.CallCount("PowerOnVM_Task") >= 2 })
				e.h.VCenter.ClearFaults()
			},
		},
		{
			name:  "vCenter tasks slower than the wait bound",
			notes: "what vCenter says of tasks (property reads and long polls) answered 1.5 s late against taskTimeout = 1 s, until 3 clones were made",
			configure: func(e *env, cfg *config.File) {
				cfg.Hatchery.VSphere.TaskTimeout = 1
			},
			// A task's outcome reaches the hatchery by a property read (a task already over)
			// or a long poll (one still running): both come too late. The hatchery is up
			// first (its start-up reads would only be slower), then every job comes under
			// the fault.
			start: func(e *env) {
				e.startDaemon(e.cfg, nil)
				e.wait("the hatchery to be up", func() bool { return len(e.h.API.Heartbeats()) > 0 })
				for _, m := range []string{"RetrievePropertiesEx", "WaitForUpdatesEx"} {
					e.h.VCenter.SetMethodDelay(m, 1500*time.Millisecond)
				}
			},
			run: func(e *env) {
				// Each of these clones' waits outlives the bound: the VM is rolled back.
				e.wait("3 clones", func() bool { return e.h.VCenter.CallCount("CloneVM_Task") >= 3 })
				for _, m := range []string{"RetrievePropertiesEx", "WaitForUpdatesEx"} {
					e.h.VCenter.SetMethodDelay(m, 0)
				}
			},
		},
		{
			name:  "guest operations never ready",
			notes: "StartProgramInGuest fails (GuestOperationsUnavailable) until 2 jobs were released",
			run: func(e *env) {
				e.h.VCenter.AddFault("StartProgramInGuest", &types.GuestOperationsUnavailable{}, 0)
				e.wait("2 releases", func() bool { return e.released() >= 2 })
				e.h.VCenter.ClearFaults()
			},
		},
		{
			name:  "CDS API 500s then timeouts for a minute",
			notes: "every API request answered 500, then held past requestTimeout: 60 s of simulated time",
			run: func(e *env) {
				e.wait("a first worker to start", func() bool { return e.workersStarted() >= 1 })
				e.front.Set(Front500)
				e.wait("8 failed API requests", func() bool { return e.front.Failed() >= 8 })
				e.clock.Advance(30 * time.Second)
				e.front.Set(FrontHang)
				e.wait("4 more API requests held", func() bool { return e.front.Failed() >= 12 })
				e.clock.Advance(30 * time.Second)
				e.front.Set(FrontUp)
			},
		},
		{
			name:  "CDS session expiry",
			notes: "every API session revoked 3 times while jobs run",
			run: func(e *env) {
				for i := range 3 {
					e.wait(fmt.Sprintf("worker %d to start", i+1), func() bool { return e.workersStarted() >= i+1 })
					e.h.API.RevokeSessions()
				}
			},
		},
		{
			name:  "hatchery stopped mid-spawn and restarted",
			notes: "stopped while launching a worker, the link cut so that no rollback reaches vCenter (a crash), then restarted",
			run: func(e *env) {
				e.h.VCenter.SetMethodDelay("StartProgramInGuest", 3*time.Second)
				e.wait("a spawn to reach the worker launch", func() bool { return e.h.VCenter.CallCount("StartProgramInGuest") >= 1 })
				e.link.Set(LinkRefused)
				first := e.daemons[0]
				first.reported = true
				if err := first.stop(); err != nil {
					e.problem("first daemon: Run = %v after its stop", err)
				}
				e.link.Set(LinkUp)
				e.h.VCenter.SetMethodDelay("StartProgramInGuest", 0)
				e.startDaemon(e.cfg, nil)
			},
		},
		{
			name:  "two hatcheries sharing one datacenter",
			notes: "a second hatchery (v2 only, its own iprange) on the same vCenter and API",
			start: func(e *env) {
				const nameB = "hatchery-faults-b"
				e.owners = append(e.owners, nameB)
				cfgB := hatcheryConfig(e, nameB, "10.40.1.0/30")
				cfgB.Hatchery.VSphere.CommonConfiguration.API.Token = ""
				cfgB.Hatchery.VSphere.CommonConfiguration.API.TokenV2 = e.h.API.NewHatcheryConsumerToken(nameB)
				e.startDaemon(e.cfg, nil)
				e.startDaemon(cfgB, nil)
			},
		},
		{
			name:  "VM with a corrupt annotation",
			notes: "two VMs planted: truncated JSON and wrong types, both naming the hatchery; they must not stop the hatchery",
			before: func(e *env) {
				e.plantVM("corrupt-truncated", `{"hatchery_name":"`+hatcheryName+`","worker_name":"corrupt-trunc`)
				e.plantVM("corrupt-types", `{"hatchery_name":"`+hatcheryName+`","worker_name":42,"created":"yesterday","provisioning":"yes"}`)
			},
		},
		{
			name:  "IP range exhausted",
			notes: "6 v2 jobs on an iprange of 2 addresses: jobs wait for an address",
			configure: func(e *env, cfg *config.File) {
				cfg.Hatchery.VSphere.IPRange = "10.40.0.0/31"
			},
			v1Jobs:  -1,
			v2Jobs:  6,
			ipProbe: 2,
		},
	}
}

// every runs f every period in a goroutine the scenario owns until the returned stop is
// called: a fault driver, not a timed assertion.
func (e *env) every(period time.Duration, f func(ctx context.Context)) (stop func()) {
	ctx, cancel := context.WithCancel(e.ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		t := time.NewTicker(period)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
				f(ctx)
			}
		}
	}()
	return func() {
		cancel()
		<-done
	}
}

// plantVM clones the debian12 template into a powered-off VM carrying annotation, as
// something else (or a broken tool) left it. The VM is not a leak of the hatchery.
func (e *env) plantVM(name, annotation string) {
	e.t.Helper()
	ctx := e.ctx
	c, err := e.h.VCenter.Client(ctx)
	if err != nil {
		e.t.Fatal(err)
	}
	defer func() { _ = c.Logout(context.WithoutCancel(ctx)) }()
	f := find.NewFinder(c.Client, false)
	dc, err := f.Datacenter(ctx, e.h.VCenter.Datacenter)
	if err != nil {
		e.t.Fatal(err)
	}
	f.SetDatacenter(dc)
	tpl, err := f.VirtualMachine(ctx, "debian12")
	if err != nil {
		e.t.Fatal(err)
	}
	folder, err := f.Folder(ctx, e.h.VCenter.Folder)
	if err != nil {
		e.t.Fatal(err)
	}
	pool, err := f.ResourcePool(ctx, e.h.VCenter.ResourcePool)
	if err != nil {
		e.t.Fatal(err)
	}
	poolRef := pool.Reference()
	task, err := tpl.Clone(ctx, folder, name, types.VirtualMachineCloneSpec{
		Location: types.VirtualMachineRelocateSpec{Pool: &poolRef},
		Config:   &types.VirtualMachineConfigSpec{Annotation: annotation},
	})
	if err != nil {
		e.t.Fatalf("plant %q: %v", name, err)
	}
	if err := task.Wait(ctx); err != nil {
		e.t.Fatalf("plant %q: %v", name, err)
	}
	e.planted[name] = true
}
