package hatchery

import (
	"bytes"
	"cmp"
	"context"
	_ "embed"
	"fmt"
	"html/template"
	"math"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/hatchery-vsphere/hatchery-vsphere/internal/cds"
)

// VMState is where a VM of the hatchery stands in its life, as the status page shows it:
//
//	template ──clone──► provisioning ──power off──► idle ──claim──► claimed ──► running
//	   (model: true)        (provision-…)                                         │
//	                                 fresh clone for a job ──────────────────► running
//	                                                                              │ worker done
//	                                                                           finished
//	any state but template ──spawn failure / disabled worker──► marked for deletion
//
// The VM annotation and power state are the durable truth; claimed and marked for deletion
// come from the provider's in-memory caches.
type VMState string

// The VM states, in the order the status page lists them.
const (
	VMStateTemplate          VMState = "template"
	VMStateProvisioning      VMState = "provisioning"
	VMStateIdle              VMState = "idle"
	VMStateClaimed           VMState = "claimed"
	VMStateRunning           VMState = "running"
	VMStateFinished          VMState = "finished"
	VMStateMarkedForDeletion VMState = "marked for deletion"
)

var vmStateOrder = []VMState{
	VMStateTemplate, VMStateProvisioning, VMStateIdle, VMStateClaimed,
	VMStateRunning, VMStateFinished, VMStateMarkedForDeletion,
}

// rank orders the states for the VM table; unknown states go last.
func (s VMState) rank() int {
	if i := slices.Index(vmStateOrder, s); i >= 0 {
		return i
	}
	return len(vmStateOrder)
}

// Dashboard is everything the status page shows. It deliberately has no field that could
// carry a secret (passwords, tokens, CDS_CONFIG): the page has no authentication, like the
// other /mon routes.
type Dashboard struct {
	Hatchery string                     `json:"hatchery"`
	Version  string                     `json:"version"`
	Now      time.Time                  `json:"now"`
	Health   []cds.MonitoringStatusLine `json:"health"`
	Capacity []CapacityGauge            `json:"capacity"`
	Pools    []ProvisioningPool         `json:"pools"`
	VMs      []VMRow                    `json:"vms"`
}

// CapacityGauge is one used-versus-limit figure (workers, vCPUs, memory, resource pool, IPs).
type CapacityGauge struct {
	Name string  `json:"name"`
	Unit string  `json:"unit"`
	Used float64 `json:"used"`
	// Limit 0 means unlimited.
	Limit float64 `json:"limit"`
}

// ProvisioningPool is one workerProvisioning entry: how many powered-off VMs are wanted for
// a template, how many are ready and how many are being prepared.
type ProvisioningPool struct {
	Template string `json:"template"`
	Wanted   int    `json:"wanted"`
	Ready    int    `json:"ready"`
	Starting int    `json:"starting"`
}

// VMRow is one VM of the hatchery.
type VMRow struct {
	Name   string  `json:"name"`
	State  VMState `json:"state"`
	Model  string  `json:"model"`
	Flavor string  `json:"flavor"`
	JobID  string  `json:"job_id"`
	IP     string  `json:"ip"`
	// Created is absent from the JSON when unknown.
	Created    time.Time `json:"created,omitzero"`
	AgeSeconds int64     `json:"age_seconds"`
	LastError  string    `json:"last_error"`
}

// DashboardSource is implemented by a provider that can describe its VMs, capacity and
// provisioning pools for the status page.
type DashboardSource interface {
	Dashboard(ctx context.Context) (Dashboard, error)
}

