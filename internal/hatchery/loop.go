package hatchery

import (
	"context"
	"slices"
	"sync"
	"time"

	"github.com/hatchery-vsphere/hatchery-vsphere/internal/cds"
)

// modelCache is the last list of enabled v1 worker models (§8).
type modelCache struct {
	mu     sync.Mutex
	models []cds.Model
}

func (c *modelCache) get() []cds.Model {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.models)
}

func (c *modelCache) set(models []cds.Model) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.models = slices.Clone(models)
}

// mainLoop is the single goroutine of §8: it refreshes the model cache, handles discovered
// jobs one at a time and runs the registration passes. Job handling is synchronous here;
// only the spawn itself runs in the worker starters.
func (h *Hatchery) mainLoop(ctx context.Context) error {
	var modelTicks, registerTicks <-chan time.Time
	if h.v1 != nil {
		t, stop := h.tick("model-refresh", h.iv.ModelRefresh)
		defer stop()
		modelTicks = t
		// registerFrequency 0 disables registration (kept from the original, §8).
		if f := h.cfg.Provision.RegisterFrequency; f > 0 {
			t, stop := h.tick("register", time.Duration(f)*time.Second)
			defer stop()
			registerTicks = t
		}
	}
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-modelTicks:
			h.refreshModels(ctx)
		case id := <-h.chanV2:
			h.handleV2Job(ctx, id)
		case id := <-h.chanV1:
			h.handleV1Job(ctx, id)
		case <-registerTicks:
			if err := h.registrationPass(ctx); err != nil {
				h.log.Error(ctx, "worker model registration: %v", err)
			}
		}
	}
}

// refreshModels replaces the cached model list; on error the cache is emptied until the
// next success (quirk Q26, kept).
func (h *Hatchery) refreshModels(ctx context.Context) {
	if _, err := h.RefreshWorkerModels(ctx); err != nil {
		h.models.set(nil)
		h.log.Error(ctx, "%v", err)
	}
}
