package cdssim

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
)

func TestV1SigninRegistersServiceAndAnnouncesSigningKey(t *testing.T) {
	s, _ := newSim(t, Options{})
	k, _ := keys(t)
	body := v1SigninBody(s.NewBuiltinConsumerToken(), hatchName, publicKeyPEM(k), "eu")
	r := call(t, s, "POST", "/auth/consumer/builtin/signin", "", body)
	wantStatus(t, r, http.StatusOK)

	var out struct {
		Token   string `json:"token"`
		APIURL  string `json:"api_url"`
		Service struct {
			ID   int64  `json:"id"`
			Name string `json:"name"`
			Type string `json:"type"`
		} `json:"service"`
	}
	if err := json.Unmarshal(r.body, &out); err != nil {
		t.Fatal(err)
	}
	if out.Token == "" || out.Service.ID == 0 || out.Service.Name != hatchName || out.Service.Type != "hatchery" {
		t.Fatalf("unexpected sign-in response %s", r.body)
	}
	pemKey, err := base64.StdEncoding.DecodeString(r.header.Get("X-Api-Pub-Signing-Key"))
	if err != nil {
		t.Fatalf("X-Api-Pub-Signing-Key is not base64: %v", err)
	}
	if _, err := parseRSAPublicKeyPEM(pemKey); err != nil {
		t.Fatalf("X-Api-Pub-Signing-Key: %v", err)
	}

	// The session opens the v1 routes.
	wantStatus(t, call(t, s, "GET", "/worker/model/enabled", out.Token, nil), http.StatusOK)

	svcs := s.Services()
	if len(svcs) != 1 || svcs[0].Region == nil || *svcs[0].Region != "eu" || string(svcs[0].PublicKeyPEM) != string(publicKeyPEM(k)) {
		t.Fatalf("registered services %+v", svcs)
	}
}

func TestV2SigninReturnsGrantedRegion(t *testing.T) {
	s, _ := newSim(t, Options{Region: "gra"})
	k, _ := keys(t)
	r := call(t, s, "POST", "/v2/auth/consumer/hatchery/signin", "", v2SigninBody(s.NewHatcheryConsumerToken(hatchName), hatchName, publicKeyPEM(k)))
	wantStatus(t, r, http.StatusOK)
	var out struct {
		Token    string `json:"token"`
		Region   string `json:"region"`
		UpToDate bool   `json:"up_to_date"`
		Hatchery struct {
			ID   string `json:"id"`
			Name string `json:"name"`
		} `json:"hatchery"`
	}
	if err := json.Unmarshal(r.body, &out); err != nil {
		t.Fatal(err)
	}
	if out.Region != "gra" || !out.UpToDate || out.Hatchery.Name != hatchName || out.Hatchery.ID == "" {
		t.Fatalf("unexpected v2 sign-in response %s", r.body)
	}
	if r.header.Get("X-Api-Pub-Signing-Key") == "" {
		t.Fatal("no X-Api-Pub-Signing-Key header")
	}
	wantStatus(t, call(t, s, "GET", "/v2/queue/gra", out.Token, nil), http.StatusOK)
}

