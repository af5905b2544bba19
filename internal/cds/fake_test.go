package cds

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"encoding/base64"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

var testKey = sync.OnceValue(func() *rsa.PrivateKey {
	k, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		panic(err)
	}
	return k
})

// testClock is a settable clock shared by the fake API (session JWTs) and the client.
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
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// pauses records the pauses the client asked for, without waiting.
type pauses struct {
	mu sync.Mutex
	ds []time.Duration
}

func (p *pauses) Pause(ctx context.Context, d time.Duration) error {
	p.mu.Lock()
	p.ds = append(p.ds, d)
	p.mu.Unlock()
	return ctx.Err()
}

func (p *pauses) Get() []time.Duration {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]time.Duration(nil), p.ds...)
}

type recorded struct {
	Method   string
	Path     string // escaped path
	RawQuery string
	Header   http.Header
	Body     []byte
}

// fakeAPI is a CDS API double: it answers both sign-ins with RS512 session JWTs and the
// signing-key header, and routes other calls to per-test handlers keyed by
// "METHOD escaped-path".
type fakeAPI struct {
	t     *testing.T
	srv   *httptest.Server
	clock *testClock

	mu          sync.Mutex
	reqs        []recorded
	signins     []recorded
	handlers    map[string]http.HandlerFunc
	signingHdr  *string       // nil: valid header
	signinGate  chan struct{} // when set, sign-ins announce themselves on signinSeen and wait for it
	signinSeen  chan struct{}
	sessionLife time.Duration
}

func newFakeAPI(t *testing.T, clock *testClock) *fakeAPI {
	return newFakeAPIWith(t, clock, false)
}

// newFakeAPIWith starts the fake API, over TLS when tlsOn.
func newFakeAPIWith(t *testing.T, clock *testClock, tlsOn bool) *fakeAPI {
	t.Helper()
	f := &fakeAPI{t: t, clock: clock, handlers: map[string]http.HandlerFunc{}, sessionLife: time.Hour,
		signinSeen: make(chan struct{}, 100)}
	ok := func(w http.ResponseWriter, r *http.Request) {}
	f.handlers["POST /services/heartbeat"] = ok
	f.handlers["POST /v2/hatchery/heartbeat"] = ok
	f.srv = httptest.NewUnstartedServer(http.HandlerFunc(f.serve))
	if tlsOn {
		f.srv.StartTLS()
	} else {
		f.srv.Start()
	}
	t.Cleanup(f.srv.Close)
	return f
}

func (f *fakeAPI) handle(route string, h http.HandlerFunc) {
	f.mu.Lock()
	f.handlers[route] = h
	f.mu.Unlock()
}

func (f *fakeAPI) sessionToken() string {
	now := f.clock.Now()
	tok, err := jwt.NewWithClaims(jwt.SigningMethodRS512, jwt.MapClaims{
		"ID": "session-id", "TokenID": "token-id", "iss": "cds-api", "sub": "consumer",
		"iat": now.Unix(), "exp": now.Add(f.sessionLife).Unix(),
	}).SignedString(testKey())
	if err != nil {
		f.t.Errorf("sign session: %v", err)
	}
	return tok
}

func signingKeyHeader() string {
	return base64.StdEncoding.EncodeToString(PublicKeyPEM(&testKey().PublicKey))
}

func (f *fakeAPI) serve(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	rec := recorded{Method: r.Method, Path: r.URL.EscapedPath(), RawQuery: r.URL.RawQuery, Header: r.Header.Clone(), Body: body}
	route := r.Method + " " + rec.Path
	f.mu.Lock()
	h := f.handlers[route]
	isSignin := h == nil && (route == "POST "+pathV1Signin || route == "POST "+pathV2Signin)
	if isSignin {
		f.signins = append(f.signins, rec)
	} else {
		f.reqs = append(f.reqs, rec)
	}
	hdr, gate := f.signingHdr, f.signinGate
	f.mu.Unlock()
	if h != nil {
		h(w, r)
		return
	}
	if !isSignin {
		w.WriteHeader(http.StatusNotFound)
		_, _ = io.WriteString(w, `{"id":38,"message":"not found"}`)
		return
	}
	if gate != nil {
		f.signinSeen <- struct{}{}
		<-gate
	}
	key := signingKeyHeader()
	if hdr != nil {
		key = *hdr
	}
	if key != "" {
		w.Header().Set(HeaderAPIPubSigningKey, key)
	}
	if route == "POST "+pathV1Signin {
		writeJSON(w, map[string]any{"token": f.sessionToken(), "api_url": "http://api", "user": map[string]any{"username": "u"},
			"service": map[string]any{"id": 42, "name": "vsphere-a", "type": "hatchery"}})
		return
	}
	writeJSON(w, map[string]any{"up_to_date": true, "api_url": "http://api", "token": f.sessionToken(), "region": "granted-region",
		"hatchery": map[string]any{"id": "3f1c2d6e-9a7b-4c1d-8e2f-0a1b2c3d4e5f", "name": "vsphere-a", "model_type": "vsphere"}})
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(v)
}

func (f *fakeAPI) requests() []recorded {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]recorded(nil), f.reqs...)
}

func (f *fakeAPI) signinRequests() []recorded {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]recorded(nil), f.signins...)
}

func testConfig(f *fakeAPI, p *pauses) Config {
	return Config{URL: f.srv.URL, RequestTimeout: 10 * time.Second, Now: f.clock.Now, Pause: p.Pause}
}

func v1SigninRequest() V1SigninRequest {
	region := "eu"
	return V1SigninRequest{Token: "v1-consumer-token", Service: Service{
		Name: "vsphere-a", Type: ServiceTypeHatchery, HTTPURL: "http://hatchery:8086",
		Config:    json.RawMessage(`{"commonConfiguration":{"name":"vsphere-a"}}`),
		PublicKey: []byte("-----BEGIN RSA PUBLIC KEY-----\nAA==\n-----END RSA PUBLIC KEY-----\n"),
		Region:    &region,
	}}
}

func v2SigninRequest() V2SigninRequest {
	return V2SigninRequest{Token: "v2-consumer-token", Name: "vsphere-a", Type: ModelTypeVSphere, HTTPURL: "http://hatchery:8086",
		Config: json.RawMessage(`{"commonConfiguration":{"name":"vsphere-a"}}`), PublicKey: []byte("PEM"), Version: "0.57.0"}
}

// signedIn returns a signed-in client of the requested generation.
func signedIn(t *testing.T, f *fakeAPI, p *pauses, v2 bool) *Client {
	t.Helper()
	var c *Client
	var err error
	if v2 {
		c, err = NewV2(testConfig(f, p), v2SigninRequest())
	} else {
		c, err = NewV1(testConfig(f, p), v1SigninRequest())
	}
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Signin(context.Background()); err != nil {
		t.Fatalf("sign in: %v", err)
	}
	return c
}
