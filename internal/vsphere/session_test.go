package vsphere

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vmware/govmomi/fault"
	"github.com/vmware/govmomi/vim25/soap"
	"github.com/vmware/govmomi/vim25/types"
)

// expiringVCenter answers NotAuthenticated until a login succeeds.
type expiringVCenter struct {
	mu       sync.Mutex
	authed   bool
	loginErr error
	logins   int
}

func (v *expiringVCenter) RoundTrip(context.Context, soap.HasFault, soap.HasFault) error {
	v.mu.Lock()
	defer v.mu.Unlock()
	if !v.authed {
		return soap.WrapVimFault(&types.NotAuthenticated{})
	}
	return nil
}

func (v *expiringVCenter) login(context.Context) error {
	v.mu.Lock()
	defer v.mu.Unlock()
	v.logins++
	if v.loginErr != nil {
		return v.loginErr
	}
	v.authed = true
	return nil
}

func (v *expiringVCenter) set(loginErr error) {
	v.mu.Lock()
	defer v.mu.Unlock()
	v.loginErr = loginErr
}

func (v *expiringVCenter) loginCount() int {
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.logins
}

type testClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *testClock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *testClock) advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

func TestFailedReloginBacksOffAndIsReported(t *testing.T) {
	vc := &expiringVCenter{loginErr: errors.New("ServerFaultCode: Cannot complete login due to an incorrect user name or password.")}
	clock := &testClock{t: time.Date(2025, 1, 10, 8, 0, 0, 0, time.UTC)}
	r := newReloginTripper(vc, vc.login)
	r.now = clock.now
	c := &Client{relog: r}
	ctx := context.Background()

	if ok, _ := c.SessionHealth(); !ok {
		t.Fatal("unhealthy before anything failed")
	}
	// Many calls failing together: one login attempt, the others fail at once.
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			if err := r.RoundTrip(ctx, nil, nil); err == nil {
				t.Error("call succeeded without a session")
			}
		})
	}
	wg.Wait()
	if n := vc.loginCount(); n != 1 {
		t.Fatalf("%d logins for 8 calls failing together, want 1", n)
	}
	ok, detail := c.SessionHealth()
	if ok || !strings.Contains(detail, "re-login failing since 2025-01-10T08:00:00Z") || !strings.Contains(detail, "incorrect user name") {
		t.Errorf("health = %v %q", ok, detail)
	}

	// Within the back-off no call tries again; after it, one does (and backs off longer).
	clock.advance(reloginBackoffMin / 2)
	_ = r.RoundTrip(ctx, nil, nil)
	if n := vc.loginCount(); n != 1 {
		t.Errorf("%d logins within the back-off, want 1", n)
	}
	clock.advance(reloginBackoffMin)
	_ = r.RoundTrip(ctx, nil, nil)
	clock.advance(reloginBackoffMin) // 2nd back-off is 2 × min: not elapsed yet
	_ = r.RoundTrip(ctx, nil, nil)
	if n := vc.loginCount(); n != 2 {
		t.Errorf("%d logins, want 2", n)
	}

	// vCenter accepts us again: the call is replayed and the alert clears.
	vc.set(nil)
	clock.advance(reloginBackoffMin)
	if err := r.RoundTrip(ctx, nil, nil); err != nil {
		t.Fatalf("call after a successful re-login: %v", err)
	}
	if ok, detail := c.SessionHealth(); !ok {
		t.Errorf("still unhealthy after a successful re-login: %q", detail)
	}
}

func TestReloginBackoffGrowsToItsCap(t *testing.T) {
	for n, want := range map[int]time.Duration{1: time.Second, 2: 2 * time.Second, 3: 4 * time.Second, 8: 2 * time.Minute, 50: 2 * time.Minute} {
		if got := reloginBackoff(n); got != want {
			t.Errorf("reloginBackoff(%d) = %s, want %s", n, got, want)
		}
	}
}

func TestConcurrentSessionLossLogsInOnce(t *testing.T) {
	vc := &expiringVCenter{}
	r := newReloginTripper(vc, vc.login)
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			if err := r.RoundTrip(context.Background(), nil, nil); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	if n := vc.loginCount(); n != 1 {
		t.Errorf("%d logins, want 1", n)
	}
}

// flappingVCenter loses the session again right after each of the first `losses` logins,
// before the replayed request reaches it.
type flappingVCenter struct {
	expiringVCenter
	losses int
}

func (v *flappingVCenter) RoundTrip(ctx context.Context, req, res soap.HasFault) error {
	err := v.expiringVCenter.RoundTrip(ctx, req, res)
	v.mu.Lock()
	defer v.mu.Unlock()
	if err == nil && v.losses > 0 {
		v.losses--
		v.authed = false
		return soap.WrapVimFault(&types.NotAuthenticated{})
	}
	return err
}

// A session lost again between a re-login and the replay gets another re-login; a session
// that never holds is given up after a bounded number of replays.
func TestSessionLostAgainBeforeTheReplay(t *testing.T) {
	vc := &flappingVCenter{losses: 2}
	r := newReloginTripper(vc, vc.login)
	if err := r.RoundTrip(context.Background(), nil, nil); err != nil {
		t.Fatalf("request failed: %v", err)
	}
	if n := vc.loginCount(); n != 3 {
		t.Errorf("%d logins, want 3 (one per loss)", n)
	}

	never := &flappingVCenter{losses: 100}
	r = newReloginTripper(never, never.login)
	if err := r.RoundTrip(context.Background(), nil, nil); !fault.Is(err, &types.NotAuthenticated{}) {
		t.Fatalf("err = %v, want NotAuthenticated", err)
	}
	if n := never.loginCount(); n != reloginReplays {
		t.Errorf("%d logins, want %d", n, reloginReplays)
	}
}
