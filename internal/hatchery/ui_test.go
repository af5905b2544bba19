package hatchery

import (
	"compress/gzip"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hatchery-vsphere/hatchery-vsphere/internal/cds"
)

var uiTestNow = time.Date(2025, 1, 10, 8, 0, 0, 0, time.UTC)

// sampleDashboard is a hatchery with a VM in every state, given out of order.
func sampleDashboard() Dashboard {
	line := func(status, component, value string) cds.MonitoringStatusLine {
		return cds.MonitoringStatusLine{Status: status, Component: component, Value: value, Type: "hatchery", Service: "vsphere-a", Hostname: "h1"}
	}
	return Dashboard{
		Hatchery: "vsphere-a",
		Version:  "0.57.0-hv",
		Now:      uiTestNow,
		Health: []cds.MonitoringStatusLine{
			line(cds.MonitoringStatusOK, "Version", "0.57.0-hv"),
			line(cds.MonitoringStatusAlert, "goroutine/hatchery-vsphere-metrics", GoroutineNotRunning),
			line(cds.MonitoringStatusOK, "Workers", "3/10"),
		},
		Capacity: []CapacityGauge{
			{Name: "Workers", Unit: "workers", Used: 3, Limit: 10},
			{Name: "vCPUs", Unit: "vCPUs", Used: 14, Limit: 16},
			{Name: "Memory", Unit: "MB", Used: 8192, Limit: 0},
			{Name: "IP addresses", Unit: "IPs", Used: 5, Limit: 5},
		},
		Pools: []ProvisioningPool{{Template: "debian12", Wanted: 3, Ready: 1, Starting: 1}},
		VMs: []VMRow{
			{Name: "zeta-worker", State: VMStateRunning, Model: "grp/debian12", Flavor: "large", JobID: "98765", IP: "10.0.0.12", Created: uiTestNow.Add(-150 * time.Second)},
			{Name: "provision-v2-b", State: VMStateIdle, Model: "debian12", Created: uiTestNow.Add(-2 * time.Hour)},
			{Name: "debian12", State: VMStateTemplate, Model: "debian12"},
			{Name: "broken-worker", State: VMStateMarkedForDeletion, Model: "debian12", LastError: "wait for guest: context deadline exceeded", Created: uiTestNow.Add(-10 * time.Minute)},
			{Name: "alpha-worker", State: VMStateRunning, Model: "debian12", Flavor: "small", JobID: "98766", Created: uiTestNow.Add(-30 * time.Second)},
			{Name: "provision-v2-a", State: VMStateProvisioning, Model: "debian12", Created: uiTestNow.Add(-40 * time.Second)},
			{Name: "done-worker", State: VMStateFinished, Model: "debian12", JobID: "98700", Created: uiTestNow.Add(-26 * time.Hour)},
			{Name: "provision-v2-c", State: VMStateClaimed, Model: "debian12", Created: uiTestNow.Add(-3 * time.Hour)},
		},
	}
}

// sortedSampleNames is the VM table order: by state (lifecycle order), then name.
var sortedSampleNames = []string{
	"debian12", "provision-v2-a", "provision-v2-b", "provision-v2-c",
	"alpha-worker", "zeta-worker", "done-worker", "broken-worker",
}

func fixedSource(d Dashboard) func(context.Context) (Dashboard, error) {
	return func(context.Context) (Dashboard, error) { return d, nil }
}

func serveUI(t *testing.T, src func(context.Context) (Dashboard, error), method, path string) *httptest.ResponseRecorder {
	t.Helper()
	h, ok := NewUIHandlers(src)[path]
	if !ok {
		t.Fatalf("no UI handler for %s", path)
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(method, path, nil))
	return rec
}

func TestUIHandlersServeThePageAndItsData(t *testing.T) {
	h := NewUIHandlers(fixedSource(sampleDashboard()))
	var paths []string
	for p := range h {
		paths = append(paths, p)
	}
	slices.Sort(paths)
	if want := []string{"/", "/mon/ui", "/mon/vms"}; !slices.Equal(paths, want) {
		t.Fatalf("paths = %v, want %v", paths, want)
	}
}

