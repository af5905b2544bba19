package daemon

import (
	"context"
	"testing"

	"github.com/hatchery-vsphere/hatchery-vsphere/internal/cds"
)

type fakeSession struct {
	ok     bool
	detail string
}

func (f *fakeSession) SessionHealth() (bool, string) { return f.ok, f.detail }

func TestVCenterSessionAlertLine(t *testing.T) {
	s := &fakeSession{ok: true}
	status := sessionStatus(s)
	if lines := status(context.Background()); len(lines) != 0 {
		t.Errorf("healthy session: lines %+v, want none", lines)
	}
	s.ok, s.detail = false, "re-login failing since 2025-01-10T08:00:00Z (2 attempts): incorrect user name or password"
	lines := status(context.Background())
	if len(lines) != 1 || lines[0].Status != cds.MonitoringStatusAlert || lines[0].Component != "vCenter session" || lines[0].Value != s.detail {
		t.Errorf("failing session: lines %+v", lines)
	}
}
