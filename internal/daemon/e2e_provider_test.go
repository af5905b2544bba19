package daemon

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/vmware/govmomi/find"
	"github.com/vmware/govmomi/simulator"
	"github.com/vmware/govmomi/vim25/types"

	"github.com/hatchery-vsphere/hatchery-vsphere/internal/cds"
	"github.com/hatchery-vsphere/hatchery-vsphere/internal/cdssim"
	"github.com/hatchery-vsphere/hatchery-vsphere/internal/config"
	"github.com/hatchery-vsphere/hatchery-vsphere/internal/hatchery"
	"github.com/hatchery-vsphere/hatchery-vsphere/internal/vspherehatchery"
)

// End-to-end tests of the vSphere provider through the real wiring (issue 4): a daemon (or
// two) on one simulated vCenter and one simulated CDS API.

// debian12Model is a v2 model cloning the simulator's debian12 template (2 vCPUs, 4096 MB).
var debian12Model = cdssim.V2WorkerModel{
	Name: "debian12-model", Type: "vsphere", OSArch: "linux/amd64",
	Spec: cdssim.V2ModelSpec{Image: "debian12", Username: "cds", Password: "guest-secret"},
}

// providerOptions are the harness options plus a provisioning pass every 100 ms (the
// configuration key is in whole seconds).
func providerOptions(h *Harness) []Option {
	return append(h.Options(), WithTick(func(name string, d time.Duration) (<-chan time.Time, func()) {
		switch name {
		case "register":
			d = 200 * time.Millisecond
		case "vsphere-provisioning":
			d = 100 * time.Millisecond
		}
		t := time.NewTicker(d)
		return t.C, t.Stop
	}))
}

// providerConfig is the harness configuration with one VM deletion at a time.
func providerConfig(h *Harness) *config.File {
	cfg := h.Config()
	serialDeletions(cfg)
	return cfg
}

// serialDeletions works around a data race inside vcsim (govmomi v0.56.0): a destroy task
// reads the datastore object without its lock (Datastore.resolve, from the VM files
// deletion it starts) while another destroy writes the datastore's VM list
// (UnregisterVM). Two destroys at once make -race fail the test.
func serialDeletions(cfg *config.File) {
	cfg.Hatchery.VSphere.MaxConcurrentDeletions = 1
}

// simVM is what the simulated vCenter holds of a VM, read without a SOAP call.
type simVM struct {
	Name       string
	Template   bool
	PowerState types.VirtualMachinePowerState
	NumCPU     int32
	MemoryMB   int32
	Annotation vspherehatchery.Annotation
	// HasAnnotation is false for VMs without a CDS annotation.
	HasAnnotation bool
}

func (v simVM) ownedBy(hatchery string) bool {
	return v.HasAnnotation && v.Annotation.HatcheryName == hatchery
}

func (v simVM) poweredOn() bool { return v.PowerState == types.VirtualMachinePowerStatePoweredOn }

// isWorker tells whether v is a worker VM of the hatchery: not a template, not a CDS-built
// template, not an idle provisioned VM.
func (v simVM) isWorker(hatchery string) bool {
	return !v.Template && v.ownedBy(hatchery) && !v.Annotation.Model && !strings.HasPrefix(v.Name, vspherehatchery.ProvisionPrefix)
}

// isIdleProvisioned tells whether v is a ready provisioned VM of the hatchery (powered off).
func (v simVM) isIdleProvisioned(hatchery string) bool {
	return !v.Template && v.ownedBy(hatchery) && v.Annotation.Provisioning &&
		strings.HasPrefix(v.Name, vspherehatchery.ProvisionV2Prefix) &&
		v.PowerState == types.VirtualMachinePowerStatePoweredOff
}

// simVMs reads every VM of the simulator while it is idle (no SOAP call or task runs): a
// clone task fills in its new VM's fields after the VM is registered.
func simVMs(h *Harness) []simVM {
	m := h.VCenter.Model.Map()
	var out []simVM
	h.VCenter.Locked(func() {
		for _, obj := range m.All("VirtualMachine") {
			vm, ok := obj.(*simulator.VirtualMachine)
			if !ok {
				continue
			}
			v := simVM{Name: vm.Name, PowerState: vm.Runtime.PowerState}
			var annotation string
			if vm.Config != nil {
				v.Template = vm.Config.Template
				v.NumCPU = vm.Config.Hardware.NumCPU
				v.MemoryMB = vm.Config.Hardware.MemoryMB
				annotation = vm.Config.Annotation
			}
			v.Annotation, v.HasAnnotation = vspherehatchery.ParseAnnotation(annotation)
			out = append(out, v)
		}
	})
	return out
}

