package vsphere

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/vmware/govmomi/fault"
	"github.com/vmware/govmomi/task"
	"github.com/vmware/govmomi/vim25"
	"github.com/vmware/govmomi/vim25/methods"
	"github.com/vmware/govmomi/vim25/soap"
	"github.com/vmware/govmomi/vim25/types"
)

// Tuning of the task waiter.
const (
	// taskPollWait is the MaxWaitSeconds of the waiter's long polls: an idle client costs
	// one WaitForUpdatesEx per minute.
	taskPollWait = 60 * time.Second
	// taskRemoveBatch is how many finished tasks the waiter lets pile up in its list view
	// before it removes them with a call of its own; below that, they leave the view with
	// the next task wait's own call (see taskWaiter).
	taskRemoveBatch = 16
	// Back-off bounds of the waiter after a failed vCenter call other than a lost session.
	taskRetryMin = 100 * time.Millisecond
	taskRetryMax = 5 * time.Second
)

// errClientClosed ends the task waits still running when the client logs out.
var errClientClosed = errors.New("vsphere client logged out")

// taskWaiter waits for vCenter tasks for every caller of one Client through a single
// property collector, instead of the collector, filter and long poll govmomi's
// Task.WaitForResult creates and destroys for each task (five round trips per task).
//
// A wait first reads the task's info once (RetrievePropertiesEx on the session's default,
// stateless collector): a task that already ended, as short tasks often have by the time
// their creating call returned, costs that one call and nothing below.
//
// The collector has one filter, created once, over a ListView holding the tasks waited
// for; it reports their "info" property. A task wait adds its task to the view
// (ModifyListView: one call, made by the waiting goroutine), then receives the task's
// final info from the loop, the one goroutine that long-polls the collector with
// WaitForUpdatesEx and dispatches the updates by task reference. Adding a task to the view
// reports its current state, so a task that finished before it was added is reported
// too. Finished tasks leave the view in batches: the next task wait's ModifyListView
// removes them along with its addition, or the loop does once taskRemoveBatch have piled
// up. A list view rather than a filter per task because vcsim (the tests' vCenter) only
// reports a filter created during a long poll at the next change of some object, and
// changes a collector's filter list without synchronisation while it answers a long poll;
// a view change is an object change, reported at once.
//
// The collector, the view and the filter belong to the session. When the session is lost
// (vCenter answers NotAuthenticated, the re-login tripper logs in again, and the objects
// are then unknown to the new session) or any call of the loop fails, the loop builds
// them again, with every task still waited for in the new view: a task that finished
// meanwhile is reported by its addition. Failures other than a lost session are retried
// after a growing back-off. A wait ends only with its task, its own context, or Logout.
//
// The same view holds the VMs whose properties are waited for (see vmwait.go): the filter
// reports vmWaitProperties of the VirtualMachine objects in it, and the loop keeps their
// latest values for the VM waits.
//
// The loop starts with the first wait and stops at close (Logout).
type taskWaiter struct {
	vc          *vim25.Client
	callTimeout time.Duration
	// generation is the session generation of the re-login tripper: when it moved, the
	// loop's objects belong to a session that is gone.
	generation func() uint64
	// after is the back-off timer (tests inject theirs).
	after func(time.Duration) <-chan time.Time

	ctx    context.Context // the loop's lifetime, cancelled by close
	cancel context.CancelFunc
	done   chan struct{} // closed when the loop has returned

	mu      sync.Mutex
	closed  bool
	running bool // the loop was started
	waits   map[types.ManagedObjectReference]*taskWait
	// view is the list view of the current build, nil while there is none: task waits
	// registered meanwhile are put in the next view by the loop itself.
	view  *types.ManagedObjectReference
	epoch uint64 // incremented by every build
	// rebuild asks the loop to build its objects again (a task wait could not add its
	// task to the view); cancelCall aborts the loop's request in flight.
	rebuild    bool
	cancelCall context.CancelFunc
	// removals are the finished (or no longer waited for) tasks, and the VMs no longer
	// waited for, to take out of the view.
	removals map[types.ManagedObjectReference]struct{}

	// vms are the VMs in the view (or about to be added to it), by reference.
	vms map[types.ManagedObjectReference]*vmWatch
	// removing are the VMs whose removal from the view is in flight: the channel is closed
	// when the call returned. A new wait for such a VM adds it only then, so that its
	// addition cannot be undone by the removal.
	removing map[types.ManagedObjectReference]chan struct{}
	// verify are the VMs that left the view while waited for: the loop adds them again,
	// which tells whether they still exist.
	verify map[types.ManagedObjectReference]struct{}
}