func TestSigninRejections(t *testing.T) {
	s, _ := newSim(t, Options{})
	k, _ := keys(t)
	pub := publicKeyPEM(k)
	wrongType := []byte(strings.Replace(string(pub), "RSA PUBLIC KEY", "PUBLIC KEY", 2))

	tests := []struct {
		name   string
		path   string
		body   any
		status int
		id     int
	}{
		{"v1 garbage token", "/auth/consumer/builtin/signin", v1SigninBody("not-a-token", hatchName, pub, nil), 401, 10},
		{"v1 with a v2 token", "/auth/consumer/builtin/signin", v1SigninBody(s.NewHatcheryConsumerToken(hatchName), hatchName, pub, nil), 401, 10},
		{"v1 public key PEM type", "/auth/consumer/builtin/signin", v1SigninBody(s.NewBuiltinConsumerToken(), hatchName, wrongType, nil), 400, 74},
		{"v1 public key not PEM", "/auth/consumer/builtin/signin", v1SigninBody(s.NewBuiltinConsumerToken(), hatchName, []byte("hello"), nil), 400, 74},
		{"v1 public key raw PEM instead of base64", "/auth/consumer/builtin/signin",
			[]byte(`{"token":"` + s.NewBuiltinConsumerToken() + `","service":{"name":"` + hatchName + `","type":"hatchery","config":{},"public_key":"-----BEGIN"}}`), 400, 74},
		{"v1 service type", "/auth/consumer/builtin/signin", func() any {
			b := v1SigninBody(s.NewBuiltinConsumerToken(), hatchName, pub, nil)
			b["service"].(map[string]any)["type"] = "vsphere"
			return b
		}(), 403, 11},
		{"v1 other service name", "/auth/consumer/builtin/signin", v1SigninBody(s.NewBuiltinConsumerToken(), "someone-else", pub, nil), 403, 11},
		{"v1 bare token (Q6)", "/auth/consumer/builtin/signin", map[string]any{"token": s.NewBuiltinConsumerToken()}, 403, 11},
		{"v2 wrong name", "/v2/auth/consumer/hatchery/signin", v2SigninBody(s.NewHatcheryConsumerToken("declared-name"), hatchName, pub), 403, 11},
		{"v2 with a v1 token", "/v2/auth/consumer/hatchery/signin", v2SigninBody(s.NewBuiltinConsumerToken(), hatchName, pub), 401, 10},
		{"v2 bad public key", "/v2/auth/consumer/hatchery/signin", v2SigninBody(s.NewHatcheryConsumerToken(hatchName), hatchName, wrongType), 400, 74},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			wantAPIError(t, call(t, s, "POST", tt.path, "", tt.body), tt.status, tt.id)
		})
	}
	if len(s.Services()) != 0 || len(s.Hatcheries()) != 0 {
		t.Fatal("a refused sign-in registered something")
	}
}

func TestV2SigninRefusedWithoutRegion(t *testing.T) {
	keys(t)
	s := New(Options{HatcheryName: hatchName, SigningKey: simKey})
	if err := s.Start(); err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	k, _ := keys(t)
	r := call(t, s, "POST", "/v2/auth/consumer/hatchery/signin", "", v2SigninBody(s.NewHatcheryConsumerToken(hatchName), hatchName, publicKeyPEM(k)))
	wantAPIError(t, r, 403, 11)
}

func TestSessionRequiredExpiresAndSignsOut(t *testing.T) {
	s, clk := newSim(t, Options{SessionLifetime: 10 * time.Minute})
	wantAPIError(t, call(t, s, "GET", "/worker", "", nil), 401, 10)
	wantAPIError(t, call(t, s, "GET", "/worker", "garbage", nil), 401, 10)

	v1 := signinV1(t, s)
	v2 := signinV2(t, s)
	wantStatus(t, call(t, s, "GET", "/worker", v1, nil), http.StatusOK)
	// A session only opens the routes of its own engine.
	wantAPIError(t, call(t, s, "GET", "/v2/worker", v1, nil), 403, 11)
	wantAPIError(t, call(t, s, "GET", "/worker", v2, nil), 403, 11)

	clk.Advance(10*time.Minute + time.Second)
	wantAPIError(t, call(t, s, "GET", "/worker", v1, nil), 401, 10)
	wantAPIError(t, call(t, s, "POST", "/v2/hatchery/heartbeat", v2, MonitoringStatus{}), 401, 10)

	// A fresh sign-in works again; sign-out kills that session.
	v1 = signinV1(t, s)
	wantStatus(t, call(t, s, "POST", "/auth/consumer/signout", v1, nil), http.StatusNoContent)
	wantAPIError(t, call(t, s, "GET", "/worker", v1, nil), 401, 10)
}

