package vsphere

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/vmware/govmomi/fault"
	"github.com/vmware/govmomi/object"
	"github.com/vmware/govmomi/property"
	"github.com/vmware/govmomi/view"
	"github.com/vmware/govmomi/vim25"
	"github.com/vmware/govmomi/vim25/methods"
	"github.com/vmware/govmomi/vim25/mo"
	"github.com/vmware/govmomi/vim25/soap"
	"github.com/vmware/govmomi/vim25/types"
)

// WatchedProperties are the VM properties the Inventory keeps: the eight every decision of
// the provider reads, plus config.changeVersion, which is how a reconfiguration shows up
// when vCenter (or vcsim) does not publish the changed properties themselves.
var WatchedProperties = []string{
	"name",
	"config.annotation",
	"config.template",
	"runtime.powerState",
	"summary.config.numCpu",
	"summary.config.memorySizeMB",
	"guest.net",
	"guest.ipAddress",
	"config.changeVersion",
}

// Defaults of InventoryOptions.
const (
	DefaultResyncInterval = 10 * time.Minute
	DefaultPollWait       = 50 * time.Second
	DefaultRetryDelay     = 5 * time.Second
	DefaultPollInterval   = 30 * time.Second

	// maxRetryDelay caps the growing wait between failed watch sessions.
	maxRetryDelay = 2 * time.Minute
	// resyncCallsPerMinute bounds the vCenter calls periodic resyncs may cost on average:
	// a resync pages through the whole inventory, so on a very large one the interval
	// stretches to keep an idle hatchery under its call budget.
	resyncCallsPerMinute = 5
)

// InventoryFeed is how the Inventory learns about changes made by others.
type InventoryFeed string

const (
	// FeedWatch long-polls the property collector (WaitForUpdatesEx over a container view):
	// changes arrive within a second and cost one call each, and an idle vCenter costs one
	// call per PollWait plus a full resync every ResyncInterval. The lighter feed on a real
	// vCenter.
	FeedWatch InventoryFeed = "watch"
	// FeedPoll re-reads the watched properties of every VM every PollInterval with one
	// narrow listing (a single call) over a container view kept for the session: changes
	// by others show up within PollInterval; the hatchery's own show up at once either
	// way. vcsim re-collects a watched view for every object update it sees (tasks
	// included), which with FeedWatch made a job take ~5 s instead of ~75 ms at 1,000 VMs.
	FeedPoll InventoryFeed = "poll"
)

// InventoryOptions tune the Inventory's feed.
type InventoryOptions struct {
	// Feed selects the change feed (default FeedPoll, which measured far better on vcsim;
	// FeedWatch is the lighter one on a real vCenter, see InventoryFeed).
	Feed InventoryFeed
	// PollInterval is the period of FeedPoll's listings (default 30 s).
	PollInterval time.Duration
	// ResyncInterval is how often the whole inventory is read again from scratch, which
	// repairs anything the change feed missed (default 10 min).
	ResyncInterval time.Duration
	// PollWait is how long one WaitForUpdatesEx long poll waits for changes before vCenter
	// answers "nothing" (default 50 s, whole seconds): one idle call per PollWait.
	PollWait time.Duration
	// RetryDelay is the first wait before a new watch session after a failed one; it
	// doubles up to two minutes while failures last (default 5 s).
	RetryDelay time.Duration
	// Now is the clock (default time.Now).
	Now func() time.Time
}