func findSimVM(h *Harness, name string) (simVM, bool) {
	for _, v := range simVMs(h) {
		if v.Name == name {
			return v, true
		}
	}
	return simVM{}, false
}

// idleProvisioned lists the ready provisioned VMs of a hatchery.
func idleProvisioned(h *Harness, hatchery string) []string {
	var names []string
	for _, v := range simVMs(h) {
		if v.isIdleProvisioned(hatchery) {
			names = append(names, v.Name)
		}
	}
	return names
}

// readyForReuse tells whether the hatchery itself (not only the simulator) sees the VM as
// an idle provisioned VM it may hand to a job: the simulator shows the power-off a moment
// before the provisioning operation is over, and a job queued in between rightly gets a
// fresh clone.
func readyForReuse(t *testing.T, d *runningDaemon, name string) bool {
	t.Helper()
	_, _, body := get(t, "http://"+d.addr+"/mon/vms")
	var dash struct {
		VMs []struct {
			Name  string `json:"name"`
			State string `json:"state"`
		} `json:"vms"`
	}
	if err := json.Unmarshal(body, &dash); err != nil {
		t.Fatalf("/mon/vms: %v: %s", err, body)
	}
	for _, v := range dash.VMs {
		if v.Name == name {
			return v.State == string(hatchery.VMStateIdle)
		}
	}
	return false
}

// workerVMs lists the worker VMs of a hatchery (powered on or not).
func workerVMs(h *Harness, hatchery string) []string {
	var names []string
	for _, v := range simVMs(h) {
		if v.isWorker(hatchery) {
			names = append(names, v.Name)
		}
	}
	return names
}

// runningWorker returns the simulated worker of a v2 job once it has signed in and is
// running (not finished), and fails the test if the worker was refused.
func runningWorker(t *testing.T, h *Harness, jobID string) (cdssim.WorkerRun, bool) {
	t.Helper()
	r, ok := workerRun(h, func(r cdssim.WorkerRun) bool { return r.RunJobID == jobID || (r.Err != nil && !r.RegisterOnly) })
	if !ok {
		return cdssim.WorkerRun{}, false
	}
	if r.Err != nil {
		t.Fatalf("worker %q refused: %v", r.Name, r.Err)
	}
	return r, !r.Finished
}

// jobInfoFetches counts the times a hatchery read the details of a v2 job: each read is
// one consideration of the job (eligibility, resources, capacity).
func jobInfoFetches(h *Harness, jobID string) int {
	return len(h.API.RequestsTo(http.MethodGet, "/v2/queue/"+h.Region+"/job/"+jobID))
}

// workersLine returns the values of the Workers lines of a daemon's live /mon/status.
func workersLine(t *testing.T, d *runningDaemon) []string {
	t.Helper()
	code, _, body := get(t, "http://"+d.addr+"/mon/status")
	var status cds.MonitoringStatus
	if err := json.Unmarshal(body, &status); err != nil {
		t.Fatalf("/mon/status = %d %s: %v", code, body, err)
	}
	var values []string
	for _, l := range status.Lines {
		if l.Component == "Workers" {
			values = append(values, l.Value)
		}
	}
	return values
}

func withProvisioning(cfg *config.File, image string, n int) {
	cfg.Hatchery.VSphere.WorkerProvisioning = []config.WorkerProvisioning{{ModelVMWare: image, Number: n}}
}

