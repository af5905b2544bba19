package vsphere

import (
	"context"
	"fmt"

	"github.com/vmware/govmomi/vim25/methods"
	"github.com/vmware/govmomi/vim25/soap"
	"github.com/vmware/govmomi/vim25/types"
)

// vmType is the managed object type of VMs.
const vmType = "VirtualMachine"

// vmWaitProperties are the VM properties the waiter's filter reports: exactly those the
// VM waits decide on (never the whole guest or config, which are large).
var vmWaitProperties = []string{
	"guest.guestOperationsReady",
	"guest.ipAddress",
	"guest.net",
	"runtime.powerState",
}

// vmValues are the latest reported values of vmWaitProperties of one VM, by property path;
// an unset property is absent.
type vmValues map[string]any

// vmWatch is one VM of the waiter's view and the waits on it.
//
// A VM enters the view with its first wait and stays there while waited for. When its last
// wait ends it stays idle in the view, its values still kept current by the loop, until
// its removal is taken (with the next addition or batch): a wait arriving meanwhile
// decides on those values without a call of its own.
type vmWatch struct {
	waits map[*vmWait]struct{}
	// values is nil until vCenter reported the VM.
	values vmValues
}

// vmWait is one caller waiting for a condition on one VM.
type vmWait struct {
	ref  types.ManagedObjectReference
	cond func(vmValues) bool
	done chan error // buffered: the loop never blocks on a caller
}

// endAllLocked ends every wait of vw with err.
func (vw *vmWatch) endAllLocked(err error) {
	for vmw := range vw.waits {
		delete(vw.waits, vmw)
		vmw.done <- err
	}
}

// checkLocked ends the waits of vw whose condition holds on its current values.
func (vw *vmWatch) checkLocked() {
	if vw.values == nil {
		return
	}
	for vmw := range vw.waits {
		if vmw.cond(vw.values) {
			delete(vw.waits, vmw)
			vmw.done <- nil
		}
	}
}

// waitVM returns once cond holds on the values of vmWaitProperties of the VM ref, with an
// error wrapping a ManagedObjectNotFound fault if the VM does not exist or vanishes, or
// with ctx's error. A condition that already holds ends the wait at once. Several waits
// may watch the same VM.
//
// Waits are often for a condition that already holds (a guest already ready): unless the
// loop already follows the VM, its values are read once first, and a condition that holds
// costs no view change nor long poll. Otherwise the VM enters the view, which reports its
// values again: nothing that changed since the read is lost.
func (w *taskWaiter) waitVM(ctx context.Context, ref types.ManagedObjectReference, cond func(vmValues) bool) error {
	followed, err := w.vmFollowed(ref)
	if err != nil {
		return err
	}
	if !followed {
		if values := w.peekVM(ctx, ref); values != nil && cond(values) {
			return nil
		}
		if err := ctx.Err(); err != nil {
			// The caller gave up during the read: registering would only end the same way.
			return err
		}
	}
	vmw := &vmWait{ref: ref, cond: cond, done: make(chan error, 1)}
	add, err := w.registerVM(ctx, vmw)
	if err != nil {
		return err
	}
	if add != nil {
		w.addVMToView(ctx, vmw, add)
	}
	select {
	case err := <-vmw.done:
		return err
	case <-ctx.Done():
		w.forgetVM(vmw)
		// The loop may have ended the wait meanwhile: its outcome is worth more to the
		// caller than the deadline.
		select {
		case err := <-vmw.done:
			return err
		default:
		}
		return ctx.Err()
	}
}

// vmFollowed tells whether the loop follows ref and has its values: a wait then decides
// on them without a call of its own.
func (w *taskWaiter) vmFollowed(ref types.ManagedObjectReference) (bool, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.closed {
		return false, errClientClosed
	}
	vw := w.vms[ref]
	return vw != nil && vw.values != nil, nil
}

// peekVM reads the values of vmWaitProperties of the VM ref once, outside the loop, as the
// loop would hold them; nil when the read failed.
func (w *taskWaiter) peekVM(ctx context.Context, ref types.ManagedObjectReference) vmValues {
	props, ok := w.peek(ctx, ref, vmWaitProperties)
	if !ok {
		return nil
	}
	values := vmValues{}
	for _, p := range props {
		values[p.Name] = p.Val
	}
	return values
}

// vmAddition is the call a VM wait makes to put its VM in the current view, with the
// pending removals.
type vmAddition struct {
	view     types.ManagedObjectReference
	epoch    uint64
	removals []types.ManagedObjectReference
	removed  chan struct{}
}

