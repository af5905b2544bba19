package cds

import (
	"bytes"
	"context"
	"encoding/json"
	"encoding/pem"
	"errors"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"
)

func compactJSON(t *testing.T, s string) string {
	t.Helper()
	var b bytes.Buffer
	if err := json.Compact(&b, []byte(s)); err != nil {
		t.Fatalf("compact %q: %v", s, err)
	}
	return b.String()
}

func TestSigninV1SendsRegistrationAndStoresSession(t *testing.T) {
	f := newFakeAPI(t, newTestClock())
	c := signedIn(t, f, &pauses{}, false)

	s := f.signinRequests()
	if len(s) != 1 {
		t.Fatalf("sign-ins = %d, want 1", len(s))
	}
	want := `{"token":"v1-consumer-token","service":{"id":0,"name":"vsphere-a","type":"hatchery","http_url":"http://hatchery:8086",` +
		`"config":{"commonConfiguration":{"name":"vsphere-a"}},` +
		`"public_key":"LS0tLS1CRUdJTiBSU0EgUFVCTElDIEtFWS0tLS0tCkFBPT0KLS0tLS1FTkQgUlNBIFBVQkxJQyBLRVktLS0tLQo=",` +
		`"region":"eu","ignore_job_with_no_region":null,"last_heartbeat":"0001-01-01T00:00:00Z",` +
		`"monitoring_status":{"now":"0001-01-01T00:00:00Z","lines":null},"version":"","up_to_date":false}}`
	if got := string(s[0].Body); got != want {
		t.Errorf("sign-in body:\n got %s\nwant %s", got, want)
	}
	if h := s[0].Header.Get("Authorization"); h != "" {
		t.Errorf("sign-in carries Authorization %q", h)
	}
	if !c.SignedIn() || !c.SessionValid() || c.ServiceID() != 42 {
		t.Errorf("after sign-in: signedIn=%v valid=%v serviceID=%d", c.SignedIn(), c.SessionValid(), c.ServiceID())
	}
	if k := c.APIPublicKey(); k == nil || !k.Equal(&testKey().PublicKey) {
		t.Errorf("API public key not stored")
	}
}

func TestSigninV2StoresRegionAndHatchery(t *testing.T) {
	f := newFakeAPI(t, newTestClock())
	c := signedIn(t, f, &pauses{}, true)
	s := f.signinRequests()
	if len(s) != 1 || s[0].Path != "/v2/auth/consumer/hatchery/signin" {
		t.Fatalf("sign-ins = %+v", s)
	}
	want := `{"token":"v2-consumer-token","name":"vsphere-a","type":"vsphere","http_url":"http://hatchery:8086",` +
		`"config":{"commonConfiguration":{"name":"vsphere-a"}},"public_key":"UEVN","version":"0.57.0"}`
	if got := string(s[0].Body); got != want {
		t.Errorf("sign-in body:\n got %s\nwant %s", got, want)
	}
	if c.Region() != "granted-region" || c.HatcheryID() != "3f1c2d6e-9a7b-4c1d-8e2f-0a1b2c3d4e5f" || !c.UpToDate() || !c.SignedIn() {
		t.Errorf("region=%q hatchery=%q upToDate=%v", c.Region(), c.HatcheryID(), c.UpToDate())
	}
}

func TestSigninFailsOnBadSigningKey(t *testing.T) {
	for name, hdr := range map[string]string{
		"missing":    "",
		"not base64": "%%%",
		"not PEM":    "bm90IGEgcGVt",
		"wrong type": "LS0tLS1CRUdJTiBDRVJUSUZJQ0FURS0tLS0tCkFBPT0KLS0tLS1FTkQgQ0VSVElGSUNBVEUtLS0tLQo=",
	} {
		t.Run(name, func(t *testing.T) {
			f := newFakeAPI(t, newTestClock())
			f.signingHdr = &hdr
			for _, v2 := range []bool{false, true} {
				var c *Client
				if v2 {
					c, _ = NewV2(testConfig(f, &pauses{}), v2SigninRequest())
				} else {
					c, _ = NewV1(testConfig(f, &pauses{}), v1SigninRequest())
				}
				err := c.Signin(context.Background())
				if !errors.Is(err, ErrSigningKey) {
					t.Errorf("v2=%v: err = %v, want ErrSigningKey", v2, err)
				}
				if c.SignedIn() || c.SessionValid() {
					t.Errorf("v2=%v: client counts as signed in", v2)
				}
			}
		})
	}
}

