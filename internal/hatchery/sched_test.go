package hatchery

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/hatchery-vsphere/hatchery-vsphere/internal/cds"
	"github.com/hatchery-vsphere/hatchery-vsphere/internal/config"
)

// indexOf returns the position of the first call starting with prefix, -1 if none.
func indexOf(calls []string, prefix string) int {
	return slices.IndexFunc(calls, func(c string) bool { return strings.HasPrefix(c, prefix) })
}

func assertOrder(t *testing.T, calls []string, prefixes ...string) {
	t.Helper()
	last := -1
	for _, p := range prefixes {
		i := indexOf(calls, p)
		if i < 0 {
			t.Fatalf("no call %q in %q", p, calls)
		}
		if i < last {
			t.Fatalf("call %q came before %q; calls: %q", p, prefixes, calls)
		}
		last = i
	}
}

func TestV1JobGatesRunInOrder(t *testing.T) {
	e := newSchedEnv(t, nil)
	e.v1.models = []cds.Model{v1Model(42, "grp", "debian12")}
	e.h.models.set(e.v1.models)
	e.v1.jobs[100] = v1Job(100)
	ctx := context.Background()

	e.h.pending.add("100")
	e.h.handleV1Job(ctx, 100)
	req, ok := e.takeRequest(t)
	if !ok {
		t.Fatal("no spawn request pushed")
	}
	e.h.spawnForJob(ctx, req)

	assertOrder(t, e.rec.all(),
		"v1.QueueJobInfo 100",
		"v1.WorkerList",           // capacity: worker pool
		"provider.WorkersStarted", // capacity: started workers
		"provider.CanSpawn grp/debian12 100",
		"v1.WorkerModelSecrets grp/debian12",
		"provider.CanAllocateResources grp/debian12 100",
		"v1.QueueJobBook 100",
		"v1.QueueJobSendSpawnInfo 100 MsgSpawnInfoHatcheryStarts",
		"provider.SpawnWorker 100",
	)
	if e.h.pending.has("100") {
		t.Error("job still pending after its spawn")
	}
	spawns := e.prov.spawned()
	if len(spawns) != 1 {
		t.Fatalf("%d spawns, want 1", len(spawns))
	}
	a := spawns[0]
	if a.JobID != "100" || a.RegisterOnly || !strings.Contains(a.LaunchScript, "./worker 1>/tmp/worker.log 2>&1;") {
		t.Errorf("spawn arguments: %+v", a)
	}
	cfg := decodeSchedConfig(t, a.Env)
	if cfg["booked_job_id"] != float64(100) || cfg["model"] != "grp/debian12" || cfg["name"] != a.WorkerName {
		t.Errorf("CDS_CONFIG: %v", cfg)
	}
}

func TestV2JobGatesRunInOrder(t *testing.T) {
	e := newSchedEnv(t, nil, withoutV1())
	e.v2.jobs[schedUUID] = v2Info(schedUUID)
	ctx := context.Background()

	e.h.pending.add(schedUUID)
	e.h.handleV2Job(ctx, schedUUID)
	req, ok := e.takeRequest(t)
	if !ok {
		t.Fatal("no spawn request pushed")
	}
	e.h.spawnForJob(ctx, req)

	calls := e.rec.all()
	assertOrder(t, calls,
		"v2.V2QueueJobInfo eu-v2 "+schedUUID,
		"v2.V2WorkerList",
		"provider.WorkersStarted",
		"provider.CanSpawn debian12 "+schedUUID,
		"provider.CanAllocateResources debian12 "+schedUUID,
		"v2.V2QueueJobTake eu-v2 "+schedUUID,
		"v2.V2QueueJobSendInfo eu-v2 "+schedUUID+" info: Hatchery \"vsphere-a\" is starting the worker",
		"provider.SpawnWorker "+schedUUID,
	)
	a := e.prov.spawned()[0]
	if a.Model.VSphereSpec.Image != "debian12-tpl" || !strings.Contains(a.LaunchScript, "/download/worker/linux/amd64") {
		t.Errorf("spawn arguments: %+v", a)
	}
	cfg := decodeSchedConfig(t, a.Env)
	if cfg["run_job_id"] != schedUUID || cfg["region"] != "eu-v2" || cfg["model"] != "debian12" {
		t.Errorf("CDS_CONFIG: %v", cfg)
	}
	if got := e.h.attempts.get(schedUUID); got != 1 {
		t.Errorf("attempts = %d, want 1", got)
	}
}

