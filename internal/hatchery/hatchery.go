// Package hatchery is the generic hatchery framework of hatchery-vsphere: sign-in and
// start-up, job discovery (v1 and v2, websocket and polling), the main loop and its
// worker-model cache, v1 and v2 job handling, the worker pool and capacity gates, worker
// starters (book/take, worker JWT, CDS_CONFIG, launch script, spawn, release), v1 model
// registration and heartbeats. It drives a Provider (the vSphere back-end) and talks to the
// CDS API through the V1API and V2API interfaces, which *cds.Client satisfies.
package hatchery

import (
	"context"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/rockbears/log"
	"golang.org/x/sync/errgroup"

	"github.com/hatchery-vsphere/hatchery-vsphere/internal/cds"
	"github.com/hatchery-vsphere/hatchery-vsphere/internal/config"
)

// V1API is the v1 (builtin consumer) session of the CDS API client the framework uses.
type V1API interface {
	Signin(ctx context.Context) error
	SignedIn() bool
	SignOut(ctx context.Context) error
	Heartbeat(ctx context.Context, status cds.MonitoringStatus) error
	CDNConfig(ctx context.Context) (cds.CDNConfig, error)
	WorkerModelsEnabled(ctx context.Context) ([]cds.Model, error)
	WorkerModelGet(ctx context.Context, group, name string) (cds.Model, error)
	WorkerModelSecrets(ctx context.Context, group, name string) ([]cds.ModelSecret, error)
	WorkerModelBook(ctx context.Context, group, name string) error
	WorkerModelSpawnError(ctx context.Context, group, name string, form cds.SpawnErrorForm) error
	WorkerList(ctx context.Context) ([]cds.Worker, error)
	WorkerDisable(ctx context.Context, id string) error
	QueueWorkflows(ctx context.Context, modelType string, regions []string) ([]cds.WorkflowNodeJobRun, error)
	QueueJobInfo(ctx context.Context, id int64) (cds.WorkflowNodeJobRun, error)
	QueueJobBook(ctx context.Context, id int64) (cds.WorkflowNodeJobRunBooked, error)
	QueueJobRelease(ctx context.Context, id int64) error
	QueueJobSendSpawnInfo(ctx context.Context, id int64, infos []cds.SpawnInfo) error
	QueueJobResult(ctx context.Context, id int64, result cds.Result) error
	ListenV1(ctx context.Context, events chan<- cds.WebsocketEvent) error
}

// V2API is the v2 (hatchery consumer) session of the CDS API client the framework uses.
type V2API interface {
	Signin(ctx context.Context) error
	// Region is the region granted by the last v2 sign-in: the hatchery's v2 region (§5).
	Region() string
	Heartbeat(ctx context.Context, status cds.MonitoringStatus) error
	CDNConfig(ctx context.Context) (cds.CDNConfig, error)
	V2WorkerList(ctx context.Context) ([]cds.V2Worker, error)
	V2Queue(ctx context.Context, region string, osarch []string) ([]cds.V2WorkflowRunJob, error)
	V2QueueJobInfo(ctx context.Context, region, id string) (cds.V2QueueJobInfo, error)
	V2QueueJobTake(ctx context.Context, region, id string) (cds.V2WorkflowRunJob, error)
	V2QueueJobRelease(ctx context.Context, region, id string) error
	V2QueueJobSendInfo(ctx context.Context, region, id string, info cds.V2SendJobRunInfo) error
	V2WorkerModelGet(ctx context.Context, projKey, vcs, repo, name, branch string) (cds.V2WorkerModel, error)
	ListenV2(ctx context.Context, events chan<- cds.WebsocketJobQueueEvent) error
}

// Intervals are the framework's periods and deadlines (protocol spec §22.5). Zero values
// take the defaults; tests shorten or drive them through Options.Tick.
type Intervals struct {
	Poll         time.Duration // job polling, v1 and v2 (20 s)
	ModelRefresh time.Duration // v1 model list refresh (10 s)
	Heartbeat    time.Duration // heartbeats (30 s)
	SigninRetry  time.Duration // sign-in retry period (10 s)
	SigninGiveUp time.Duration // sign-in give-up (5 min)
	CDNRetry     time.Duration // CDN configuration retry (2 s)
	JobContext   time.Duration // per-job handling context (10 min)
	PoolDeadline time.Duration // worker pool build (10 s)
	CallDeadline time.Duration // book / spawn infos / worker list calls (10 s)
}