// DashboardOptions tells NewDashboardSource where the parts of the page come from.
type DashboardOptions struct {
	// Hatchery and Version identify the hatchery on the page.
	Hatchery string
	Version  string
	// Status builds the monitoring lines shown as health (Hatchery.Status); nil shows none.
	Status func(ctx context.Context) cds.MonitoringStatus
	// Provider fills capacity, pools and VMs; nil shows none.
	Provider DashboardSource
	// MinInterval is how long a built dashboard is served again before vCenter is listed
	// anew: every open page refreshes every few seconds, and a listing of thousands of VMs
	// takes seconds. 0 means DefaultDashboardMinInterval.
	MinInterval time.Duration
	// Now is the clock; nil means time.Now.
	Now func() time.Time
}

// DefaultDashboardMinInterval is the default DashboardOptions.MinInterval.
const DefaultDashboardMinInterval = 2 * time.Second

// dashboardComponent is the health line reporting that the provider part of the page failed.
const dashboardComponent = "Dashboard"

// NewDashboardSource returns the source of NewUIHandlers: identity and health from the
// framework, the rest from the provider, built at most once per MinInterval whatever the
// number of open pages (concurrent requests wait for one build and share it). A provider
// failure does not fail the page: it shows as an AL health line, so the operator still sees
// the health lines that explain it.
func NewDashboardSource(opts DashboardOptions) func(ctx context.Context) (Dashboard, error) {
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.MinInterval <= 0 {
		opts.MinInterval = DefaultDashboardMinInterval
	}
	c := &dashboardCache{opts: opts, sem: make(chan struct{}, 1)}
	return c.get
}

// dashboardCache coalesces dashboard builds. sem is a mutex that a waiting request can give
// up on when its context ends; last and at are only touched while holding it.
type dashboardCache struct {
	opts DashboardOptions
	sem  chan struct{}
	last Dashboard
	at   time.Time
	ok   bool
}

func (c *dashboardCache) get(ctx context.Context) (Dashboard, error) {
	select {
	case c.sem <- struct{}{}:
	case <-ctx.Done():
		return Dashboard{}, fmt.Errorf("build the dashboard: %w", ctx.Err())
	}
	defer func() { <-c.sem }()
	if c.ok && c.opts.Now().Sub(c.at) < c.opts.MinInterval {
		return c.last, nil
	}
	d := c.build(ctx)
	// A build cut short by a departed client is not worth showing to the next one.
	if ctx.Err() == nil {
		c.last, c.at, c.ok = d, c.opts.Now(), true
	}
	return d, nil
}

func (c *dashboardCache) build(ctx context.Context) Dashboard {
	var (
		status   cds.MonitoringStatus
		part     Dashboard
		partErr  error
		wg       sync.WaitGroup
		haveProv = c.opts.Provider != nil
	)
	// Both halves list vCenter; side by side the page costs one listing's time, not two.
	if haveProv {
		wg.Go(func() { part, partErr = c.opts.Provider.Dashboard(ctx) })
	}
	if c.opts.Status != nil {
		status = c.opts.Status(ctx)
	}
	wg.Wait()

	d := part
	d.Hatchery = cmp.Or(c.opts.Hatchery, part.Hatchery)
	d.Version = cmp.Or(c.opts.Version, part.Version)
	d.Now = c.opts.Now()
	d.Health = append([]cds.MonitoringStatusLine(nil), status.Lines...)
	if partErr != nil {
		line := cds.MonitoringStatusLine{
			Status:    cds.MonitoringStatusAlert,
			Component: dashboardComponent,
			Value:     partErr.Error(),
			Type:      cds.ServiceTypeHatchery,
			Service:   d.Hatchery,
		}
		if len(d.Health) > 0 {
			line.Hostname = d.Health[0].Hostname
		}
		d.Health = append(d.Health, line)
	}
	return d
}

// Paths of the status page.
const (
	UIPathRoot = "/"
	UIPathPage = "/mon/ui"
	UIPathVMs  = "/mon/vms"
)

// uiContentSecurityPolicy keeps the page self-contained: no external script, style, font or
// image can load, and the only request the page makes is its own refresh.
const uiContentSecurityPolicy = "default-src 'none'; style-src 'unsafe-inline'; script-src 'unsafe-inline'; " +
	"connect-src 'self'; img-src data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"

