package faults

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"errors"
	"flag"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rockbears/log"
	"github.com/vmware/govmomi/simulator"

	"github.com/hatchery-vsphere/hatchery-vsphere/internal/cdssim"
	"github.com/hatchery-vsphere/hatchery-vsphere/internal/config"
	"github.com/hatchery-vsphere/hatchery-vsphere/internal/daemon"
	"github.com/hatchery-vsphere/hatchery-vsphere/internal/hatchery"
	"github.com/hatchery-vsphere/hatchery-vsphere/internal/simenv"
	"github.com/hatchery-vsphere/hatchery-vsphere/internal/vsphere"
	"github.com/hatchery-vsphere/hatchery-vsphere/internal/vspherehatchery"
)

var reportFlag = flag.String("report", "", "write the results table (Markdown) to this file, relative to the module root")

// results collects the rows of the report, in the order the scenarios ran.
var results struct {
	mu   sync.Mutex
	rows []Result
}

func addResult(r Result) {
	results.mu.Lock()
	defer results.mu.Unlock()
	results.rows = append(results.rows, r)
}

func TestMain(m *testing.M) {
	flag.Parse()
	code := m.Run()
	path := *reportFlag
	if path == "" {
		path = os.Getenv("FAULTS_REPORT")
	}
	if path != "" {
		if err := writeReportAt(path); err != nil {
			fmt.Fprintln(os.Stderr, err)
			code = 1
		}
	}
	os.Exit(code)
}

// writeReportAt writes the report; a relative path is taken from the module root, not from
// the package directory the test runs in.
func writeReportAt(path string) error {
	if !filepath.IsAbs(path) {
		root, err := moduleRoot()
		if err != nil {
			return err
		}
		path = filepath.Join(root, path)
	}
	results.mu.Lock()
	defer results.mu.Unlock()
	if len(results.rows) == 0 {
		return errors.New("faults report: no scenario ran, report not written")
	}
	return WriteReport(path, results.rows)
}

func moduleRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", fmt.Errorf("module root: %w", err)
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("module root: no go.mod above the test directory")
		}
		dir = parent
	}
}

// keys are shared by every scenario: generating RSA keys costs up to a second each.
var keys struct {
	once     sync.Once
	api, hat *rsa.PrivateKey
	err      error
}

func sharedKeys(t *testing.T) (*rsa.PrivateKey, *rsa.PrivateKey) {
	t.Helper()
	keys.once.Do(func() {
		if keys.api, keys.err = rsa.GenerateKey(rand.Reader, 2048); keys.err != nil {
			return
		}
		keys.hat, keys.err = rsa.GenerateKey(rand.Reader, 2048)
	})
	if keys.err != nil {
		t.Fatal(keys.err)
	}
	return keys.api, keys.hat
}

// clock is the hatchery's and the simulated API's clock: real time plus an offset a
// scenario advances to simulate a long outage without waiting for it.
type clock struct {
	mu     sync.Mutex
	offset time.Duration
}

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return time.Now().Add(c.offset)
}

func (c *clock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.offset += d
}

const (
	hatcheryName = "hatchery-faults"
	// ipRange is the hatchery's iprange: as many addresses as maxWorker, so that an address
	// reserved for nothing shows as a worker that cannot start.
	ipRange   = "10.40.0.0/29"
	rangeSize = 8
	// waitBound turns a hang into a failure; nothing is timed against it.
	waitBound = 20 * time.Second
)

// debian12Model is a v2 model cloning simenv's debian12 template.
var debian12Model = cdssim.V2WorkerModel{
	Name: "debian12-model", Type: "vsphere", OSArch: "linux/amd64",
	Spec: cdssim.V2ModelSpec{Image: "debian12", Username: "cds", Password: "guest-secret"},
}

// scenario is one fault and what is expected around it.
type scenario struct {
	name  string
	notes string
	// v1Jobs and v2Jobs queued after the daemon started (defaults 2 and 4; -1 for none).
	v1Jobs, v2Jobs int
	// configure adjusts the configuration of the hatchery before it starts.
	configure func(e *env, cfg *config.File)
	// before runs before the daemon starts (plant VMs, cut the link...).
	before func(e *env)
	// start starts the daemon(s); nil starts one with e.cfg.
	start func(e *env)
	// run injects the fault once the jobs are queued, waits for evidence that it hit, and
	// lifts it; the runner then waits for every job to be served.
	run func(e *env)
	// ipProbe is the number of addresses expected free at the end (default rangeSize).
	ipProbe int
}

