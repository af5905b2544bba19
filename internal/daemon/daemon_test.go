package daemon

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/rockbears/log"

	"github.com/hatchery-vsphere/hatchery-vsphere/internal/cds"
	"github.com/hatchery-vsphere/hatchery-vsphere/internal/cdssim"
	"github.com/hatchery-vsphere/hatchery-vsphere/internal/config"
	"github.com/hatchery-vsphere/hatchery-vsphere/internal/hatchery"
)

var (
	keysOnce            sync.Once
	apiKey, hatcheryKey *rsa.PrivateKey
	errKeys             error
)

// testKeys generates the simulated API's and the hatchery's keys once per test binary.
func testKeys(t *testing.T) (*rsa.PrivateKey, *rsa.PrivateKey) {
	t.Helper()
	keysOnce.Do(func() {
		if apiKey, errKeys = rsa.GenerateKey(rand.Reader, 2048); errKeys != nil {
			return
		}
		hatcheryKey, errKeys = rsa.GenerateKey(rand.Reader, 2048)
	})
	if errKeys != nil {
		t.Fatal(errKeys)
	}
	return apiKey, hatcheryKey
}

func newTestHarness(t *testing.T, opts HarnessOptions) *Harness {
	t.Helper()
	opts.APIKey, opts.HatcheryKey = testKeys(t)
	h, err := NewHarness(t.Context(), opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(h.Close)
	return h
}

func testLogger(t *testing.T) *log.Logger {
	return log.NewWithFactory(log.NewTestingWrapper(t))
}

// runningDaemon is a daemon.Run in a goroutine the test owns.
type runningDaemon struct {
	addr   string
	cancel context.CancelFunc
	// alive ends when Run has returned; err is then what it returned.
	alive context.Context
	err   error
}

func startDaemon(t *testing.T, cfg *config.File, opts ...Option) *runningDaemon {
	t.Helper()
	if err := cfg.Validate(); err != nil {
		t.Fatalf("harness configuration is invalid: %v", err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	alive, exited := context.WithCancel(context.Background())
	d := &runningDaemon{addr: ln.Addr().String(), cancel: cancel, alive: alive}
	opts = append([]Option{WithListener(ln), WithHostname("e2e-host")}, opts...)
	logger := testLogger(t)
	go func() {
		d.err = Run(ctx, cfg, logger, opts...)
		exited()
	}()
	t.Cleanup(func() {
		cancel()
		<-alive.Done()
	})
	return d
}

// stop cancels the daemon and returns what Run returned.
func (d *runningDaemon) stop() error {
	d.cancel()
	<-d.alive.Done()
	return d.err
}

// wait waits until cond holds, re-evaluated at each change of the simulated API (the
// daemon calls it several times a second). It fails at once if the daemon has stopped.
func (d *runningDaemon) wait(t *testing.T, api *cdssim.Server, what string, cond func() bool) {
	t.Helper()
	// The deadline only turns a hang into a failure; nothing is timed.
	ctx, cancel := context.WithTimeout(d.alive, 45*time.Second)
	defer cancel()
	if err := api.WaitUntil(ctx, cond); err != nil {
		if d.alive.Err() != nil {
			t.Fatalf("waiting for %s: the daemon stopped: %v", what, d.err)
		}
		t.Fatalf("waiting for %s: %v", what, err)
	}
}

func get(t *testing.T, url string) (int, http.Header, []byte) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("GET %s: read body: %v", url, err)
	}
	return resp.StatusCode, resp.Header, body
}

// fakeProvider is a back-end that never spawns: enough to prove the wiring of sign-in,
// heartbeat, HTTP and shutdown without a vSphere provider.
type fakeProvider struct{}

func (fakeProvider) ModelType() string { return cds.ModelTypeVSphere }
func (fakeProvider) CanSpawn(context.Context, *hatchery.WorkerStarterWorkerModel, string, []cds.Requirement) bool {
	return false
}
func (fakeProvider) CanAllocateResources(context.Context, *hatchery.WorkerStarterWorkerModel, string, []cds.Requirement) (bool, error) {
	return false, nil
}
func (fakeProvider) SpawnWorker(context.Context, hatchery.SpawnArguments) error {
	return errors.New("fake provider spawns nothing")
}
func (fakeProvider) WorkersStarted(context.Context) ([]string, error)  { return []string{}, nil }
func (fakeProvider) NeedRegistration(context.Context, *cds.Model) bool { return false }
func (fakeProvider) DefaultModelV2Name(context.Context, []cds.Requirement) string {
	return ""
}
func (fakeProvider) Status(context.Context) []cds.MonitoringStatusLine { return nil }
func (fakeProvider) Run(ctx context.Context, _ hatchery.Services) error {
	<-ctx.Done()
	return nil
}

func withFakeProvider() Option {
	return WithProvider(func(context.Context, ProviderInput) (hatchery.Provider, error) {
		return fakeProvider{}, nil
	})
}

func TestRunSignsInHeartbeatsServesAndSignsOut(t *testing.T) {
	h := newTestHarness(t, HarnessOptions{})
	cfg := h.Config()
	cfg.Hatchery.VSphere.CommonConfiguration.Provision.IgnoreJobWithNoRegion = true
	d := startDaemon(t, cfg, withFakeProvider())

	d.wait(t, h.API, "a v1 and a v2 heartbeat", func() bool {
		var v1, v2 bool
		for _, hb := range h.API.Heartbeats() {
			v1, v2 = v1 || !hb.V2, v2 || hb.V2
		}
		return v1 && v2
	})

	t.Run("v1 sign-in registers the service", func(t *testing.T) {
		services := h.API.Services()
		if len(services) != 1 {
			t.Fatalf("services registered: %d, want 1", len(services))
		}
		s := services[0]
		if s.Name != h.Name || s.Type != "hatchery" || s.HTTPURL != cfg.Hatchery.VSphere.CommonConfiguration.URL {
			t.Errorf("service = name %q type %q url %q", s.Name, s.Type, s.HTTPURL)
		}
		if s.Region == nil || *s.Region != h.Region {
			t.Errorf("service region = %v, want %q", s.Region, h.Region)
		}
		if s.IgnoreJobWithNoRegion == nil || !*s.IgnoreJobWithNoRegion {
			t.Errorf("ignore_job_with_no_region = %v, want true", s.IgnoreJobWithNoRegion)
		}
		checkPublicKey(t, s.PublicKeyPEM)
		checkRegistrationConfig(t, cfg, s.Config)
	})

	t.Run("v2 sign-in declares the hatchery", func(t *testing.T) {
		hs := h.API.Hatcheries()
		if len(hs) != 1 {
			t.Fatalf("hatcheries signed in: %d, want 1", len(hs))
		}
		hh := hs[0]
		if hh.Name != h.Name || hh.Type != "vsphere" || hh.Version != hatchery.Version {
			t.Errorf("hatchery = name %q type %q version %q", hh.Name, hh.Type, hh.Version)
		}
		checkPublicKey(t, hh.PublicKeyPEM)
		checkRegistrationConfig(t, cfg, hh.Config)
	})

	t.Run("heartbeat carries the status lines", func(t *testing.T) {
		for _, hb := range h.API.Heartbeats() {
			var components []string
			for _, l := range hb.Status.Lines {
				components = append(components, l.Component)
				if l.Type != "hatchery" || l.Service != h.Name || l.Hostname != "e2e-host" {
					t.Errorf("v2=%v line %q stamped type %q service %q host %q", hb.V2, l.Component, l.Type, l.Service, l.Hostname)
				}
			}
			for _, want := range []string{"Version", "Uptime", "Time", "Workers"} {
				if !slices.Contains(components, want) {
					t.Errorf("v2=%v heartbeat lines %v: no %s line", hb.V2, components, want)
				}
			}
			if len(components) < 3 || components[0] != "Version" || components[1] != "Uptime" || components[2] != "Time" {
				t.Errorf("v2=%v heartbeat lines %v do not start with Version, Uptime, Time", hb.V2, components)
			}
		}
	})

	t.Run("serves /mon", func(t *testing.T) {
		base := "http://" + d.addr
		code, _, body := get(t, base+"/mon/status")
		if code != http.StatusOK {
			t.Errorf("/mon/status = %d %s", code, body)
		}
		var status cds.MonitoringStatus
		if err := json.Unmarshal(body, &status); err != nil || len(status.Lines) == 0 {
			t.Errorf("/mon/status body %s: %v", body, err)
		}

		code, _, body = get(t, base+"/mon/version")
		var v struct {
			Version string `json:"version"`
		}
		if err := json.Unmarshal(body, &v); code != http.StatusOK || err != nil || v.Version != hatchery.Version {
			t.Errorf("/mon/version = %d %s (%v)", code, body, err)
		}

		code, _, body = get(t, base+"/mon/workers")
		if code != http.StatusOK || !strings.HasPrefix(string(body), "[") {
			t.Errorf("/mon/workers = %d %s", code, body)
		}

		code, hdr, body := get(t, base+"/mon/metrics")
		if code != http.StatusOK || !strings.HasPrefix(hdr.Get("Content-Type"), "text/plain") {
			t.Errorf("/mon/metrics = %d %q", code, hdr.Get("Content-Type"))
		}
		// The requests above were counted by the HTTP server views.
		if !strings.Contains(string(body), "cds_http_server_request_count_by_handler") {
			t.Errorf("/mon/metrics has no HTTP request count:\n%s", body)
		}

		code, _, body = get(t, base+"/mon/metrics/all")
		if code != http.StatusOK || !strings.Contains(string(body), `"cds/hatchery/jobs_count"`) {
			t.Errorf("/mon/metrics/all = %d %s", code, body)
		}
	})

	if err := d.stop(); err != nil {
		t.Fatalf("Run after cancel = %v, want nil", err)
	}
	if n := len(h.API.RequestsTo(http.MethodPost, "/auth/consumer/signout")); n != 1 {
		t.Errorf("v1 sign-outs = %d, want 1", n)
	}
}

// checkPublicKey proves the registered key verifies a worker JWT signed by the hatchery.
func checkPublicKey(t *testing.T, pemText []byte) {
	t.Helper()
	if !strings.HasPrefix(string(pemText), "-----BEGIN RSA PUBLIC KEY-----") {
		t.Fatalf("public key is not a PEM RSA PUBLIC KEY: %q", pemText)
	}
	pub, err := jwt.ParseRSAPublicKeyFromPEM(pemText)
	if err != nil {
		t.Fatalf("parse registered public key: %v", err)
	}
	_, key := testKeys(t)
	signed, err := jwt.NewWithClaims(jwt.SigningMethodRS512, jwt.MapClaims{"sub": "worker"}).SignedString(key)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := jwt.Parse(signed, func(*jwt.Token) (any, error) { return pub, nil }); err != nil {
		t.Errorf("registered public key does not verify a hatchery-signed JWT: %v", err)
	}
}

// checkRegistrationConfig checks the config object of §3.6: its keys, and no secret.
func checkRegistrationConfig(t *testing.T, cfg *config.File, raw json.RawMessage) {
	t.Helper()
	var top map[string]json.RawMessage
	if err := json.Unmarshal(raw, &top); err != nil {
		t.Fatalf("registration config %s: %v", raw, err)
	}
	for _, k := range []string{"commonConfiguration", "user", "endpoint", "datacenterString", "datastoreString",
		"networkString", "cardName", "subnetMask", "workerTTL", "workerRegistrationTTL",
		"workerProvisioningInterval", "workerProvisioningPoolSize", "workerProvisioning", "maxCpus",
		"maxMemoryMB", "countSmallerFlavorToKeep"} {
		if _, ok := top[k]; !ok {
			t.Errorf("registration config has no %q key", k)
		}
	}
	var common map[string]json.RawMessage
	if err := json.Unmarshal(top["commonConfiguration"], &common); err != nil {
		t.Fatalf("commonConfiguration: %v", err)
	}
	for _, k := range []string{"name", "osArch", "url", "http", "api", "cdn", "provision", "logOptions"} {
		if _, ok := common[k]; !ok {
			t.Errorf("registration config has no commonConfiguration.%s key", k)
		}
	}
	c := cfg.Hatchery.VSphere.CommonConfiguration
	for what, secret := range map[string]string{
		"vCenter password": cfg.Hatchery.VSphere.Password, "api.token": c.API.Token,
		"api.tokenV2": c.API.TokenV2, "rsaPrivateKey": "PRIVATE KEY",
	} {
		if strings.Contains(string(raw), secret) {
			t.Errorf("registration config discloses the %s", what)
		}
	}
	for _, k := range []string{`"password"`, `"rsaPrivateKey"`, `"token"`, `"tokenV2"`, `"guestCredentials"`} {
		if strings.Contains(string(raw), k) {
			t.Errorf("registration config has the secret key %s", k)
		}
	}
}

func TestRunFailsNamingTheMissingDatacenter(t *testing.T) {
	h := newTestHarness(t, HarnessOptions{})
	cfg := h.Config()
	cfg.Hatchery.VSphere.DatacenterString = "NoSuchDC"
	err := Run(t.Context(), cfg, testLogger(t), withFakeProvider())
	if err == nil || !strings.Contains(err.Error(), "NoSuchDC") {
		t.Fatalf("Run = %v, want an error naming the datacenter", err)
	}
}

func TestRunWithOnlyAV2TokenHasNoV1Session(t *testing.T) {
	h := newTestHarness(t, HarnessOptions{})
	cfg := h.Config()
	cfg.Hatchery.VSphere.CommonConfiguration.API.Token = ""
	d := startDaemon(t, cfg, withFakeProvider())

	d.wait(t, h.API, "a v2 heartbeat", func() bool { return len(h.API.Heartbeats()) > 0 })
	if err := d.stop(); err != nil {
		t.Fatalf("Run after cancel = %v, want nil", err)
	}
	if n := len(h.API.Hatcheries()); n != 1 {
		t.Errorf("v2 sign-ins = %d, want 1", n)
	}
	if n := len(h.API.Services()); n != 0 {
		t.Errorf("v1 services registered = %d, want 0", n)
	}
	for _, hb := range h.API.Heartbeats() {
		if !hb.V2 {
			t.Errorf("v1 heartbeat sent without a v1 token")
		}
	}
	if n := len(h.API.RequestsTo(http.MethodPost, "/auth/consumer/signout")); n != 0 {
		t.Errorf("v1 sign-outs = %d, want 0", n)
	}
}
