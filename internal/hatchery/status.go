package hatchery

import (
	"sync"
	"time"

	"github.com/hatchery-vsphere/hatchery-vsphere/internal/cds"
)

// Monitoring line values of the goroutine lines (spec §4.2).
const (
	GoroutineRunning    = "Running"
	GoroutineNotRunning = "NOT running"
)

// StatusLines builds the lines of a MonitoringStatus (spec §4.2), all stamped with the
// service type "hatchery", the hatchery name and the host name.
type StatusLines struct {
	Service  string
	Hostname string
}

// Line returns one stamped line.
func (s StatusLines) Line(status, component, value string) cds.MonitoringStatusLine {
	return cds.MonitoringStatusLine{
		Status:    status,
		Component: component,
		Value:     value,
		Type:      cds.ServiceTypeHatchery,
		Service:   s.Service,
		Hostname:  s.Hostname,
	}
}

// Stamp fills the type, service and host name of lines built elsewhere (the provider's)
// where they are empty, in place, and returns lines.
func (s StatusLines) Stamp(lines []cds.MonitoringStatusLine) []cds.MonitoringStatusLine {
	for i := range lines {
		if lines[i].Type == "" {
			lines[i].Type = cds.ServiceTypeHatchery
		}
		if lines[i].Service == "" {
			lines[i].Service = s.Service
		}
		if lines[i].Hostname == "" {
			lines[i].Hostname = s.Hostname
		}
	}
	return lines
}

// Header returns the first three lines: Version, Uptime since started (a Go duration to
// the tenth of a second, e.g. "1h2m3.5s") and Time (now, RFC 3339 to the second).
func (s StatusLines) Header(version string, started, now time.Time) []cds.MonitoringStatusLine {
	return []cds.MonitoringStatusLine{
		s.Line(cds.MonitoringStatusOK, "Version", version),
		s.Line(cds.MonitoringStatusOK, "Uptime", now.Sub(started).Truncate(100*time.Millisecond).String()),
		s.Line(cds.MonitoringStatusOK, "Time", now.Format(time.RFC3339)),
	}
}

// Goroutines returns one "goroutine/<name>" line per tracked goroutine, in registration
// order: OK/Running, or AL/NOT running once it has returned.
func (s StatusLines) Goroutines(t *GoroutineTracker) []cds.MonitoringStatusLine {
	states := t.States()
	lines := make([]cds.MonitoringStatusLine, 0, len(states))
	for _, st := range states {
		if st.Running {
			lines = append(lines, s.Line(cds.MonitoringStatusOK, "goroutine/"+st.Name, GoroutineRunning))
		} else {
			lines = append(lines, s.Line(cds.MonitoringStatusAlert, "goroutine/"+st.Name, GoroutineNotRunning))
		}
	}
	return lines
}

// GoroutineState is whether one named goroutine is running.
type GoroutineState struct {
	Name    string
	Running bool
}

// GoroutineTracker records which of the hatchery's long-lived goroutines are running, for
// the monitoring status. It is safe for concurrent use.
type GoroutineTracker struct {
	mu      sync.Mutex
	names   []string
	running map[string]bool
}

// NewGoroutineTracker returns an empty tracker.
func NewGoroutineTracker() *GoroutineTracker {
	return &GoroutineTracker{running: make(map[string]bool)}
}

// Register declares goroutines, not running yet, fixing their order in the status.
func (t *GoroutineTracker) Register(names ...string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	for _, name := range names {
		t.registerLocked(name)
	}
}

func (t *GoroutineTracker) registerLocked(name string) {
	if _, ok := t.running[name]; !ok {
		t.names = append(t.names, name)
		t.running[name] = false
	}
}

// Set records that a goroutine started or stopped.
func (t *GoroutineTracker) Set(name string, running bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.registerLocked(name)
	t.running[name] = running
}

// Run runs fn as the named goroutine's body: it is reported running until fn returns or
// panics (the panic goes on). The caller runs it in the goroutine it owns, e.g.
// g.Go(func() error { return tracker.Run("mainRoutine", loop) }).
func (t *GoroutineTracker) Run(name string, fn func() error) error {
	t.Set(name, true)
	defer t.Set(name, false)
	return fn()
}

// States returns the goroutines in registration order.
func (t *GoroutineTracker) States() []GoroutineState {
	t.mu.Lock()
	defer t.mu.Unlock()
	states := make([]GoroutineState, len(t.names))
	for i, name := range t.names {
		states[i] = GoroutineState{Name: name, Running: t.running[name]}
	}
	return states
}