func decodeSchedConfig(t *testing.T, env []string) map[string]any {
	t.Helper()
	if len(env) == 0 || !strings.HasPrefix(env[0], "CDS_CONFIG=") {
		t.Fatalf("env %q does not start with CDS_CONFIG", env)
	}
	raw, err := base64.StdEncoding.DecodeString(strings.TrimPrefix(env[0], "CDS_CONFIG="))
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(raw, &m); err != nil {
		t.Fatal(err)
	}
	return m
}

func TestMaxWorkerReachedBlocks(t *testing.T) {
	e := newSchedEnv(t, func(c *config.CommonConfiguration) { c.Provision.MaxWorker = 2 }, withoutV1())
	e.prov.started = []string{"a", "b"}
	e.v2.jobs[schedUUID] = v2Info(schedUUID)
	e.h.pending.add(schedUUID)
	e.h.handleV2Job(context.Background(), schedUUID)

	if _, ok := e.takeRequest(t); ok {
		t.Fatal("spawn request pushed with maxWorker reached")
	}
	if len(e.rec.with("provider.CanSpawn")) != 0 {
		t.Error("CanSpawn called although the capacity check failed")
	}
	if e.h.pending.has(schedUUID) {
		t.Error("dropped job still pending")
	}
	if v := workersLineValue(t, e.h.Status(context.Background())); v != "2/2" {
		t.Errorf("Workers line %q, want 2/2", v)
	}
}

// A job admitted counts against maxWorker before its VM exists: a burst must not admit more
// workers than maxWorker while the first clones run.
func TestAdmittedJobsCountAgainstMaxWorkerBeforeTheirVMExists(t *testing.T) {
	e := newSchedEnv(t, func(c *config.CommonConfiguration) { c.Provision.MaxWorker = 2 }, withoutV1())
	e.prov.started = []string{"a"}
	const second = "5c1e2d3f-4a5b-4c6d-8e7f-9a0b1c2d3e4f"
	for _, id := range []string{schedUUID, second} {
		e.v2.jobs[id] = v2Info(id)
		e.h.pending.add(id)
	}
	ctx := context.Background()
	e.h.handleV2Job(ctx, schedUUID)
	first, ok := e.takeRequest(t)
	if !ok {
		t.Fatal("first job not admitted with 1 of 2 workers")
	}
	e.h.handleV2Job(ctx, second)
	if _, ok := e.takeRequest(t); ok {
		t.Fatal("second job admitted while the first one's VM is being made: 3 workers for maxWorker 2")
	}
	// Its VM listed, the first worker counts once, not twice.
	e.prov.started = append(e.prov.started, first.workerName)
	if err := e.h.checkCapacities(ctx); err == nil || !strings.Contains(err.Error(), "2 workers (0 of them admitted") {
		t.Errorf("capacity with the admitted worker's VM listed: %v", err)
	}
	// A spawn that ends (here: fails) frees its place.
	e.prov.started = []string{"a"}
	e.h.spawnForJob(ctx, first)
	if err := e.h.checkCapacities(ctx); err != nil {
		t.Errorf("capacity after the admitted spawn ended: %v", err)
	}
}

func TestMaxWorkerZeroIsUnlimited(t *testing.T) {
	e := newSchedEnv(t, func(c *config.CommonConfiguration) { c.Provision.MaxWorker = 0 }, withoutV1())
	// 5 registered busy workers and 5 started VMs: no count limit, fewer than 10 pending.
	for i := range 5 {
		name := "w" + strconv.Itoa(i)
		e.prov.started = append(e.prov.started, name, "vm"+strconv.Itoa(i))
		e.v2.workers = append(e.v2.workers, cds.V2Worker{ID: name, Name: name, Status: cds.V2StatusBuilding})
	}
	e.v2.jobs[schedUUID] = v2Info(schedUUID)
	e.h.pending.add(schedUUID)
	e.h.handleV2Job(context.Background(), schedUUID)
	if _, ok := e.takeRequest(t); !ok {
		t.Fatal("no spawn request with maxWorker = 0")
	}
	if v := workersLineValue(t, e.h.Status(context.Background())); v != "10/unlimited" {
		t.Errorf("Workers line %q, want 10/unlimited", v)
	}
}