func TestV2JobWithAFlavorRunsOnAProvisionedVMResizedToIt(t *testing.T) {
	h := newTestHarness(t, HarnessOptions{HoldJobs: true})
	cfg := providerConfig(h)
	withProvisioning(cfg, "debian12", 1)
	cfg.Hatchery.VSphere.Flavors = []config.Flavor{
		{Name: "small", CPUs: 2, MemoryMB: 4096},
		{Name: "large", CPUs: 8, MemoryMB: 16384},
	}
	d := startDaemon(t, cfg, providerOptions(h)...)

	d.wait(t, h.API, "a provisioned VM ready (powered off)", func() bool {
		idle := idleProvisioned(h, h.Name)
		return len(idle) == 1 && readyForReuse(t, d, idle[0])
	})
	provisioned := idleProvisioned(h, h.Name)[0]
	clonesBefore := h.VCenter.CallCount("CloneVM_Task")

	jobID := h.API.AddV2Job(cdssim.V2RunJob{
		ProjectKey: "PROJ", WorkflowName: "wf", RunNumber: 1,
		Job: cdssim.V2JobSpec{RunsOn: cdssim.V2RunsOn{Model: debian12Model.Name, Flavor: "large"}},
	}, debian12Model)

	var run cdssim.WorkerRun
	d.wait(t, h.API, "the worker of the job to run", func() bool {
		var ok bool
		run, ok = runningWorker(t, h, jobID)
		return ok
	})
	vm, ok := findSimVM(h, run.Name)
	if !ok {
		t.Fatalf("no VM named after worker %q; VMs: %v", run.Name, h.VCenter.VMNames())
	}
	// The original's annotation is kept on a reused VM: it still names the provisioned VM.
	if !vm.Annotation.Provisioning || vm.Annotation.WorkerName != provisioned {
		t.Errorf("worker VM %q annotation = %+v, want the provisioned VM %q renamed", run.Name, vm.Annotation, provisioned)
	}
	if vmExists(h, provisioned) {
		t.Errorf("provisioned VM %q still exists under its provisioning name", provisioned)
	}
	if vm.NumCPU != 8 || vm.MemoryMB != 16384 || !vm.poweredOn() {
		t.Errorf("worker VM: %d vCPUs, %d MB, %s; want the large flavor (8 vCPUs, 16384 MB), powered on", vm.NumCPU, vm.MemoryMB, vm.PowerState)
	}
	// The pool may be refilled meanwhile (one clone), but no clone is named after the worker.
	if n := h.VCenter.CallCount("CloneVM_Task") - clonesBefore; n > 1 {
		t.Errorf("%d clones since the job was queued, want at most the pool refill", n)
	}
	st, _ := h.API.V2Job(jobID)
	var announced bool
	for _, info := range st.Infos {
		announced = announced || strings.Contains(info.Message, `will use flavor "large" (8 vCPUs, 16384 MB RAM)`)
	}
	if !announced {
		t.Errorf("job infos %+v do not announce the large flavor", st.Infos)
	}
	checkWorkerVM(t, h, run.Name, "cds")

	if !h.API.CompleteWorker(run.Name) {
		t.Fatalf("worker %q was not held", run.Name)
	}
	d.wait(t, h.API, "the job to succeed, its VM to be deleted and the pool refilled", func() bool {
		idle := idleProvisioned(h, h.Name)
		return h.API.V2JobStatus(jobID) == cdssim.StatusSuccess && !vmExists(h, run.Name) &&
			len(idle) == 1 && idle[0] != provisioned
	})
	if st, _ := h.API.V2Job(jobID); st.TakeCount != 1 {
		t.Errorf("job taken %d times, want 1", st.TakeCount)
	}
	if refill, _ := findSimVM(h, idleProvisioned(h, h.Name)[0]); refill.NumCPU != 2 || refill.MemoryMB != 4096 {
		t.Errorf("refilled provisioned VM has %d vCPUs, %d MB; want the template's 2 vCPUs, 4096 MB", refill.NumCPU, refill.MemoryMB)
	}
	checkNoProblems(t, h)
}

func TestJobWaitsForResourcePoolMemory(t *testing.T) {
	h := newTestHarness(t, HarnessOptions{})
	// 1 MB unreserved: not enough for the 4096 MB of the debian12 template.
	if err := h.VCenter.SetResourcePoolRuntime(400_000, 1<<20); err != nil {
		t.Fatal(err)
	}
	d := startDaemon(t, providerConfig(h), providerOptions(h)...)

	jobID := h.API.AddV2Job(cdssim.V2RunJob{ProjectKey: "PROJ", WorkflowName: "wf", RunNumber: 1}, debian12Model)
	d.wait(t, h.API, "the job to be considered three times", func() bool {
		return jobInfoFetches(h, jobID) >= 3
	})
	st, _ := h.API.V2Job(jobID)
	if st.TakeCount != 0 || st.Job.Status != cdssim.StatusWaiting {
		t.Errorf("without memory: job %s taken %d times, want waiting and never taken", st.Job.Status, st.TakeCount)
	}
	if n := h.VCenter.CallCount("CloneVM_Task"); n != 0 {
		t.Errorf("without memory: %d clones, want 0", n)
	}

	if err := h.VCenter.SetResourcePoolRuntime(400_000, 1<<40); err != nil {
		t.Fatal(err)
	}
	d.wait(t, h.API, "the job to succeed once memory is back", func() bool {
		return h.API.V2JobStatus(jobID) == cdssim.StatusSuccess
	})
	if st, _ := h.API.V2Job(jobID); st.TakeCount != 1 {
		t.Errorf("job taken %d times, want 1", st.TakeCount)
	}
	checkNoProblems(t, h)
}