type endpointCase struct {
	name     string
	v2       bool
	call     func(context.Context, *Client) (any, error)
	method   string
	path     string
	query    string
	body     string // "" = no body
	response string
	want     any
}

func TestEndpoints(t *testing.T) {
	when := time.Date(2025, 1, 10, 8, 0, 1, 500000000, time.UTC)
	region := "eu"
	cases := []endpointCase{
		{name: "heartbeat v1", call: func(ctx context.Context, c *Client) (any, error) {
			return nil, c.Heartbeat(ctx, MonitoringStatus{Now: when, Lines: []MonitoringStatusLine{{Status: "OK", Component: "Version", Value: "0.57.0", Type: "hatchery", Service: "vsphere-a", Hostname: "h1"}}})
		}, method: "POST", path: "/services/heartbeat",
			body: `{"now":"2025-01-10T08:00:01.5Z","lines":[{"status":"OK","component":"Version","value":"0.57.0","type":"hatchery","service":"vsphere-a","hostname":"h1"}]}`},
		{name: "heartbeat v2", v2: true, call: func(ctx context.Context, c *Client) (any, error) {
			return nil, c.Heartbeat(ctx, MonitoringStatus{Now: when})
		}, method: "POST", path: "/v2/hatchery/heartbeat", body: `{"now":"2025-01-10T08:00:01.5Z","lines":null}`},
		{name: "cdn config v1", call: func(ctx context.Context, c *Client) (any, error) { return c.CDNConfig(ctx) },
			method: "GET", path: "/config/cdn", response: `{"http_url":"http://cdn","tcp_url":"cdn:8090","tcp_url_enable_tls":true,"other":1}`,
			want: CDNConfig{HTTPURL: "http://cdn", TCPURL: "cdn:8090", TCPURLEnableTLS: true}},
		{name: "cdn config v2", v2: true, call: func(ctx context.Context, c *Client) (any, error) { return c.CDNConfig(ctx) },
			method: "GET", path: "/v2/config/cdn", response: `{"http_url":"http://cdn"}`, want: CDNConfig{HTTPURL: "http://cdn"}},
		{name: "sign out", call: func(ctx context.Context, c *Client) (any, error) { return nil, c.SignOut(ctx) },
			method: "POST", path: "/auth/consumer/signout"},
		{name: "models enabled", call: func(ctx context.Context, c *Client) (any, error) { return c.WorkerModelsEnabled(ctx) },
			method: "GET", path: "/worker/model/enabled",
			response: `[{"id":42,"name":"debian12","type":"vsphere","group_id":7,"group":{"id":7,"name":"grp"},"need_registration":true,` +
				`"user_last_modified":"2025-01-10T08:00:01.5Z","nb_spawn_err":2,"registered_os":"linux","registered_arch":null,` +
				`"registered_capabilities":[{"name":"git","type":"binary","value":"git"}],"model_virtual_machine":{"image":"img","cmd":"worker"},` +
				`"model_docker":{"cmd":"dw"},"unknown":{}}]`,
			want: []Model{{ID: 42, Name: "debian12", Type: "vsphere", GroupID: 7, Group: Group{ID: 7, Name: "grp"}, NeedRegistration: true,
				UserLastModified: when, NbSpawnErr: 2, RegisteredOS: ptr("linux"),
				RegisteredCapabilities: []Requirement{{Name: "git", Type: "binary", Value: "git"}},
				ModelVirtualMachine:    ModelVirtualMachine{Image: "img", Cmd: "worker"}, ModelDocker: ModelDocker{Cmd: "dw"}}}},
		{name: "model get", call: func(ctx context.Context, c *Client) (any, error) { return c.WorkerModelGet(ctx, "grp", "debian12") },
			method: "GET", path: "/worker/model/grp/debian12", response: `{"id":42,"name":"debian12"}`, want: Model{ID: 42, Name: "debian12"}},
		{name: "model secrets", call: func(ctx context.Context, c *Client) (any, error) { return c.WorkerModelSecrets(ctx, "grp", "debian12") },
			method: "GET", path: "/worker/model/grp/debian12/secret",
			response: `[{"id":"s1","created":"2025-01-10T08:00:01.5Z","worker_model_id":42,"name":"pwd","value":"x"}]`,
			want:     []ModelSecret{{ID: "s1", Created: when, WorkerModelID: 42, Name: "pwd", Value: "x"}}},
		{name: "model book", call: func(ctx context.Context, c *Client) (any, error) {
			return nil, c.WorkerModelBook(ctx, "grp", "debian12")
		},
			method: "PUT", path: "/worker/model/grp/debian12/book"},
		{name: "model spawn error", call: func(ctx context.Context, c *Client) (any, error) {
			return nil, c.WorkerModelSpawnError(ctx, "grp", "debian12", SpawnErrorForm{Error: "cannot spawn worker for register: boom"})
		}, method: "PUT", path: "/worker/model/grp/debian12/error", body: `{"Error":"cannot spawn worker for register: boom","Logs":null}`},
		{name: "worker list", call: func(ctx context.Context, c *Client) (any, error) { return c.WorkerList(ctx) },
			method: "GET", path: "/worker",
			response: `[{"id":"w1","name":"calm-turing","lastbeat":"2025-01-10T08:00:01.5Z","model_id":42,"model_name":"debian12","job_run_id":null,"status":"Building","hatchery_id":3,"hatchery_name":"vsphere-a","uptodate":true}]`,
			want: []Worker{{ID: "w1", Name: "calm-turing", LastBeat: when, ModelID: ptr(int64(42)), ModelName: ptr("debian12"), Status: "Building",
				HatcheryID: ptr(int64(3)), HatcheryName: "vsphere-a", Uptodate: true}}},
		{name: "worker disable", call: func(ctx context.Context, c *Client) (any, error) { return nil, c.WorkerDisable(ctx, "w1") },
			method: "POST", path: "/worker/w1/disable"},
		{name: "v2 worker list", v2: true, call: func(ctx context.Context, c *Client) (any, error) { return c.V2WorkerList(ctx) },
			method: "GET", path: "/v2/worker",
			response: `[{"id":"w2","name":"brave-hopper","last_beat":"2025-01-10T08:00:01.5Z","model_name":"m","run_job_id":"r","status":"Waiting","hatchery_id":"h"}]`,
			want:     []V2Worker{{ID: "w2", Name: "brave-hopper", LastBeat: when, ModelName: "m", RunJobID: "r", Status: "Waiting", HatcheryID: "h"}}},
		{name: "queue workflows with regions", call: func(ctx context.Context, c *Client) (any, error) {
			return c.QueueWorkflows(ctx, ModelTypeVSphere, []string{"eu", ""})
		}, method: "GET", path: "/queue/workflows", query: "modelType=vsphere&region=eu&region=",
			response: `[{"id":98765,"project_id":3,"workflow_node_run_id":5,"status":"Waiting","queued":"2025-01-10T08:00:01.5Z","bookedby":{},` +
				`"exec_groups":[{"id":7,"name":"grp"}],"job":{"action":{"requirements":[{"name":"eu","type":"region","value":"eu"}]}},"region":"eu","model_type":"vsphere","header":{"a":"b"}}]`,
			want: []WorkflowNodeJobRun{{ID: 98765, ProjectID: 3, WorkflowNodeRunID: 5, Status: "Waiting", Queued: when, ExecGroups: []Group{{ID: 7, Name: "grp"}},
				Job:    ExecutedJob{Action: Action{Requirements: []Requirement{{Name: "eu", Type: "region", Value: "eu"}}}},
				Region: &region, ModelType: "vsphere", Header: map[string]string{"a": "b"}}}},
		{name: "queue workflows no region", call: func(ctx context.Context, c *Client) (any, error) {
			return c.QueueWorkflows(ctx, ModelTypeVSphere, nil)
		}, method: "GET", path: "/queue/workflows", query: "modelType=vsphere", response: `[]`, want: []WorkflowNodeJobRun{}},
		{name: "job infos", call: func(ctx context.Context, c *Client) (any, error) { return c.QueueJobInfo(ctx, 98765) },
			method: "GET", path: "/queue/workflows/98765/infos", response: `{"id":98765,"status":"Waiting","bookedby":{"name":"other","id":9}}`,
			want: WorkflowNodeJobRun{ID: 98765, Status: "Waiting", BookedBy: ServiceRef{Name: "other", ID: 9}}},
		{name: "job book", call: func(ctx context.Context, c *Client) (any, error) { return c.QueueJobBook(ctx, 98765) },
			method: "POST", path: "/queue/workflows/98765/book", body: `{"delay":0}`,
			response: `{"project_key":"PRJ","workflow_name":"wf","workflow_id":1,"run_id":2,"node_run_name":"n","node_run_id":3,"job_name":"j"}`,
			want:     WorkflowNodeJobRunBooked{ProjectKey: "PRJ", WorkflowName: "wf", WorkflowID: 1, RunID: 2, NodeRunName: "n", NodeRunID: 3, JobName: "j"}},
		{name: "job release", call: func(ctx context.Context, c *Client) (any, error) { return nil, c.QueueJobRelease(ctx, 98765) },
			method: "DELETE", path: "/queue/workflows/98765/book"},
		{name: "job spawn infos", call: func(ctx context.Context, c *Client) (any, error) {
			return nil, c.QueueJobSendSpawnInfo(ctx, 98765, []SpawnInfo{{RemoteTime: when, Message: SpawnMsg{ID: MsgSpawnInfoHatcheryStarts, Args: []string{"vsphere-a", "calm-turing", "grp/debian12"}}}})
		}, method: "POST", path: "/queue/workflows/98765/spawn/infos",
			body: `[{"api_time":"0001-01-01T00:00:00Z","remote_time":"2025-01-10T08:00:01.5Z","message":{"id":"MsgSpawnInfoHatcheryStarts","args":["vsphere-a","calm-turing","grp/debian12"]}}]`},
		{name: "job result", call: func(ctx context.Context, c *Client) (any, error) {
			return nil, c.QueueJobResult(ctx, 98765, Result{ID: 98765, BuildID: 98765, Status: StatusFail, Reason: "too many attempts", RemoteTime: when})
		}, method: "POST", path: "/queue/workflows/98765/result",
			body: `{"id":98765,"buildID":98765,"status":"Fail","reason":"too many attempts","remoteTime":"2025-01-10T08:00:01.5Z"}`},
		{name: "v2 queue with osarch", v2: true, call: func(ctx context.Context, c *Client) (any, error) {
			return c.V2Queue(ctx, "granted-region", []string{"linux/amd64", "linux/arm64"})
		}, method: "GET", path: "/v2/queue/granted-region", query: "osarch=linux/amd64&osarch=linux/arm64",
			response: `[{"id":"0b9a1f4e-3a3c-4c8e-9a50-4d5b3b3c2a11","job_id":"build","status":"Waiting","region":"r","run_number":4,"job":{"runs-on":"my-model"}}]`,
			want:     []V2WorkflowRunJob{{ID: "0b9a1f4e-3a3c-4c8e-9a50-4d5b3b3c2a11", JobID: "build", Status: "Waiting", Region: "r", RunNumber: 4, Job: V2Job{RunsOn: V2RunsOn{Model: "my-model"}}}}},
		{name: "v2 queue no osarch", v2: true, call: func(ctx context.Context, c *Client) (any, error) { return c.V2Queue(ctx, "r", nil) },
			method: "GET", path: "/v2/queue/r", response: `null`, want: []V2WorkflowRunJob(nil)},
		{name: "v2 job info", v2: true, call: func(ctx context.Context, c *Client) (any, error) { return c.V2QueueJobInfo(ctx, "r", "job-1") },
			method: "GET", path: "/v2/queue/r/job/job-1",
			response: `{"runjob":{"id":"job-1","status":"Waiting","region":"r","job":{"runs-on":{"model":"m","flavor":"large","memory":"4g"}}},` +
				`"model":{"name":"m","osarch":"linux/amd64","type":"vsphere","spec":{"image":"debian12"}}}`,
			want: V2QueueJobInfo{RunJob: V2WorkflowRunJob{ID: "job-1", Status: "Waiting", Region: "r", Job: V2Job{RunsOn: V2RunsOn{Model: "m", Flavor: "large", Memory: "4g"}}},
				Model: V2WorkerModel{Name: "m", OSArch: "linux/amd64", Type: "vsphere", Spec: json.RawMessage(`{"image":"debian12"}`)}}},
		{name: "v2 take", v2: true, call: func(ctx context.Context, c *Client) (any, error) { return c.V2QueueJobTake(ctx, "r", "job-1") },
			method: "POST", path: "/v2/queue/r/job/job-1/hatchery/take", response: `{"id":"job-1","status":"Scheduling","hatchery_name":"vsphere-a"}`,
			want: V2WorkflowRunJob{ID: "job-1", Status: "Scheduling", HatcheryName: "vsphere-a"}},
		{name: "v2 release", v2: true, call: func(ctx context.Context, c *Client) (any, error) { return nil, c.V2QueueJobRelease(ctx, "r", "job-1") },
			method: "DELETE", path: "/v2/queue/r/job/job-1/hatchery/take"},
		{name: "v2 info", v2: true, call: func(ctx context.Context, c *Client) (any, error) {
			return nil, c.V2QueueJobSendInfo(ctx, "r", "job-1", V2SendJobRunInfo{Level: V2InfoLevelInfo, Message: `Hatchery "vsphere-a" is starting`, Time: when})
		}, method: "POST", path: "/v2/queue/r/job/job-1/info", body: `{"level":"info","message":"Hatchery \"vsphere-a\" is starting","time":"2025-01-10T08:00:01.5Z"}`},
		{name: "v2 worker model", v2: true, call: func(ctx context.Context, c *Client) (any, error) {
			return c.V2WorkerModelGet(ctx, "PRJ", "github", "ovh/models", "debian12", "main")
		}, method: "GET", path: "/v2/project/PRJ/vcs/github/repository/ovh%2Fmodels/workermodel/debian12", query: "branch=main",
			response: `{"name":"debian12","type":"vsphere","osarch":"linux/amd64"}`,
			want:     V2WorkerModel{Name: "debian12", Type: "vsphere", OSArch: "linux/amd64"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			clock := newTestClock()
			f := newFakeAPI(t, clock)
			c := signedIn(t, f, &pauses{}, tc.v2)
			f.handle(tc.method+" "+tc.path, func(w http.ResponseWriter, r *http.Request) {
				if tc.response == "" {
					w.WriteHeader(http.StatusOK)
					return
				}
				_, _ = io.WriteString(w, tc.response)
			})
			session := c.sessionToken()
			got, err := tc.call(context.Background(), c)
			if err != nil {
				t.Fatalf("call: %v", err)
			}
			reqs := f.requests()
			if len(reqs) != 1 {
				t.Fatalf("requests = %d, want 1: %+v", len(reqs), reqs)
			}
			r := reqs[0]
			if r.Method != tc.method || r.Path != tc.path || r.RawQuery != tc.query {
				t.Errorf("request = %s %s?%s, want %s %s?%s", r.Method, r.Path, r.RawQuery, tc.method, tc.path, tc.query)
			}
			if string(r.Body) != tc.body {
				t.Errorf("body:\n got %s\nwant %s", r.Body, tc.body)
			}
			assertStandardHeaders(t, r.Header, clock.Now(), session)
			if tc.want != nil && !reflect.DeepEqual(got, tc.want) {
				t.Errorf("decoded:\n got %#v\nwant %#v", got, tc.want)
			}
		})
	}
}