//go:embed ui.html
var uiHTML string

var uiTemplate = template.Must(template.New("ui").Parse(uiHTML))

// NewUIHandlers returns the handlers of the status page, for HTTPOptions.Extra: the HTML
// page at "/" and "/mon/ui", and its data as JSON at "/mon/vms" (the page refreshes itself
// from it every few seconds; without JavaScript it reloads).
func NewUIHandlers(src func(ctx context.Context) (Dashboard, error)) map[string]http.Handler {
	page := func(vmsURL string) http.Handler {
		return uiMethods(func(w http.ResponseWriter, r *http.Request) { servePage(w, r, src, vmsURL) })
	}
	return map[string]http.Handler{
		// Relative URLs keep the page working behind a reverse proxy that adds a path prefix.
		UIPathRoot: page("mon/vms"),
		UIPathPage: page("vms"),
		UIPathVMs: uiMethods(func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Cache-Control", "no-store")
			d, err := src(r.Context())
			if err != nil {
				writeHTTPFailure(w, err)
				return
			}
			writeHTTPJSON(w, http.StatusOK, normalizeDashboard(d))
		}),
	}
}

// uiMethods answers GET and HEAD with f, OPTIONS like the other /mon routes, and anything
// else with the API's not-found error.
func uiMethods(f http.HandlerFunc) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.Method {
		case http.MethodGet, http.MethodHead:
			f(w, r)
		case http.MethodOptions:
			w.WriteHeader(http.StatusOK)
		default:
			writeHTTPError(w, http.StatusNotFound, cds.ErrIDNotFound, httpNotFoundMessage)
		}
	})
}

func servePage(w http.ResponseWriter, r *http.Request, src func(context.Context) (Dashboard, error), vmsURL string) {
	h := w.Header()
	h.Set("Content-Type", "text/html; charset=utf-8")
	h.Set("Cache-Control", "no-store")
	h.Set("Content-Security-Policy", uiContentSecurityPolicy)
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Referrer-Policy", "no-referrer")

	code := http.StatusOK
	d, err := src(r.Context())
	view := uiView{VMsURL: vmsURL}
	if err != nil {
		// The page still renders (and keeps refreshing) so it recovers on its own.
		code = http.StatusServiceUnavailable
		view.Error = "The status could not be built: " + err.Error()
	}
	view.fill(normalizeDashboard(d))
	var buf bytes.Buffer
	if err := uiTemplate.Execute(&buf, view); err != nil {
		writeHTTPError(w, http.StatusInternalServerError, cds.ErrIDUnknown, httpInternalErrorMessage)
		return
	}
	w.WriteHeader(code)
	_, _ = w.Write(buf.Bytes()) // the client went away: nothing left to do
}

// normalizeDashboard returns a copy ready to serve: VMs sorted by state then name, ages
// filled from Now when missing, and empty lists rather than null in the JSON. The slices are
// copied because the source may share one dashboard between concurrent requests.
func normalizeDashboard(d Dashboard) Dashboard {
	d.Health = nonNil(slices.Clone(d.Health))
	d.Capacity = nonNil(slices.Clone(d.Capacity))
	d.Pools = nonNil(slices.Clone(d.Pools))
	d.VMs = nonNil(slices.Clone(d.VMs))
	for i := range d.VMs {
		vm := &d.VMs[i]
		if vm.AgeSeconds == 0 && !vm.Created.IsZero() && !d.Now.IsZero() {
			vm.AgeSeconds = max(0, int64(d.Now.Sub(vm.Created)/time.Second))
		}
	}
	slices.SortStableFunc(d.VMs, func(a, b VMRow) int {
		return cmp.Or(cmp.Compare(a.State.rank(), b.State.rank()), cmp.Compare(a.State, b.State), cmp.Compare(a.Name, b.Name))
	})
	return d
}