// env is what a scenario works with.
type env struct {
	t     *testing.T
	ctx   context.Context
	h     *daemon.Harness
	clock *clock
	link  *Link
	front *APIFront
	cfg   *config.File

	daemons []*runningDaemon
	// completer finishes the held workers of the scenario's jobs (not the probe's).
	completer *completer

	v1Jobs  []int64
	v2Jobs  []string
	planted map[string]bool // VMs the scenario made; not leaks
	// owners are the hatchery names whose VMs must be gone after cleanup.
	owners []string

	problems []string
	settled  []func()
}

func (e *env) problem(format string, args ...any) {
	e.t.Helper()
	msg := fmt.Sprintf(format, args...)
	e.t.Error(msg)
	e.problems = append(e.problems, msg)
}

// wait waits until cond holds, re-evaluated at each change of the simulated API and every
// 25 ms (some conditions change without the API seeing it: the link, a daemon's exit). It
// reports false, and records a problem, when the bound is reached: the bound only turns a
// hang into a failure, nothing is timed against it.
func (e *env) wait(what string, cond func() bool) bool {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(e.ctx, waitBound)
	defer cancel()
	tick := time.NewTicker(25 * time.Millisecond)
	defer tick.Stop()
	for {
		if cond() {
			return true
		}
		select {
		case <-ctx.Done():
			e.problem("waiting for %s: %v", what, ctx.Err())
			return false
		case <-tick.C:
		}
	}
}

// released counts the release requests (DELETE book or take) the API received.
func (e *env) released() int {
	return len(e.h.API.RequestsTo(http.MethodDelete, "/queue/workflows/")) +
		len(e.h.API.RequestsTo(http.MethodDelete, "/v2/queue/"))
}

// workersStarted counts the simulated workers of jobs (not registrations) started so far.
func (e *env) workersStarted() int {
	n := 0
	for _, r := range e.h.API.WorkerRuns() {
		if !r.RegisterOnly {
			n++
		}
	}
	return n
}

// afterJobs runs f once every job has succeeded (or the wait gave up), before cleanup is
// checked: the place to stop a fault driver.
func (e *env) afterJobs(f func()) { e.settled = append(e.settled, f) }

