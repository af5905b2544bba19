package hatchery

import (
	"errors"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/hatchery-vsphere/hatchery-vsphere/internal/cds"
)

func TestStatusLinesHeader(t *testing.T) {
	s := StatusLines{Service: "vsphere-a", Hostname: "h1"}
	started := time.Date(2025, 1, 10, 5, 0, 0, 0, time.UTC)
	now := started.Add(3*time.Hour + 12*time.Second + 234*time.Millisecond)
	got := s.Header("0.57.0", started, now)
	want := []cds.MonitoringStatusLine{
		{Status: "OK", Component: "Version", Value: "0.57.0", Type: "hatchery", Service: "vsphere-a", Hostname: "h1"},
		{Status: "OK", Component: "Uptime", Value: "3h0m12.2s", Type: "hatchery", Service: "vsphere-a", Hostname: "h1"},
		{Status: "OK", Component: "Time", Value: "2025-01-10T08:00:12Z", Type: "hatchery", Service: "vsphere-a", Hostname: "h1"},
	}
	if !slices.Equal(got, want) {
		t.Errorf("header lines\n got %+v\nwant %+v", got, want)
	}
	stamped := s.Stamp([]cds.MonitoringStatusLine{{Status: "OK", Component: "Workers", Value: "3/10"}, {Service: "other", Type: "x", Hostname: "y"}})
	if stamped[0] != s.Line("OK", "Workers", "3/10") || stamped[1].Service != "other" || stamped[1].Type != "x" || stamped[1].Hostname != "y" {
		t.Errorf("stamped %+v", stamped)
	}
}

func TestGoroutineTracker(t *testing.T) {
	tr := NewGoroutineTracker()
	tr.Register("hatchery-vsphere-provisioning", "mainRoutine")

	release := make(chan struct{})
	started := make(chan struct{})
	errStop := errors.New("stopped")
	var wg sync.WaitGroup
	var runErr error
	wg.Add(1)
	go func() {
		defer wg.Done()
		runErr = tr.Run("mainRoutine", func() error {
			close(started)
			<-release
			return errStop
		})
	}()
	<-started

	s := StatusLines{Service: "vsphere-a", Hostname: "h1"}
	lines := s.Goroutines(tr)
	if len(lines) != 2 ||
		lines[0] != s.Line("AL", "goroutine/hatchery-vsphere-provisioning", "NOT running") ||
		lines[1] != s.Line("OK", "goroutine/mainRoutine", "Running") {
		t.Errorf("lines while running: %+v", lines)
	}

	close(release)
	wg.Wait()
	if !errors.Is(runErr, errStop) {
		t.Errorf("Run should return the body's error, got %v", runErr)
	}
	if st := tr.States(); st[1] != (GoroutineState{Name: "mainRoutine", Running: false}) {
		t.Errorf("state after return: %+v", st)
	}

	// A panicking goroutine is reported stopped too.
	func() {
		defer func() { _ = recover() }()
		_ = tr.Run("workerStarter-0", func() error { panic("boom") })
	}()
	if st := tr.States(); len(st) != 3 || st[2] != (GoroutineState{Name: "workerStarter-0"}) {
		t.Errorf("state after panic: %+v", st)
	}
}
