package vsphere

import (
	"context"
	"errors"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vmware/govmomi/object"
	"github.com/vmware/govmomi/vim25/mo"
	"github.com/vmware/govmomi/vim25/types"
)

// waitVMWatched returns once the waiter has n waits on ref and has received the VM's
// values from vCenter: the VM is in the view and the loop follows it.
func waitVMWatched(t *testing.T, c *Client, ref types.ManagedObjectReference, n int) {
	t.Helper()
	ctx := t.Context()
	for {
		c.tasks.mu.Lock()
		vw := c.tasks.vms[ref]
		ok := vw != nil && len(vw.waits) == n && vw.values != nil
		c.tasks.mu.Unlock()
		if ok {
			return
		}
		if ctx.Err() != nil {
			t.Fatalf("%s never watched by %d waits: %v", ref.Value, n, ctx.Err())
		}
		runtime.Gosched()
	}
}

// inViewCount is how many times the waiter's list view holds ref.
func inViewCount(t *testing.T, c *Client, ref types.ManagedObjectReference) int {
	t.Helper()
	c.tasks.mu.Lock()
	view := c.tasks.view
	c.tasks.mu.Unlock()
	if view == nil {
		t.Fatal("the waiter has no view")
	}
	var lv mo.ListView
	if err := c.pc.RetrieveOne(t.Context(), *view, []string{"view"}, &lv); err != nil {
		t.Fatalf("read the waiter's view: %v", err)
	}
	n := 0
	for _, r := range lv.View {
		if r == ref {
			n++
		}
	}
	return n
}

// goWait runs f in a goroutine the test owns and delivers its error.
func goWait(t *testing.T, f func() error) <-chan error {
	t.Helper()
	out := make(chan error, 1)
	var wg sync.WaitGroup
	t.Cleanup(wg.Wait)
	wg.Go(func() { out <- f() })
	return out
}

func TestVMWaitsGoThroughTheSharedCollector(t *testing.T) {
	env, c := newEnv(t)
	ctx := t.Context()
	before := snapshotCalls(env)
	vm := cloneVM(t, c, cloneParams{name: "w-props", fixedIP: "10.1.2.9", powerOn: true})

	// The first round waits for the fixed IP; the later ones for any IPv4 after a power
	// cycle seen by WaitForVirtualMachineShutdown.
	const cycles = 5
	tasks, vmWaits := 1, 0
	for i := range cycles {
		if i > 0 {
			if err := c.StartVirtualMachine(ctx, vm); err != nil {
				t.Fatalf("StartVirtualMachine: %v", err)
			}
			tasks++
		}
		if err := c.WaitForGuestOperationsReady(ctx, vm); err != nil {
			t.Fatalf("cycle %d: WaitForGuestOperationsReady: %v", i, err)
		}
		var want *string
		if i == 0 {
			ip := "10.1.2.9"
			want = &ip
		}
		if err := c.WaitForVirtualMachineIP(ctx, vm, want, "w-props"); err != nil {
			t.Fatalf("cycle %d: WaitForVirtualMachineIP: %v", i, err)
		}
		shutdown := goWait(t, func() error { return c.WaitForVirtualMachineShutdown(ctx, vm) })
		// Powered off only once the loop follows the wait: it goes through the collector.
		waitVMWatched(t, c, vm.Reference(), 1)
		if err := env.PowerOffVM(ctx, "w-props"); err != nil {
			t.Fatalf("PowerOffVM: %v", err)
		}
		if err := <-shutdown; err != nil {
			t.Fatalf("cycle %d: WaitForVirtualMachineShutdown: %v", i, err)
		}
		if state, err := env.VMPowerState("w-props"); err != nil || state != types.VirtualMachinePowerStatePoweredOff {
			t.Fatalf("cycle %d: after the shutdown wait the VM is %q (%v)", i, state, err)
		}
		vmWaits += 3
	}

	d := snapshotCalls(env).since(before)
	t.Logf("%d task waits, %d VM waits: %v", tasks, vmWaits, d)
	if d["CreatePropertyCollector"] != 1 || d["CreateFilter"] != 1 || d["CreateListView"] != 1 {
		t.Errorf("set-up calls = %v, want one collector, one filter, one view for all waits", d)
	}
	if d["DestroyPropertyCollector"] != 0 || d["DestroyPropertyFilter"] != 0 {
		t.Errorf("destroy calls = %v, want none while the session lasts", d)
	}
	if n := d["ModifyListView"]; n > 2*(tasks+vmWaits) {
		t.Errorf("%d dedicated calls for %d waits, want at most 2 per wait", n, tasks+vmWaits)
	}
}

