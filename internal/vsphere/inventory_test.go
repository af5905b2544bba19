package vsphere

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vmware/govmomi/find"
	"github.com/vmware/govmomi/object"
	"github.com/vmware/govmomi/vim25/mo"
	"github.com/vmware/govmomi/vim25/types"

	"github.com/hatchery-vsphere/hatchery-vsphere/internal/simenv"
)

// decisionProps are the properties the provider's decisions list.
var decisionProps = []string{
	"name", "config.annotation", "config.template", "runtime.powerState",
	"summary.config.numCpu", "summary.config.memorySizeMB", "guest.net", "guest.ipAddress",
}

// testWait bounds every wait on the inventory; tests never sleep.
const testWait = 30 * time.Second

// startInventory runs an Inventory over c until the test ends and waits for its first sync.
func startInventory(t *testing.T, c *Client, opts InventoryOptions) (*Inventory, VSphereClient) {
	t.Helper()
	inv := NewInventory(c, opts)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- inv.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	wctx, wcancel := context.WithTimeout(t.Context(), testWait)
	defer wcancel()
	if err := inv.WaitReady(wctx); err != nil {
		t.Fatal(err)
	}
	return inv, NewCachedClient(c, inv)
}

// waitFor waits until cond holds, re-checking at each change of the inventory.
func waitFor(t *testing.T, inv *Inventory, what string, cond func() bool) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), testWait)
	defer cancel()
	for {
		changed := inv.Changed()
		if cond() {
			return
		}
		select {
		case <-changed:
		case <-ctx.Done():
			t.Fatalf("timed out waiting for %s", what)
		}
	}
}

// cachedList lists through the inventory and fails the test if it could not answer.
func cachedList(t *testing.T, inv *Inventory, props ...string) []mo.VirtualMachine {
	t.Helper()
	vms, ok := inv.List(props...)
	if !ok {
		t.Fatalf("inventory could not answer a listing of %v (live: %v)", props, inv.Stats().Live)
	}
	return vms
}

func lookup(vms []mo.VirtualMachine, name string) (mo.VirtualMachine, bool) {
	for _, vm := range vms {
		if vm.Name == name {
			return vm, true
		}
	}
	return mo.VirtualMachine{}, false
}

// summarize renders the decision properties of a listing, sorted, for comparisons.
func summarize(vms []mo.VirtualMachine) []string {
	out := make([]string, 0, len(vms))
	for _, vm := range vms {
		var annotation, ip string
		var template bool
		var nics int
		if vm.Config != nil {
			annotation, template = vm.Config.Annotation, vm.Config.Template
		}
		if vm.Guest != nil {
			ip, nics = vm.Guest.IpAddress, len(vm.Guest.Net)
		}
		out = append(out, fmt.Sprintf("%s %s %q template=%v %s cpu=%d mem=%d ip=%s nics=%d",
			vm.Self.Value, vm.Name, annotation, template, vm.Runtime.PowerState,
			vm.Summary.Config.NumCpu, vm.Summary.Config.MemorySizeMB, ip, nics))
	}
	sort.Strings(out)
	return out
}

