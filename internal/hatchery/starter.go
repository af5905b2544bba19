package hatchery

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/hatchery-vsphere/hatchery-vsphere/internal/cds"
	"github.com/hatchery-vsphere/hatchery-vsphere/internal/lifecycle"
)

// runStarter is one worker starter (§11.3): it takes spawn requests until ctx ends.
func (h *Hatchery) runStarter(ctx context.Context) error {
	return h.starterLoop(ctx.Done(), ctx)
}

// starterLoop takes spawn requests until stop is closed and spawns with ctx, which may
// outlive stop: a spawn under way when the hatchery starts draining finishes or rolls back
// on its own deadline. A request taken after stop is dropped: nothing was booked for it yet.
func (h *Hatchery) starterLoop(stop <-chan struct{}, ctx context.Context) error {
	for {
		select {
		case <-stop:
			return nil
		case <-ctx.Done():
			return nil
		case req := <-h.starterCh:
			h.metrics.inc(ctx, mChanStarterPop)
			if isClosed(stop) {
				h.dropRequest(req)
				return nil
			}
			if req.registerOnly {
				h.spawnRegistration(ctx, req)
			} else {
				h.spawnForJob(ctx, req)
			}
		}
	}
}

// dropRequest forgets a spawn request that will not be served.
func (h *Hatchery) dropRequest(req spawnRequest) {
	if req.registerOnly {
		h.registrationsInFlight.Add(-1)
		return
	}
	h.pending.remove(req.jobID)
	h.spawning.remove(req.workerName)
}

func isClosed(ch <-chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}

// stopping tells whether Run is draining: nothing new may be booked, taken or spawned.
func (h *Hatchery) stopping() bool { return isClosed(h.stopCh) }

// tryStartSlot increments nbWorkerToStart unless it has reached limit. Check and increment
// are one step, so concurrent starters cannot overshoot the limit together.
func (h *Hatchery) tryStartSlot(limit int64) bool {
	for {
		n := h.nbWorkerToStart.Load()
		if n >= limit {
			return false
		}
		if h.nbWorkerToStart.CompareAndSwap(n, n+1) {
			return true
		}
	}
}

