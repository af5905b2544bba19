package hatchery

import (
	"context"
	"errors"
	"slices"
	"strings"

	"github.com/hatchery-vsphere/hatchery-vsphere/internal/cds"
)

// defaultMaxConcurrentRegistering replaces a maxConcurrentRegistering of 0 (§13.1).
const defaultMaxConcurrentRegistering = 2

// registrationPass is §13.1: for each v1 model that needs a registration, in priority
// order, book the model and push a registration spawn, while fewer than
// maxConcurrentRegistering registrations run and capacity allows.
//
// Deviation: the original compared the registering count with ">" and increased it only
// when a starter picked the request up, so one pass could start maxConcurrentRegistering+1
// registrations or more. Here the count is increased when the request is pushed and
// compared with ">=", so at most maxConcurrentRegistering run at once.
func (h *Hatchery) registrationPass(ctx context.Context) error {
	if h.v1 == nil {
		return nil
	}
	models := h.models.get()
	if len(models) == 0 {
		return errors.New("no model")
	}
	if ok, reason := h.accepting(ctx); !ok {
		h.log.Debug(ctx, "provider not accepting work (%s), no registration", reason)
		return nil
	}
	current, err := h.WorkerPool(ctx, cds.StatusRegistering)
	if err != nil {
		h.log.Error(ctx, "registration: %v", err)
		current = nil
	}
	priority := func(m cds.Model) int {
		p := 0
		if m.NeedRegistration {
			p += 2
		}
		if m.CheckRegistration {
			p++
		}
		return p
	}
	slices.SortStableFunc(models, func(a, b cds.Model) int {
		if pa, pb := priority(a), priority(b); pa != pb {
			return pb - pa
		}
		return strings.Compare(a.Name, b.Name)
	})
	h.nbRegisteringModels.Store(int64(len(current)) + h.registrationsInFlight.Load())
	maxReg := h.cfg.Provision.MaxConcurrentRegistering
	if maxReg == 0 {
		maxReg = defaultMaxConcurrentRegistering
	}

	for _, m := range models {
		if m.Type != h.provider.ModelType() {
			continue
		}
		mctx := context.WithValue(ctx, fieldModel, m.GroupPath())
		if !h.provider.NeedRegistration(mctx, &m) && !m.CheckRegistration {
			continue
		}
		sm := newV1StarterModel(m)
		if !h.provider.CanSpawn(mctx, sm, "0", nil) {
			continue
		}
		ok, err := h.provider.CanAllocateResources(mctx, sm, "0", nil)
		if err != nil {
			return err
		}
		if !ok {
			continue
		}
		if h.nbRegisteringModels.Load() >= int64(maxReg) {
			return nil
		}
		if err := h.checkCapacities(mctx); err != nil {
			h.logCapacity(mctx, err)
			return nil
		}
		if slices.ContainsFunc(current, func(w PoolWorker) bool { return strings.Contains(w.Name, m.Name) }) {
			continue
		}
		if m.NbSpawnErr > maxModelSpawnErrors {
			continue
		}
		if err := h.v1.WorkerModelBook(mctx, m.Group.Name, m.Name); err != nil {
			if cds.ErrorIs(err, cds.ErrIDWorkerModelAlreadyBooked) {
				h.log.Info(mctx, "worker model %s already booked for registration", m.GroupPath())
			} else {
				h.log.Warn(mctx, "book worker model %s: %v", m.GroupPath(), err)
			}
			continue
		}
		if err := h.interpolateSecrets(mctx, sm); err != nil {
			h.log.Error(mctx, "%v", err)
			continue
		}
		h.nbRegisteringModels.Add(1)
		h.registrationsInFlight.Add(1)
		if !h.pushSpawn(mctx, spawnRequest{jobID: "0", model: sm, registerOnly: true}) {
			h.registrationsInFlight.Add(-1)
			return nil
		}
	}
	return nil
}

// spawnRegistration is §12.2: start a register-only worker for a v1 model and report a
// failure on the model.
func (h *Hatchery) spawnRegistration(ctx context.Context, req spawnRequest) {
	defer h.registrationsInFlight.Add(-1)
	m := req.model.ModelV1
	ctx = context.WithValue(ctx, fieldModel, req.model.Name())
	// The original's check: strictly greater than the raw maxConcurrentProvisioning.
	if h.nbWorkerToStart.Load() > int64(h.cfg.Provision.MaxConcurrentProvisioning) {
		h.log.Debug(ctx, "too many workers starting, skipping registration")
		return
	}
	h.nbWorkerToStart.Add(1)
	defer h.nbWorkerToStart.Add(-1)

	if h.stopping() {
		h.log.Debug(ctx, "hatchery stopping, not starting the registration")
		return
	}
	workerName := GenerateWorkerName(PrefixRegister)
	ctx = context.WithValue(ctx, fieldWorker, workerName)
	report := func(err error) {
		h.log.Error(ctx, "registration of model %s: %v", req.model.Name(), err)
		// Reported even when the spawn was cancelled by a shutdown: the report is what
		// frees the model's registration booking on the API, and a restarted hatchery
		// could not register the model (nor serve its jobs) until that booking expired.
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), h.iv.CallDeadline)
		defer cancel()
		if err := h.ReportModelSpawnError(rctx, m.Group.Name, m.Name, "cannot spawn worker for register: "+err.Error()); err != nil {
			h.log.Error(ctx, "%v", err)
		}
	}
	token, err := h.workerToken(req, workerName, req.model.Name())
	if err != nil {
		report(err)
		return
	}
	args, err := h.spawnArguments(ctx, req, workerName, token, req.model.Name())
	if err == nil {
		err = h.provider.SpawnWorker(ctx, args)
	}
	if err != nil {
		report(err)
		return
	}
	h.log.Info(ctx, "registration worker %q started", workerName)
}
