package simenv

import (
	"sync"
	"time"

	"github.com/vmware/govmomi/simulator"
	"github.com/vmware/govmomi/vim25/mo"
	"github.com/vmware/govmomi/vim25/types"
)

// methodHooks runs before every SOAP method the simulator dispatches (Registry.Handler).
// Faults and delays live here rather than in simulator.FaultInjectionRule and
// DelayConfig.MethodDelay because those are read by concurrent calls without
// synchronisation (a shared math/rand source, a plain map), which -race reports.
type methodHooks struct {
	closing <-chan struct{}

	mu     sync.Mutex
	faults map[string][]*faultRule
	delays map[string]time.Duration
	calls  map[string]int
}

type faultRule struct {
	fault types.BaseMethodFault
	left  int // <= 0: unlimited
}

func newMethodHooks(closing <-chan struct{}) *methodHooks {
	return &methodHooks{
		closing: closing,
		faults:  make(map[string][]*faultRule),
		delays:  make(map[string]time.Duration),
		calls:   make(map[string]int),
	}
}

func (h *methodHooks) addFault(method string, fault types.BaseMethodFault, count int) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.faults[method] = append(h.faults[method], &faultRule{fault: fault, left: count})
}

func (h *methodHooks) clearFaults() {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.faults = make(map[string][]*faultRule)
}

func (h *methodHooks) setDelay(method string, d time.Duration) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if d <= 0 {
		delete(h.delays, method)
		return
	}
	h.delays[method] = d
}

func (h *methodHooks) callCount(method string) int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.calls[method]
}

// next records a client call of method and returns its delay and the fault to answer
// with (nil for none), consuming one use of the oldest matching fault rule.
func (h *methodHooks) next(method string) (time.Duration, types.BaseMethodFault) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.calls[method]++
	rules := h.faults[method]
	if len(rules) == 0 {
		return h.delays[method], nil
	}
	r := rules[0]
	if r.left > 0 {
		r.left--
		if r.left == 0 {
			h.faults[method] = rules[1:]
		}
	}
	return h.delays[method], r.fault
}

// handle is installed as the registry's Handler. Returning a nil reference keeps the
// simulator's own handler; a non-nil fault answers the call with it.
func (h *methodHooks) handle(ctx *simulator.Context, m *simulator.Method) (mo.Reference, types.BaseMethodFault) {
	if !isInternal(ctx) {
		delay, fault := h.next(m.Name)
		if delay > 0 {
			t := time.NewTimer(delay)
			select {
			case <-t.C:
			case <-h.closing:
				t.Stop()
			}
		}
		if fault != nil {
			return nil, fault
		}
	}
	if m.Name == "CloneVM_Task" {
		if req, ok := m.Body.(*types.CloneVM_Task); ok {
			carryCloneAnnotation(req)
		}
	}
	return nil, nil
}

func isInternal(ctx *simulator.Context) bool {
	return ctx != nil && ctx.Context != nil && ctx.Context.Value(internalKey{}) != nil
}

// carryCloneAnnotation makes the clone keep the annotation of its spec, which the
// simulator's CloneVM_Task drops. The clone's ExtraConfig is handed to CreateVM, which
// applies "SET.<property path>" keys as property changes without storing them.
func carryCloneAnnotation(req *types.CloneVM_Task) {
	cfg := req.Spec.Config
	if cfg == nil || cfg.Annotation == "" {
		return
	}
	extra := make([]types.BaseOptionValue, 0, len(cfg.ExtraConfig)+2)
	extra = append(extra, cfg.ExtraConfig...)
	extra = append(extra,
		&types.OptionValue{Key: "SET.config.annotation", Value: cfg.Annotation},
		&types.OptionValue{Key: "SET.summary.config.annotation", Value: cfg.Annotation},
	)
	cfg.ExtraConfig = extra
}
