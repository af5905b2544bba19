package daemon

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/hatchery-vsphere/hatchery-vsphere/internal/cdssim"
	"github.com/hatchery-vsphere/hatchery-vsphere/internal/config"
	"github.com/hatchery-vsphere/hatchery-vsphere/internal/hatchery"
	"github.com/hatchery-vsphere/hatchery-vsphere/internal/simenv"
	"github.com/hatchery-vsphere/hatchery-vsphere/internal/vsphere"
	"github.com/hatchery-vsphere/hatchery-vsphere/internal/vspherehatchery"
)

// HarnessOptions shape a Harness. Zero values take the documented defaults.
type HarnessOptions struct {
	// Name is the hatchery name the consumer tokens are bound to (default "hatchery-e2e").
	Name string
	// Region is the region granted to the v2 hatchery and set as provision.region
	// (default "eu").
	Region string
	// Templates are created in the simulated vCenter (default: simenv's debian12 and
	// ubuntu24).
	Templates []simenv.Template
	// PlainVMs unrelated VMs are created in the simulated vCenter.
	PlainVMs int
	// JobDuration is how long a simulated worker runs its job (0: it finishes at once).
	JobDuration time.Duration
	// HoldJobs makes simulated workers wait for API.CompleteWorker.
	HoldJobs bool
	// APIKey signs the simulated API's tokens; HatcheryKey is the hatchery's rsaPrivateKey.
	// nil generates one (≈0.1-1 s each): suites may share keys.
	APIKey, HatcheryKey *rsa.PrivateKey
	// Now is the clock of the simulated API (default time.Now).
	Now func() time.Time
}

// Harness is a simulated vCenter (simenv) and a simulated CDS API (cdssim) wired together
// the way real VMs tie them: a program started in a guest with a CDS_CONFIG in its
// environment becomes a simulated worker, and a worker that has finished powers its VM off
// (the real worker runs `shutdown -h now`). Config gives a hatchery configuration pointing
// at both. Close it when done.
type Harness struct {
	VCenter *simenv.Env
	API     *cdssim.Server
	// Name, Region, Key, V1Token and V2Token are what Config puts in the configuration.
	Name, Region     string
	Key              *rsa.PrivateKey
	V1Token, V2Token string

	// ctx bounds the power-offs asked by finished workers; Close cancels it.
	ctx    context.Context
	cancel context.CancelFunc

	wg sync.WaitGroup // goroutines started by onGuestProgram

	mu         sync.Mutex
	problems   []error
	launched   int
	poweredOff int
	// vmsGoneUnderWorker counts the workers whose VM was deleted before they finished.
	vmsGoneUnderWorker int
}

// NewHarness starts the simulated vCenter and CDS API and ties them together.
func NewHarness(ctx context.Context, opts HarnessOptions) (*Harness, error) {
	if opts.Name == "" {
		opts.Name = "hatchery-e2e"
	}
	if opts.Region == "" {
		opts.Region = "eu"
	}
	var err error
	if opts.HatcheryKey == nil {
		if opts.HatcheryKey, err = rsa.GenerateKey(rand.Reader, 2048); err != nil {
			return nil, fmt.Errorf("generate the hatchery key: %w", err)
		}
	}
	if opts.APIKey == nil {
		if opts.APIKey, err = rsa.GenerateKey(rand.Reader, 2048); err != nil {
			return nil, fmt.Errorf("generate the API key: %w", err)
		}
	}
	hctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	h := &Harness{Name: opts.Name, Region: opts.Region, Key: opts.HatcheryKey, ctx: hctx, cancel: cancel}

	h.API = cdssim.New(cdssim.Options{
		HatcheryName: opts.Name,
		Region:       opts.Region,
		JobDuration:  opts.JobDuration,
		HoldJobs:     opts.HoldJobs,
		SigningKey:   opts.APIKey,
		Now:          opts.Now,
	})
	if err := h.API.Start(); err != nil {
		cancel()
		return nil, fmt.Errorf("start the simulated CDS API: %w", err)
	}
	h.V1Token = h.API.NewBuiltinConsumerToken()
	h.V2Token = h.API.NewHatcheryConsumerToken(opts.Name)

	h.VCenter, err = simenv.New(ctx, simenv.Options{
		Templates:      opts.Templates,
		PlainVMs:       opts.PlainVMs,
		OnGuestProgram: h.onGuestProgram,
	})
	if err != nil {
		h.API.Close()
		cancel()
		return nil, fmt.Errorf("start the simulated vCenter: %w", err)
	}
	// vcsim's resource pool runtime is static and too small for a few workers: give it
	// room for about a hundred (a test may shrink it again).
	if err := h.VCenter.SetResourcePoolRuntime(400_000, 1<<40); err != nil {
		h.Close()
		return nil, fmt.Errorf("size the simulated resource pool: %w", err)
	}
	h.API.SetOnWorkerDone(h.onWorkerDone)
	return h, nil
}