func (iv Intervals) withDefaults() Intervals {
	def := func(d *time.Duration, v time.Duration) {
		if *d <= 0 {
			*d = v
		}
	}
	def(&iv.Poll, 20*time.Second)
	def(&iv.ModelRefresh, 10*time.Second)
	def(&iv.Heartbeat, 30*time.Second)
	def(&iv.SigninRetry, 10*time.Second)
	def(&iv.SigninGiveUp, 5*time.Minute)
	def(&iv.CDNRetry, 2*time.Second)
	def(&iv.JobContext, 10*time.Minute)
	def(&iv.PoolDeadline, 10*time.Second)
	def(&iv.CallDeadline, 10*time.Second)
	return iv
}

// TickFunc makes the tick source of a named loop ("poll-v1", "poll-v2", "model-refresh",
// "register", "heartbeat-v1", "heartbeat-v2", "signin-v1", "signin-v2", "cdn", and
// "shutdown", whose first tick ends the shutdown grace) with period d, and the function
// that stops it.
type TickFunc func(name string, d time.Duration) (ticks <-chan time.Time, stop func())

func realTick(_ string, d time.Duration) (<-chan time.Time, func()) {
	t := time.NewTicker(d)
	return t.C, t.Stop
}

// Options configures a Hatchery.
type Options struct {
	// Config is the common hatchery configuration (defaults already applied).
	Config config.CommonConfiguration
	// V1 and V2 are the API sessions; either may be nil (no v1 or no v2 token).
	V1 V1API
	V2 V2API
	// Provider is the VM back-end.
	Provider Provider
	// PrivateKey signs worker JWTs; nil means parse Config.RSAPrivateKey.
	PrivateKey *rsa.PrivateKey
	// Logger is the process logger; nil means a default rockbears/log logger.
	Logger *log.Logger
	// Now is the clock; nil means time.Now.
	Now func() time.Time
	// Hostname goes in the monitoring lines; empty means os.Hostname().
	Hostname string
	// Version is reported in the Version monitoring line; empty means Version.
	Version string
	// Intervals overrides the framework periods.
	Intervals Intervals
	// Tick makes the loops' tick sources; nil means real tickers.
	Tick TickFunc
	// Tracker records the framework goroutines for the goroutine/<name> status lines; nil
	// means a tracker of its own.
	Tracker *GoroutineTracker
	// ExtraStatus, when set, gives monitoring lines appended after the provider's (e.g. the
	// daemon's vCenter session alert). They are stamped like the others.
	ExtraStatus func(ctx context.Context) []cds.MonitoringStatusLine
}

// Log fields of the framework (registered on the logger by New).
const (
	fieldJobID    = log.Field("job_id")
	fieldWorker   = log.Field("worker")
	fieldModel    = log.Field("model")
	fieldHatchery = log.Field("hatchery")
)

// Hatchery is the scheduling framework. Build it with New, run it with Run. It implements
// Services for the provider.
type Hatchery struct {
	cfg      config.CommonConfiguration
	v1       V1API
	v2       V2API
	provider Provider
	key      *rsa.PrivateKey
	log      *log.Logger
	now      func() time.Time
	hostname string
	version  string
	iv       Intervals
	tick     TickFunc
	metrics  metricsRecorder
	routines *GoroutineTracker
	pending  *pendingSet
	// spawning holds the workers admitted and not spawned yet (checkCapacities).
	spawning  *spawningSet
	attempts  *attemptCounter
	models    *modelCache
	provLimit int // P of §11.2: maxConcurrentProvisioning, < 1 → 10

	chanV1    chan int64
	chanV2    chan string
	starterCh chan spawnRequest

	nbWorkerToStart       atomic.Int64
	nbRegisteringModels   atomic.Int64
	registrationsInFlight atomic.Int64

	mu        sync.Mutex
	startedAt time.Time
	cdn       cdnSettings
	v2Region  string

	// stopCh is closed when Run starts draining; nil outside Run (never stopping).
	stopCh <-chan struct{}
	// booked holds the jobs booked or taken and not yet started nor released.
	booked *bookedJobs
	// extraStatus adds status lines (Options.ExtraStatus).
	extraStatus func(context.Context) []cds.MonitoringStatusLine
}

// cdnSettings are the CDN addresses in use (configuration, completed by the API, §3.8).
type cdnSettings struct {
	HTTPURL   string
	TCPURL    string
	TCPUseTLS bool
}

