package vspherehatchery

import (
	"errors"
	"testing"
	"time"

	"github.com/vmware/govmomi/vim25/mo"
	"go.uber.org/mock/gomock"

	"github.com/hatchery-vsphere/hatchery-vsphere/internal/cds"
	"github.com/hatchery-vsphere/hatchery-vsphere/internal/config"
	"github.com/hatchery-vsphere/hatchery-vsphere/internal/hatchery"
	"github.com/hatchery-vsphere/hatchery-vsphere/mock_vsphere"
)

func v1TemplateModel(needRegistration bool) *hatchery.WorkerStarterWorkerModel {
	return &hatchery.WorkerStarterWorkerModel{
		ModelV1: &cds.Model{
			Name: "mymodel", Type: cds.ModelTypeVSphere, Group: cds.Group{Name: "grp"},
			NeedRegistration: needRegistration,
			UserLastModified: time.Unix(1717000000, 0),
			ModelVirtualMachine: cds.ModelVirtualMachine{
				Image: "debian12", Cmd: "worker", PostCmd: "sudo shutdown -h now",
			},
		},
		Cmd: "worker",
	}
}

func v1TemplateConfig() config.VSphere {
	cfg := spawnConfig()
	cfg.GuestCredentials = []config.GuestCredential{{ModelPath: "grp/mymodel", Username: "cds", Password: "pw"}}
	return cfg
}

func TestSpawnV1JobClonesTheUpToDateTemplate(t *testing.T) {
	mine := func(a Annotation) *Annotation { a.HatcheryName = "h"; a.Created = created; return &a }
	clones, programs := &cloneRecorder{}, &programRecorder{}
	f := newOrch(t, v1TemplateConfig(), func(m *mock_vsphere.MockVSphereClient) {
		listing(m, 1, []mo.VirtualMachine{
			moVM("mymodel", mine(Annotation{Model: true, WorkerModelPath: "grp/mymodel", WorkerModelLastModified: "1717000000"}), true, off, 2, 4096),
		}, nil)
		m.EXPECT().LoadVirtualMachine(gomock.Any(), "mymodel").Return(vmObj("mymodel"), nil).Times(1)
		expectClones(m, 1, clones)
		expectGuest(m, 1, 2, programs)
	})
	args := hatchery.SpawnArguments{WorkerName: "calm-turing", Model: v1TemplateModel(false), JobID: "98765", LaunchScript: "worker", Env: []string{"CDS_CONFIG=x"}}
	if err := f.o.SpawnWorker(t.Context(), args); err != nil {
		t.Fatalf("SpawnWorker: %v", err)
	}
	c := clones.get()[0]
	a, _ := ParseAnnotation(c.spec.Config.Annotation)
	if c.source != "vm-mymodel" || a.JobID != "98765" || a.WorkerModelPath != "grp/mymodel" || a.WorkerModelLastModified != "1717000000" || a.VMwareModelPath != "mymodel" {
		t.Errorf("clone from %s with annotation %s", c.source, c.spec.Config.Annotation)
	}
	if len(f.svc.infos) != 0 {
		t.Errorf("a v1 job got v2 infos: %q", f.svc.infos)
	}
}

func TestTemplateBuildFailureAbandonsTheTemporaryVM(t *testing.T) {
	boom := errors.New("still running")
	f := newOrch(t, v1TemplateConfig(), func(m *mock_vsphere.MockVSphereClient) {
		listing(m, 1, nil, nil)
		m.EXPECT().LoadVirtualMachine(gomock.Any(), "debian12").Return(vmObj("debian12"), nil).Times(1)
		expectClones(m, 1, &cloneRecorder{})
		expectGuest(m, 1, 2, &programRecorder{})
		m.EXPECT().WaitForVirtualMachineShutdown(gomock.Any(), vmObj("mymodel-tmp")).Return(boom).Times(1)
		m.EXPECT().ShutdownVirtualMachine(gomock.Any(), vmObj("mymodel-tmp")).Return(nil).Times(1)
	})
	args := hatchery.SpawnArguments{WorkerName: "register-x", Model: v1TemplateModel(true), JobID: "0", RegisterOnly: true}
	if err := f.o.SpawnWorker(t.Context(), args); !errors.Is(err, boom) {
		t.Fatalf("err = %v, want the power-off wait failure", err)
	}
	if !f.o.caches.ToDelete.Has("mymodel-tmp") {
		t.Errorf("temporary VM not marked for deletion: %v", f.o.caches.ToDelete.List())
	}
}

// A rename whose answer is lost may have happened: the rollback marks the VM under both
// names, so that the cleanup pass deletes it whichever name it has now.
func TestTemplateRenameFailureMarksBothNames(t *testing.T) {
	lost := errors.New("connection reset by peer")
	f := newOrch(t, v1TemplateConfig(), func(m *mock_vsphere.MockVSphereClient) {
		listing(m, 1, nil, nil)
		m.EXPECT().LoadVirtualMachine(gomock.Any(), "debian12").Return(vmObj("debian12"), nil).Times(1)
		expectClones(m, 1, &cloneRecorder{})
		expectGuest(m, 1, 2, &programRecorder{})
		m.EXPECT().WaitForVirtualMachineShutdown(gomock.Any(), vmObj("mymodel-tmp")).Return(nil).Times(1)
		m.EXPECT().RenameVirtualMachine(gomock.Any(), vmObj("mymodel-tmp"), "mymodel").Return(lost).Times(1)
		m.EXPECT().ShutdownVirtualMachine(gomock.Any(), vmObj("mymodel-tmp")).Return(nil).Times(1)
	})
	args := hatchery.SpawnArguments{WorkerName: "register-x", Model: v1TemplateModel(true), JobID: "0", RegisterOnly: true}
	if err := f.o.SpawnWorker(t.Context(), args); !errors.Is(err, lost) {
		t.Fatalf("err = %v, want the rename failure", err)
	}
	for _, name := range []string{"mymodel-tmp", "mymodel"} {
		if !f.o.caches.ToDelete.Has(name) {
			t.Errorf("%s not marked for deletion: %v", name, f.o.caches.ToDelete.List())
		}
	}
}
