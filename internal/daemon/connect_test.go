package daemon

import (
	"context"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// relay forwards every connection accepted on ln to target until the test ends, when it
// closes them all (idle keep-alive connections would otherwise linger for 90 s).
func relay(t *testing.T, ln net.Listener, target string) {
	t.Helper()
	var (
		wg    sync.WaitGroup
		mu    sync.Mutex
		conns []net.Conn
	)
	track := func(c net.Conn) {
		mu.Lock()
		defer mu.Unlock()
		conns = append(conns, c)
	}
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		for _, c := range conns {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			in, err := ln.Accept()
			if err != nil {
				return
			}
			out, err := net.Dial("tcp", target)
			if err != nil {
				in.Close()
				continue
			}
			track(in)
			track(out)
			wg.Add(2)
			pipe := func(dst, src net.Conn) {
				defer wg.Done()
				_, _ = io.Copy(dst, src)
				dst.Close()
				src.Close()
			}
			go pipe(out, in)
			go pipe(in, out)
		}
	}()
}

// The original stopped when vCenter could not be reached at start; a vCenter that is
// restarting must only delay the hatchery.
func TestRunWaitsForAnUnreachableVCenterThenServes(t *testing.T) {
	h := newTestHarness(t, HarnessOptions{})
	cfg := h.Config()
	// A port nobody listens on yet: connections are refused.
	probe, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := probe.Addr().String()
	probe.Close()
	cfg.Hatchery.VSphere.Endpoint = addr

	var attempts atomic.Int32
	wait := func(ctx context.Context, _ time.Duration) bool {
		// vCenter comes back after the second refused attempt.
		if attempts.Add(1) == 2 {
			ln, err := net.Listen("tcp", addr)
			if err != nil {
				t.Errorf("listen on %s: %v", addr, err)
				return false
			}
			relay(t, ln, h.VCenter.URL.Host)
		}
		return ctx.Err() == nil
	}
	d := startDaemon(t, cfg, append(h.Options(), withConnectWait(wait))...)
	d.wait(t, h.API, "the hatchery to sign in and heartbeat", func() bool {
		return len(h.API.Heartbeats()) > 0
	})
	if n := attempts.Load(); n < 2 {
		t.Errorf("%d pauses before vCenter was reached, want 2", n)
	}
	if err := d.stop(); err != nil {
		t.Errorf("Run after cancel = %v", err)
	}
}

func TestUnreachableTellsAnOutageFromARefusal(t *testing.T) {
	_, err := net.Dial("tcp", "127.0.0.1:1")
	if err == nil {
		t.Skip("something listens on port 1")
	}
	if !unreachable(err) {
		t.Errorf("a refused connection (%v) must be worth waiting for", err)
	}
	if unreachable(io.ErrClosedPipe) {
		t.Error("an unrelated error must not be retried")
	}
}