func workersLineValue(t *testing.T, st cds.MonitoringStatus) string {
	t.Helper()
	for _, l := range st.Lines {
		if l.Component == "Workers" {
			return l.Value
		}
	}
	t.Fatalf("no Workers line in %+v", st.Lines)
	return ""
}

func TestPendingWorkersBlockAtMaxConcurrentProvisioning(t *testing.T) {
	e := newSchedEnv(t, func(c *config.CommonConfiguration) {
		c.Provision.MaxWorker = 0
		c.Provision.MaxConcurrentProvisioning = 3
	}, withoutV1())
	e.prov.started = []string{"a", "b", "c"} // three unregistered VMs: Pending
	e.v2.jobs[schedUUID] = v2Info(schedUUID)
	e.h.handleV2Job(context.Background(), schedUUID)
	if _, ok := e.takeRequest(t); ok {
		t.Fatal("spawn request pushed with maxConcurrentProvisioning workers pending")
	}
}

func TestStartersInFlightBounded(t *testing.T) {
	e := newSchedEnv(t, func(c *config.CommonConfiguration) {
		c.Provision.MaxConcurrentProvisioning = 2
		c.Provision.MaxWorker = 0
	}, withoutV1())
	gate := make(chan struct{})
	in := make(chan SpawnArguments)
	e.prov.spawnGate, e.prov.spawnIn = gate, in
	ctx := context.Background()

	ids := []string{
		"00000000-0000-4000-8000-000000000001", "00000000-0000-4000-8000-000000000002",
		"00000000-0000-4000-8000-000000000003", "00000000-0000-4000-8000-000000000004",
	}
	for _, id := range ids {
		e.v2.jobs[id] = v2Info(id)
	}
	var wg sync.WaitGroup
	for _, id := range ids[:2] {
		wg.Go(func() { e.h.spawnForJob(ctx, spawnRequest{jobID: id, model: v2StarterModel(), region: "eu-v2"}) })
	}
	<-in
	<-in
	// Two spawns in flight: the capacity check refuses, and a third starter gives up
	// without taking its job.
	if err := e.h.checkCapacities(ctx); err == nil {
		t.Error("capacity check passed with maxConcurrentProvisioning spawns in flight")
	}
	for _, id := range ids[2:] {
		e.h.spawnForJob(ctx, spawnRequest{jobID: id, model: v2StarterModel(), region: "eu-v2"})
	}
	close(gate)
	wg.Wait()
	if takes := e.rec.with("v2.V2QueueJobTake"); len(takes) != 2 {
		t.Errorf("takes %q, want 2", takes)
	}
	if e.prov.maxInSpawn != 2 {
		t.Errorf("max spawns in flight %d, want 2", e.prov.maxInSpawn)
	}
	if n := e.h.nbWorkerToStart.Load(); n != 0 {
		t.Errorf("nbWorkerToStart = %d after all spawns returned", n)
	}
}

func v2StarterModel() *WorkerStarterWorkerModel {
	m := v2Info("x").Model
	pre, cmd, post := V2Commands(m.OSArch)
	return &WorkerStarterWorkerModel{ModelV2: &m, VSphereSpec: cds.V2WorkerModelVSphereSpec{Image: "debian12-tpl"}, PreCmd: pre, Cmd: cmd, PostCmd: post}
}