func (o InventoryOptions) withDefaults() InventoryOptions {
	if o.Feed == "" {
		o.Feed = FeedPoll
	}
	if o.PollInterval <= 0 {
		o.PollInterval = DefaultPollInterval
	}
	if o.ResyncInterval <= 0 {
		o.ResyncInterval = DefaultResyncInterval
	}
	if o.PollWait < time.Second {
		o.PollWait = DefaultPollWait
	}
	if o.RetryDelay <= 0 {
		o.RetryDelay = DefaultRetryDelay
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	return o
}

// InventoryStats describe what the Inventory did; RoundTrips is what it cost vCenter.
type InventoryStats struct {
	// RoundTrips counts every vCenter request the Inventory made: watch polls, initial
	// syncs, re-reads and the refreshes after the hatchery's own actions.
	RoundTrips uint64
	// Served counts listings and name lookups answered from the cache, PassedThrough
	// those sent to vCenter (cache not live, properties not watched, name not cached).
	Served        uint64
	PassedThrough uint64
	// Syncs counts completed full syncs (the first one included); Errors failed sessions.
	Syncs  uint64
	Errors uint64
	// Version increases with every change applied to the cache.
	Version uint64
	// VMs is the number of cached VMs; Live says whether listings are served from them.
	VMs  int
	Live bool
	// LastSync is when the last full sync completed; LastError is the last session error.
	LastSync  time.Time
	LastError error
}

// Inventory is a live cache of the datacenter's VMs, restricted to WatchedProperties, that
// decisions, metrics and status read instead of listing vCenter. Its feed is either a
// narrow listing every PollInterval (FeedPoll) or the property collector (FeedWatch: a
// container view over the VM folder, a long-polled WaitForUpdatesEx, a full resync every
// ResyncInterval and after any watch error, and a re-read of any VM whose
// config.changeVersion moved without its properties being published). Listings are served
// from it only while it is live (synced and its feed healthy); otherwise they go to
// vCenter, so that a broken feed never yields a stale answer.
//
// Consistency with the hatchery's own actions comes from Refresh and Forget, which the
// client returned by NewCachedClient calls after every mutation. Each cached VM remembers
// the stamp of its last direct read; a watch batch whose request was sent before that read
// may predate it, so the VM is read again rather than rolled back.
type Inventory struct {
	opts   InventoryOptions
	vc     *vim25.Client // counts its round trips
	pc     *property.Collector
	folder types.ManagedObjectReference
	callTO time.Duration
	// objVC and folderPath build the VM objects LoadVirtualMachine returns: their later
	// calls are the caller's, not the inventory's, so they do not go through vc.
	objVC      *vim25.Client
	folderPath string

	trips         atomic.Uint64
	served        atomic.Uint64
	passedThrough atomic.Uint64
	clock         atomic.Uint64 // stamps of reads and watch requests

	// writeMu serializes every writer of the cache, network reads included, so that a
	// refresh and a watch commit never interleave; readers only take mu.
	writeMu sync.Mutex

	mu         sync.RWMutex
	vms        map[types.ManagedObjectReference]*invVM
	tombstones map[types.ManagedObjectReference]struct{} // destroyed by the hatchery, Leave not seen yet
	live       bool
	version    uint64
	changed    chan struct{}
	ready      chan struct{}
	syncs      uint64
	errors     uint64
	syncCalls  uint64 // round trips of the last full sync
	lastSync   time.Time
	lastErr    error
	cancelRun  context.CancelFunc // cancels the current watch session
}

// invVM is one cached VM: the watched properties, flat.
type invVM struct {
	ref           types.ManagedObjectReference
	name          string
	annotation    string
	template      bool
	powerState    types.VirtualMachinePowerState
	numCPU        int32
	memoryMB      int32
	guestNet      []types.GuestNicInfo // replaced, never modified in place
	guestIP       string
	changeVersion string
	// readAt is the stamp taken before the direct read this entry comes from (0 when it
	// comes from the watch).
	readAt uint64
}

// NewInventory returns an Inventory over c's datacenter VM folder. It is empty and not live
// until Run completes a first sync.
func NewInventory(c *Client, opts InventoryOptions) *Inventory {
	inv := &Inventory{
		opts:       opts.withDefaults(),
		folder:     c.folder.Reference(),
		callTO:     c.opts.CallTimeout,
		objVC:      c.vc,
		folderPath: c.folder.InventoryPath,
		vms:        make(map[types.ManagedObjectReference]*invVM),
		tombstones: make(map[types.ManagedObjectReference]struct{}),
		changed:    make(chan struct{}),
		ready:      make(chan struct{}),
	}
	inv.vc = &vim25.Client{
		Client:         c.vc.Client,
		ServiceContent: c.vc.ServiceContent,
		RoundTripper:   countingTripper{next: c.vc.RoundTripper, n: &inv.trips},
	}
	inv.pc = property.DefaultCollector(inv.vc)
	return inv
}

type countingTripper struct {
	next soap.RoundTripper
	n    *atomic.Uint64
}

func (t countingTripper) RoundTrip(ctx context.Context, req, res soap.HasFault) error {
	t.n.Add(1)
	return t.next.RoundTrip(ctx, req, res)
}

// Ready is closed once the first full sync is complete.
func (inv *Inventory) Ready() <-chan struct{} {
	return inv.ready
}

// WaitReady waits for the first full sync or for ctx.
func (inv *Inventory) WaitReady(ctx context.Context) error {
	select {
	case <-inv.ready:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("wait for the VM inventory: %w", ctx.Err())
	}
}

// Changed returns a channel closed at the next change of the cache (or of its liveness);
// call it again for the change after.
func (inv *Inventory) Changed() <-chan struct{} {
	inv.mu.RLock()
	defer inv.mu.RUnlock()
	return inv.changed
}

// Stats returns the current counters.
func (inv *Inventory) Stats() InventoryStats {
	inv.mu.RLock()
	defer inv.mu.RUnlock()
	return InventoryStats{
		RoundTrips:    inv.trips.Load(),
		Served:        inv.served.Load(),
		PassedThrough: inv.passedThrough.Load(),
		Syncs:         inv.syncs,
		Errors:        inv.errors,
		Version:       inv.version,
		VMs:           len(inv.vms),
		Live:          inv.live,
		LastSync:      inv.lastSync,
		LastError:     inv.lastErr,
	}
}

// notifyLocked wakes the waiters of Changed; mu must be held for writing.
func (inv *Inventory) notifyLocked() {
	inv.version++
	close(inv.changed)
	inv.changed = make(chan struct{})
}

// Watched reports whether every prop is a watched property, so that a listing of props can
// be answered from the cache.
func Watched(props ...string) bool {
	if len(props) == 0 {
		return false // no props means the full listing
	}
	for _, p := range props {
		if !slices.Contains(WatchedProperties, p) {
			return false
		}
	}
	return true
}

// List answers a listing of props from the cache, with only props (and the name) set, the
// way Client.ListVirtualMachinesProperties would. ok is false when it cannot: the cache is
// not live or a property is not watched; the caller must then ask vCenter.
func (inv *Inventory) List(props ...string) (vms []mo.VirtualMachine, ok bool) {
	if !Watched(props...) {
		return nil, false
	}
	var want projection
	for _, p := range props {
		want.set(p)
	}
	inv.mu.RLock()
	if !inv.live {
		inv.mu.RUnlock()
		return nil, false
	}
	vms = make([]mo.VirtualMachine, 0, len(inv.vms))
	for _, e := range inv.vms {
		vms = append(vms, want.apply(e))
	}
	inv.mu.RUnlock()
	// A stable order makes answers comparable; map order is random.
	sort.Slice(vms, func(i, j int) bool { return vms[i].Self.Value < vms[j].Self.Value })
	inv.served.Add(1)
	return vms, true
}

// Lookup returns the VM named name from the cache. ok is false when the cache cannot say
// for sure: not live, no VM of that name (it may have been created by someone else since
// the last sync), or several.
func (inv *Inventory) Lookup(name string) (vm *object.VirtualMachine, ok bool) {
	inv.mu.RLock()
	defer inv.mu.RUnlock()
	if !inv.live {
		return nil, false
	}
	var found *invVM
	for _, e := range inv.vms {
		if e.name != name {
			continue
		}
		if found != nil {
			return nil, false
		}
		found = e
	}
	if found == nil {
		return nil, false
	}
	vm = object.NewVirtualMachine(inv.objVC, found.ref)
	vm.InventoryPath = inv.folderPath + "/" + name
	return vm, true
}

// projection is the set of watched properties a listing asked for.
type projection struct {
	annotation, template, changeVersion, powerState, numCPU, memoryMB, guestNet, guestIP bool
}

func (p *projection) set(prop string) {
	switch prop {
	case "config.annotation":
		p.annotation = true
	case "config.template":
		p.template = true
	case "config.changeVersion":
		p.changeVersion = true
	case "runtime.powerState":
		p.powerState = true
	case "summary.config.numCpu":
		p.numCPU = true
	case "summary.config.memorySizeMB":
		p.memoryMB = true
	case "guest.net":
		p.guestNet = true
	case "guest.ipAddress":
		p.guestIP = true
	}
}

// apply builds a fresh mo.VirtualMachine holding only the asked properties; nothing in it
// is shared with the cache except the guest.net slice, which the cache never modifies.
func (p projection) apply(e *invVM) mo.VirtualMachine {
	vm := mo.VirtualMachine{}
	vm.Self = e.ref
	vm.Name = e.name
	if p.annotation || p.template || p.changeVersion {
		vm.Config = &types.VirtualMachineConfigInfo{}
		if p.annotation {
			vm.Config.Annotation = e.annotation
		}
		if p.template {
			vm.Config.Template = e.template
		}
		if p.changeVersion {
			vm.Config.ChangeVersion = e.changeVersion
		}
	}
	if p.powerState {
		vm.Runtime.PowerState = e.powerState
	}
	if p.numCPU {
		vm.Summary.Config.NumCpu = e.numCPU
	}
	if p.memoryMB {
		vm.Summary.Config.MemorySizeMB = e.memoryMB
	}
	if p.guestNet || p.guestIP {
		vm.Guest = &types.GuestInfo{}
		if p.guestNet {
			vm.Guest.Net = e.guestNet
		}
		if p.guestIP {
			vm.Guest.IpAddress = e.guestIP
		}
	}
	return vm
}

// applyChange sets one watched property of e from a property collector change.
func applyChange(e *invVM, ch types.PropertyChange) {
	val := ch.Val
	if ch.Op == types.PropertyChangeOpRemove || ch.Op == types.PropertyChangeOpIndirectRemove {
		val = nil
	}
	switch ch.Name {
	case "name":
		e.name, _ = val.(string)
	case "config.annotation":
		e.annotation, _ = val.(string)
	case "config.template":
		e.template, _ = val.(bool)
	case "config.changeVersion":
		e.changeVersion, _ = val.(string)
	case "runtime.powerState":
		e.powerState, _ = val.(types.VirtualMachinePowerState)
	case "summary.config.numCpu":
		e.numCPU, _ = val.(int32)
	case "summary.config.memorySizeMB":
		e.memoryMB, _ = val.(int32)
	case "guest.net":
		e.guestNet = guestNICs(val)
	case "guest.ipAddress":
		e.guestIP, _ = val.(string)
	}
}

// entryFromContent builds a cache entry from a direct read.
func entryFromContent(oc types.ObjectContent, readAt uint64) *invVM {
	e := &invVM{ref: oc.Obj, readAt: readAt}
	for _, p := range oc.PropSet {
		applyChange(e, types.PropertyChange{Name: p.Name, Op: types.PropertyChangeOpAssign, Val: p.Val})
	}
	return e
}

// readVMs reads the watched properties of refs directly. VMs that no longer exist are
// returned in gone rather than as an error.
func (inv *Inventory) readVMs(ctx context.Context, refs []types.ManagedObjectReference) (found []*invVM, gone []types.ManagedObjectReference, err error) {
	if len(refs) == 0 {
		return nil, nil, nil
	}
	stamp := inv.clock.Add(1)
	var content []types.ObjectContent
	cctx, cancel := context.WithTimeout(ctx, inv.callTO)
	err = inv.pc.Retrieve(cctx, refs, WatchedProperties, &content)
	cancel()
	if err == nil {
		seen := make(map[types.ManagedObjectReference]bool, len(content))
		for _, oc := range content {
			seen[oc.Obj] = true
			found = append(found, entryFromContent(oc, stamp))
		}
		for _, ref := range refs {
			if !seen[ref] {
				gone = append(gone, ref)
			}
		}
		return found, gone, nil
	}
	if !fault.Is(err, &types.ManagedObjectNotFound{}) || len(refs) == 1 {
		if fault.Is(err, &types.ManagedObjectNotFound{}) {
			return nil, refs, nil
		}
		return nil, nil, fmt.Errorf("read %d virtual machines: %w", len(refs), err)
	}
	// One of several is gone: which one only a read of each tells.
	for _, ref := range refs {
		f, g, err := inv.readVMs(ctx, []types.ManagedObjectReference{ref})
		if err != nil {
			return nil, nil, err
		}
		found = append(found, f...)
		gone = append(gone, g...)
	}
	return found, gone, nil
}

// Refresh reads refs again from vCenter and stores them, or drops those that no longer
// exist, so that the next listing reflects an action the hatchery just made. A failed read
// invalidates the cache (listings go to vCenter until the next full sync) and is returned.
func (inv *Inventory) Refresh(ctx context.Context, refs ...types.ManagedObjectReference) error {
	if len(refs) == 0 {
		return nil
	}
	inv.writeMu.Lock()
	defer inv.writeMu.Unlock()
	found, gone, err := inv.readVMs(ctx, refs)
	if err != nil {
		err = fmt.Errorf("refresh VM inventory: %w", err)
		inv.invalidate(err)
		return err
	}
	inv.mu.Lock()
	defer inv.mu.Unlock()
	for _, e := range found {
		if _, dead := inv.tombstones[e.ref]; dead {
			continue
		}
		inv.vms[e.ref] = e
	}
	for _, ref := range gone {
		inv.forgetLocked(ref)
	}
	inv.notifyLocked()
	return nil
}

// Forget removes a VM the hatchery destroyed; the watch will not bring it back.
func (inv *Inventory) Forget(ref types.ManagedObjectReference) {
	inv.writeMu.Lock()
	defer inv.writeMu.Unlock()
	inv.mu.Lock()
	defer inv.mu.Unlock()
	inv.forgetLocked(ref)
	inv.notifyLocked()
}

func (inv *Inventory) forgetLocked(ref types.ManagedObjectReference) {
	delete(inv.vms, ref)
	// References of destroyed VMs are never reused by vCenter, so the tombstone cannot
	// hide a new VM; it is dropped when the watch confirms the deletion or at a full sync.
	inv.tombstones[ref] = struct{}{}
}

// invalidate stops serving listings from the cache and makes Run start a new session,
// which ends with a full sync.
func (inv *Inventory) invalidate(err error) {
	inv.mu.Lock()
	defer inv.mu.Unlock()
	inv.lastErr = err
	if inv.live {
		inv.live = false
		inv.notifyLocked()
	}
	if inv.cancelRun != nil {
		inv.cancelRun()
	}
}

// errResyncDue ends a healthy session when its periodic full resync is due.
var errResyncDue = errors.New("periodic resync due")

// Run keeps the cache in sync with vCenter until ctx ends; it returns nil then. A failed
// watch session is retried with a growing delay; listings go to vCenter meanwhile.
func (inv *Inventory) Run(ctx context.Context) error {
	delay := inv.opts.RetryDelay
	for {
		sctx, cancel := context.WithCancel(ctx)
		inv.mu.Lock()
		inv.cancelRun = cancel
		inv.mu.Unlock()
		var err error
		if inv.opts.Feed == FeedPoll {
			err = inv.pollSession(sctx)
		} else {
			err = inv.session(sctx)
		}
		cancel()
		if ctx.Err() != nil {
			return nil
		}
		if errors.Is(err, errResyncDue) {
			delay = inv.opts.RetryDelay
			continue
		}
		inv.mu.Lock()
		inv.errors++
		if err != nil {
			inv.lastErr = err
		}
		if inv.live {
			inv.live = false
			inv.notifyLocked()
		}
		inv.mu.Unlock()

		timer := time.NewTimer(delay)
		select {
		case <-ctx.Done():
			timer.Stop()
			return nil
		case <-timer.C:
		}
		delay = min(2*delay, maxRetryDelay)
	}
}

// batch is the changes of one WaitForUpdatesEx answer (all its pages) and the stamp taken
// before its request was sent.
type batch struct {
	sentAt  uint64
	updates []types.ObjectUpdate
}

// members returns the membership of the view carried by b, the last one if several, and
// whether b carries one.
func (b batch) members() (map[types.ManagedObjectReference]bool, bool) {
	var refs []types.ManagedObjectReference
	found := false
	for _, u := range b.updates {
		if u.Obj.Type != "ContainerView" {
			continue
		}
		for _, ch := range u.ChangeSet {
			if ch.Name != "view" {
				continue
			}
			found = true
			switch v := ch.Val.(type) {
			case types.ArrayOfManagedObjectReference:
				refs = v.ManagedObjectReference
			case []types.ManagedObjectReference:
				refs = v
			default:
				refs = nil
			}
		}
	}
	if !found {
		return nil, false
	}
	set := make(map[types.ManagedObjectReference]bool, len(refs))
	for _, ref := range refs {
		set[ref] = true
	}
	return set, true
}

func isVM(ref types.ManagedObjectReference) bool {
	return ref.Type == "VirtualMachine"
}

// session is one watch: a container view, a private property collector with one filter,
// a full sync, then long polls until ctx ends, an error, or the periodic resync.
func (inv *Inventory) session(ctx context.Context) (err error) {
	start := inv.opts.Now()
	tripsAtStart := inv.trips.Load()

	cctx, cancel := context.WithTimeout(ctx, inv.callTO)
	defer cancel()
	cv, err := view.NewManager(inv.vc).CreateContainerView(cctx, inv.folder, []string{"VirtualMachine"}, true)
	if err != nil {
		return fmt.Errorf("watch VM inventory: create container view: %w", err)
	}
	defer inv.destroy(ctx, "container view", cv.Destroy)
	// A private collector: the long poll must not be cancelled by, nor cancel, the waits
	// other calls run on the session's default collector.
	pc, err := inv.pc.Create(cctx)
	if err != nil {
		return fmt.Errorf("watch VM inventory: create property collector: %w", err)
	}
	// Destroying the collector also ends a long poll still pending on the server.
	defer inv.destroy(ctx, "property collector", pc.Destroy)
	_, err = pc.CreateFilter(cctx, types.CreateFilter{
		Spec: types.PropertyFilterSpec{
			// The view itself is watched too: its "view" property is the membership, which
			// tells deletions even when no Leave update comes (vcsim drops them when the
			// view changed, and re-sends the whole view as Enter updates instead).
			ObjectSet: []types.ObjectSpec{{
				Obj:  cv.Reference(),
				Skip: types.NewBool(false),
				SelectSet: []types.BaseSelectionSpec{&types.TraversalSpec{
					Type: "ContainerView",
					Path: "view",
				}},
			}},
			PropSet: []types.PropertySpec{
				{Type: "VirtualMachine", PathSet: WatchedProperties},
				{Type: "ContainerView", PathSet: []string{"view"}},
			},
		},
	})
	if err != nil {
		return fmt.Errorf("watch VM inventory: create filter: %w", err)
	}

	version := ""
	first, version, err := inv.poll(ctx, pc, version)
	if err != nil {
		return fmt.Errorf("watch VM inventory: initial sync: %w", err)
	}
	if err := inv.swap(ctx, first, tripsAtStart); err != nil {
		return fmt.Errorf("watch VM inventory: initial sync: %w", err)
	}

	for {
		if inv.opts.Now().Sub(start) >= inv.resyncInterval() {
			return errResyncDue
		}
		var b batch
		b, version, err = inv.poll(ctx, pc, version)
		if err != nil {
			return fmt.Errorf("watch VM inventory: %w", err)
		}
		if len(b.updates) == 0 {
			continue
		}
		if err := inv.commit(ctx, b); err != nil {
			return fmt.Errorf("watch VM inventory: %w", err)
		}
	}
}

// pollSession is FeedPoll: a container view kept for the session and one narrow listing
// of every VM through it per PollInterval, each installed as a full sync. It ends with ctx
// or at the first error.
func (inv *Inventory) pollSession(ctx context.Context) error {
	cctx, cancel := context.WithTimeout(ctx, inv.callTO)
	cv, err := view.NewManager(inv.vc).CreateContainerView(cctx, inv.folder, []string{"VirtualMachine"}, true)
	cancel()
	if err != nil {
		return fmt.Errorf("poll VM inventory: create container view: %w", err)
	}
	defer inv.destroy(ctx, "container view", cv.Destroy)
	spec := types.PropertyFilterSpec{
		ObjectSet: []types.ObjectSpec{{
			Obj:       cv.Reference(),
			Skip:      types.NewBool(true),
			SelectSet: []types.BaseSelectionSpec{&types.TraversalSpec{Type: "ContainerView", Path: "view"}},
		}},
		PropSet: []types.PropertySpec{{Type: "VirtualMachine", PathSet: WatchedProperties}},
	}
	for {
		tripsAtStart := inv.trips.Load()
		b := batch{sentAt: inv.clock.Add(1)}
		lctx, lcancel := context.WithTimeout(ctx, inv.callTO)
		// The non-paged RetrieveProperties answers in one call whatever the inventory
		// size, where RetrievePropertiesEx would take one call per page of objects.
		res, err := methods.RetrieveProperties(lctx, inv.vc, &types.RetrieveProperties{
			This:    inv.pc.Reference(),
			SpecSet: []types.PropertyFilterSpec{spec},
		})
		lcancel()
		if err != nil {
			return fmt.Errorf("poll VM inventory: list: %w", err)
		}
		b.updates = make([]types.ObjectUpdate, 0, len(res.Returnval))
		for _, oc := range res.Returnval {
			u := types.ObjectUpdate{Obj: oc.Obj, Kind: types.ObjectUpdateKindEnter}
			for _, p := range oc.PropSet {
				u.ChangeSet = append(u.ChangeSet, types.PropertyChange{Name: p.Name, Op: types.PropertyChangeOpAssign, Val: p.Val})
			}
			b.updates = append(b.updates, u)
		}
		if err := inv.swap(ctx, b, tripsAtStart); err != nil {
			return fmt.Errorf("poll VM inventory: %w", err)
		}
		timer := time.NewTimer(inv.opts.PollInterval)
		select {
		case <-ctx.Done():
			timer.Stop()
			return ctx.Err()
		case <-timer.C:
		}
	}
}

// resyncInterval is ResyncInterval, stretched when the last full sync cost so many calls
// that resyncing that often would break the idle call budget.
func (inv *Inventory) resyncInterval() time.Duration {
	inv.mu.RLock()
	calls := inv.syncCalls
	inv.mu.RUnlock()
	return max(inv.opts.ResyncInterval, time.Duration(calls)*time.Minute/resyncCallsPerMinute)
}

// destroy releases a server-side object of a session even when the session's ctx is done.
func (inv *Inventory) destroy(ctx context.Context, what string, f func(context.Context) error) {
	dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), inv.callTO)
	defer cancel()
	// The session is over either way; vCenter frees leftovers when the session ends.
	_ = f(dctx)
}