func TestHeartbeatsAndCDNConfig(t *testing.T) {
	s, _ := newSim(t, Options{CDN: CDNConfig{HTTPURL: "http://cdn", TCPURL: "cdn:8090"}})
	v1, v2 := signinV1(t, s), signinV2(t, s)
	hb := map[string]any{"now": "2025-01-10T08:00:00.123Z", "lines": []map[string]any{
		{"status": "OK", "component": "Version", "value": "0.57.0", "type": "hatchery", "service": hatchName, "hostname": "h1"},
	}}
	r := call(t, s, "POST", "/services/heartbeat", v1, hb)
	wantStatus(t, r, http.StatusOK)
	if len(r.body) != 0 {
		t.Fatalf("v1 heartbeat answered a body: %s", r.body)
	}
	wantStatus(t, call(t, s, "POST", "/v2/hatchery/heartbeat", v2, hb), http.StatusOK)
	wantAPIError(t, call(t, s, "POST", "/services/heartbeat", v1, []byte("{")), 400, 74)

	got := s.Heartbeats()
	if len(got) != 2 || got[0].V2 || !got[1].V2 || got[0].Name != hatchName || got[0].Status.Lines[0].Component != "Version" {
		t.Fatalf("heartbeats %+v", got)
	}
	r = call(t, s, "GET", "/v2/config/cdn", v2, nil)
	wantStatus(t, r, http.StatusOK)
	if string(r.body) != `{"tcp_url":"cdn:8090","tcp_url_enable_tls":false,"http_url":"http://cdn"}` {
		t.Fatalf("cdn config %s", r.body)
	}
	wantStatus(t, call(t, s, "GET", "/config/cdn", v1, nil), http.StatusOK)
}

func TestV1BookTwiceFailsReleaseAndExpiry(t *testing.T) {
	s, clk := newSim(t, Options{})
	v1 := signinV1(t, s)
	id := s.AddV1Job(V1Job{ProjectKey: "PROJ", WorkflowName: "wf", NodeRunName: "build", JobName: "compile", Region: "eu"})

	r := call(t, s, "POST", "/queue/workflows/1/book", v1, map[string]any{"delay": 0})
	wantStatus(t, r, http.StatusOK)
	var booked map[string]any
	_ = json.Unmarshal(r.body, &booked)
	if booked["project_key"] != "PROJ" || booked["job_name"] != "compile" || booked["node_run_name"] != "build" {
		t.Fatalf("book response %s", r.body)
	}
	wantAPIError(t, call(t, s, "POST", "/queue/workflows/1/book", v1, map[string]any{"delay": 0}), 403, 89)
	if st, _ := s.V1Job(id); st.BookedBy != hatchName || st.BookCount != 1 {
		t.Fatalf("job state %+v", st)
	}

	r = call(t, s, "GET", "/queue/workflows/1/infos", v1, nil)
	wantStatus(t, r, http.StatusOK)
	if !strings.Contains(string(r.body), `"bookedby":{"name":"vsphere-a"`) {
		t.Fatalf("infos do not show the booking: %s", r.body)
	}

	wantStatus(t, call(t, s, "DELETE", "/queue/workflows/1/book", v1, nil), http.StatusNoContent)
	wantStatus(t, call(t, s, "POST", "/queue/workflows/1/book", v1, map[string]any{"delay": 0}), http.StatusOK)

	// The API forgets a booking after its delay (120 s for delay 0).
	clk.Advance(121 * time.Second)
	wantStatus(t, call(t, s, "POST", "/queue/workflows/1/book", v1, map[string]any{"delay": 0}), http.StatusOK)

	wantAPIError(t, call(t, s, "POST", "/queue/workflows/999/book", v1, map[string]any{"delay": 0}), 404, 112)
	wantAPIError(t, call(t, s, "GET", "/queue/workflows/999/infos", v1, nil), 404, 112)
	wantAPIError(t, call(t, s, "POST", "/queue/workflows/1/book", v1, nil), 400, 74)
}

