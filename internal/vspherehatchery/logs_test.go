package vspherehatchery

import (
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rockbears/log"
	"github.com/vmware/govmomi/vim25/mo"
	"github.com/vmware/govmomi/vim25/types"
	"go.uber.org/mock/gomock"

	"github.com/hatchery-vsphere/hatchery-vsphere/internal/cds"
	"github.com/hatchery-vsphere/hatchery-vsphere/internal/config"
	"github.com/hatchery-vsphere/hatchery-vsphere/internal/hatchery"
	"github.com/hatchery-vsphere/hatchery-vsphere/mock_vsphere"
)

// jsonLog captures log lines as the JSON objects the daemon's json format writes: the
// context fields, plus level and msg.
type jsonLog struct {
	mu    sync.Mutex
	lines []string
}

func (l *jsonLog) logger() *log.Logger {
	return log.NewWithFactory(func() log.Wrapper { return &jsonEntry{log: l, fields: map[string]any{}} })
}

// entries parses every line; a line that is not JSON fails the test.
func (l *jsonLog) entries(t *testing.T) []map[string]any {
	t.Helper()
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []map[string]any
	for _, line := range l.lines {
		var m map[string]any
		if err := json.Unmarshal([]byte(line), &m); err != nil {
			t.Fatalf("log line is not JSON: %q", line)
		}
		out = append(out, m)
	}
	return out
}

func (l *jsonLog) text() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return strings.Join(l.lines, "\n")
}

type jsonEntry struct {
	log    *jsonLog
	fields map[string]any
}

func (e *jsonEntry) GetLevel() log.Level               { return log.LevelDebug }
func (e *jsonEntry) WithField(key string, value any)   { e.fields[key] = value }
func (e *jsonEntry) Debugf(format string, args ...any) { e.write("debug", format, args) }
func (e *jsonEntry) Infof(format string, args ...any)  { e.write("info", format, args) }
func (e *jsonEntry) Warnf(format string, args ...any)  { e.write("warning", format, args) }
func (e *jsonEntry) Errorf(format string, args ...any) { e.write("error", format, args) }
func (e *jsonEntry) Fatalf(format string, args ...any) { e.write("fatal", format, args) }
func (e *jsonEntry) Panicf(format string, args ...any) { e.write("panic", format, args) }

func (e *jsonEntry) write(level, format string, args []any) {
	e.fields["level"], e.fields["msg"] = level, fmt.Sprintf(format, args...)
	b, err := json.Marshal(e.fields)
	if err != nil {
		panic(err)
	}
	e.log.mu.Lock()
	defer e.log.mu.Unlock()
	e.log.lines = append(e.log.lines, string(b))
}

// newLoggedOrch is newOrch with a JSON-capturing logger.
func newLoggedOrch(t *testing.T, cfg config.VSphere, setup func(m *mock_vsphere.MockVSphereClient)) (orchFixture, *jsonLog) {
	t.Helper()
	m := mock_vsphere.NewMockVSphereClient(gomock.NewController(t))
	setup(m)
	logs := &jsonLog{}
	p, err := New(cfg, m, logs.logger(), newFakeClock().Now)
	if err != nil {
		t.Fatal(err)
	}
	o := NewOrchestrator(p, OrchestratorOptions{
		Timings:       Timings{EnvProbe: 3 * time.Second, EnvProbeEvery: time.Second},
		Tick:          readyTick,
		MetricsPeriod: -1,
	})
	svc := &fakeServices{registered: map[string]struct{}{}}
	o.setServices(svc)
	return orchFixture{o: o, svc: svc}, logs
}

// stateLine is an Info line expected for a state change: a fragment of its message and its
// exact context fields (source file, line and caller aside).
type stateLine struct {
	msg    string
	fields map[string]string
}

// checkStateLines asserts that the Info lines are exactly want, in order, each with exactly
// the fields of want.
func checkStateLines(t *testing.T, logs *jsonLog, want []stateLine) {
	t.Helper()
	var infos []map[string]any
	for _, e := range logs.entries(t) {
		if e["level"] == "info" {
			infos = append(infos, e)
		}
	}
	if len(infos) != len(want) {
		t.Fatalf("%d Info lines, want %d:\n%s", len(infos), len(want), logs.text())
	}
	for i, w := range want {
		got := infos[i]
		if msg, _ := got["msg"].(string); !strings.Contains(msg, w.msg) {
			t.Errorf("Info line %d = %q, want one containing %q", i, msg, w.msg)
		}
		fields := map[string]string{}
		for k, v := range got {
			switch k {
			case "level", "msg", string(log.FieldSourceFile), string(log.FieldSourceLine), string(log.FieldCaller):
				continue
			}
			fields[k] = fmt.Sprint(v)
		}
		if fmt.Sprint(fields) != fmt.Sprint(w.fields) {
			t.Errorf("Info line %d (%q) fields = %v, want %v", i, got["msg"], fields, w.fields)
		}
	}
}