func TestInventoryAnswersNarrowListingsWithoutAskingVCenter(t *testing.T) {
	env, c := newEnv(t)
	ctx := t.Context()
	if err := env.CreatePlainVMs(ctx, 20); err != nil {
		t.Fatalf("CreatePlainVMs: %v", err)
	}
	cloneVM(t, c, cloneParams{name: "annotated", annotation: `{"created":"2025-01-10T08:00:00Z"}`, numCPUs: 3, memoryMB: 2048})
	inv, cached := startInventory(t, c, InventoryOptions{})

	direct, err := c.ListVirtualMachinesProperties(ctx, decisionProps...)
	if err != nil {
		t.Fatalf("direct listing: %v", err)
	}
	views := env.CallCount("CreateContainerView")
	for range 20 {
		vms, err := cached.ListVirtualMachinesProperties(ctx, decisionProps...)
		if err != nil {
			t.Fatalf("cached listing: %v", err)
		}
		if got, want := summarize(vms), summarize(direct); strings.Join(got, "\n") != strings.Join(want, "\n") {
			t.Fatalf("cached listing differs from vCenter's:\n got %v\nwant %v", got, want)
		}
	}
	if got := env.CallCount("CreateContainerView"); got != views {
		t.Errorf("20 cached listings made %d listings on vCenter, want 0", got-views)
	}
	if s := inv.Stats(); s.Served != 20 || s.PassedThrough != 0 || s.VMs != 23 {
		t.Errorf("stats = %+v, want 20 served, 0 passed through, 23 VMs", s)
	}

	// Only what was asked for is set, like a direct narrow listing.
	vms, err := cached.ListVirtualMachinesProperties(ctx, "runtime.powerState", "summary.config.numCpu")
	if err != nil {
		t.Fatalf("cached listing: %v", err)
	}
	got, ok := lookup(vms, "annotated")
	if !ok || got.Config != nil || got.Guest != nil || got.Summary.Config.NumCpu != 3 {
		t.Errorf("narrow cached listing of annotated = %+v (config %v, guest %v)", got.Summary.Config, got.Config, got.Guest)
	}

	// A full listing and unwatched properties go to vCenter.
	full, err := cached.ListVirtualMachinesProperties(ctx)
	if err != nil {
		t.Fatalf("full listing: %v", err)
	}
	if got, ok := lookup(full, "annotated"); !ok || got.Config == nil || got.Config.Hardware.NumCPU != 3 {
		t.Errorf("full listing misses the config of annotated")
	}
	if _, err := cached.ListVirtualMachinesProperties(ctx, "name", "config.hardware"); err != nil {
		t.Fatalf("unwatched listing: %v", err)
	}
	if s := inv.Stats(); s.PassedThrough != 2 {
		t.Errorf("passed through %d listings, want 2", s.PassedThrough)
	}
}

func TestCachedClientSeesItsOwnActionsAtOnce(t *testing.T) {
	for name, opts := range feeds {
		t.Run(name, func(t *testing.T) { testCachedClientSeesItsOwnActions(t, opts) })
	}
}

