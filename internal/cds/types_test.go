package cds

import (
	"encoding/json"
	"fmt"
	"testing"
)

func TestIsUUID(t *testing.T) {
	for s, want := range map[string]bool{
		"0b9a1f4e-3a3c-4c8e-9a50-4d5b3b3c2a11":          true,
		"0B9A1F4E-3A3C-4C8E-9A50-4D5B3B3C2A11":          true,
		"urn:uuid:0b9a1f4e-3a3c-4c8e-9a50-4d5b3b3c2a11": true,
		"{0b9a1f4e-3a3c-4c8e-9a50-4d5b3b3c2a11}":        true,
		"0b9a1f4e3a3c4c8e9a504d5b3b3c2a11":              true,
		"98765":                                         false,
		"0":                                             false,
		"-1":                                            false,
		"":                                              false,
		"0b9a1f4e-3a3c-4c8e-9a50-4d5b3b3c2a1g":          false,
		"0b9a1f4e+3a3c-4c8e-9a50-4d5b3b3c2a11":          false,
		"(0b9a1f4e-3a3c-4c8e-9a50-4d5b3b3c2a11)":        false,
		"urn:uid:0b9a1f4e-3a3c-4c8e-9a50-4d5b3b3c2a11x": false,
	} {
		if got := IsUUID(s); got != want {
			t.Errorf("IsUUID(%q) = %v, want %v", s, got, want)
		}
	}
}

func TestModelPath(t *testing.T) {
	m := Model{Name: "debian12", Group: Group{Name: "grp"}}
	if m.Path() != "grp/debian12" || m.GroupPath() != "grp/debian12" {
		t.Errorf("Path=%q GroupPath=%q", m.Path(), m.GroupPath())
	}
	m.Group.Name = SharedInfraGroupName
	if m.Path() != "debian12" || m.GroupPath() != "shared.infra/debian12" {
		t.Errorf("shared.infra: Path=%q GroupPath=%q", m.Path(), m.GroupPath())
	}
}

func TestRunsOnAcceptsStringAndObject(t *testing.T) {
	var j V2Job
	if err := json.Unmarshal([]byte(`{"runs-on":"PRJ/vcs/repo/model@main"}`), &j); err != nil || j.RunsOn.Model != "PRJ/vcs/repo/model@main" {
		t.Errorf("string form: %+v %v", j, err)
	}
	if err := json.Unmarshal([]byte(`{"runs-on":{"model":"m","memory":"2g","flavor":"small"}}`), &j); err != nil ||
		j.RunsOn != (V2RunsOn{Model: "m", Memory: "2g", Flavor: "small"}) {
		t.Errorf("object form: %+v %v", j, err)
	}
	if err := json.Unmarshal([]byte(`{"runs-on":42}`), &j); err == nil {
		t.Error("number accepted as runs-on")
	}
}

func TestVSphereSpec(t *testing.T) {
	m := V2WorkerModel{Name: "m", Type: ModelTypeVSphere, Spec: json.RawMessage(`{"image":"debian12","flavor":"large","username":"u","password":"p","x":1}`)}
	spec, err := m.VSphereSpec()
	if err != nil || spec != (V2WorkerModelVSphereSpec{Image: "debian12", Flavor: "large", Username: "u", Password: "p"}) {
		t.Errorf("spec = %+v, %v", spec, err)
	}
	m.Type = ModelTypeDocker
	if _, err := m.VSphereSpec(); err == nil {
		t.Error("docker model decoded as vsphere")
	}
}

func TestWireNamesOfQuirkQ20(t *testing.T) {
	b, _ := json.Marshal(SpawnErrorForm{Error: "boom", Logs: []byte("log")})
	if string(b) != `{"Error":"boom","Logs":"bG9n"}` {
		t.Errorf("SpawnErrorForm = %s", b)
	}
	var w Worker
	_ = json.Unmarshal([]byte(`{"lastbeat":"2025-01-10T08:00:00Z"}`), &w)
	var w2 V2Worker
	_ = json.Unmarshal([]byte(`{"last_beat":"2025-01-10T08:00:00Z"}`), &w2)
	if w.LastBeat.IsZero() || w2.LastBeat.IsZero() {
		t.Errorf("lastbeat v1=%v v2=%v", w.LastBeat, w2.LastBeat)
	}
	b, _ = json.Marshal(Worker{})
	if string(b) != `{"id":"","name":"","lastbeat":"0001-01-01T00:00:00Z","model_id":null,"model_name":null,"job_run_id":null,"status":"","hatchery_name":"","uptodate":false,"version":"","os":"","arch":""}` {
		t.Errorf("Worker = %s", b)
	}
}

func TestMonitoringLineOmitsSessionAndConsumer(t *testing.T) {
	b, _ := json.Marshal(MonitoringStatusLine{Status: "OK", Component: "Time", Value: "v", Type: "hatchery", Service: "s", Hostname: "h"})
	if string(b) != `{"status":"OK","component":"Time","value":"v","type":"hatchery","service":"s","hostname":"h"}` {
		t.Errorf("line = %s", b)
	}
}

func TestAPIErrorMatchesByIDThroughWrapping(t *testing.T) {
	err := fmt.Errorf("book: %w", &APIError{ID: ErrIDJobAlreadyBooked, Message: "already booked", StatusCode: 403})
	if !ErrorIs(err, ErrIDJobAlreadyBooked) || ErrorIs(err, ErrIDForbidden) || ErrorIs(fmt.Errorf("plain"), ErrIDUnknown) {
		t.Error("ErrorIs mismatch")
	}
	var e APIError
	if err := json.Unmarshal([]byte(`{"id":112,"message":"m","request_id":"r","from":"f","stack_trace":"s","data":{"k":1}}`), &e); err != nil || e.ID != 112 || e.From != "f" {
		t.Errorf("decode = %+v %v", e, err)
	}
}

func TestPublicKeyPEMRoundTrip(t *testing.T) {
	pemText := PublicKeyPEM(&testKey().PublicKey)
	if string(pemText[:31]) != "-----BEGIN RSA PUBLIC KEY-----\n" || pemText[len(pemText)-1] != '\n' {
		t.Errorf("PEM = %q", pemText)
	}
	k, err := ParseSigningKeyHeader(signingKeyHeader())
	if err != nil || !k.Equal(&testKey().PublicKey) {
		t.Errorf("round trip: %v", err)
	}
}