// checkNoSecret fails if a configured secret or what the worker gets appears in the logs.
func checkNoSecret(t *testing.T, logs *jsonLog, secrets ...string) {
	t.Helper()
	text := logs.text()
	for _, s := range secrets {
		if strings.Contains(text, s) {
			t.Errorf("the logs disclose %q:\n%s", s, text)
		}
	}
}

func TestSpawnLogsEachStateChangeOfTheVMWithItsFields(t *testing.T) {
	programs := &programRecorder{}
	f, logs := newLoggedOrch(t, spawnConfig(), func(m *mock_vsphere.MockVSphereClient) {
		listing(m, 1, []mo.VirtualMachine{moVM("debian12", nil, true, off, 2, 4096)}, nil)
		m.EXPECT().LoadVirtualMachine(gomock.Any(), "debian12").Return(vmObj("debian12"), nil).Times(1)
		expectClones(m, 1, &cloneRecorder{})
		expectGuest(m, 1, 2, programs)
	})
	if err := f.o.SpawnWorker(t.Context(), v2Args(v2Model())); err != nil {
		t.Fatalf("SpawnWorker: %v", err)
	}
	worker := map[string]string{"hatchery": "h", "vm": "brave-hopper", "worker": "brave-hopper", "job_id": jobUUID, "model": "deb"}
	checkStateLines(t, logs, []stateLine{
		{`VM "brave-hopper" cloned from "debian12" and powered on`, worker},
		{`worker "brave-hopper" launched in VM "brave-hopper"`, worker},
	})
	checkNoSecret(t, logs, "s3cret", "CDS_CONFIG", "Zm9v")
}

func TestReuseOfAProvisionedVMLogsClaimRenamePowerOnAndLaunch(t *testing.T) {
	mine := func(a Annotation) *Annotation { a.HatcheryName = "h"; a.Created = created; return &a }
	f, logs := newLoggedOrch(t, spawnConfig(), func(m *mock_vsphere.MockVSphereClient) {
		listing(m, 1, []mo.VirtualMachine{
			moVM("debian12", nil, true, off, 2, 4096),
			moVM("provision-v2-ok", mine(Annotation{WorkerName: "provision-v2-ok", Provisioning: true, VMwareModelPath: "debian12"}), false, off, 2, 4096),
		}, nil)
		m.EXPECT().LoadVirtualMachine(gomock.Any(), "debian12").Return(vmObj("debian12"), nil).Times(1)
		m.EXPECT().LoadVirtualMachine(gomock.Any(), "provision-v2-ok").Return(vmObj("provision-v2-ok"), nil).Times(1)
		m.EXPECT().LoadVirtualMachineEvents(gomock.Any(), vmObj("provision-v2-ok"), "VmPoweredOffEvent").Return([]types.BaseEvent{&types.VmPoweredOffEvent{}}, nil).Times(1)
		m.EXPECT().ReconfigureVirtualMachine(gomock.Any(), vmObj("provision-v2-ok"), gomock.Any()).Return(nil).Times(1)
		m.EXPECT().RenameVirtualMachine(gomock.Any(), vmObj("provision-v2-ok"), "brave-hopper").Return(nil).Times(1)
		m.EXPECT().StartVirtualMachine(gomock.Any(), vmObj("provision-v2-ok")).Return(nil).Times(1)
		expectGuest(m, 1, 2, &programRecorder{})
	})
	if err := f.o.SpawnWorker(t.Context(), v2Args(v2Model())); err != nil {
		t.Fatalf("SpawnWorker: %v", err)
	}
	job := func(vm string) map[string]string {
		return map[string]string{"hatchery": "h", "vm": vm, "worker": "brave-hopper", "job_id": jobUUID, "model": "deb"}
	}
	checkStateLines(t, logs, []stateLine{
		{`provisioned VM "provision-v2-ok" claimed for worker "brave-hopper"`, job("provision-v2-ok")},
		{`provisioned VM "provision-v2-ok" renamed to "brave-hopper"`, job("brave-hopper")},
		{`VM "brave-hopper" powered on`, job("brave-hopper")},
		{`worker "brave-hopper" launched`, job("brave-hopper")},
	})
	checkNoSecret(t, logs, "s3cret", "Zm9v")
}