func testCachedClientSeesItsOwnActions(t *testing.T, opts InventoryOptions) {
	_, c := newEnv(t)
	ctx := t.Context()
	inv, cached := startInventory(t, c, opts)

	template, err := c.LoadVirtualMachine(ctx, "debian12")
	if err != nil {
		t.Fatalf("LoadVirtualMachine: %v", err)
	}
	folder, err := c.LoadFolder(ctx)
	if err != nil {
		t.Fatalf("LoadFolder: %v", err)
	}
	annotation := `{"provisioning":true,"created":"2025-01-10T08:00:00Z"}`
	spec := cloneSpec(t, c, template, cloneParams{name: "provision-v2-abc", annotation: annotation})

	// Each step lists right after the action, without waiting for the watch.
	list := func() []mo.VirtualMachine {
		t.Helper()
		vms, err := cached.ListVirtualMachinesProperties(ctx, decisionProps...)
		if err != nil {
			t.Fatalf("list: %v", err)
		}
		return vms
	}
	ref, err := cached.CloneVirtualMachine(ctx, template, folder, "provision-v2-abc", spec)
	if err != nil {
		t.Fatalf("CloneVirtualMachine: %v", err)
	}
	got, ok := lookup(list(), "provision-v2-abc")
	if !ok || got.Config.Annotation != annotation || got.Runtime.PowerState != types.VirtualMachinePowerStatePoweredOff {
		t.Fatalf("after clone: listed %v, %+v", ok, got.Config)
	}
	vm := object.NewVirtualMachine(c.vc, *ref)

	if err := cached.StartVirtualMachine(ctx, vm); err != nil {
		t.Fatalf("StartVirtualMachine: %v", err)
	}
	if got, _ := lookup(list(), "provision-v2-abc"); got.Runtime.PowerState != types.VirtualMachinePowerStatePoweredOn {
		t.Errorf("after power on: %q", got.Runtime.PowerState)
	}
	if err := cached.WaitForVirtualMachineIP(ctx, vm, nil, "provision-v2-abc"); err != nil {
		t.Fatalf("WaitForVirtualMachineIP: %v", err)
	}
	if got, _ := lookup(list(), "provision-v2-abc"); got.Guest == nil || got.Guest.IpAddress == "" {
		t.Errorf("after the IP wait the listing has no guest IP: %+v", got.Guest)
	}
	if err := cached.ShutdownVirtualMachine(ctx, vm); err != nil {
		t.Fatalf("ShutdownVirtualMachine: %v", err)
	}
	if got, _ := lookup(list(), "provision-v2-abc"); got.Runtime.PowerState != types.VirtualMachinePowerStatePoweredOff {
		t.Errorf("after power off: %q", got.Runtime.PowerState)
	}
	// vcsim does not publish reconfigurations: only the refresh can show this one at once.
	resized := `{"created":"2025-01-11T08:00:00Z"}`
	if err := cached.ReconfigureVirtualMachine(ctx, vm, types.VirtualMachineConfigSpec{NumCPUs: 8, MemoryMB: 16384, Annotation: resized}); err != nil {
		t.Fatalf("ReconfigureVirtualMachine: %v", err)
	}
	if got, _ := lookup(list(), "provision-v2-abc"); got.Config.Annotation != resized || got.Summary.Config.NumCpu != 8 || got.Summary.Config.MemorySizeMB != 16384 {
		t.Errorf("after reconfigure: %q, %d vCPU, %d MB", got.Config.Annotation, got.Summary.Config.NumCpu, got.Summary.Config.MemorySizeMB)
	}
	if err := cached.RenameVirtualMachine(ctx, vm, "calm-turing"); err != nil {
		t.Fatalf("RenameVirtualMachine: %v", err)
	}
	vms := list()
	if _, ok := lookup(vms, "provision-v2-abc"); ok {
		t.Errorf("old name still listed after rename")
	}
	if _, ok := lookup(vms, "calm-turing"); !ok {
		t.Errorf("new name not listed after rename")
	}
	if loaded, err := cached.LoadVirtualMachine(ctx, "calm-turing"); err != nil || loaded.Reference() != vm.Reference() || loaded.Name() != "calm-turing" {
		t.Errorf("LoadVirtualMachine(calm-turing) after rename = %v, %v", loaded, err)
	}
	if err := cached.MarkVirtualMachineAsTemplate(ctx, vm); err != nil {
		t.Fatalf("MarkVirtualMachineAsTemplate: %v", err)
	}
	if got, _ := lookup(list(), "calm-turing"); !got.Config.Template {
		t.Errorf("not a template in the listing after MarkVirtualMachineAsTemplate")
	}
	if err := cached.DestroyVirtualMachine(ctx, vm); err != nil {
		t.Fatalf("DestroyVirtualMachine: %v", err)
	}
	if _, ok := lookup(list(), "calm-turing"); ok {
		t.Errorf("destroyed VM still listed")
	}
	if s := inv.Stats(); s.PassedThrough != 0 || !s.Live {
		t.Errorf("stats = %+v: listings were not all answered by the live cache", s)
	}
	// An unknown name is asked to vCenter, which says it is absent.
	if _, err := cached.LoadVirtualMachine(ctx, "calm-turing"); !IsNotFound(err) {
		t.Errorf("LoadVirtualMachine of the destroyed VM: err = %v, want ErrNotFound", err)
	}
	// The watch delivering the same changes later must not bring anything back.
	waitForMatch(t, c, inv)
}

// feeds are the change feeds every behaviour test runs with; the poll feed polls often so
// that tests wait for it only briefly.
var feeds = map[string]InventoryOptions{
	"watch": {Feed: FeedWatch},
	"poll":  {Feed: FeedPoll, PollInterval: 20 * time.Millisecond},
}

func TestInventorySeesChangesMadeByOthers(t *testing.T) {
	for name, opts := range feeds {
		t.Run(name, func(t *testing.T) { testInventorySeesChangesMadeByOthers(t, opts) })
	}
}