// New checks the options and builds a Hatchery.
func New(opts Options) (*Hatchery, error) {
	if opts.Provider == nil {
		return nil, errors.New("new hatchery: no provider")
	}
	if opts.V1 == nil && opts.V2 == nil {
		return nil, errors.New("new hatchery: neither a v1 nor a v2 API client")
	}
	if opts.Config.Name == "" {
		return nil, errors.New("new hatchery: empty hatchery name")
	}
	key := opts.PrivateKey
	if key == nil {
		k, err := parseRSAPrivateKey(opts.Config.RSAPrivateKey)
		if err != nil {
			return nil, fmt.Errorf("new hatchery: rsaPrivateKey: %w", err)
		}
		key = k
	}
	h := &Hatchery{
		cfg:      opts.Config,
		v1:       opts.V1,
		v2:       opts.V2,
		provider: opts.Provider,
		key:      key,
		log:      opts.Logger,
		now:      opts.Now,
		hostname: opts.Hostname,
		version:  opts.Version,
		iv:       opts.Intervals.withDefaults(),
		tick:     opts.Tick,
		metrics:  newMetricsRecorder(opts.Config.Name),
	}
	if h.log == nil {
		h.log = log.New()
	}
	h.log.RegisterField(fieldJobID, fieldWorker, fieldModel, fieldHatchery)
	if h.now == nil {
		h.now = time.Now
	}
	if h.hostname == "" {
		h.hostname, _ = os.Hostname() // only informative
	}
	if h.version == "" {
		h.version = Version
	}
	if h.tick == nil {
		h.tick = realTick
	}
	h.routines = opts.Tracker
	if h.routines == nil {
		h.routines = NewGoroutineTracker()
	}
	h.pending = newPendingSet(h.now)
	h.spawning = newSpawningSet()
	h.booked = newBookedJobs()
	h.extraStatus = opts.ExtraStatus
	h.attempts = newAttemptCounter(h.now)
	h.models = &modelCache{}
	h.provLimit = opts.Config.Provision.MaxConcurrentProvisioning
	if h.provLimit < 1 {
		h.provLimit = 10
	}
	// §7: the discovery channels take the raw configured capacity.
	chanCap := max(opts.Config.Provision.MaxConcurrentProvisioning, 0)
	h.chanV1 = make(chan int64, chanCap)
	h.chanV2 = make(chan string, chanCap)
	h.starterCh = make(chan spawnRequest, 1)
	h.cdn = cdnSettings{
		HTTPURL:   opts.Config.CDN.URL,
		TCPURL:    opts.Config.CDN.TCP.URL,
		TCPUseTLS: opts.Config.CDN.TCP.EnableTLS,
	}
	h.v2Region = opts.Config.Provision.Region
	return h, nil
}

func parseRSAPrivateKey(text string) (*rsa.PrivateKey, error) {
	block, _ := pem.Decode([]byte(text))
	if block == nil {
		return nil, errors.New("no PEM block")
	}
	if k, err := x509.ParsePKCS1PrivateKey(block.Bytes); err == nil {
		return k, nil
	}
	k, err := x509.ParsePKCS8PrivateKey(block.Bytes)
	if err != nil {
		return nil, fmt.Errorf("parse PKCS#1 or PKCS#8 key: %w", err)
	}
	rk, ok := k.(*rsa.PrivateKey)
	if !ok {
		return nil, errors.New("not an RSA key")
	}
	return rk, nil
}

