package cdssim

import (
	"context"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"
)

// doneRecorder collects OnWorkerDone calls.
type doneRecorder struct {
	mu    sync.Mutex
	names []string
}

func (d *doneRecorder) done(name string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.names = append(d.names, name)
}

func (d *doneRecorder) get() []string {
	d.mu.Lock()
	defer d.mu.Unlock()
	return append([]string(nil), d.names...)
}

// bookedV1Job signs in, adds a model and a job and books it like a hatchery would.
func bookedV1Job(t *testing.T, s *Server) (modelID, jobID int64) {
	t.Helper()
	v1 := signinV1(t, s)
	modelID = s.AddV1Model(V1Model{Name: "debian12", Group: &Group{ID: 7, Name: "grp"}})
	jobID = s.AddV1Job(V1Job{Region: "eu", ExecGroups: []Group{{ID: 7, Name: "grp"}}})
	wantStatus(t, call(t, s, "POST", "/queue/workflows/1/book", v1, map[string]any{"delay": 0}), http.StatusOK)
	return modelID, jobID
}

func TestSimulatedV1WorkerRunsJob(t *testing.T) {
	rec := &doneRecorder{}
	s, clk := newSim(t, Options{HoldJobs: true, OnWorkerDone: rec.done})
	key, _ := keys(t)
	modelID, jobID := bookedV1Job(t, s)

	tok := workerToken(t, key, v1WorkerClaims(clk.Now(), "calm-turing", jobID, modelID, "debian12"))
	env := cdsConfigEnv(t, "calm-turing", tok, "grp/debian12", map[string]any{"booked_job_id": jobID, "region": "eu"})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := s.StartWorker(env); err != nil {
		t.Fatalf("worker refused: %v", err)
	}
	if err := s.WaitUntil(ctx, func() bool { return s.V1JobStatus(jobID) == StatusBuilding }); err != nil {
		t.Fatal(err)
	}
	v1 := signinV1(t, s)
	r := call(t, s, "GET", "/worker", v1, nil)
	if !strings.Contains(string(r.body), `"name":"calm-turing"`) || !strings.Contains(string(r.body), `"status":"Building"`) {
		t.Fatalf("running worker not listed as Building: %s", r.body)
	}

	if !s.CompleteWorker("calm-turing") {
		t.Fatal("worker was not held")
	}
	if err := s.WaitUntil(ctx, func() bool { return len(rec.get()) == 1 }); err != nil {
		t.Fatal(err)
	}
	if got := rec.get(); got[0] != "calm-turing" {
		t.Fatalf("OnWorkerDone(%v)", got)
	}
	if st := s.V1JobStatus(jobID); st != StatusSuccess {
		t.Fatalf("job status %s, want Success", st)
	}
	if len(s.V1Workers()) != 0 {
		t.Fatal("finished worker still listed")
	}
	runs := s.WorkerRuns()
	if len(runs) != 1 || runs[0].Err != nil || !runs[0].Finished || runs[0].JobID != jobID {
		t.Fatalf("runs %+v", runs)
	}
}

func TestSimulatedV2WorkerRunsJob(t *testing.T) {
	rec := &doneRecorder{}
	s, clk := newSim(t, Options{Region: "eu", OnWorkerDone: rec.done})
	key, _ := keys(t)
	v2 := signinV2(t, s)
	id := s.AddV2Job(V2RunJob{JobID: "build"}, V2WorkerModel{Name: "debian12-vsphere", OSArch: "linux/amd64", Type: "vsphere"})
	env := cdsConfigEnv(t, "brave-hopper", workerToken(t, key, v2WorkerClaims(clk.Now(), "brave-hopper", id, "debian12-vsphere")),
		"debian12-vsphere", map[string]any{"run_job_id": id, "region": "eu"})

	// Not taken yet: the API refuses the worker.
	if err := s.RunWorker(context.Background(), env); err == nil || !strings.Contains(err.Error(), "Waiting") {
		t.Fatalf("worker of an untaken job accepted: %v", err)
	}
	wantStatus(t, call(t, s, "POST", "/v2/queue/eu/job/"+id+"/hatchery/take", v2, nil), http.StatusOK)
	if err := s.RunWorker(context.Background(), env); err != nil {
		t.Fatalf("worker refused: %v", err)
	}
	if st := s.V2JobStatus(id); st != StatusSuccess {
		t.Fatalf("job status %s, want Success", st)
	}
	if got := rec.get(); len(got) != 1 || got[0] != "brave-hopper" {
		t.Fatalf("OnWorkerDone(%v)", got)
	}
}

