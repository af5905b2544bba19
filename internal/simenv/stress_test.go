package simenv

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vmware/govmomi/object"
	"github.com/vmware/govmomi/property"
	"github.com/vmware/govmomi/view"
	"github.com/vmware/govmomi/vim25"
	"github.com/vmware/govmomi/vim25/methods"
	"github.com/vmware/govmomi/vim25/mo"
	"github.com/vmware/govmomi/vim25/types"
	"golang.org/x/sync/errgroup"
)

// vmWatcher long-polls WaitForUpdatesEx over a container view of every VM, the way the
// hatchery's live inventory does, and keeps the names it has been told about.
type vmWatcher struct {
	c       *vim25.Client
	pc      *property.Collector
	version string

	mu      sync.Mutex
	names   map[types.ManagedObjectReference]string
	entered map[string]bool // every name ever seen
}

func newVMWatcher(t *testing.T, w *world) *vmWatcher {
	t.Helper()
	ctx := t.Context()
	c := w.client.Client
	v, err := view.NewManager(c).CreateContainerView(ctx, c.ServiceContent.RootFolder, []string{"VirtualMachine"}, true)
	if err != nil {
		t.Fatalf("container view: %v", err)
	}
	pc, err := property.DefaultCollector(c).Create(ctx)
	if err != nil {
		t.Fatalf("property collector: %v", err)
	}
	t.Cleanup(func() { _ = pc.Destroy(context.Background()) })
	_, err = pc.CreateFilter(ctx, types.CreateFilter{Spec: types.PropertyFilterSpec{
		ObjectSet: []types.ObjectSpec{{
			Obj:       v.Reference(),
			Skip:      types.NewBool(true),
			SelectSet: []types.BaseSelectionSpec{&types.TraversalSpec{Type: "ContainerView", Path: "view"}},
		}},
		PropSet: []types.PropertySpec{{Type: "VirtualMachine", PathSet: []string{"name", "runtime.powerState"}}},
	}})
	if err != nil {
		t.Fatalf("create filter: %v", err)
	}
	return &vmWatcher{c: c, pc: pc, names: map[types.ManagedObjectReference]string{}, entered: map[string]bool{}}
}

// poll makes one WaitForUpdatesEx call that waits up to maxWait seconds and applies its
// answer; false when it timed out without a change.
func (vw *vmWatcher) poll(ctx context.Context, maxWait int32) (bool, error) {
	req := types.WaitForUpdatesEx{This: vw.pc.Reference(), Version: vw.version, Options: &types.WaitOptions{MaxWaitSeconds: &maxWait}}
	res, err := methods.WaitForUpdatesEx(ctx, vw.c, &req)
	if err != nil {
		return false, err
	}
	set := res.Returnval
	if set == nil {
		return false, nil
	}
	vw.version = set.Version
	vw.mu.Lock()
	defer vw.mu.Unlock()
	for _, fs := range set.FilterSet {
		for _, u := range fs.ObjectSet {
			if u.Kind == types.ObjectUpdateKindLeave {
				delete(vw.names, u.Obj)
				continue
			}
			for _, ch := range u.ChangeSet {
				if ch.Name == "name" {
					name, _ := ch.Val.(string)
					vw.names[u.Obj] = name
					vw.entered[name] = true
				}
			}
		}
	}
	return true, nil
}

func (vw *vmWatcher) current() map[string]bool {
	vw.mu.Lock()
	defer vw.mu.Unlock()
	out := map[string]bool{}
	for _, n := range vw.names {
		out[n] = true
	}
	return out
}

func (vw *vmWatcher) everSeen(name string) bool {
	vw.mu.Lock()
	defer vw.mu.Unlock()
	return vw.entered[name]
}

// job is one clone to make: its name and its clone spec, prepared by the test goroutine.
type job struct {
	name string
	spec types.VirtualMachineCloneSpec
}

