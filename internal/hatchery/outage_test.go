package hatchery

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/hatchery-vsphere/hatchery-vsphere/internal/cds"
	"github.com/hatchery-vsphere/hatchery-vsphere/internal/cdssim"
	"github.com/hatchery-vsphere/hatchery-vsphere/internal/config"
)

// outageMode is how flakyAPI answers while the API is down.
type outageMode int

const (
	apiUp         outageMode = iota
	apiError503              // the API answers 503
	apiConnClosed            // the connection is closed before any answer
)

// flakyAPI fronts the simulated API and fails every request while down, counting the
// failed requests per path. up is closed while the API is up: the clients' websocket
// reconnection pause waits on it instead of a timer.
type flakyAPI struct {
	next http.Handler

	mu      sync.Mutex
	mode    outageMode
	up      chan struct{}
	failed  map[string]int
	changed chan struct{}
}

func newFlakyAPI(next http.Handler) *flakyAPI {
	up := make(chan struct{})
	close(up)
	return &flakyAPI{next: next, up: up, failed: make(map[string]int), changed: make(chan struct{})}
}

func (f *flakyAPI) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	mode := f.mode
	if mode != apiUp {
		f.failed[r.URL.Path]++
		close(f.changed)
		f.changed = make(chan struct{})
	}
	f.mu.Unlock()
	switch mode {
	case apiError503:
		http.Error(w, `{"id":0,"message":"service unavailable"}`, http.StatusServiceUnavailable)
	case apiConnClosed:
		conn, _, err := http.NewResponseController(w).Hijack()
		if err == nil {
			conn.Close()
		}
	default:
		f.next.ServeHTTP(w, r)
	}
}

func (f *flakyAPI) set(mode outageMode) {
	f.mu.Lock()
	defer f.mu.Unlock()
	wasUp := f.mode == apiUp
	f.mode = mode
	switch {
	case wasUp && mode != apiUp:
		f.up = make(chan struct{})
	case !wasUp && mode == apiUp:
		close(f.up)
	}
}

func (f *flakyAPI) upCh() <-chan struct{} {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.up
}

// waitFailed waits until n requests to path have been failed.
func (f *flakyAPI) waitFailed(t *testing.T, path string, n int) {
	t.Helper()
	for {
		f.mu.Lock()
		got, ch := f.failed[path], f.changed
		f.mu.Unlock()
		if got >= n {
			return
		}
		select {
		case <-ch:
		case <-t.Context().Done():
			t.Fatalf("waiting for %d failed requests to %s: %d", n, path, got)
		}
	}
}

// pause is the clients' pause: HTTP retries go on at once, websocket reconnections wait for
// the API to be up again.
func (f *flakyAPI) pause(ctx context.Context, d time.Duration) error {
	if d < time.Second {
		return ctx.Err()
	}
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-f.upCh():
		return nil
	}
}

func waitSim(t *testing.T, sim *cdssim.Server, what string, cond func() bool) {
	t.Helper()
	// The deadline only turns a hang into a failure; nothing is timed.
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	if err := sim.WaitUntil(ctx, cond); err != nil {
		t.Fatalf("waiting for %s: %v", what, err)
	}
}

func heartbeatCounts(sim *cdssim.Server) (v1, v2 int) {
	for _, hb := range sim.Heartbeats() {
		if hb.V2 {
			v2++
		} else {
			v1++
		}
	}
	return v1, v2
}

func signinCounts(sim *cdssim.Server) (v1, v2 int) {
	for _, s := range sim.Services() {
		v1 += s.SigninCount
	}
	for _, h := range sim.Hatcheries() {
		v2 += h.SigninCount
	}
	return v1, v2
}