func TestSimulatedWorkerJobDurationUsesInjectedTimer(t *testing.T) {
	timer := make(chan time.Time)
	var asked time.Duration
	var mu sync.Mutex
	s, clk := newSim(t, Options{JobDuration: 5 * time.Minute, After: func(d time.Duration) <-chan time.Time {
		mu.Lock()
		asked = d
		mu.Unlock()
		return timer
	}})
	key, _ := keys(t)
	modelID, jobID := bookedV1Job(t, s)
	env := cdsConfigEnv(t, "calm-turing", workerToken(t, key, v1WorkerClaims(clk.Now(), "calm-turing", jobID, modelID, "debian12")),
		"grp/debian12", map[string]any{"booked_job_id": jobID})
	errc := make(chan error, 1)
	go func() { errc <- s.RunWorker(context.Background(), env) }()
	timer <- time.Time{}
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	if asked != 5*time.Minute || s.V1JobStatus(jobID) != StatusSuccess {
		t.Fatalf("asked %s, status %s", asked, s.V1JobStatus(jobID))
	}
}

func TestRegisterOnlyWorkerRegistersModel(t *testing.T) {
	rec := &doneRecorder{}
	s, clk := newSim(t, Options{OnWorkerDone: rec.done})
	key, _ := keys(t)
	v1 := signinV1(t, s)
	modelID := s.AddV1Model(V1Model{Name: "debian12", Group: &Group{ID: 7, Name: "grp"}, NeedRegistration: true})
	env := cdsConfigEnv(t, "register-kind-noether", workerToken(t, key, v1WorkerClaims(clk.Now(), "register-kind-noether", 0, modelID, "debian12")),
		"grp/debian12", nil)

	// The hatchery must book the model before registering it.
	if err := s.RunWorker(context.Background(), env); err == nil {
		t.Fatal("registration of an unbooked model accepted")
	}
	wantStatus(t, call(t, s, "PUT", "/worker/model/grp/debian12/book", v1, nil), http.StatusNoContent)
	if err := s.RunWorker(context.Background(), env); err != nil {
		t.Fatalf("registration refused: %v", err)
	}
	st, _ := s.V1Model(modelID)
	if st.Model.NeedRegistration || len(st.Model.RegisteredCapabilities) == 0 || st.Model.RegisteredOS == nil || st.BookedBy != "" {
		t.Fatalf("model after registration %+v", st)
	}
	if got := rec.get(); len(got) != 1 || got[0] != "register-kind-noether" {
		t.Fatalf("OnWorkerDone(%v)", got)
	}
}

