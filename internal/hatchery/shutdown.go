package hatchery

import (
	"context"
	"maps"
	"sync"

	"golang.org/x/sync/errgroup"
)

// Gate is an optional Provider interface: a provider that cannot take work for a while
// (vCenter unreachable, a circuit breaker open) says so, and the framework books or takes
// no job and starts no registration until it accepts again. The provider shows why in its
// own Status lines (an AL line); reason goes to the hatchery log.
type Gate interface {
	Accepting(ctx context.Context) (ok bool, reason string)
}

// accepting asks the provider's Gate, if it has one.
func (h *Hatchery) accepting(ctx context.Context) (bool, string) {
	g, ok := h.provider.(Gate)
	if !ok {
		return true, ""
	}
	return g.Accepting(ctx)
}

// bookedJobs are the jobs this hatchery has booked (v1) or taken (v2) and neither started
// a worker for nor released: what a shutdown must give back to the queue.
type bookedJobs struct {
	mu   sync.Mutex
	jobs map[string]string // job ID → region of the take (v2) or ""
}

func newBookedJobs() *bookedJobs { return &bookedJobs{jobs: make(map[string]string)} }

func (b *bookedJobs) add(jobID, region string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.jobs[jobID] = region
}

func (b *bookedJobs) remove(jobID string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	delete(b.jobs, jobID)
}

func (b *bookedJobs) snapshot() map[string]string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return maps.Clone(b.jobs)
}

// drain is the end of Run: discovery, the main loop and the heartbeats have stopped; the
// worker starters finish the spawns they have under way, for at most ShutdownGrace, after
// which cancelSpawns makes the provider roll back (and the starters release those jobs).
// Whatever is still booked afterwards is released.
func (h *Hatchery) drain(ctx context.Context, starters *errgroup.Group, cancelSpawns context.CancelFunc) {
	done := make(chan struct{})
	go func() {
		// starterLoop never fails; the group is only a WaitGroup that recovers panics.
		_ = starters.Wait()
		close(done)
	}()
	select {
	case <-done:
	default:
		grace := h.cfg.Provision.ShutdownGrace()
		h.log.Info(ctx, "stopping: waiting up to %s for the workers being started", grace)
		ticks, stop := h.tick("shutdown", grace)
		select {
		case <-done:
		case <-ticks:
			h.log.Warn(ctx, "stopping: shutdownTimeout (%s) reached, cancelling the workers being started", grace)
			cancelSpawns()
			<-done
		}
		stop()
	}
	cancelSpawns()

	for jobID, region := range h.booked.snapshot() {
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), h.iv.CallDeadline)
		err := h.release(rctx, jobID, region)
		cancel()
		if err != nil {
			h.log.Error(ctx, "stopping: %v", err)
			continue
		}
		h.log.Info(context.WithValue(ctx, fieldJobID, jobID), "stopping: released job %s", jobID)
	}
}

// ReleaseJob gives a job back to the queue: DELETE book for a v1 job ID, DELETE take for a
// v2 run-job UUID (in region, or the hatchery's v2 region when empty). A provider calls it
// when the worker VM of a job it had started died before the worker took the job.
func (h *Hatchery) ReleaseJob(ctx context.Context, jobID, region string) error {
	if region == "" {
		region = h.region2()
	}
	return h.release(ctx, jobID, region)
}
