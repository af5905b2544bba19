package vsphere_test

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"testing"

	"github.com/vmware/govmomi/object"
	"github.com/vmware/govmomi/vim25/mo"
	"github.com/vmware/govmomi/vim25/soap"
	"github.com/vmware/govmomi/vim25/types"
	"go.opencensus.io/stats/view"
	"go.opencensus.io/tag"
	"go.uber.org/mock/gomock"

	"github.com/hatchery-vsphere/hatchery-vsphere/internal/vsphere"
	"github.com/hatchery-vsphere/hatchery-vsphere/mock_vsphere"
)

// viewCount sums the count (or histogram sample count) of the rows of a view whose tags
// include every pair of want.
func viewCount(t *testing.T, name string, want map[string]string) int64 {
	t.Helper()
	rows, err := view.RetrieveData(name)
	if err != nil {
		t.Fatalf("retrieve %s: %v", name, err)
	}
	var n int64
rows:
	for _, r := range rows {
		got := map[string]string{}
		for _, tg := range r.Tags {
			got[tg.Key.Name()] = tg.Value
		}
		for k, v := range want {
			if got[k] != v {
				continue rows
			}
		}
		switch d := r.Data.(type) {
		case *view.CountData:
			n += d.Value
		case *view.DistributionData:
			n += d.Count
		}
	}
	return n
}

func TestInstrumentCountsCallsByMethodAndResult(t *testing.T) {
	// Views are process-wide: a name of its own per run keeps -count=N runs apart.
	svcName := uniqueServiceName(t)
	if err := vsphere.RegisterViews(); err != nil {
		t.Fatal(err)
	}
	ctrl := gomock.NewController(t)
	m := mock_vsphere.NewMockVSphereClient(ctrl)
	vm := &object.VirtualMachine{}
	listed := []mo.VirtualMachine{{}, {}}
	authErr := fmt.Errorf("load vm: %w", soap.WrapVimFault(&types.NotAuthenticated{}))

	m.EXPECT().ListVirtualMachinesProperties(gomock.Any(), "name", "config.annotation").Return(listed, nil).Times(2)
	m.EXPECT().DestroyVirtualMachine(gomock.Any(), vm).Return(fmt.Errorf("destroy: %w", vsphere.ErrNotFound))
	m.EXPECT().StartVirtualMachine(gomock.Any(), vm).Return(context.DeadlineExceeded)
	m.EXPECT().LoadVirtualMachine(gomock.Any(), "worker-1").Return(nil, authErr)
	m.EXPECT().RenameVirtualMachine(gomock.Any(), vm, "worker-2").Return(errors.New("boom"))

	// A service name of its own isolates this test's series from any other recording.
	ctx, err := tag.New(context.Background(), tag.Upsert(tag.MustNewKey("service_name"), svcName))
	if err != nil {
		t.Fatal(err)
	}
	c := vsphere.Instrument(m)

	got, err := c.ListVirtualMachinesProperties(ctx, "name", "config.annotation")
	if err != nil || len(got) != 2 {
		t.Fatalf("list = %d VMs, %v; want the inner client's 2 VMs", len(got), err)
	}
	if _, err := c.ListVirtualMachinesProperties(ctx, "name", "config.annotation"); err != nil {
		t.Fatal(err)
	}
	if err := c.DestroyVirtualMachine(ctx, vm); !vsphere.IsNotFound(err) {
		t.Fatalf("destroy error = %v, want the inner not-found error unchanged", err)
	}
	if err := c.StartVirtualMachine(ctx, vm); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("start error = %v", err)
	}
	if _, err := c.LoadVirtualMachine(ctx, "worker-1"); !errors.Is(err, authErr) {
		t.Fatalf("load error = %v", err)
	}
	if err := c.RenameVirtualMachine(ctx, vm, "worker-2"); err == nil {
		t.Fatal("rename: want the inner error")
	}

	with := func(kv ...string) map[string]string {
		m := map[string]string{"service_name": svcName}
		for i := 0; i < len(kv); i += 2 {
			m[kv[i]] = kv[i+1]
		}
		return m
	}
	checks := []struct {
		view string
		tags map[string]string
		want int64
	}{
		{vsphere.ViewVCenterCalls, with("method", "ListVirtualMachinesProperties", "result", "ok"), 2},
		{vsphere.ViewVCenterCalls, with("method", "ListVirtualMachinesProperties", "result", "error"), 0},
		{vsphere.ViewVCenterCalls, with("method", "DestroyVirtualMachine", "result", "error"), 1},
		{vsphere.ViewVCenterCalls, with("result", "ok"), 2},
		{vsphere.ViewVCenterCalls, with("result", "error"), 4},
		{vsphere.ViewVCenterErrors, with("method", "DestroyVirtualMachine", "fault", vsphere.FaultNotFound), 1},
		{vsphere.ViewVCenterErrors, with("method", "StartVirtualMachine", "fault", vsphere.FaultTimeout), 1},
		{vsphere.ViewVCenterErrors, with("method", "LoadVirtualMachine", "fault", vsphere.FaultAuth), 1},
		{vsphere.ViewVCenterErrors, with("method", "RenameVirtualMachine", "fault", vsphere.FaultOther), 1},
		{vsphere.ViewVCenterErrors, with(), 4},
		{vsphere.ViewVCenterCallDuration, with("method", "ListVirtualMachinesProperties"), 2},
		{vsphere.ViewVCenterCallDuration, with("method", "StartVirtualMachine"), 1},
	}
	for _, ck := range checks {
		if got := viewCount(t, ck.view, ck.tags); got != ck.want {
			t.Errorf("%s%v = %d, want %d", ck.view, ck.tags, got, ck.want)
		}
	}
}

func TestFaultKind(t *testing.T) {
	tests := []struct {
		err  error
		want string
	}{
		{fmt.Errorf("wait: %w", context.DeadlineExceeded), vsphere.FaultTimeout},
		{fmt.Errorf("wait: %w", context.Canceled), vsphere.FaultCanceled},
		{fmt.Errorf("vm %q: %w", "x", vsphere.ErrNotFound), vsphere.FaultNotFound},
		{soap.WrapVimFault(&types.ManagedObjectNotFound{}), vsphere.FaultNotFound},
		{soap.WrapVimFault(&types.InvalidLogin{}), vsphere.FaultAuth},
		{soap.WrapVimFault(&types.NoPermission{}), vsphere.FaultAuth},
		{soap.WrapVimFault(&types.InvalidPowerState{}), vsphere.FaultOther},
	}
	for _, tt := range tests {
		if got := vsphere.FaultKind(tt.err); got != tt.want {
			t.Errorf("FaultKind(%v) = %q, want %q", tt.err, got, tt.want)
		}
	}
}

var serviceRuns atomic.Int64

func uniqueServiceName(t *testing.T) string {
	return fmt.Sprintf("%s-%d", t.Name(), serviceRuns.Add(1))
}
