package hatchery

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hatchery-vsphere/hatchery-vsphere/internal/cds"
	"github.com/hatchery-vsphere/hatchery-vsphere/internal/cdssim"
	"github.com/hatchery-vsphere/hatchery-vsphere/internal/config"
)

// schedTicks hands out test-driven tick channels by loop name; loops without one never
// tick.
type schedTicks struct {
	mu sync.Mutex
	ch map[string]chan time.Time
}

func newSchedTicks(names ...string) *schedTicks {
	t := &schedTicks{ch: make(map[string]chan time.Time)}
	for _, n := range names {
		t.ch[n] = make(chan time.Time)
	}
	return t
}

func (t *schedTicks) tick(name string, _ time.Duration) (<-chan time.Time, func()) {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.ch[name], func() {}
}

// fire delivers one tick; it returns once the loop has taken it.
func (t *schedTicks) fire(name string) {
	t.mu.Lock()
	ch := t.ch[name]
	t.mu.Unlock()
	ch <- time.Time{}
}

func withTicks(ticks *schedTicks) schedOpt {
	return func(o *Options, _ *schedEnv) { o.Tick = ticks.tick }
}

func TestHeartbeatFatalAfterMaxFailures(t *testing.T) {
	e := newSchedEnv(t, func(c *config.CommonConfiguration) { c.API.MaxHeartbeatFailures = 2 }, withoutV2())
	e.v1.heartbeatErr = &cds.APIError{ID: cds.ErrIDUnknown, StatusCode: 500}
	ticks := make(chan time.Time)
	done := make(chan error, 1)
	go func() { done <- e.h.heartbeatLoop(context.Background(), "v1", e.v1.Heartbeat, ticks) }()
	ticks <- time.Time{} // 2nd failure: tolerated
	ticks <- time.Time{} // 3rd failure: more than 2, fatal
	if err := <-done; err == nil {
		t.Fatal("heartbeat loop survived 3 consecutive failures with maxHeartbeatFailures = 2")
	}
	if n := len(e.rec.with("v1.Heartbeat")); n != 3 {
		t.Errorf("%d heartbeats, want 3", n)
	}
}

func TestHeartbeatSuccessResetsFailures(t *testing.T) {
	e := newSchedEnv(t, func(c *config.CommonConfiguration) { c.API.MaxHeartbeatFailures = 1 }, withoutV2())
	fail := &cds.APIError{ID: cds.ErrIDUnknown, StatusCode: 500}
	results := []error{fail, nil, fail, nil, fail, fail}
	var mu sync.Mutex
	beat := func(context.Context, cds.MonitoringStatus) error {
		mu.Lock()
		defer mu.Unlock()
		err := results[0]
		results = results[1:]
		return err
	}
	ticks := make(chan time.Time)
	done := make(chan error, 1)
	go func() { done <- e.h.heartbeatLoop(context.Background(), "v1", beat, ticks) }()
	for range 5 {
		ticks <- time.Time{}
	}
	if err := <-done; err == nil {
		t.Fatal("no fatal error after two consecutive failures")
	}
}

func TestHeartbeatForbiddenIsFatalAtOnce(t *testing.T) {
	e := newSchedEnv(t, func(c *config.CommonConfiguration) { c.API.MaxHeartbeatFailures = 10 }, withoutV2())
	e.v1.heartbeatErr = &cds.APIError{ID: cds.ErrIDForbidden, StatusCode: 403}
	if err := e.h.heartbeatLoop(context.Background(), "v1", e.v1.Heartbeat, nil); err == nil {
		t.Fatal("forbidden heartbeat not fatal")
	}
}

func TestRunStopsOnFatalV1Heartbeat(t *testing.T) {
	ticks := newSchedTicks()
	e := newSchedEnv(t, func(c *config.CommonConfiguration) { c.API.MaxHeartbeatFailures = 0 }, withoutV2(), withTicks(ticks))
	e.v1.heartbeatErr = errors.New("connection refused")
	err := e.h.Run(context.Background())
	if err == nil || !strings.Contains(err.Error(), "v1 heartbeat") {
		t.Fatalf("Run returned %v, want the v1 heartbeat error", err)
	}
	if got := e.rec.with("v1.SignOut"); len(got) != 1 {
		t.Errorf("sign-outs %q, want 1", got)
	}
}