// poll makes one WaitForUpdatesEx call (plus the follow-up calls of a truncated answer)
// and returns the updates and the version to ask from next. The initial call (version "")
// answers at once with every VM; later calls wait up to PollWait for changes.
func (inv *Inventory) poll(ctx context.Context, pc *property.Collector, version string) (batch, string, error) {
	wait := int32(inv.opts.PollWait / time.Second)
	b := batch{sentAt: inv.clock.Add(1)}
	for {
		req := types.WaitForUpdatesEx{
			This:    pc.Reference(),
			Version: version,
			Options: &types.WaitOptions{MaxWaitSeconds: &wait},
		}
		// The long poll may legitimately last PollWait; the call timeout bounds the rest.
		pctx, cancel := context.WithTimeout(ctx, inv.opts.PollWait+inv.callTO)
		res, err := methods.WaitForUpdatesEx(pctx, inv.vc, &req)
		cancel()
		if err != nil {
			return batch{}, version, fmt.Errorf("wait for updates: %w", err)
		}
		set := res.Returnval
		if set == nil { // MaxWaitSeconds passed without a change
			return b, version, nil
		}
		version = set.Version
		for _, fs := range set.FilterSet {
			b.updates = append(b.updates, fs.ObjectSet...)
		}
		if set.Truncated == nil || !*set.Truncated {
			return b, version, nil
		}
	}
}

