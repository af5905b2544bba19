package hatchery

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rockbears/log"

	"github.com/hatchery-vsphere/hatchery-vsphere/internal/cds"
	"github.com/hatchery-vsphere/hatchery-vsphere/internal/config"
)

// schedRecorder is the ordered log of the calls the framework made on the fakes.
type schedRecorder struct {
	mu    sync.Mutex
	calls []string
}

func (r *schedRecorder) add(format string, args ...any) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.calls = append(r.calls, fmt.Sprintf(format, args...))
}

func (r *schedRecorder) all() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.calls)
}

// with returns the calls starting with prefix.
func (r *schedRecorder) with(prefix string) []string {
	var out []string
	for _, c := range r.all() {
		if strings.HasPrefix(c, prefix) {
			out = append(out, c)
		}
	}
	return out
}

// schedClock is a settable clock.
type schedClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *schedClock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *schedClock) advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// fakeProvider is a Provider whose answers tests set and whose calls are recorded.
type fakeProvider struct {
	rec *schedRecorder

	mu          sync.Mutex
	started     []string
	startedErr  error
	canSpawn    bool
	canAlloc    bool
	needReg     bool
	defaultV2   string
	spawnErr    error
	spawnGate   chan struct{} // when set, SpawnWorker waits for it (or ctx)
	spawnIn     chan SpawnArguments
	spawns      []SpawnArguments
	inSpawn     int
	maxInSpawn  int
	statusLines []cds.MonitoringStatusLine
	onSpawn     func(context.Context, SpawnArguments) error
}

func newFakeProvider(rec *schedRecorder) *fakeProvider {
	return &fakeProvider{rec: rec, canSpawn: true, canAlloc: true}
}

func (p *fakeProvider) ModelType() string { return cds.ModelTypeVSphere }

func (p *fakeProvider) CanSpawn(_ context.Context, m *WorkerStarterWorkerModel, jobID string, _ []cds.Requirement) bool {
	p.rec.add("provider.CanSpawn %s %s", m.Name(), jobID)
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.canSpawn
}

func (p *fakeProvider) CanAllocateResources(_ context.Context, m *WorkerStarterWorkerModel, jobID string, _ []cds.Requirement) (bool, error) {
	p.rec.add("provider.CanAllocateResources %s %s", m.Name(), jobID)
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.canAlloc, nil
}

func (p *fakeProvider) SpawnWorker(ctx context.Context, args SpawnArguments) error {
	p.rec.add("provider.SpawnWorker %s", args.JobID)
	p.mu.Lock()
	p.spawns = append(p.spawns, args)
	p.inSpawn++
	p.maxInSpawn = max(p.maxInSpawn, p.inSpawn)
	gate, in, err, onSpawn := p.spawnGate, p.spawnIn, p.spawnErr, p.onSpawn
	p.mu.Unlock()
	defer func() {
		p.mu.Lock()
		p.inSpawn--
		p.mu.Unlock()
	}()
	if onSpawn != nil {
		err = onSpawn(ctx, args)
	}
	if in != nil {
		in <- args
	}
	if gate != nil {
		select {
		case <-gate:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return err
}

func (p *fakeProvider) WorkersStarted(context.Context) ([]string, error) {
	p.rec.add("provider.WorkersStarted")
	p.mu.Lock()
	defer p.mu.Unlock()
	return slices.Clone(p.started), p.startedErr
}

func (p *fakeProvider) NeedRegistration(_ context.Context, m *cds.Model) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.needReg
}

func (p *fakeProvider) DefaultModelV2Name(context.Context, []cds.Requirement) string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.defaultV2
}

func (p *fakeProvider) Status(context.Context) []cds.MonitoringStatusLine {
	p.mu.Lock()
	defer p.mu.Unlock()
	return slices.Clone(p.statusLines)
}

func (p *fakeProvider) Run(ctx context.Context, _ Services) error {
	<-ctx.Done()
	return nil
}

func (p *fakeProvider) spawned() []SpawnArguments {
	p.mu.Lock()
	defer p.mu.Unlock()
	return slices.Clone(p.spawns)
}

// fakeV1 is a V1API serving jobs and models from maps.
type fakeV1 struct {
	rec *schedRecorder

	mu           sync.Mutex
	jobs         map[int64]cds.WorkflowNodeJobRun
	jobInfoErr   error
	queue        []cds.WorkflowNodeJobRun
	models       []cds.Model
	workers      []cds.Worker
	secrets      []cds.ModelSecret
	heartbeatErr error
	heartbeats   chan struct{}
	events       chan cds.WebsocketEvent
	results      []cds.Result
	spawnInfos   []cds.SpawnInfo
}