func ptr[T any](v T) *T { return &v }

func assertStandardHeaders(t *testing.T, h http.Header, now time.Time, session string) {
	t.Helper()
	wantDate := now.Format(DateLayout)
	if h.Get("Date") != wantDate || h.Get("X-CDS-RemoteTime") != wantDate {
		t.Errorf("Date=%q X-CDS-RemoteTime=%q, want %q", h.Get("Date"), h.Get("X-CDS-RemoteTime"), wantDate)
	}
	if h.Get("Content-Type") != "application/json" {
		t.Errorf("Content-Type = %q", h.Get("Content-Type"))
	}
	if h.Get("Authorization") != "Bearer "+session || session == "" {
		t.Errorf("Authorization = %q, want the session", h.Get("Authorization"))
	}
	if strings.EqualFold(h.Get("Connection"), "close") {
		t.Errorf("Connection: close sent; connections should be reused")
	}
}

func TestDateHeaderLayout(t *testing.T) {
	at := time.Date(2025, 1, 2, 3, 4, 5, 0, time.FixedZone("", 3600))
	if got := at.Format(DateLayout); got != "2 Jan 2025 03:04:05 +0100" {
		t.Errorf("layout gives %q", got)
	}
}

func TestWrongClientSendsNothing(t *testing.T) {
	f := newFakeAPI(t, newTestClock())
	v1 := signedIn(t, f, &pauses{}, false)
	v2 := signedIn(t, f, &pauses{}, true)
	if _, err := v1.V2Queue(context.Background(), "r", nil); !errors.Is(err, ErrWrongClient) {
		t.Errorf("v2 endpoint on v1 client: %v", err)
	}
	if _, err := v2.WorkerModelsEnabled(context.Background()); !errors.Is(err, ErrWrongClient) {
		t.Errorf("v1 endpoint on v2 client: %v", err)
	}
	if n := len(f.requests()); n != 0 {
		t.Errorf("%d requests sent", n)
	}
}