// spawnForJob is §12.1: book (v1) or take (v2) the job, sign the worker token, render the
// worker configuration and launch script, ask the provider to spawn, and on failure tell
// the user and release the job. The job leaves the pending set when this returns.
func (h *Hatchery) spawnForJob(ctx context.Context, req spawnRequest) {
	defer h.pending.remove(req.jobID)
	if req.workerName == "" {
		req.workerName = GenerateWorkerName("")
	}
	// Once this returns the worker's VM is listed (a successful spawn) or gone.
	defer h.spawning.remove(req.workerName)
	ctx = context.WithValue(ctx, fieldJobID, req.jobID)
	if !h.tryStartSlot(int64(h.provLimit)) {
		h.log.Debug(ctx, "too many workers starting, giving up job %s", req.jobID)
		return
	}
	defer h.nbWorkerToStart.Add(-1)
	h.metrics.inc(ctx, mSpawningWorkers)

	// The last gates before the job is booked: the hatchery is not stopping and the
	// provider accepts work (Gate).
	if h.stopping() {
		h.log.Debug(ctx, "hatchery stopping, not booking job %s", req.jobID)
		return
	}
	if ok, reason := h.accepting(ctx); !ok {
		h.log.Info(ctx, "provider not accepting work (%s), not booking job %s", reason, req.jobID)
		return
	}

	isV2 := cds.IsUUID(req.jobID)
	workerName := req.workerName
	modelName := req.model.Name()
	ctx = context.WithValue(context.WithValue(ctx, fieldWorker, workerName), fieldModel, modelName)
	region := req.region

	if isV2 {
		if h.v2 == nil {
			return
		}
		rj, err := h.v2.V2QueueJobTake(ctx, req.region, req.jobID)
		if err != nil {
			h.log.Warn(ctx, "take v2 job %s: %v", req.jobID, err)
			return
		}
		if rj.Region != "" {
			region = rj.Region
		}
		h.SendJobInfo(ctx, region, req.jobID, cds.V2InfoLevelInfo,
			fmt.Sprintf("Hatchery %q is starting the worker %q from model %q", h.cfg.Name, workerName, modelName))
	} else {
		if h.v1 == nil || !h.v1.SignedIn() {
			return
		}
		if _, err := h.v1.QueueJobBook(ctx, req.v1JobID); err != nil {
			if cds.ErrorIs(err, cds.ErrIDJobAlreadyBooked) {
				h.log.Info(ctx, "v1 job %d already booked", req.v1JobID)
			} else {
				h.log.Warn(ctx, "book v1 job %d: %v", req.v1JobID, err)
			}
			return
		}
		h.sendSpawnInfo(ctx, req.v1JobID, cds.MsgSpawnInfoHatcheryStarts, h.cfg.Name, workerName, modelName)
	}
	bookedAt := h.now()
	h.booked.add(req.jobID, region)

	token, err := h.workerToken(req, workerName, modelName)
	if err != nil {
		h.log.Error(ctx, "sign worker token: %v", err)
		h.metrics.inc(ctx, mSpawningErrors)
		if isV2 {
			h.SendJobInfo(ctx, region, req.jobID, cds.V2InfoLevelError, "unable to create a token for the worker. Please contact an administrator")
		} else if m := req.model.ModelV1; m != nil {
			if err := h.ReportModelSpawnError(ctx, m.Group.Name, m.Name, "cannot spawn worker for register: "+err.Error()); err != nil {
				h.log.Error(ctx, "%v", err)
			}
		}
		h.releaseJob(ctx, req, region)
		return
	}

	args, err := h.spawnArguments(ctx, req, workerName, token, modelName)
	if err == nil {
		err = h.provider.SpawnWorker(ctx, args)
	}
	if err != nil {
		h.metrics.inc(ctx, mSpawningErrors)
		h.log.Error(ctx, "spawn worker %q for job %s: %v", workerName, req.jobID, err)
		// The user is told even when the spawn was cancelled by a shutdown.
		ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), h.iv.CallDeadline)
		defer cancel()
		d := h.now().Sub(bookedAt).Round(time.Second)
		e := userErrorText(err)
		if isV2 {
			h.SendJobInfo(ctx, region, req.jobID, cds.V2InfoLevelError,
				fmt.Sprintf("Error while Hatchery %s spawns worker %s with model %s after %s, err: %s", h.cfg.Name, workerName, modelName, d, e))
		} else {
			h.sendSpawnInfo(ctx, req.v1JobID, cds.MsgSpawnInfoHatcheryErrorSpawn, h.cfg.Name, modelName, d.String(), e)
		}
		h.releaseJob(ctx, req, region)
		return
	}
	h.booked.remove(req.jobID)
	h.metrics.inc(ctx, mSpawnedWorkers)
	h.log.Info(ctx, "worker %q started for job %s", workerName, req.jobID)
	if !req.seen.IsZero() {
		lifecycle.RecordJobToLaunch(ctx, h.now().Sub(req.seen))
	}
	if !isV2 && req.deprecated {
		h.sendSpawnInfo(ctx, req.v1JobID, cds.MsgSpawnInfoDeprecatedModel, modelName)
	}
}

// releaseJob gives a booked (v1) or taken (v2) job back to the queue. It runs even when the
// hatchery is stopping, within its own deadline, so that a job is never left booked.
func (h *Hatchery) releaseJob(ctx context.Context, req spawnRequest, region string) {
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), h.iv.CallDeadline)
	defer cancel()
	if err := h.release(rctx, req.jobID, region); err != nil {
		h.log.Error(ctx, "%v", err)
	}
}