func TestJobWaitsForMaxCPUs(t *testing.T) {
	h := newTestHarness(t, HarnessOptions{HoldJobs: true})
	cfg := providerConfig(h)
	// One debian12 worker (2 vCPUs) fits, a second one does not.
	cfg.Hatchery.VSphere.MaxCPUs = 3
	d := startDaemon(t, cfg, providerOptions(h)...)

	first := h.API.AddV2Job(cdssim.V2RunJob{ProjectKey: "PROJ", WorkflowName: "wf", RunNumber: 1}, debian12Model)
	var run1 cdssim.WorkerRun
	d.wait(t, h.API, "the first job's worker to run", func() bool {
		var ok bool
		run1, ok = runningWorker(t, h, first)
		return ok
	})
	second := h.API.AddV2Job(cdssim.V2RunJob{ProjectKey: "PROJ", WorkflowName: "wf", RunNumber: 2}, debian12Model)
	d.wait(t, h.API, "the second job to be considered three times", func() bool {
		return jobInfoFetches(h, second) >= 3
	})
	st, _ := h.API.V2Job(second)
	if st.TakeCount != 0 || st.Job.Status != cdssim.StatusWaiting {
		t.Errorf("beyond maxCpus: second job %s taken %d times, want waiting and never taken", st.Job.Status, st.TakeCount)
	}
	if n := h.VCenter.CallCount("CloneVM_Task"); n != 1 {
		t.Errorf("beyond maxCpus: %d clones, want 1 (the first job's)", n)
	}

	// The first worker ends and its VM powers off: its vCPUs are free again.
	if !h.API.CompleteWorker(run1.Name) {
		t.Fatalf("worker %q was not held", run1.Name)
	}
	var run2 cdssim.WorkerRun
	d.wait(t, h.API, "the second job's worker to run", func() bool {
		var ok bool
		run2, ok = runningWorker(t, h, second)
		return ok
	})
	h.API.CompleteWorker(run2.Name)
	d.wait(t, h.API, "both jobs to succeed", func() bool {
		return h.API.V2JobStatus(first) == cdssim.StatusSuccess && h.API.V2JobStatus(second) == cdssim.StatusSuccess
	})
	checkNoProblems(t, h)
}

func TestThirtyJobsNeverExceedMaxWorkerAndLeaveNoVM(t *testing.T) {
	const jobs, maxWorker = 30, 5
	h := newTestHarness(t, HarnessOptions{JobDuration: 100 * time.Millisecond})
	cfg := providerConfig(h)
	p := &cfg.Hatchery.VSphere.CommonConfiguration.Provision
	p.MaxWorker = maxWorker
	p.MaxConcurrentProvisioning = maxWorker
	d := startDaemon(t, cfg, providerOptions(h)...)

	ids := make([]string, 0, jobs)
	for i := range jobs {
		ids = append(ids, h.API.AddV2Job(cdssim.V2RunJob{ProjectKey: "PROJ", WorkflowName: "wf", RunNumber: int64(i + 1)}, debian12Model))
	}
	var maxVMs, maxRunning int
	d.wait(t, h.API, fmt.Sprintf("the %d jobs to succeed", jobs), func() bool {
		running, finished := 0, map[string]bool{}
		for _, r := range h.API.WorkerRuns() {
			switch {
			case r.Finished:
				finished[r.Name] = true
			case r.Err == nil && !r.RegisterOnly:
				running++
			}
		}
		// A worker reports its job done, then its guest shuts the VM down (the post
		// command): for that moment its slot is free while its VM is still on, as with a
		// real worker. Those VMs are not counted.
		on := 0
		for _, v := range simVMs(h) {
			if v.isWorker(h.Name) && v.poweredOn() && !finished[v.Name] {
				on++
			}
		}
		maxVMs, maxRunning = max(maxVMs, on), max(maxRunning, running)
		return h.API.V2JobCounts()[cdssim.StatusSuccess] == jobs
	})
	t.Logf("at most %d powered-on worker VMs and %d running workers at once", maxVMs, maxRunning)
	if maxVMs > maxWorker || maxRunning > maxWorker {
		t.Errorf("at most %d powered-on worker VMs and %d running workers seen at once, want <= %d", maxVMs, maxRunning, maxWorker)
	}
	if maxVMs < 2 {
		t.Errorf("at most %d worker VM powered on at once: the jobs did not run concurrently", maxVMs)
	}
	for _, id := range ids {
		if st, _ := h.API.V2Job(id); st.TakeCount != 1 {
			t.Errorf("job %s taken %d times, want 1", id, st.TakeCount)
		}
	}
	if n := h.WorkersLaunched(); n != jobs {
		t.Errorf("workers launched = %d, want %d", n, jobs)
	}

	d.wait(t, h.API, "every worker VM to be deleted", func() bool { return len(workerVMs(h, h.Name)) == 0 })
	for _, v := range simVMs(h) {
		if !v.Template {
			t.Errorf("VM %q left behind (annotation %+v)", v.Name, v.Annotation)
		}
	}
	checkNoProblems(t, h)
}