func TestRunKeepsServingAfterFatalV2Heartbeat(t *testing.T) {
	ticks := newSchedTicks()
	e := newSchedEnv(t, func(c *config.CommonConfiguration) { c.API.MaxHeartbeatFailures = 0 }, withoutV1(), withTicks(ticks))
	e.v2.heartbeatErr = errors.New("connection refused")
	beats := make(chan struct{}, 1)
	e.v2.heartbeats = beats
	e.v2.events = make(chan cds.WebsocketJobQueueEvent)
	e.v2.jobs[schedUUID] = v2Info(schedUUID)
	spawned := make(chan SpawnArguments, 1)
	e.prov.spawnIn = spawned

	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- e.h.Run(ctx) }()
	<-beats // the only v2 heartbeat failed: fatal for the v2 heartbeat loop only
	e.v2.events <- cds.WebsocketJobQueueEvent{JobRunID: schedUUID, Region: "eu-v2"}
	a := <-spawned
	if a.JobID != schedUUID {
		t.Errorf("spawned job %q", a.JobID)
	}
	st := e.h.Status(ctx)
	var comps []string
	for _, l := range st.Lines {
		comps = append(comps, l.Component+"="+l.Value)
	}
	want := "Version=0.57.0|Uptime=0s|Time=2025-01-10T08:00:00Z|goroutine/V2QueuePolling=Running|" +
		"goroutine/workerStarter-0=Running"
	if got := strings.Join(comps, "|"); !strings.HasPrefix(got, want) || !strings.HasSuffix(got, "goroutine/mainRoutine=Running|Workers=0/10") {
		t.Errorf("status lines %s", got)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Run returned %v after cancel", err)
	}
}

func TestStatusLineOrderWithProviderLines(t *testing.T) {
	e := newSchedEnv(t, nil, withoutV1())
	e.prov.statusLines = []cds.MonitoringStatusLine{
		{Status: cds.MonitoringStatusOK, Component: "Workers", Value: "3/10"},
		{Status: cds.MonitoringStatusOK, Component: "VirtualMachines", Value: "41"},
		{Status: cds.MonitoringStatusOK, Component: "goroutine/hatchery-vsphere-metrics", Value: "Running"},
	}
	e.h.routines.Set("mainRoutine", true)
	var got []string
	for _, l := range e.h.Status(context.Background()).Lines {
		if l.Type != "hatchery" || l.Service != "vsphere-a" || l.Hostname != "h1" {
			t.Errorf("line not stamped: %+v", l)
		}
		got = append(got, l.Component)
	}
	want := "Version Uptime Time goroutine/hatchery-vsphere-metrics goroutine/mainRoutine Workers VirtualMachines"
	if strings.Join(got, " ") != want {
		t.Errorf("components %q, want %q", got, want)
	}
}

func TestStartupBootstrapsCDNAndRegion(t *testing.T) {
	ticks := newSchedTicks()
	e := newSchedEnv(t, func(c *config.CommonConfiguration) {
		c.CDN.URL = ""
		c.CDN.TCP.URL = ""
	}, withTicks(ticks))
	e.h.v2Region = ""
	if err := e.h.start(context.Background()); err != nil {
		t.Fatal(err)
	}
	if got := e.h.cdnInUse(); got != (cdnSettings{HTTPURL: "http://cdn.v2", TCPURL: "cdn.v2:8090", TCPUseTLS: true}) {
		t.Errorf("cdn %+v", got)
	}
	if got := e.h.region2(); got != "eu-v2" {
		t.Errorf("v2 region %q", got)
	}
	assertOrder(t, e.rec.all(), "v1.Signin", "v2.Signin")
}

