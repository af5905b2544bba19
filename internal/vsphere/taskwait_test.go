package vsphere

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vmware/govmomi"
	"github.com/vmware/govmomi/fault"
	"github.com/vmware/govmomi/object"
	"github.com/vmware/govmomi/property"
	"github.com/vmware/govmomi/task"
	"github.com/vmware/govmomi/vim25/methods"
	"github.com/vmware/govmomi/vim25/mo"
	"github.com/vmware/govmomi/vim25/types"

	"github.com/hatchery-vsphere/hatchery-vsphere/internal/simenv"
)

// testTaskType is the task type the tests' extension registers: vCenter only creates
// tasks (TaskManager.CreateTask) of a registered type.
const testTaskType = "com.hatchery.test.task"

// taskAdmin is a second session able to create tasks and end them at will, the way an
// extension does: the tasks' owner, not the waiter.
type taskAdmin struct {
	client *govmomi.Client
	entity types.ManagedObjectReference
}

func newTaskAdmin(t *testing.T, env *simenv.Env, c *Client) *taskAdmin {
	t.Helper()
	ctx := t.Context()
	admin := adminClient(t, env)
	err := object.NewExtensionManager(admin.Client).Register(ctx, types.Extension{
		Key:      "com.hatchery.test",
		TaskList: []types.ExtensionTaskTypeInfo{{TaskID: testTaskType}},
	})
	if err != nil {
		t.Fatalf("register extension: %v", err)
	}
	vm, err := c.LoadVirtualMachine(ctx, "debian12")
	if err != nil {
		t.Fatalf("LoadVirtualMachine: %v", err)
	}
	return &taskAdmin{client: admin, entity: vm.Reference()}
}

// create makes a queued task that only finish ends.
func (a *taskAdmin) create(t *testing.T) types.ManagedObjectReference {
	t.Helper()
	ctx := t.Context()
	res, err := methods.CreateTask(ctx, a.client.Client, &types.CreateTask{
		This:        *a.client.ServiceContent.TaskManager,
		Obj:         a.entity,
		TaskTypeId:  testTaskType,
		InitiatedBy: "taskwait_test",
	})
	if err != nil {
		t.Fatalf("CreateTask: %v", err)
	}
	ref := res.Returnval.Task
	// vcsim registers the task just after answering: wait until it can be read.
	pc := property.DefaultCollector(a.client.Client)
	for {
		var tk mo.Task
		err := pc.RetrieveOne(ctx, ref, []string{"info.state"}, &tk)
		if err == nil {
			return ref
		}
		if !fault.Is(err, &types.ManagedObjectNotFound{}) {
			t.Fatalf("read task %s: %v", ref.Value, err)
		}
	}
}

// finish ends the task with result, or with fault when not nil.
func (a *taskAdmin) finish(t *testing.T, ref types.ManagedObjectReference, result string, f types.BaseMethodFault) {
	t.Helper()
	req := &types.SetTaskState{This: ref, State: types.TaskInfoStateSuccess, Result: result}
	if f != nil {
		req.State, req.Result = types.TaskInfoStateError, nil
		req.Fault = &types.LocalizedMethodFault{Fault: f, LocalizedMessage: fmt.Sprintf("%T", f)}
	}
	if _, err := methods.SetTaskState(t.Context(), a.client.Client, req); err != nil {
		t.Fatalf("SetTaskState(%s): %v", ref.Value, err)
	}
}

type waitOutcome struct {
	info *types.TaskInfo
	err  error
}

// startWait waits for ref in a goroutine the test owns.
func startWait(t *testing.T, c *Client, ref types.ManagedObjectReference) <-chan waitOutcome {
	t.Helper()
	out := make(chan waitOutcome, 1)
	var wg sync.WaitGroup
	t.Cleanup(wg.Wait)
	wg.Go(func() {
		info, err := c.tasks.wait(t.Context(), ref)
		out <- waitOutcome{info, err}
	})
	return out
}

// waitInView returns once the waiter's list view holds every ref: their waits are set.
func waitInView(t *testing.T, c *Client, refs ...types.ManagedObjectReference) {
	t.Helper()
	ctx := t.Context()
	for {
		c.tasks.mu.Lock()
		view := c.tasks.view
		c.tasks.mu.Unlock()
		if view != nil {
			var lv mo.ListView
			err := c.pc.RetrieveOne(ctx, *view, []string{"view"}, &lv)
			if err == nil && !slices.ContainsFunc(refs, func(r types.ManagedObjectReference) bool { return !slices.Contains(lv.View, r) }) {
				return
			}
		}
		if ctx.Err() != nil {
			t.Fatalf("tasks never in the waiter's view: %v", ctx.Err())
		}
		runtime.Gosched()
	}
}