func TestTwoHatcheriesSharingADatacenterKeepToTheirOwnVMs(t *testing.T) {
	const nameA, nameB = "hatchery-a", "hatchery-b"
	h := newTestHarness(t, HarnessOptions{Name: nameA, HoldJobs: true})
	// One worker at a time each: with two jobs, each hatchery runs one, which proves that
	// neither counts the other's worker against its maxWorker.
	oneWorker := func(cfg *config.File) {
		p := &cfg.Hatchery.VSphere.CommonConfiguration.Provision
		p.MaxWorker, p.MaxConcurrentProvisioning, p.MaxConcurrentRegistering = 1, 1, 1
		withProvisioning(cfg, "debian12", 1)
	}
	cfgA := providerConfig(h)
	oneWorker(cfgA)
	// B signs in with its own v2 consumer only (the simulated v1 consumer is A's) and keeps
	// its finished workers' VMs for finishedWorkerGracePeriod (3 minutes): A, which deletes
	// its own 100 ms after their power-off, must not delete B's meanwhile.
	cfgB := h.Config()
	serialDeletions(cfgB)
	oneWorker(cfgB)
	cb := &cfgB.Hatchery.VSphere.CommonConfiguration
	cb.Name = nameB
	cb.API.Token = ""
	cb.API.TokenV2 = h.API.NewHatcheryConsumerToken(nameB)

	dA := startDaemon(t, cfgA, providerOptions(h)...)
	dB := startDaemon(t, cfgB, append(providerOptions(h), WithProvider(NewVSphereProvider(VSphereProviderOptions{
		Timings: vspherehatchery.Timings{Cleanup: 100 * time.Millisecond, EnvProbeEvery: 20 * time.Millisecond},
	})))...)

	pools := map[string]string{}
	dA.wait(t, h.API, "each hatchery to have its own provisioned VM", func() bool {
		a, b := idleProvisioned(h, nameA), idleProvisioned(h, nameB)
		if len(a) != 1 || len(b) != 1 || len(h.API.Hatcheries()) != 2 {
			return false
		}
		pools[nameA], pools[nameB] = a[0], b[0]
		return true
	})

	first := h.API.AddV2Job(cdssim.V2RunJob{ProjectKey: "PROJ", WorkflowName: "wf", RunNumber: 1}, debian12Model)
	second := h.API.AddV2Job(cdssim.V2RunJob{ProjectKey: "PROJ", WorkflowName: "wf", RunNumber: 2}, debian12Model)
	runs := map[string]cdssim.WorkerRun{} // by hatchery
	dA.wait(t, h.API, "both jobs' workers to run", func() bool {
		r1, ok1 := runningWorker(t, h, first)
		r2, ok2 := runningWorker(t, h, second)
		if !ok1 || !ok2 {
			return false
		}
		runs[r1.HatcheryName], runs[r2.HatcheryName] = r1, r2
		return true
	})
	if len(runs) != 2 {
		t.Fatalf("both jobs run by the same hatchery %v, want one each", runs)
	}
	for hatchery, run := range runs {
		vm, ok := findSimVM(h, run.Name)
		if !ok {
			t.Fatalf("no VM for worker %q of %s", run.Name, hatchery)
		}
		// Its own VM: a fresh clone, or its own provisioned VM, never the other's.
		if !vm.ownedBy(hatchery) || (vm.Annotation.Provisioning && vm.Annotation.WorkerName != pools[hatchery]) {
			t.Errorf("worker %q of %s runs in a VM annotated %+v, want its own (provisioned VM %q or a clone)", run.Name, hatchery, vm.Annotation, pools[hatchery])
		}
	}
	for hatchery, d := range map[string]*runningDaemon{nameA: dA, nameB: dB} {
		if lines := workersLine(t, d); len(lines) == 0 || lines[0] != "1/1" {
			t.Errorf("%s Workers status line = %v, want 1/1 (its own worker only)", hatchery, lines)
		}
	}

	// B's worker ends first; its VM stays, powered off, for B's 3-minute grace period.
	runB, runA := runs[nameB], runs[nameA]
	h.API.CompleteWorker(runB.Name)
	dA.wait(t, h.API, "B's worker VM to be powered off", func() bool {
		vm, ok := findSimVM(h, runB.Name)
		return ok && !vm.poweredOn()
	})
	h.API.CompleteWorker(runA.Name)
	// A deletes its own finished VM shortly after its power-off, in a pass that also sees
	// B's older one.
	dA.wait(t, h.API, "A's worker VM to be deleted and both pools refilled", func() bool {
		return !vmExists(h, runA.Name) && len(idleProvisioned(h, nameA)) == 1 && len(idleProvisioned(h, nameB)) == 1
	})
	if !vmExists(h, runB.Name) {
		t.Errorf("B's finished worker VM %q was deleted before B's grace period", runB.Name)
	}
	if st := h.API.V2JobCounts(); st[cdssim.StatusSuccess] != 2 {
		t.Errorf("job statuses %v, want 2 successes", st)
	}
	checkNoProblems(t, h)
	if err := dA.stop(); err != nil {
		t.Errorf("A: Run after cancel = %v", err)
	}
	if err := dB.stop(); err != nil {
		t.Errorf("B: Run after cancel = %v", err)
	}
}