func TestUIJSONHasStableSnakeCaseFieldsAndSortedVMs(t *testing.T) {
	rec := serveUI(t, fixedSource(sampleDashboard()), http.MethodGet, UIPathVMs)
	if rec.Code != http.StatusOK {
		t.Fatalf("status = %d, body %s", rec.Code, rec.Body)
	}
	if ct := rec.Header().Get("Content-Type"); ct != "application/json" {
		t.Errorf("Content-Type = %q", ct)
	}
	var raw map[string]json.RawMessage
	if err := json.Unmarshal(rec.Body.Bytes(), &raw); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"hatchery", "version", "now", "health", "capacity", "pools", "vms"} {
		if _, ok := raw[k]; !ok {
			t.Errorf("top-level key %q missing in %s", k, rec.Body)
		}
	}
	var vms []map[string]any
	if err := json.Unmarshal(raw["vms"], &vms); err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, vm := range vms {
		names = append(names, vm["name"].(string))
	}
	if !slices.Equal(names, sortedSampleNames) {
		t.Errorf("VM order = %v, want %v", names, sortedSampleNames)
	}
	zeta := vms[slices.Index(names, "zeta-worker")]
	want := map[string]any{
		"name": "zeta-worker", "state": "running", "model": "grp/debian12", "flavor": "large",
		"job_id": "98765", "ip": "10.0.0.12", "created": "2025-01-10T07:57:30Z",
		"age_seconds": float64(150), "last_error": "",
	}
	for k, v := range want {
		if zeta[k] != v {
			t.Errorf("zeta-worker %s = %#v, want %#v", k, zeta[k], v)
		}
	}
	if len(zeta) != len(want) {
		t.Errorf("zeta-worker has keys %v, want exactly %v", zeta, want)
	}
	if _, ok := vms[0]["created"]; ok {
		t.Errorf("a template without creation time has a created key: %v", vms[0])
	}
	if !strings.Contains(string(raw["capacity"]), `{"name":"Memory","unit":"MB","used":8192,"limit":0}`) {
		t.Errorf("capacity = %s", raw["capacity"])
	}
	if !strings.Contains(string(raw["pools"]), `{"template":"debian12","wanted":3,"ready":1,"starting":1}`) {
		t.Errorf("pools = %s", raw["pools"])
	}
}

func TestUIJSONOfAnEmptyDashboardHasArraysNotNull(t *testing.T) {
	rec := serveUI(t, fixedSource(Dashboard{Hatchery: "h"}), http.MethodGet, UIPathVMs)
	body := rec.Body.String()
	for _, k := range []string{`"health":[]`, `"capacity":[]`, `"pools":[]`, `"vms":[]`} {
		if !strings.Contains(body, k) {
			t.Errorf("body %s lacks %s", body, k)
		}
	}
}

func TestUIPageShowsEverything(t *testing.T) {
	for _, path := range []string{UIPathRoot, UIPathPage} {
		t.Run(path, func(t *testing.T) {
			rec := serveUI(t, fixedSource(sampleDashboard()), http.MethodGet, path)
			if rec.Code != http.StatusOK {
				t.Fatalf("status = %d", rec.Code)
			}
			if ct := rec.Header().Get("Content-Type"); ct != "text/html; charset=utf-8" {
				t.Errorf("Content-Type = %q", ct)
			}
			if csp := rec.Header().Get("Content-Security-Policy"); !strings.Contains(csp, "default-src 'none'") {
				t.Errorf("Content-Security-Policy = %q", csp)
			}
			page := rec.Body.String()
			for _, s := range []string{
				"vsphere-a", "0.57.0-hv", "2025-01-10T08:00:00Z",
				`<tr class="alert"><td>goroutine/hatchery-vsphere-metrics</td><td>NOT running</td><td>AL</td></tr>`,
				`<tr class="ok"><td>Workers</td><td>3/10</td><td>OK</td></tr>`,
				`<div class="bar low" style="width: 30%">`,
				`<div class="bar high" style="width: 87.5%">`,
				`<div class="bar full" style="width: 100%">`,
				`8192 MB</span>`, `<div class="unlimited">unlimited</div>`,
				`<td class="name">debian12</td><td class="num">3</td><td class="num">1</td><td class="num">1</td>`,
				`<span class="badge state-marked-for-deletion">marked for deletion</span>`,
				`wait for guest: context deadline exceeded`,
				`title="2025-01-10T07:57:30Z">2m30s</td>`,
				`<meta http-equiv="refresh" content="5">`,
			} {
				if !strings.Contains(page, s) {
					t.Errorf("page lacks %q", s)
				}
			}
			// VM rows in state-then-name order.
			rows := regexp.MustCompile(`<tr data-vm="([^"]+)">`).FindAllStringSubmatch(page, -1)
			var names []string
			for _, r := range rows {
				names = append(names, r[1])
			}
			if !slices.Equal(names, sortedSampleNames) {
				t.Errorf("rows = %v, want %v", names, sortedSampleNames)
			}
			if strings.Count(page, `class="bar `) != 3 {
				t.Errorf("want 3 bars (the unlimited gauge has none), page:\n%s", page)
			}
		})
	}
}

func TestUIPageIsSelfContained(t *testing.T) {
	page := serveUI(t, fixedSource(sampleDashboard()), http.MethodGet, UIPathPage).Body.String()
	for _, s := range []string{"http://", "https://", "//cdn", " src=", "<link rel=\"stylesheet\"", "@import"} {
		if strings.Contains(page, s) {
			t.Errorf("page references an external asset: %q", s)
		}
	}
}