// taskWait is one caller waiting for one task.
type taskWait struct {
	ref  types.ManagedObjectReference
	done chan taskResult // buffered: the loop never blocks on a caller
}

type taskResult struct {
	info *types.TaskInfo
	err  error
}

func newTaskWaiter(vc *vim25.Client, callTimeout time.Duration, generation func() uint64) *taskWaiter {
	ctx, cancel := context.WithCancel(context.Background())
	return &taskWaiter{
		vc:          vc,
		callTimeout: callTimeout,
		generation:  generation,
		after:       time.After,
		ctx:         ctx,
		cancel:      cancel,
		done:        make(chan struct{}),
		waits:       make(map[types.ManagedObjectReference]*taskWait),
		removals:    make(map[types.ManagedObjectReference]struct{}),
		vms:         make(map[types.ManagedObjectReference]*vmWatch),
		removing:    make(map[types.ManagedObjectReference]chan struct{}),
		verify:      make(map[types.ManagedObjectReference]struct{}),
	}
}

// wait returns the info of the task ref once it succeeded, or the task's fault (as
// govmomi's task.Error, like Task.WaitForResult) once it failed, or ctx's error.
//
// A task that already ended (short tasks often end within the round trip of the call
// that created them) is read once and costs no view change nor long poll; the others are
// waited for through the loop.
func (w *taskWaiter) wait(ctx context.Context, ref types.ManagedObjectReference) (*types.TaskInfo, error) {
	if w.isClosed() {
		return nil, errClientClosed
	}
	if r, ended := w.peekTask(ctx, ref); ended {
		return r.info, r.err
	}
	if err := ctx.Err(); err != nil {
		// The caller gave up during the read: registering would only end the same way.
		return nil, err
	}
	tw := &taskWait{ref: ref, done: make(chan taskResult, 1)}
	w.mu.Lock()
	if w.closed {
		w.mu.Unlock()
		return nil, errClientClosed
	}
	if _, dup := w.waits[ref]; dup {
		w.mu.Unlock()
		return nil, fmt.Errorf("task %s is already waited for", ref.Value)
	}
	w.waits[ref] = tw
	if !w.running {
		w.running = true
		go w.run()
	}
	view, epoch := w.view, w.epoch
	var removals []types.ManagedObjectReference
	var removed chan struct{}
	if view != nil {
		removals, removed = w.takeRemovalsLocked()
	}
	w.mu.Unlock()

	if view != nil {
		w.addToView(ctx, tw, *view, epoch, removals)
		w.removalsDone(removals, removed)
	}
	select {
	case r := <-tw.done:
		return r.info, r.err
	case <-ctx.Done():
		w.forget(tw)
		// The loop may have delivered the result meanwhile: the task's outcome is worth
		// more to the caller than the deadline.
		select {
		case r := <-tw.done:
			return r.info, r.err
		default:
		}
		return nil, ctx.Err()
	}
}

// peekTask reads the info of the task ref once, outside the loop, and returns the
// result the loop would deliver if the task already ended. ended is false while the task
// is queued or running, and also when the read failed: the loop then handles the wait,
// including a lost session or a task vCenter does not know, as for any other.
func (w *taskWaiter) peekTask(ctx context.Context, ref types.ManagedObjectReference) (r taskResult, ended bool) {
	props, ok := w.peek(ctx, ref, []string{"info"})
	if !ok {
		return taskResult{}, false
	}
	var info *types.TaskInfo
	for _, p := range props {
		if ti, isInfo := p.Val.(types.TaskInfo); isInfo && p.Name == "info" {
			info = &ti
		}
	}
	if info == nil {
		return taskResult{}, false
	}
	switch info.State {
	case types.TaskInfoStateSuccess:
		return taskResult{info: info}, true
	case types.TaskInfoStateError:
		return taskResult{info: info, err: taskError(info)}, true
	}
	return taskResult{}, false
}

