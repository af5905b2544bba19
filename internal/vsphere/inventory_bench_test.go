package vsphere

import (
	"context"
	"fmt"
	"runtime"
	"testing"
	"time"

	"github.com/vmware/govmomi/object"
	"github.com/vmware/govmomi/vim25/types"

	"github.com/hatchery-vsphere/hatchery-vsphere/internal/simenv"
)

// Run with: go test -run '^$' -bench Inventory -benchtime 1x ./internal/vsphere/
// (5,000 VMs take ~20 s to create and a full listing ~20 s more, so -benchtime 1x is
// enough; these benchmarks never run in the default test run.)

// benchVCenter starts a simulated vCenter with n plain VMs and a Client on it.
func benchVCenter(b *testing.B, n int) (*simenv.Env, *Client) {
	b.Helper()
	ctx := context.Background()
	env, err := simenv.New(ctx, simenv.Options{})
	if err != nil {
		b.Fatalf("simenv: %v", err)
	}
	b.Cleanup(env.Close)
	if err := env.CreatePlainVMs(ctx, n); err != nil {
		b.Fatalf("CreatePlainVMs: %v", err)
	}
	c, err := Connect(ctx, envOptions(env))
	if err != nil {
		b.Fatalf("Connect: %v", err)
	}
	b.Cleanup(func() { _ = c.Logout(context.Background()) })
	return env, c
}

// benchEnv starts a simulated vCenter with n plain VMs, a Client and a running Inventory.
func benchEnv(b *testing.B, n int, opts InventoryOptions) (*simenv.Env, *Client, *Inventory, VSphereClient) {
	b.Helper()
	ctx := context.Background()
	env, c := benchVCenter(b, n)

	inv := NewInventory(c, opts)
	rctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- inv.Run(rctx) }()
	b.Cleanup(func() {
		cancel()
		<-done
	})
	start := time.Now()
	wctx, wcancel := context.WithTimeout(ctx, 5*time.Minute)
	defer wcancel()
	if err := inv.WaitReady(wctx); err != nil {
		b.Fatal(err)
	}
	s := inv.Stats()
	b.Logf("%d VMs: first sync %v, %d round trips", s.VMs, time.Since(start).Round(time.Millisecond), s.RoundTrips)
	return env, c, inv, NewCachedClient(c, inv)
}

// BenchmarkInventoryDecisionListing compares what one decision's listing costs: through the
// inventory, as a direct narrow listing, and as the original's full listing.
func BenchmarkInventoryDecisionListing(b *testing.B) {
	for _, n := range []int{1000, 5000} {
		b.Run(fmt.Sprintf("vms=%d", n), func(b *testing.B) {
			_, c, inv, cached := benchEnv(b, n, InventoryOptions{})
			ctx := context.Background()

			b.Run("cache", func(b *testing.B) {
				before := inv.Stats()
				for b.Loop() {
					if _, err := cached.ListVirtualMachinesProperties(ctx, decisionProps...); err != nil {
						b.Fatal(err)
					}
				}
				after := inv.Stats()
				if after.PassedThrough != before.PassedThrough {
					b.Fatalf("listings passed through to vCenter")
				}
				b.ReportMetric(float64(after.RoundTrips-before.RoundTrips)/float64(b.N), "roundtrips/op")
			})
			b.Run("narrow", func(b *testing.B) {
				for b.Loop() {
					if _, err := c.ListVirtualMachinesProperties(ctx, decisionProps...); err != nil {
						b.Fatal(err)
					}
				}
				// Create view, retrieve, destroy view.
				b.ReportMetric(3, "roundtrips/op")
			})
			b.Run("full", func(b *testing.B) {
				for b.Loop() {
					if _, err := c.ListVirtualMachines(ctx); err != nil {
						b.Fatal(err)
					}
				}
				b.ReportMetric(3, "roundtrips/op")
			})
		})
	}
}

// BenchmarkInventoryJob runs the hatchery's vCenter side of one job against n VMs: a clone
// (powered on), decisionsPerJob decisions, a power-off and a destroy, all through the cached
// client, and reports the inventory's round trips (watch and refreshes included) per
// decision. In vcsim each clone and destroy makes the watch re-send the whole view (in
// pages of 100 VMs), which a real vCenter does not do.
func BenchmarkInventoryJob(b *testing.B) {
	const decisionsPerJob = 6
	for _, n := range []int{1000, 5000} {
		for _, feed := range []InventoryFeed{FeedWatch, FeedPoll} {
			if feed == FeedWatch && n > 1000 {
				continue // ~5 s per job at 1,000 VMs in vcsim already, see FeedPoll
			}
			b.Run(fmt.Sprintf("vms=%d/feed=%s", n, feed), func(b *testing.B) {
				benchJob(b, n, InventoryOptions{Feed: feed, PollInterval: 5 * time.Second}, decisionsPerJob)
			})
		}
	}
}