func TestV1QueueFiltersSpawnInfosAndResult(t *testing.T) {
	s, _ := newSim(t, Options{})
	v1 := signinV1(t, s)
	eu := s.AddV1Job(V1Job{Region: "eu", ModelType: "vsphere"})
	none := s.AddV1Job(V1Job{})
	s.AddV1Job(V1Job{Region: "us"})
	s.AddV1Job(V1Job{ModelType: "docker"})

	ids := func(path string) []int64 {
		r := call(t, s, "GET", path, v1, nil)
		wantStatus(t, r, http.StatusOK)
		var jobs []struct {
			ID     int64   `json:"id"`
			Region *string `json:"region"`
		}
		if err := json.Unmarshal(r.body, &jobs); err != nil {
			t.Fatal(err)
		}
		var out []int64
		for _, j := range jobs {
			out = append(out, j.ID)
		}
		return out
	}
	if got := ids("/queue/workflows?modelType=vsphere&region=eu&region="); len(got) != 2 || got[0] != eu || got[1] != none {
		t.Fatalf("region eu + no region: %v", got)
	}
	if got := ids("/queue/workflows?modelType=vsphere&region=eu"); len(got) != 1 || got[0] != eu {
		t.Fatalf("region eu only: %v", got)
	}
	if got := ids("/queue/workflows?modelType=vsphere"); len(got) != 3 {
		t.Fatalf("no region filter: %v", got)
	}

	infos := []map[string]any{{"api_time": "0001-01-01T00:00:00Z", "remote_time": "2025-01-10T08:00:01.5Z",
		"message": map[string]any{"id": "MsgSpawnInfoHatcheryStarts", "args": []string{hatchName, "calm-turing", "grp/debian12"}}}}
	wantStatus(t, call(t, s, "POST", "/queue/workflows/1/spawn/infos", v1, infos), http.StatusNoContent)
	bad := []map[string]any{{"message": map[string]any{"id": "X", "args": []int{1}}}}
	wantAPIError(t, call(t, s, "POST", "/queue/workflows/1/spawn/infos", v1, bad), 400, 74)

	res := map[string]any{"id": eu, "buildID": eu, "status": "Fail", "reason": "too many attempts", "remoteTime": "2025-01-10T08:00:01Z"}
	wantStatus(t, call(t, s, "POST", "/queue/workflows/1/result", v1, res), http.StatusNoContent)
	st, _ := s.V1Job(eu)
	if st.Status != StatusFail || len(st.SpawnInfos) != 1 || st.SpawnInfos[0].Message.Args[1] != "calm-turing" || st.Results[0].Reason != "too many attempts" {
		t.Fatalf("job state %+v", st)
	}
	if c := s.V1JobCounts(); c[StatusFail] != 1 || c[StatusWaiting] != 3 {
		t.Fatalf("counts %v", c)
	}
}