// peek reads props of ref with one RetrievePropertiesEx on the session's default property
// collector, which is stateless: no collector, view or filter to create or destroy. ok is
// false when the read failed or vCenter could not read every property (the object is
// gone, or a property is not readable): the caller then falls back to the loop.
func (w *taskWaiter) peek(ctx context.Context, ref types.ManagedObjectReference, props []string) (_ []types.DynamicProperty, ok bool) {
	cctx, cancel := context.WithTimeout(ctx, w.callTimeout)
	defer cancel()
	res, err := methods.RetrievePropertiesEx(cctx, w.vc, &types.RetrievePropertiesEx{
		This: w.vc.ServiceContent.PropertyCollector,
		SpecSet: []types.PropertyFilterSpec{{
			PropSet:   []types.PropertySpec{{Type: ref.Type, PathSet: props}},
			ObjectSet: []types.ObjectSpec{{Obj: ref}},
		}},
	})
	if err != nil || res.Returnval == nil {
		return nil, false
	}
	for _, oc := range res.Returnval.Objects {
		if oc.Obj == ref {
			return oc.PropSet, len(oc.MissingSet) == 0
		}
	}
	return nil, false
}

// isClosed tells whether close was called: a closed waiter makes no call any more.
func (w *taskWaiter) isClosed() bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.closed
}

// addToView puts the task of tw in view, taking the removals out of it in the same call.
// A failure is left to the loop, which builds its objects again with every task waited
// for; only a task vCenter does not know ends the wait at once.
func (w *taskWaiter) addToView(ctx context.Context, tw *taskWait, view types.ManagedObjectReference, epoch uint64, removals []types.ManagedObjectReference) {
	cctx, cancel := context.WithTimeout(ctx, w.callTimeout)
	defer cancel()
	res, err := methods.ModifyListView(cctx, w.vc, &types.ModifyListView{This: view, Add: []types.ManagedObjectReference{tw.ref}, Remove: removals})
	switch {
	case err == nil && slices.Contains(res.Returnval, tw.ref):
		w.finish(tw, taskResult{err: soap.WrapVimFault(&types.ManagedObjectNotFound{Obj: tw.ref})})
	case err == nil:
	case ctx.Err() != nil:
		// The caller gave up; the removals are still to be made.
		w.giveBackRemovals(epoch, removals)
	default:
		w.requestRebuild(epoch)
	}
}

// finish ends tw with r unless it already ended.
func (w *taskWaiter) finish(tw *taskWait, r taskResult) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.waits[tw.ref] != tw {
		return
	}
	delete(w.waits, tw.ref)
	tw.done <- r
}

// forget drops tw after its caller gave up; its task leaves the view with the next batch.
func (w *taskWaiter) forget(tw *taskWait) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.waits[tw.ref] == tw {
		delete(w.waits, tw.ref)
		w.removals[tw.ref] = struct{}{}
	}
}

// takeRemovalsLocked takes the pending removals for one ModifyListView call, whose maker
// then calls removalsDone. The VMs taken leave w.vms and are marked as being removed
// until then.
func (w *taskWaiter) takeRemovalsLocked() ([]types.ManagedObjectReference, chan struct{}) {
	if len(w.removals) == 0 {
		return nil, nil
	}
	refs := make([]types.ManagedObjectReference, 0, len(w.removals))
	var done chan struct{}
	for ref := range w.removals {
		refs = append(refs, ref)
		if ref.Type == vmType {
			if done == nil {
				done = make(chan struct{})
			}
			delete(w.vms, ref)
			w.removing[ref] = done
		}
	}
	clear(w.removals)
	return refs, done
}