func TestUIPageRefreshesFromARelativeURL(t *testing.T) {
	// Relative to the page, so a reverse proxy adding a path prefix keeps working.
	for path, want := range map[string]string{UIPathRoot: `const vmsURL = "mon/vms";`, UIPathPage: `const vmsURL = "vms";`} {
		page := serveUI(t, fixedSource(sampleDashboard()), http.MethodGet, path).Body.String()
		if !strings.Contains(page, want) {
			t.Errorf("%s: page lacks %s", path, want)
		}
	}
}

func TestUIEscapesEverything(t *testing.T) {
	evil := `<script>alert("x")</script>`
	d := sampleDashboard()
	d.Hatchery = evil
	d.VMs = append(d.VMs, VMRow{Name: evil, State: VMStateRunning, LastError: `"><img src=x onerror=alert(1)>`})
	d.Health = append(d.Health, cds.MonitoringStatusLine{Status: "OK", Component: evil, Value: evil})
	d.Capacity = append(d.Capacity, CapacityGauge{Name: evil, Unit: evil, Used: 1, Limit: 2})
	d.Pools = append(d.Pools, ProvisioningPool{Template: evil})
	page := serveUI(t, fixedSource(d), http.MethodGet, UIPathPage).Body.String()
	if strings.Contains(page, evil) || strings.Contains(page, "<img") {
		t.Fatalf("unescaped data in page:\n%s", page)
	}
	if !strings.Contains(page, `&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt;`) {
		t.Errorf("escaped name missing")
	}
}

func TestUISourceFailure(t *testing.T) {
	src := func(context.Context) (Dashboard, error) {
		return Dashboard{}, errors.New("list virtual machines: connection refused")
	}

	page := serveUI(t, src, http.MethodGet, UIPathPage)
	if page.Code != http.StatusServiceUnavailable {
		t.Errorf("page status = %d, want 503", page.Code)
	}
	if body := page.Body.String(); !strings.Contains(body, "list virtual machines: connection refused") || !strings.Contains(body, `const vmsURL`) {
		t.Errorf("page does not show the failure and keep refreshing:\n%s", body)
	}

	data := serveUI(t, src, http.MethodGet, UIPathVMs)
	var apiErr cds.APIError
	if err := json.Unmarshal(data.Body.Bytes(), &apiErr); err != nil || data.Code != http.StatusInternalServerError || apiErr.ID != cds.ErrIDUnknown {
		t.Errorf("data: status %d body %s, want 500 with the API error id 1", data.Code, data.Body)
	}
}

func TestUIMethods(t *testing.T) {
	src := fixedSource(sampleDashboard())
	if rec := serveUI(t, src, http.MethodPost, UIPathVMs); rec.Code != http.StatusNotFound {
		t.Errorf("POST: status %d, want 404", rec.Code)
	}
	if rec := serveUI(t, src, http.MethodOptions, UIPathPage); rec.Code != http.StatusOK || rec.Body.Len() != 0 {
		t.Errorf("OPTIONS: status %d body %q", rec.Code, rec.Body)
	}
	if rec := serveUI(t, src, http.MethodHead, UIPathRoot); rec.Code != http.StatusOK {
		t.Errorf("HEAD: status %d", rec.Code)
	}
}

func TestUIThroughTheHTTPServer(t *testing.T) {
	srv := httptest.NewServer(NewHTTPHandler(HTTPOptions{Extra: NewUIHandlers(fixedSource(sampleDashboard()))}))
	defer srv.Close()

	req, err := http.NewRequest(http.MethodGet, srv.URL+"/", nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Accept-Encoding", "gzip")
	resp, err := srv.Client().Transport.RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Encoding") != "gzip" {
		t.Fatalf("status %d, encoding %q", resp.StatusCode, resp.Header.Get("Content-Encoding"))
	}
	zr, err := gzip.NewReader(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	body, err := io.ReadAll(zr)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(body), `<tr data-vm="zeta-worker">`) {
		t.Errorf("page through the server lacks the VM rows")
	}

	// /mon/ui/ is not a route: exact paths only.
	resp2, err := srv.Client().Get(srv.URL + "/mon/ui/other")
	if err != nil {
		t.Fatal(err)
	}
	resp2.Body.Close()
	if resp2.StatusCode != http.StatusNotFound {
		t.Errorf("unknown path: status %d", resp2.StatusCode)
	}
}

func TestFormatAge(t *testing.T) {
	for s, want := range map[int64]string{-5: "0s", 0: "0s", 42: "42s", 185: "3m05s", 7620: "2h07m", 273600: "3d04h"} {
		if got := FormatAge(s); got != want {
			t.Errorf("FormatAge(%d) = %q, want %q", s, got, want)
		}
	}
}

