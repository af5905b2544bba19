package bench

import (
	"cmp"
	"fmt"
	"math"
	"slices"
	"strings"
	"time"
)

// Report is everything a bench run measured.
type Report struct {
	Machine   Machine
	Started   time.Time
	Duration  time.Duration
	Quick     bool
	Params    Params
	Scenarios []string

	// Decision has one entry per inventory size measured.
	Decision []DecisionAtSize
	Burst    *BurstResult
	// Idle has every idle window counted: the idle scenario's, the shorter ones before
	// each decision job, and the child daemon's of the memory scenario.
	Idle   []IdleWindow
	Memory *MemoryResult
	// Errors are the scenarios (or steps) that failed, with why.
	Errors []ScenarioError
	// GoBench is the output of the Go benchmarks of the hot functions, if given.
	GoBench string
}

// ScenarioError is a failed scenario or step.
type ScenarioError struct {
	Scenario string
	Err      string
}

func (r *Report) addError(scenario string, err error) {
	r.Errors = append(r.Errors, ScenarioError{Scenario: scenario, Err: err.Error()})
}

// DecisionAtSize is the cost of scheduling decisions with VMs unrelated VMs in vCenter.
type DecisionAtSize struct {
	VMs int
	// Decisions direct decisions (CanSpawn + CanAllocateResources for one v2 job) were
	// averaged at this size, for each client stack.
	Decisions int
	// Direct lists the VMs from vCenter at each decision.
	Direct DecisionFigures
	// Cached answers the narrow listings from the live inventory cache (vsphere.Inventory
	// behind vsphere.NewCachedClient); nil if not measured. CacheSync* is the cache's
	// first full sync, paid once at start.
	Cached           *DecisionFigures
	CacheSync        time.Duration
	CacheSyncTraffic Traffic
	// FullListing* is one listing of name,summary,guest,config, what the original did
	// for every decision.
	FullListingWall  time.Duration
	FullListingCalls int
	FullListingBytes int64
	FullListingVMs   int
	// Job is one job through the running daemon, nil if not measured.
	Job *JobCost
}

// DecisionFigures are the mean cost of one decision on one client stack.
type DecisionFigures struct {
	CallsPerDecision float64
	BytesPerDecision float64
	Wall             time.Duration
	Methods          map[string]float64
	// FeedCalls are the inventory cache's long polls (WaitForUpdatesEx) answered during
	// the decisions, left out of the figures above: the feed runs whether or not
	// decisions are made, and is counted in the idle cost.
	FeedCalls int
}

// Best is the cheapest stack measured: the cached one when it was, with its name.
func (d DecisionAtSize) Best() (DecisionFigures, string) {
	if d.Cached != nil {
		return *d.Cached, "with the live inventory cache"
	}
	return d.Direct, "listing from vCenter"
}

// JobCost is one job through the daemon, from queued to worker launched in its VM.
type JobCost struct {
	Latency time.Duration
	Traffic Traffic
	// Idle is the same daemon's idle window just before, which the net figures subtract.
	Idle IdleWindow
}

// NetCalls are the job's round trips less the idle rate over the same time.
func (j JobCost) NetCalls() float64 {
	return math.Max(0, float64(j.Traffic.Calls)-j.Idle.perSecond(float64(j.Idle.Traffic.Calls))*j.Latency.Seconds())
}

// NetBytes are the job's response bytes less the idle rate over the same time.
func (j JobCost) NetBytes() float64 {
	return math.Max(0, float64(j.Traffic.Bytes)-j.Idle.perSecond(float64(j.Idle.Traffic.Bytes))*j.Latency.Seconds())
}

// IdleWindow is the vCenter traffic of a daemon with no job over Window.
type IdleWindow struct {
	VMs     int
	Window  time.Duration
	Traffic Traffic
	// Scenario marks the idle scenario's own window; Child the memory scenario's daemon
	// (a separate process).
	Scenario bool
	Child    bool
}

func (w IdleWindow) perSecond(v float64) float64 {
	if w.Window <= 0 {
		return 0
	}
	return v / w.Window.Seconds()
}

// minJudgedWindow is the shortest idle window the idle target is judged on: the daemon's
// periodic vCenter work comes every 30 s (metrics) to 2 min (cleanup), which a shorter
// window may miss entirely.
const minJudgedWindow = time.Minute

// Judged tells whether the idle target is judged on this window: the idle scenario's own,
// or any window of a minute or more.
func (w IdleWindow) Judged() bool { return w.Scenario || w.Window >= minJudgedWindow }

