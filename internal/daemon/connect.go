package daemon

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"syscall"
	"time"

	"github.com/rockbears/log"

	"github.com/hatchery-vsphere/hatchery-vsphere/internal/vsphere"
)

// connectRetry is the first pause between two attempts to reach an unreachable vCenter;
// it doubles up to connectRetryMax.
const (
	connectRetry    = 2 * time.Second
	connectRetryMax = time.Minute
)

// connectVCenter connects to vCenter, waiting for it while it cannot be reached (a
// vCenter restarting, a network cut): the original gave up at once and the service
// stopped. A vCenter that answers but refuses (bad credentials, unknown datacenter or
// datastore...) is a configuration error, returned at once. wait makes the pause between
// attempts (tests make it instant); it returns false when ctx is done.
func connectVCenter(ctx context.Context, opts vsphere.Options, logger *log.Logger, wait func(context.Context, time.Duration) bool) (*vsphere.Client, error) {
	pause := connectRetry
	for attempt := 1; ; attempt++ {
		vc, err := vsphere.Connect(ctx, opts)
		if err == nil {
			if attempt > 1 {
				logger.Info(ctx, "vCenter %q reached after %d attempts", opts.Endpoint, attempt)
			}
			return vc, nil
		}
		if !unreachable(err) || ctx.Err() != nil {
			return nil, fmt.Errorf("connect to vCenter %q (datacenter %q): %w", opts.Endpoint, opts.Datacenter, err)
		}
		logger.Warn(ctx, "vCenter %q unreachable (attempt %d), retrying in %s: %v", opts.Endpoint, attempt, pause, err)
		if !wait(ctx, pause) {
			return nil, fmt.Errorf("connect to vCenter %q: %w", opts.Endpoint, ctx.Err())
		}
		pause = min(2*pause, connectRetryMax)
	}
}

// unreachable tells a vCenter that could not be reached (worth waiting for) from one that
// answered with a refusal.
func unreachable(err error) bool {
	var netErr net.Error
	return errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, syscall.ECONNRESET) ||
		errors.Is(err, syscall.EHOSTUNREACH) || errors.Is(err, syscall.ENETUNREACH) ||
		errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) ||
		errors.Is(err, context.DeadlineExceeded) || errors.As(err, &netErr)
}

func sleepCtx(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

// withConnectWait replaces the pause between two attempts to reach vCenter (tests).
func withConnectWait(wait func(context.Context, time.Duration) bool) Option {
	return func(o *options) { o.connectWait = wait }
}