func newFakeV1(rec *schedRecorder) *fakeV1 {
	return &fakeV1{rec: rec, jobs: make(map[int64]cds.WorkflowNodeJobRun)}
}

func (f *fakeV1) Signin(context.Context) error { f.rec.add("v1.Signin"); return nil }
func (f *fakeV1) SignedIn() bool               { return true }
func (f *fakeV1) SignOut(context.Context) error {
	f.rec.add("v1.SignOut")
	return nil
}
func (f *fakeV1) Heartbeat(_ context.Context, _ cds.MonitoringStatus) error {
	f.rec.add("v1.Heartbeat")
	f.mu.Lock()
	err, ch := f.heartbeatErr, f.heartbeats
	f.mu.Unlock()
	if ch != nil {
		ch <- struct{}{}
	}
	return err
}
func (f *fakeV1) CDNConfig(context.Context) (cds.CDNConfig, error) {
	return cds.CDNConfig{HTTPURL: "http://cdn.v1", TCPURL: "cdn.v1:8090"}, nil
}
func (f *fakeV1) WorkerModelsEnabled(context.Context) ([]cds.Model, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.models), nil
}
func (f *fakeV1) WorkerModelGet(_ context.Context, group, name string) (cds.Model, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, m := range f.models {
		if m.Group.Name == group && m.Name == name {
			return m, nil
		}
	}
	return cds.Model{}, &cds.APIError{ID: cds.ErrIDNotFound, Message: "not found", StatusCode: 404}
}
func (f *fakeV1) WorkerModelSecrets(_ context.Context, group, name string) ([]cds.ModelSecret, error) {
	f.rec.add("v1.WorkerModelSecrets %s/%s", group, name)
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.secrets), nil
}
func (f *fakeV1) WorkerModelBook(_ context.Context, group, name string) error {
	f.rec.add("v1.WorkerModelBook %s/%s", group, name)
	return nil
}
func (f *fakeV1) WorkerModelSpawnError(ctx context.Context, group, name string, form cds.SpawnErrorForm) error {
	if err := ctx.Err(); err != nil {
		// A real client fails at once on a done context: the report would never leave.
		f.rec.add("v1.WorkerModelSpawnError %s/%s not sent: %v", group, name, err)
		return err
	}
	f.rec.add("v1.WorkerModelSpawnError %s/%s %s", group, name, form.Error)
	return nil
}
func (f *fakeV1) WorkerList(context.Context) ([]cds.Worker, error) {
	f.rec.add("v1.WorkerList")
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.workers), nil
}
func (f *fakeV1) WorkerDisable(_ context.Context, id string) error {
	f.rec.add("v1.WorkerDisable %s", id)
	return nil
}
func (f *fakeV1) QueueWorkflows(_ context.Context, modelType string, regions []string) ([]cds.WorkflowNodeJobRun, error) {
	f.rec.add("v1.QueueWorkflows %s %q", modelType, regions)
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.queue), nil
}
func (f *fakeV1) QueueJobInfo(_ context.Context, id int64) (cds.WorkflowNodeJobRun, error) {
	f.rec.add("v1.QueueJobInfo %d", id)
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.jobInfoErr != nil {
		return cds.WorkflowNodeJobRun{}, f.jobInfoErr
	}
	j, ok := f.jobs[id]
	if !ok {
		return j, &cds.APIError{ID: cds.ErrIDWorkflowNodeJobRunNotFound, StatusCode: 404}
	}
	return j, nil
}
func (f *fakeV1) QueueJobBook(_ context.Context, id int64) (cds.WorkflowNodeJobRunBooked, error) {
	f.rec.add("v1.QueueJobBook %d", id)
	return cds.WorkflowNodeJobRunBooked{}, nil
}
func (f *fakeV1) QueueJobRelease(_ context.Context, id int64) error {
	f.rec.add("v1.QueueJobRelease %d", id)
	return nil
}
func (f *fakeV1) QueueJobSendSpawnInfo(_ context.Context, id int64, infos []cds.SpawnInfo) error {
	for _, i := range infos {
		f.rec.add("v1.QueueJobSendSpawnInfo %d %s %q", id, i.Message.ID, i.Message.Args)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.spawnInfos = append(f.spawnInfos, infos...)
	return nil
}
func (f *fakeV1) QueueJobResult(_ context.Context, id int64, result cds.Result) error {
	f.rec.add("v1.QueueJobResult %d", id)
	f.mu.Lock()
	defer f.mu.Unlock()
	f.results = append(f.results, result)
	return nil
}
func (f *fakeV1) ListenV1(ctx context.Context, events chan<- cds.WebsocketEvent) error {
	f.mu.Lock()
	src := f.events
	f.mu.Unlock()
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case ev := <-src:
			select {
			case events <- ev:
			case <-ctx.Done():
				return ctx.Err()
			}
		}
	}
}

