package hatchery

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"

	"github.com/hatchery-vsphere/hatchery-vsphere/internal/cds"
)

// capacityStatuses are the pool statuses that count against maxWorker (§11.2).
var capacityStatuses = []string{cds.StatusChecking, cds.StatusWaiting, cds.StatusBuilding, cds.StatusPending, cds.StatusRegistering}

// registeredWorkers lists the workers the API knows: v1 then v2 (§11.1 step 1).
func (h *Hatchery) registeredWorkers(ctx context.Context) ([]PoolWorker, error) {
	var out []PoolWorker
	if h.v1 != nil {
		ws, err := h.v1.WorkerList(ctx)
		if err != nil {
			return nil, fmt.Errorf("list v1 workers: %w", err)
		}
		for _, w := range ws {
			out = append(out, PoolWorker{ID: w.ID, Name: w.Name, Status: w.Status, V1: true})
		}
	}
	if h.v2 != nil {
		ws, err := h.v2.V2WorkerList(ctx)
		if err != nil {
			return nil, fmt.Errorf("list v2 workers: %w", err)
		}
		for _, w := range ws {
			out = append(out, PoolWorker{ID: w.ID, Name: w.Name, Status: w.Status})
		}
	}
	return out, nil
}

// WorkerPool computes the pool of §11.1: the registered workers (a registered worker the
// provider did not start, and not Disabled yet, is inconsistent: a v1 one is disabled on
// the API, a v2 one only logged) and the started VMs not registered yet, as Pending or
// Registering entries. With statuses, only the entries in one of them are returned.
func (h *Hatchery) WorkerPool(ctx context.Context, statuses ...string) ([]PoolWorker, error) {
	ctx, cancel := context.WithTimeout(ctx, h.iv.PoolDeadline)
	defer cancel()
	registered, err := h.registeredWorkers(ctx)
	if err != nil {
		return nil, fmt.Errorf("worker pool: %w", err)
	}
	started, err := h.provider.WorkersStarted(ctx)
	if err != nil {
		return nil, fmt.Errorf("worker pool: workers started: %w", err)
	}
	started = slices.Clone(started)

	pool := make([]PoolWorker, 0, len(registered)+len(started))
	for _, w := range registered {
		if i := slices.Index(started, w.Name); i >= 0 {
			started = slices.Delete(started, i, i+1)
		} else if w.Status != cds.StatusDisabled {
			wctx := context.WithValue(ctx, fieldWorker, w.Name)
			if w.V1 {
				h.log.Warn(wctx, "worker %q is registered but not started by this hatchery: disabling it", w.Name)
				if err := h.v1.WorkerDisable(ctx, w.ID); err != nil {
					h.log.Error(wctx, "disable inconsistent worker %q: %v", w.Name, err)
				}
				w.Status = cds.StatusDisabled
			} else {
				h.log.Warn(wctx, "v2 worker %q is registered but not started by this hatchery", w.Name)
			}
		}
		pool = append(pool, w)
	}
	for _, name := range started {
		status := cds.StatusPending
		if strings.HasPrefix(name, PrefixRegister+"-") {
			status = cds.StatusRegistering
		}
		pool = append(pool, PoolWorker{Name: name, Status: status})
	}
	h.metrics.poolGauges(ctx, pool)

	if len(statuses) == 0 {
		return pool, nil
	}
	return slices.DeleteFunc(pool, func(w PoolWorker) bool { return !slices.Contains(statuses, w.Status) }), nil
}

// errNoCapacity explains why checkCapacities refused; only logged at debug level.
var errNoCapacity = errors.New("no capacity")

// checkCapacities is the count gate of §11.2: it fails when the pool cannot be built, when
// maxWorker (> 0) workers exist, when P workers are Pending, or when P spawns are in
// progress (P = maxConcurrentProvisioning, < 1 → 10).
func (h *Hatchery) checkCapacities(ctx context.Context) error {
	pool, err := h.WorkerPool(ctx, capacityStatuses...)
	if err != nil {
		return err
	}
	if mw := h.cfg.Provision.MaxWorker; mw > 0 {
		// The jobs admitted whose VM is not listed yet count too: the original counted
		// only the pool, and a burst admitted more workers than maxWorker while their
		// clones were running.
		names := make(map[string]struct{}, len(pool))
		for _, w := range pool {
			names[w.Name] = struct{}{}
		}
		admitted := h.spawning.countNotIn(names)
		if n := len(pool) + admitted; n >= mw {
			return fmt.Errorf("%w: %d workers (%d of them admitted, VM not listed yet), maxWorker %d", errNoCapacity, n, admitted, mw)
		}
	}
	nbPending := 0
	for _, w := range pool {
		if w.Status == cds.StatusPending {
			nbPending++
		}
	}
	if nbPending >= h.provLimit {
		return fmt.Errorf("%w: %d workers pending, maxConcurrentProvisioning %d", errNoCapacity, nbPending, h.provLimit)
	}
	if n := h.nbWorkerToStart.Load(); n >= int64(h.provLimit) {
		return fmt.Errorf("%w: %d workers starting, maxConcurrentProvisioning %d", errNoCapacity, n, h.provLimit)
	}
	return nil
}

// spawningSet holds the names of the workers admitted by the main loop whose spawn has not
// returned yet: until their VM is listed, the pool does not count them.
type spawningSet struct {
	mu    sync.Mutex
	names map[string]struct{}
}

func newSpawningSet() *spawningSet { return &spawningSet{names: map[string]struct{}{}} }

func (s *spawningSet) add(name string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.names[name] = struct{}{}
}

func (s *spawningSet) remove(name string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.names, name)
}

// countNotIn counts the admitted workers absent from listed.
func (s *spawningSet) countNotIn(listed map[string]struct{}) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for name := range s.names {
		if _, ok := listed[name]; !ok {
			n++
		}
	}
	return n
}