func TestJobSeenTwiceIsSpawnedOnce(t *testing.T) {
	e := newSchedEnv(t, nil, withoutV1())
	e.v2.jobs[schedUUID] = v2Info(schedUUID)
	e.v2.queue = []cds.V2WorkflowRunJob{e.v2.jobs[schedUUID].RunJob}
	ctx := context.Background()

	for range 20 {
		var wg sync.WaitGroup
		wg.Go(func() { e.h.handleV2Event(ctx, cds.WebsocketJobQueueEvent{JobRunID: schedUUID, Region: "eu-v2"}) })
		wg.Go(func() { e.h.pollV2(ctx) })
		wg.Wait()
		if n := len(e.h.chanV2); n != 1 {
			t.Fatalf("job enqueued %d times, want 1", n)
		}
		<-e.h.chanV2
		e.h.pending.remove(schedUUID)
	}

	// Once handled and handed to a starter, discovery does not enqueue it again.
	e.h.pending.add(schedUUID)
	e.h.handleV2Job(ctx, schedUUID)
	req, ok := e.takeRequest(t)
	if !ok {
		t.Fatal("no spawn request")
	}
	e.h.pollV2(ctx)
	e.h.handleV2Event(ctx, cds.WebsocketJobQueueEvent{JobRunID: schedUUID, Region: "eu-v2"})
	if n := len(e.h.chanV2); n != 0 {
		t.Fatalf("job re-enqueued while its spawn request is in flight")
	}
	e.h.spawnForJob(ctx, req)
	if n := len(e.prov.spawned()); n != 1 {
		t.Fatalf("%d spawns, want 1", n)
	}
}

func TestFailedV1SpawnReleasesAndCountsAttempt(t *testing.T) {
	e := newSchedEnv(t, nil)
	e.v1.models = []cds.Model{v1Model(42, "grp", "debian12")}
	e.h.models.set(e.v1.models)
	e.v1.jobs[100] = v1Job(100)
	e.prov.spawnErr = errSpawnFailed
	ctx := context.Background()

	for round := 1; round <= 5; round++ {
		e.h.pending.add("100")
		e.h.handleV1Job(ctx, 100)
		req, ok := e.takeRequest(t)
		if !ok {
			t.Fatalf("round %d: no spawn request", round)
		}
		e.h.spawnForJob(ctx, req)
		if got := e.h.attempts.get("100"); got != round {
			t.Fatalf("round %d: attempts = %d", round, got)
		}
	}
	if n := len(e.rec.with("v1.QueueJobRelease 100")); n != 5 {
		t.Errorf("%d releases, want 5", n)
	}
	errInfos := e.rec.with("v1.QueueJobSendSpawnInfo 100 MsgSpawnInfoHatcheryErrorSpawn")
	if len(errInfos) != 5 || !strings.HasSuffix(errInfos[0], `["vsphere-a" "grp/debian12" "0s" "internal server error"]`) {
		t.Errorf("error spawn infos %q", errInfos)
	}
	assertOrder(t, e.rec.all(), "provider.SpawnWorker 100", "v1.QueueJobSendSpawnInfo 100 MsgSpawnInfoHatcheryErrorSpawn", "v1.QueueJobRelease 100")

	// Sixth handling: the job is failed, not spawned.
	e.h.pending.add("100")
	e.h.handleV1Job(ctx, 100)
	if _, ok := e.takeRequest(t); ok {
		t.Fatal("spawn request pushed after the attempt limit")
	}
	if len(e.v1.results) != 1 {
		t.Fatalf("%d results, want 1", len(e.v1.results))
	}
	res := e.v1.results[0]
	res.RemoteTime = res.RemoteTime.UTC()
	b, _ := json.Marshal(res)
	want := `{"id":100,"buildID":100,"status":"Fail","reason":"hatchery \"vsphere-a\" failed to start worker after 5 attempts","remoteTime":"2025-01-10T08:00:00Z"}`
	if string(b) != want {
		t.Errorf("result\n got %s\nwant %s", b, want)
	}
}

func TestFailedV2SpawnReleases(t *testing.T) {
	e := newSchedEnv(t, nil, withoutV1())
	e.v2.jobs[schedUUID] = v2Info(schedUUID)
	e.prov.spawnErr = errSpawnFailed
	ctx := context.Background()
	e.h.pending.add(schedUUID)
	e.h.handleV2Job(ctx, schedUUID)
	req, _ := e.takeRequest(t)
	e.h.spawnForJob(ctx, req)

	spawn := e.prov.spawned()[0]
	wantInfo := "v2.V2QueueJobSendInfo eu-v2 " + schedUUID + " error: Error while Hatchery vsphere-a spawns worker " +
		spawn.WorkerName + " with model debian12 after 0s, err: internal server error"
	assertOrder(t, e.rec.all(), "provider.SpawnWorker", wantInfo, "v2.V2QueueJobRelease eu-v2 "+schedUUID)
	if got := e.h.attempts.get(schedUUID); got != 1 {
		t.Errorf("attempts = %d, want 1", got)
	}
	if e.h.pending.has(schedUUID) {
		t.Error("released job still pending")
	}
}