// swap installs the result of a full sync as the new cache. VMs the hatchery refreshed
// since the sync's request was sent are read again (the sync may predate the refresh), and
// VMs it destroyed stay out.
func (inv *Inventory) swap(ctx context.Context, b batch, tripsAtStart uint64) error {
	fresh := make(map[types.ManagedObjectReference]*invVM, len(b.updates))
	for _, u := range b.updates {
		if !isVM(u.Obj) {
			continue
		}
		if u.Kind == types.ObjectUpdateKindLeave {
			delete(fresh, u.Obj)
			continue
		}
		e := fresh[u.Obj]
		if e == nil {
			e = &invVM{ref: u.Obj}
			fresh[u.Obj] = e
		}
		for _, ch := range u.ChangeSet {
			applyChange(e, ch)
		}
	}
	members, hasMembers := b.members()
	if hasMembers {
		for ref := range fresh {
			if !members[ref] {
				delete(fresh, ref)
			}
		}
	}

	inv.writeMu.Lock()
	defer inv.writeMu.Unlock()
	inv.mu.RLock()
	var reread []types.ManagedObjectReference
	for ref, e := range inv.vms {
		if e.readAt > b.sentAt {
			reread = append(reread, ref)
		}
	}
	for ref := range members {
		if _, ok := fresh[ref]; !ok && isVM(ref) {
			reread = append(reread, ref)
		}
	}
	tombstones := make([]types.ManagedObjectReference, 0, len(inv.tombstones))
	for ref := range inv.tombstones {
		tombstones = append(tombstones, ref)
	}
	inv.mu.RUnlock()

	found, gone, err := inv.readVMs(ctx, reread)
	if err != nil {
		return err
	}
	for _, e := range found {
		fresh[e.ref] = e
	}
	for _, ref := range gone {
		delete(fresh, ref)
	}
	for _, ref := range tombstones {
		delete(fresh, ref)
	}

	inv.mu.Lock()
	defer inv.mu.Unlock()
	inv.vms = fresh
	// The new view no longer holds the destroyed VMs: no Leave will come for them.
	clear(inv.tombstones)
	inv.live = true
	inv.syncs++
	inv.syncCalls = inv.trips.Load() - tripsAtStart
	inv.lastSync = inv.opts.Now()
	inv.notifyLocked()
	select {
	case <-inv.ready:
	default:
		close(inv.ready)
	}
	return nil
}

