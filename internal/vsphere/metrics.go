package vsphere

import (
	"context"
	"errors"
	"net"
	"time"

	"github.com/vmware/govmomi/fault"
	"github.com/vmware/govmomi/guest"
	"github.com/vmware/govmomi/object"
	"github.com/vmware/govmomi/vim25/mo"
	"github.com/vmware/govmomi/vim25/types"
	"go.opencensus.io/stats"
	"go.opencensus.io/stats/view"
	"go.opencensus.io/tag"

	"github.com/hatchery-vsphere/hatchery-vsphere/internal/lifecycle"
)

// vCenter call metrics. Prometheus names (view name with "/" turned into "_"):
//
//	cds_hatchery_vsphere_vcenter_calls_total             counter   method, result (ok|error)
//	cds_hatchery_vsphere_vcenter_errors_total            counter   method, fault
//	cds_hatchery_vsphere_vcenter_call_duration_seconds   histogram method
//
// plus service_name and service_type, read from the context's tags. method is the
// VSphereClient method name, so the label set is fixed; fault is one of the Fault* values.
const (
	ViewVCenterCalls        = "cds/hatchery/vsphere/vcenter_calls_total"
	ViewVCenterErrors       = "cds/hatchery/vsphere/vcenter_errors_total"
	ViewVCenterCallDuration = "cds/hatchery/vsphere/vcenter_call_duration_seconds"
)

// Fault kinds of the fault label of vcenter_errors_total.
const (
	FaultTimeout  = "timeout"   // a request or task deadline passed
	FaultCanceled = "canceled"  // the caller gave up (shutdown)
	FaultNotFound = "not-found" // the object is gone (ErrNotFound, ManagedObjectNotFound)
	FaultAuth     = "auth"      // session, login or permission refused
	FaultOther    = "other"
)

var (
	tagServiceName = tag.MustNewKey("service_name")
	tagServiceType = tag.MustNewKey("service_type")
	tagMethod      = tag.MustNewKey("method")
	tagResult      = tag.MustNewKey("result")
	tagFault       = tag.MustNewKey("fault")
)

var (
	mCallDuration = stats.Float64("cds/hatchery/vsphere/vcenter_call_duration", "duration of a vCenter call", "s")
	mCallErrors   = stats.Int64("cds/hatchery/vsphere/vcenter_errors", "failed vCenter calls", stats.UnitDimensionless)
)

// callBuckets span a property read (milliseconds) to a full clone or an IP wait (minutes).
var callBuckets = []float64{0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600}

var metricViews = []*view.View{
	{
		Name:        ViewVCenterCalls,
		Description: "vCenter calls by method and result",
		Measure:     mCallDuration,
		Aggregation: view.Count(),
		TagKeys:     []tag.Key{tagServiceName, tagServiceType, tagMethod, tagResult},
	},
	{
		Name:        ViewVCenterErrors,
		Description: "failed vCenter calls by method and fault kind",
		Measure:     mCallErrors,
		Aggregation: view.Count(),
		TagKeys:     []tag.Key{tagServiceName, tagServiceType, tagMethod, tagFault},
	},
	{
		Name:        ViewVCenterCallDuration,
		Description: mCallDuration.Description(),
		Measure:     mCallDuration,
		Aggregation: view.Distribution(callBuckets...),
		TagKeys:     []tag.Key{tagServiceName, tagServiceType, tagMethod},
	},
}

// MetricViews returns the vCenter call views (for /mon/metrics/all).
func MetricViews() []*view.View { return append([]*view.View(nil), metricViews...) }

// RegisterViews registers the vCenter call views with OpenCensus. Later calls return the
// first result.
func RegisterViews() error { return viewSet.Register() }

var viewSet = lifecycle.NewViewSet("vCenter call views", metricViews...)

// FaultKind classifies err for the fault label: FaultTimeout, FaultCanceled,
// FaultNotFound, FaultAuth or FaultOther.
func FaultKind(err error) string {
	var netErr net.Error
	switch {
	case errors.Is(err, context.DeadlineExceeded), fault.Is(err, &types.Timedout{}),
		errors.As(err, &netErr) && netErr.Timeout():
		return FaultTimeout
	case errors.Is(err, context.Canceled):
		return FaultCanceled
	case errors.Is(err, ErrNotFound), fault.Is(err, &types.ManagedObjectNotFound{}):
		return FaultNotFound
	case fault.Is(err, &types.NotAuthenticated{}), fault.Is(err, &types.InvalidLogin{}),
		fault.Is(err, &types.NoPermission{}):
		return FaultAuth
	default:
		return FaultOther
	}
}