func TestV2TakeReleaseInfoAndRegions(t *testing.T) {
	s, _ := newSim(t, Options{Region: "eu"})
	v2 := signinV2(t, s)
	model := V2WorkerModel{Name: "debian12-vsphere", OSArch: "linux/amd64", Type: "vsphere", Spec: V2ModelSpec{Image: "debian12"}}
	id := s.AddV2Job(V2RunJob{JobID: "build", ProjectKey: "PROJ", WorkflowName: "wf"}, model)
	s.AddV2Job(V2RunJob{JobID: "arm", ModelOSArch: "linux/arm64"}, model)

	r := call(t, s, "GET", "/v2/queue/eu?osarch=linux/amd64", v2, nil)
	wantStatus(t, r, http.StatusOK)
	var jobs []V2RunJob
	_ = json.Unmarshal(r.body, &jobs)
	if len(jobs) != 1 || jobs[0].ID != id {
		t.Fatalf("osarch-filtered queue %s", r.body)
	}

	r = call(t, s, "GET", "/v2/queue/eu/job/"+id, v2, nil)
	wantStatus(t, r, http.StatusOK)
	var info struct {
		RunJob V2RunJob      `json:"runjob"`
		Model  V2WorkerModel `json:"model"`
	}
	_ = json.Unmarshal(r.body, &info)
	if info.RunJob.Status != StatusWaiting || info.Model.Spec.Image != "debian12" || info.RunJob.Job.RunsOn != "debian12-vsphere" {
		t.Fatalf("job info %s", r.body)
	}

	// Another region: not granted → 403; the job is not in that region anyway.
	wantAPIError(t, call(t, s, "POST", "/v2/queue/us/job/"+id+"/hatchery/take", v2, nil), 403, 11)
	wantAPIError(t, call(t, s, "POST", "/v2/queue/eu/job/00000000-0000-4000-8000-000000000000/hatchery/take", v2, nil), 404, 38)

	r = call(t, s, "POST", "/v2/queue/eu/job/"+id+"/hatchery/take", v2, nil)
	wantStatus(t, r, http.StatusOK)
	var taken V2RunJob
	_ = json.Unmarshal(r.body, &taken)
	if taken.Status != StatusScheduling || taken.HatcheryName != hatchName || taken.Region != "eu" {
		t.Fatalf("take response %s", r.body)
	}
	wantAPIError(t, call(t, s, "POST", "/v2/queue/eu/job/"+id+"/hatchery/take", v2, nil), 403, 89)

	msg := map[string]any{"level": "info", "message": `Hatchery "vsphere-a" is starting the worker "w" from model "m"`, "time": "2025-01-10T08:00:00Z"}
	wantStatus(t, call(t, s, "POST", "/v2/queue/eu/job/"+id+"/info", v2, msg), http.StatusNoContent)
	wantAPIError(t, call(t, s, "POST", "/v2/queue/eu/job/"+id+"/info", v2, map[string]any{"level": "debug", "message": "x", "time": "2025-01-10T08:00:00Z"}), 400, 74)

	wantStatus(t, call(t, s, "DELETE", "/v2/queue/eu/job/"+id+"/hatchery/take", v2, nil), http.StatusNoContent)
	st, _ := s.V2Job(id)
	if st.Job.Status != StatusWaiting || st.Job.HatcheryName != "" || st.TakeCount != 1 || len(st.Infos) != 1 {
		t.Fatalf("after release %+v", st)
	}
	if c := s.V2JobCounts(); c[StatusWaiting] != 2 {
		t.Fatalf("counts %v", c)
	}
}

func TestModelsBookErrorSecretsAndAsCode(t *testing.T) {
	s, _ := newSim(t, Options{})
	v1, v2 := signinV1(t, s), signinV2(t, s)
	id := s.AddV1Model(V1Model{Name: "debian12", Group: &Group{ID: 7, Name: "grp"}, NeedRegistration: true,
		ModelVirtualMachine: VirtualMachineModel{Image: "debian12", Cmd: "worker"}})
	if err := s.AddV1ModelSecret(id, "pwd", "s3cret"); err != nil {
		t.Fatal(err)
	}

	r := call(t, s, "GET", "/worker/model/enabled", v1, nil)
	wantStatus(t, r, http.StatusOK)
	if !strings.Contains(string(r.body), `"need_registration":true`) || !strings.Contains(string(r.body), `"group":{"id":7,"name":"grp"}`) {
		t.Fatalf("models %s", r.body)
	}
	wantStatus(t, call(t, s, "GET", "/worker/model/grp/debian12", v1, nil), http.StatusOK)
	wantAPIError(t, call(t, s, "GET", "/worker/model/grp/nope", v1, nil), 404, 38)
	r = call(t, s, "GET", "/worker/model/grp/debian12/secret", v1, nil)
	if !strings.Contains(string(r.body), `"name":"pwd","value":"s3cret"`) {
		t.Fatalf("secrets %s", r.body)
	}

	wantStatus(t, call(t, s, "PUT", "/worker/model/grp/debian12/book", v1, nil), http.StatusNoContent)
	wantAPIError(t, call(t, s, "PUT", "/worker/model/grp/debian12/book", v1, nil), 403, 115)

	// The spawn error form has capitalised keys (Q20).
	wantAPIError(t, call(t, s, "PUT", "/worker/model/grp/debian12/error", v1, map[string]any{"error": "x"}), 400, 74)
	wantStatus(t, call(t, s, "PUT", "/worker/model/grp/debian12/error", v1, map[string]any{"Error": "cannot spawn worker for register: boom", "Logs": nil}), http.StatusNoContent)
	st, _ := s.V1Model(id)
	if st.Model.NbSpawnErr != 1 || len(st.Errors) != 1 || st.Errors[0].Error != "cannot spawn worker for register: boom" || st.BookedBy != "" {
		t.Fatalf("model state %+v", st)
	}

	s.AddAsCodeModel("PROJ", "github", "ovh/cds", "main", V2WorkerModel{Name: "debian12-vsphere", Type: "vsphere", OSArch: "linux/amd64"})
	r = call(t, s, "GET", "/v2/project/PROJ/vcs/github/repository/ovh%2Fcds/workermodel/debian12-vsphere?branch=main", v2, nil)
	wantStatus(t, r, http.StatusOK)
	if !strings.Contains(string(r.body), `"name":"debian12-vsphere"`) {
		t.Fatalf("as-code model %s", r.body)
	}
	wantAPIError(t, call(t, s, "GET", "/v2/project/PROJ/vcs/github/repository/ovh%2Fcds/workermodel/debian12-vsphere?branch=dev", v2, nil), 404, 38)
}