func TestFailedLaunchLogsThePowerOffAndDeletionMark(t *testing.T) {
	programs := &programRecorder{fail: func(c programCall) error {
		if c.program == "/bin/echo" {
			return fmt.Errorf("guest agent gone")
		}
		return nil
	}}
	f, logs := newLoggedOrch(t, spawnConfig(), func(m *mock_vsphere.MockVSphereClient) {
		listing(m, 1, []mo.VirtualMachine{moVM("debian12", nil, true, off, 2, 4096)}, nil)
		m.EXPECT().LoadVirtualMachine(gomock.Any(), "debian12").Return(vmObj("debian12"), nil).Times(1)
		expectClones(m, 1, &cloneRecorder{})
		expectGuest(m, 1, 2, programs)
		m.EXPECT().ShutdownVirtualMachine(gomock.Any(), vmObj("brave-hopper")).Return(nil).Times(1)
	})
	if err := f.o.SpawnWorker(t.Context(), v2Args(v2Model())); err == nil {
		t.Fatal("SpawnWorker succeeded with a failing launch")
	}
	worker := map[string]string{"hatchery": "h", "vm": "brave-hopper", "worker": "brave-hopper", "job_id": jobUUID, "model": "deb"}
	checkStateLines(t, logs, []stateLine{
		{`VM "brave-hopper" cloned from "debian12"`, worker},
		{`VM "brave-hopper" powered off and marked for deletion: `, worker},
	})
	checkNoSecret(t, logs, "s3cret", "Zm9v")
}

func TestProvisioningLogsCloneAndPowerOffWithoutWorkerOrJob(t *testing.T) {
	cfg := spawnConfig()
	cfg.WorkerProvisioning = []config.WorkerProvisioning{{ModelVMWare: "debian12", Number: 1}}
	f, logs := newLoggedOrch(t, cfg, func(m *mock_vsphere.MockVSphereClient) {
		listing(m, 1, []mo.VirtualMachine{moVM("debian12", nil, true, off, 2, 4096)}, nil)
		m.EXPECT().LoadVirtualMachine(gomock.Any(), "debian12").Return(vmObj("debian12"), nil).Times(1)
		expectClones(m, 1, &cloneRecorder{})
		m.EXPECT().WaitForGuestOperationsReady(gomock.Any(), gomock.Any()).Return(nil).Times(1)
		m.EXPECT().WaitForVirtualMachineIP(gomock.Any(), gomock.Any(), gomock.Any(), gomock.Any()).Return(nil).Times(1)
		m.EXPECT().ShutdownVirtualMachine(gomock.Any(), gomock.Any()).Return(nil).Times(1)
		expectProvisionedStamps(t, m, 1)
	})
	f.o.newName = func(prefix string) string { return prefix + "-n1" }
	if err := f.o.provisionPass(f.o.withHatchery(t.Context()), f.svc); err != nil {
		t.Fatalf("provisionPass: %v", err)
	}
	fields := map[string]string{"hatchery": "h", "vm": "provision-v2-n1", "model": "debian12"}
	checkStateLines(t, logs, []stateLine{
		{`VM "provision-v2-n1" cloned from "debian12" and powered on for provisioning`, fields},
		{`VM "provision-v2-n1" provisioned from "debian12" and powered off`, fields},
	})
}