func TestV1RegionRules(t *testing.T) {
	region := func(v string) cds.Requirement { return cds.Requirement{Type: cds.RequirementRegion, Value: v} }
	tests := []struct {
		name      string
		region    string
		ignore    bool
		reqs      []cds.Requirement
		wantSpawn bool
		wantQuery string
	}{
		{name: "no region anywhere", wantSpawn: true, wantQuery: `[]`},
		{name: "job without region ignored", region: "eu", ignore: true, wantQuery: `["eu"]`},
		{name: "job without region accepted", region: "eu", wantSpawn: true, wantQuery: `["eu" ""]`},
		{name: "same region", region: "eu", ignore: true, reqs: []cds.Requirement{region("eu")}, wantSpawn: true, wantQuery: `["eu"]`},
		{name: "other region", region: "eu", reqs: []cds.Requirement{region("us")}, wantQuery: `["eu" ""]`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newSchedEnv(t, func(c *config.CommonConfiguration) {
				c.Provision.Region = tt.region
				c.Provision.IgnoreJobWithNoRegion = tt.ignore
			}, withoutV2())
			e.v1.models = []cds.Model{v1Model(42, "grp", "debian12")}
			e.h.models.set(e.v1.models)
			e.v1.jobs[100] = v1Job(100, tt.reqs...)
			e.h.handleV1Job(context.Background(), 100)
			_, pushed := e.takeRequest(t)
			if pushed != tt.wantSpawn {
				t.Errorf("pushed = %v, want %v", pushed, tt.wantSpawn)
			}
			e.h.pollV1(context.Background())
			if got := e.rec.with("v1.QueueWorkflows"); len(got) != 1 || got[0] != "v1.QueueWorkflows vsphere "+tt.wantQuery {
				t.Errorf("poll %q, want regions %s", got, tt.wantQuery)
			}
		})
	}
}

func TestV1ModelMatching(t *testing.T) {
	req := func(typ, v string) cds.Requirement { return cds.Requirement{Type: typ, Value: v} }
	os, arch := "linux", "amd64"
	base := v1Model(1, "grp", "debian12")
	base.RegisteredOS, base.RegisteredArch = &os, &arch
	base.RegisteredCapabilities = []cds.Requirement{{Name: "git", Type: cds.RequirementBinary, Value: "git"}}
	shared := v1Model(2, cds.SharedInfraGroupName, "ubuntu")
	tests := []struct {
		name string
		reqs []cds.Requirement
		want string
	}{
		{"first model", nil, "grp/debian12"},
		{"model by path", []cds.Requirement{req(cds.RequirementModel, "shared.infra/ubuntu --opt")}, "shared.infra/ubuntu"},
		{"model by name", []cds.Requirement{req(cds.RequirementModel, "ubuntu")}, "shared.infra/ubuntu"},
		{"binary capability", []cds.Requirement{req(cds.RequirementBinary, "git")}, "grp/debian12"},
		{"unknown binary", []cds.Requirement{req(cds.RequirementBinary, "docker")}, ""},
		{"os-arch mismatch", []cds.Requirement{req(cds.RequirementOSArch, "linux/arm64"), req(cds.RequirementModel, "debian12")}, ""},
		{"memory refused", []cds.Requirement{req(cds.RequirementMemory, "4096")}, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newSchedEnv(t, nil, withoutV2())
			e.h.models.set([]cds.Model{base, shared})
			got := e.h.selectV1JobModel(context.Background(), v1Job(5, tt.reqs...), "5", tt.reqs)
			name := ""
			if got != nil {
				name = got.Name()
			}
			if name != tt.want {
				t.Errorf("model %q, want %q", name, tt.want)
			}
		})
	}
}

