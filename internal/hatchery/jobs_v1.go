package hatchery

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/hatchery-vsphere/hatchery-vsphere/internal/cds"
	"github.com/hatchery-vsphere/hatchery-vsphere/internal/lifecycle"
)

// maxModelSpawnErrors: a v1 model with more spawn errors than this is ignored (§9.1, §13.1).
const maxModelSpawnErrors = 5

// spawnRequest is what the main loop (or the registration pass) hands to a worker starter.
type spawnRequest struct {
	// jobID is the v1 job ID as a decimal string, the v2 run-job UUID, or "0" for a
	// registration.
	jobID        string
	v1JobID      int64
	model        *WorkerStarterWorkerModel
	requirements []cds.Requirement
	// region is the v2 job's own region (take, release, infos).
	region       string
	registerOnly bool
	deprecated   bool
	// seen is when the job's handling began, for the job-to-launch metric.
	seen time.Time
	// workerName is drawn when a job is admitted: the worker counts against maxWorker from
	// then on, before its VM exists (spawningSet).
	workerName string
}

// handleV1Job is §9: fetch the job, check it is waiting and not booked, check capacity,
// select a model, interpolate its secrets, check resources and attempts, and push a spawn
// request. Every way out that does not push removes the job from the pending set,
// including a failed fetch (fix of quirk Q31: the original kept it forever).
func (h *Hatchery) handleV1Job(ctx context.Context, id int64) {
	if id == 0 {
		return
	}
	sid := strconv.FormatInt(id, 10)
	seen := h.now()
	ctx = context.WithValue(ctx, fieldJobID, sid)
	h.metrics.inc(ctx, mJobs)
	pushed := false
	defer func() {
		if !pushed {
			h.pending.remove(sid)
		}
	}()

	if ok, reason := h.accepting(ctx); !ok {
		h.log.Debug(ctx, "provider not accepting work (%s), skipping v1 job %d", reason, id)
		return
	}
	job, err := h.v1.QueueJobInfo(ctx, id)
	if err != nil {
		if !cds.ErrorIs(err, cds.ErrIDWorkflowNodeJobRunNotFound) {
			h.log.Error(ctx, "get v1 job: %v", err)
		}
		return
	}
	ctx, cancel := context.WithTimeout(ctx, h.iv.JobContext)
	defer cancel()
	if job.Status != cds.StatusWaiting || job.BookedBy.ID != 0 {
		return
	}
	if err := h.checkCapacities(ctx); err != nil {
		h.logCapacity(ctx, err)
		lifecycle.RecordJobSkipped(ctx, lifecycle.GateCapacity)
		return
	}
	reqs := job.Job.Action.Requirements
	model := h.selectV1JobModel(ctx, job, sid, reqs)
	if model == nil {
		h.log.Debug(ctx, "no worker model for v1 job %d", id)
		return
	}
	ctx = context.WithValue(ctx, fieldModel, model.Name())
	if err := h.interpolateSecrets(ctx, model); err != nil {
		h.log.Error(ctx, "%v", err)
		return
	}
	ok, err := h.provider.CanAllocateResources(ctx, model, sid, reqs)
	if err != nil {
		h.log.Error(ctx, "check resources for v1 job %d: %v", id, err)
		return
	}
	if !ok {
		lifecycle.RecordJobSkipped(ctx, lifecycle.GateResources)
		return
	}
	if max, on := maxAttempts(h.cfg.Provision.MaxAttemptsNumberBeforeFailure); on {
		if n := h.attempts.inc(sid); n > max {
			h.failV1Job(ctx, id, max)
			return
		}
	}
	pushed = h.pushSpawn(ctx, spawnRequest{
		jobID:        sid,
		v1JobID:      id,
		model:        model,
		requirements: reqs,
		region:       h.cfg.Provision.Region,
		deprecated:   model.ModelV1 != nil && model.ModelV1.IsDeprecated,
		seen:         seen,
	})
}

// failV1Job fails a v1 job this hatchery could not start after max attempts (§9 step 10).
func (h *Hatchery) failV1Job(ctx context.Context, id int64, max int) {
	res := cds.Result{
		ID:         id,
		BuildID:    id,
		Status:     cds.StatusFail,
		RemoteTime: h.now(),
		Reason:     fmt.Sprintf("hatchery %q failed to start worker after %d attempts", h.cfg.Name, max),
	}
	h.log.Warn(ctx, "failing v1 job %d: %s", id, res.Reason)
	if err := h.v1.QueueJobResult(ctx, id, res); err != nil {
		h.log.Error(ctx, "fail v1 job %d after %d attempts: %v", id, max, err)
	}
}