// fakeDashboardProvider counts its builds.
type fakeDashboardProvider struct {
	mu    sync.Mutex
	calls int
	err   error
}

func (f *fakeDashboardProvider) Dashboard(context.Context) (Dashboard, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls++
	if f.err != nil {
		return Dashboard{}, f.err
	}
	d := sampleDashboard()
	d.Health, d.Hatchery, d.Version = nil, "from-provider", ""
	return d, nil
}

func (f *fakeDashboardProvider) count() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.calls
}

type uiClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *uiClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *uiClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

func TestDashboardSourceComposesAndCoalesces(t *testing.T) {
	clock := &uiClock{t: uiTestNow}
	prov := &fakeDashboardProvider{}
	statusCalls := 0
	src := NewDashboardSource(DashboardOptions{
		Hatchery: "vsphere-a",
		Version:  "1.2.3",
		Status: func(context.Context) cds.MonitoringStatus {
			statusCalls++
			return cds.MonitoringStatus{Lines: []cds.MonitoringStatusLine{{Status: "OK", Component: "Version", Value: "1.2.3", Hostname: "h1"}}}
		},
		Provider: prov,
		Now:      clock.Now,
	})
	ctx := context.Background()

	d, err := src(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if d.Hatchery != "vsphere-a" || d.Version != "1.2.3" || !d.Now.Equal(uiTestNow) {
		t.Errorf("identity = %q %q %v", d.Hatchery, d.Version, d.Now)
	}
	if len(d.Health) != 1 || d.Health[0].Component != "Version" || len(d.VMs) != len(sortedSampleNames) || len(d.Capacity) != 4 {
		t.Errorf("dashboard = %+v", d)
	}

	// Pages refreshing within the interval share the build: vCenter is listed once.
	clock.Advance(time.Second)
	if _, err := src(ctx); err != nil {
		t.Fatal(err)
	}
	if prov.count() != 1 || statusCalls != 1 {
		t.Errorf("builds within the interval: provider %d, status %d, want 1 and 1", prov.count(), statusCalls)
	}
	clock.Advance(DefaultDashboardMinInterval)
	if _, err := src(ctx); err != nil {
		t.Fatal(err)
	}
	if prov.count() != 2 || statusCalls != 2 {
		t.Errorf("builds after the interval: provider %d, status %d, want 2 and 2", prov.count(), statusCalls)
	}
}

func TestDashboardSourceShowsAProviderFailureAsAnAlertLine(t *testing.T) {
	prov := &fakeDashboardProvider{err: errors.New("list virtual machines: timeout")}
	src := NewDashboardSource(DashboardOptions{
		Hatchery: "vsphere-a",
		Status: func(context.Context) cds.MonitoringStatus {
			return cds.MonitoringStatus{Lines: []cds.MonitoringStatusLine{{Status: "AL", Component: "VirtualMachines", Value: "Error listing", Hostname: "h1"}}}
		},
		Provider: prov,
		Now:      (&uiClock{t: uiTestNow}).Now,
	})
	d, err := src(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	last := d.Health[len(d.Health)-1]
	if len(d.Health) != 2 || last.Status != cds.MonitoringStatusAlert || last.Component != "Dashboard" || last.Value != "list virtual machines: timeout" || last.Hostname != "h1" {
		t.Errorf("health = %+v", d.Health)
	}
	page := serveUI(t, src, http.MethodGet, UIPathPage)
	if page.Code != http.StatusOK || !strings.Contains(page.Body.String(), `<tr class="alert"><td>Dashboard</td><td>list virtual machines: timeout</td>`) {
		t.Errorf("page: status %d\n%s", page.Code, page.Body)
	}
}

func TestDashboardSourceGivesUpWaitingWhenTheRequestEnds(t *testing.T) {
	release := make(chan struct{})
	started := make(chan struct{})
	blocking := dashboardFunc(func(ctx context.Context) (Dashboard, error) {
		close(started)
		<-release
		return Dashboard{}, nil
	})
	src := NewDashboardSource(DashboardOptions{Provider: blocking, Now: (&uiClock{t: uiTestNow}).Now})

	var wg sync.WaitGroup
	wg.Go(func() { _, _ = src(context.Background()) })
	<-started
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := src(ctx); !errors.Is(err, context.Canceled) {
		t.Errorf("waiting request: err = %v, want context.Canceled", err)
	}
	close(release)
	wg.Wait()
}

type dashboardFunc func(ctx context.Context) (Dashboard, error)

func (f dashboardFunc) Dashboard(ctx context.Context) (Dashboard, error) { return f(ctx) }