func TestWorkerListsAndDisable(t *testing.T) {
	s, _ := newSim(t, Options{})
	v1, v2 := signinV1(t, s), signinV2(t, s)
	id := s.AddV1Worker(V1Worker{Name: "calm-turing"})
	s.AddV1Worker(V1Worker{Name: "not-mine", HatcheryName: "other"})
	s.AddV2Worker(V2Worker{Name: "brave-hopper"})

	r := call(t, s, "GET", "/worker", v1, nil)
	if !strings.Contains(string(r.body), `"name":"calm-turing"`) || strings.Contains(string(r.body), "not-mine") || !strings.Contains(string(r.body), `"lastbeat"`) {
		t.Fatalf("v1 workers %s", r.body)
	}
	wantStatus(t, call(t, s, "POST", "/worker/"+id+"/disable", v1, nil), http.StatusNoContent)
	if w := s.V1Workers(); w[0].Status != StatusDisabled {
		t.Fatalf("worker not disabled: %+v", w[0])
	}
	if !s.DisableWorker("brave-hopper") {
		t.Fatal("DisableWorker found nothing")
	}
	r = call(t, s, "GET", "/v2/worker", v2, nil)
	if !strings.Contains(string(r.body), `"status":"Disabled"`) || !strings.Contains(string(r.body), `"last_beat"`) {
		t.Fatalf("v2 workers %s", r.body)
	}
}

func TestRequestsAreRecorded(t *testing.T) {
	s, _ := newSim(t, Options{})
	v1 := signinV1(t, s)
	s.AddV1Job(V1Job{})
	call(t, s, "POST", "/queue/workflows/1/book", v1, map[string]any{"delay": 0})
	call(t, s, "GET", "/queue/workflows?modelType=vsphere&region=eu&region=", v1, nil)

	if n := len(s.Requests()); n != 3 {
		t.Fatalf("%d requests recorded, want 3", n)
	}
	books := s.RequestsTo("POST", "/queue/workflows/1/book")
	if len(books) != 1 || string(books[0].Body) != `{"delay":0}` || books[0].Header.Get("Authorization") != "Bearer "+v1 || books[0].Status != 200 {
		t.Fatalf("book request %+v", books)
	}
	polls := s.RequestsTo("GET", "/queue/workflows")
	if len(polls) != 1 || polls[0].RawQuery != "modelType=vsphere&region=eu&region=" || len(polls[0].Query["region"]) != 2 {
		t.Fatalf("poll request %+v", polls)
	}
}

func dialWS(t *testing.T, s *Server, path, session string) *websocket.Conn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, _, err := websocket.Dial(ctx, "ws"+strings.TrimPrefix(s.URL(), "http")+path, &websocket.DialOptions{
		HTTPHeader: http.Header{"Authorization": {"Bearer " + session}},
	})
	if err != nil {
		t.Fatalf("dial %s: %v", path, err)
	}
	t.Cleanup(func() { c.CloseNow() })
	return c
}