// runScenario runs one scenario end to end and records its row.
func runScenario(t *testing.T, sc scenario) {
	before := goroutines()
	res := Result{Scenario: sc.name, Notes: sc.notes}
	e := &env{t: t, ctx: t.Context(), clock: &clock{}, planted: map[string]bool{}, owners: []string{hatcheryName}}
	defer func() {
		res.Problems = append(res.Problems, e.problems...)
		addResult(res)
	}()

	apiKey, hatKey := sharedKeys(t)
	h, err := daemon.NewHarness(t.Context(), daemon.HarnessOptions{
		Name: hatcheryName, APIKey: apiKey, HatcheryKey: hatKey, HoldJobs: true, Now: e.clock.Now,
	})
	if err != nil {
		e.problem("harness: %v", err)
		return
	}
	e.h = h
	closed := false
	closeAll := func() {
		if closed {
			return
		}
		closed = true
		for _, d := range e.daemons {
			d.stop()
		}
		if e.completer != nil {
			e.completer.stop()
		}
		e.front.Close()
		e.link.Close()
		// simenv's Close does not wait for the tasks still running in vcsim (a clone asked
		// by a client that has gone): removing the model under them panics the simulator.
		// Locked returns once every task has finished.
		h.VCenter.Locked(func() {})
		h.Close()
	}
	if e.link, err = NewLink(h.VCenter.URL.Host); err != nil {
		e.problem("%v", err)
		h.Close()
		return
	}
	e.front = NewAPIFront(h.API.Handler())
	defer closeAll()

	e.cfg = baseConfig(e)
	if sc.configure != nil {
		sc.configure(e, e.cfg)
	}
	e.completer = newCompleter(h.API)
	if sc.before != nil {
		sc.before(e)
	}
	if sc.start != nil {
		sc.start(e)
	} else {
		e.startDaemon(e.cfg, nil)
	}
	e.queueJobs(sc.v1Jobs, sc.v2Jobs)
	if sc.run != nil {
		sc.run(e)
	}

	all := len(e.v1Jobs) + len(e.v2Jobs)
	if !e.wait(fmt.Sprintf("the %d jobs to succeed", all), func() bool { return e.succeeded() == all }) {
		e.problem("jobs not served: %s", e.unserved())
	}
	for _, f := range e.settled {
		f()
	}
	e.wait("cleanup of every worker VM", func() bool { return len(e.leftovers()) == 0 })

	res.Jobs = all
	res.Served, res.Released = e.tally()
	for _, v := range e.leftovers() {
		e.problem("VM %q left behind (%s, annotation %q)", v.Name, v.PowerState, v.RawAnnotation)
	}
	res.VMsLeaked = len(e.leftovers())
	dup := e.duplicateIPs()
	for ip, vms := range dup {
		e.problem("address %s on several VMs: %v", ip, vms)
	}
	probe := sc.ipProbe
	if probe == 0 {
		probe = rangeSize
	}
	if res.VMsLeaked == 0 && probe > 0 {
		leaked, held := e.probeIPs(probe)
		if leaked > 0 {
			e.problem("%d of the %d free addresses of the iprange cannot be handed out any more", leaked, probe)
		}
		if held > 0 {
			e.problem("%d addresses of the iprange stay reserved without a VM until the %s reservation TTL", held, vspherehatchery.IPReservationTTL)
		}
		res.IPsLeaked, res.IPsHeld = leaked, held
	}
	res.IPsLeaked += len(dup)

	for _, d := range e.daemons {
		if err := d.stop(); err != nil && !d.reported {
			e.problem("daemon %s: Run = %v after its stop", d.name, err)
		}
	}
	for _, err := range h.Problems() {
		e.problem("simulators: %v", err)
	}
	closeAll()
	if leaked := goroutinesLeft(before); len(leaked) > 0 {
		e.problem("%d goroutines outlived the daemon, first: %s", len(leaked), leaked[0])
	}
}

// baseConfig is the harness configuration through the link and the front, with short
// timeouts, a small iprange, no attempt limit and room for the probe.
func baseConfig(e *env) *config.File {
	return hatcheryConfig(e, hatcheryName, ipRange)
}

func hatcheryConfig(e *env, name, iprange string) *config.File {
	cfg := e.h.Config()
	cfg.Hatchery.VSphere.CommonConfiguration.Name = name
	vs := &cfg.Hatchery.VSphere
	c := &vs.CommonConfiguration
	vs.Endpoint = e.link.Addr()
	c.API.HTTP.URL = e.front.URL()
	c.API.RequestTimeout = 2
	vs.CallTimeout = 3
	vs.TaskTimeout = 5
	vs.IPRange = iprange
	vs.Gateway = "10.40.0.254"
	vs.DNS = "10.40.0.253"
	vs.CircuitBreakerProbe = 1
	p := &c.Provision
	p.MaxWorker = rangeSize
	p.MaxConcurrentProvisioning = rangeSize
	// The scenarios lift their fault and expect every job served: no give-up.
	p.MaxAttemptsNumberBeforeFailure = -1
	p.ShutdownTimeout = 1
	return cfg
}

// fastTick runs every loop of the framework and the provider at most every 100 ms; the
// shutdown grace and the guest probe keep their own period.
func fastTick(name string, d time.Duration) (<-chan time.Time, func()) {
	if name != "shutdown" && name != "vsphere-env-probe" {
		d = min(d, 100*time.Millisecond)
	}
	t := time.NewTicker(d)
	return t.C, t.Stop
}

// runningDaemon is a daemon.Run in a goroutine the scenario owns.
type runningDaemon struct {
	name   string
	addr   string
	cancel context.CancelFunc
	done   chan struct{}
	err    error
	// reported: the scenario has already recorded how Run ended.
	reported bool
}

// stop cancels the daemon and returns what Run returned. Safe to call twice.
func (d *runningDaemon) stop() error {
	d.cancel()
	<-d.done
	return d.err
}