// lifecycle is what one hatchery job does to a VM, plus what a user does on the side:
// clone and power on, rename, power off and on again, shutdown from the guest, destroy.
func lifecycle(ctx context.Context, w *world, src *object.VirtualMachine, folder *object.Folder, j job) error {
	task, err := src.Clone(ctx, folder, j.name, j.spec)
	if err != nil {
		return fmt.Errorf("clone %s: %w", j.name, err)
	}
	res, err := task.WaitForResult(ctx)
	if err != nil {
		return fmt.Errorf("clone %s: %w", j.name, err)
	}
	vm := object.NewVirtualMachine(w.client.Client, res.Result.(types.ManagedObjectReference))
	steps := []struct {
		what string
		run  func() (*object.Task, error)
	}{
		{"rename", func() (*object.Task, error) { return vm.Rename(ctx, j.name+"-renamed") }},
		{"power off", func() (*object.Task, error) { return vm.PowerOff(ctx) }},
		{"power on", func() (*object.Task, error) { return vm.PowerOn(ctx) }},
	}
	for _, s := range steps {
		task, err := s.run()
		if err != nil {
			return fmt.Errorf("%s %s: %w", s.what, j.name, err)
		}
		if err := task.Wait(ctx); err != nil {
			return fmt.Errorf("%s %s: %w", s.what, j.name, err)
		}
	}
	if err := w.env.PowerOffVM(ctx, j.name+"-renamed"); err != nil {
		return err
	}
	task, err = vm.Destroy(ctx)
	if err != nil {
		return fmt.Errorf("destroy %s: %w", j.name, err)
	}
	if err := task.Wait(ctx); err != nil {
		return fmt.Errorf("destroy %s: %w", j.name, err)
	}
	return nil
}

// TestConcurrentLoadIsRaceFree is the load of the hatchery's end-to-end tests on one
// simulated vCenter: clones, renames, power operations and destroys from several
// goroutines, listings of every VM, a WaitForUpdatesEx watcher, and the Env's own helpers,
// all at once. Under -race, vcsim alone reports data races with this load; through the
// Env it must not, and every client must see a consistent vCenter.
func TestConcurrentLoadIsRaceFree(t *testing.T) {
	w := newWorld(t, Options{})
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	watcher := newVMWatcher(t, w)
	if _, err := watcher.poll(ctx, 0); err != nil { // the initial state: the templates
		t.Fatalf("initial poll: %v", err)
	}

	src, err := w.finder.VirtualMachine(ctx, "debian12")
	if err != nil {
		t.Fatalf("template: %v", err)
	}
	folder, err := w.finder.Folder(ctx, w.env.Folder)
	if err != nil {
		t.Fatalf("folder: %v", err)
	}
	const cloners, jobsEach, plainVMs = 4, 4, 10
	jobs := make([][]job, cloners)
	for c := range cloners {
		for j := range jobsEach {
			name := fmt.Sprintf("stress-%d-%d", c, j)
			jobs[c] = append(jobs[c], job{name: name, spec: w.cloneSpec(t, src, name, `{"hatchery_name":"stress"}`, "")})
		}
	}

	workDone := make(chan struct{})
	var load errgroup.Group
	for c := range cloners {
		load.Go(func() error {
			for _, j := range jobs[c] {
				if err := lifecycle(ctx, w, src, folder, j); err != nil {
					return err
				}
			}
			return nil
		})
	}
	load.Go(func() error { return w.env.CreatePlainVMs(ctx, plainVMs) })

	var side errgroup.Group
	listings := make([]int, 2)
	for i := range listings {
		side.Go(func() error {
			// A fresh container view per listing, as the hatchery does: creating one walks
			// the inventory.
			m := view.NewManager(w.client.Client)
			for {
				v, err := m.CreateContainerView(ctx, w.client.ServiceContent.RootFolder, []string{"VirtualMachine"}, true)
				if err != nil {
					return fmt.Errorf("container view: %w", err)
				}
				var vms []mo.VirtualMachine
				err = v.Retrieve(ctx, []string{"VirtualMachine"}, []string{"name", "runtime.powerState", "config.annotation", "guest.ipAddress"}, &vms)
				if err != nil {
					return fmt.Errorf("listing: %w", err)
				}
				if err := v.Destroy(ctx); err != nil {
					return fmt.Errorf("destroy view: %w", err)
				}
				listings[i]++
				select {
				case <-workDone:
					return nil
				default:
				}
			}
		})
	}
	side.Go(func() error {
		for {
			_ = w.env.VMNames()
			if _, err := w.env.ResourcePoolRuntime(); err != nil {
				return err
			}
			select {
			case <-workDone:
				return nil
			default:
			}
		}
	})
	polls, changes := 0, 0
	side.Go(func() error {
		// The watcher keeps polling until the work is over and it has seen its end state:
		// no stress VM left.
		for {
			changed, err := watcher.poll(ctx, 1)
			if err != nil {
				return fmt.Errorf("watch: %w", err)
			}
			polls++
			if changed {
				changes++
				continue
			}
			select {
			case <-workDone:
				return nil
			default:
			}
		}
	})

	err = load.Wait()
	close(workDone)
	if sideErr := side.Wait(); err == nil {
		err = sideErr
	}
	if err != nil {
		t.Fatal(err)
	}

	if listings[0] == 0 || listings[1] == 0 || changes == 0 {
		t.Errorf("listings %v and %d polls with changes: the side load did not run alongside", listings, changes)
	}
	// Every VM of the vCenter was announced to the watcher. (The reverse does not hold:
	// vcsim drops the Leave of a VM destroyed in the same batch as its container view
	// changed, and re-announces the whole view instead.)
	got := watcher.current()
	var want []string
	for _, n := range w.env.VMNames() {
		want = append(want, n)
		if !got[n] {
			t.Errorf("the watcher does not know %s", n)
		}
	}
	if len(want) != plainVMs+2 {
		t.Errorf("the vCenter has %d VMs, want %d plain VMs and 2 templates: %s", len(want), plainVMs, strings.Join(want, ","))
	}
}