// Run signs in, bootstraps the CDN configuration and the v1 model list (§1 steps 5-6), then
// runs the provider, discovery, worker starters, the main loop and the heartbeats until ctx
// is done or one of them fails (a fatal v1 heartbeat, a provider error).
//
// Stopping is a drain, not a cut (design §3 "Stop"): once ctx is done (or a part failed),
// discovery, the main loop, the heartbeats and the provider's loops stop at once, so nothing
// new is booked or taken; the worker starters already spawning go on with a context that
// outlives ctx by Provision.ShutdownGrace() (shutdownTimeout), after which it is cancelled
// so the provider rolls back and the framework releases the job. Jobs still booked or taken
// but not started are then released, and the v1 session is signed out. Run returns nil
// after a stop asked through ctx.
func (h *Hatchery) Run(ctx context.Context) error {
	h.mu.Lock()
	h.startedAt = h.now()
	h.mu.Unlock()
	ctx = context.WithValue(ctx, fieldHatchery, h.cfg.Name)

	// Signing out is harmless when the v1 sign-in did not happen (no valid session).
	defer h.signOut(ctx)
	if err := h.start(ctx); err != nil {
		return err
	}

	g, gctx := errgroup.WithContext(ctx)
	// The starters stop taking requests when gctx ends, but their spawns run on spawnCtx,
	// which only the drain cancels.
	spawnCtx, cancelSpawns := context.WithCancel(context.WithoutCancel(ctx))
	defer cancelSpawns()
	h.stopCh = gctx.Done()
	var starters errgroup.Group

	if n, ok := h.provider.(GoroutineNamer); ok {
		// Declared running now, in their order, like the framework's own goroutines: they
		// start with the provider's Run right below, which reports them stopped if they end.
		for _, name := range n.GoroutineNames() {
			h.routines.Set(name, true)
		}
	}
	g.Go(func() error {
		if err := h.provider.Run(gctx, h); err != nil && gctx.Err() == nil {
			return fmt.Errorf("provider: %w", err)
		}
		return nil
	})
	if h.v2 != nil && !h.cfg.Provision.DisableV2QueuePolling {
		h.goTracked(g, gctx, "V2QueuePolling", h.discoverV2)
	}
	if h.v1 != nil {
		h.goTracked(g, gctx, "queuePolling", h.discoverV1)
	}
	for i := 0; i < h.provLimit; i++ {
		h.goTracked(&starters, spawnCtx, fmt.Sprintf("workerStarter-%d", i), func(sctx context.Context) error {
			return h.starterLoop(gctx.Done(), sctx)
		})
	}
	h.goTracked(g, gctx, "mainRoutine", h.mainLoop)
	if h.v1 != nil {
		g.Go(func() error {
			ticks, stop := h.tick("heartbeat-v1", h.iv.Heartbeat)
			defer stop()
			return h.heartbeatLoop(gctx, "v1", h.v1.Heartbeat, ticks)
		})
	}
	if h.v2 != nil {
		g.Go(func() error {
			ticks, stop := h.tick("heartbeat-v2", h.iv.Heartbeat)
			defer stop()
			// A fatal v2 heartbeat stops only this loop (quirk Q22, kept).
			if err := h.heartbeatLoop(gctx, "v2", h.v2.Heartbeat, ticks); err != nil {
				h.log.Error(gctx, "v2 heartbeat stopped: %v", err)
			}
			return nil
		})
	}
	err := g.Wait()
	h.drain(ctx, &starters, cancelSpawns)
	return err
}

// SetGoroutine implements Services.
func (h *Hatchery) SetGoroutine(name string, running bool) { h.routines.Set(name, running) }

// goTracked runs fn in g and reports it Running / NOT running in the status lines.
func (h *Hatchery) goTracked(g *errgroup.Group, ctx context.Context, name string, fn func(context.Context) error) {
	h.routines.Set(name, true)
	g.Go(func() (err error) {
		defer func() {
			h.routines.Set(name, false)
			if r := recover(); r != nil {
				err = fmt.Errorf("goroutine %s panicked: %v", name, r)
			}
		}()
		return fn(ctx)
	})
}

// start runs the start-up steps that must succeed before any loop starts.
func (h *Hatchery) start(ctx context.Context) error {
	if h.v1 != nil {
		if err := h.signinWithRetry(ctx, "v1", h.v1.Signin); err != nil {
			return err
		}
	}
	if h.v2 != nil {
		if err := h.signinWithRetry(ctx, "v2", h.v2.Signin); err != nil {
			return err
		}
		// From now on the v2 region is the one the API granted (§5).
		h.mu.Lock()
		h.v2Region = h.v2.Region()
		h.mu.Unlock()
	}
	if err := h.bootstrapCDN(ctx); err != nil {
		return err
	}
	if h.v1 != nil {
		models, err := h.v1.WorkerModelsEnabled(ctx)
		if err != nil {
			return fmt.Errorf("list enabled worker models: %w", err)
		}
		h.models.set(models)
	}
	return nil
}

// signinWithRetry applies the policy of §3.5: one attempt now, then one every SigninRetry,
// giving up after SigninGiveUp. An invalid API signing key is not worth retrying.
func (h *Hatchery) signinWithRetry(ctx context.Context, which string, signin func(context.Context) error) error {
	begin := h.now()
	var ticks <-chan time.Time
	for {
		err := signin(ctx)
		if err == nil {
			return nil
		}
		if errors.Is(err, cds.ErrSigningKey) {
			return fmt.Errorf("%s sign-in: %w", which, err)
		}
		if h.now().Sub(begin) >= h.iv.SigninGiveUp {
			return fmt.Errorf("%s sign-in: giving up after %s: %w", which, h.iv.SigninGiveUp, err)
		}
		h.log.Warn(ctx, "%s sign-in failed, retrying in %s: %v", which, h.iv.SigninRetry, err)
		if ticks == nil {
			var stop func()
			ticks, stop = h.tick("signin-"+which, h.iv.SigninRetry)
			defer stop()
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%s sign-in: %w", which, ctx.Err())
		case <-ticks:
		}
	}
}