// callCounts snapshots the SOAP calls the simulator received, by method.
type callCounts map[string]int

var countedMethods = []string{
	"CreatePropertyCollector", "DestroyPropertyCollector", "CreateFilter", "DestroyPropertyFilter",
	"CreateListView", "ModifyListView", "DestroyView", "WaitForUpdatesEx", "RetrievePropertiesEx",
}

func snapshotCalls(env *simenv.Env) callCounts {
	c := callCounts{}
	for _, m := range countedMethods {
		c[m] = env.CallCount(m)
	}
	return c
}

func (c callCounts) since(before callCounts) callCounts {
	d := callCounts{}
	for m, n := range c {
		d[m] = n - before[m]
	}
	return d
}

func TestSequentialTaskWaitsShareOneCollector(t *testing.T) {
	env, c := newEnv(t)
	ctx := t.Context()
	before := snapshotCalls(env)
	vm := cloneVM(t, c, cloneParams{name: "w-seq"})

	const cycles = 10
	for range cycles {
		if err := c.StartVirtualMachine(ctx, vm); err != nil {
			t.Fatalf("StartVirtualMachine: %v", err)
		}
		if state, err := env.VMPowerState("w-seq"); err != nil || state != types.VirtualMachinePowerStatePoweredOn {
			t.Fatalf("after start: %q, %v", state, err)
		}
		if err := c.ShutdownVirtualMachine(ctx, vm); err != nil {
			t.Fatalf("ShutdownVirtualMachine: %v", err)
		}
		if state, err := env.VMPowerState("w-seq"); err != nil || state != types.VirtualMachinePowerStatePoweredOff {
			t.Fatalf("after shutdown: %q, %v", state, err)
		}
	}

	// Those tasks may end before their wait begins, and then cost no loop at all.
	tasks := 1 + 2*cycles // the clone and the power operations
	d := snapshotCalls(env).since(before)
	t.Logf("%d task waits: %v", tasks, d)
	if d["CreatePropertyCollector"] > 1 || d["CreateFilter"] > 1 || d["CreateListView"] > 1 {
		t.Errorf("set-up calls = %v, want at most one collector, one filter, one view for all tasks", d)
	}

	// Tasks still running when their wait begins all go through the one loop.
	admin := newTaskAdmin(t, env, c)
	for i := range cycles {
		ref := admin.create(t)
		got := startWait(t, c, ref)
		waitInView(t, c, ref)
		want := fmt.Sprintf("run %d", i)
		admin.finish(t, ref, want, nil)
		if out := <-got; out.err != nil || out.info.Result != want {
			t.Fatalf("task %d: %+v, %v", i, out.info, out.err)
		}
	}
	tasks += cycles
	d = snapshotCalls(env).since(before)
	t.Logf("%d task waits: %v", tasks, d)
	if d["CreatePropertyCollector"] != 1 || d["CreateFilter"] != 1 || d["CreateListView"] != 1 {
		t.Errorf("set-up calls = %v, want one collector, one filter, one view for all tasks", d)
	}
	// (DestroyView is not counted: the listings destroy their container views.)
	if d["DestroyPropertyCollector"] != 0 || d["DestroyPropertyFilter"] != 0 {
		t.Errorf("destroy calls = %v, want none while the session lasts", d)
	}
	dedicated := d["ModifyListView"]
	if dedicated > 2*tasks {
		t.Errorf("%d dedicated calls for %d task waits, want at most 2 per task", dedicated, tasks)
	}
	if d["WaitForUpdatesEx"] > 2*tasks+2 {
		t.Errorf("%d long polls for %d task waits, want at most 2 per task", d["WaitForUpdatesEx"], tasks)
	}
}