func testInventorySeesChangesMadeByOthers(t *testing.T, opts InventoryOptions) {
	env, c := newEnv(t)
	ctx := t.Context()
	if err := env.CreatePlainVMs(ctx, 4); err != nil {
		t.Fatalf("CreatePlainVMs: %v", err)
	}
	inv, _ := startInventory(t, c, opts)

	finder := operatorFinder(t, env)
	plain := func(i int) *object.VirtualMachine {
		t.Helper()
		vm, err := finder.VirtualMachine(ctx, fmt.Sprintf("%s%06d", simenv.PlainVMPrefix, i))
		if err != nil {
			t.Fatalf("find plain VM %d: %v", i, err)
		}
		return vm
	}
	wait := func(task *object.Task, err error) {
		t.Helper()
		if err == nil {
			err = task.Wait(ctx)
		}
		if err != nil {
			t.Fatalf("task: %v", err)
		}
	}

	wait(plain(0).Rename(ctx, "renamed-by-someone"))
	waitFor(t, inv, "the rename", func() bool {
		vms := cachedList(t, inv, "name")
		_, renamed := lookup(vms, "renamed-by-someone")
		_, old := lookup(vms, simenv.PlainVMPrefix+"000000")
		return renamed && !old
	})

	if err := env.PowerOffVM(ctx, simenv.PlainVMPrefix+"000001"); err != nil {
		t.Fatalf("PowerOffVM: %v", err)
	}
	waitFor(t, inv, "the power off", func() bool {
		got, _ := lookup(cachedList(t, inv, "runtime.powerState"), simenv.PlainVMPrefix+"000001")
		return got.Runtime.PowerState == types.VirtualMachinePowerStatePoweredOff
	})

	// vcsim publishes only config.changeVersion for this: the inventory must read the VM.
	wait(plain(2).Reconfigure(ctx, types.VirtualMachineConfigSpec{Annotation: "set by someone", NumCPUs: 2}))
	waitFor(t, inv, "the reconfiguration", func() bool {
		got, _ := lookup(cachedList(t, inv, "config.annotation", "summary.config.numCpu"), simenv.PlainVMPrefix+"000002")
		return got.Config != nil && got.Config.Annotation == "set by someone" && got.Summary.Config.NumCpu == 2
	})

	vm3 := plain(3)
	wait(vm3.PowerOff(ctx))
	wait(vm3.Destroy(ctx))
	waitFor(t, inv, "the deletion", func() bool {
		_, found := lookup(cachedList(t, inv, "name"), simenv.PlainVMPrefix+"000003")
		return !found
	})
}

func TestInventoryResyncsAfterAWatchError(t *testing.T) {
	env, c := newEnv(t)
	ctx := t.Context()
	if err := env.CreatePlainVMs(ctx, 3); err != nil {
		t.Fatalf("CreatePlainVMs: %v", err)
	}
	inv, cached := startInventory(t, c, InventoryOptions{Feed: FeedWatch, RetryDelay: time.Millisecond})

	// The pending long poll answers the power-off; the poll after it fails. PowerOffVM
	// itself is never faulted, and nothing else waits for updates meanwhile.
	env.AddFault("WaitForUpdatesEx", &types.SystemError{Reason: "injected"}, 1)
	name := simenv.PlainVMPrefix + "000000"
	if err := env.PowerOffVM(ctx, name); err != nil {
		t.Fatalf("PowerOffVM: %v", err)
	}
	waitFor(t, inv, "the watch error", func() bool { return inv.Stats().Errors >= 1 })

	// Whatever the cache's state, listings stay right.
	vms, err := cached.ListVirtualMachinesProperties(ctx, "runtime.powerState")
	if err != nil {
		t.Fatalf("list during recovery: %v", err)
	}
	if got, _ := lookup(vms, name); got.Runtime.PowerState != types.VirtualMachinePowerStatePoweredOff {
		t.Errorf("power state during recovery = %q, want poweredOff", got.Runtime.PowerState)
	}

	waitFor(t, inv, "a new full sync", func() bool {
		s := inv.Stats()
		return s.Live && s.Syncs >= 2
	})
	if got, _ := lookup(cachedList(t, inv, "runtime.powerState"), name); got.Runtime.PowerState != types.VirtualMachinePowerStatePoweredOff {
		t.Errorf("power state after the resync = %q, want poweredOff", got.Runtime.PowerState)
	}
	if s := inv.Stats(); s.LastError == nil || !strings.Contains(s.LastError.Error(), "SystemError") {
		t.Errorf("last error = %v, want the injected fault", s.LastError)
	}
}

func TestPollingInventoryRecoversFromAFailedListing(t *testing.T) {
	env, c := newEnv(t)
	ctx := t.Context()
	inv, cached := startInventory(t, c, InventoryOptions{Feed: FeedPoll, PollInterval: 10 * time.Millisecond, RetryDelay: time.Millisecond})

	env.AddFault("RetrieveProperties", &types.SystemError{Reason: "injected"}, 1)
	waitFor(t, inv, "the failed listing", func() bool { return inv.Stats().Errors >= 1 })
	// Made behind the cache's back: only a later listing can show it.
	vm := cloneVM(t, c, cloneParams{name: "cloned-meanwhile"})
	waitFor(t, inv, "a listing after the failure", func() bool {
		vms, ok := inv.List("name")
		_, found := lookup(vms, "cloned-meanwhile")
		return ok && found
	})
	vms, err := cached.ListVirtualMachinesProperties(ctx, "name")
	if err != nil {
		t.Fatalf("list: %v", err)
	}
	if got, ok := lookup(vms, "cloned-meanwhile"); !ok || got.Self != vm.Reference() {
		t.Errorf("the VM cloned around the failure is not listed")
	}
}

