package main

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"strings"
	"testing"

	"github.com/hatchery-vsphere/hatchery-vsphere/internal/config"
	"github.com/hatchery-vsphere/hatchery-vsphere/internal/daemon"
)

// TestDemoRunLogsAreJSONWithoutSecrets runs the demo's scenario (20 jobs, v1 and v2,
// provisioning, flavors, an IP range, a v1 template build) with JSON logs at debug level,
// and checks that every line is a JSON object, that the VM state changes are Info lines
// carrying the hatchery, vm and model fields, and that no secret of the configuration, and
// nothing a worker was given (CDS_CONFIG, its token), appears in them.
func TestDemoRunLogsAreJSONWithoutSecrets(t *testing.T) {
	const vCenterPassword = "vc-Demo-Secret@Zr4:/%pw"
	var logs lockedBuffer
	leaks := secrets{}
	var workerConfigs int
	opts := demoOptions{
		jobs: 20,
		log:  config.Log{Level: "debug", Format: "json"},
		configure: func(cfg *config.File) {
			// vcsim accepts any credentials: a distinctive password goes through.
			cfg.Hatchery.VSphere.Password = vCenterPassword
		},
		inspect: func(h *daemon.Harness, cfg *config.File) {
			vs := cfg.Hatchery.VSphere
			common := vs.CommonConfiguration
			leaks["vCenter password"] = vs.Password
			leaks["api.token"] = common.API.Token
			leaks["api.tokenV2"] = common.API.TokenV2
			leaks["rsaPrivateKey header"] = "PRIVATE KEY"
			for i, line := range strings.Split(strings.TrimSpace(common.RSAPrivateKey), "\n") {
				// A short last line could match by chance; the others are 64 characters.
				if !strings.HasPrefix(line, "-----") && len(line) >= 16 {
					leaks[fmt.Sprintf("rsaPrivateKey line %d", i)] = line
				}
			}
			for _, c := range vs.GuestCredentials {
				leaks["guestCredentials password of "+c.ModelVMWare+c.ModelPath] = c.Password
			}
			leaks["models' guest password"] = demoGuestPassword
			for _, p := range h.VCenter.GuestPrograms() {
				for _, kv := range p.Env {
					v, ok := strings.CutPrefix(kv, "CDS_CONFIG=")
					if !ok {
						continue
					}
					workerConfigs++
					leaks["CDS_CONFIG of "+p.VMName] = v
					raw, err := base64.StdEncoding.DecodeString(v)
					if err != nil {
						t.Errorf("CDS_CONFIG of %s is not base64: %v", p.VMName, err)
						continue
					}
					var wc struct {
						Token string `json:"api_token"`
					}
					if err := json.Unmarshal(raw, &wc); err != nil || wc.Token == "" {
						t.Errorf("CDS_CONFIG of %s has no worker token: %v", p.VMName, err)
						continue
					}
					leaks["worker JWT of "+p.VMName] = wc.Token
					// The signature alone is enough to forge nothing, but is no less secret.
					if parts := strings.Split(wc.Token, "."); len(parts) == 3 {
						leaks["worker JWT signature of "+p.VMName] = parts[2]
					}
				}
			}
		},
	}
	var stdout bytes.Buffer
	if err := demo(context.Background(), opts, &stdout, &logs); err != nil {
		t.Fatalf("demo: %v\nstdout:\n%s", err, stdout.String())
	}
	if workerConfigs < 20 {
		t.Fatalf("%d worker launches seen, want at least one per job (20)", workerConfigs)
	}

	text := logs.String()
	lines := strings.Split(strings.TrimSpace(text), "\n")
	states := map[string]int{}
	for _, line := range lines {
		var e map[string]any
		if err := json.Unmarshal([]byte(line), &e); err != nil {
			t.Fatalf("log line is not a JSON object: %q", line)
		}
		msg, _ := e["msg"].(string)
		if e["level"] != "info" || e["vm"] == nil {
			continue
		}
		if e["hatchery"] != "hatchery-demo" {
			t.Errorf("VM line without the hatchery field: %s", line)
		}
		for _, kind := range []string{"cloned from", "launched in VM", "provisioned from", "deleted:", "template"} {
			if strings.Contains(msg, kind) {
				states[kind]++
				if e["model"] == nil {
					t.Errorf("VM line without the model field: %s", line)
				}
			}
		}
	}
	for _, kind := range []string{"cloned from", "launched in VM", "provisioned from", "deleted:", "template"} {
		if states[kind] == 0 {
			t.Errorf("no Info line of a VM %s in the logs (%d lines)", kind, len(lines))
		}
	}
	if states["launched in VM"] < 20 {
		t.Errorf("%d worker launches logged, want at least 20", states["launched in VM"])
	}
	leaks.check(t, "the demo's logs", text)
}

func TestDemoRejectsANegativeJobDuration(t *testing.T) {
	var stdout, stderr bytes.Buffer
	if code := run([]string{"demo", "--job-duration", "-1s"}, &stdout, &stderr, nil); code != 2 {
		t.Errorf("--job-duration -1s: exit code %d, want 2", code)
	}
	if !strings.Contains(stderr.String(), "--job-duration") {
		t.Errorf("the error does not name the flag: %q", stderr.String())
	}
}