func TestTaskEndedBeforeItsWaitCostsOneRead(t *testing.T) {
	env, c := newEnv(t)
	ctx := t.Context()
	admin := newTaskAdmin(t, env, c)
	done, failed := admin.create(t), admin.create(t)
	admin.finish(t, done, "done", nil)
	admin.finish(t, failed, "", &types.NotEnoughLicenses{})
	before := snapshotCalls(env)

	info, err := c.tasks.wait(ctx, done)
	if err != nil || info == nil || info.State != types.TaskInfoStateSuccess || info.Result != "done" {
		t.Fatalf("wait for a task that succeeded before = %+v, %v; want its info", info, err)
	}
	info, err = c.tasks.wait(ctx, failed)
	if !fault.Is(err, &types.NotEnoughLicenses{}) || info == nil || info.State != types.TaskInfoStateError {
		t.Fatalf("wait for a task that failed before = %+v, %v; want the error state and its fault", info, err)
	}
	var taskErr task.Error
	if !errors.As(err, &taskErr) {
		t.Errorf("err = %v (%T), want a task.Error like the loop's", err, err)
	}

	d := snapshotCalls(env).since(before)
	if d["RetrievePropertiesEx"] != 2 {
		t.Errorf("%d property reads for 2 ended tasks, want one each", d["RetrievePropertiesEx"])
	}
	if d["CreatePropertyCollector"] != 0 || d["ModifyListView"] != 0 || d["WaitForUpdatesEx"] != 0 {
		t.Errorf("calls = %v, want no collector, no view change, no long poll", d)
	}
}

func TestConcurrentClonesAndPowerOpsThroughTheSharedWaiter(t *testing.T) {
	env, c := newEnv(t)
	ctx := t.Context()
	before := snapshotCalls(env)
	template, err := c.LoadVirtualMachine(ctx, "debian12")
	if err != nil {
		t.Fatalf("LoadVirtualMachine: %v", err)
	}
	folder, _ := c.LoadFolder(ctx)

	const n = 20
	names := make([]string, n)
	specs := make([]*types.VirtualMachineCloneSpec, n)
	for i := range n {
		names[i] = fmt.Sprintf("w-par-%02d", i)
		specs[i] = cloneSpec(t, c, template, cloneParams{name: names[i], numCPUs: int32(1 + i%4)})
	}
	refs := make([]*types.ManagedObjectReference, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			refs[i], errs[i] = c.CloneVirtualMachine(ctx, template, folder, names[i], specs[i])
		})
	}
	wg.Wait()
	for i := range n {
		if errs[i] != nil {
			t.Fatalf("clone %s: %v", names[i], errs[i])
		}
	}

	// Every clone got the reference of its own VM.
	vms, err := c.ListVirtualMachinesProperties(ctx, "summary.config.numCpu")
	if err != nil {
		t.Fatalf("list: %v", err)
	}
	for i := range n {
		got := findVM(t, vms, names[i])
		if got.Self != *refs[i] {
			t.Errorf("clone %s returned %v, the VM is %v", names[i], *refs[i], got.Self)
		}
		if got.Summary.Config.NumCpu != int32(1+i%4) {
			t.Errorf("%s has %d vCPUs, want %d", names[i], got.Summary.Config.NumCpu, 1+i%4)
		}
	}

	// Power them all on at once, then off at once.
	for _, op := range []struct {
		name string
		run  func(*object.VirtualMachine) error
		want types.VirtualMachinePowerState
	}{
		{"power on", func(vm *object.VirtualMachine) error { return c.StartVirtualMachine(ctx, vm) }, types.VirtualMachinePowerStatePoweredOn},
		{"power off", func(vm *object.VirtualMachine) error { return c.ShutdownVirtualMachine(ctx, vm) }, types.VirtualMachinePowerStatePoweredOff},
	} {
		for i := range n {
			wg.Go(func() {
				vm, _ := c.NewVirtualMachine(ctx, specs[i], refs[i], names[i])
				errs[i] = op.run(vm)
			})
		}
		wg.Wait()
		for i := range n {
			if errs[i] != nil {
				t.Fatalf("%s %s: %v", op.name, names[i], errs[i])
			}
			if state, err := env.VMPowerState(names[i]); err != nil || state != op.want {
				t.Errorf("after %s, %s is %q (%v)", op.name, names[i], state, err)
			}
		}
	}

	d := snapshotCalls(env).since(before)
	t.Logf("%d task waits: %v", 3*n, d)
	// Tasks that ended before their wait began cost no loop at all.
	if d["CreatePropertyCollector"] > 1 {
		t.Errorf("%d property collectors created, want at most 1", d["CreatePropertyCollector"])
	}
	if d["ModifyListView"] > 2*3*n {
		t.Errorf("%d dedicated calls for %d task waits, want at most 2 per task", d["ModifyListView"], 3*n)
	}
}

