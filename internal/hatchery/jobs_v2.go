package hatchery

import (
	"context"
	"strconv"

	"github.com/hatchery-vsphere/hatchery-vsphere/internal/cds"
	"github.com/hatchery-vsphere/hatchery-vsphere/internal/lifecycle"
)

// handleV2Job is §10: fetch the job in the hatchery's region, check it is waiting, check
// capacity, its model and attempts, ask the provider, and push a spawn request. Every way
// out that does not push removes the job from the pending set, including a failed fetch
// (fix of quirk Q31), except a model of another type, which stays pending for the job
// context duration (quirk Q9, kept).
func (h *Hatchery) handleV2Job(ctx context.Context, id string) {
	seen := h.now()
	ctx = context.WithValue(ctx, fieldJobID, id)
	h.metrics.inc(ctx, mJobs)
	drop := true
	defer func() {
		if drop {
			h.pending.remove(id)
		}
	}()

	if ok, reason := h.accepting(ctx); !ok {
		h.log.Debug(ctx, "provider not accepting work (%s), skipping v2 job %s", reason, id)
		return
	}
	info, err := h.v2.V2QueueJobInfo(ctx, h.region2(), id)
	if err != nil {
		if !cds.ErrorIs(err, cds.ErrIDNotFound) {
			h.log.Error(ctx, "get v2 job: %v", err)
		}
		return
	}
	ctx, cancel := context.WithTimeout(ctx, h.iv.JobContext)
	defer cancel()
	rj := info.RunJob
	if rj.Status != cds.V2StatusWaiting {
		return
	}
	if err := h.checkCapacities(ctx); err != nil {
		h.logCapacity(ctx, err)
		lifecycle.RecordJobSkipped(ctx, lifecycle.GateCapacity)
		return
	}
	if rj.Job.RunsOn.Model == "" {
		return
	}
	max, limited := maxAttempts(h.cfg.Provision.MaxAttemptsNumberBeforeFailure)
	if limited && h.attempts.get(id) > max {
		// v2 jobs are only dropped, never failed (quirk Q14).
		h.log.Warn(ctx, "v2 job %s: too many attempts (%d), ignoring it", id, max)
		return
	}
	m := info.Model
	ctx = context.WithValue(ctx, fieldModel, m.Name)
	if m.Type != h.provider.ModelType() {
		h.attempts.inc(id)
		h.log.Error(ctx, "v2 job %s: worker model %q has type %q", id, m.Name, m.Type)
		drop = false
		h.pending.expireAt(id, h.now().Add(h.iv.JobContext))
		return
	}
	spec, err := m.VSphereSpec()
	if err != nil {
		h.attempts.inc(id)
		h.log.Error(ctx, "v2 job %s: %v", id, err)
		return
	}
	pre, cmd, post := V2Commands(m.OSArch)
	model := &WorkerStarterWorkerModel{
		ModelV2:     &m,
		VSphereSpec: spec,
		PreCmd:      pre,
		Cmd:         cmd,
		PostCmd:     post,
		Flavor:      rj.Job.RunsOn.Flavor,
	}
	if mem := rj.Job.RunsOn.Memory; mem != "" {
		n, err := strconv.ParseInt(mem, 10, 64)
		if err != nil {
			h.attempts.inc(id)
			h.log.Error(ctx, "v2 job %s: runs-on memory %q: %v", id, mem, err)
			return
		}
		model.Memory = n
	}
	if !h.provider.CanSpawn(ctx, model, id, nil) {
		lifecycle.RecordJobSkipped(ctx, lifecycle.GateCanSpawn)
		return
	}
	ok, err := h.provider.CanAllocateResources(ctx, model, id, nil)
	if err != nil {
		h.log.Error(ctx, "check resources for v2 job %s: %v", id, err)
		return
	}
	if !ok {
		lifecycle.RecordJobSkipped(ctx, lifecycle.GateResources)
		return
	}
	h.attempts.inc(id)
	if h.pushSpawn(ctx, spawnRequest{jobID: id, model: model, region: rj.Region, seen: seen}) {
		drop = false
	}
}