// exited tells whether Run has returned.
func (d *runningDaemon) exited() bool {
	select {
	case <-d.done:
		return true
	default:
		return false
	}
}

// startDaemon runs a daemon on cfg with the suite's short periods; timings, when not nil,
// replace the provider's.
func (e *env) startDaemon(cfg *config.File, timings *vspherehatchery.Timings) *runningDaemon {
	e.t.Helper()
	if err := cfg.Validate(); err != nil {
		e.t.Fatalf("scenario configuration is invalid: %v", err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		e.t.Fatal(err)
	}
	tm := vspherehatchery.Timings{
		Cleanup:          100 * time.Millisecond,
		FinishedGrace:    100 * time.Millisecond,
		GuestReady:       3 * time.Second,
		IP:               3 * time.Second,
		EnvProbe:         time.Second,
		EnvProbeEvery:    20 * time.Millisecond,
		TemplatePowerOff: 10 * time.Second,
		TemplateBuild:    20 * time.Second,
	}
	if timings != nil {
		tm = *timings
	}
	ctx, cancel := context.WithCancel(context.Background())
	d := &runningDaemon{name: cfg.Hatchery.VSphere.CommonConfiguration.Name, addr: ln.Addr().String(), cancel: cancel, done: make(chan struct{})}
	opts := []daemon.Option{
		daemon.WithListener(ln),
		daemon.WithHostname("faults-host"),
		daemon.WithClock(e.clock.Now),
		daemon.WithIntervals(hatchery.Intervals{
			Poll:         100 * time.Millisecond,
			ModelRefresh: 200 * time.Millisecond,
			Heartbeat:    200 * time.Millisecond,
			SigninRetry:  100 * time.Millisecond,
			CDNRetry:     100 * time.Millisecond,
			CallDeadline: 3 * time.Second,
			PoolDeadline: 3 * time.Second,
		}),
		daemon.WithTick(fastTick),
		// Simulated workers power their VMs off behind the hatchery's back, as real guests
		// do: the inventory must notice within the suite's patience, not in 30 s.
		daemon.WithInventory(vsphere.InventoryOptions{PollInterval: 100 * time.Millisecond}),
		daemon.WithProvider(daemon.NewVSphereProvider(daemon.VSphereProviderOptions{Timings: tm})),
	}
	logger := quietLogger(e.t)
	go func() {
		defer close(d.done)
		d.err = daemon.Run(ctx, cfg, logger, opts...)
	}()
	e.daemons = append(e.daemons, d)
	return d
}

// queueJobs queues the scenario's job mix: v1 jobs on a v1 model whose template the
// hatchery builds, and v2 jobs on the debian12 template.
func (e *env) queueJobs(v1, v2 int) {
	if v1 == 0 {
		v1 = 2
	}
	if v2 == 0 {
		v2 = 4
	}
	if v1 > 0 {
		e.h.API.AddV1Model(cdssim.V1Model{
			Name: "debian12-v1", Type: "vsphere", NeedRegistration: true,
			ModelVirtualMachine: cdssim.VirtualMachineModel{
				Image: "debian12", User: "cds", Password: "guest-secret",
				Cmd: "./worker", PostCmd: "sudo shutdown -h now",
			},
		})
	}
	for i := range max(v1, 0) {
		e.v1Jobs = append(e.v1Jobs, e.h.API.AddV1Job(cdssim.V1Job{
			ProjectKey: "PROJ", WorkflowName: "wf", JobName: "build-" + strconv.Itoa(i+1),
			Requirements: []cdssim.Requirement{{Name: "model", Type: "model", Value: "shared.infra/debian12-v1"}},
		}))
	}
	for i := range max(v2, 0) {
		e.v2Jobs = append(e.v2Jobs, e.h.API.AddV2Job(cdssim.V2RunJob{ProjectKey: "PROJ", WorkflowName: "wf", RunNumber: int64(i + 1)}, debian12Model))
	}
	e.completer.serve(e.ctx, e.jobKeys())
}

// jobKeys are the scenario's jobs as "v1:<id>" and "v2:<uuid>".
func (e *env) jobKeys() map[string]bool {
	keys := map[string]bool{}
	for _, id := range e.v1Jobs {
		keys["v1:"+strconv.FormatInt(id, 10)] = true
	}
	for _, id := range e.v2Jobs {
		keys["v2:"+id] = true
	}
	return keys
}

func runKey(r cdssim.WorkerRun) string {
	if r.RunJobID != "" {
		return "v2:" + r.RunJobID
	}
	return "v1:" + strconv.FormatInt(r.JobID, 10)
}

// succeeded counts the scenario's jobs in status Success.
func (e *env) succeeded() int {
	n := 0
	for _, id := range e.v1Jobs {
		if e.h.API.V1JobStatus(id) == cdssim.StatusSuccess {
			n++
		}
	}
	for _, id := range e.v2Jobs {
		if e.h.API.V2JobStatus(id) == cdssim.StatusSuccess {
			n++
		}
	}
	return n
}

// unserved describes the jobs not in status Success.
func (e *env) unserved() string {
	var out []string
	for _, id := range e.v1Jobs {
		if st, _ := e.h.API.V1Job(id); st.Status != cdssim.StatusSuccess {
			out = append(out, fmt.Sprintf("v1 job %d %s (booked %d times)", id, st.Status, st.BookCount))
		}
	}
	for _, id := range e.v2Jobs {
		if st, _ := e.h.API.V2Job(id); st.Job.Status != cdssim.StatusSuccess {
			out = append(out, fmt.Sprintf("v2 job %s %s (taken %d times)", id, st.Job.Status, st.TakeCount))
		}
	}
	return strings.Join(out, ", ")
}

// tally counts the jobs served exactly once and the jobs released at least once, and
// records a problem for every job with more than one worker or neither served nor back in
// the queue.
func (e *env) tally() (served, released int) {
	runs := map[string][]string{}
	for _, r := range e.h.API.WorkerRuns() {
		if !r.RegisterOnly {
			runs[runKey(r)] = append(runs[runKey(r)], r.Name)
		}
	}
	region := e.h.Region
	check := func(key, status string, releases int) {
		if releases > 0 {
			released++
		}
		workers := runs[key]
		switch {
		case len(workers) > 1:
			e.problem("job %s: %d workers launched (%v), want one", key, len(workers), workers)
		case status == cdssim.StatusSuccess && len(workers) == 1:
			served++
		case status == cdssim.StatusSuccess:
			e.problem("job %s succeeded without a worker of the hatchery", key)
		case status == cdssim.StatusWaiting || status == cdssim.StatusFail:
			// Released: back in the queue, or failed after its attempts.
		default:
			e.problem("job %s left in status %s", key, status)
		}
	}
	for _, id := range e.v1Jobs {
		st, _ := e.h.API.V1Job(id)
		path := "/queue/workflows/" + strconv.FormatInt(id, 10) + "/book"
		check("v1:"+strconv.FormatInt(id, 10), st.Status, len(e.h.API.RequestsTo(http.MethodDelete, path)))
	}
	for _, id := range e.v2Jobs {
		st, _ := e.h.API.V2Job(id)
		path := "/v2/queue/" + region + "/job/" + id + "/hatchery/take"
		check("v2:"+id, st.Job.Status, len(e.h.API.RequestsTo(http.MethodDelete, path)))
	}
	return served, released
}

// completer lets the held simulated workers of the scenario's jobs finish once the
// hatchery has sent a few heartbeats since they started (a job takes a while and the
// hatchery's loops see its VM, as in production); the probe's workers stay held until the
// probe lets them go.
type completer struct {
	api      *cdssim.Server
	listings func() int
	mu       sync.Mutex
	cancel   context.CancelFunc
	done     chan struct{}
}

// jobListings is how many heartbeats (200 ms apart) a worker lives through before its job
// ends.
const jobListings = 4

func newCompleter(api *cdssim.Server) *completer {
	return &completer{api: api, listings: func() int { return len(api.Heartbeats()) }}
}

// serve (re)starts completing the workers of the jobs in keys.
func (c *completer) serve(ctx context.Context, keys map[string]bool) {
	c.stop()
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	c.mu.Lock()
	c.cancel, c.done = cancel, done
	c.mu.Unlock()
	go func() {
		defer close(done)
		seen := map[string]int{} // worker -> listings when first seen running
		tick := time.NewTicker(25 * time.Millisecond)
		defer tick.Stop()
		for {
			for _, r := range c.api.WorkerRuns() {
				if r.RegisterOnly || r.Err != nil || r.Finished || !keys[runKey(r)] {
					continue
				}
				at, ok := seen[r.Name]
				if !ok {
					seen[r.Name] = c.listings()
					continue
				}
				if c.listings() >= at+jobListings {
					c.api.CompleteWorker(r.Name)
				}
			}
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
		}
	}()
}

func (c *completer) stop() {
	c.mu.Lock()
	cancel, done := c.cancel, c.done
	c.cancel, c.done = nil, nil
	c.mu.Unlock()
	if cancel != nil {
		cancel()
		<-done
	}
}

// vm is what the simulated vCenter holds of a VM.
type vm struct {
	Name          string
	Template      bool
	PowerState    string
	RawAnnotation string
	Annotation    vspherehatchery.Annotation
	HasAnnotation bool
	GuestIP       string
}

// vms reads every VM of the simulator with the simulator to itself.
func (e *env) vms() []vm {
	var out []vm
	m := e.h.VCenter.Model.Map()
	e.h.VCenter.Locked(func() {
		for _, obj := range m.All("VirtualMachine") {
			svm, ok := obj.(*simulator.VirtualMachine)
			if !ok {
				continue
			}
			sctx := &simulator.Context{Context: context.Background(), Map: m}
			var v vm
			sctx.WithLock(svm, func() {
				v.Name = svm.Name
				v.PowerState = string(svm.Runtime.PowerState)
				if svm.Config != nil {
					v.Template = svm.Config.Template
					v.RawAnnotation = svm.Config.Annotation
				}
				if svm.Guest != nil {
					v.GuestIP = svm.Guest.IpAddress
				}
			})
			out = append(out, v)
		}
	})
	for i := range out {
		out[i].Annotation, out[i].HasAnnotation = vspherehatchery.ParseAnnotation(out[i].RawAnnotation)
	}
	return out
}

// leftovers are the VMs that should be gone once cleanup has passed: every VM but the
// templates, the ready (powered-off) provisioned VMs of the hatcheries, the plain VMs and
// the VMs the scenario planted.
func (e *env) leftovers() []vm {
	var out []vm
	for _, v := range e.vms() {
		idleProvisioned := strings.HasPrefix(v.Name, vspherehatchery.ProvisionPrefix) && v.Annotation.Provisioning &&
			v.PowerState == "poweredOff" && slices.Contains(e.owners, v.Annotation.HatcheryName)
		if v.Template || idleProvisioned || e.planted[v.Name] || strings.HasPrefix(v.Name, simenv.PlainVMPrefix) {
			continue
		}
		out = append(out, v)
	}
	return out
}

// duplicateIPs lists the addresses seen on more than one VM (annotation or guest IP).
func (e *env) duplicateIPs() map[string][]string {
	by := map[string][]string{}
	for _, v := range e.vms() {
		if v.Template {
			continue
		}
		seen := map[string]bool{}
		for _, ip := range []string{v.Annotation.IPAddress, v.GuestIP} {
			if ip != "" && !seen[ip] {
				seen[ip] = true
				by[ip] = append(by[ip], v.Name)
			}
		}
	}
	dup := map[string][]string{}
	for ip, names := range by {
		if len(names) > 1 {
			dup[ip] = names
		}
	}
	return dup
}

// probeIPs proves that n addresses of the iprange can still be handed out: n held v2 jobs
// must run at once. leaked counts the addresses that cannot; held those that can only once
// the reservation TTL has passed (the clock is advanced past it to tell them apart). The
// probe's workers then finish and their VMs must go.
func (e *env) probeIPs(n int) (leaked, held int) {
	e.t.Helper()
	var ids []string
	for i := range n {
		ids = append(ids, e.h.API.AddV2Job(cdssim.V2RunJob{ProjectKey: "PROBE", WorkflowName: "ip-probe", RunNumber: int64(i + 1)}, debian12Model))
	}
	first := e.probeRound(ids)
	best := first
	if first < n {
		e.clock.Advance(vspherehatchery.IPReservationTTL + time.Minute)
		best = e.probeRound(ids)
		for _, v := range e.vms() {
			if v.HasAnnotation && v.Annotation.IPAddress != "" {
				e.t.Logf("VM at the end of the probe: %s (%s, template %v) holds %s", v.Name, v.PowerState, v.Template, v.Annotation.IPAddress)
			}
		}
	}
	for _, r := range e.probeWorkers(ids) {
		e.h.API.CompleteWorker(r.Name)
	}
	keys := e.jobKeys()
	for _, id := range ids {
		keys["v2:"+id] = true
	}
	e.completer.serve(e.ctx, keys)
	if best == n {
		e.wait("the probe jobs to succeed and their VMs to go", func() bool {
			for _, id := range ids {
				if e.h.API.V2JobStatus(id) != cdssim.StatusSuccess {
					return false
				}
			}
			return len(e.leftovers()) == 0
		})
	}
	return n - best, best - first
}

// probeWorkers are the running workers of the probe jobs.
func (e *env) probeWorkers(ids []string) []cdssim.WorkerRun {
	var out []cdssim.WorkerRun
	for _, r := range e.h.API.WorkerRuns() {
		if r.Err == nil && !r.Finished && slices.Contains(ids, r.RunJobID) {
			out = append(out, r)
		}
	}
	return out
}

// probeRound waits until every probe job runs, or until each one without a worker has been
// waiting and considered three more times by the hatchery (and refused), and returns how
// many run.
func (e *env) probeRound(ids []string) int {
	fetches := func(id string) int {
		return len(e.h.API.RequestsTo(http.MethodGet, "/v2/queue/"+e.h.Region+"/job/"+id))
	}
	base := map[string]int{}
	for _, id := range ids {
		base[id] = fetches(id)
	}
	running := 0
	e.wait("the probe jobs to run or be refused", func() bool {
		workers := e.probeWorkers(ids)
		running = len(workers)
		for _, id := range ids {
			if slices.ContainsFunc(workers, func(r cdssim.WorkerRun) bool { return r.RunJobID == id }) {
				continue
			}
			// Not running: it must be back in the queue and refused three more times.
			if e.h.API.V2JobStatus(id) != cdssim.StatusWaiting || fetches(id) < base[id]+3 {
				return false
			}
		}
		return true
	})
	return running
}

// goroutines returns the IDs of the live goroutines.
func goroutines() map[string]bool {
	ids := map[string]bool{}
	for _, g := range goroutineStacks() {
		ids[goroutineID(g)] = true
	}
	return ids
}

func goroutineStacks() []string {
	buf := make([]byte, 1<<20)
	for {
		n := runtimeStack(buf)
		if n < len(buf) {
			return strings.Split(strings.TrimSpace(string(buf[:n])), "\n\n")
		}
		buf = make([]byte, 2*len(buf))
	}
}

func goroutineID(stack string) string {
	head, _, _ := strings.Cut(stack, " [")
	return head
}

// processWide are goroutines started once per process by libraries, not by a daemon.
var processWide = []string{
	"go.opencensus.io/stats/view.(*worker).start",
	"testing.(*T).Run",
	"testing.tRunner",
	"os/signal.",
}

// goroutinesLeft waits, up to a bound, for the goroutines started since before to end,
// and returns the stacks of those still there.
func goroutinesLeft(before map[string]bool) []string {
	deadline := time.NewTimer(10 * time.Second)
	defer deadline.Stop()
	retry := time.NewTicker(20 * time.Millisecond)
	defer retry.Stop()
	for {
		var left []string
		for _, g := range goroutineStacks() {
			if before[goroutineID(g)] || slices.ContainsFunc(processWide, func(f string) bool { return strings.Contains(g, f) }) {
				continue
			}
			left = append(left, g)
		}
		if len(left) == 0 {
			return nil
		}
		select {
		case <-deadline.C:
			return left
		case <-retry.C:
		}
	}
}

// quietLogger logs to the test from Info up: the debug lines of a daemon polling every
// 100 ms would bury a failure.
func quietLogger(t *testing.T) *log.Logger {
	testing := log.NewTestingWrapper(t)
	return log.NewWithFactory(func() log.Wrapper { return quietWrapper{testing()} })
}

type quietWrapper struct{ log.Wrapper }

func (quietWrapper) GetLevel() log.Level           { return log.LevelInfo }
func (quietWrapper) Debugf(string, ...interface{}) {}