func TestFailedTaskReturnsItsFault(t *testing.T) {
	env, c := newEnv(t)
	ctx := t.Context()
	vm := cloneVM(t, c, cloneParams{name: "w-fail", powerOn: true})

	// vCenter fails the task of powering on a running VM.
	err := c.StartVirtualMachine(ctx, vm)
	if !fault.Is(err, &types.InvalidPowerState{}) {
		t.Fatalf("power on a running VM: err = %v, want the task's InvalidPowerState fault", err)
	}
	var taskErr task.Error
	if !errors.As(err, &taskErr) || !strings.Contains(err.Error(), `power on virtual machine "w-fail"`) {
		t.Errorf("err = %v (%T), want a task.Error naming the VM", err, err)
	}

	// A task ended with a fault by its owner.
	admin := newTaskAdmin(t, env, c)
	ref := admin.create(t)
	got := startWait(t, c, ref)
	waitInView(t, c, ref)
	admin.finish(t, ref, "", &types.NotEnoughLicenses{})
	out := <-got
	if !fault.Is(out.err, &types.NotEnoughLicenses{}) || out.info == nil || out.info.State != types.TaskInfoStateError {
		t.Fatalf("wait = %+v, %v; want the error state and its NotEnoughLicenses fault", out.info, out.err)
	}
}

func TestTaskWaitsSurviveSessionLoss(t *testing.T) {
	env, c := newEnv(t)
	ctx := t.Context()
	admin := newTaskAdmin(t, env, c)
	before := snapshotCalls(env)

	first, second, third := admin.create(t), admin.create(t), admin.create(t)
	waits := map[types.ManagedObjectReference]<-chan waitOutcome{}
	for _, ref := range []types.ManagedObjectReference{first, second, third} {
		waits[ref] = startWait(t, c, ref)
	}
	waitInView(t, c, first, second, third)
	admin.finish(t, first, "before", nil)
	if out := <-waits[first]; out.err != nil || out.info.Result != "before" {
		t.Fatalf("first task: %+v, %v", out.info, out.err)
	}

	key, err := c.sessionKey(ctx)
	if err != nil {
		t.Fatalf("session key: %v", err)
	}
	if err := admin.client.SessionManager.TerminateSession(ctx, []string{key}); err != nil {
		t.Fatalf("TerminateSession: %v", err)
	}
	// Both end while the waiter's session is gone; the third with a fault.
	admin.finish(t, second, "during", nil)
	admin.finish(t, third, "", &types.InsufficientResourcesFault{})

	if out := <-waits[second]; out.err != nil || out.info.Result != "during" {
		t.Fatalf("second task after session loss: %+v, %v", out.info, out.err)
	}
	if out := <-waits[third]; !fault.Is(out.err, &types.InsufficientResourcesFault{}) {
		t.Fatalf("third task after session loss: err = %v, want its fault", out.err)
	}
	if renewed, err := c.sessionKey(ctx); err != nil || renewed == key {
		t.Fatalf("session after re-login = %q, %v; want a new one", renewed, err)
	}
	// The collector died with the session: one more, and tasks are waited for again.
	if d := snapshotCalls(env).since(before); d["CreatePropertyCollector"] != 2 {
		t.Errorf("%d property collectors created, want 2 (one per session)", d["CreatePropertyCollector"])
	}
	vm := cloneVM(t, c, cloneParams{name: "w-after-loss"})
	if err := c.StartVirtualMachine(ctx, vm); err != nil {
		t.Fatalf("StartVirtualMachine after session loss: %v", err)
	}
}

func TestTaskWaitIsBounded(t *testing.T) {
	env, c := newEnv(t)
	ctx := t.Context()
	admin := newTaskAdmin(t, env, c)
	never := admin.create(t)

	short := func(ctx context.Context) (context.Context, context.CancelFunc) {
		return context.WithTimeout(ctx, 200*time.Millisecond)
	}
	_, err := c.runTask(ctx, short, func(context.Context) (*object.Task, error) {
		return object.NewTask(c.vc, never), nil
	})
	if !errors.Is(err, context.DeadlineExceeded) || FaultKind(err) != FaultTimeout {
		t.Fatalf("wait for a task that never ends: err = %v, want a deadline", err)
	}
	if !strings.Contains(err.Error(), never.Value) {
		t.Errorf("error %q does not name the task", err)
	}

	// The abandoned wait leaves the waiter usable, and its task's end is ignored.
	admin.finish(t, never, "late", nil)
	next := admin.create(t)
	got := startWait(t, c, next)
	admin.finish(t, next, "next", nil)
	if out := <-got; out.err != nil || out.info.Result != "next" {
		t.Fatalf("next task: %+v, %v", out.info, out.err)
	}
}