// originalAnnotation is the example of protocol spec §18.11 with this hatchery's name and the
// given worker name, as the original hatchery writes it.
func originalAnnotation(hatchery, worker string, provisioning bool) string {
	if provisioning {
		return `{"hatchery_name":"` + hatchery + `","worker_name":"` + worker + `","provisioning":true,` +
			`"worker_model_path":"grp/debian12","vmware_model_path":"debian12","worker_model_last_modified":"1717000000",` +
			`"created":"2025-01-10T08:00:00.1Z"}`
	}
	return `{"hatchery_name":"` + hatchery + `","worker_name":"` + worker + `","worker_model_path":"grp/debian12",` +
		`"vmware_model_path":"debian12","worker_model_last_modified":"1717000000","created":"2025-01-10T08:00:00.1Z",` +
		`"job_id":"98765","ip_address":"10.0.0.12"}`
}

// cloneAsOriginal clones the debian12 template through govmomi into a VM carrying the
// annotation, powered on then off, as a VM the original hatchery left behind.
func cloneAsOriginal(t *testing.T, h *Harness, name, annotation string) {
	t.Helper()
	ctx := t.Context()
	c, err := h.VCenter.Client(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = c.Logout(context.WithoutCancel(ctx)) }()
	f := find.NewFinder(c.Client, false)
	dc, err := f.Datacenter(ctx, h.VCenter.Datacenter)
	if err != nil {
		t.Fatal(err)
	}
	f.SetDatacenter(dc)
	tpl, err := f.VirtualMachine(ctx, "debian12")
	if err != nil {
		t.Fatal(err)
	}
	folder, err := f.Folder(ctx, h.VCenter.Folder)
	if err != nil {
		t.Fatal(err)
	}
	pool, err := f.ResourcePool(ctx, h.VCenter.ResourcePool)
	if err != nil {
		t.Fatal(err)
	}
	poolRef := pool.Reference()
	task, err := tpl.Clone(ctx, folder, name, types.VirtualMachineCloneSpec{
		Location: types.VirtualMachineRelocateSpec{Pool: &poolRef},
		Config:   &types.VirtualMachineConfigSpec{Annotation: annotation},
		PowerOn:  true,
	})
	if err != nil {
		t.Fatalf("clone %q: %v", name, err)
	}
	if err := task.Wait(ctx); err != nil {
		t.Fatalf("clone %q: %v", name, err)
	}
	if err := h.VCenter.PowerOffVM(ctx, name); err != nil {
		t.Fatal(err)
	}
	if vm, ok := findSimVM(h, name); !ok || !vm.HasAnnotation {
		t.Fatalf("VM %q not created with its annotation", name)
	}
}

