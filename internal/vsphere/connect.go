package vsphere

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"time"

	"github.com/vmware/govmomi/event"
	"github.com/vmware/govmomi/find"
	"github.com/vmware/govmomi/object"
	"github.com/vmware/govmomi/property"
	"github.com/vmware/govmomi/session"
	"github.com/vmware/govmomi/vim25"
	"github.com/vmware/govmomi/vim25/soap"
)

// Defaults of Options, from the original hatchery's timers (protocol spec §18.10).
const (
	DefaultCallTimeout   = 15 * time.Second
	DefaultTaskTimeout   = 10 * time.Minute
	DefaultLoginTimeout  = 10 * time.Second
	DefaultEventPageSize = 50

	// renameTimeout bounds the rename task wait, as the original does (protocol spec §18.10).
	renameTimeout = time.Minute
	// maxEventPageSize is the largest page vCenter accepts for QueryEvents.
	maxEventPageSize = 1000
)

// ErrNotFound is wrapped by every error about an inventory object that does not exist, so that
// callers can tell "absent" from "vCenter unreachable" with errors.Is or IsNotFound.
var ErrNotFound = errors.New("not found")

// IsNotFound reports whether err says that a vSphere object does not exist.
func IsNotFound(err error) bool {
	return errors.Is(err, ErrNotFound)
}

// Options say which vCenter to talk to, as whom, and which inventory objects to work with.
type Options struct {
	// Endpoint is the vCenter host name, host:port or URL; the scheme defaults to https and
	// the path to /sdk.
	Endpoint string
	User     string
	Password string

	// Datacenter, Datastore and Network are inventory names; empty selects the default one
	// (which fails when the inventory holds several).
	Datacenter string
	Datastore  string
	Network    string
	// ResourcePool is an addition to the original: a pool path inside the datacenter; empty
	// selects the datacenter's default resource pool like the original does.
	ResourcePool string

	// Insecure skips the TLS certificate verification of vCenter.
	Insecure bool
	// CAFile is a PEM file of certificate authorities trusted for vCenter, in addition to
	// the system pool.
	CAFile string

	// CallTimeout bounds every single vSphere request (default 15 s).
	CallTimeout time.Duration
	// TaskTimeout bounds every wait on a vSphere task or state change (default 10 min).
	TaskTimeout time.Duration
	// LoginTimeout bounds the connection and login (default 10 s).
	LoginTimeout time.Duration
	// KeepAlive is how long the session may stay idle before the client sends a request of
	// its own (default DefaultKeepAlive; negative turns it off).
	KeepAlive time.Duration
	// EventPageSize is the number of events LoadVirtualMachineEvents asks for (default 50,
	// at most 1000). It is explicit because vCenter returns only 10 events otherwise.
	EventPageSize int
}

func (o Options) withDefaults() Options {
	if o.CallTimeout <= 0 {
		o.CallTimeout = DefaultCallTimeout
	}
	if o.TaskTimeout <= 0 {
		o.TaskTimeout = DefaultTaskTimeout
	}
	if o.LoginTimeout <= 0 {
		o.LoginTimeout = DefaultLoginTimeout
	}
	if o.KeepAlive == 0 {
		o.KeepAlive = DefaultKeepAlive
	}
	if o.EventPageSize <= 0 {
		o.EventPageSize = DefaultEventPageSize
	}
	if o.EventPageSize > maxEventPageSize {
		o.EventPageSize = maxEventPageSize
	}
	return o
}

// Client is the govmomi implementation of VSphereClient, bound to one datacenter whose
// folder, resource pool, datastore and network are resolved once at Connect.
type Client struct {
	opts   Options
	vc     *vim25.Client
	relog  *reloginTripper
	keep   *keepAlive // nil when off
	finder *find.Finder
	pc     *property.Collector
	events *event.Manager
	tasks  *taskWaiter

	datacenter *object.Datacenter
	folder     *object.Folder
	pool       *object.ResourcePool
	datastore  *object.Datastore
	network    object.NetworkReference
}

var _ VSphereClient = (*Client)(nil)