func TestSigninRetriesThenGivesUp(t *testing.T) {
	ticks := newSchedTicks("signin-v1")
	e := newSchedEnv(t, nil, withoutV2(), withTicks(ticks))
	attempts := 0
	signin := func(context.Context) error {
		attempts++
		e.clock.advance(2 * time.Minute)
		return errors.New("API down")
	}
	done := make(chan error, 1)
	go func() { done <- e.h.signinWithRetry(context.Background(), "v1", signin) }()
	ticks.fire("signin-v1") // after the 1st failure (2 min)
	ticks.fire("signin-v1") // after the 2nd (4 min); the 3rd ends past 5 min
	if err := <-done; err == nil {
		t.Fatal("sign-in did not give up")
	}
	if attempts != 3 {
		t.Errorf("%d attempts, want 3", attempts)
	}
}

// TestEndToEndV2WithCDSSim runs the framework against the simulated CDS API through the
// real client: a queued v2 job is taken, the provider is asked to spawn with the right
// arguments, and the simulated worker accepts the JWT and CDS_CONFIG it is given.
func TestEndToEndV2WithCDSSim(t *testing.T) {
	key, err := schedKey()
	if err != nil {
		t.Fatal(err)
	}
	sim := cdssim.New(cdssim.Options{
		HatcheryName: "vsphere-a",
		Region:       "eu",
		SigningKey:   key,
		CDN:          cdssim.CDNConfig{HTTPURL: "http://cdn.sim", TCPURL: "cdn.sim:8090"},
	})
	if err := sim.Start(); err != nil {
		t.Fatal(err)
	}
	defer sim.Close()

	client, err := cds.NewV2(cds.Config{URL: sim.URL()}, cds.V2SigninRequest{
		Token:     sim.NewHatcheryConsumerToken("vsphere-a"),
		Name:      "vsphere-a",
		Type:      cds.ModelTypeVSphere,
		HTTPURL:   "http://localhost:8086",
		Config:    json.RawMessage(`{}`),
		PublicKey: cds.PublicKeyPEM(&key.PublicKey),
		Version:   Version,
	})
	if err != nil {
		t.Fatal(err)
	}
	ticks := newSchedTicks("poll-v2")
	e := newSchedEnv(t, func(c *config.CommonConfiguration) {
		c.API.HTTP.URL = sim.URL()
		c.CDN.URL, c.CDN.TCP.URL = "", ""
	}, withoutV1(), withTicks(ticks), func(o *Options, _ *schedEnv) {
		o.V2 = client
		o.Now = nil
	})
	type spawnResult struct {
		args SpawnArguments
		err  error
	}
	results := make(chan spawnResult, 2)
	e.prov.onSpawn = func(ctx context.Context, a SpawnArguments) error {
		env := make(map[string]string)
		for _, kv := range a.Env {
			k, v, _ := strings.Cut(kv, "=")
			env[k] = v
		}
		err := sim.RunWorker(ctx, env)
		results <- spawnResult{a, err}
		return err
	}

	id := sim.AddV2Job(cdssim.V2RunJob{}, cdssim.V2WorkerModel{
		Name: "debian12", Type: cds.ModelTypeVSphere, OSArch: "linux/amd64", Spec: cdssim.V2ModelSpec{Image: "debian12-tpl"},
	})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- e.h.Run(ctx) }()
	ticks.fire("poll-v2") // the job was queued before the websocket connected: polling finds it

	r := <-results
	if r.err != nil {
		t.Fatalf("simulated worker refused its configuration: %v", r.err)
	}
	a := r.args
	if a.JobID != id || a.Model.Name() != "debian12" || a.Model.VSphereSpec.Image != "debian12-tpl" || a.Region != "eu" {
		t.Errorf("spawn arguments %+v", a)
	}
	if !strings.Contains(a.LaunchScript, sim.URL()+"/download/worker/linux/amd64") {
		t.Errorf("launch script does not download the worker from the API:\n%s", a.LaunchScript)
	}
	cfg := decodeSchedConfig(t, a.Env)
	if cfg["cdn_endpoint"] != "http://cdn.sim" || cfg["region"] != "eu" || cfg["api_token"] != a.WorkerToken {
		t.Errorf("CDS_CONFIG %v", cfg)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Run: %v", err)
	}
	if st, _ := sim.V2Job(id); st.TakeCount != 1 || st.Job.Status != cdssim.StatusSuccess {
		t.Errorf("job %+v, want taken once and Success", st)
	}
	if n := len(e.prov.spawned()); n != 1 {
		t.Errorf("%d spawns, want 1", n)
	}
}
