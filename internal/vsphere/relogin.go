package vsphere

import (
	"context"
	"fmt"
	"reflect"
	"sync"
	"time"

	"github.com/vmware/govmomi/fault"
	"github.com/vmware/govmomi/vim25/soap"
	"github.com/vmware/govmomi/vim25/types"
)

// reloginTripper logs in again when vCenter says the session is gone (idle expiry, vCenter
// restart, an operator killing the session) and replays the request once, so that a
// long-running hatchery survives session loss without a restart.
//
// A failed re-login is not retried by every later call: the next attempt waits for an
// exponential back-off (reloginBackoffMin doubling up to reloginBackoffMax), so that a vCenter
// refusing our credentials is not hammered (and the account not locked out); calls in
// between fail at once with the last login error. SessionHealth reports the failure.
type reloginTripper struct {
	next  soap.RoundTripper
	login func(ctx context.Context) error
	now   func() time.Time

	mu         sync.Mutex
	generation uint64 // incremented on every successful re-login
	stopped    bool   // set by Logout: a closed client must not revive its session
	// Failed re-logins since the last success: the last error, when the first one happened,
	// how many, and when the next attempt is allowed.
	lastErr     error
	failedSince time.Time
	failures    int
	retryAt     time.Time
}

// Back-off bounds of failed re-logins.
const (
	reloginBackoffMin = time.Second
	reloginBackoffMax = 2 * time.Minute
)

func newReloginTripper(next soap.RoundTripper, login func(ctx context.Context) error) *reloginTripper {
	return &reloginTripper{next: next, login: login, now: time.Now}
}

// reloginReplays bounds the replays of one request: a session may be lost again between a
// re-login and the replay (an operator's script killing sessions, a vCenter failing over),
// and each new loss deserves its own re-login, but not an endless loop.
const reloginReplays = 3

func (r *reloginTripper) RoundTrip(ctx context.Context, req, res soap.HasFault) error {
	gen, stopped := r.state()
	err := r.next.RoundTrip(ctx, req, res)
	for range reloginReplays {
		if err == nil || stopped || !fault.Is(err, &types.NotAuthenticated{}) {
			return err
		}
		if lerr := r.relogin(ctx, gen); lerr != nil {
			return fmt.Errorf("%w (re-login failed: %v)", err, lerr)
		}
		// The failed attempt left its fault in res; a replay decodes into a clean body.
		if v := reflect.ValueOf(res); v.Kind() == reflect.Pointer && !v.IsNil() {
			v.Elem().Set(reflect.Zero(v.Elem().Type()))
		}
		gen, stopped = r.state()
		err = r.next.RoundTrip(ctx, req, res)
	}
	return err
}

func (r *reloginTripper) state() (uint64, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.generation, r.stopped
}

// relogin logs in unless another request already did since gen was read, so that concurrent
// requests failing together cause a single login.
func (r *reloginTripper) relogin(ctx context.Context, gen uint64) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.stopped {
		return fmt.Errorf("client logged out")
	}
	if r.generation != gen {
		return nil
	}
	now := r.now()
	if r.lastErr != nil && now.Before(r.retryAt) {
		return fmt.Errorf("next re-login attempt at %s: %w", r.retryAt.UTC().Format(time.RFC3339), r.lastErr)
	}
	if err := r.login(ctx); err != nil {
		if r.lastErr == nil {
			r.failedSince = now
		}
		r.failures++
		r.lastErr = err
		r.retryAt = now.Add(reloginBackoff(r.failures))
		return err
	}
	r.generation++
	r.lastErr, r.failures, r.failedSince, r.retryAt = nil, 0, time.Time{}, time.Time{}
	return nil
}

// reloginBackoff is the wait after the n-th consecutive failed re-login (n ≥ 1).
func reloginBackoff(n int) time.Duration {
	d := reloginBackoffMin
	for i := 1; i < n && d < reloginBackoffMax; i++ {
		d *= 2
	}
	return min(d, reloginBackoffMax)
}

func (r *reloginTripper) stop() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.stopped = true
}
