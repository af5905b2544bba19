package vspherehatchery

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/vmware/govmomi/vim25/mo"
	"go.uber.org/mock/gomock"

	"github.com/hatchery-vsphere/hatchery-vsphere/internal/config"
	"github.com/hatchery-vsphere/hatchery-vsphere/mock_vsphere"
)

// manualTicks hands each loop a channel the test ticks by hand.
type manualTicks struct {
	mu      sync.Mutex
	chans   map[string]chan time.Time
	periods map[string]time.Duration
	ready   chan string
}

func newManualTicks() *manualTicks {
	return &manualTicks{chans: map[string]chan time.Time{}, periods: map[string]time.Duration{}, ready: make(chan string, 8)}
}

func (m *manualTicks) tick(name string, d time.Duration) (<-chan time.Time, func()) {
	m.mu.Lock()
	defer m.mu.Unlock()
	c := make(chan time.Time)
	m.chans[name] = c
	m.periods[name] = d
	m.ready <- name
	return c, func() {}
}

func (m *manualTicks) send(name string) {
	m.mu.Lock()
	c := m.chans[name]
	m.mu.Unlock()
	c <- time.Time{}
}

func TestRunTicksCleanupAndProvisioningUntilCancelled(t *testing.T) {
	cfg := spawnConfig()
	cfg.WorkerProvisioningInterval = 30
	cfg.WorkerProvisioning = []config.WorkerProvisioning{{ModelVMWare: "debian12", Number: 1}}
	listed := make(chan struct{}, 4)
	f := newOrch(t, cfg, func(m *mock_vsphere.MockVSphereClient) {
		// One listing for the AWOL pass, one for the provisioning pass (nothing to make:
		// the pool is full).
		mine := &Annotation{HatcheryName: "h", Provisioning: true, VMwareModelPath: "debian12", Created: created}
		m.EXPECT().ListVirtualMachinesProperties(gomock.Any(), InventoryProperties).DoAndReturn(
			func(context.Context, ...string) ([]mo.VirtualMachine, error) {
				listed <- struct{}{}
				return []mo.VirtualMachine{moVM("provision-v2-x", mine, false, off, 2, 4096)}, nil
			}).Times(2)
	})
	ticks := newManualTicks()
	f.o.tick = ticks.tick

	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- f.o.Run(ctx, f.svc) }()
	for range 2 {
		<-ticks.ready
	}
	ticks.send("vsphere-cleanup")
	<-listed
	ticks.send("vsphere-provisioning")
	<-listed
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Run: %v", err)
	}
	ticks.mu.Lock()
	defer ticks.mu.Unlock()
	// killAwolServersInterval defaults to 60 s.
	if ticks.periods["vsphere-cleanup"] != time.Minute || ticks.periods["vsphere-provisioning"] != 30*time.Second {
		t.Errorf("periods = %v", ticks.periods)
	}
}