// pushSpawn hands a request to the worker starters; the job stays in the pending set until
// the starter is done with it. It returns false when ctx ended first.
func (h *Hatchery) pushSpawn(ctx context.Context, req spawnRequest) bool {
	if !req.registerOnly {
		h.pending.keep(req.jobID)
		req.workerName = GenerateWorkerName("")
		h.spawning.add(req.workerName)
	}
	select {
	case h.starterCh <- req:
		h.metrics.inc(ctx, mJobsProcessed)
		return true
	case <-ctx.Done():
		h.spawning.remove(req.workerName)
		return false
	}
}

func (h *Hatchery) logCapacity(ctx context.Context, err error) {
	if errors.Is(err, errNoCapacity) {
		h.log.Debug(ctx, "%v", err)
		return
	}
	h.log.Error(ctx, "check capacity: %v", err)
}

// selectV1JobModel is §9 step 7: the region gate, then an as-code model named by the job,
// the default v2 model of a job naming no model, or the first matching cached v1 model.
func (h *Hatchery) selectV1JobModel(ctx context.Context, job cds.WorkflowNodeJobRun, sid string, reqs []cds.Requirement) *WorkerStarterWorkerModel {
	hasRegion, jobModel := false, ""
	for _, r := range reqs {
		switch r.Type {
		case cds.RequirementRegion:
			hasRegion = true
		case cds.RequirementModel:
			jobModel = r.Value
		}
	}
	if !hasRegion && h.cfg.Provision.IgnoreJobWithNoRegion {
		lifecycle.RecordJobSkipped(ctx, lifecycle.GateRegion)
		return nil
	}
	if len(strings.Split(jobModel, "/")) >= 5 {
		if h.v2 == nil {
			return nil
		}
		m, err := h.v2ModelForV1Job(ctx, jobModel, sid, reqs)
		if err != nil {
			h.log.Error(ctx, "as-code worker model %q: %v", jobModel, err)
			return nil
		}
		return m
	}
	if jobModel == "" && h.v2 != nil {
		if ref := h.provider.DefaultModelV2Name(ctx, reqs); ref != "" {
			m, err := h.v2ModelForV1Job(ctx, ref, sid, reqs)
			if err != nil {
				h.log.Error(ctx, "default v2 worker model %q: %v", ref, err)
			} else if m != nil {
				return m
			}
		}
	}
	for _, m := range h.models.get() {
		if sm := h.matchV1Model(ctx, m, job, sid, reqs); sm != nil {
			return sm
		}
	}
	return nil
}

// newV1StarterModel wraps a v1 model with its commands (§17.3).
func newV1StarterModel(m cds.Model) *WorkerStarterWorkerModel {
	cmd := m.ModelVirtualMachine.Cmd
	if cmd == "" {
		cmd = m.ModelDocker.Cmd
	}
	return &WorkerStarterWorkerModel{
		ModelV1: &m,
		PreCmd:  m.ModelVirtualMachine.PreCmd,
		Cmd:     cmd,
		PostCmd: m.ModelVirtualMachine.PostCmd,
	}
}