// registerVM records vmw and returns the addition its caller must make, nil if the VM is
// in the view already or if there is no view (the next build adds it). A VM whose
// removal is in flight is added only once that removal is over.
func (w *taskWaiter) registerVM(ctx context.Context, vmw *vmWait) (*vmAddition, error) {
	for {
		w.mu.Lock()
		if w.closed {
			w.mu.Unlock()
			return nil, errClientClosed
		}
		removing := w.removing[vmw.ref]
		if removing == nil {
			break
		}
		w.mu.Unlock()
		select {
		case <-removing:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	defer w.mu.Unlock()
	vw := w.vms[vmw.ref]
	// An idle VM is still in the view: its removal is off. (A VM without a watch is not
	// in the view whatever the removals say.)
	delete(w.removals, vmw.ref)
	var add *vmAddition
	if vw == nil {
		vw = &vmWatch{waits: make(map[*vmWait]struct{})}
		w.vms[vmw.ref] = vw
		if w.view != nil {
			add = &vmAddition{view: *w.view, epoch: w.epoch}
			add.removals, add.removed = w.takeRemovalsLocked()
		}
	}
	vw.waits[vmw] = struct{}{}
	vw.checkLocked()
	w.idleLocked(vmw.ref, vw)
	if !w.running {
		w.running = true
		go w.run()
	}
	return add, nil
}

// addVMToView puts the VM of vmw in view, taking the pending removals out of it in the
// same call. As for tasks, a failure is left to the loop, which builds its objects again
// with every VM waited for; only a VM vCenter does not know ends the wait at once.
func (w *taskWaiter) addVMToView(ctx context.Context, vmw *vmWait, add *vmAddition) {
	defer w.removalsDone(add.removals, add.removed)
	cctx, cancel := context.WithTimeout(ctx, w.callTimeout)
	defer cancel()
	res, err := methods.ModifyListView(cctx, w.vc, &types.ModifyListView{This: add.view, Add: []types.ManagedObjectReference{vmw.ref}, Remove: add.removals})
	if err != nil {
		// Also when the caller gave up during the call: whether the VM entered the view
		// and the removals were made is unknown, and other waits on the VM rely on this
		// addition. Building the view again settles it (rare).
		w.requestRebuild(add.epoch)
		return
	}
	w.unresolved(res.Returnval)
}

// forgetVM drops vmw after its caller gave up; a VM nobody waits for any more leaves the
// view with the next batch.
func (w *taskWaiter) forgetVM(vmw *vmWait) {
	w.mu.Lock()
	defer w.mu.Unlock()
	vw := w.vms[vmw.ref]
	if vw == nil {
		return
	}
	if _, ok := vw.waits[vmw]; !ok {
		return
	}
	delete(vw.waits, vmw)
	w.idleLocked(vmw.ref, vw)
}

// idleLocked schedules the removal of a VM nobody waits for any more.
func (w *taskWaiter) idleLocked(ref types.ManagedObjectReference, vw *vmWatch) {
	if len(vw.waits) == 0 {
		w.removals[ref] = struct{}{}
	}
}

// vmGone ends the waits on a VM this client destroyed: vCenter's report of its leaving
// the view may be lost (vcsim drops it when the view changed in the same batch).
func (w *taskWaiter) vmGone(ref types.ManagedObjectReference) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if vw := w.vms[ref]; vw != nil {
		vw.endAllLocked(soap.WrapVimFault(&types.ManagedObjectNotFound{Obj: ref}))
		// Its values are no more: a later wait must find out again.
		delete(w.vms, ref)
		w.removals[ref] = struct{}{}
	}
}

// dispatchVMLocked applies one update of a VM to its values and ends the waits whose
// condition holds.
func (w *taskWaiter) dispatchVMLocked(update types.ObjectUpdate) {
	ref := update.Obj
	vw := w.vms[ref]
	if vw == nil {
		if update.Kind != types.ObjectUpdateKindLeave {
			w.removals[ref] = struct{}{} // in the view, but nobody's
		}
		return
	}
	switch update.Kind {
	case types.ObjectUpdateKindLeave:
		// Destroyed, or taken out of the view by a removal that crossed a new wait's
		// addition: adding it again tells which.
		if len(vw.waits) > 0 {
			w.verify[ref] = struct{}{}
			return
		}
		delete(w.vms, ref)
		delete(w.removals, ref)
		return
	case types.ObjectUpdateKindEnter:
		// An entering object comes with all its (set) properties.
		vw.values = vmValues{}
	default:
		if vw.values == nil {
			vw.values = vmValues{}
		}
	}
	for _, c := range update.ChangeSet {
		switch c.Op {
		case types.PropertyChangeOpAssign:
			vw.values[c.Name] = c.Val
		case types.PropertyChangeOpRemove, types.PropertyChangeOpIndirectRemove:
			delete(vw.values, c.Name)
		}
	}
	vw.checkLocked()
	w.idleLocked(ref, vw)
}

// guestOperationsReady is the condition of WaitForGuestOperationsReady.
func guestOperationsReady(v vmValues) bool {
	ready, ok := v["guest.guestOperationsReady"].(bool)
	return ok && ready
}

// guestHasIPCondition is the condition of WaitForVirtualMachineIP: the guest reports want,
// or any usable IPv4 address if want is "".
func guestHasIPCondition(want string) func(vmValues) bool {
	return func(v vmValues) bool {
		ipAddress, _ := v["guest.ipAddress"].(string)
		return guestHasIP(want, ipAddress, guestNICs(v["guest.net"]))
	}
}

// poweredOff is the condition of WaitForVirtualMachineShutdown.
func poweredOff(v vmValues) bool {
	state, ok := v["runtime.powerState"]
	return ok && fmt.Sprint(state) == string(types.VirtualMachinePowerStatePoweredOff)
}