func TestExpiredSessionResignsInOnceWithOriginalBody(t *testing.T) {
	for _, v2 := range []bool{false, true} {
		clock := newTestClock()
		f := newFakeAPI(t, clock)
		c := signedIn(t, f, &pauses{}, v2)
		first := f.signinRequests()[0]
		clock.Advance(2 * time.Hour)
		if c.SessionValid() {
			t.Fatal("session still valid after 2 h")
		}
		if err := c.Heartbeat(context.Background(), MonitoringStatus{}); err != nil {
			t.Fatalf("v2=%v heartbeat: %v", v2, err)
		}
		s := f.signinRequests()
		if len(s) != 2 {
			t.Fatalf("v2=%v sign-ins = %d, want 2", v2, len(s))
		}
		if s[1].Path != first.Path || !bytes.Equal(s[1].Body, first.Body) {
			t.Errorf("v2=%v re-sign-in %s %s differs from original %s %s", v2, s[1].Path, s[1].Body, first.Path, first.Body)
		}
		if r := f.requests(); r[0].Header.Get("Authorization") != "Bearer "+c.sessionToken() {
			t.Errorf("v2=%v heartbeat sent with the old session", v2)
		}
	}
}

func TestConcurrentCallsShareOneResignin(t *testing.T) {
	clock := newTestClock()
	f := newFakeAPI(t, clock)
	c := signedIn(t, f, &pauses{}, false)
	clock.Advance(2 * time.Hour)
	gate := make(chan struct{})
	f.mu.Lock()
	f.signinGate = gate
	f.mu.Unlock()

	const n = 20
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for range n {
		wg.Go(func() { errs <- c.Heartbeat(context.Background(), MonitoringStatus{}) })
	}
	// Let the sign-in finish only once it has been received: every caller that found the
	// session expired before that point waits for this single sign-in.
	<-f.signinSeen
	close(gate)
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Errorf("heartbeat: %v", err)
		}
	}
	if got := len(f.signinRequests()); got != 2 {
		t.Errorf("sign-ins = %d, want 2 (startup + one re-sign-in)", got)
	}
	if got := len(f.requests()); got != n {
		t.Errorf("heartbeats = %d, want %d", got, n)
	}
}

