package vspherehatchery

import (
	"context"
	"errors"
	"slices"
	"testing"

	"github.com/vmware/govmomi/vim25/mo"

	"github.com/hatchery-vsphere/hatchery-vsphere/internal/cds"
	"github.com/hatchery-vsphere/hatchery-vsphere/mock_vsphere"
)

func TestStatus(t *testing.T) {
	// fleetMO (hatchery "h"): one running worker of h, one idle provisioned VM of h, one
	// non-CDS VM, a plain template and a CDS template.
	withStrangers := append(fleetMO(),
		moVM("other-worker", &Annotation{HatcheryName: "other", Created: created}, false, on, 2, 4096),
		moVM("db-server", nil, false, on, 2, 4096),
	)
	tests := []struct {
		name      string
		maxWorker int
		vms       []mo.VirtualMachine
		err       error
		want      []cds.MonitoringStatusLine
	}{
		{
			name:      "limited",
			maxWorker: 10,
			vms:       fleetMO(),
			want: []cds.MonitoringStatusLine{
				{Status: "OK", Component: "Workers", Value: "1/10"},
				{Status: "OK", Component: "VirtualMachines", Value: "3"},
			},
		},
		{
			name:      "unlimited",
			maxWorker: 0,
			vms:       fleetMO(),
			want: []cds.MonitoringStatusLine{
				{Status: "OK", Component: "Workers", Value: "1/unlimited"},
				{Status: "OK", Component: "VirtualMachines", Value: "3"},
			},
		},
		{
			// Other hatcheries' VMs and non-CDS VMs are listed but are not our workers
			// (fix of Q4).
			name:      "only this hatchery's workers count",
			maxWorker: 3,
			vms:       withStrangers,
			want: []cds.MonitoringStatusLine{
				{Status: "OK", Component: "Workers", Value: "1/3"},
				{Status: "OK", Component: "VirtualMachines", Value: "5"},
			},
		},
		{
			name:      "listing error",
			maxWorker: 10,
			err:       errors.New("connection refused"),
			want: []cds.MonitoringStatusLine{
				{Status: "AL", Component: "Workers", Value: "Error listing"},
				{Status: "AL", Component: "VirtualMachines", Value: "Error listing"},
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := testConfig()
			cfg.CommonConfiguration.Provision.MaxWorker = tt.maxWorker
			p, _ := newTestProvider(t, cfg, func(m *mock_vsphere.MockVSphereClient) {
				listing(m, 1, tt.vms, tt.err) // one listing for both lines
			})
			got := p.Status(context.Background())
			if !slices.Equal(got, tt.want) {
				t.Errorf("Status =\n%+v\nwant\n%+v", got, tt.want)
			}
		})
	}
}