func TestV1JobOnAsCodeModel(t *testing.T) {
	e := newSchedEnv(t, nil)
	e.v2.asCode["PROJ/github/org/repo/debian12@main"] = v2Info("x").Model
	e.v1.jobs[100] = v1Job(100, cds.Requirement{Type: cds.RequirementModel, Value: "PROJ/github/org/repo/debian12@main"})
	ctx := context.Background()
	e.h.handleV1Job(ctx, 100)
	req, ok := e.takeRequest(t)
	if !ok {
		t.Fatal("no spawn request")
	}
	if !req.model.IsV2() || !strings.Contains(req.model.PreCmd, "linux/$(uname -m)") {
		t.Errorf("model %+v", req.model)
	}
	e.h.spawnForJob(ctx, req)
	a := e.prov.spawned()[0]
	cfg := decodeSchedConfig(t, a.Env)
	if cfg["model"] != "debian12" || cfg["booked_job_id"] != float64(100) {
		t.Errorf("CDS_CONFIG %v", cfg)
	}
}

func TestJobInfoErrorLeavesPendingSet(t *testing.T) {
	e := newSchedEnv(t, nil)
	e.v1.jobInfoErr = &cds.APIError{ID: cds.ErrIDUnknown, StatusCode: 500}
	e.h.pending.add("100")
	e.h.handleV1Job(context.Background(), 100)
	if e.h.pending.has("100") {
		t.Error("v1 job kept pending after a failed fetch (Q31)")
	}
	e.h.pending.add(schedUUID)
	e.h.handleV2Job(context.Background(), schedUUID) // unknown: 404
	if e.h.pending.has(schedUUID) {
		t.Error("v2 job kept pending after a failed fetch (Q31)")
	}
}

func TestV2ModelOfAnotherTypeStaysPendingUntilJobContextEnds(t *testing.T) {
	e := newSchedEnv(t, nil, withoutV1())
	info := v2Info(schedUUID)
	info.Model.Type = cds.ModelTypeDocker
	e.v2.jobs[schedUUID] = info
	e.h.pending.add(schedUUID)
	e.h.handleV2Job(context.Background(), schedUUID)
	if !e.h.pending.has(schedUUID) {
		t.Fatal("job left the pending set at once")
	}
	e.clock.advance(e.h.iv.JobContext)
	if e.h.pending.has(schedUUID) {
		t.Error("job still pending after the job context")
	}
}

func TestPollV1FairnessAndLimit(t *testing.T) {
	e := newSchedEnv(t, func(c *config.CommonConfiguration) { c.Provision.MaxConcurrentProvisioning = 2 }, withoutV2())
	// Project 1 has 3 jobs, project 2 one, project 3 two; limit 2 × 2 = 4.
	for i, p := range []int64{1, 1, 3, 1, 2, 3} {
		j := v1Job(int64(i + 1))
		j.ProjectID = p
		e.v1.queue = append(e.v1.queue, j)
	}
	done := make(chan struct{})
	go func() { defer close(done); e.h.pollV1(context.Background()) }()
	var got []int64
	for range 4 {
		got = append(got, <-e.h.chanV1)
	}
	<-done
	if want := []int64{5, 3, 6, 1}; !slices.Equal(got, want) {
		t.Errorf("enqueued %v, want %v", got, want)
	}
	if e.h.pending.len() != 4 {
		t.Errorf("%d pending, want 4", e.h.pending.len())
	}
}