func TestUnauthorizedClearsSession(t *testing.T) {
	f := newFakeAPI(t, newTestClock())
	c := signedIn(t, f, &pauses{}, false)
	f.handle("GET /worker", func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusUnauthorized)
		_, _ = io.WriteString(w, `{"id":10,"message":"unauthorized"}`)
	})
	_, err := c.WorkerList(context.Background())
	if !ErrorIs(err, ErrIDUnauthorized) {
		t.Fatalf("err = %v, want id 10", err)
	}
	if c.SessionValid() {
		t.Error("session kept after 401")
	}
	if len(f.requests()) != 1 {
		t.Errorf("401 was retried")
	}
	_ = c.Heartbeat(context.Background(), MonitoringStatus{})
	if got := len(f.signinRequests()); got != 2 {
		t.Errorf("sign-ins = %d, want 2 (the call after a 401 re-signs in)", got)
	}
}

func TestRetries(t *testing.T) {
	tests := []struct {
		name     string
		statuses []int
		wantErr  func(error) bool
		wantReqs int
	}{
		{"500 then success", []int{500, 502, 200}, func(err error) bool { return err == nil }, 3},
		{"409 exhausted returns the API error", []int{409, 409, 409}, func(err error) bool { return ErrorIs(err, ErrIDJobAlreadyBooked) }, 3},
		{"500 exhausted", []int{500, 500, 500}, func(err error) bool {
			return err != nil && strings.Contains(err.Error(), "request failed after 2 retries")
		}, 3},
		{"404 not retried", []int{404}, func(err error) bool { return ErrorIs(err, ErrIDNotFound) }, 1},
		{"403 not retried", []int{403}, func(err error) bool { return ErrorIs(err, ErrIDForbidden) }, 1},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f := newFakeAPI(t, newTestClock())
			p := &pauses{}
			c := signedIn(t, f, p, false)
			var mu sync.Mutex
			i := 0
			f.handle("POST /queue/workflows/1/book", func(w http.ResponseWriter, r *http.Request) {
				mu.Lock()
				st := tc.statuses[i]
				i++
				mu.Unlock()
				w.WriteHeader(st)
				switch st {
				case 409:
					_, _ = io.WriteString(w, `{"id":89,"message":"already booked"}`)
				case 404:
					_, _ = io.WriteString(w, `{"id":38,"message":"not found"}`)
				case 403:
					_, _ = io.WriteString(w, `{"id":11,"message":"forbidden"}`)
				case 200:
					_, _ = io.WriteString(w, `{"job_name":"j"}`)
				}
			})
			_, err := c.QueueJobBook(context.Background(), 1)
			if !tc.wantErr(err) {
				t.Errorf("err = %v", err)
			}
			if got := len(f.requests()); got != tc.wantReqs {
				t.Errorf("attempts = %d, want %d", got, tc.wantReqs)
			}
			for _, d := range p.Get() {
				if d != 250*time.Millisecond {
					t.Errorf("pause %v, want 250ms", d)
				}
			}
			if got := len(p.Get()); got != tc.wantReqs-1 {
				t.Errorf("pauses = %d, want %d", got, tc.wantReqs-1)
			}
		})
	}
}