// CallsPerMinute is the idle round-trip rate.
func (w IdleWindow) CallsPerMinute() float64 { return 60 * w.perSecond(float64(w.Traffic.Calls)) }

// BytesPerMinute is the idle response-byte rate.
func (w IdleWindow) BytesPerMinute() float64 { return 60 * w.perSecond(float64(w.Traffic.Bytes)) }

// BurstResult is the burst scenario.
type BurstResult struct {
	Jobs, Concurrency, Provisioning int
	CloneDelay, Poll                time.Duration
	// Single is one job alone, queued → worker launched; Total is the burst, first job
	// queued → last worker launched (or → the end of the wait, when Launched < Jobs).
	Single, Total time.Duration
	Launched      int
	Traffic       Traffic
	// SimBusy is how long the simulated vCenter (which serves one call at a time) was busy
	// during the burst; SimLongPolls the part of it in vcsim's WaitForUpdatesEx.
	SimBusy, SimLongPolls time.Duration
	// SimClones is the part of SimBusy spent completing the clones (vcsim creates each VM
	// and its files, one clone at a time), over SimCloneCalls clones.
	SimClones     time.Duration
	SimCloneCalls int
}

// SimPerClone is the simulated vCenter's time to complete one clone.
func (b BurstResult) SimPerClone() time.Duration {
	if b.SimCloneCalls == 0 {
		return 0
	}
	return b.SimClones / time.Duration(b.SimCloneCalls)
}

// SimLoad is the fraction of the burst the simulated vCenter was busy.
func (b BurstResult) SimLoad() float64 {
	if b.Total <= 0 {
		return 0
	}
	return b.SimBusy.Seconds() / b.Total.Seconds()
}

// LaunchTime is what a worker takes besides its clone: the single job's time less the
// clone delay.
func (b BurstResult) LaunchTime() time.Duration { return max(0, b.Single-b.CloneDelay) }

// Limit is the physical limit: ceil(jobs/concurrency) clone delays plus the launch time.
func (b BurstResult) Limit() time.Duration {
	rounds := (b.Jobs + b.Concurrency - 1) / max(b.Concurrency, 1)
	return time.Duration(rounds)*b.CloneDelay + b.LaunchTime()
}

// Ratio is Total over Limit.
func (b BurstResult) Ratio() float64 {
	if b.Limit() <= 0 {
		return 0
	}
	return b.Total.Seconds() / b.Limit().Seconds()
}

// ClonesInFlight is the mean number of clone calls in flight during the burst.
func (b BurstResult) ClonesInFlight() float64 {
	if b.Total <= 0 {
		return 0
	}
	return float64(b.Traffic.ByMethod["CloneVM_Task"]) * b.CloneDelay.Seconds() / b.Total.Seconds()
}

// MemoryResult is the child daemon's resident memory.
type MemoryResult struct {
	// Jobs were queued, Launched of them had their worker launched when RSS was read.
	VMs, Jobs, Launched int
	// PeakRSS is VmHWM, RSS is VmRSS at the end, in bytes.
	PeakRSS, RSS int64
	Lifetime     time.Duration
}

// Status says whether a target is met.
type Status int

// Target statuses.
const (
	NotMeasured Status = iota
	Met
	NotMet
)

func (s Status) String() string {
	switch s {
	case Met:
		return "met"
	case NotMet:
		return "not met"
	}
	return "not measured"
}

// Target is one target of the scale issue and what the run says of it.
type Target struct {
	Name   string
	Goal   string
	Figure string
	Status Status
	Why    string
}

// Target thresholds of the scale issue.
const (
	TargetCallsPerDecision = 1.0
	TargetListingSpeedup   = 20.0
	TargetBurstRatio       = 1.3
	// simSaturated is the share of a burst above which the simulated vCenter, not the
	// hatchery, is what the burst waits for.
	simSaturated        = 0.6
	TargetIdlePerMinute = 10.0
	TargetPeakRSSBytes  = 200 << 20
)

// largestDecision is the decision measured at the largest inventory (nil if none).
func (r *Report) largestDecision() *DecisionAtSize {
	var out *DecisionAtSize
	for i := range r.Decision {
		if out == nil || r.Decision[i].VMs > out.VMs {
			out = &r.Decision[i]
		}
	}
	return out
}