func TestSimulatedWorkerRejections(t *testing.T) {
	s, clk := newSim(t, Options{})
	key, other := keys(t)
	modelID, jobID := bookedV1Job(t, s)
	now := clk.Now()
	good := v1WorkerClaims(now, "calm-turing", jobID, modelID, "debian12")
	extra := map[string]any{"booked_job_id": jobID}

	mutate := func(f func(c map[string]any)) map[string]any {
		c := map[string]any{}
		for k, v := range good {
			c[k] = v
		}
		w := map[string]any{}
		for k, v := range good["Worker"].(map[string]any) {
			w[k] = v
		}
		c["Worker"] = w
		f(c)
		return c
	}
	tests := []struct {
		name string
		env  map[string]string
		want string
	}{
		{"no CDS_CONFIG", map[string]string{"PATH": "/bin"}, "no CDS_CONFIG"},
		{"not base64", map[string]string{"CDS_CONFIG": "{not base64"}, "base64"},
		{"config key missing", cdsConfigEnv(t, "calm-turing", workerToken(t, key, good), "grp/debian12", map[string]any{"booked_job_id": jobID, "gelf_service_addr": nil}), "missing gelf_service_addr"},
		{"config log key lowercased", cdsConfigEnv(t, "calm-turing", workerToken(t, key, good), "grp/debian12", map[string]any{"booked_job_id": jobID, "log": map[string]any{"level": ""}}), "missing Level"},
		{"signed by another key", cdsConfigEnv(t, "calm-turing", workerToken(t, other, good), "grp/debian12", extra), "verification"},
		{"expired", cdsConfigEnv(t, "calm-turing", workerToken(t, key, mutate(func(c map[string]any) {
			c["iat"] = now.Add(-2 * time.Hour).Unix()
			c["exp"] = now.Add(-time.Hour).Unix()
		})), "grp/debian12", extra), "expired"},
		{"lowercase worker claim", cdsConfigEnv(t, "calm-turing", workerToken(t, key, mutate(func(c map[string]any) {
			c["worker"] = c["Worker"]
			delete(c, "Worker")
		})), "grp/debian12", extra), "missing Worker"},
		{"model name as worker_model", cdsConfigEnv(t, "calm-turing", workerToken(t, key, mutate(func(c map[string]any) {
			c["Worker"].(map[string]any)["worker_model"] = "debian12"
		})), "grp/debian12", extra), "sub"},
		{"nbf present", cdsConfigEnv(t, "calm-turing", workerToken(t, key, mutate(func(c map[string]any) { c["nbf"] = now.Unix() })), "grp/debian12", extra), "unexpected nbf"},
		{"register_only missing", cdsConfigEnv(t, "calm-turing", workerToken(t, key, mutate(func(c map[string]any) {
			delete(c["Worker"].(map[string]any), "register_only")
		})), "grp/debian12", extra), "missing register_only"},
		{"booked_job_id mismatch", cdsConfigEnv(t, "calm-turing", workerToken(t, key, good), "grp/debian12", nil), "booked_job_id"},
		{"model path without group", cdsConfigEnv(t, "calm-turing", workerToken(t, key, good), "debian12", extra), "CDS_CONFIG model"},
		{"job not booked by hatchery", cdsConfigEnv(t, "w2", workerToken(t, key, v1WorkerClaims(now, "w2", s.AddV1Job(V1Job{}), modelID, "debian12")), "grp/debian12",
			map[string]any{"booked_job_id": int64(2)}), "booked by"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := s.RunWorker(context.Background(), tt.env)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("error %v, want one mentioning %q", err, tt.want)
			}
		})
	}
	if st := s.V1JobStatus(jobID); st != StatusWaiting {
		t.Fatalf("a refused worker changed the job: %s", st)
	}
	runs := s.WorkerRuns()
	if len(runs) != len(tests) {
		t.Fatalf("%d runs recorded, want %d", len(runs), len(tests))
	}
	for _, r := range runs {
		if r.Err == nil {
			t.Fatalf("refused run without error: %+v", r)
		}
	}
	if len(s.V1Workers()) != 0 {
		t.Fatal("a refused worker is listed")
	}
}

func TestCloseEndsWebsocketsAndHeldWorkers(t *testing.T) {
	s, clk := newSim(t, Options{HoldJobs: true})
	key, _ := keys(t)
	modelID, jobID := bookedV1Job(t, s)
	c := dialWS(t, s, "/v2/hatchery/ws", signinV2(t, s))
	waitClients(t, s, 0, 1)
	env := cdsConfigEnv(t, "calm-turing", workerToken(t, key, v1WorkerClaims(clk.Now(), "calm-turing", jobID, modelID, "debian12")),
		"grp/debian12", map[string]any{"booked_job_id": jobID})
	if err := s.StartWorker(env); err != nil {
		t.Fatal(err)
	}

	// The client must keep reading for the close handshake, as the hatchery's loop does.
	readErr := make(chan error, 1)
	go func() {
		_, _, err := c.Read(context.Background())
		readErr <- err
	}()
	s.Close()
	if code := websocket.CloseStatus(<-readErr); code != websocket.StatusGoingAway {
		t.Fatalf("websocket closed with %d, want 1001 (going away)", code)
	}
	runs := s.WorkerRuns()
	if len(runs) != 1 || runs[0].Err == nil || runs[0].Finished {
		t.Fatalf("held worker after Close: %+v", runs)
	}
}