func TestInventoryIsNotServedBeforeItsFirstSync(t *testing.T) {
	_, c := newEnv(t)
	inv := NewInventory(c, InventoryOptions{})
	if _, ok := inv.List("name"); ok {
		t.Fatalf("an inventory that never synced answered a listing")
	}
	vms, err := NewCachedClient(c, inv).ListVirtualMachinesProperties(t.Context(), "name")
	if err != nil || len(vms) != 2 {
		t.Fatalf("listing before the first sync = %d VMs, %v; want the 2 templates from vCenter", len(vms), err)
	}
}

// waitForMatch waits until the cache holds exactly what vCenter lists.
func waitForMatch(t *testing.T, c *Client, inv *Inventory) {
	t.Helper()
	var direct, cached []string
	ctx, cancel := context.WithTimeout(t.Context(), testWait)
	defer cancel()
	for {
		changed := inv.Changed()
		vms, err := c.ListVirtualMachinesProperties(ctx, decisionProps...)
		if err != nil {
			t.Fatalf("direct listing: %v", err)
		}
		direct, cached = summarize(vms), summarize(cachedList(t, inv, decisionProps...))
		if strings.Join(direct, "\n") == strings.Join(cached, "\n") {
			return
		}
		select {
		case <-changed:
		case <-ctx.Done():
			t.Fatalf("the cache does not match vCenter:\n cache: %s\nvCenter: %s", strings.Join(cached, "\n        "), strings.Join(direct, "\n        "))
		}
	}
}

// TestInventoryStaysConsistentUnderConcurrentChanges lists continuously while the hatchery
// clones, renames and destroys VMs and another client renames and destroys others: no
// answer may hold a VM twice, or miss one that existed before the listing started and
// still existed after it.
func TestInventoryStaysConsistentUnderConcurrentChanges(t *testing.T) {
	for name, opts := range feeds {
		t.Run(name, func(t *testing.T) { testInventoryStaysConsistent(t, opts) })
	}
}