// bootstrapCDN fills the empty CDN addresses from the API (§3.8), retrying until success.
func (h *Hatchery) bootstrapCDN(ctx context.Context) error {
	if h.cfg.CDN.URL != "" && h.cfg.CDN.TCP.URL != "" {
		return nil
	}
	get := func(ctx context.Context) (cds.CDNConfig, error) {
		if h.v2 != nil {
			return h.v2.CDNConfig(ctx)
		}
		return h.v1.CDNConfig(ctx)
	}
	var ticks <-chan time.Time
	for {
		c, err := get(ctx)
		if err == nil {
			h.mu.Lock()
			if h.cfg.CDN.URL == "" {
				h.cdn.HTTPURL = c.HTTPURL
			}
			if h.cfg.CDN.TCP.URL == "" {
				h.cdn.TCPURL, h.cdn.TCPUseTLS = c.TCPURL, c.TCPURLEnableTLS
			}
			h.mu.Unlock()
			return nil
		}
		h.log.Warn(ctx, "get CDN configuration, retrying: %v", err)
		if ticks == nil {
			var stop func()
			ticks, stop = h.tick("cdn", h.iv.CDNRetry)
			defer stop()
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("get CDN configuration: %w", ctx.Err())
		case <-ticks:
		}
	}
}

// signOut ends the v1 session at shutdown (§1); there is no v2 sign-out.
func (h *Hatchery) signOut(ctx context.Context) {
	if h.v1 == nil {
		return
	}
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), h.iv.CallDeadline)
	defer cancel()
	if err := h.v1.SignOut(sctx); err != nil {
		h.log.Warn(ctx, "v1 sign-out: %v", err)
	}
}

func (h *Hatchery) region2() string {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.v2Region
}

func (h *Hatchery) cdnInUse() cdnSettings {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.cdn
}

// Services implementation.

// HatcheryName is the configured hatchery name.
func (h *Hatchery) HatcheryName() string { return h.cfg.Name }

// HasV1 tells whether a v1 session exists.
func (h *Hatchery) HasV1() bool { return h.v1 != nil }

// RegisteredWorkerNames lists the workers the API knows (v1 and v2).
func (h *Hatchery) RegisteredWorkerNames(ctx context.Context) (map[string]struct{}, error) {
	ws, err := h.registeredWorkers(ctx)
	if err != nil {
		return nil, err
	}
	names := make(map[string]struct{}, len(ws))
	for _, w := range ws {
		names[w.Name] = struct{}{}
	}
	return names, nil
}

// WorkerModel fetches one v1 model.
func (h *Hatchery) WorkerModel(ctx context.Context, group, name string) (cds.Model, error) {
	if h.v1 == nil {
		return cds.Model{}, errors.New("get worker model: no v1 client")
	}
	m, err := h.v1.WorkerModelGet(ctx, group, name)
	if err != nil {
		return cds.Model{}, fmt.Errorf("get worker model %s/%s: %w", group, name, err)
	}
	return m, nil
}

// CachedWorkerModels is the last list of enabled v1 models.
func (h *Hatchery) CachedWorkerModels() []cds.Model { return h.models.get() }

// RefreshWorkerModels re-reads the enabled v1 models and updates the cache.
func (h *Hatchery) RefreshWorkerModels(ctx context.Context) ([]cds.Model, error) {
	if h.v1 == nil {
		return nil, errors.New("list worker models: no v1 client")
	}
	models, err := h.v1.WorkerModelsEnabled(ctx)
	if err != nil {
		return nil, fmt.Errorf("list enabled worker models: %w", err)
	}
	h.models.set(models)
	return models, nil
}

// ReportModelSpawnError sends PUT /worker/model/{group}/{name}/error.
func (h *Hatchery) ReportModelSpawnError(ctx context.Context, group, name, message string) error {
	if h.v1 == nil {
		return errors.New("report model spawn error: no v1 client")
	}
	if err := h.v1.WorkerModelSpawnError(ctx, group, name, cds.SpawnErrorForm{Error: message}); err != nil {
		return fmt.Errorf("report spawn error of model %s/%s: %w", group, name, err)
	}
	return nil
}

// SendJobInfo posts an info message on a v2 job; errors are only logged.
func (h *Hatchery) SendJobInfo(ctx context.Context, region, jobID, level, message string) {
	if h.v2 == nil {
		return
	}
	info := cds.V2SendJobRunInfo{Level: level, Message: message, Time: h.now()}
	if err := h.v2.V2QueueJobSendInfo(ctx, region, jobID, info); err != nil {
		h.log.Warn(context.WithValue(ctx, fieldJobID, jobID), "send info to v2 job: %v", err)
	}
}

var _ Services = (*Hatchery)(nil)