func TestTransportErrorIsRetried(t *testing.T) {
	f := newFakeAPI(t, newTestClock())
	c := signedIn(t, f, &pauses{}, false)
	var mu sync.Mutex
	calls := 0
	f.handle("GET /worker", func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		calls++
		n := calls
		mu.Unlock()
		if n == 1 {
			conn, _, err := w.(http.Hijacker).Hijack()
			if err == nil {
				conn.Close()
			}
			return
		}
		_, _ = io.WriteString(w, `[{"id":"w1","name":"n","status":"Waiting"}]`)
	})
	ws, err := c.WorkerList(context.Background())
	if err != nil || len(ws) != 1 || ws[0].Name != "n" {
		t.Fatalf("WorkerList = %v, %v", ws, err)
	}
}

func TestErrorWithoutIDIsGeneric(t *testing.T) {
	f := newFakeAPI(t, newTestClock())
	c := signedIn(t, f, &pauses{}, true)
	f.handle("GET /v2/worker", func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(http.StatusBadRequest) })
	_, err := c.V2WorkerList(context.Background())
	var apiErr *APIError
	if !errors.As(err, &apiErr) || apiErr.ID != 0 || apiErr.StatusCode != 400 || !strings.Contains(err.Error(), "HTTP 400") {
		t.Errorf("err = %#v", err)
	}
}

