package hatchery

import (
	"cmp"
	"context"
	"slices"
	"strconv"

	"golang.org/x/sync/errgroup"

	"github.com/hatchery-vsphere/hatchery-vsphere/internal/cds"
)

// discoverV1 runs the v1 websocket consumer and the v1 polling loop (§7.1).
func (h *Hatchery) discoverV1(ctx context.Context) error {
	return discover(ctx, h, "v1", h.v1.ListenV1, h.handleV1Event, h.pollV1)
}

// discoverV2 runs the v2 websocket consumer and the v2 polling loop (§7.2).
func (h *Hatchery) discoverV2(ctx context.Context) error {
	return discover(ctx, h, "v2", h.v2.ListenV2, h.handleV2Event, h.pollV2)
}

// discover runs one engine's discovery: the websocket listener, the consumer of its
// events, and the polling loop on the "poll-<engine>" tick, until ctx is done.
func discover[E any](ctx context.Context, h *Hatchery, engine string,
	listen func(context.Context, chan<- E) error, handle func(context.Context, E), poll func(context.Context)) error {
	g, ctx := errgroup.WithContext(ctx)
	events := make(chan E)
	g.Go(func() error {
		if err := listen(ctx, events); err != nil && ctx.Err() == nil {
			h.log.Error(ctx, "%s websocket: %v", engine, err)
		}
		return nil
	})
	g.Go(func() error {
		for {
			select {
			case <-ctx.Done():
				return nil
			case ev := <-events:
				handle(ctx, ev)
			}
		}
	})
	g.Go(func() error {
		ticks, stop := h.tick("poll-"+engine, h.iv.Poll)
		defer stop()
		for {
			select {
			case <-ctx.Done():
				return nil
			case <-ticks:
				poll(ctx)
			}
		}
	})
	return g.Wait()
}

// handleV1Event enqueues the job of a v1 "Waiting" job event that is still waiting and not
// booked (§7.1).
func (h *Hatchery) handleV1Event(ctx context.Context, ev cds.WebsocketEvent) {
	if ev.Event.TypeEvent != cds.EventTypeRunWorkflowJob || ev.Event.Status != cds.StatusWaiting {
		return
	}
	h.metrics.inc(ctx, mWSv1Received)
	payload, err := ev.Event.RunWorkflowJob()
	if err != nil {
		h.log.Warn(ctx, "v1 websocket event: %v", err)
		return
	}
	if h.pending.has(strconv.FormatInt(payload.ID, 10)) {
		return
	}
	job, err := h.v1.QueueJobInfo(ctx, payload.ID)
	if err != nil {
		if !cds.ErrorIs(err, cds.ErrIDWorkflowNodeJobRunNotFound) {
			h.log.Warn(context.WithValue(ctx, fieldJobID, payload.ID), "v1 websocket event: get job: %v", err)
		}
		return
	}
	if job.Status != cds.StatusWaiting || job.BookedBy.Name != "" {
		return
	}
	h.enqueueV1(ctx, payload.ID)
}

// handleV2Event enqueues the job of a v2 queue event when it is waiting (§7.2).
func (h *Hatchery) handleV2Event(ctx context.Context, ev cds.WebsocketJobQueueEvent) {
	h.metrics.inc(ctx, mWSv2Received)
	if h.pending.has(ev.JobRunID) {
		return
	}
	info, err := h.v2.V2QueueJobInfo(ctx, ev.Region, ev.JobRunID)
	if err != nil {
		if !cds.ErrorIs(err, cds.ErrIDNotFound) {
			h.log.Warn(context.WithValue(ctx, fieldJobID, ev.JobRunID), "v2 websocket event: get job: %v", err)
		}
		return
	}
	if info.RunJob.Status != cds.V2StatusWaiting {
		return
	}
	h.enqueueV2(ctx, ev.JobRunID)
}

// pollV1 reads the v1 queue and enqueues what is not pending yet, the least represented
// projects first, at most 2 × max(1, channel capacity) jobs (§7.1).
func (h *Hatchery) pollV1(ctx context.Context) {
	var regions []string
	if r := h.cfg.Provision.Region; r != "" {
		regions = append(regions, r)
		if !h.cfg.Provision.IgnoreJobWithNoRegion {
			regions = append(regions, "")
		}
	}
	jobs, err := h.v1.QueueWorkflows(ctx, h.provider.ModelType(), regions)
	if err != nil {
		if !cds.ErrorIs(err, cds.ErrIDUnauthorized) {
			h.log.Error(ctx, "poll v1 queue: %v", err)
		}
		return
	}
	jobs = slices.DeleteFunc(jobs, func(j cds.WorkflowNodeJobRun) bool {
		return h.pending.has(strconv.FormatInt(j.ID, 10))
	})
	perProject := make(map[int64]int)
	for _, j := range jobs {
		perProject[j.ProjectID]++
	}
	// Fairness between projects: the fewer jobs a project has in the queue, the earlier.
	slices.SortStableFunc(jobs, func(a, b cds.WorkflowNodeJobRun) int {
		return cmp.Compare(perProject[a.ProjectID], perProject[b.ProjectID])
	})
	limit := 2 * max(1, cap(h.chanV1))
	if len(jobs) > limit {
		jobs = jobs[:limit]
	}
	for _, j := range jobs {
		if !h.enqueueV1(ctx, j.ID) {
			return
		}
	}
}

// pollV2 reads the v2 queue of the hatchery's region and enqueues, in API order, at most
// 2 × channel capacity jobs not pending yet (§7.2).
func (h *Hatchery) pollV2(ctx context.Context) {
	jobs, err := h.v2.V2Queue(ctx, h.region2(), h.cfg.OSArch)
	if err != nil {
		if !cds.ErrorIs(err, cds.ErrIDUnauthorized) {
			h.log.Error(ctx, "poll v2 queue: %v", err)
		}
		return
	}
	jobs = slices.DeleteFunc(jobs, func(j cds.V2WorkflowRunJob) bool { return h.pending.has(j.ID) })
	if limit := 2 * cap(h.chanV2); len(jobs) > limit {
		jobs = jobs[:limit]
	}
	for _, j := range jobs {
		if !h.enqueueV2(ctx, j.ID) {
			return
		}
	}
}

// enqueueV1 adds id to the pending set and pushes it to the main loop, unless it is already
// pending. The check-and-add is atomic: a job arriving at once from the websocket and from
// polling is pushed once. It returns false when ctx ended.
func (h *Hatchery) enqueueV1(ctx context.Context, id int64) bool {
	if !h.pending.add(strconv.FormatInt(id, 10)) {
		return true
	}
	select {
	case h.chanV1 <- id:
		h.metrics.inc(ctx, mChanV1JobAdd)
		return true
	case <-ctx.Done():
		h.pending.remove(strconv.FormatInt(id, 10))
		return false
	}
}

// enqueueV2 is enqueueV1 for v2 run jobs.
func (h *Hatchery) enqueueV2(ctx context.Context, id string) bool {
	if !h.pending.add(id) {
		return true
	}
	select {
	case h.chanV2 <- id:
		h.metrics.inc(ctx, mChanV2JobAdd)
		return true
	case <-ctx.Done():
		h.pending.remove(id)
		return false
	}
}
