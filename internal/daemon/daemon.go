// Package daemon builds the object graph of hatchery-vsphere from a validated configuration
// (CDS API clients, vCenter connection, vSphere provider, scheduling framework, metrics and
// the /mon HTTP server) and runs it until its context ends. It also holds the in-process
// harness (simulated vCenter + simulated CDS API) used by the end-to-end tests, the
// benchmarks and the demo command.
package daemon

import (
	"context"
	"crypto/rsa"
	"errors"
	"fmt"
	"net"
	"net/http"
	"time"

	ocprom "contrib.go.opencensus.io/exporter/prometheus"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/rockbears/log"
	"go.opencensus.io/stats/view"
	"golang.org/x/sync/errgroup"

	"github.com/hatchery-vsphere/hatchery-vsphere/internal/cds"
	"github.com/hatchery-vsphere/hatchery-vsphere/internal/config"
	"github.com/hatchery-vsphere/hatchery-vsphere/internal/hatchery"
	"github.com/hatchery-vsphere/hatchery-vsphere/internal/lifecycle"
	"github.com/hatchery-vsphere/hatchery-vsphere/internal/vsphere"
)

// shutdownTimeout bounds what is done after the context ended: HTTP server shutdown and
// the vCenter logout.
const shutdownTimeout = 10 * time.Second

// ProviderInput is what a ProviderFactory is given to build the VM back-end.
type ProviderInput struct {
	// Config is the [hatchery.vsphere] table (validated).
	Config config.VSphere
	// Client is the connected vCenter client, bound to the configured datacenter.
	Client vsphere.VSphereClient
	Logger *log.Logger
	Now    func() time.Time
	// Tick is the tick source shared with the framework (nil: real tickers).
	Tick hatchery.TickFunc
}

// ProviderFactory builds the provider the framework drives.
type ProviderFactory func(ctx context.Context, in ProviderInput) (hatchery.Provider, error)

// Option changes how Run builds the daemon (tests, benchmarks, demo).
type Option func(*options)

type options struct {
	now       func() time.Time
	tick      hatchery.TickFunc
	intervals hatchery.Intervals
	listener  net.Listener
	provider  ProviderFactory
	hostname  string
	inventory vsphere.InventoryOptions
	// connectWait is the pause between two attempts to reach vCenter.
	connectWait func(context.Context, time.Duration) bool
}

// WithClock injects the clock of the framework, the provider and the API clients.
func WithClock(now func() time.Time) Option { return func(o *options) { o.now = now } }

// WithTick injects the tick sources of the framework's and the provider's loops.
func WithTick(tick hatchery.TickFunc) Option { return func(o *options) { o.tick = tick } }

// WithIntervals overrides the framework periods (polling, heartbeat, sign-in retry...).
func WithIntervals(iv hatchery.Intervals) Option { return func(o *options) { o.intervals = iv } }

// WithListener makes the HTTP server serve on ln instead of listening on http.addr:http.port.
// Run closes it.
func WithListener(ln net.Listener) Option { return func(o *options) { o.listener = ln } }

// WithProvider replaces the vSphere provider (tests with a fake back-end).
func WithProvider(f ProviderFactory) Option { return func(o *options) { o.provider = f } }

// WithInventory tunes the live VM inventory (e.g. a short poll period where the simulated
// guests power their VMs off behind the hatchery's back).
func WithInventory(io vsphere.InventoryOptions) Option { return func(o *options) { o.inventory = io } }

// WithHostname sets the host name of the monitoring lines (default os.Hostname()).
func WithHostname(name string) Option { return func(o *options) { o.hostname = name } }