// release sends DELETE book (v1 job ID) or DELETE take (v2 UUID) and forgets the booking.
func (h *Hatchery) release(ctx context.Context, jobID, region string) error {
	var err error
	if cds.IsUUID(jobID) {
		if h.v2 == nil {
			return fmt.Errorf("release v2 job %s: no v2 client", jobID)
		}
		err = h.v2.V2QueueJobRelease(ctx, region, jobID)
	} else {
		if h.v1 == nil {
			return fmt.Errorf("release v1 job %s: no v1 client", jobID)
		}
		id, perr := strconv.ParseInt(jobID, 10, 64)
		if perr != nil {
			return fmt.Errorf("release job %q: not a v1 job ID nor a v2 UUID", jobID)
		}
		err = h.v1.QueueJobRelease(ctx, id)
	}
	if err != nil {
		return fmt.Errorf("release job %s: %w", jobID, err)
	}
	h.booked.remove(jobID)
	return nil
}

// sendSpawnInfo posts one v1 spawn info; errors are only logged.
func (h *Hatchery) sendSpawnInfo(ctx context.Context, jobID int64, msgID string, args ...string) {
	info := cds.SpawnInfo{RemoteTime: h.now(), Message: cds.SpawnMsg{ID: msgID, Args: args}}
	if err := h.v1.QueueJobSendSpawnInfo(ctx, jobID, []cds.SpawnInfo{info}); err != nil {
		h.log.Warn(ctx, "send spawn info %s to v1 job %d: %v", msgID, jobID, err)
	}
}

// userErrorText is the error text shown to users in spawn infos: the API error message, or
// "internal server error" for any other error (as the original, quirk Q15; the real error
// is in the hatchery log).
func userErrorText(err error) string {
	var apiErr *cds.APIError
	if errors.As(err, &apiErr) && apiErr.Message != "" {
		return apiErr.Message
	}
	return "internal server error"
}

// workerToken signs the worker JWT (§15): v2 format for a UUID job, v1 otherwise (also for
// a v1 job on a v2 model, whose model object is empty, quirk Q18).
func (h *Hatchery) workerToken(req spawnRequest, workerName, modelName string) (string, error) {
	if cds.IsUUID(req.jobID) {
		return SignWorkerTokenV2(h.key, h.now(), h.cfg.Name, workerName, modelName, req.jobID)
	}
	var modelID int64
	var v1Name string
	if m := req.model.ModelV1; m != nil {
		modelID, v1Name = m.ID, m.Name
	}
	return SignWorkerTokenV1(h.key, h.now(), h.cfg.Name, workerName, modelID, v1Name, req.v1JobID, req.registerOnly)
}

// spawnArguments builds the provider's arguments: the worker configuration (CDS_CONFIG)
// and the rendered launch script are ready before the provider is called.
func (h *Hatchery) spawnArguments(ctx context.Context, req spawnRequest, workerName, token, modelName string) (SpawnArguments, error) {
	cdn := h.cdnInUse()
	in := WorkerConfigInput{
		Common:          &h.cfg,
		CDNURL:          cdn.HTTPURL,
		CDNTCPURL:       cdn.TCPURL,
		CDNTCPEnableTLS: cdn.TCPUseTLS,
		WorkerName:      workerName,
		Token:           token,
		Model:           modelName,
		JobID:           req.v1JobID,
	}
	if cds.IsUUID(req.jobID) {
		in.RunJobID = req.jobID
		in.V2Region = h.region2()
	}
	wc, warnings := BuildWorkerConfig(in)
	for _, w := range warnings {
		h.log.Warn(ctx, "%s", w)
	}
	b64, err := wc.Encode()
	if err != nil {
		return SpawnArguments{}, err
	}
	script := AssembleScript(req.model.PreCmd, req.model.Cmd, req.model.PostCmd, req.registerOnly)
	rendered, err := RenderScript(script, NewScriptData(wc.APIEndpoint, b64))
	if err != nil {
		return SpawnArguments{}, fmt.Errorf("launch script of model %q: %w", modelName, err)
	}
	return SpawnArguments{
		WorkerName:   workerName,
		WorkerToken:  token,
		Model:        req.model,
		JobID:        req.jobID,
		RegisterOnly: req.registerOnly,
		Requirements: req.requirements,
		Region:       req.region,
		LaunchScript: rendered,
		Env:          GuestEnv(b64, wc.InjectEnvVars),
	}, nil
}