func TestTaskWaiterBacksOffAfterAFailedPoll(t *testing.T) {
	env, c := newEnv(t)
	admin := newTaskAdmin(t, env, c)
	// The loop starts with the first wait below: the fake timer is in place before.
	asked := make(chan time.Duration, 1)
	fire := make(chan time.Time)
	c.tasks.after = func(d time.Duration) <-chan time.Time {
		asked <- d
		return fire
	}
	env.AddFault("WaitForUpdatesEx", &types.SystemError{Reason: "injected"}, 1)

	ref := admin.create(t)
	got := startWait(t, c, ref)
	if d := <-asked; d != taskRetryMin {
		t.Errorf("first back-off = %s, want %s", d, taskRetryMin)
	}
	admin.finish(t, ref, "after back-off", nil)
	fire <- time.Time{}
	if out := <-got; out.err != nil || out.info.Result != "after back-off" {
		t.Fatalf("wait after a failed poll: %+v, %v", out.info, out.err)
	}
}

func TestFailedAdditionRebuildsTheWaiter(t *testing.T) {
	env, c := newEnv(t)
	admin := newTaskAdmin(t, env, c)
	first := admin.create(t)
	got := startWait(t, c, first)
	waitInView(t, c, first)
	admin.finish(t, first, "first", nil)
	if out := <-got; out.err != nil {
		t.Fatalf("first task: %v", out.err)
	}
	before := snapshotCalls(env)

	// The view exists now: the next wait's own addition fails, and the loop takes over.
	env.AddFault("ModifyListView", &types.SystemError{Reason: "injected"}, 1)
	second := admin.create(t)
	got = startWait(t, c, second)
	// In the view the loop built again: the wait is past its read of the running task.
	waitInView(t, c, second)
	admin.finish(t, second, "second", nil)
	if out := <-got; out.err != nil || out.info.Result != "second" {
		t.Fatalf("task whose addition failed: %+v, %v", out.info, out.err)
	}
	if d := snapshotCalls(env).since(before); d["CreatePropertyCollector"] != 1 || d["DestroyPropertyCollector"] != 1 {
		t.Errorf("calls = %v, want the collector replaced once", d)
	}
}

func TestLogoutEndsTaskWaitsAndTheLoop(t *testing.T) {
	env, c := newEnv(t)
	admin := newTaskAdmin(t, env, c)
	ref := admin.create(t)
	got := startWait(t, c, ref)
	waitInView(t, c, ref)

	if err := c.Logout(t.Context()); err != nil {
		t.Fatalf("Logout: %v", err)
	}
	if out := <-got; !errors.Is(out.err, errClientClosed) {
		t.Fatalf("wait across Logout: err = %v, want %v", out.err, errClientClosed)
	}
	// Logout returns once the loop has closed its done channel; the goroutine itself may
	// still be finishing its return then, so its end is awaited (bounded).
	if stacks, gone := loopGone(); !gone {
		t.Errorf("the task waiter's loop outlived Logout:\n%s", stacks)
	}
	if _, err := c.tasks.wait(t.Context(), ref); !errors.Is(err, errClientClosed) {
		t.Errorf("wait after Logout: err = %v, want %v", err, errClientClosed)
	}
}

func TestTaskRetryDelayGrowsToItsCap(t *testing.T) {
	for n, want := range map[int]time.Duration{1: taskRetryMin, 2: 2 * taskRetryMin, 3: 4 * taskRetryMin, 20: taskRetryMax} {
		if got := taskRetryDelay(n); got != want {
			t.Errorf("taskRetryDelay(%d) = %s, want %s", n, got, want)
		}
	}
}

// loopGone waits, up to a bound that only turns a leak into a failure, for no goroutine
// of a task waiter's loop to be left, and returns the stacks when one is.
func loopGone() (string, bool) {
	deadline := time.NewTimer(5 * time.Second)
	defer deadline.Stop()
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	buf := make([]byte, 1<<20)
	for {
		stacks := string(buf[:runtime.Stack(buf, true)])
		if !strings.Contains(stacks, "(*taskWaiter).run") {
			return "", true
		}
		select {
		case <-deadline.C:
			return stacks, false
		case <-tick.C:
		}
	}
}
