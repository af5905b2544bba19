package vsphere

import (
	"context"
	"sync"
	"sync/atomic"
	"time"

	"github.com/vmware/govmomi/vim25/methods"
	"github.com/vmware/govmomi/vim25/soap"
)

// DefaultKeepAlive is how long the session may stay without a request before the client
// sends one of its own: well inside vCenter's default idle timeout of 30 minutes.
const DefaultKeepAlive = 5 * time.Minute

// activity records when the last request went to vCenter (a soap.RoundTripper wrapper).
type activity struct {
	next soap.RoundTripper
	now  func() time.Time
	last atomic.Int64 // unix nanoseconds
}

func (a *activity) RoundTrip(ctx context.Context, req, res soap.HasFault) error {
	a.last.Store(a.now().UnixNano())
	return a.next.RoundTrip(ctx, req, res)
}

func (a *activity) lastRequest() time.Time { return time.Unix(0, a.last.Load()) }

// keepAlive sends a cheap request (CurrentTime) when the session has been idle for a whole
// period, so that vCenter does not end an idle session: a hatchery with nothing to do and
// its inventory fed by a long poll could otherwise lose it. The request goes through the
// re-login tripper, so a session lost meanwhile is re-established before work needs it.
type keepAlive struct {
	period time.Duration
	idle   func() time.Duration // time since the last request
	send   func(ctx context.Context) error
	ticks  <-chan time.Time
	stopT  func()

	stopOnce sync.Once
	cancel   context.CancelFunc
	done     chan struct{}
}

// startKeepAlive runs the keep-alive loop until stop.
func startKeepAlive(period time.Duration, ticks <-chan time.Time, stopTicks func(), idle func() time.Duration, send func(ctx context.Context) error) *keepAlive {
	ctx, cancel := context.WithCancel(context.Background())
	k := &keepAlive{period: period, idle: idle, send: send, ticks: ticks, stopT: stopTicks, cancel: cancel, done: make(chan struct{})}
	go k.run(ctx)
	return k
}

func (k *keepAlive) run(ctx context.Context) {
	defer close(k.done)
	defer k.stopT()
	for {
		select {
		case <-ctx.Done():
			return
		case <-k.ticks:
		}
		if k.idle() < k.period {
			continue
		}
		// A failure is left to the next tick and to the calls that need the session: the
		// re-login tripper backs off and reports a failing re-login itself.
		_ = k.send(ctx)
	}
}

// stop ends the loop and waits for it. Safe to call twice.
func (k *keepAlive) stop() {
	k.stopOnce.Do(func() {
		k.cancel()
		<-k.done
	})
}

// currentTime is the keep-alive request.
func currentTime(rt soap.RoundTripper, callTimeout time.Duration) func(ctx context.Context) error {
	return func(ctx context.Context) error {
		ctx, cancel := context.WithTimeout(ctx, callTimeout)
		defer cancel()
		_, err := methods.GetCurrentTime(ctx, rt)
		return err
	}
}