// fakeV2 is a V2API serving run jobs from a map.
type fakeV2 struct {
	rec *schedRecorder

	mu           sync.Mutex
	region       string
	jobs         map[string]cds.V2QueueJobInfo
	queue        []cds.V2WorkflowRunJob
	workers      []cds.V2Worker
	heartbeatErr error
	heartbeats   chan struct{}
	events       chan cds.WebsocketJobQueueEvent
	infos        []cds.V2SendJobRunInfo
	asCode       map[string]cds.V2WorkerModel
}

func newFakeV2(rec *schedRecorder) *fakeV2 {
	return &fakeV2{rec: rec, region: "eu-v2", jobs: make(map[string]cds.V2QueueJobInfo), asCode: make(map[string]cds.V2WorkerModel)}
}

func (f *fakeV2) Signin(context.Context) error { f.rec.add("v2.Signin"); return nil }
func (f *fakeV2) Region() string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.region
}
func (f *fakeV2) Heartbeat(_ context.Context, _ cds.MonitoringStatus) error {
	f.rec.add("v2.Heartbeat")
	f.mu.Lock()
	err, ch := f.heartbeatErr, f.heartbeats
	f.mu.Unlock()
	if ch != nil {
		ch <- struct{}{}
	}
	return err
}
func (f *fakeV2) CDNConfig(context.Context) (cds.CDNConfig, error) {
	return cds.CDNConfig{HTTPURL: "http://cdn.v2", TCPURL: "cdn.v2:8090", TCPURLEnableTLS: true}, nil
}
func (f *fakeV2) V2WorkerList(context.Context) ([]cds.V2Worker, error) {
	f.rec.add("v2.V2WorkerList")
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.workers), nil
}
func (f *fakeV2) V2Queue(_ context.Context, region string, _ []string) ([]cds.V2WorkflowRunJob, error) {
	f.rec.add("v2.V2Queue %s", region)
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.queue), nil
}
func (f *fakeV2) V2QueueJobInfo(_ context.Context, region, id string) (cds.V2QueueJobInfo, error) {
	f.rec.add("v2.V2QueueJobInfo %s %s", region, id)
	f.mu.Lock()
	defer f.mu.Unlock()
	j, ok := f.jobs[id]
	if !ok {
		return j, &cds.APIError{ID: cds.ErrIDNotFound, StatusCode: 404}
	}
	return j, nil
}
func (f *fakeV2) V2QueueJobTake(_ context.Context, region, id string) (cds.V2WorkflowRunJob, error) {
	f.rec.add("v2.V2QueueJobTake %s %s", region, id)
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.jobs[id].RunJob, nil
}
func (f *fakeV2) V2QueueJobRelease(_ context.Context, region, id string) error {
	f.rec.add("v2.V2QueueJobRelease %s %s", region, id)
	return nil
}
func (f *fakeV2) V2QueueJobSendInfo(_ context.Context, region, id string, info cds.V2SendJobRunInfo) error {
	f.rec.add("v2.V2QueueJobSendInfo %s %s %s: %s", region, id, info.Level, info.Message)
	f.mu.Lock()
	defer f.mu.Unlock()
	f.infos = append(f.infos, info)
	return nil
}
func (f *fakeV2) V2WorkerModelGet(_ context.Context, projKey, vcs, repo, name, branch string) (cds.V2WorkerModel, error) {
	ref := projKey + "/" + vcs + "/" + repo + "/" + name + "@" + branch
	f.rec.add("v2.V2WorkerModelGet %s", ref)
	f.mu.Lock()
	defer f.mu.Unlock()
	m, ok := f.asCode[ref]
	if !ok {
		return m, &cds.APIError{ID: cds.ErrIDNotFound, StatusCode: 404}
	}
	return m, nil
}
func (f *fakeV2) ListenV2(ctx context.Context, events chan<- cds.WebsocketJobQueueEvent) error {
	f.mu.Lock()
	src := f.events
	f.mu.Unlock()
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case ev := <-src:
			select {
			case events <- ev:
			case <-ctx.Done():
				return ctx.Err()
			}
		}
	}
}

// discardWrapper is a rockbears/log wrapper that drops everything.
type discardWrapper struct{}

func (discardWrapper) GetLevel() log.Level           { return log.LevelPanic + 1 }
func (discardWrapper) WithField(string, interface{}) {}
func (discardWrapper) Debugf(string, ...interface{}) {}
func (discardWrapper) Infof(string, ...interface{})  {}
func (discardWrapper) Warnf(string, ...interface{})  {}
func (discardWrapper) Fatalf(string, ...interface{}) {}
func (discardWrapper) Errorf(string, ...interface{}) {}
func (discardWrapper) Panicf(string, ...interface{}) {}
func schedTestLogger() *log.Logger {
	return log.NewWithFactory(func() log.Wrapper { return discardWrapper{} })
}

