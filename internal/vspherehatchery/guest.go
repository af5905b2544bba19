package vspherehatchery

import (
	"context"
	"errors"
	"fmt"

	"github.com/vmware/govmomi/guest"
	"github.com/vmware/govmomi/object"
	"github.com/vmware/govmomi/vim25/types"

	"github.com/hatchery-vsphere/hatchery-vsphere/internal/hatchery"
	"github.com/hatchery-vsphere/hatchery-vsphere/internal/lifecycle"
)

// ErrNoGuestCredentials is returned when neither guestCredentials nor the model give a
// user and a password for the guest operations.
var ErrNoGuestCredentials = errors.New("guest credentials not configured")

// guestCredentials are the user and password of the guest operations.
type guestCredentials struct {
	Username string
	Password string
}

// credentialsFor resolves the guest credentials of a model (protocol spec §18.7, seed
// §6.2.3): the first guestCredentials entry matching the model (v2: modelVMWare = spec
// image, v1: modelPath = <group>/<name>) with both a user and a password; else the model's
// own user/password (v1 model_virtual_machine, v2 spec). The original never fell back to
// the model (Q13), although its documentation said so; we follow the documentation.
func (o *Orchestrator) credentialsFor(model *hatchery.WorkerStarterWorkerModel) (guestCredentials, error) {
	if model == nil || (model.ModelV1 == nil && model.ModelV2 == nil) {
		return guestCredentials{}, fmt.Errorf("%w: no worker model", ErrNoGuestCredentials)
	}
	for _, c := range o.cfg.GuestCredentials {
		match := c.ModelPath != "" && !model.IsV2() && c.ModelPath == model.ModelV1.GroupPath() ||
			c.ModelVMWare != "" && model.IsV2() && c.ModelVMWare == model.VSphereSpec.Image
		if !match {
			continue
		}
		if c.Username != "" && c.Password != "" {
			return guestCredentials{Username: c.Username, Password: c.Password}, nil
		}
		// An incomplete entry is a configuration slip: try the model's own.
		break
	}
	var own guestCredentials
	if model.IsV2() {
		own = guestCredentials{Username: model.VSphereSpec.Username, Password: model.VSphereSpec.Password}
	} else {
		own = guestCredentials{Username: model.ModelV1.ModelVirtualMachine.User, Password: model.ModelV1.ModelVirtualMachine.Password}
	}
	if own.Username == "" || own.Password == "" {
		return guestCredentials{}, fmt.Errorf("%w for model %q: add a guestCredentials entry or a user and password to the model", ErrNoGuestCredentials, model.Name())
	}
	return own, nil
}

// guestSession runs programs in one VM's guest.
type guestSession struct {
	o       *Orchestrator
	vm      *object.VirtualMachine
	name    string
	procman *guest.ProcessManager
	auth    *types.NamePasswordAuthentication
}

// waitReady brings a powered-on VM to the point where a program can be started in it
// (seed §9.1): guest operations ready (3 min), then its IP (3 min: the reserved fixed IP,
// or any IPv4 with DHCP, fix of Q7), then an `env` run that succeeds, tried every second
// for up to 1 min.
func (o *Orchestrator) waitReady(ctx context.Context, vm *object.VirtualMachine, name, ip string, creds guestCredentials) (*guestSession, error) {
	gctx, cancel := context.WithTimeout(ctx, o.timings.GuestReady)
	err := o.client.WaitForGuestOperationsReady(gctx, vm)
	cancel()
	if err != nil {
		return nil, spawnFailed(lifecycle.SpawnGuestOps, fmt.Errorf("VM %q: guest operations not ready: %w", name, err))
	}
	if err := o.waitIP(ctx, vm, name, ip); err != nil {
		return nil, err
	}
	procman, err := o.client.ProcessManager(ctx, vm)
	if err != nil {
		return nil, spawnFailed(lifecycle.SpawnGuestOps, fmt.Errorf("VM %q: %w", name, err))
	}
	s := &guestSession{
		o:       o,
		vm:      vm,
		name:    name,
		procman: procman,
		auth:    &types.NamePasswordAuthentication{Username: creds.Username, Password: creds.Password},
	}
	if err := s.probe(ctx); err != nil {
		return nil, err
	}
	return s, nil
}

// waitIP waits for the fixed IP ip, or any IPv4 address when ip is empty.
func (o *Orchestrator) waitIP(ctx context.Context, vm *object.VirtualMachine, name, ip string) error {
	ictx, cancel := context.WithTimeout(ctx, o.timings.IP)
	defer cancel()
	var want *string
	if ip != "" {
		want = &ip
	}
	if err := o.client.WaitForVirtualMachineIP(ictx, vm, want, name); err != nil {
		return spawnFailed(lifecycle.SpawnIPTimeout, fmt.Errorf("VM %q: no IP address: %w", name, err))
	}
	return nil
}

// probe runs `env` until it succeeds: VMware Tools report guest operations ready a little
// before they can start programs.
func (s *guestSession) probe(ctx context.Context) error {
	t := s.o.timings
	attempts := int(max(1, (t.EnvProbe+t.EnvProbeEvery-1)/t.EnvProbeEvery))
	pctx, cancel := context.WithTimeout(ctx, t.EnvProbe)
	defer cancel()
	ticks, stop := s.o.tick("vsphere-env-probe", t.EnvProbeEvery)
	defer stop()
	var err error
	for i := range attempts {
		if i > 0 {
			select {
			case <-pctx.Done():
				return spawnFailed(lifecycle.SpawnGuestOps, fmt.Errorf("VM %q: guest cannot run programs: %w (last error: %v)", s.name, pctx.Err(), err))
			case <-ticks:
			}
		}
		if err = s.start(pctx, "env", "", nil); err == nil {
			return nil
		}
	}
	return spawnFailed(lifecycle.SpawnGuestOps, fmt.Errorf("VM %q: guest cannot run programs after %d attempts: %w", s.name, attempts, err))
}

// launch starts the script in the guest as the original does (protocol spec §17.4): the
// program /bin/echo with the arguments "-n ;<script>", which the guest runs through a
// shell, so the text after ";" is the script. env carries CDS_CONFIG: never log it.
func (s *guestSession) launch(ctx context.Context, script string, env []string) error {
	if err := s.start(ctx, "/bin/echo", "-n ;"+script, env); err != nil {
		return fmt.Errorf("VM %q: start the worker script: %w", s.name, err)
	}
	return nil
}

func (s *guestSession) start(ctx context.Context, program, arguments string, env []string) error {
	// This is left for the client to fill from procman.
	req := &types.StartProgramInGuest{
		Vm:   s.vm.Reference(),
		Auth: s.auth,
		Spec: &types.GuestProgramSpec{
			ProgramPath:  program,
			Arguments:    arguments,
			EnvVariables: env,
		},
	}
	_, err := s.o.client.StartProgramInGuest(ctx, s.procman, req)
	return err
}