func readJSON(t *testing.T, c *websocket.Conn, v any) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, data, err := c.Read(ctx)
	if err != nil {
		t.Fatalf("read websocket: %v", err)
	}
	if err := json.Unmarshal(data, v); err != nil {
		t.Fatalf("websocket message %s: %v", data, err)
	}
}

func waitClients(t *testing.T, s *Server, v1, v2 int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	err := s.WaitUntil(ctx, func() bool { a, b := s.WebsocketClients(); return a == v1 && b == v2 })
	if err != nil {
		t.Fatal(err)
	}
}

func TestV1WebsocketPushesWaitingJobEvents(t *testing.T) {
	s, _ := newSim(t, Options{})
	v1 := signinV1(t, s)
	wantStatus(t, call(t, s, "GET", "/ws", "", nil), 401)

	c := dialWS(t, s, "/ws", v1)
	ctx := context.Background()
	if err := c.Write(ctx, websocket.MessageText, []byte(`[{"type":"bogus"}]`)); err != nil {
		t.Fatal(err)
	}
	var ko map[string]any
	readJSON(t, c, &ko)
	if ko["status"] != "KO" || ko["error"] == "" {
		t.Fatalf("invalid filter answer %v", ko)
	}
	filter := `[{"type":"queue","project_key":"","application_name":"","pipeline_name":"","environment_name":"",` +
		`"workflow_name":"","workflow_run_num":0,"workflow_node_run_id":0,"operation_uuid":"","hatchery_type":"vsphere"}]`
	if err := c.Write(ctx, websocket.MessageText, []byte(filter)); err != nil {
		t.Fatal(err)
	}
	waitClients(t, s, 1, 0)

	s.AddV1Job(V1Job{Region: "us"}) // another region: not forwarded
	id := s.AddV1Job(V1Job{Region: "eu", ProjectKey: "PROJ"})
	var msg struct {
		Status string `json:"status"`
		Event  struct {
			TypeEvent string `json:"type_event"`
			Status    string `json:"status"`
			Payload   struct {
				ID     int64  `json:"id"`
				Status string `json:"status"`
			} `json:"payload"`
		} `json:"event"`
	}
	readJSON(t, c, &msg)
	if msg.Status != "OK" || msg.Event.TypeEvent != "sdk.EventRunWorkflowJob" || msg.Event.Status != "Waiting" ||
		msg.Event.Payload.ID != id || msg.Event.Payload.Status != "Waiting" {
		t.Fatalf("event %+v", msg)
	}
}

func TestV2WebsocketPushesQueueEvents(t *testing.T) {
	s, _ := newSim(t, Options{Region: "eu"})
	v2 := signinV2(t, s)
	c := dialWS(t, s, "/v2/hatchery/ws", v2)
	waitClients(t, s, 0, 1)

	model := V2WorkerModel{Name: "debian12-vsphere", OSArch: "linux/amd64", Type: "vsphere"}
	s.AddV2Job(V2RunJob{ModelOSArch: "linux/arm64"}, model) // Q3: only linux/amd64 is pushed
	id := s.AddV2Job(V2RunJob{JobID: "build", ProjectKey: "PROJ", RunNumber: 3}, model)
	var ev map[string]any
	readJSON(t, c, &ev)
	if ev["job_run_id"] != id || ev["region"] != "eu" || ev["model_type"] != "vsphere" || ev["model_osarch"] != "linux/amd64" || ev["run_number"] != float64(3) {
		t.Fatalf("event %v", ev)
	}

	// A released job is announced again.
	wantStatus(t, call(t, s, "POST", "/v2/queue/eu/job/"+id+"/hatchery/take", v2, nil), 200)
	wantStatus(t, call(t, s, "DELETE", "/v2/queue/eu/job/"+id+"/hatchery/take", v2, nil), 204)
	readJSON(t, c, &ev)
	if ev["job_run_id"] != id {
		t.Fatalf("release event %v", ev)
	}
}