var schedKey = sync.OnceValues(func() (*rsa.PrivateKey, error) { return rsa.GenerateKey(rand.Reader, 2048) })

// schedEnv is a Hatchery wired to fakes.
type schedEnv struct {
	h     *Hatchery
	rec   *schedRecorder
	prov  *fakeProvider
	v1    *fakeV1
	v2    *fakeV2
	clock *schedClock
}

type schedOpt func(*Options, *schedEnv)

func withoutV1() schedOpt { return func(o *Options, _ *schedEnv) { o.V1 = nil } }
func withoutV2() schedOpt { return func(o *Options, _ *schedEnv) { o.V2 = nil } }

func schedConfig() config.CommonConfiguration {
	var c config.CommonConfiguration
	c.Name = "vsphere-a"
	c.API.HTTP.URL = "http://api.example"
	c.API.MaxHeartbeatFailures = 10
	c.CDN.URL = "http://cdn.example"
	c.CDN.TCP.URL = "cdn.example:8090"
	c.Provision.MaxWorker = 10
	c.Provision.MaxConcurrentProvisioning = 10
	c.Provision.MaxConcurrentRegistering = 2
	c.Provision.MaxAttemptsNumberBeforeFailure = 5
	return c
}

func newSchedEnv(t *testing.T, mutate func(*config.CommonConfiguration), opts ...schedOpt) *schedEnv {
	t.Helper()
	key, err := schedKey()
	if err != nil {
		t.Fatal(err)
	}
	rec := &schedRecorder{}
	env := &schedEnv{
		rec:   rec,
		prov:  newFakeProvider(rec),
		v1:    newFakeV1(rec),
		v2:    newFakeV2(rec),
		clock: &schedClock{t: time.Date(2025, 1, 10, 8, 0, 0, 0, time.UTC)},
	}
	cfg := schedConfig()
	if mutate != nil {
		mutate(&cfg)
	}
	o := Options{
		Config:     cfg,
		V1:         env.v1,
		V2:         env.v2,
		Provider:   env.prov,
		PrivateKey: key,
		Logger:     schedTestLogger(),
		Now:        env.clock.now,
		Hostname:   "h1",
	}
	for _, opt := range opts {
		opt(&o, env)
	}
	h, err := New(o)
	if err != nil {
		t.Fatal(err)
	}
	// The v2 region comes from the sign-in; tests that skip Run set it here.
	if o.V2 != nil {
		h.v2Region = env.v2.Region()
	}
	env.h = h
	return env
}

// v1Job is a waiting v1 job.
func v1Job(id int64, reqs ...cds.Requirement) cds.WorkflowNodeJobRun {
	return cds.WorkflowNodeJobRun{ID: id, ProjectID: 1, Status: cds.StatusWaiting, Job: cds.ExecutedJob{Action: cds.Action{Requirements: reqs}}}
}

// v1Model is a registered vSphere v1 model.
func v1Model(id int64, group, name string) cds.Model {
	return cds.Model{
		ID: id, Name: name, Type: cds.ModelTypeVSphere, GroupID: 7, Group: cds.Group{ID: 7, Name: group},
		ModelVirtualMachine: cds.ModelVirtualMachine{Image: name, Cmd: "./worker", PostCmd: "sudo shutdown -h now"},
	}
}

const schedUUID = "0b9a1f4e-3a3c-4c8e-9a50-4d5b3b3c2a11"

// v2Info is a waiting v2 job on a vSphere model.
func v2Info(id string) cds.V2QueueJobInfo {
	return cds.V2QueueJobInfo{
		RunJob: cds.V2WorkflowRunJob{ID: id, Status: cds.V2StatusWaiting, Region: "eu-v2", Job: cds.V2Job{RunsOn: cds.V2RunsOn{Model: "PROJ/github/org/repo/debian12"}}},
		Model:  cds.V2WorkerModel{Name: "debian12", Type: cds.ModelTypeVSphere, OSArch: "linux/amd64", Spec: []byte(`{"image":"debian12-tpl"}`)},
	}
}

// takeRequest pops the spawn request the main loop pushed, if any.
func (e *schedEnv) takeRequest(t *testing.T) (spawnRequest, bool) {
	t.Helper()
	select {
	case r := <-e.h.starterCh:
		return r, true
	default:
		return spawnRequest{}, false
	}
}

var errSpawnFailed = errors.New("clone failed")