func benchJob(b *testing.B, n int, opts InventoryOptions, decisionsPerJob int) {
	env, c, inv, cached := benchEnv(b, n, opts)
	ctx := context.Background()
	template, err := c.LoadVirtualMachine(ctx, "debian12")
	if err != nil {
		b.Fatal(err)
	}
	folder, err := c.LoadFolder(ctx)
	if err != nil {
		b.Fatal(err)
	}
	pool, err := c.LoadResourcePool(ctx)
	if err != nil {
		b.Fatal(err)
	}
	poolRef := pool.Reference()
	before := inv.Stats()
	job := 0
	for b.Loop() {
		job++
		name := fmt.Sprintf("job-%d", job)
		spec := &types.VirtualMachineCloneSpec{
			Location: types.VirtualMachineRelocateSpec{Pool: &poolRef},
			Config:   &types.VirtualMachineConfigSpec{Annotation: `{"job":"` + name + `"}`},
			PowerOn:  true,
		}
		ref, err := cached.CloneVirtualMachine(ctx, template, folder, name, spec)
		if err != nil {
			b.Fatal(err)
		}
		for range decisionsPerJob {
			if _, err := cached.ListVirtualMachinesProperties(ctx, decisionProps...); err != nil {
				b.Fatal(err)
			}
		}
		vm := object.NewVirtualMachine(c.vc, *ref)
		if err := cached.ShutdownVirtualMachine(ctx, vm); err != nil {
			b.Fatal(err)
		}
		if err := cached.DestroyVirtualMachine(ctx, vm); err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	// The watch lags the jobs: a last change made behind the cache's back and seen
	// by it means every earlier change was delivered and paid for.
	marker := fmt.Sprintf("%s%06d", simenv.PlainVMPrefix, 0)
	if err := env.PowerOffVM(ctx, marker); err != nil {
		b.Fatal(err)
	}
	wctx, wcancel := context.WithTimeout(ctx, 5*time.Minute)
	defer wcancel()
	for {
		changed := inv.Changed()
		vms, ok := inv.List("runtime.powerState")
		if got, _ := lookup(vms, marker); ok && got.Runtime.PowerState == types.VirtualMachinePowerStatePoweredOff {
			break
		}
		select {
		case <-changed:
		case <-wctx.Done():
			b.Fatal("the watch never delivered the marker change")
		}
	}
	after := inv.Stats()
	b.Logf("%d jobs: %d round trips, %d syncs, %d errors (last: %v)", b.N, after.RoundTrips-before.RoundTrips, after.Syncs, after.Errors, after.LastError)
	decisions := float64(b.N * decisionsPerJob)
	b.ReportMetric(float64(after.RoundTrips-before.RoundTrips)/decisions, "roundtrips/decision")
	b.ReportMetric(float64(after.PassedThrough-before.PassedThrough)/decisions, "passthrough/decision")
}

// BenchmarkInventoryMemory reports the heap the inventory holds at n VMs.
func BenchmarkInventoryMemory(b *testing.B) {
	for _, n := range []int{5000} {
		b.Run(fmt.Sprintf("vms=%d", n), func(b *testing.B) {
			ctx := context.Background()
			_, c := benchVCenter(b, n)
			for b.Loop() {
				var m0, m1 runtime.MemStats
				runtime.GC()
				runtime.ReadMemStats(&m0)
				inv := NewInventory(c, InventoryOptions{})
				rctx, cancel := context.WithCancel(ctx)
				done := make(chan error, 1)
				go func() { done <- inv.Run(rctx) }()
				if err := inv.WaitReady(ctx); err != nil {
					b.Fatal(err)
				}
				runtime.GC()
				runtime.ReadMemStats(&m1)
				b.ReportMetric(float64(int64(m1.HeapAlloc)-int64(m0.HeapAlloc))/(1<<20), "MB-heap")
				b.ReportMetric(float64(m1.Sys)/(1<<20), "MB-sys-total")
				cancel()
				<-done
				runtime.KeepAlive(inv)
			}
		})
	}
}