// Instrument returns c recording, for every call, its count by method and result, its
// duration by method and, on error, its fault kind. The results and errors of c are
// returned unchanged. Register the views with RegisterViews for them to be exported.
func Instrument(c VSphereClient) VSphereClient {
	return &instrumented{next: c, now: time.Now}
}

// instrumented is the metrics decorator of a VSphereClient.
type instrumented struct {
	next VSphereClient
	now  func() time.Time
}

// observe records one call of method that started at start and ended with err.
func (i *instrumented) observe(ctx context.Context, method string, start time.Time, err error) {
	seconds := i.now().Sub(start).Seconds()
	result := "ok"
	if err != nil {
		result = "error"
	}
	// Metrics never fail a call: an error could only come from an invalid tag value.
	_ = stats.RecordWithTags(ctx, []tag.Mutator{tag.Upsert(tagMethod, method), tag.Upsert(tagResult, result)},
		mCallDuration.M(seconds))
	if err != nil {
		_ = stats.RecordWithTags(ctx, []tag.Mutator{tag.Upsert(tagMethod, method), tag.Upsert(tagFault, FaultKind(err))},
			mCallErrors.M(1))
	}
}

func (i *instrumented) ListVirtualMachines(ctx context.Context) ([]mo.VirtualMachine, error) {
	start := i.now()
	vms, err := i.next.ListVirtualMachines(ctx)
	i.observe(ctx, "ListVirtualMachines", start, err)
	return vms, err
}

func (i *instrumented) LoadVirtualMachine(ctx context.Context, name string) (*object.VirtualMachine, error) {
	start := i.now()
	vm, err := i.next.LoadVirtualMachine(ctx, name)
	i.observe(ctx, "LoadVirtualMachine", start, err)
	return vm, err
}

func (i *instrumented) LoadVirtualMachineDevices(ctx context.Context, vm *object.VirtualMachine) (object.VirtualDeviceList, error) {
	start := i.now()
	devices, err := i.next.LoadVirtualMachineDevices(ctx, vm)
	i.observe(ctx, "LoadVirtualMachineDevices", start, err)
	return devices, err
}

func (i *instrumented) StartVirtualMachine(ctx context.Context, vm *object.VirtualMachine) error {
	start := i.now()
	err := i.next.StartVirtualMachine(ctx, vm)
	i.observe(ctx, "StartVirtualMachine", start, err)
	return err
}

func (i *instrumented) ShutdownVirtualMachine(ctx context.Context, vm *object.VirtualMachine) error {
	start := i.now()
	err := i.next.ShutdownVirtualMachine(ctx, vm)
	i.observe(ctx, "ShutdownVirtualMachine", start, err)
	return err
}

func (i *instrumented) DestroyVirtualMachine(ctx context.Context, vm *object.VirtualMachine) error {
	start := i.now()
	err := i.next.DestroyVirtualMachine(ctx, vm)
	i.observe(ctx, "DestroyVirtualMachine", start, err)
	return err
}

func (i *instrumented) CloneVirtualMachine(ctx context.Context, vm *object.VirtualMachine, folder *object.Folder, name string, config *types.VirtualMachineCloneSpec) (*types.ManagedObjectReference, error) {
	start := i.now()
	ref, err := i.next.CloneVirtualMachine(ctx, vm, folder, name, config)
	i.observe(ctx, "CloneVirtualMachine", start, err)
	return ref, err
}

func (i *instrumented) GetVirtualMachinePowerState(ctx context.Context, vm *object.VirtualMachine) (types.VirtualMachinePowerState, error) {
	start := i.now()
	state, err := i.next.GetVirtualMachinePowerState(ctx, vm)
	i.observe(ctx, "GetVirtualMachinePowerState", start, err)
	return state, err
}

func (i *instrumented) NewVirtualMachine(ctx context.Context, cloneSpec *types.VirtualMachineCloneSpec, ref *types.ManagedObjectReference, vmName string) (*object.VirtualMachine, error) {
	start := i.now()
	vm, err := i.next.NewVirtualMachine(ctx, cloneSpec, ref, vmName)
	i.observe(ctx, "NewVirtualMachine", start, err)
	return vm, err
}

func (i *instrumented) RenameVirtualMachine(ctx context.Context, vm *object.VirtualMachine, newName string) error {
	start := i.now()
	err := i.next.RenameVirtualMachine(ctx, vm, newName)
	i.observe(ctx, "RenameVirtualMachine", start, err)
	return err
}

func (i *instrumented) MarkVirtualMachineAsTemplate(ctx context.Context, vm *object.VirtualMachine) error {
	start := i.now()
	err := i.next.MarkVirtualMachineAsTemplate(ctx, vm)
	i.observe(ctx, "MarkVirtualMachineAsTemplate", start, err)
	return err
}