// matchV1Model applies the rules of §9.1 and returns the starter model when m fits the job.
func (h *Hatchery) matchV1Model(ctx context.Context, m cds.Model, job cds.WorkflowNodeJobRun, sid string, reqs []cds.Requirement) *WorkerStarterWorkerModel {
	if m.Type != h.provider.ModelType() {
		return nil
	}
	if h.provider.NeedRegistration(ctx, &m) {
		return nil
	}
	if m.NbSpawnErr > maxModelSpawnErrors {
		return nil
	}
	if len(job.ExecGroups) > 0 {
		found := false
		for _, g := range job.ExecGroups {
			if g.ID == m.GroupID {
				found = true
				break
			}
		}
		if !found {
			return nil
		}
	}
	hasModelReq, hasHostnameReq := false, false
	for _, r := range reqs {
		switch r.Type {
		case cds.RequirementModel:
			hasModelReq = true
		case cds.RequirementHostname:
			hasHostnameReq = true
		}
	}
	if m.IsDeprecated && !hasModelReq {
		return nil
	}
	for _, r := range reqs {
		switch r.Type {
		case cds.RequirementModel:
			name, _, _ := strings.Cut(r.Value, " ")
			if name != m.GroupPath() && name != m.Name {
				return nil
			}
		case cds.RequirementService, cds.RequirementMemory:
			return nil
		case cds.RequirementOSArch:
			if m.RegisteredOS != nil && m.RegisteredArch != nil && *m.RegisteredOS != "" && *m.RegisteredArch != "" &&
				r.Value != *m.RegisteredOS+"/"+*m.RegisteredArch {
				return nil
			}
		case cds.RequirementRegion:
			if r.Value != h.cfg.Provision.Region {
				return nil
			}
		case cds.RequirementBinary:
			if hasModelReq || hasHostnameReq {
				continue
			}
			found := false
			for _, c := range m.RegisteredCapabilities {
				if c.Value == r.Value || c.Name == r.Value {
					found = true
					break
				}
			}
			if !found {
				return nil
			}
		}
	}
	sm := newV1StarterModel(m)
	if !h.provider.CanSpawn(ctx, sm, sid, reqs) {
		return nil
	}
	return sm
}

// parseV2ModelRef splits an as-code model reference
// <projKey>/<vcs>/<repo...>/<model>[@<branch>] (§9.2).
func parseV2ModelRef(ref string) (projKey, vcs, repo, name, branch string, err error) {
	path, branch, _ := strings.Cut(ref, "@")
	if branch == "" {
		branch = "master"
	}
	segs := strings.Split(path, "/")
	if len(segs) < 4 {
		return "", "", "", "", "", fmt.Errorf("worker model reference %q: want <project>/<vcs>/<repository>/<model>[@<branch>]", ref)
	}
	return segs[0], segs[1], strings.Join(segs[2:len(segs)-1], "/"), segs[len(segs)-1], branch, nil
}

// v2ModelForV1Job resolves an as-code model for a v1 job (§9.2, §9.3): nil when it is not a
// vSphere model or the provider cannot spawn it.
func (h *Hatchery) v2ModelForV1Job(ctx context.Context, ref, sid string, reqs []cds.Requirement) (*WorkerStarterWorkerModel, error) {
	proj, vcs, repo, name, branch, err := parseV2ModelRef(ref)
	if err != nil {
		return nil, err
	}
	m, err := h.v2.V2WorkerModelGet(ctx, proj, vcs, repo, name, branch)
	if err != nil {
		return nil, fmt.Errorf("get worker model %q: %w", ref, err)
	}
	if m.Type != h.provider.ModelType() {
		return nil, nil
	}
	spec, err := m.VSphereSpec()
	if err != nil {
		return nil, err
	}
	pre, cmd, post := V2Commands(V1JobOnV2ModelOSArch)
	sm := &WorkerStarterWorkerModel{ModelV2: &m, VSphereSpec: spec, PreCmd: pre, Cmd: cmd, PostCmd: post}
	if !h.provider.CanSpawn(ctx, sm, sid, reqs) {
		return nil, nil
	}
	return sm, nil
}

// secretRef matches a template reference such as {{.secrets.vsphere_password}}.
var secretRef = regexp.MustCompile(`{{\s*\.([A-Za-z0-9_.\-]+)\s*}}`)

// interpolateSecrets is §9.4: for a v1 vSphere model, fetch the model secrets and replace
// their references in the model password. The password is not used afterwards (guest
// credentials come from the configuration), but a failure drops the job, as in the original.
func (h *Hatchery) interpolateSecrets(ctx context.Context, sm *WorkerStarterWorkerModel) error {
	m := sm.ModelV1
	if m == nil || m.Type != h.provider.ModelType() || len(strings.Split(m.Path(), "/")) >= 5 {
		return nil
	}
	secrets, err := h.v1.WorkerModelSecrets(ctx, m.Group.Name, m.Name)
	if err != nil {
		return fmt.Errorf("get secrets of worker model %s: %w", m.GroupPath(), err)
	}
	values := make(map[string]string, len(secrets))
	for _, s := range secrets {
		values[s.Name] = s.Value
	}
	m.ModelVirtualMachine.Password = secretRef.ReplaceAllStringFunc(m.ModelVirtualMachine.Password, func(ref string) string {
		if v, ok := values[secretRef.FindStringSubmatch(ref)[1]]; ok {
			return v
		}
		return ref
	})
	return nil
}