func TestVMsOfTheOriginalHatcheryAreAdoptedAndCleanedUp(t *testing.T) {
	h := newTestHarness(t, HarnessOptions{HoldJobs: true})
	const provisioned, finished = "provision-v2-calm-turing", "calm-hopper"
	cloneAsOriginal(t, h, provisioned, originalAnnotation(h.Name, provisioned, true))
	cloneAsOriginal(t, h, finished, originalAnnotation(h.Name, finished, false))
	clones := h.VCenter.CallCount("CloneVM_Task")

	cfg := providerConfig(h)
	withProvisioning(cfg, "debian12", 1)
	d := startDaemon(t, cfg, providerOptions(h)...)

	// The finished worker is deleted by a cleanup pass; the provisioning passes run as often
	// and have counted the adopted VM as the pool.
	d.wait(t, h.API, "the original's finished worker VM to be deleted", func() bool { return !vmExists(h, finished) })
	if !vmExists(h, provisioned) {
		t.Fatalf("the original's provisioned VM %q was deleted", provisioned)
	}
	if n := h.VCenter.CallCount("CloneVM_Task") - clones; n != 0 {
		t.Errorf("%d VMs provisioned besides the original's one, want 0", n)
	}

	jobID := h.API.AddV2Job(cdssim.V2RunJob{ProjectKey: "PROJ", WorkflowName: "wf", RunNumber: 1}, debian12Model)
	var run cdssim.WorkerRun
	d.wait(t, h.API, "the job's worker to run", func() bool {
		var ok bool
		run, ok = runningWorker(t, h, jobID)
		return ok
	})
	vm, ok := findSimVM(h, run.Name)
	if !ok || vm.Annotation.WorkerName != provisioned || vmExists(h, provisioned) {
		t.Errorf("worker %q runs in VM annotated %+v (found %v), want the original's provisioned VM %q renamed", run.Name, vm.Annotation, ok, provisioned)
	}
	h.API.CompleteWorker(run.Name)
	d.wait(t, h.API, "the job to succeed, its VM to be deleted and the pool refilled", func() bool {
		return h.API.V2JobStatus(jobID) == cdssim.StatusSuccess && !vmExists(h, run.Name) && len(idleProvisioned(h, h.Name)) == 1
	})
	checkNoProblems(t, h)
}

// Finished workers' VMs, powered off and waiting for finishedWorkerGracePeriod, hold no
// worker: they must not fill the pool as Pending and stop the spawns once there are
// maxConcurrentProvisioning of them.
func TestFinishedVMsWaitingForCleanupDoNotBlockSpawns(t *testing.T) {
	const jobs, provisioning = 6, 2
	h := newTestHarness(t, HarnessOptions{JobDuration: 50 * time.Millisecond})
	cfg := providerConfig(h)
	cfg.Hatchery.VSphere.CommonConfiguration.Provision.MaxConcurrentProvisioning = provisioning
	opts := append(providerOptions(h), WithProvider(NewVSphereProvider(VSphereProviderOptions{Timings: vspherehatchery.Timings{
		Cleanup:       100 * time.Millisecond,
		EnvProbeEvery: 20 * time.Millisecond,
		FinishedGrace: time.Hour, // the finished VMs stay for the whole test
	}})))
	d := startDaemon(t, cfg, opts...)
	for i := range jobs {
		h.API.AddV2Job(cdssim.V2RunJob{ProjectKey: "PROJ", WorkflowName: "wf", RunNumber: int64(i + 1)}, debian12Model)
	}
	d.wait(t, h.API, fmt.Sprintf("the %d jobs to succeed with their VMs kept", jobs), func() bool {
		return h.API.V2JobCounts()[cdssim.StatusSuccess] == jobs
	})
	off := 0
	for _, v := range simVMs(h) {
		if v.isWorker(h.Name) && !v.poweredOn() {
			off++
		}
	}
	if off < provisioning {
		t.Errorf("%d finished worker VMs kept, want at least %d for the test to mean anything", off, provisioning)
	}
	checkNoProblems(t, h)
}