func TestConcurrentWaitsOnOneVM(t *testing.T) {
	_, c := newEnv(t)
	ctx := t.Context()
	vm := cloneVM(t, c, cloneParams{name: "w-shared"})
	ref := vm.Reference()

	never := "10.9.9.9"
	short, cancel := context.WithCancel(ctx)
	defer cancel()
	unmet := goWait(t, func() error { return c.WaitForVirtualMachineIP(short, vm, &never, "w-shared") })
	ready := goWait(t, func() error { return c.WaitForGuestOperationsReady(ctx, vm) })
	anyIP := goWait(t, func() error { return c.WaitForVirtualMachineIP(ctx, vm, nil, "w-shared") })
	waitVMWatched(t, c, ref, 3)
	if n := inViewCount(t, c, ref); n != 1 {
		t.Errorf("the VM is %d times in the view, want once for its three waits", n)
	}

	// The wait that gives up leaves the others watching.
	cancel()
	err := <-unmet
	if !errors.Is(err, context.Canceled) || !strings.Contains(err.Error(), never) || !strings.Contains(err.Error(), `"w-shared"`) {
		t.Fatalf("abandoned wait: err = %v, want canceled naming the IP and the VM", err)
	}
	if err := c.StartVirtualMachine(ctx, vm); err != nil {
		t.Fatalf("StartVirtualMachine: %v", err)
	}
	if err := <-ready; err != nil {
		t.Fatalf("WaitForGuestOperationsReady: %v", err)
	}
	if err := <-anyIP; err != nil {
		t.Fatalf("WaitForVirtualMachineIP(any): %v", err)
	}

	// Conditions already true end at once, and an unmet one on the deadline.
	if err := c.WaitForGuestOperationsReady(ctx, vm); err != nil {
		t.Fatalf("WaitForGuestOperationsReady on a ready VM: %v", err)
	}
	dctx, dcancel := context.WithTimeout(ctx, 200*time.Millisecond)
	defer dcancel()
	err = c.WaitForVirtualMachineIP(dctx, vm, &never, "w-shared")
	if !errors.Is(err, context.DeadlineExceeded) || FaultKind(err) != FaultTimeout {
		t.Fatalf("wait for an IP the VM never gets: err = %v, want a deadline", err)
	}
	if !strings.Contains(err.Error(), never) || !strings.Contains(err.Error(), `"w-shared"`) {
		t.Errorf("error %q does not name the IP and the VM", err)
	}
}

func TestDestroyedVMEndsItsWaits(t *testing.T) {
	env, c := newEnv(t)
	ctx := t.Context()
	admin := adminClient(t, env)

	// Destroyed by someone else (an operator): the VM leaves the view.
	vm := cloneVM(t, c, cloneParams{name: "w-gone"})
	got := goWait(t, func() error { return c.WaitForVirtualMachineIP(ctx, vm, nil, "w-gone") })
	waitVMWatched(t, c, vm.Reference(), 1)
	task, err := object.NewVirtualMachine(admin.Client, vm.Reference()).Destroy(ctx)
	if err != nil {
		t.Fatalf("destroy: %v", err)
	}
	if err := task.Wait(ctx); err != nil {
		t.Fatalf("destroy task: %v", err)
	}
	if err := <-got; !IsNotFound(err) || !strings.Contains(err.Error(), `"w-gone"`) {
		t.Fatalf("wait on a VM destroyed by another session: err = %v, want ErrNotFound naming the VM", err)
	}

	// Destroyed by this client.
	own := cloneVM(t, c, cloneParams{name: "w-own"})
	got = goWait(t, func() error { return c.WaitForGuestOperationsReady(ctx, own) })
	waitVMWatched(t, c, own.Reference(), 1)
	if err := c.DestroyVirtualMachine(ctx, own); err != nil {
		t.Fatalf("DestroyVirtualMachine: %v", err)
	}
	if err := <-got; !IsNotFound(err) || !strings.Contains(err.Error(), `"w-own"`) {
		t.Fatalf("wait on a VM this client destroyed: err = %v, want ErrNotFound naming the VM", err)
	}

	// A VM that is already gone ends the wait at once.
	if err := c.WaitForVirtualMachineShutdown(ctx, vm); !IsNotFound(err) {
		t.Fatalf("wait on a destroyed VM: err = %v, want ErrNotFound", err)
	}
}