func testInventoryStaysConsistent(t *testing.T, opts InventoryOptions) {
	env, c := newEnv(t)
	ctx := t.Context()
	const stable, victims = 20, 6
	if err := env.CreatePlainVMs(ctx, stable+victims); err != nil {
		t.Fatalf("CreatePlainVMs: %v", err)
	}
	inv, cached := startInventory(t, c, opts)
	testStart := time.Now()

	template, err := c.LoadVirtualMachine(ctx, "debian12")
	if err != nil {
		t.Fatalf("LoadVirtualMachine: %v", err)
	}
	folder, err := c.LoadFolder(ctx)
	if err != nil {
		t.Fatalf("LoadFolder: %v", err)
	}
	finder := operatorFinder(t, env)

	// alive holds the hatchery's VMs known to exist: added when the clone returned,
	// removed before the destroy starts.
	var aliveMu sync.Mutex
	alive := map[types.ManagedObjectReference]bool{}
	snapshot := func() map[types.ManagedObjectReference]bool {
		aliveMu.Lock()
		defer aliveMu.Unlock()
		out := make(map[types.ManagedObjectReference]bool, len(alive))
		for ref := range alive {
			out[ref] = true
		}
		return out
	}
	setAlive := func(ref types.ManagedObjectReference, on bool) {
		aliveMu.Lock()
		defer aliveMu.Unlock()
		if on {
			alive[ref] = true
		} else {
			delete(alive, ref)
		}
	}
	stableNames := make([]string, stable)
	for i := range stableNames {
		stableNames[i] = fmt.Sprintf("%s%06d", simenv.PlainVMPrefix, i)
	}

	done := make(chan struct{})
	var listers, workers sync.WaitGroup
	var listings sync.Map // lister -> count, to prove the listers ran
	for l := range 3 {
		listers.Add(1)
		go func() {
			defer listers.Done()
			n := 0
			for {
				// One listing per change of the cache: the moments that matter, without
				// spinning (a busy loop would starve the workers on 2 cores).
				changed := inv.Changed()
				before := snapshot()
				vms, err := cached.ListVirtualMachinesProperties(ctx, "name", "config.annotation", "runtime.powerState")
				after := snapshot()
				if err != nil {
					t.Errorf("list: %v", err)
					return
				}
				n++
				refs := map[types.ManagedObjectReference]bool{}
				names := map[string]bool{}
				for _, vm := range vms {
					if refs[vm.Self] || names[vm.Name] {
						t.Errorf("listing holds %s (%s) twice", vm.Name, vm.Self.Value)
					}
					refs[vm.Self], names[vm.Name] = true, true
				}
				for _, name := range stableNames {
					if !names[name] {
						t.Errorf("listing misses untouched VM %s", name)
					}
				}
				for ref := range before {
					if after[ref] && !refs[ref] {
						t.Errorf("listing misses %s, alive before and after it", ref.Value)
					}
				}
				select {
				case <-done:
					listings.Store(l, n)
					return
				case <-changed:
				}
			}
		}()
	}

	// The hatchery: clone, power on, rename, destroy, two at a time. Specs are built here:
	// only the test goroutine may fail the test.
	specs := map[string]*types.VirtualMachineCloneSpec{}
	for w := range 2 {
		for i := range 3 {
			name := fmt.Sprintf("churn-%d-%d", w, i)
			specs[name] = cloneSpec(t, c, template, cloneParams{name: name, annotation: `{"worker":"` + name + `"}`, powerOn: true})
		}
	}
	for w := range 2 {
		workers.Add(1)
		go func() {
			defer workers.Done()
			for i := range 3 {
				name := fmt.Sprintf("churn-%d-%d", w, i)
				ref, err := cached.CloneVirtualMachine(ctx, template, folder, name, specs[name])
				if err != nil {
					t.Errorf("clone %s: %v", name, err)
					return
				}
				setAlive(*ref, true)
				vm := object.NewVirtualMachine(c.vc, *ref)
				if err := cached.RenameVirtualMachine(ctx, vm, name+"-renamed"); err != nil {
					t.Errorf("rename %s: %v", name, err)
					return
				}
				if err := cached.ShutdownVirtualMachine(ctx, vm); err != nil {
					t.Errorf("power off %s: %v", name, err)
					return
				}
				setAlive(*ref, false)
				if err := cached.DestroyVirtualMachine(ctx, vm); err != nil {
					t.Errorf("destroy %s: %v", name, err)
					return
				}
			}
		}()
	}
	// Someone else: renames half the victims, destroys the other half.
	workers.Add(1)
	go func() {
		defer workers.Done()
		for i := stable; i < stable+victims; i++ {
			name := fmt.Sprintf("%s%06d", simenv.PlainVMPrefix, i)
			vm, err := finder.VirtualMachine(ctx, name)
			if err != nil {
				t.Errorf("find %s: %v", name, err)
				return
			}
			var tasks []func(context.Context) (*object.Task, error)
			if i%2 == 0 {
				tasks = append(tasks, func(ctx context.Context) (*object.Task, error) { return vm.Rename(ctx, name+"-theirs") })
			} else {
				tasks = append(tasks, vm.PowerOff, vm.Destroy)
			}
			for _, run := range tasks {
				task, err := run(ctx)
				if err == nil {
					err = task.Wait(ctx)
				}
				if err != nil {
					t.Errorf("change %s: %v", name, err)
					return
				}
			}
		}
	}()

	workers.Wait()
	t.Logf("workers done after %v: %+v", time.Since(testStart), inv.Stats())
	close(done)
	listers.Wait()
	listings.Range(func(k, v any) bool {
		if v.(int) == 0 {
			t.Errorf("lister %v never listed", k)
		}
		return true
	})
	if s := inv.Stats(); s.PassedThrough != 0 {
		t.Errorf("%d listings passed through: the consistency checks did not test the cache", s.PassedThrough)
	}

	// Once the watch has caught up, the cache is exactly vCenter.
	waitForMatch(t, c, inv)
	t.Logf("match after %v: %+v", time.Since(testStart), inv.Stats())
}

// operatorFinder is a finder on the simulator's datacenter through a second session (an
// operator's, outside the client under test).
func operatorFinder(t *testing.T, env *simenv.Env) *find.Finder {
	t.Helper()
	other := adminClient(t, env)
	finder := find.NewFinder(other.Client, false)
	dc, err := finder.Datacenter(t.Context(), env.Datacenter)
	if err != nil {
		t.Fatalf("datacenter: %v", err)
	}
	finder.SetDatacenter(dc)
	return finder
}