// removalsDone ends the removal of refs taken with done, made or not: VM waits may add
// those VMs again.
func (w *taskWaiter) removalsDone(refs []types.ManagedObjectReference, done chan struct{}) {
	if done == nil {
		return
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, ref := range refs {
		if w.removing[ref] == done {
			delete(w.removing, ref)
		}
	}
	close(done)
}

// giveBackRemovals puts back removals a caller gave up making. Whether a VM among them
// left the view is unknown: a VM wait may rely on it being in or out, so the view is
// built again (rare: the caller's deadline expired during the call).
func (w *taskWaiter) giveBackRemovals(epoch uint64, refs []types.ManagedObjectReference) {
	if slices.ContainsFunc(refs, func(ref types.ManagedObjectReference) bool { return ref.Type == vmType }) {
		w.requestRebuild(epoch)
		return
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.epoch != epoch {
		return // a new view holds none of them
	}
	for _, ref := range refs {
		if _, waited := w.waits[ref]; !waited {
			w.removals[ref] = struct{}{}
		}
	}
}

// requestRebuild makes the loop build its objects again, unless it already did since
// epoch, aborting its request in flight.
func (w *taskWaiter) requestRebuild(epoch uint64) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.closed || w.epoch != epoch || w.view == nil {
		return
	}
	w.rebuild = true
	w.view = nil
	if w.cancelCall != nil {
		w.cancelCall()
	}
}

// close stops the loop and ends every wait with errClientClosed. The session's end
// destroys the collector, the view and the filter on vCenter's side.
func (w *taskWaiter) close() {
	w.mu.Lock()
	if w.closed {
		w.mu.Unlock()
		return
	}
	w.closed = true
	running := w.running
	for ref, tw := range w.waits {
		delete(w.waits, ref)
		tw.done <- taskResult{err: errClientClosed}
	}
	for _, vw := range w.vms {
		vw.endAllLocked(errClientClosed)
	}
	w.mu.Unlock()
	w.cancel()
	if running {
		<-w.done
	}
}

// taskObjects are the loop's vCenter objects of one build.
type taskObjects struct {
	collector, view, filter types.ManagedObjectReference
	generation              uint64 // of the session they belong to
	version                 string // of the last update set received
}

// run is the loop: build the objects, long-poll, dispatch, and build again after a failure.
func (w *taskWaiter) run() {
	defer close(w.done)
	var objs *taskObjects
	failures := 0
	for w.ctx.Err() == nil {
		if objs == nil || w.takeRebuild() {
			if objs != nil {
				w.discard(objs)
			}
			var err error
			if objs, err = w.build(); err != nil {
				objs = nil
				failures++
				w.sleep(taskRetryDelay(failures))
				continue
			}
		}
		set, err := w.poll(objs)
		if err != nil {
			if w.ctx.Err() != nil {
				return
			}
			lost := w.sessionLost(objs, err) || w.rebuildRequested()
			w.invalidate()
			w.discard(objs)
			objs = nil
			if !lost {
				failures++
				w.sleep(taskRetryDelay(failures))
			}
			continue
		}
		failures = 0
		if set != nil {
			objs.version = set.Version
			w.dispatch(set)
		}
	}
}

// build creates the collector, the list view holding every task waited for, and the
// filter, and publishes the view to task waits.
func (w *taskWaiter) build() (*taskObjects, error) {
	objs := &taskObjects{generation: w.generation()}
	var pc *types.CreatePropertyCollectorResponse
	err := w.call(w.callTimeout, func(ctx context.Context) (err error) {
		pc, err = methods.CreatePropertyCollector(ctx, w.vc, &types.CreatePropertyCollector{This: w.vc.ServiceContent.PropertyCollector})
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("create property collector: %w", err)
	}
	objs.collector = pc.Returnval
	var lv *types.CreateListViewResponse
	err = w.call(w.callTimeout, func(ctx context.Context) (err error) {
		lv, err = methods.CreateListView(ctx, w.vc, &types.CreateListView{This: *w.vc.ServiceContent.ViewManager})
		return err
	})
	if err != nil {
		w.discard(objs)
		return nil, fmt.Errorf("create task list view: %w", err)
	}
	objs.view = lv.Returnval
	spec := types.PropertyFilterSpec{
		ObjectSet: []types.ObjectSpec{{
			Obj:  objs.view,
			Skip: types.NewBool(true),
			SelectSet: []types.BaseSelectionSpec{&types.TraversalSpec{
				Type: "ListView",
				Path: "view",
				Skip: types.NewBool(false),
			}},
		}},
		PropSet: []types.PropertySpec{
			{Type: "Task", PathSet: []string{"info"}},
			{Type: vmType, PathSet: vmWaitProperties},
		},
	}
	// From here on, waits add themselves; those registered before are added now. The view
	// is filled before the filter exists: vcsim resynchronises a filter over a list view
	// changed before its first long poll only at a later batch of changes, and drops the
	// departures (a VM destroyed by someone else) reported in that batch.
	w.mu.Lock()
	w.epoch++
	w.rebuild = false
	w.view = &objs.view
	clear(w.removals)
	clear(w.verify)
	refs := make([]types.ManagedObjectReference, 0, len(w.waits)+len(w.vms))
	for ref := range w.waits {
		refs = append(refs, ref)
	}
	for ref, vw := range w.vms {
		if len(vw.waits) == 0 {
			delete(w.vms, ref) // not in the new view
			continue
		}
		refs = append(refs, ref)
	}
	w.mu.Unlock()
	if len(refs) > 0 {
		var res *types.ModifyListViewResponse
		err = w.call(w.callTimeout, func(ctx context.Context) (err error) {
			res, err = methods.ModifyListView(ctx, w.vc, &types.ModifyListView{This: objs.view, Add: refs})
			return err
		})
		if err != nil {
			w.invalidate()
			w.discard(objs)
			return nil, fmt.Errorf("add %d objects to the task list view: %w", len(refs), err)
		}
		w.unresolved(res.Returnval)
	}

	var f *types.CreateFilterResponse
	err = w.call(w.callTimeout, func(ctx context.Context) (err error) {
		f, err = methods.CreateFilter(ctx, w.vc, &types.CreateFilter{This: objs.collector, Spec: spec})
		return err
	})
	if err != nil {
		w.invalidate()
		w.discard(objs)
		return nil, fmt.Errorf("create task filter: %w", err)
	}
	objs.filter = f.Returnval
	return objs, nil
}

// unresolved ends the waits of the objects vCenter could not add to the view: they do not
// exist (any more).
func (w *taskWaiter) unresolved(refs []types.ManagedObjectReference) {
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, ref := range refs {
		err := soap.WrapVimFault(&types.ManagedObjectNotFound{Obj: ref})
		if tw := w.waits[ref]; tw != nil {
			delete(w.waits, ref)
			tw.done <- taskResult{err: err}
		}
		if vw := w.vms[ref]; vw != nil {
			vw.endAllLocked(err)
			// Its values are no more: a later wait must find out again.
			delete(w.vms, ref)
			// vcsim lists unresolved objects in the view all the same.
			w.removals[ref] = struct{}{}
		}
	}
}

// poll removes a full batch of finished tasks from the view and adds again the VMs to
// verify, then long-polls the collector. A nil set means no change within taskPollWait.
func (w *taskWaiter) poll(objs *taskObjects) (*types.UpdateSet, error) {
	w.mu.Lock()
	var removals, verify []types.ManagedObjectReference
	var removed chan struct{}
	for ref := range w.verify {
		if vw := w.vms[ref]; vw != nil && len(vw.waits) > 0 {
			verify = append(verify, ref)
		}
	}
	clear(w.verify)
	if len(w.removals) >= taskRemoveBatch || (len(verify) > 0 && len(w.removals) > 0) {
		removals, removed = w.takeRemovalsLocked()
	}
	w.mu.Unlock()
	if len(removals) > 0 || len(verify) > 0 {
		var res *types.ModifyListViewResponse
		err := w.call(w.callTimeout, func(ctx context.Context) (err error) {
			res, err = methods.ModifyListView(ctx, w.vc, &types.ModifyListView{This: objs.view, Add: verify, Remove: removals})
			return err
		})
		w.removalsDone(removals, removed)
		if err != nil {
			// The build that follows adds the VMs to verify along with every other.
			return nil, fmt.Errorf("modify the task list view (%d removals, %d VMs to verify): %w", len(removals), len(verify), err)
		}
		w.unresolved(res.Returnval)
	}
	maxWait := int32(taskPollWait / time.Second)
	var res *types.WaitForUpdatesExResponse
	err := w.call(taskPollWait+w.callTimeout, func(ctx context.Context) (err error) {
		res, err = methods.WaitForUpdatesEx(ctx, w.vc, &types.WaitForUpdatesEx{
			This:    objs.collector,
			Version: objs.version,
			Options: &types.WaitOptions{MaxWaitSeconds: &maxWait},
		})
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("wait for task updates: %w", err)
	}
	return res.Returnval, nil
}

// dispatch ends the waits of the tasks that finished and of the VMs whose condition holds,
// and marks for removal from the view the tasks nobody waits for any more.
func (w *taskWaiter) dispatch(set *types.UpdateSet) {
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, fs := range set.FilterSet {
		for _, update := range fs.ObjectSet {
			if update.Obj.Type == vmType {
				w.dispatchVMLocked(update)
				continue
			}
			if update.Obj.Type != "Task" || update.Kind == types.ObjectUpdateKindLeave {
				continue
			}
			info := changedTaskInfo(update.ChangeSet)
			if info == nil {
				continue
			}
			tw := w.waits[update.Obj]
			if tw == nil {
				w.removals[update.Obj] = struct{}{}
				continue
			}
			switch info.State {
			case types.TaskInfoStateSuccess:
				delete(w.waits, update.Obj)
				w.removals[update.Obj] = struct{}{}
				tw.done <- taskResult{info: info}
			case types.TaskInfoStateError:
				delete(w.waits, update.Obj)
				w.removals[update.Obj] = struct{}{}
				tw.done <- taskResult{info: info, err: taskError(info)}
			}
		}
	}
}

// changedTaskInfo is the task info assigned by changes, nil when they assign none.
func changedTaskInfo(changes []types.PropertyChange) *types.TaskInfo {
	var info *types.TaskInfo
	for _, c := range changes {
		if c.Name != "info" || c.Op != types.PropertyChangeOpAssign {
			continue
		}
		if ti, ok := c.Val.(types.TaskInfo); ok {
			info = &ti
		}
	}
	return info
}

// taskError is the error of a failed task, the one Task.WaitForResult returns, so that
// fault.Is sees the task's fault.
func taskError(info *types.TaskInfo) error {
	if info.Error == nil {
		return fmt.Errorf("task %s failed without a fault", info.Task.Value)
	}
	return task.Error{LocalizedMethodFault: info.Error, Description: info.Description}
}

// call runs one request of the loop bounded by timeout, abortable by close and by
// requestRebuild (one already requested aborts it at once).
func (w *taskWaiter) call(timeout time.Duration, f func(context.Context) error) error {
	ctx, cancel := context.WithTimeout(w.ctx, timeout)
	defer cancel()
	w.mu.Lock()
	w.cancelCall = cancel
	if w.rebuild {
		cancel()
	}
	w.mu.Unlock()
	defer func() {
		w.mu.Lock()
		w.cancelCall = nil
		w.mu.Unlock()
	}()
	return f(ctx)
}

// sessionLost tells whether err means the objects died with their session, in which case
// they are built again at once (the re-login tripper has logged in again by then).
func (w *taskWaiter) sessionLost(objs *taskObjects, err error) bool {
	return w.generation() != objs.generation ||
		fault.Is(err, &types.NotAuthenticated{}) || fault.Is(err, &types.ManagedObjectNotFound{})
}

func (w *taskWaiter) takeRebuild() bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	r := w.rebuild
	w.rebuild = false
	return r
}

func (w *taskWaiter) rebuildRequested() bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.rebuild
}

// invalidate withdraws the view from waits until the next build.
func (w *taskWaiter) invalidate() {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.view = nil
	w.rebuild = false
}

// discard destroys objs on vCenter, if their session is still the current one (a lost
// session took them along). Failures are ignored: they end with the session anyway.
func (w *taskWaiter) discard(objs *taskObjects) {
	if w.generation() != objs.generation {
		return
	}
	if objs.collector.Value != "" {
		// Destroying the collector destroys its filter and ends its long poll.
		_ = w.call(w.callTimeout, func(ctx context.Context) error {
			_, err := methods.DestroyPropertyCollector(ctx, w.vc, &types.DestroyPropertyCollector{This: objs.collector})
			return err
		})
	}
	if objs.view.Value != "" {
		_ = w.call(w.callTimeout, func(ctx context.Context) error {
			_, err := methods.DestroyView(ctx, w.vc, &types.DestroyView{This: objs.view})
			return err
		})
	}
}

// sleep waits d or until close.
func (w *taskWaiter) sleep(d time.Duration) {
	select {
	case <-w.after(d):
	case <-w.ctx.Done():
	}
}

// taskRetryDelay is the wait after the n-th consecutive failure of the loop (n ≥ 1).
func taskRetryDelay(n int) time.Duration {
	d := taskRetryMin
	for i := 1; i < n && d < taskRetryMax; i++ {
		d *= 2
	}
	return min(d, taskRetryMax)
}