// configProps are the watched properties a reconfiguration changes.
var configProps = []string{"config.annotation", "config.template", "summary.config.numCpu", "summary.config.memorySizeMB"}

// commit applies one watch batch. A VM is read again instead of updated from the batch
// when the hatchery read it directly after the batch's request was sent (the batch may be
// older than that read), when its config.changeVersion moved without the changed
// properties being published (vcsim does that), or when it is unknown.
func (inv *Inventory) commit(ctx context.Context, b batch) error {
	inv.writeMu.Lock()
	defer inv.writeMu.Unlock()

	members, hasMembers := b.members()
	inv.mu.RLock()
	rereadSet := make(map[types.ManagedObjectReference]bool)
	entering := make(map[types.ManagedObjectReference]bool)
	for _, u := range b.updates {
		if !isVM(u.Obj) || u.Kind == types.ObjectUpdateKindLeave {
			continue
		}
		if u.Kind == types.ObjectUpdateKindEnter {
			entering[u.Obj] = true
		}
		if _, dead := inv.tombstones[u.Obj]; dead {
			continue
		}
		e := inv.vms[u.Obj]
		switch {
		case e == nil && u.Kind != types.ObjectUpdateKindEnter:
			rereadSet[u.Obj] = true
		case e != nil && e.readAt > b.sentAt:
			rereadSet[u.Obj] = true
		case u.Kind == types.ObjectUpdateKindModify && reconfiguredUnpublished(e, u.ChangeSet):
			rereadSet[u.Obj] = true
		}
	}
	// A member neither cached nor entering: its Enter went missing, read it.
	for ref := range members {
		if _, dead := inv.tombstones[ref]; !dead && isVM(ref) && inv.vms[ref] == nil && !entering[ref] {
			rereadSet[ref] = true
		}
	}
	inv.mu.RUnlock()

	reread := make([]types.ManagedObjectReference, 0, len(rereadSet))
	for ref := range rereadSet {
		reread = append(reread, ref)
	}
	found, gone, err := inv.readVMs(ctx, reread)
	if err != nil {
		return err
	}

	inv.mu.Lock()
	defer inv.mu.Unlock()
	for _, u := range b.updates {
		switch {
		case !isVM(u.Obj):
			continue
		case u.Kind == types.ObjectUpdateKindLeave:
			delete(inv.vms, u.Obj)
			delete(inv.tombstones, u.Obj)
			continue
		case rereadSet[u.Obj]:
			continue
		}
		if _, dead := inv.tombstones[u.Obj]; dead {
			continue
		}
		e := inv.vms[u.Obj]
		if u.Kind == types.ObjectUpdateKindEnter || e == nil {
			// An Enter carries every watched property: start from scratch.
			e = &invVM{ref: u.Obj}
			inv.vms[u.Obj] = e
		}
		for _, ch := range u.ChangeSet {
			applyChange(e, ch)
		}
		// The watch is now as recent as any direct read of this VM.
		e.readAt = 0
	}
	for _, e := range found {
		if _, dead := inv.tombstones[e.ref]; dead {
			continue
		}
		inv.vms[e.ref] = e
	}
	for _, ref := range gone {
		delete(inv.vms, ref)
	}
	if hasMembers {
		for ref, e := range inv.vms {
			// A VM the hatchery read after this batch was asked for may be newer than the
			// membership (a clone that just finished): the next membership decides.
			if !members[ref] && e.readAt <= b.sentAt {
				delete(inv.vms, ref)
			}
		}
		for ref := range inv.tombstones {
			if !members[ref] {
				delete(inv.tombstones, ref) // deletion confirmed
			}
		}
	}
	inv.notifyLocked()
	return nil
}