// TestCDSOutageShorterThanTheHeartbeatBudgetLosesNothing runs the framework through the real
// API clients against the simulated API behind a switch that fails every request: an
// outage of maxHeartbeatFailures heartbeats (503s, then closed connections) stops nothing;
// afterwards heartbeats resume and each job queued during the outage is taken exactly once.
// Then the sessions expire, then the API forgets them: both clients sign in again and the
// heartbeats go on.
func TestCDSOutageShorterThanTheHeartbeatBudgetLosesNothing(t *testing.T) {
	key, err := schedKey()
	if err != nil {
		t.Fatal(err)
	}
	clock := &schedClock{t: time.Date(2025, 1, 10, 8, 0, 0, 0, time.UTC)}
	sim := cdssim.New(cdssim.Options{
		HatcheryName: "vsphere-a", Region: "eu", SigningKey: key, Now: clock.now,
		SessionLifetime: time.Hour,
		CDN:             cdssim.CDNConfig{HTTPURL: "http://cdn.sim", TCPURL: "cdn.sim:8090"},
	})
	if err := sim.Start(); err != nil {
		t.Fatal(err)
	}
	defer sim.Close()
	api := newFlakyAPI(sim.Handler())
	front := httptest.NewServer(api)
	defer front.Close()

	apiCfg := cds.Config{URL: front.URL, Now: clock.now, Pause: api.pause, RequestTimeout: 10 * time.Second}
	v1, err := cds.NewV1(apiCfg, cds.V1SigninRequest{
		Token:   sim.NewBuiltinConsumerToken(),
		Service: cds.Service{Name: "vsphere-a", Type: cds.ServiceTypeHatchery, Config: json.RawMessage(`{}`), PublicKey: cds.PublicKeyPEM(&key.PublicKey)},
	})
	if err != nil {
		t.Fatal(err)
	}
	v2, err := cds.NewV2(apiCfg, cds.V2SigninRequest{
		Token: sim.NewHatcheryConsumerToken("vsphere-a"), Name: "vsphere-a", Type: cds.ModelTypeVSphere,
		Config: json.RawMessage(`{}`), PublicKey: cds.PublicKeyPEM(&key.PublicKey), Version: Version,
	})
	if err != nil {
		t.Fatal(err)
	}
	sim.AddV1Model(cdssim.V1Model{Name: "debian12-v1", Type: cds.ModelTypeVSphere,
		ModelVirtualMachine: cdssim.VirtualMachineModel{Image: "debian12", Cmd: "./worker"}})

	const budget = 3
	ticks := newSchedTicks("heartbeat-v1", "heartbeat-v2", "poll-v1", "poll-v2")
	e := newSchedEnv(t, func(c *config.CommonConfiguration) {
		c.API.HTTP.URL = front.URL
		c.API.MaxHeartbeatFailures = budget
	}, withTicks(ticks), func(o *Options, _ *schedEnv) {
		o.V1, o.V2 = v1, v2
		o.Now = clock.now
	})
	spawned := make(chan SpawnArguments, 4)
	e.prov.spawnIn = spawned

	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- e.h.Run(ctx) }()
	defer func() {
		cancel()
		<-done
	}()
	waitSim(t, sim, "the first heartbeats", func() bool { a, b := heartbeatCounts(sim); return a == 1 && b == 1 })

	// The outage: maxHeartbeatFailures heartbeats of each kind fail, the polls fail, and
	// jobs are queued meanwhile.
	api.set(apiError503)
	v1JobID := sim.AddV1Job(cdssim.V1Job{ProjectKey: "PROJ", WorkflowName: "wf", JobName: "build"})
	v2JobID := sim.AddV2Job(cdssim.V2RunJob{ProjectKey: "PROJ", WorkflowName: "wf"}, cdssim.V2WorkerModel{
		Name: "debian12", Type: cds.ModelTypeVSphere, OSArch: "linux/amd64", Spec: cdssim.V2ModelSpec{Image: "debian12"},
	})
	ticks.fire("poll-v1")
	ticks.fire("poll-v2")
	for beat := 1; beat <= budget; beat++ {
		if beat == budget {
			api.set(apiConnClosed)
		}
		ticks.fire("heartbeat-v1")
		ticks.fire("heartbeat-v2")
		// Each failed heartbeat is 3 attempts (§2.4).
		api.waitFailed(t, "/services/heartbeat", 3*beat)
		api.waitFailed(t, "/v2/hatchery/heartbeat", 3*beat)
	}
	select {
	case err := <-done:
		t.Fatalf("Run stopped during an outage within the heartbeat budget: %v", err)
	default:
	}

	// The API is back: heartbeats resume, and polling finds both jobs.
	api.set(apiUp)
	ticks.fire("heartbeat-v1")
	ticks.fire("heartbeat-v2")
	waitSim(t, sim, "heartbeats after the outage", func() bool { a, b := heartbeatCounts(sim); return a == 2 && b == 2 })
	ticks.fire("poll-v1")
	ticks.fire("poll-v2")
	got := map[string]bool{}
	for range 2 {
		a := <-spawned
		got[a.JobID] = true
	}
	if !got[v2JobID] || !got[strconv.FormatInt(v1JobID, 10)] {
		t.Errorf("spawned for jobs %v, want %d and %s", got, v1JobID, v2JobID)
	}

	// The sessions expire: both clients sign in again before their next call.
	clock.advance(2 * time.Hour)
	ticks.fire("heartbeat-v1")
	ticks.fire("heartbeat-v2")
	waitSim(t, sim, "heartbeats after the sessions expired", func() bool { a, b := heartbeatCounts(sim); return a == 3 && b == 3 })
	if a, b := signinCounts(sim); a != 2 || b != 2 {
		t.Errorf("sign-ins after expiry: v1 %d v2 %d, want 2 and 2", a, b)
	}

	// The API forgets the sessions: one heartbeat each is refused (401), the next signs in
	// again and goes through.
	sim.RevokeSessions()
	for range 2 {
		ticks.fire("heartbeat-v1")
		ticks.fire("heartbeat-v2")
	}
	waitSim(t, sim, "heartbeats after the sessions were revoked", func() bool { a, b := heartbeatCounts(sim); return a == 4 && b == 4 })
	if a, b := signinCounts(sim); a != 3 || b != 3 {
		t.Errorf("sign-ins after revocation: v1 %d v2 %d, want 3 and 3", a, b)
	}

	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Run = %v", err)
	}
	done <- nil // for the deferred cleanup
	if st, _ := sim.V1Job(v1JobID); st.BookCount != 1 {
		t.Errorf("v1 job booked %d times, want 1", st.BookCount)
	}
	if st, _ := sim.V2Job(v2JobID); st.TakeCount != 1 {
		t.Errorf("v2 job taken %d times, want 1", st.TakeCount)
	}
	if n := len(e.prov.spawned()); n != 2 {
		t.Errorf("%d spawns, want 2", n)
	}
	if rel := append(sim.RequestsTo(http.MethodDelete, "/queue/"), sim.RequestsTo(http.MethodDelete, "/v2/queue/")...); len(rel) != 0 {
		t.Errorf("%d jobs released, want none", len(rel))
	}
}
