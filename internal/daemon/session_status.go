package daemon

import (
	"context"

	"github.com/hatchery-vsphere/hatchery-vsphere/internal/cds"
)

// sessionHealth is what the daemon reads of the vCenter session (*vsphere.Client).
type sessionHealth interface {
	SessionHealth() (ok bool, detail string)
}

// sessionStatusComponent is the component of the alert line shown while vCenter refuses
// the hatchery's re-login.
const sessionStatusComponent = "vCenter session"

// sessionStatus gives the monitoring lines about the vCenter session: none while it is
// fine, one AL line while re-login fails (heartbeats and /mon/status carry it).
func sessionStatus(s sessionHealth) func(context.Context) []cds.MonitoringStatusLine {
	return func(context.Context) []cds.MonitoringStatusLine {
		ok, detail := s.SessionHealth()
		if ok {
			return nil
		}
		return []cds.MonitoringStatusLine{{Status: cds.MonitoringStatusAlert, Component: sessionStatusComponent, Value: detail}}
	}
}