// reconfiguredUnpublished says whether changes move config.changeVersion without carrying
// any reconfigurable property, so that the VM must be read to learn what changed.
func reconfiguredUnpublished(e *invVM, changes []types.PropertyChange) bool {
	moved := false
	for _, ch := range changes {
		if slices.Contains(configProps, ch.Name) {
			return false
		}
		if ch.Name == "config.changeVersion" {
			v, _ := ch.Val.(string)
			moved = e == nil || v != e.changeVersion
		}
	}
	return moved
}

// NewCachedClient returns next with its narrow listings answered from inv, and every
// action that changes a VM followed by a refresh of that VM in inv, so that a decision
// made right after the hatchery's own action sees it. Listings inv cannot answer (full
// properties, unwatched properties, cache not live) go to next. Run inv alongside.
func NewCachedClient(next VSphereClient, inv *Inventory) VSphereClient {
	return &cachedClient{VSphereClient: next, inv: inv}
}

type cachedClient struct {
	VSphereClient
	inv *Inventory
}

func (c *cachedClient) ListVirtualMachinesProperties(ctx context.Context, props ...string) ([]mo.VirtualMachine, error) {
	if vms, ok := c.inv.List(props...); ok {
		return vms, nil
	}
	c.inv.passedThrough.Add(1)
	return c.VSphereClient.ListVirtualMachinesProperties(ctx, props...)
}

