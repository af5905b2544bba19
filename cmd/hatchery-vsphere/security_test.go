package main

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hatchery-vsphere/hatchery-vsphere/internal/cdssim"
	"github.com/hatchery-vsphere/hatchery-vsphere/internal/config"
	"github.com/hatchery-vsphere/hatchery-vsphere/internal/daemon"
	"github.com/hatchery-vsphere/hatchery-vsphere/internal/hatchery"
)

// lockedBuffer is a log sink read by the test while the daemon writes to it.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// secrets maps what a secret is to its value; check reports every one found in text.
type secrets map[string]string

func (s secrets) check(t *testing.T, where, text string) {
	t.Helper()
	for what, v := range s {
		if v != "" && strings.Contains(text, v) {
			t.Errorf("%s discloses the %s", where, what)
		}
	}
}

func httpGet(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	return resp.StatusCode, string(body)
}

// TestNoSecretInLogsStatusMetricsErrorsOrGuestArguments runs the whole daemon (simulated
// vCenter and CDS API, JSON debug logs) with known secrets in its configuration through a
// v2 job, and looks for them everywhere an operator or a user could read them: the logs,
// every /mon page, the heartbeats, error messages, and the guest program's command line.
// Only the guest environment may carry the worker token and CDS_CONFIG.
func TestNoSecretInLogsStatusMetricsErrorsOrGuestArguments(t *testing.T) {
	h, err := daemon.NewHarness(t.Context(), daemon.HarnessOptions{Name: "hatchery-sec"})
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	cfg := h.Config()
	cfg.Log = config.Log{Level: "debug", Format: "json"}
	vs := &cfg.Hatchery.VSphere
	// vcsim accepts any credentials: a password with URL-special characters goes through.
	vs.Password = "vc-Secret@Qx7:/%pw"
	vs.GuestCredentials = []config.GuestCredential{{ModelPath: "shared.infra/other", Username: "admin", Password: "guestcred-Secret-5Tt"}}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	common := vs.CommonConfiguration
	keyLines := strings.Split(common.RSAPrivateKey, "\n")
	const guestPassword = "model-Guest-Secret-8Jk2"
	leaks := secrets{
		"vCenter password":              vs.Password,
		"api.token":                     common.API.Token,
		"api.tokenV2":                   common.API.TokenV2,
		"rsaPrivateKey":                 keyLines[1],
		"rsaPrivateKey header":          "PRIVATE KEY",
		"guestCredentials password":     "guestcred-Secret-5Tt",
		"worker model's guest password": guestPassword,
	}

	var logs lockedBuffer
	logger := newLogger(cfg.Log, &logs)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	base := "http://" + ln.Addr().String()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- daemon.Run(ctx, cfg, logger, append(h.Options(), daemon.WithListener(ln))...) }()
	defer func() {
		cancel()
		if done != nil {
			<-done
		}
	}()

	jobID := h.API.AddV2Job(cdssim.V2RunJob{ProjectKey: "PROJ", WorkflowName: "wf", RunNumber: 1}, cdssim.V2WorkerModel{
		Name: "debian12-model", Type: "vsphere", OSArch: "linux/amd64",
		Spec: cdssim.V2ModelSpec{Image: "debian12", Username: "cds", Password: guestPassword},
	})
	wctx, wcancel := context.WithTimeout(t.Context(), 45*time.Second) // turns a hang into a failure
	defer wcancel()
	if err := h.API.WaitUntil(wctx, func() bool { return h.API.V2JobStatus(jobID) == cdssim.StatusSuccess }); err != nil {
		t.Fatalf("waiting for the v2 job: %v", err)
	}

	// The guest program: secrets only in its environment.
	launches := 0
	for _, p := range h.VCenter.GuestPrograms() {
		var cdsConfig string
		for _, kv := range p.Env {
			if v, ok := strings.CutPrefix(kv, "CDS_CONFIG="); ok {
				cdsConfig = v
			}
		}
		if cdsConfig == "" {
			continue
		}
		launches++
		raw, err := base64.StdEncoding.DecodeString(cdsConfig)
		if err != nil {
			t.Fatalf("CDS_CONFIG is not base64: %v", err)
		}
		var wc struct {
			Token string `json:"api_token"`
		}
		if err := json.Unmarshal(raw, &wc); err != nil || wc.Token == "" {
			t.Fatalf("CDS_CONFIG without a worker token: %v", err)
		}
		leaks["CDS_CONFIG of "+p.VMName] = cdsConfig
		leaks["worker token of "+p.VMName] = wc.Token
		cmdLine := p.ProgramPath + " " + p.Arguments
		for what, v := range map[string]string{
			"worker token": wc.Token, "CDS_CONFIG": cdsConfig, "guest password": guestPassword,
			"vCenter password": vs.Password, "api.tokenV2": common.API.TokenV2,
		} {
			if strings.Contains(cmdLine, v) {
				t.Errorf("the guest command line of %s carries the %s", p.VMName, what)
			}
		}
	}
	if launches == 0 {
		t.Fatal("no worker launch seen in the guests")
	}

	for _, path := range []string{"/mon/status", "/mon/workers", "/mon/metrics", "/mon/metrics/all", "/mon/vms", "/mon/version", "/", "/mon/ui"} {
		code, body := httpGet(t, base+path)
		if code == http.StatusNotFound {
			continue // page not served by this build
		}
		leaks.check(t, "GET "+path, body)
	}
	if code, _ := httpGet(t, base+"/debug/pprof/"); code == http.StatusOK {
		t.Error("/debug/pprof/ served although http.enablePprof is off")
	}
	for _, hb := range h.API.Heartbeats() {
		b, err := json.Marshal(hb.Status)
		if err != nil {
			t.Fatal(err)
		}
		leaks.check(t, "a heartbeat", string(b))
	}

	cancel()
	if err := <-done; err != nil {
		t.Errorf("daemon.Run = %v", err)
	}
	done = nil

	// Error paths: a vCenter that refuses (an unreachable one is waited for, not an
	// error), then CDS refusing our tokens.
	bad := *cfg
	bad.Hatchery.VSphere.DatacenterString = "NoSuchDC"
	err = daemon.Run(t.Context(), &bad, logger, h.Options()...)
	if err == nil {
		t.Fatal("Run with an unknown datacenter succeeded")
	}
	leaks.check(t, "the vCenter connection error", err.Error())

	h.API.RevokeConsumers()
	ln2, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	err = daemon.Run(t.Context(), cfg, logger, append(h.Options(),
		daemon.WithListener(ln2), daemon.WithIntervals(hatchery.Intervals{SigninGiveUp: time.Nanosecond}))...)
	if err == nil {
		t.Fatal("Run with revoked tokens succeeded")
	}
	leaks.check(t, "the sign-in error", err.Error())

	text := logs.String()
	for _, line := range strings.Split(strings.TrimSpace(text), "\n") {
		if !json.Valid([]byte(line)) {
			t.Fatalf("log line is not JSON: %q", line)
		}
	}
	leaks.check(t, "the logs", text)
}