func TestCallRespectsContext(t *testing.T) {
	f := newFakeAPI(t, newTestClock())
	c := signedIn(t, f, &pauses{}, false)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := c.WorkerList(ctx); !errors.Is(err, context.Canceled) {
		t.Errorf("err = %v, want context.Canceled", err)
	}
}

func TestTLSTrust(t *testing.T) {
	f := newFakeAPIWith(t, newTestClock(), true)
	certPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: f.srv.Certificate().Raw})
	caFile := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(caFile, certPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	signin := func(cfg Config) error {
		c, err := NewV1(cfg, v1SigninRequest())
		if err != nil {
			return err
		}
		return c.Signin(context.Background())
	}
	base := Config{URL: f.srv.URL, Now: f.clock.Now, Pause: (&pauses{}).Pause}

	if err := signin(base); err == nil {
		t.Error("untrusted certificate accepted")
	}
	withCA := base
	withCA.CAFile = caFile
	if err := signin(withCA); err != nil {
		t.Errorf("with CAFile: %v", err)
	}
	insecure := base
	insecure.Insecure = true
	if err := signin(insecure); err != nil {
		t.Errorf("insecure: %v", err)
	}
	bad := base
	bad.CAFile = filepath.Join(t.TempDir(), "missing.pem")
	if _, err := NewV1(bad, v1SigninRequest()); err == nil {
		t.Error("missing CA file accepted")
	}
}