// onGuestProgram runs inside the StartProgramInGuest SOAP call: the worker's checks and
// sign-in are quick and in memory, and the worker runs its job in a goroutine the API owns.
func (h *Harness) onGuestProgram(p simenv.GuestProgram) {
	env := make(map[string]string, len(p.Env))
	for _, kv := range p.Env {
		k, v, _ := strings.Cut(kv, "=")
		env[k] = v
	}
	if _, ok := env["CDS_CONFIG"]; !ok {
		if strings.Contains(p.Arguments, "shutdown") {
			// A model's post-command during a template build: the guest goes down. Not
			// inside the SOAP call, which holds the simulator.
			h.goOwned(func() { h.onWorkerDone(p.VMName) })
		}
		return // a probe (`env`) or another command, not a worker launch
	}
	h.mu.Lock()
	h.launched++
	h.mu.Unlock()
	if err := h.API.StartWorker(env); err != nil {
		h.addProblem(fmt.Errorf("worker launched in VM %q refused: %w", p.VMName, err))
	}
}

// onWorkerDone is the worker's final `shutdown -h now`.
func (h *Harness) onWorkerDone(vmName string) {
	err := h.VCenter.PowerOffVM(h.ctx, vmName)
	if errors.Is(err, simenv.ErrVMNotFound) {
		// The hatchery deleted the VM under its worker: after a launch whose answer was
		// lost it cannot know the worker started, and rolls the VM back. A real guest
		// would simply be gone.
		h.mu.Lock()
		h.vmsGoneUnderWorker++
		h.mu.Unlock()
		return
	}
	if err != nil {
		h.addProblem(fmt.Errorf("power off VM %q after its worker: %w", vmName, err))
		return
	}
	h.mu.Lock()
	h.poweredOff++
	h.mu.Unlock()
}

// goOwned runs f in a goroutine Close waits for.
func (h *Harness) goOwned(f func()) {
	h.wg.Add(1)
	go func() {
		defer h.wg.Done()
		f()
	}()
}

func (h *Harness) addProblem(err error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.problems = append(h.problems, err)
}

// Problems lists what went wrong between the two simulators: refused workers, failed
// power-offs. Empty when every launched worker was accepted.
func (h *Harness) Problems() []error {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]error(nil), h.problems...)
}

// WorkersLaunched is the number of worker launches (guest programs with a CDS_CONFIG) seen.
func (h *Harness) WorkersLaunched() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.launched
}

// VMsPoweredOff is the number of VMs powered off by their finished worker.
func (h *Harness) VMsPoweredOff() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.poweredOff
}

// VMsGoneUnderWorker is the number of workers whose VM was deleted before they finished
// (a rollback after a launch whose answer was lost): none without faults.
func (h *Harness) VMsGoneUnderWorker() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.vmsGoneUnderWorker
}

// Config returns a complete configuration (defaults applied) of a hatchery named Name
// that signs in with both tokens, listens on a random port and uses the simulated vCenter
// over verified TLS. Callers adjust it before running the daemon.
func (h *Harness) Config() *config.File {
	cfg := config.Defaults()
	cfg.Log.Format = "discard"
	vs := &cfg.Hatchery.VSphere
	c := &vs.CommonConfiguration
	c.Name = h.Name
	c.RSAPrivateKey = string(pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(h.Key)}))
	c.URL = "http://127.0.0.1:8086"
	c.HTTP.Addr = "127.0.0.1"
	c.HTTP.Port = 0
	c.API.HTTP.URL = h.API.URL()
	c.API.Token = h.V1Token
	c.API.TokenV2 = h.V2Token
	c.CDN.URL = h.API.URL()
	c.CDN.TCP.URL = "127.0.0.1:8090"
	c.Provision.Region = h.Region

	vs.Endpoint = h.VCenter.URL.Host
	vs.User = h.VCenter.Username
	vs.Password = h.VCenter.Password
	vs.DatacenterString = h.VCenter.Datacenter
	vs.DatastoreString = h.VCenter.Datastore
	vs.NetworkString = h.VCenter.Network
	vs.CAFile = h.VCenter.CACertFile
	return cfg
}

// Options are daemon options fit for the simulators: job polling, sign-in retries and
// the cleanup pass every few tens of milliseconds instead of tens of seconds, so that a job
// goes from queued to deleted VM in well under a second of waiting.
func (h *Harness) Options() []Option {
	return []Option{
		WithIntervals(hatchery.Intervals{
			Poll:         200 * time.Millisecond,
			ModelRefresh: 200 * time.Millisecond,
			SigninRetry:  100 * time.Millisecond,
			CDNRetry:     100 * time.Millisecond,
		}),
		// registerFrequency is in whole seconds: pass v1 model registration faster.
		WithTick(func(name string, d time.Duration) (<-chan time.Time, func()) {
			if name == "register" {
				d = 200 * time.Millisecond
			}
			t := time.NewTicker(d)
			return t.C, t.Stop
		}),
		// Simulated workers power their VMs off behind the hatchery's back, as real guests
		// do: the inventory must notice within the test's patience, not in 30 s.
		WithInventory(vsphere.InventoryOptions{PollInterval: 100 * time.Millisecond}),
		WithProvider(NewVSphereProvider(VSphereProviderOptions{Timings: vspherehatchery.Timings{
			Cleanup:       100 * time.Millisecond,
			EnvProbeEvery: 20 * time.Millisecond,
			// The simulated worker powers its VM off as soon as its job is done: no need to
			// wait finishedWorkerGracePeriod (whole seconds) before deleting it.
			FinishedGrace: 100 * time.Millisecond,
		}})),
	}
}

// Close stops both simulators and waits for the simulated workers.
func (h *Harness) Close() {
	h.API.Close()
	h.cancel()
	h.wg.Wait()
	h.VCenter.Close()
}