// Targets judges the scale issue's targets on the figures.
func (r *Report) Targets() []Target {
	var out []Target

	t := Target{Name: "Round trips per decision", Goal: fmt.Sprintf("at most %g vCenter round trip per job decision on average, at the largest inventory", TargetCallsPerDecision)}
	if d := r.largestDecision(); d != nil {
		best, stack := d.Best()
		t.Figure = fmt.Sprintf("%s per decision at %s VMs %s (%s); %s when listing from vCenter", num(best.CallsPerDecision), count(d.VMs), stack, methods(best.Methods), num(d.Direct.CallsPerDecision))
		t.Status = judge(best.CallsPerDecision <= TargetCallsPerDecision)
		if t.Status == NotMet {
			t.Why = fmt.Sprintf("CanSpawn and CanAllocateResources still ask vCenter on each decision (%s per decision, counted on the decision's own client).", methods(best.Methods))
		}
	} else {
		t.Why = r.missing(ScenarioDecision)
	}
	out = append(out, t)

	t = Target{Name: "Decision vs full listing", Goal: fmt.Sprintf("a decision at least %g× cheaper in vCenter wall time than one name,summary,guest,config listing, at the largest inventory", TargetListingSpeedup)}
	if d := r.largestDecision(); d != nil {
		best, stack := d.Best()
		speedup := math.Inf(1)
		if best.Wall > 0 {
			speedup = d.FullListingWall.Seconds() / best.Wall.Seconds()
		}
		t.Figure = fmt.Sprintf("decision %s %s vs full listing %s at %s VMs: %s× cheaper (listing from vCenter: %s)", dur(best.Wall), stack, dur(d.FullListingWall), count(d.VMs), num(speedup), dur(d.Direct.Wall))
		t.Status = judge(speedup >= TargetListingSpeedup)
		if t.Status == NotMet {
			t.Why = fmt.Sprintf("the decision waits on %s vCenter round trips receiving %s, whose cost grows with the inventory like the full listing's.", num(best.CallsPerDecision), bytesText(best.BytesPerDecision))
		}
	} else {
		t.Why = r.missing(ScenarioDecision)
	}
	out = append(out, t)

	t = Target{Name: "Burst", Goal: fmt.Sprintf("all workers launched within %g× the physical limit ceil(jobs/clone concurrency) × clone latency + launch time", TargetBurstRatio)}
	if b := r.Burst; b != nil && b.Total > 0 {
		t.Figure = fmt.Sprintf("%s jobs in %s vs limit %s (ceil(%d/%d) × %s + launch %s): %s×", count(b.Jobs), dur(b.Total), dur(b.Limit()), b.Jobs, b.Concurrency, dur(b.CloneDelay), dur(b.LaunchTime()), num(b.Ratio()))
		t.Status = judge(b.Ratio() <= TargetBurstRatio && b.Launched >= b.Jobs)
		if b.Launched < b.Jobs {
			t.Figure = fmt.Sprintf("only %d of %s workers launched after %s (limit %s)", b.Launched, count(b.Jobs), dur(b.Total), dur(b.Limit()))
			t.Why = fmt.Sprintf("the wait ended first; on average %s clone calls were in flight out of %d allowed.", num(b.ClonesInFlight()), b.Concurrency)
		} else if t.Status == NotMet && b.SimLoad() >= simSaturated {
			t.Why = fmt.Sprintf("the simulated vCenter, which serves one call at a time, was busy %s%% of the burst (%s, of which %s in vcsim's WaitForUpdatesEx: at least 20 ms per call with the simulator held, and a re-evaluation of the filter for every change of any object); the clones wait for it, not for the hatchery (%s vCenter round trips per job, %s clone calls in flight on average out of %d).",
				num(100*b.SimLoad()), dur(b.SimBusy), dur(b.SimLongPolls), num(float64(b.Traffic.Calls)/float64(max(b.Jobs, 1))), num(b.ClonesInFlight()), b.Concurrency)
		} else if t.Status == NotMet && b.SimPerClone() > 0 {
			wave := time.Duration(b.Concurrency) * b.SimPerClone()
			t.Why = fmt.Sprintf("the simulated vCenter completes clones one at a time, %s each (it creates the VM and its files): the %d clone calls of a wave end their %s delay together and are completed over about %s, so a wave takes about %s rather than %s, and the next wave starts as late. The simulator was busy %s%% of the burst; the hatchery made %s vCenter round trips per job and kept %s clone calls in flight on average out of %d.",
				dur(b.SimPerClone()), b.Concurrency, dur(b.CloneDelay), dur(wave), dur(b.CloneDelay+wave), dur(b.CloneDelay), num(100*b.SimLoad()), num(float64(b.Traffic.Calls)/float64(max(b.Jobs, 1))), num(b.ClonesInFlight()), b.Concurrency)
		} else if t.Status == NotMet {
			t.Why = fmt.Sprintf("on average %s clone calls were in flight out of %d allowed: the clones did not run back to back.%s", num(b.ClonesInFlight()), b.Concurrency, listingsHint(b.Traffic, 1/float64(max(b.Jobs, 1)), "job"))
		}
	} else {
		t.Why = r.missing(ScenarioBurst)
	}
	out = append(out, t)

	t = Target{Name: "Idle cost", Goal: fmt.Sprintf("at most %g vCenter calls per minute with no job, whatever the inventory size", TargetIdlePerMinute)}
	var judged []IdleWindow
	for _, w := range r.Idle {
		if w.Judged() {
			judged = append(judged, w)
		}
	}
	if len(judged) > 0 {
		worst := judged[0]
		var parts []string
		for _, w := range judged {
			if w.CallsPerMinute() > worst.CallsPerMinute() {
				worst = w
			}
			parts = append(parts, fmt.Sprintf("%s/min at %s VMs over %s", num(w.CallsPerMinute()), count(w.VMs), dur(w.Window)))
		}
		t.Figure = strings.Join(parts, ", ")
		t.Status = judge(worst.CallsPerMinute() <= TargetIdlePerMinute)
		if t.Status == NotMet {
			t.Why = fmt.Sprintf("at %s VMs, per minute: %s.%s", count(worst.VMs), methods(perMinute(worst)), listingsHint(worst.Traffic, time.Minute.Seconds()/worst.Window.Seconds(), "minute"))
		}
	} else {
		t.Why = r.missing(ScenarioIdle)
	}
	out = append(out, t)

	t = Target{Name: "Memory", Goal: fmt.Sprintf("peak RSS under %d MB at the largest inventory", TargetPeakRSSBytes>>20)}
	if m := r.Memory; m != nil {
		t.Figure = fmt.Sprintf("%s peak RSS (VmHWM) at %s VMs, %d of %d jobs launched", mb(float64(m.PeakRSS)), count(m.VMs), m.Launched, m.Jobs)
		t.Status = judge(m.PeakRSS < TargetPeakRSSBytes)
		if t.Status == NotMet {
			t.Why = "the daemon's resident set is above the target; a heap profile (http.enablePprof) would say which listing or cache holds it."
		}
	} else {
		t.Why = r.missing(ScenarioMemory)
	}
	out = append(out, t)
	return out
}