// Run builds the whole daemon from cfg and runs it until ctx is done or a part fails for
// good (sign-in given up, fatal v1 heartbeat, HTTP listen error). It returns nil after a
// stop asked through ctx. cfg must have been validated.
func Run(ctx context.Context, cfg *config.File, logger *log.Logger, opts ...Option) error {
	o := options{provider: NewVSphereProvider(VSphereProviderOptions{})}
	for _, opt := range opts {
		opt(&o)
	}
	if o.now == nil {
		o.now = time.Now
	}
	if o.connectWait == nil {
		o.connectWait = sleepCtx
	}
	if logger == nil {
		logger = log.New()
	}
	vs := cfg.Hatchery.VSphere
	common := vs.CommonConfiguration

	key, err := config.ParseRSAPrivateKey(common.RSAPrivateKey)
	if err != nil {
		return fmt.Errorf("rsaPrivateKey: %w", err)
	}
	// The lifecycle and call metrics read the hatchery's name from the context.
	if ctx, err = lifecycle.WithService(ctx, common.Name); err != nil {
		return err
	}
	v1, v2, err := newAPIClients(cfg, key, o.now, logger)
	if err != nil {
		return err
	}

	vc, err := connectVCenter(ctx, VSphereOptions(vs), logger, o.connectWait)
	if err != nil {
		if ctx.Err() != nil {
			return nil // stopped while waiting for vCenter
		}
		return err
	}
	defer func() {
		lctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), shutdownTimeout)
		defer cancel()
		if err := vc.Logout(lctx); err != nil {
			logger.Warn(ctx, "vCenter logout: %v", err)
		}
	}()

	// Every vCenter call of the provider is counted and timed by method.
	// Decisions read a live inventory instead of listing vCenter each time (the original
	// listed the whole inventory several times per job). The hatchery's own actions update
	// it at once; others' changes arrive with the next poll. Every call that does reach
	// vCenter is counted and timed by method.
	invOpts := o.inventory
	if invOpts.Now == nil {
		invOpts.Now = o.now
	}
	inventory := vsphere.NewInventory(vc, invOpts)
	client := vsphere.NewCachedClient(vsphere.Instrument(vc), inventory)
	provider, err := o.provider(ctx, ProviderInput{Config: vs, Client: client, Logger: logger, Now: o.now, Tick: o.tick})
	if err != nil {
		return fmt.Errorf("build the vSphere provider: %w", err)
	}

	hopts := hatchery.Options{
		Config:     common,
		Provider:   provider,
		PrivateKey: key,
		Logger:     logger,
		Now:        o.now,
		Hostname:   o.hostname,
		Intervals:  o.intervals,
		Tick:       o.tick,
		// The vCenter session alert is the daemon's: it owns the vCenter client.
		ExtraStatus: sessionStatus(vc),
	}
	// Assigning a nil *cds.Client to the interface would make it non-nil.
	if v1 != nil {
		hopts.V1 = v1
	}
	if v2 != nil {
		hopts.V2 = v2
	}
	h, err := hatchery.New(hopts)
	if err != nil {
		return err
	}

	metrics, views, err := newMetrics(logger)
	if err != nil {
		return err
	}

	ln := o.listener
	if ln == nil {
		addr := hatchery.HTTPListenAddr(common.HTTP)
		if ln, err = net.Listen("tcp", addr); err != nil {
			return fmt.Errorf("listen on %q: %w", addr, err)
		}
	}
	srv := hatchery.NewHTTPServer(hatchery.HTTPOptions{
		Addr:        ln.Addr().String(),
		ServiceName: common.Name,
		Version:     hatchery.Version,
		Status:      h.Status,
		Workers: func(ctx context.Context) (any, error) {
			return h.WorkerPool(ctx)
		},
		Metrics:     metrics,
		Views:       views,
		EnablePprof: common.HTTP.EnablePprof,
		Now:         o.now,
		Extra:       statusPage(common.Name, h, provider, o.now),
	})

	logger.Info(ctx, "hatchery %q serving /mon on %s", common.Name, ln.Addr())

	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { return inventory.Run(gctx) })
	g.Go(func() error { return h.Run(gctx) })
	g.Go(func() error { return serveHTTP(gctx, srv, ln) })
	err = g.Wait()
	if err != nil && ctx.Err() != nil && errors.Is(err, context.Canceled) {
		// Stopped during start-up (e.g. while signing in): a normal stop.
		return nil
	}
	return err
}

// newAPIClients builds the v1 client when api.token is set and the v2 client when
// api.tokenV2 is set, with the sign-in requests of protocol spec §3.3 and §3.4. Either may
// be nil; validation guarantees one of them exists.
func newAPIClients(cfg *config.File, key *rsa.PrivateKey, now func() time.Time, logger *log.Logger) (*cds.Client, *cds.Client, error) {
	common := cfg.Hatchery.VSphere.CommonConfiguration
	v1req, v2req, err := SigninRequests(cfg, key)
	if err != nil {
		return nil, nil, err
	}
	apiCfg := cds.Config{
		URL:            common.API.HTTP.URL,
		Insecure:       common.API.HTTP.Insecure,
		CAFile:         common.API.HTTP.CAFile,
		RequestTimeout: common.API.RequestTimeoutDuration(),
		Now:            now,
		Logger:         logger,
		Metrics:        true,
	}
	var v1, v2 *cds.Client
	if common.API.Token != "" {
		if v1, err = cds.NewV1(apiCfg, v1req); err != nil {
			return nil, nil, fmt.Errorf("v1 API client: %w", err)
		}
	}
	if common.API.TokenV2 != "" {
		if v2, err = cds.NewV2(apiCfg, v2req); err != nil {
			return nil, nil, fmt.Errorf("v2 API client: %w", err)
		}
	}
	return v1, v2, nil
}

