package vspherehatchery

import (
	"context"

	"github.com/hatchery-vsphere/hatchery-vsphere/internal/cds"
	"github.com/hatchery-vsphere/hatchery-vsphere/internal/hatchery"
)

// StatusComponentVCenter is the status line shown while the vCenter circuit is open.
const StatusComponentVCenter = "vCenter"

var _ hatchery.Gate = (*Provider)(nil)

// Accepting implements hatchery.Gate: while the vCenter circuit breaker is open the
// framework books, takes and registers nothing, and the reason says since when and why.
func (p *Provider) Accepting(context.Context) (bool, string) {
	ok, reason := p.breaker.Accepting()
	if !ok {
		return false, "vCenter " + reason
	}
	return true, ""
}

// breakerStatus is the AL line of an open circuit, if it is open.
func (p *Provider) breakerStatus() (cds.MonitoringStatusLine, bool) {
	ok, reason := p.breaker.Accepting()
	if ok {
		return cds.MonitoringStatusLine{}, false
	}
	return cds.MonitoringStatusLine{Status: cds.MonitoringStatusAlert, Component: StatusComponentVCenter, Value: reason}, true
}

// probe runs the half-open probe of an open circuit: one narrow listing, the call every
// decision needs. It closes the circuit when the listing works, and opens it again
// otherwise.
func (p *Provider) probe(ctx context.Context) {
	if !p.breaker.BeginProbe() {
		return
	}
	pctx, cancel := context.WithTimeout(ctx, p.cfg.CallTimeoutDuration())
	_, err := p.inventory(pctx)
	cancel()
	p.breaker.EndProbe(err)
	if err != nil {
		p.log.Warn(ctx, "vCenter probe failed, circuit stays open: %v", err)
		return
	}
	p.log.Info(ctx, "vCenter probe succeeded: circuit closed, taking jobs again")
}
