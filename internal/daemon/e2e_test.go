package daemon

import (
	"encoding/json"
	"net/http"
	"slices"
	"strings"
	"testing"

	"github.com/hatchery-vsphere/hatchery-vsphere/internal/cds"
	"github.com/hatchery-vsphere/hatchery-vsphere/internal/cdssim"
)

// vmExists tells whether the simulated vCenter still has a VM of that name.
func vmExists(h *Harness, name string) bool {
	return slices.Contains(h.VCenter.VMNames(), name)
}

// workerRun returns the simulated worker of a job, if one has been launched.
func workerRun(h *Harness, match func(cdssim.WorkerRun) bool) (cdssim.WorkerRun, bool) {
	for _, r := range h.API.WorkerRuns() {
		if match(r) {
			return r, true
		}
	}
	return cdssim.WorkerRun{}, false
}

func checkNoProblems(t *testing.T, h *Harness) {
	t.Helper()
	for _, err := range h.Problems() {
		t.Error(err)
	}
	// Without faults no launch is ambiguous: no VM is rolled back under a running worker.
	if n := h.VMsGoneUnderWorker(); n != 0 {
		t.Errorf("%d VMs deleted under their running worker", n)
	}
}

func TestV2JobRunsInAClonedVMThatIsDeletedAfterwards(t *testing.T) {
	h := newTestHarness(t, HarnessOptions{})
	cfg := h.Config()
	d := startDaemon(t, cfg, h.Options()...)

	model := cdssim.V2WorkerModel{
		Name: "debian12-model", Type: "vsphere", OSArch: "linux/amd64",
		Spec: cdssim.V2ModelSpec{Image: "debian12", Username: "cds", Password: "guest-secret"},
	}
	jobID := h.API.AddV2Job(cdssim.V2RunJob{ProjectKey: "PROJ", WorkflowName: "wf", RunNumber: 1}, model)

	d.wait(t, h.API, "the v2 job to succeed", func() bool {
		return h.API.V2JobStatus(jobID) == cdssim.StatusSuccess
	})
	run, ok := workerRun(h, func(r cdssim.WorkerRun) bool { return r.RunJobID == jobID })
	if !ok {
		t.Fatal("the job succeeded without a simulated worker")
	}
	if run.Err != nil {
		t.Fatalf("worker %q: %v", run.Name, run.Err)
	}
	if run.HatcheryName != h.Name || run.Config.Region != h.Region {
		t.Errorf("worker config: hatchery %q region %q", run.HatcheryName, run.Config.Region)
	}
	checkWorkerVM(t, h, run.Name, "debian12")

	// The power-off is counted once PowerOffVM has returned, which may be after cleanup
	// has already seen the VM off.
	d.wait(t, h.API, "the worker VM to be powered off and deleted", func() bool {
		return !vmExists(h, run.Name) && h.VMsPoweredOff() == 1
	})
	if st, _ := h.API.V2Job(jobID); st.TakeCount != 1 {
		t.Errorf("job taken %d times, want 1", st.TakeCount)
	}
	if n := h.WorkersLaunched(); n != 1 {
		t.Errorf("workers launched = %d, want 1", n)
	}
	checkNoProblems(t, h)
	checkOperatorViews(t, "http://"+d.addr)
	checkProviderRoutines(t, "http://"+d.addr)
	if err := d.stop(); err != nil {
		t.Fatalf("Run after cancel = %v", err)
	}
}

// checkOperatorViews checks, after a job went through, that what an operator looks at
// tells it: the lifecycle and call metrics of the spawn, the status page and its data.
func checkOperatorViews(t *testing.T, base string) {
	t.Helper()
	_, _, metrics := get(t, base+"/mon/metrics")
	for _, want := range []string{
		`cds_hatchery_vsphere_spawns_total{result="ok",service_name=`,
		`cds_hatchery_vsphere_clone_duration_seconds_count`,
		`cds_hatchery_vsphere_vcenter_calls_total{method="CloneVirtualMachine",result="ok"`,
		`cds_hatchery_cds_api_calls_total{endpoint="POST /v2/queue/{region}/job/{runJobID}/hatchery/take"`,
		`cds_hatchery_vsphere_deletions_total{reason=`,
		`cds_hatchery_vsphere_job_to_launch_seconds_count`,
		`cds_hatchery_vsphere_loop_last_success_timestamp_seconds{loop="cleanup"`,
	} {
		if !strings.Contains(string(metrics), want) {
			t.Errorf("/mon/metrics lacks %s", want)
		}
	}
	code, hdr, page := get(t, base+"/")
	if code != http.StatusOK || !strings.HasPrefix(hdr.Get("Content-Type"), "text/html") || !strings.Contains(string(page), "<table") {
		t.Errorf("status page: %d %q", code, hdr.Get("Content-Type"))
	}
	code, _, data := get(t, base+"/mon/vms")
	var dash struct {
		Hatchery string            `json:"hatchery"`
		Capacity []json.RawMessage `json:"capacity"`
	}
	if err := json.Unmarshal(data, &dash); code != http.StatusOK || err != nil || dash.Hatchery == "" || len(dash.Capacity) == 0 {
		t.Errorf("/mon/vms = %d %v: %s", code, err, data)
	}
}

