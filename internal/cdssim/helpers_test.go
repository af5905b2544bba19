package cdssim

import (
	"bytes"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"io"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// testClock is an injectable clock tests move by hand.
type testClock struct {
	mu sync.Mutex
	t  time.Time
}

func newTestClock() *testClock {
	return &testClock{t: time.Date(2025, 1, 10, 8, 0, 0, 0, time.UTC)}
}

func (c *testClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *testClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

var (
	keyOnce                      sync.Once
	hatcheryKey, otherKy, simKey *rsa.PrivateKey
)

// keys returns the hatchery's RSA key and an unrelated one, generated once per test binary.
func keys(t *testing.T) (*rsa.PrivateKey, *rsa.PrivateKey) {
	t.Helper()
	keyOnce.Do(func() {
		var err error
		if hatcheryKey, err = rsa.GenerateKey(rand.Reader, 2048); err != nil {
			panic(err)
		}
		if otherKy, err = rsa.GenerateKey(rand.Reader, 2048); err != nil {
			panic(err)
		}
		if simKey, err = rsa.GenerateKey(rand.Reader, 2048); err != nil {
			panic(err)
		}
	})
	return hatcheryKey, otherKy
}

// publicKeyPEM is what a hatchery sends (spec §3.2): PKCS#1 in a PEM "RSA PUBLIC KEY" block.
func publicKeyPEM(k *rsa.PrivateKey) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "RSA PUBLIC KEY", Bytes: x509.MarshalPKCS1PublicKey(&k.PublicKey)})
}

const hatchName = "vsphere-a"

func newSim(t *testing.T, opts Options) (*Server, *testClock) {
	t.Helper()
	clk := newTestClock()
	if opts.Now == nil {
		opts.Now = clk.Now
	}
	if opts.HatcheryName == "" {
		opts.HatcheryName = hatchName
	}
	if opts.Region == "" {
		opts.Region = "eu"
	}
	keys(t)
	opts.SigningKey = simKey
	s := New(opts)
	if err := s.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	return s, clk
}

type response struct {
	status int
	header http.Header
	body   []byte
}

func (r response) apiError(t *testing.T) APIError {
	t.Helper()
	var e APIError
	if err := json.Unmarshal(r.body, &e); err != nil {
		t.Fatalf("status %d body %q is not an API error: %v", r.status, r.body, err)
	}
	return e
}