// Connect logs in to vCenter and resolves the inventory objects named in opts. A missing
// object is an error naming it; the session is closed again in that case.
func Connect(ctx context.Context, opts Options) (*Client, error) {
	opts = opts.withDefaults()
	if opts.Endpoint == "" {
		return nil, errors.New("vsphere endpoint is empty")
	}
	u, err := soap.ParseURL(opts.Endpoint)
	if err != nil {
		return nil, fmt.Errorf("parse vsphere endpoint %q: %w", opts.Endpoint, err)
	}
	// The credentials travel apart from the URL: escaping them through url.UserPassword
	// keeps passwords holding '@', ':', '/' or '%' intact (the original broke on them), and
	// keeping them out of the soap client's URL keeps them out of its error messages.
	u.User = nil
	creds := url.UserPassword(opts.User, opts.Password)

	sc := soap.NewClient(u, opts.Insecure)
	if opts.CAFile != "" {
		if err := sc.SetRootCAs(opts.CAFile); err != nil {
			return nil, fmt.Errorf("load vsphere CA file %q: %w", opts.CAFile, err)
		}
	}

	lctx, cancel := context.WithTimeout(ctx, opts.LoginTimeout)
	defer cancel()
	vc, err := vim25.NewClient(lctx, sc)
	if err != nil {
		return nil, fmt.Errorf("connect to vsphere %q: %w", u.Host, err)
	}
	if err := session.NewManager(vc).Login(lctx, creds); err != nil {
		return nil, fmt.Errorf("login to vsphere %q as %q: %w", u.Host, opts.User, err)
	}

	// Requests go through the re-login tripper from now on; login and logout keep using
	// the plain soap client so that they never recurse into it.
	relog := newReloginTripper(sc, func(ctx context.Context) error {
		plain := &vim25.Client{Client: sc, ServiceContent: vc.ServiceContent, RoundTripper: sc}
		return session.NewManager(plain).Login(ctx, creds)
	})
	act := &activity{next: relog, now: time.Now}
	act.last.Store(time.Now().UnixNano())
	vc.RoundTripper = act

	c := &Client{
		opts:   opts,
		vc:     vc,
		relog:  relog,
		finder: find.NewFinder(vc, false),
		pc:     property.DefaultCollector(vc),
		events: event.NewManager(vc),
		tasks: newTaskWaiter(vc, opts.CallTimeout, func() uint64 {
			gen, _ := relog.state()
			return gen
		}),
	}
	if opts.KeepAlive > 0 {
		t := time.NewTicker(opts.KeepAlive)
		c.keep = startKeepAlive(opts.KeepAlive, t.C, t.Stop,
			func() time.Duration { return time.Since(act.lastRequest()) },
			currentTime(vc, opts.CallTimeout))
	}
	if err := c.resolveInventory(ctx); err != nil {
		// The inventory error is what the caller must see; a failed logout changes nothing
		// for it since the process is about to give up on this vCenter.
		_ = c.Logout(ctx)
		return nil, err
	}
	return c, nil
}

// resolveInventory finds, once, the objects every later call works with.
func (c *Client) resolveInventory(ctx context.Context) error {
	ctx, cancel := c.callContext(ctx)
	defer cancel()

	dc, err := c.finder.DatacenterOrDefault(ctx, c.opts.Datacenter)
	if err != nil {
		return inventoryError("datacenter", c.opts.Datacenter, err)
	}
	c.datacenter = dc
	c.finder.SetDatacenter(dc)

	folders, err := dc.Folders(ctx)
	if err != nil {
		return fmt.Errorf("load folders of datacenter %q: %w", dc.Name(), err)
	}
	c.folder = folders.VmFolder

	if c.opts.ResourcePool == "" {
		c.pool, err = c.finder.DefaultResourcePool(ctx)
	} else {
		c.pool, err = c.finder.ResourcePool(ctx, c.opts.ResourcePool)
	}
	if err != nil {
		return inventoryError("resource pool", c.opts.ResourcePool, err)
	}

	c.datastore, err = c.finder.DatastoreOrDefault(ctx, c.opts.Datastore)
	if err != nil {
		return inventoryError("datastore", c.opts.Datastore, err)
	}

	c.network, err = c.finder.NetworkOrDefault(ctx, c.opts.Network)
	if err != nil {
		return inventoryError("network", c.opts.Network, err)
	}
	return nil
}

// inventoryError names the missing object the way an operator wrote it in the configuration.
func inventoryError(kind, name string, err error) error {
	var notFound *find.NotFoundError
	var defaultNotFound *find.DefaultNotFoundError
	switch {
	case name != "" && errors.As(err, &notFound):
		return fmt.Errorf("%s %q %w", kind, name, ErrNotFound)
	case name == "" && errors.As(err, &defaultNotFound):
		return fmt.Errorf("default %s %w", kind, ErrNotFound)
	case name == "":
		return fmt.Errorf("default %s: %w", kind, err)
	default:
		return fmt.Errorf("%s %q: %w", kind, name, err)
	}
}

// Logout ends the vCenter session; the client must not be used afterwards.
func (c *Client) Logout(ctx context.Context) error {
	// The keep-alive and the task waiter first: their loops must not outlive the session,
	// nor revive it.
	if c.keep != nil {
		c.keep.stop()
	}
	c.tasks.close()
	c.relog.stop()
	ctx, cancel := c.callContext(ctx)
	defer cancel()
	plain := &vim25.Client{Client: c.vc.Client, ServiceContent: c.vc.ServiceContent, RoundTripper: c.vc.Client}
	if err := session.NewManager(plain).Logout(ctx); err != nil {
		return fmt.Errorf("logout from vsphere: %w", err)
	}
	return nil
}

// Close is Logout bounded by the call timeout, for deferred cleanup.
func (c *Client) Close() error {
	return c.Logout(context.Background())
}

// callContext bounds one vSphere request.
func (c *Client) callContext(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(ctx, c.opts.CallTimeout)
}

// taskContext bounds one wait on a task or a state change.
func (c *Client) taskContext(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(ctx, c.opts.TaskTimeout)
}