// TestDelayedCallsDoNotHoldTheSimulator: a call waiting out its method delay lets every
// other call through, and so does a long poll waiting for changes; a change wakes the
// long poll.
func TestDelayedCallsDoNotHoldTheSimulator(t *testing.T) {
	w := newWorld(t, Options{})
	ctx := t.Context()
	watcher := newVMWatcher(t, w)
	if _, err := watcher.poll(ctx, 0); err != nil {
		t.Fatalf("initial poll: %v", err)
	}

	delaying := make(chan string, 4)
	w.env.hooks.mu.Lock()
	w.env.hooks.delaying = func(m string) { delaying <- m }
	w.env.hooks.mu.Unlock()
	w.env.SetMethodDelay("CloneVM_Task", time.Hour)

	cloneCtx, stopClone := context.WithCancel(ctx)
	cloneDone := make(chan error, 1)
	src, err := w.finder.VirtualMachine(ctx, "debian12")
	if err != nil {
		t.Fatalf("template: %v", err)
	}
	folder, err := w.finder.Folder(ctx, w.env.Folder)
	if err != nil {
		t.Fatalf("folder: %v", err)
	}
	spec := w.cloneSpec(t, src, "slow", "", "")
	go func() {
		_, err := src.Clone(cloneCtx, folder, "slow", spec)
		cloneDone <- err
	}()
	if m := <-delaying; m != "CloneVM_Task" {
		t.Fatalf("delayed %s, want CloneVM_Task", m)
	}

	pollDone := make(chan error, 1)
	go func() {
		// Waits for a change for up to an hour.
		_, err := watcher.poll(ctx, 3600)
		pollDone <- err
	}()

	// Both wait; the simulator serves the rest meanwhile.
	w.env.SetMethodDelay("CloneVM_Task", 0)
	if _, err := w.clone(t, "fast", "", ""); err != nil {
		t.Fatalf("clone while another waits its delay: %v", err)
	}
	if err := <-pollDone; err != nil {
		t.Fatalf("long poll: %v", err)
	}
	if !watcher.everSeen("fast") {
		t.Errorf("the long poll woke up without the new VM")
	}
	if err := w.env.CreatePlainVMs(ctx, 3); err != nil {
		t.Fatalf("CreatePlainVMs while a call waits its delay: %v", err)
	}

	select {
	case err := <-cloneDone:
		t.Fatalf("the delayed clone returned before its delay: %v", err)
	default:
	}
	stopClone()
	if err := <-cloneDone; err == nil {
		t.Errorf("the delayed clone succeeded after its client gave up")
	}
	if names := strings.Join(w.env.VMNames(), ","); strings.Contains(names, "slow") {
		t.Errorf("a clone whose client gave up during its delay was made: %s", names)
	}
}