// SigninRequests are the bodies of the v1 builtin sign-in (§3.3, with the service
// registration) and of the v2 hatchery sign-in (§3.4). The public key travels as the PEM
// text in a bytes field, i.e. as standard base64 of the PEM (§3.2).
func SigninRequests(cfg *config.File, key *rsa.PrivateKey) (cds.V1SigninRequest, cds.V2SigninRequest, error) {
	common := cfg.Hatchery.VSphere.CommonConfiguration
	regConfig, err := cfg.RegistrationConfig()
	if err != nil {
		return cds.V1SigninRequest{}, cds.V2SigninRequest{}, err
	}
	pub := cds.PublicKeyPEM(&key.PublicKey)
	service := cds.Service{
		Name:      common.Name,
		Type:      cds.ServiceTypeHatchery,
		HTTPURL:   common.URL,
		Config:    regConfig,
		PublicKey: pub,
		// The original leaves the version empty at v1 registration.
	}
	// null, not "" or false, when unset: the API compares them with the consumer's.
	if r := common.Provision.Region; r != "" {
		service.Region = &r
	}
	if common.Provision.IgnoreJobWithNoRegion {
		t := true
		service.IgnoreJobWithNoRegion = &t
	}
	v1 := cds.V1SigninRequest{Token: common.API.Token, Service: service}
	v2 := cds.V2SigninRequest{
		Token:     common.API.TokenV2,
		Name:      common.Name,
		Type:      cds.ModelTypeVSphere,
		HTTPURL:   common.URL,
		Config:    regConfig,
		PublicKey: pub,
		Version:   hatchery.Version,
	}
	return v1, v2, nil
}

// VSphereOptions are the vCenter connection settings of [hatchery.vsphere].
func VSphereOptions(vs config.VSphere) vsphere.Options {
	return vsphere.Options{
		Endpoint:    vs.Endpoint,
		User:        vs.User,
		Password:    vs.Password,
		Datacenter:  vs.DatacenterString,
		Datastore:   vs.DatastoreString,
		Network:     vs.NetworkString,
		Insecure:    vs.Insecure,
		CAFile:      vs.CAFile,
		CallTimeout: vs.CallTimeoutDuration(),
		TaskTimeout: vs.TaskTimeoutDuration(),
	}
}

// newMetrics registers the framework and HTTP views with OpenCensus and returns the
// Prometheus exposition handler of /mon/metrics and the view list of /mon/metrics/all.
// Each call has its own Prometheus registry; the views are process-wide and registered
// once, so several daemons may run in one process (tests, benchmarks).
func newMetrics(logger *log.Logger) (http.Handler, func() []*view.View, error) {
	if err := hatchery.RegisterMetrics(); err != nil {
		return nil, nil, err
	}
	if err := registerHTTPViews(); err != nil {
		return nil, nil, err
	}
	for _, register := range []func() error{lifecycle.RegisterViews, vsphere.RegisterViews, cds.RegisterViews} {
		if err := register(); err != nil {
			return nil, nil, err
		}
	}
	exporter, err := ocprom.NewExporter(ocprom.Options{
		Registry: prometheus.NewRegistry(),
		OnError: func(err error) {
			logger.Warn(context.Background(), "prometheus exporter: %v", err)
		},
	})
	if err != nil {
		return nil, nil, fmt.Errorf("prometheus exporter: %w", err)
	}
	views := func() []*view.View {
		var out []*view.View
		for _, name := range registeredViewNames() {
			if v := view.Find(name); v != nil {
				out = append(out, v)
			}
		}
		return out
	}
	return exporter, views, nil
}

// httpViews are the HTTP server views, built once: OpenCensus refuses a second
// registration of views whose aggregations are built anew.
var httpViews = lifecycle.NewViewSet("HTTP server views", hatchery.HTTPServerViews()...)

func registerHTTPViews() error { return httpViews.Register() }

// serveHTTP serves on ln until ctx is done, then shuts the server down gracefully.
func serveHTTP(ctx context.Context, srv *http.Server, ln net.Listener) error {
	serveErr := make(chan error, 1)
	go func() { serveErr <- srv.Serve(ln) }()
	select {
	case err := <-serveErr:
		return fmt.Errorf("serve HTTP on %s: %w", ln.Addr(), err)
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), shutdownTimeout)
	defer cancel()
	err := srv.Shutdown(sctx)
	<-serveErr // http.ErrServerClosed once Shutdown has begun
	if err != nil {
		return fmt.Errorf("shut down the HTTP server on %s: %w", ln.Addr(), err)
	}
	return nil
}

// statusPage serves the live status page (/, /mon/ui) and its data (/mon/vms): identity
// and health from the framework, capacity, pools and VMs from the provider when it can
// describe them.
func statusPage(name string, h *hatchery.Hatchery, provider hatchery.Provider, now func() time.Time) map[string]http.Handler {
	src, _ := provider.(hatchery.DashboardSource)
	return hatchery.NewUIHandlers(hatchery.NewDashboardSource(hatchery.DashboardOptions{
		Hatchery: name,
		Version:  hatchery.Version,
		Status:   h.Status,
		Provider: src,
		Now:      now,
	}))
}
