package hatchery

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"strconv"
	"sync"

	"golang.org/x/sync/errgroup"

	"github.com/hatchery-vsphere/hatchery-vsphere/internal/cds"
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
//
// The provider only knows that no worker of the job was seen registered: a worker may have
// taken the job, run it and powered its VM off between two of its passes. So the job is
// released only while the API still shows it waiting for this hatchery's worker (v1:
// Waiting and booked; v2: Scheduling); ErrJobNotReleasable says it was left alone.
func (h *Hatchery) ReleaseJob(ctx context.Context, jobID, region string) error {
	if region == "" {
		region = h.region2()
	}
	if err := h.stillAwaitingWorker(ctx, jobID, region); err != nil {
		return err
	}
	return h.release(ctx, jobID, region)
}

// JobAwaitsWorker implements Services: the check ReleaseJob makes before releasing.
func (h *Hatchery) JobAwaitsWorker(ctx context.Context, jobID, region string) (bool, error) {
	if region == "" {
		region = h.region2()
	}
	err := h.stillAwaitingWorker(ctx, jobID, region)
	switch {
	case err == nil:
		return true, nil
	case errors.Is(err, ErrJobNotReleasable), cds.ErrorIs(err, cds.ErrIDNotFound), cds.ErrorIs(err, cds.ErrIDWorkflowNodeJobRunNotFound):
		return false, nil
	}
	return false, err
}

// ErrJobNotReleasable is returned by ReleaseJob for a job that has moved on.
var ErrJobNotReleasable = errors.New("job no longer waits for a worker of this hatchery")

func (h *Hatchery) stillAwaitingWorker(ctx context.Context, jobID, region string) error {
	if cds.IsUUID(jobID) {
		if h.v2 == nil {
			return fmt.Errorf("release v2 job %s: no v2 client", jobID)
		}
		info, err := h.v2.V2QueueJobInfo(ctx, region, jobID)
		if err != nil {
			return fmt.Errorf("release v2 job %s: %w", jobID, err)
		}
		if info.RunJob.Status != cds.V2StatusScheduling {
			return fmt.Errorf("release v2 job %s (status %s): %w", jobID, info.RunJob.Status, ErrJobNotReleasable)
		}
		return nil
	}
	if h.v1 == nil {
		return fmt.Errorf("release v1 job %s: no v1 client", jobID)
	}
	id, err := strconv.ParseInt(jobID, 10, 64)
	if err != nil {
		return fmt.Errorf("release job %q: not a v1 job ID nor a v2 UUID", jobID)
	}
	job, err := h.v1.QueueJobInfo(ctx, id)
	if err != nil {
		return fmt.Errorf("release v1 job %s: %w", jobID, err)
	}
	if job.Status != cds.StatusWaiting || job.BookedBy.Name != h.cfg.Name {
		return fmt.Errorf("release v1 job %s (status %s, booked by %q): %w", jobID, job.Status, job.BookedBy.Name, ErrJobNotReleasable)
	}
	return nil
}