func nonNil[T any](s []T) []T {
	if s == nil {
		return []T{}
	}
	return s
}

// uiView is what the HTML template renders: the dashboard with its figures pre-formatted,
// so the template only places text (html/template escapes all of it).
type uiView struct {
	VMsURL   string
	Error    string
	Hatchery string
	Version  string
	Now      string
	Health   []uiHealth
	Gauges   []uiGauge
	Pools    []ProvisioningPool
	VMs      []uiVM
}

type uiHealth struct {
	Component, Value, Status, Class string
}

type uiGauge struct {
	Name      string
	Text      string
	Unlimited bool
	Percent   string
	Level     string
}

type uiVM struct {
	VMRow
	StateClass string
	Age        string
	CreatedAt  string
}

func (v *uiView) fill(d Dashboard) {
	v.Hatchery, v.Version = d.Hatchery, d.Version
	if !d.Now.IsZero() {
		v.Now = d.Now.UTC().Format(time.RFC3339)
	}
	for _, l := range d.Health {
		v.Health = append(v.Health, uiHealth{Component: l.Component, Value: l.Value, Status: l.Status, Class: healthClass(l.Status)})
	}
	for _, g := range d.Capacity {
		v.Gauges = append(v.Gauges, newUIGauge(g))
	}
	v.Pools = d.Pools
	for _, vm := range d.VMs {
		row := uiVM{VMRow: vm, StateClass: stateClass(vm.State)}
		if !vm.Created.IsZero() {
			row.Age = FormatAge(vm.AgeSeconds)
			row.CreatedAt = vm.Created.UTC().Format(time.RFC3339)
		}
		v.VMs = append(v.VMs, row)
	}
}

// healthClass mirrors healthClass of the page's script.
func healthClass(status string) string {
	switch status {
	case cds.MonitoringStatusAlert:
		return "alert"
	case cds.MonitoringStatusWarn:
		return "warn"
	}
	return "ok"
}

// stateClass mirrors stateClass of the page's script: "marked for deletion" becomes
// "state-marked-for-deletion".
func stateClass(s VMState) string {
	return "state-" + strings.ReplaceAll(string(s), " ", "-")
}

// newUIGauge mirrors gauge of the page's script.
func newUIGauge(g CapacityGauge) uiGauge {
	unit := ""
	if g.Unit != "" {
		unit = " " + g.Unit
	}
	if g.Limit <= 0 {
		return uiGauge{Name: g.Name, Text: formatFigure(g.Used) + unit, Unlimited: true}
	}
	ratio := g.Used / g.Limit
	level := "low"
	switch {
	case ratio >= 1:
		level = "full"
	case ratio >= 0.8:
		level = "high"
	}
	return uiGauge{
		Name:    g.Name,
		Text:    formatFigure(g.Used) + " / " + formatFigure(g.Limit) + unit,
		Percent: strconv.FormatFloat(math.Round(min(max(ratio, 0), 1)*1000)/10, 'f', -1, 64),
		Level:   level,
	}
}

// formatFigure prints whole numbers without decimals and others with one.
func formatFigure(f float64) string {
	if f == math.Trunc(f) {
		return strconv.FormatFloat(f, 'f', -1, 64)
	}
	return strconv.FormatFloat(f, 'f', 1, 64)
}

// FormatAge prints an age in seconds the way the status page does: "42s", "3m05s",
// "2h07m", "3d04h".
func FormatAge(seconds int64) string {
	s := max(seconds, 0)
	switch {
	case s < 60:
		return fmt.Sprintf("%ds", s)
	case s < 3600:
		return fmt.Sprintf("%dm%02ds", s/60, s%60)
	case s < 86400:
		return fmt.Sprintf("%dh%02dm", s/3600, s%3600/60)
	}
	return fmt.Sprintf("%dd%02dh", s/86400, s%86400/3600)
}