// LoadVirtualMachine answers from the cache when it knows exactly one VM of that name: the
// direct lookup lists every VM name of the datacenter.
func (c *cachedClient) LoadVirtualMachine(ctx context.Context, name string) (*object.VirtualMachine, error) {
	if vm, ok := c.inv.Lookup(name); ok {
		c.inv.served.Add(1)
		return vm, nil
	}
	c.inv.passedThrough.Add(1)
	return c.VSphereClient.LoadVirtualMachine(ctx, name)
}

// after refreshes vm once an action on it returned. The action's own error is what the
// caller gets; a failed refresh has already invalidated the cache, which is its handling.
func (c *cachedClient) after(ctx context.Context, vm *object.VirtualMachine) {
	if vm == nil {
		return
	}
	_ = c.inv.Refresh(context.WithoutCancel(ctx), vm.Reference())
}

func (c *cachedClient) StartVirtualMachine(ctx context.Context, vm *object.VirtualMachine) error {
	err := c.VSphereClient.StartVirtualMachine(ctx, vm)
	c.after(ctx, vm)
	return err
}

func (c *cachedClient) ShutdownVirtualMachine(ctx context.Context, vm *object.VirtualMachine) error {
	err := c.VSphereClient.ShutdownVirtualMachine(ctx, vm)
	c.after(ctx, vm)
	return err
}

