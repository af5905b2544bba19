package simenv

import (
	"strconv"
	"sync"
	"time"

	"github.com/vmware/govmomi/simulator"
	"github.com/vmware/govmomi/vim25/mo"
	"github.com/vmware/govmomi/vim25/types"
)

// methodHooks keeps the fault and latency knobs and runs before every SOAP method the
// simulator dispatches (Registry.Handler). Faults and delays live here rather than in
// simulator.FaultInjectionRule and DelayConfig.MethodDelay because those are read by
// concurrent calls without synchronisation (a shared math/rand source, a plain map), which
// -race reports, and because a delay must be served before the call takes the serializer.
type methodHooks struct {
	mu     sync.Mutex
	faults map[string][]*faultRule
	delays map[string]time.Duration
	calls  map[string]int
	// armed is the fault the request being served answers with: decided (and counted)
	// once per client call at the HTTP layer, applied when the simulator dispatches it.
	armed *armedFault
	// delaying, when set (by tests), is told of each call about to wait for its delay.
	delaying func(method string)
}

type armedFault struct {
	method string
	fault  types.BaseMethodFault
}

type faultRule struct {
	fault types.BaseMethodFault
	left  int // <= 0: unlimited
}

func newMethodHooks() *methodHooks {
	return &methodHooks{
		faults: make(map[string][]*faultRule),
		delays: make(map[string]time.Duration),
		calls:  make(map[string]int),
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
	if h.delaying != nil && h.delays[method] > 0 {
		h.delaying(method)
	}
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

// arm makes the next dispatch of method answer with fault (nil: none). The serializer's
// mutex is held from arm to disarm, so no other call can take the fault.
func (h *methodHooks) arm(method string, fault types.BaseMethodFault) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.armed = nil
	if fault != nil {
		h.armed = &armedFault{method: method, fault: fault}
	}
}

func (h *methodHooks) disarm() {
	h.arm("", nil)
}

func (h *methodHooks) takeArmed(method string) types.BaseMethodFault {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.armed == nil || h.armed.method != method {
		return nil
	}
	f := h.armed.fault
	h.armed = nil
	return f
}

// handle is installed as the registry's Handler. Returning a nil reference keeps the
// simulator's own handler; a non-nil fault answers the call with it.
func (h *methodHooks) handle(ctx *simulator.Context, m *simulator.Method) (mo.Reference, types.BaseMethodFault) {
	if fault := h.takeArmed(m.Name); fault != nil {
		return nil, fault
	}
	switch req := m.Body.(type) {
	case *types.CloneVM_Task:
		if fault := unknownCloneNetwork(ctx, req); fault != nil {
			return nil, fault
		}
		carryCloneAnnotation(req)
	case *types.WaitForUpdatesEx:
		// The simulator must never block under the serializer: it computes the updates
		// available now, and Env.longPoll does the waiting.
		opts := types.WaitOptions{}
		if req.Options != nil {
			opts = *req.Options
		}
		opts.MaxWaitSeconds = new(int32)
		req.Options = &opts
	case *types.WaitForUpdates:
		// The deprecated form has no wait options: the simulator would block until a
		// change that cannot come while it holds the serializer. Nothing here uses it.
		if req.Version != "" {
			return nil, &types.NotSupported{}
		}
	}
	return nil, nil
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

// unknownCloneNetwork answers a clone whose spec backs a NIC with a network name the
// inventory does not have with the fault a vCenter gives, where the simulator's clone task
// would dereference the missing network and crash the process.
func unknownCloneNetwork(ctx *simulator.Context, req *types.CloneVM_Task) types.BaseMethodFault {
	var changes []types.BaseVirtualDeviceConfigSpec
	changes = append(changes, req.Spec.Location.DeviceChange...)
	if req.Spec.Config != nil {
		changes = append(changes, req.Spec.Config.DeviceChange...)
	}
	for _, c := range changes {
		dev := c.GetVirtualDeviceConfigSpec().Device
		if dev == nil {
			continue
		}
		b, ok := dev.GetVirtualDevice().Backing.(*types.VirtualEthernetCardNetworkBackingInfo)
		if !ok {
			continue
		}
		found := false
		for _, n := range ctx.Map.All("Network") {
			if e, ok := n.(mo.Entity); ok && e.Entity().Name == b.DeviceName {
				found = true
				break
			}
		}
		if !found {
			return &types.InvalidArgument{InvalidProperty: "spec.deviceChange.device.backing.deviceName=" + strconv.Quote(b.DeviceName)}
		}
	}
	return nil
}