func (i *instrumented) WaitForVirtualMachineShutdown(ctx context.Context, vm *object.VirtualMachine) error {
	start := i.now()
	err := i.next.WaitForVirtualMachineShutdown(ctx, vm)
	i.observe(ctx, "WaitForVirtualMachineShutdown", start, err)
	return err
}

func (i *instrumented) WaitForVirtualMachineIP(ctx context.Context, vm *object.VirtualMachine, IPAddress *string, vmName string) error {
	start := i.now()
	err := i.next.WaitForVirtualMachineIP(ctx, vm, IPAddress, vmName)
	i.observe(ctx, "WaitForVirtualMachineIP", start, err)
	return err
}

func (i *instrumented) LoadFolder(ctx context.Context) (*object.Folder, error) {
	start := i.now()
	folder, err := i.next.LoadFolder(ctx)
	i.observe(ctx, "LoadFolder", start, err)
	return folder, err
}

func (i *instrumented) SetupEthernetCard(ctx context.Context, card *types.VirtualEthernetCard, ethernetCardName string, network object.NetworkReference) error {
	start := i.now()
	err := i.next.SetupEthernetCard(ctx, card, ethernetCardName, network)
	i.observe(ctx, "SetupEthernetCard", start, err)
	return err
}

func (i *instrumented) LoadNetwork(ctx context.Context, name string) (object.NetworkReference, error) {
	start := i.now()
	network, err := i.next.LoadNetwork(ctx, name)
	i.observe(ctx, "LoadNetwork", start, err)
	return network, err
}

func (i *instrumented) LoadResourcePool(ctx context.Context) (*object.ResourcePool, error) {
	start := i.now()
	pool, err := i.next.LoadResourcePool(ctx)
	i.observe(ctx, "LoadResourcePool", start, err)
	return pool, err
}

func (i *instrumented) LoadDatastore(ctx context.Context, name string) (*object.Datastore, error) {
	start := i.now()
	ds, err := i.next.LoadDatastore(ctx, name)
	i.observe(ctx, "LoadDatastore", start, err)
	return ds, err
}

func (i *instrumented) ProcessManager(ctx context.Context, vm *object.VirtualMachine) (*guest.ProcessManager, error) {
	start := i.now()
	pm, err := i.next.ProcessManager(ctx, vm)
	i.observe(ctx, "ProcessManager", start, err)
	return pm, err
}

func (i *instrumented) StartProgramInGuest(ctx context.Context, procman *guest.ProcessManager, req *types.StartProgramInGuest) (*types.StartProgramInGuestResponse, error) {
	start := i.now()
	resp, err := i.next.StartProgramInGuest(ctx, procman, req)
	i.observe(ctx, "StartProgramInGuest", start, err)
	return resp, err
}

func (i *instrumented) LoadVirtualMachineEvents(ctx context.Context, vm *object.VirtualMachine, eventTypes ...string) ([]types.BaseEvent, error) {
	start := i.now()
	events, err := i.next.LoadVirtualMachineEvents(ctx, vm, eventTypes...)
	i.observe(ctx, "LoadVirtualMachineEvents", start, err)
	return events, err
}

func (i *instrumented) ListVirtualMachinesProperties(ctx context.Context, props ...string) ([]mo.VirtualMachine, error) {
	start := i.now()
	vms, err := i.next.ListVirtualMachinesProperties(ctx, props...)
	i.observe(ctx, "ListVirtualMachinesProperties", start, err)
	return vms, err
}

func (i *instrumented) ReconfigureVirtualMachine(ctx context.Context, vm *object.VirtualMachine, spec types.VirtualMachineConfigSpec) error {
	start := i.now()
	err := i.next.ReconfigureVirtualMachine(ctx, vm, spec)
	i.observe(ctx, "ReconfigureVirtualMachine", start, err)
	return err
}

func (i *instrumented) ResourcePoolRuntime(ctx context.Context) (types.ResourcePoolRuntimeInfo, error) {
	start := i.now()
	info, err := i.next.ResourcePoolRuntime(ctx)
	i.observe(ctx, "ResourcePoolRuntime", start, err)
	return info, err
}

func (i *instrumented) WaitForGuestOperationsReady(ctx context.Context, vm *object.VirtualMachine) error {
	start := i.now()
	err := i.next.WaitForGuestOperationsReady(ctx, vm)
	i.observe(ctx, "WaitForGuestOperationsReady", start, err)
	return err
}

func (i *instrumented) Logout(ctx context.Context) error {
	start := i.now()
	err := i.next.Logout(ctx)
	i.observe(ctx, "Logout", start, err)
	return err
}
