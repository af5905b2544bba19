package vsphere

import (
	"context"
	"fmt"
	"reflect"
	"sync"

	"github.com/vmware/govmomi/fault"
	"github.com/vmware/govmomi/vim25/soap"
	"github.com/vmware/govmomi/vim25/types"
)

// reloginTripper logs in again when vCenter says the session is gone (idle expiry, vCenter
// restart, an operator killing the session) and replays the request once, so that a
// long-running hatchery survives session loss without a restart.
type reloginTripper struct {
	next  soap.RoundTripper
	login func(ctx context.Context) error

	mu         sync.Mutex
	generation uint64 // incremented on every successful re-login
	stopped    bool   // set by Logout: a closed client must not revive its session
}

func newReloginTripper(next soap.RoundTripper, login func(ctx context.Context) error) *reloginTripper {
	return &reloginTripper{next: next, login: login}
}

func (r *reloginTripper) RoundTrip(ctx context.Context, req, res soap.HasFault) error {
	gen, stopped := r.state()
	err := r.next.RoundTrip(ctx, req, res)
	if err == nil || stopped || !fault.Is(err, &types.NotAuthenticated{}) {
		return err
	}
	if lerr := r.relogin(ctx, gen); lerr != nil {
		return fmt.Errorf("%w (re-login failed: %v)", err, lerr)
	}
	// The first attempt left its fault in res; a replay decodes into a clean body.
	if v := reflect.ValueOf(res); v.Kind() == reflect.Pointer && !v.IsNil() {
		v.Elem().Set(reflect.Zero(v.Elem().Type()))
	}
	return r.next.RoundTrip(ctx, req, res)
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
	if err := r.login(ctx); err != nil {
		return err
	}
	r.generation++
	return nil
}

func (r *reloginTripper) stop() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.stopped = true
}
