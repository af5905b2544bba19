package hatchery

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/hatchery-vsphere/hatchery-vsphere/internal/cds"
)

// heartbeatLoop sends a heartbeat now and at every tick (§4.1). An error id 11 (forbidden)
// is fatal at once; other errors are fatal when more than api.maxHeartbeatFailures happen in
// a row. A fatal error is returned; the caller decides what it stops (v1: the service, v2:
// only this loop, quirk Q22).
func (h *Hatchery) heartbeatLoop(ctx context.Context, which string, beat func(context.Context, cds.MonitoringStatus) error, ticks <-chan time.Time) error {
	failures := 0
	for {
		err := beat(ctx, h.Status(ctx))
		switch {
		case err == nil:
			failures = 0
		case ctx.Err() != nil:
			return nil
		case cds.ErrorIs(err, cds.ErrIDForbidden):
			return fmt.Errorf("%s heartbeat: forbidden: %w", which, err)
		default:
			failures++
			if failures > h.cfg.API.MaxHeartbeatFailures {
				return fmt.Errorf("%s heartbeat: %d consecutive failures: %w", which, failures, err)
			}
			h.log.Warn(ctx, "%s heartbeat failed (%d/%d): %v", which, failures, h.cfg.API.MaxHeartbeatFailures, err)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-ticks:
		}
	}
}

// Status builds the MonitoringStatus of §4.2: Version, Uptime, Time, the goroutine lines
// (the provider's, then the framework's), Workers, then the provider's other lines. The
// Workers line comes from the provider when it gives one.
func (h *Hatchery) Status(ctx context.Context) cds.MonitoringStatus {
	now := h.now()
	h.mu.Lock()
	startedAt := h.startedAt
	h.mu.Unlock()
	if startedAt.IsZero() {
		startedAt = now
	}
	sl := StatusLines{Service: h.cfg.Name, Hostname: h.hostname}
	lines := sl.Header(h.version, startedAt, now)

	var providerRoutines, providerOthers []cds.MonitoringStatusLine
	hasWorkers := false
	for _, l := range sl.Stamp(h.provider.Status(ctx)) {
		if strings.HasPrefix(l.Component, "goroutine/") {
			providerRoutines = append(providerRoutines, l)
			continue
		}
		if l.Component == "Workers" {
			hasWorkers = true
		}
		providerOthers = append(providerOthers, l)
	}
	lines = append(lines, providerRoutines...)
	lines = append(lines, sl.Goroutines(h.routines)...)
	if !hasWorkers {
		lines = append(lines, h.workersLine(ctx, sl))
	}
	lines = append(lines, providerOthers...)
	if h.extraStatus != nil {
		lines = append(lines, sl.Stamp(h.extraStatus(ctx))...)
	}
	return cds.MonitoringStatus{Now: now, Lines: lines}
}

// workersLine is "<started>/<maxWorker>", or "<started>/unlimited" when maxWorker is 0.
func (h *Hatchery) workersLine(ctx context.Context, sl StatusLines) cds.MonitoringStatusLine {
	started, err := h.provider.WorkersStarted(ctx)
	if err != nil {
		return sl.Line(cds.MonitoringStatusAlert, "Workers", "Error listing")
	}
	return sl.Line(cds.MonitoringStatusOK, "Workers", WorkersStatusValue(len(started), h.cfg.Provision.MaxWorker))
}

// WorkersStatusValue formats the value of the Workers status line: "<count>/<maxWorker>",
// or "<count>/unlimited" when maxWorker is 0 (seed spec §6.4.7).
func WorkersStatusValue(count, maxWorker int) string {
	limit := "unlimited"
	if maxWorker > 0 {
		limit = strconv.Itoa(maxWorker)
	}
	return strconv.Itoa(count) + "/" + limit
}