// checkWorkerVM checks what the guest saw of the worker launch: the launch command of §17.4,
// and the model's guest credentials.
func checkWorkerVM(t *testing.T, h *Harness, vmName, wantUser string) {
	t.Helper()
	var launch bool
	for _, p := range h.VCenter.GuestPrograms() {
		if p.VMName != vmName || !slices.ContainsFunc(p.Env, func(kv string) bool { return strings.HasPrefix(kv, "CDS_CONFIG=") }) {
			continue
		}
		launch = true
		if p.ProgramPath != "/bin/echo" || !strings.HasPrefix(p.Arguments, "-n ;") {
			t.Errorf("worker launched as %q %q, want /bin/echo \"-n ;<script>\"", p.ProgramPath, p.Arguments)
		}
		if wantUser != "" && p.Username == "" {
			t.Errorf("worker launched without guest credentials")
		}
	}
	if !launch {
		t.Errorf("no worker launch seen in VM %q", vmName)
	}
}

func TestV1JobRegistersItsModelThenRunsInAVMThatIsDeletedAfterwards(t *testing.T) {
	h := newTestHarness(t, HarnessOptions{})
	cfg := h.Config()
	d := startDaemon(t, cfg, h.Options()...)

	modelID := h.API.AddV1Model(cdssim.V1Model{
		Name: "debian12-v1", Type: "vsphere", NeedRegistration: true,
		ModelVirtualMachine: cdssim.VirtualMachineModel{
			Image: "debian12", User: "cds", Password: "guest-secret",
			Cmd: "./worker", PostCmd: "sudo shutdown -h now",
		},
	})
	jobID := h.API.AddV1Job(cdssim.V1Job{
		ProjectKey: "PROJ", WorkflowName: "wf", JobName: "build",
		Requirements: []cdssim.Requirement{{Name: "model", Type: "model", Value: "shared.infra/debian12-v1"}},
	})

	d.wait(t, h.API, "the v1 job to succeed", func() bool {
		return h.API.V1JobStatus(jobID) == cdssim.StatusSuccess
	})
	reg, ok := workerRun(h, func(r cdssim.WorkerRun) bool { return r.RegisterOnly && r.ModelID == modelID })
	if !ok || reg.Err != nil {
		t.Errorf("register-only worker of the model: found %v, err %v", ok, reg.Err)
	}
	run, ok := workerRun(h, func(r cdssim.WorkerRun) bool { return r.JobID == jobID })
	if !ok {
		t.Fatal("the job succeeded without a simulated worker")
	}
	if run.Err != nil {
		t.Fatalf("worker %q: %v", run.Name, run.Err)
	}
	if run.Model != "shared.infra/debian12-v1" || run.HatcheryName != h.Name {
		t.Errorf("worker config: model %q hatchery %q", run.Model, run.HatcheryName)
	}
	checkWorkerVM(t, h, run.Name, "cds")

	d.wait(t, h.API, "the worker VM to be deleted", func() bool { return !vmExists(h, run.Name) })
	if st, _ := h.API.V1Job(jobID); st.BookCount != 1 {
		t.Errorf("job booked %d times, want 1", st.BookCount)
	}
	if !vmExists(h, "debian12-v1") {
		t.Errorf("no template named after the model; VMs: %v", h.VCenter.VMNames())
	}
	checkNoProblems(t, h)
	if err := d.stop(); err != nil {
		t.Fatalf("Run after cancel = %v", err)
	}
}

// checkProviderRoutines checks that the status lists the provider's loops first among the
// goroutine lines, running, as the original does.
func checkProviderRoutines(t *testing.T, base string) {
	t.Helper()
	code, _, body := get(t, base+"/mon/status")
	var status cds.MonitoringStatus
	if err := json.Unmarshal(body, &status); code != http.StatusOK || err != nil {
		t.Fatalf("/mon/status = %d %s (%v)", code, body, err)
	}
	var routines []string
	for _, l := range status.Lines {
		if name, ok := strings.CutPrefix(l.Component, "goroutine/"); ok {
			routines = append(routines, name+"="+l.Value)
		}
	}
	want := []string{"hatchery-vsphere-kill-awol-servers=Running", "hatchery-vsphere-kill-disable-workers=Running"}
	if len(routines) < 3 || !slices.Equal(routines[:2], want) || routines[len(routines)-1] != "mainRoutine=Running" {
		t.Errorf("goroutine lines %v: want %v first and mainRoutine last", routines, want)
	}
}