func TestCleanupLogsPowerOffAndDeletionWithTheFieldsOfTheAnnotation(t *testing.T) {
	mine := func(a Annotation) *Annotation { a.HatcheryName = "h"; a.Created = created; return &a }
	f, logs := newLoggedOrch(t, spawnConfig(), func(m *mock_vsphere.MockVSphereClient) {
		listing(m, 1, []mo.VirtualMachine{
			moVM("brave-hopper", mine(Annotation{WorkerName: "brave-hopper", JobID: jobUUID, VMwareModelPath: "debian12", WorkerModelPath: "deb"}), false, on, 2, 4096),
		}, nil)
		m.EXPECT().LoadVirtualMachine(gomock.Any(), "brave-hopper").Return(vmObj("brave-hopper"), nil).Times(1)
		m.EXPECT().ShutdownVirtualMachine(gomock.Any(), vmObj("brave-hopper")).Return(nil).Times(1)
		m.EXPECT().DestroyVirtualMachine(gomock.Any(), vmObj("brave-hopper")).Return(nil).Times(1)
	})
	f.o.caches.ToDelete.Add("brave-hopper")
	if err := f.o.killAwolServers(f.o.withHatchery(t.Context()), f.svc); err != nil {
		t.Fatalf("killAwolServers: %v", err)
	}
	fields := map[string]string{"hatchery": "h", "vm": "brave-hopper", "worker": "brave-hopper", "job_id": jobUUID, "model": "deb"}
	checkStateLines(t, logs, []stateLine{
		{`VM "brave-hopper" powered off before deletion`, fields},
		{`VM "brave-hopper" deleted: marked for deletion`, fields},
	})
}

func TestTemplateBuildLogsCloneShutdownReplacementAndTemplate(t *testing.T) {
	mine := func(a Annotation) *Annotation { a.HatcheryName = "h"; a.Created = created; return &a }
	model := &hatchery.WorkerStarterWorkerModel{
		ModelV1: &cds.Model{
			Name: "mymodel", Type: cds.ModelTypeVSphere, Group: cds.Group{Name: "grp"},
			UserLastModified: time.Unix(1717000500, 0),
			ModelVirtualMachine: cds.ModelVirtualMachine{
				Image: "debian12", Cmd: "worker", PostCmd: "sudo shutdown -h now", User: "admin", Password: "model-pw-Secret",
			},
		},
		Cmd: "worker",
	}
	fleet := []mo.VirtualMachine{
		moVM("debian12", nil, true, off, 2, 4096),
		moVM("mymodel", mine(Annotation{Model: true, WorkerModelPath: "grp/mymodel", WorkerModelLastModified: "1717000000"}), true, off, 2, 4096),
	}
	f, logs := newLoggedOrch(t, spawnConfig(), func(m *mock_vsphere.MockVSphereClient) {
		listing(m, 2, fleet, nil)
		m.EXPECT().LoadVirtualMachine(gomock.Any(), "debian12").Return(vmObj("debian12"), nil).Times(1)
		expectClones(m, 2, &cloneRecorder{})
		expectGuest(m, 2, 4, &programRecorder{})
		m.EXPECT().WaitForVirtualMachineShutdown(gomock.Any(), vmObj("mymodel-tmp")).Return(nil).Times(1)
		m.EXPECT().LoadVirtualMachine(gomock.Any(), "mymodel").Return(vmObj("mymodel"), nil).Times(1)
		m.EXPECT().DestroyVirtualMachine(gomock.Any(), vmObj("mymodel")).Return(nil).Times(1)
		m.EXPECT().RenameVirtualMachine(gomock.Any(), vmObj("mymodel-tmp"), "mymodel").Return(nil).Times(1)
		m.EXPECT().MarkVirtualMachineAsTemplate(gomock.Any(), vmObj("mymodel-tmp")).Return(nil).Times(1)
	})
	args := hatchery.SpawnArguments{
		WorkerName: "register-calm-turing", Model: model, JobID: "0", RegisterOnly: true,
		LaunchScript: "worker register", Env: []string{"CDS_CONFIG=eA=="},
	}
	if err := f.o.SpawnWorker(t.Context(), args); err != nil {
		t.Fatalf("SpawnWorker: %v", err)
	}
	fields := func(vm string) map[string]string {
		return map[string]string{"hatchery": "h", "vm": vm, "worker": "register-calm-turing", "job_id": "0", "model": "grp/mymodel"}
	}
	checkStateLines(t, logs, []stateLine{
		{`VM "mymodel-tmp" cloned from "debian12" and powered on to build the template of model "grp/mymodel"`, fields("mymodel-tmp")},
		{`VM "mymodel-tmp" powered off by the post-command`, fields("mymodel-tmp")},
		{`previous template "mymodel" of model "grp/mymodel" deleted`, fields("mymodel")},
		{`template "mymodel" of model "grp/mymodel" built`, fields("mymodel")},
		{`VM "register-calm-turing" cloned from "mymodel" and powered on`, fields("register-calm-turing")},
		{`worker "register-calm-turing" launched`, fields("register-calm-turing")},
	})
	checkNoSecret(t, logs, "model-pw-Secret", "eA==")
}
