package vspherehatchery

import (
	"context"
	"strconv"

	"github.com/hatchery-vsphere/hatchery-vsphere/internal/cds"
)

// Status components and values of the vSphere lines (protocol spec §4.2).
const (
	StatusComponentWorkers         = "Workers"
	StatusComponentVirtualMachines = "VirtualMachines"
	StatusErrorListing             = "Error listing"
)

// Status returns the provider's monitoring lines, from one listing (protocol spec §4.2):
//
//   - Workers: "<count>/<maxWorker>", or "<count>/unlimited" when maxWorker is 0, where count
//     is WorkersStarted (only this hatchery's workers, fix of Q4);
//   - VirtualMachines: the number of listed VMs that are not templates (§18.1).
//
// When vCenter cannot be listed both lines read "Error listing" with status AL: a count of 0
// would tell the operator that nothing runs. While the vCenter circuit breaker is open there
// is no listing, and a third AL line, vCenter, says "circuit open since <time>: <error>". The framework stamps type, service and hostname.
func (p *Provider) Status(ctx context.Context) []cds.MonitoringStatusLine {
	if line, open := p.breakerStatus(); open {
		// No listing: the heartbeat must not wait on a vCenter that keeps failing.
		return []cds.MonitoringStatusLine{
			{Status: cds.MonitoringStatusAlert, Component: StatusComponentWorkers, Value: StatusErrorListing},
			{Status: cds.MonitoringStatusAlert, Component: StatusComponentVirtualMachines, Value: StatusErrorListing},
			line,
		}
	}
	inv, err := p.inventory(ctx)
	if err != nil {
		p.log.Warn(ctx, "status: %v", err)
		lines := []cds.MonitoringStatusLine{
			{Status: cds.MonitoringStatusAlert, Component: StatusComponentWorkers, Value: StatusErrorListing},
			{Status: cds.MonitoringStatusAlert, Component: StatusComponentVirtualMachines, Value: StatusErrorListing},
		}
		// This very failure may have opened the circuit.
		if line, open := p.breakerStatus(); open {
			lines = append(lines, line)
		}
		return lines
	}
	limit := "unlimited"
	if n := p.cfg.CommonConfiguration.Provision.MaxWorker; n > 0 {
		limit = strconv.Itoa(n)
	}
	vms := 0
	for _, vm := range inv {
		if !vm.Template {
			vms++
		}
	}
	return []cds.MonitoringStatusLine{
		{Status: cds.MonitoringStatusOK, Component: StatusComponentWorkers, Value: strconv.Itoa(len(inv.WorkersStarted(p.hatcheryName()))) + "/" + limit},
		{Status: cds.MonitoringStatusOK, Component: StatusComponentVirtualMachines, Value: strconv.Itoa(vms)},
	}
}
