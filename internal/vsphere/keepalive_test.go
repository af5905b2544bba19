package vsphere

import (
	"context"
	"sync"
	"testing"
	"time"
)

func TestKeepAliveSendsOnlyAfterAWholeIdlePeriod(t *testing.T) {
	ticks := make(chan time.Time)
	var (
		mu    sync.Mutex
		idle  time.Duration
		sends int
	)
	sent := make(chan struct{}, 10)
	k := startKeepAlive(time.Minute, ticks, func() {},
		func() time.Duration { mu.Lock(); defer mu.Unlock(); return idle },
		func(context.Context) error { mu.Lock(); sends++; mu.Unlock(); sent <- struct{}{}; return nil })
	defer k.stop()
	set := func(d time.Duration) { mu.Lock(); idle = d; mu.Unlock() }

	set(59 * time.Second) // a request went out within the period: nothing to do
	ticks <- time.Time{}
	set(time.Minute)
	ticks <- time.Time{}
	<-sent
	set(2 * time.Hour)
	ticks <- time.Time{}
	<-sent
	k.stop() // waits for the loop: no send can be in flight after it
	mu.Lock()
	defer mu.Unlock()
	if sends != 2 {
		t.Errorf("%d keep-alive requests, want 2 (the ticks after a whole idle period)", sends)
	}
	k.stop() // twice is fine
}

// An idle client whose session vCenter ended logs in again on its own, before any caller
// needs the session.
func TestKeepAliveRestoresALostSessionWhileIdle(t *testing.T) {
	env, c := newEnv(t, func(o *Options) { o.KeepAlive = 20 * time.Millisecond })
	ctx := t.Context()
	before, err := c.sessionKey(ctx)
	if err != nil {
		t.Fatal(err)
	}
	logins := env.CallCount("Login")
	if _, err := env.ExpireSessions(ctx); err != nil {
		t.Fatal(err)
	}
	deadline := time.NewTimer(10 * time.Second) // turns a hang into a failure
	defer deadline.Stop()
	poll := time.NewTicker(10 * time.Millisecond)
	defer poll.Stop()
	for env.CallCount("Login") == logins {
		select {
		case <-deadline.C:
			t.Fatal("the idle client never logged in again")
		case <-poll.C:
		}
	}
	if env.CallCount("CurrentTime") == 0 {
		t.Error("no CurrentTime keep-alive request reached vCenter")
	}
	after, err := c.sessionKey(ctx)
	if err != nil || after == before {
		t.Errorf("session %q after the loss (%v), want a new one", after, err)
	}
}
