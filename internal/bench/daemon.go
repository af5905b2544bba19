package bench

import (
	"context"
	"errors"
	"fmt"
	"net"
	"time"

	"github.com/hatchery-vsphere/hatchery-vsphere/internal/cdssim"
	"github.com/hatchery-vsphere/hatchery-vsphere/internal/config"
	"github.com/hatchery-vsphere/hatchery-vsphere/internal/daemon"
)

// benchHatchery is the hatchery name of every daemon the bench runs.
const benchHatchery = "hatchery-bench"

// benchModel is the v2 worker model of the bench jobs: a clone of simenv's debian12.
var benchModel = cdssim.V2WorkerModel{
	Name: "debian12-bench", Type: "vsphere", OSArch: "linux/amd64",
	Spec: cdssim.V2ModelSpec{Image: "debian12", Username: "cds", Password: "bench"},
}

// readyTimeout bounds the wait for a daemon to sign in and finish its start-up listings;
// launchTimeout bounds the wait for workers to be launched. They only turn a hang into an
// error.
const (
	readyTimeout  = 3 * time.Minute
	launchTimeout = 5 * time.Minute
)

// newHarness starts a simulated vCenter and CDS API with the run's keys.
func (b *runner) newHarness(ctx context.Context, opts daemon.HarnessOptions) (*daemon.Harness, error) {
	opts.Name = benchHatchery
	opts.APIKey, opts.HatcheryKey = b.apiKey, b.hatcheryKey
	return daemon.NewHarness(ctx, opts)
}

// daemonConfig is the harness configuration with vCenter reached through proxy.
func daemonConfig(h *daemon.Harness, proxy *vcenterProxy) *config.File {
	cfg := h.Config()
	vs := &cfg.Hatchery.VSphere
	vs.Endpoint = proxy.Host()
	vs.CAFile = proxy.CAFile
	return cfg
}

// runningDaemon is a daemon.Run in a goroutine the runner owns, talking to vCenter
// through its own proxy.
type runningDaemon struct {
	proxy  *vcenterProxy
	cancel context.CancelFunc
	// alive ends when Run has returned; err is then what it returned.
	alive context.Context
	err   error
}

// startDaemon runs the daemon in-process with the harness configuration changed by mutate.
func (b *runner) startDaemon(ctx context.Context, h *daemon.Harness, mutate func(*config.File), opts ...daemon.Option) (*runningDaemon, error) {
	proxy, err := newVCenterProxy(h.VCenter, b.dir)
	if err != nil {
		return nil, err
	}
	cfg := daemonConfig(h, proxy)
	if mutate != nil {
		mutate(cfg)
	}
	if err := cfg.Validate(); err != nil {
		proxy.Close()
		return nil, fmt.Errorf("bench configuration: %w", err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		proxy.Close()
		return nil, fmt.Errorf("listen: %w", err)
	}
	dctx, cancel := context.WithCancel(ctx)
	alive, exited := context.WithCancel(context.Background())
	d := &runningDaemon{proxy: proxy, cancel: cancel, alive: alive}
	go func() {
		defer exited()
		d.err = daemon.Run(dctx, cfg, b.opts.Logger, append(opts, daemon.WithListener(ln))...)
	}()
	return d, nil
}

// stop stops the daemon and waits for it. The proxy stays readable.
func (d *runningDaemon) stop() error {
	d.cancel()
	<-d.alive.Done()
	d.proxy.Close()
	return d.err
}

// died is the error to report when the daemon stopped on its own.
func (d *runningDaemon) died() error {
	if d.err != nil {
		return fmt.Errorf("the daemon stopped: %w", d.err)
	}
	return errors.New("the daemon stopped")
}

// waitReady waits until the daemon has signed in to the API (its v2 websocket is up) and
// its start-up vCenter traffic has calmed down: no call for quiet.
func waitReady(ctx context.Context, h *daemon.Harness, proxy *vcenterProxy, alive context.Context, quiet time.Duration) error {
	wctx, cancel := context.WithTimeout(ctx, readyTimeout)
	defer cancel()
	stop := context.AfterFunc(alive, cancel)
	defer stop()
	err := h.API.WaitUntil(wctx, func() bool {
		_, v2 := h.API.WebsocketClients()
		return v2 > 0
	})
	if err != nil {
		return fmt.Errorf("wait for the daemon's sign-in: %w", err)
	}
	if err := settle(wctx, proxy, quiet); err != nil {
		return fmt.Errorf("wait for the daemon's start-up listings: %w", err)
	}
	return nil
}

// settle waits until proxy has seen at least one call and then none for quiet.
func settle(ctx context.Context, proxy *vcenterProxy, quiet time.Duration) error {
	t := time.NewTicker(quiet / 10)
	defer t.Stop()
	last, lastChange := proxy.Snapshot().Calls, time.Now()
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
		}
		n := proxy.Snapshot().Calls
		if n != last {
			last, lastChange = n, time.Now()
			continue
		}
		if n > 0 && time.Since(lastChange) >= quiet {
			return nil
		}
	}
}

// countIdle counts the traffic of proxy over window.
func countIdle(ctx context.Context, proxy *vcenterProxy, alive context.Context, vms int, window time.Duration) (IdleWindow, error) {
	before := proxy.Snapshot()
	start := time.Now()
	t := time.NewTimer(window)
	defer t.Stop()
	select {
	case <-t.C:
	case <-ctx.Done():
		return IdleWindow{}, ctx.Err()
	case <-alive.Done():
		return IdleWindow{}, errors.New("the daemon stopped during the idle window")
	}
	return IdleWindow{VMs: vms, Window: time.Since(start), Traffic: proxy.Snapshot().Sub(before)}, nil
}

// queueJobs queues n v2 jobs of benchModel and returns their IDs.
func queueJobs(h *daemon.Harness, n int) []string {
	ids := make([]string, 0, n)
	for i := range n {
		ids = append(ids, h.API.AddV2Job(cdssim.V2RunJob{ProjectKey: "BENCH", WorkflowName: "bench", RunNumber: int64(i + 1)}, benchModel))
	}
	return ids
}

// waitLaunched waits until at least n workers have been launched in the simulated guests
// since the harness started.
func waitLaunched(ctx context.Context, h *daemon.Harness, alive context.Context, n int, timeout time.Duration) error {
	wctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	stop := context.AfterFunc(alive, cancel)
	defer stop()
	if err := h.API.WaitUntil(wctx, func() bool { return h.WorkersLaunched() >= n }); err != nil {
		if alive.Err() != nil {
			return errors.New("the daemon stopped before the workers were launched")
		}
		return fmt.Errorf("%d of %d workers launched after %s: %w", h.WorkersLaunched(), n, timeout, err)
	}
	return nil
}

// inventory tracks the unrelated VMs of a harness, created on demand.
type inventory struct {
	h     *daemon.Harness
	plain int
}

// grow creates plain VMs until the harness has n of them.
func (inv *inventory) grow(ctx context.Context, n int) error {
	if n <= inv.plain {
		return nil
	}
	if err := inv.h.VCenter.CreatePlainVMs(ctx, n-inv.plain); err != nil {
		return fmt.Errorf("create %d plain VMs: %w", n-inv.plain, err)
	}
	inv.plain = n
	return nil
}