func TestVMWaitSurvivesSessionLoss(t *testing.T) {
	env, c := newEnv(t)
	ctx := t.Context()
	admin := adminClient(t, env)
	vm := cloneVM(t, c, cloneParams{name: "w-relogin"})

	ready := goWait(t, func() error { return c.WaitForGuestOperationsReady(ctx, vm) })
	anyIP := goWait(t, func() error { return c.WaitForVirtualMachineIP(ctx, vm, nil, "w-relogin") })
	waitVMWatched(t, c, vm.Reference(), 2)
	before := snapshotCalls(env)

	key, err := c.sessionKey(ctx)
	if err != nil {
		t.Fatalf("session key: %v", err)
	}
	if err := admin.SessionManager.TerminateSession(ctx, []string{key}); err != nil {
		t.Fatalf("TerminateSession: %v", err)
	}
	// The guest comes up while the waiter's session is gone. (The power-on task is not
	// waited for here: the admin's wait would create a collector of its own, and the
	// waits below prove the power-on.)
	if _, err := object.NewVirtualMachine(admin.Client, vm.Reference()).PowerOn(ctx); err != nil {
		t.Fatalf("power on: %v", err)
	}

	if err := <-ready; err != nil {
		t.Fatalf("WaitForGuestOperationsReady across session loss: %v", err)
	}
	if err := <-anyIP; err != nil {
		t.Fatalf("WaitForVirtualMachineIP across session loss: %v", err)
	}
	if renewed, err := c.sessionKey(ctx); err != nil || renewed == key {
		t.Fatalf("session after re-login = %q, %v; want a new one", renewed, err)
	}
	if d := snapshotCalls(env).since(before); d["CreatePropertyCollector"] != 1 {
		t.Errorf("%d property collectors created after the first, want 1 (for the new session)", d["CreatePropertyCollector"])
	}
}

func TestVMConditionAlreadyTrueCostsOneRead(t *testing.T) {
	env, c := newEnv(t)
	ctx := t.Context()
	vm := cloneVM(t, c, cloneParams{name: "w-off"})
	before := snapshotCalls(env)

	if err := c.WaitForVirtualMachineShutdown(ctx, vm); err != nil {
		t.Fatalf("WaitForVirtualMachineShutdown on a powered-off VM: %v", err)
	}
	// (The clone's wait may have started the loop: its long polls are not counted here.)
	d := snapshotCalls(env).since(before)
	if d["RetrievePropertiesEx"] != 1 {
		t.Errorf("%d property reads, want 1", d["RetrievePropertiesEx"])
	}
	if d["CreatePropertyCollector"] != 0 || d["ModifyListView"] != 0 {
		t.Errorf("calls = %v, want no collector and no view change", d)
	}
}

func TestVMConditionNotYetTrueCompletesThroughTheLoop(t *testing.T) {
	env, c := newEnv(t)
	ctx := t.Context()
	admin := adminClient(t, env)
	vm := cloneVM(t, c, cloneParams{name: "w-later"})
	before := snapshotCalls(env)

	ready := goWait(t, func() error { return c.WaitForGuestOperationsReady(ctx, vm) })
	waitVMWatched(t, c, vm.Reference(), 1)
	// Powered on by someone else, without waiting for the task: only this client's calls
	// are counted below.
	if _, err := object.NewVirtualMachine(admin.Client, vm.Reference()).PowerOn(ctx); err != nil {
		t.Fatalf("power on: %v", err)
	}
	if err := <-ready; err != nil {
		t.Fatalf("WaitForGuestOperationsReady: %v", err)
	}

	d := snapshotCalls(env).since(before)
	if d["RetrievePropertiesEx"] != 1 {
		t.Errorf("%d property reads, want the one read before the wait", d["RetrievePropertiesEx"])
	}
	if d["ModifyListView"] < 1 || d["WaitForUpdatesEx"] < 1 {
		t.Errorf("calls = %v, want the VM added to the view and a long poll", d)
	}
}