// missing explains why a scenario has no figure.
func (r *Report) missing(scenario string) string {
	var errs []string
	for _, e := range r.Errors {
		if e.Scenario == scenario || strings.HasPrefix(e.Scenario, scenario+" ") || (scenario != ScenarioMemory && strings.HasPrefix(e.Scenario, "daemon at ")) {
			errs = append(errs, e.Scenario+": "+e.Err)
		}
	}
	switch {
	case len(errs) > 0:
		return "failed: " + strings.Join(errs, "; ")
	case !slices.Contains(r.Scenarios, scenario):
		return "scenario not run (--scenarios)."
	}
	return "no figure."
}

func judge(ok bool) Status {
	if ok {
		return Met
	}
	return NotMet
}

// listingsHint says how many VM listings from vCenter a traffic holds, scaled by scale
// ("per what"): each listing opens a container view.
func listingsHint(t Traffic, scale float64, per string) string {
	n := t.ByMethod["CreateContainerView"]
	if n == 0 {
		return ""
	}
	return fmt.Sprintf(" Each CreateContainerView is one listing of the VMs from vCenter: %s per %s, %s received per %s, none answered by an inventory cache.", num(float64(n)*scale), per, bytesText(float64(t.Bytes)*scale), per)
}

// perMinute scales an idle window's method counts to a minute.
func perMinute(w IdleWindow) map[string]float64 {
	out := map[string]float64{}
	for m, c := range w.Traffic.ByMethod {
		out[m] = 60 * w.perSecond(float64(c))
	}
	return out
}

// intMethods converts method counts for methods().
func intMethods(m map[string]int) map[string]float64 {
	out := make(map[string]float64, len(m))
	for k, v := range m {
		out[k] = float64(v)
	}
	return out
}

// methods lists method counts, most frequent first: "RetrievePropertiesEx ×2, ...".
func methods(m map[string]float64) string {
	if len(m) == 0 {
		return "no call"
	}
	names := make([]string, 0, len(m))
	for k := range m {
		names = append(names, k)
	}
	slices.SortFunc(names, func(a, b string) int {
		if c := cmp.Compare(m[b], m[a]); c != 0 {
			return c
		}
		return cmp.Compare(a, b)
	})
	parts := make([]string, len(names))
	for i, n := range names {
		parts[i] = fmt.Sprintf("%s ×%s", n, num(m[n]))
	}
	return strings.Join(parts, ", ")
}