func TestInconsistentV1WorkerDisabled(t *testing.T) {
	e := newSchedEnv(t, nil, withoutV2())
	e.v1.workers = []cds.Worker{
		{ID: "w1", Name: "known", Status: cds.StatusBuilding},
		{ID: "w2", Name: "ghost", Status: cds.StatusWaiting},
	}
	e.prov.started = []string{"known", "register-x", "fresh"}
	pool, err := e.h.WorkerPool(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	want := []PoolWorker{
		{ID: "w1", Name: "known", Status: cds.StatusBuilding, V1: true},
		{ID: "w2", Name: "ghost", Status: cds.StatusDisabled, V1: true},
		{Name: "register-x", Status: cds.StatusRegistering},
		{Name: "fresh", Status: cds.StatusPending},
	}
	if !slices.Equal(pool, want) {
		t.Errorf("pool %+v\nwant %+v", pool, want)
	}
	if got := e.rec.with("v1.WorkerDisable"); !slices.Equal(got, []string{"v1.WorkerDisable w2"}) {
		t.Errorf("disables %q", got)
	}
}

func TestRegistrationBoundedByMaxConcurrentRegistering(t *testing.T) {
	e := newSchedEnv(t, func(c *config.CommonConfiguration) {
		c.Provision.MaxConcurrentRegistering = 2
		c.Provision.MaxWorker = 0
	}, withoutV2())
	var models []cds.Model
	for i := range 5 {
		models = append(models, v1Model(int64(i+1), "grp", "model"+strconv.Itoa(i)))
	}
	e.v1.models = models
	e.h.models.set(models)
	e.prov.needReg = true
	gate := make(chan struct{})
	in := make(chan SpawnArguments, 5)
	e.prov.spawnGate, e.prov.spawnIn = gate, in

	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() { _ = e.h.runStarter(ctx) })
	}
	if err := e.h.registrationPass(ctx); err != nil {
		t.Fatal(err)
	}
	first, second := <-in, <-in
	// A second pass while both registrations run starts nothing more.
	if err := e.h.registrationPass(ctx); err != nil {
		t.Fatal(err)
	}
	if books := e.rec.with("v1.WorkerModelBook"); len(books) != 2 {
		t.Errorf("books %q, want 2", books)
	}
	close(gate)
	cancel()
	wg.Wait()
	for _, a := range []SpawnArguments{first, second} {
		if !a.RegisterOnly || a.JobID != "0" || !strings.HasPrefix(a.WorkerName, "register-") ||
			!strings.Contains(a.LaunchScript, "./worker register 1>/tmp/worker.register.log 2>&1") {
			t.Errorf("registration spawn %+v", a)
		}
	}
	if e.prov.maxInSpawn > 2 {
		t.Errorf("%d registrations at once, want <= 2", e.prov.maxInSpawn)
	}
	if got := e.rec.with("v1.WorkerModelBook"); got[0] != "v1.WorkerModelBook grp/model0" || got[1] != "v1.WorkerModelBook grp/model1" {
		t.Errorf("registration order %q", got)
	}
}

func TestRegistrationDisabledByMinusOne(t *testing.T) {
	e := newSchedEnv(t, func(c *config.CommonConfiguration) { c.Provision.MaxConcurrentRegistering = -1 }, withoutV2())
	e.h.models.set([]cds.Model{v1Model(1, "grp", "m")})
	e.prov.needReg = true
	if err := e.h.registrationPass(context.Background()); err != nil {
		t.Fatal(err)
	}
	if books := e.rec.with("v1.WorkerModelBook"); len(books) != 0 {
		t.Errorf("books %q with registration disabled", books)
	}
}

func TestFailedRegistrationReportsModelError(t *testing.T) {
	e := newSchedEnv(t, nil, withoutV2())
	m := v1Model(1, "grp", "m")
	e.prov.spawnErr = errSpawnFailed
	e.registrationsInFlightForTest(1)
	e.h.spawnRegistration(context.Background(), spawnRequest{jobID: "0", model: newV1StarterModel(m), registerOnly: true})
	want := "v1.WorkerModelSpawnError grp/m cannot spawn worker for register: clone failed"
	if got := e.rec.with("v1.WorkerModelSpawnError"); !slices.Equal(got, []string{want}) {
		t.Errorf("got %q, want %q", got, want)
	}
	if n := e.h.registrationsInFlight.Load(); n != 0 {
		t.Errorf("registrations in flight %d", n)
	}
}

// A registration cancelled by a shutdown still reports its failure: the report frees the
// model's registration booking, without which a restarted hatchery could not register the
// model until the booking expired.
func TestRegistrationCancelledByAShutdownStillReportsTheModelError(t *testing.T) {
	e := newSchedEnv(t, nil, withoutV2())
	m := v1Model(1, "grp", "m")
	ctx, cancel := context.WithCancel(context.Background())
	// The shutdown comes while the VM is being made.
	e.prov.onSpawn = func(context.Context, SpawnArguments) error { cancel(); return context.Canceled }
	e.registrationsInFlightForTest(1)
	e.h.spawnRegistration(ctx, spawnRequest{jobID: "0", model: newV1StarterModel(m), registerOnly: true})
	want := "v1.WorkerModelSpawnError grp/m cannot spawn worker for register: context canceled"
	if got := e.rec.with("v1.WorkerModelSpawnError"); !slices.Equal(got, []string{want}) {
		t.Errorf("got %q, want %q", got, want)
	}
}

func (e *schedEnv) registrationsInFlightForTest(n int64) { e.h.registrationsInFlight.Add(n) }