// call sends one request; body is marshalled unless it is already []byte or nil.
func call(t *testing.T, s *Server, method, path, session string, body any) response {
	t.Helper()
	var rd io.Reader
	switch b := body.(type) {
	case nil:
	case []byte:
		rd = bytes.NewReader(b)
	default:
		j, err := json.Marshal(b)
		if err != nil {
			t.Fatal(err)
		}
		rd = bytes.NewReader(j)
	}
	req, err := http.NewRequest(method, s.URL()+path, rd)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	if session != "" {
		req.Header.Set("Authorization", "Bearer "+session)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return response{status: resp.StatusCode, header: resp.Header, body: b}
}

func wantStatus(t *testing.T, r response, status int) {
	t.Helper()
	if r.status != status {
		t.Fatalf("status %d, want %d (body %s)", r.status, status, r.body)
	}
}

func wantAPIError(t *testing.T, r response, status, id int) {
	t.Helper()
	if r.status != status {
		t.Fatalf("status %d, want %d (body %s)", r.status, status, r.body)
	}
	if e := r.apiError(t); e.ID != id {
		t.Fatalf("error id %d, want %d (%s)", e.ID, id, e.Message)
	}
}

// v1SigninBody is the body of spec §3.3, built from literal maps (not the package's structs).
func v1SigninBody(token, name string, pubPEM []byte, region any) map[string]any {
	return map[string]any{
		"token": token,
		"service": map[string]any{
			"id": 0, "name": name, "type": "hatchery", "http_url": "http://hatch:8086",
			"config":                    map[string]any{"commonConfiguration": map[string]any{"name": name, "osArch": nil}},
			"public_key":                base64.StdEncoding.EncodeToString(pubPEM),
			"region":                    region,
			"ignore_job_with_no_region": nil,
			"last_heartbeat":            "0001-01-01T00:00:00Z",
			"monitoring_status":         map[string]any{"now": "0001-01-01T00:00:00Z", "lines": nil},
			"version":                   "",
			"up_to_date":                false,
		},
	}
}

func v2SigninBody(token, name string, pubPEM []byte) map[string]any {
	return map[string]any{
		"token": token, "name": name, "type": "vsphere", "http_url": "http://hatch:8086",
		"config":     map[string]any{"commonConfiguration": map[string]any{"name": name}},
		"public_key": base64.StdEncoding.EncodeToString(pubPEM), "version": "0.57.0",
	}
}

func signinV1(t *testing.T, s *Server) string {
	t.Helper()
	k, _ := keys(t)
	r := call(t, s, "POST", "/auth/consumer/builtin/signin", "", v1SigninBody(s.NewBuiltinConsumerToken(), hatchName, publicKeyPEM(k), "eu"))
	wantStatus(t, r, http.StatusOK)
	var out struct {
		Token string `json:"token"`
	}
	if err := json.Unmarshal(r.body, &out); err != nil || out.Token == "" {
		t.Fatalf("sign-in response %s: %v", r.body, err)
	}
	return out.Token
}

func signinV2(t *testing.T, s *Server) string {
	t.Helper()
	k, _ := keys(t)
	r := call(t, s, "POST", "/v2/auth/consumer/hatchery/signin", "", v2SigninBody(s.NewHatcheryConsumerToken(hatchName), hatchName, publicKeyPEM(k)))
	wantStatus(t, r, http.StatusOK)
	var out struct {
		Token string `json:"token"`
	}
	if err := json.Unmarshal(r.body, &out); err != nil || out.Token == "" {
		t.Fatalf("sign-in response %s: %v", r.body, err)
	}
	return out.Token
}

// workerToken signs claims as a hatchery does (spec §15): RS512, header typ JWT.
func workerToken(t *testing.T, key *rsa.PrivateKey, claims jwt.MapClaims) string {
	t.Helper()
	tok, err := jwt.NewWithClaims(jwt.SigningMethodRS512, claims).SignedString(key)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

func v1WorkerClaims(now time.Time, worker string, jobID int64, modelID int64, modelName string) jwt.MapClaims {
	w := map[string]any{
		"worker_model":  worker,
		"model":         map[string]any{"id": modelID, "name": modelName},
		"register_only": jobID == 0,
		"hatchery_name": hatchName,
	}
	if jobID != 0 {
		w["job_id"] = jobID
	}
	return jwt.MapClaims{
		"iss": hatchName, "sub": worker, "jti": "5b0b1e8e-2c1f-4a43-a4f4-2d3c1a0e9b77",
		"iat": now.Unix(), "exp": now.Add(time.Hour).Unix(), "Worker": w,
	}
}

func v2WorkerClaims(now time.Time, worker, runJobID, model string) jwt.MapClaims {
	return jwt.MapClaims{
		"iss": hatchName, "sub": worker, "jti": "9a27e8e8-2c1f-4a43-a4f4-2d3c1a0e9b77",
		"iat": now.Unix(), "exp": now.Add(time.Hour).Unix(),
		"Worker": map[string]any{"worker_model": worker, "model_name": model, "run_job_id": runJobID, "hatchery_name": hatchName},
	}
}

// cdsConfigEnv builds the guest environment with CDS_CONFIG as in spec §16.
func cdsConfigEnv(t *testing.T, worker, token, model string, extra map[string]any) map[string]string {
	t.Helper()
	cfg := map[string]any{
		"name": worker, "basedir": "",
		"log": map[string]any{
			"Level": "", "Format": "", "TextFields": nil, "SkipTextFields": nil,
			"GraylogHost": "gl.example", "GraylogPort": "12202", "GraylogProtocol": "", "GraylogExtraKey": "", "GraylogExtraValue": "",
			"GraylogFieldCDSServiceType": "worker", "GraylogFieldCDSServiceName": worker, "GraylogFieldCDSVersion": "",
			"GraylogFieldCDSOS": "", "GraylogFieldCDSArch": "", "SyslogHost": "", "SyslogPort": "0", "SyslogProtocol": "", "SyslogExtraTag": "",
		},
		"hatchery_name": hatchName, "api_endpoint": "https://cds-api.example", "api_token": token,
		"cdn_endpoint": "https://cds-cdn.example", "gelf_service_addr": "cds-cdn.example:8090", "model": model,
	}
	for k, v := range extra {
		if v == nil {
			delete(cfg, k)
		} else {
			cfg[k] = v
		}
	}
	b, err := json.Marshal(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return map[string]string{"CDS_CONFIG": base64.StdEncoding.EncodeToString(b)}
}