func (c *cachedClient) DestroyVirtualMachine(ctx context.Context, vm *object.VirtualMachine) error {
	err := c.VSphereClient.DestroyVirtualMachine(ctx, vm)
	if vm == nil {
		return err
	}
	if err == nil || IsNotFound(err) {
		c.inv.Forget(vm.Reference())
		return err
	}
	c.after(ctx, vm)
	return err
}

func (c *cachedClient) CloneVirtualMachine(ctx context.Context, vm *object.VirtualMachine, folder *object.Folder, name string, config *types.VirtualMachineCloneSpec) (*types.ManagedObjectReference, error) {
	ref, err := c.VSphereClient.CloneVirtualMachine(ctx, vm, folder, name, config)
	if ref != nil {
		_ = c.inv.Refresh(context.WithoutCancel(ctx), *ref)
	}
	return ref, err
}

func (c *cachedClient) RenameVirtualMachine(ctx context.Context, vm *object.VirtualMachine, newName string) error {
	err := c.VSphereClient.RenameVirtualMachine(ctx, vm, newName)
	c.after(ctx, vm)
	return err
}

func (c *cachedClient) MarkVirtualMachineAsTemplate(ctx context.Context, vm *object.VirtualMachine) error {
	err := c.VSphereClient.MarkVirtualMachineAsTemplate(ctx, vm)
	c.after(ctx, vm)
	return err
}

func (c *cachedClient) ReconfigureVirtualMachine(ctx context.Context, vm *object.VirtualMachine, spec types.VirtualMachineConfigSpec) error {
	err := c.VSphereClient.ReconfigureVirtualMachine(ctx, vm, spec)
	c.after(ctx, vm)
	return err
}

// The waits below change nothing, but what they observed (an IP, a power-off) is what the
// next decision looks for: reading it now spares waiting for the watch.

func (c *cachedClient) WaitForVirtualMachineShutdown(ctx context.Context, vm *object.VirtualMachine) error {
	err := c.VSphereClient.WaitForVirtualMachineShutdown(ctx, vm)
	if err == nil {
		c.after(ctx, vm)
	}
	return err
}

func (c *cachedClient) WaitForVirtualMachineIP(ctx context.Context, vm *object.VirtualMachine, IPAddress *string, vmName string) error {
	err := c.VSphereClient.WaitForVirtualMachineIP(ctx, vm, IPAddress, vmName)
	if err == nil {
		c.after(ctx, vm)
	}
	return err
}
