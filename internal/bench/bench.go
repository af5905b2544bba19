// Package bench is the load harness of `hatchery-vsphere bench`: it runs the daemon against
// the in-process simulated vCenter (simenv) and CDS API (cdssim), measures what the scale
// issue asks for (cost of a scheduling decision, burst of jobs, idle cost on vCenter, peak
// memory) and renders the Markdown report of docs/benchmarks.md, with each target stated as
// met or not and the original's figures (baseline.md) alongside ours.
//
// vCenter traffic is counted on the wire: every measured client talks to vCenter through
// its own counting HTTPS proxy, so the figures hold whatever the client's code does.
package bench

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/rockbears/log"
)

// Scenario names, as given to --scenarios.
const (
	ScenarioDecision = "decision"
	ScenarioBurst    = "burst"
	ScenarioIdle     = "idle"
	ScenarioMemory   = "memory"
)

// AllScenarios run when none is named, in this order.
var AllScenarios = []string{ScenarioDecision, ScenarioBurst, ScenarioIdle, ScenarioMemory}

// Options shape a bench run.
type Options struct {
	// Quick runs every scenario with tiny sizes (seconds, for tests); the figures then say
	// nothing about the targets.
	Quick bool
	// Scenarios to run (nil: AllScenarios).
	Scenarios []string
	// DaemonCommand is the program and leading arguments that run the daemon in a child
	// process with "--config FILE" appended (e.g. [os.Executable(), "start"]), for the
	// memory scenario. Empty: the memory scenario is reported as not measured.
	DaemonCommand []string
	// Progress receives one line per step (nil: discarded).
	Progress io.Writer
	// Logger receives the in-process daemons' logs (nil: discarded).
	Logger *log.Logger
}

// Params are the sizes and knobs of the scenarios, written in the report.
type Params struct {
	// DecisionSizes are the numbers of unrelated VMs the decision cost is measured at.
	DecisionSizes []int
	// DecisionsPerSize is the number of direct decisions averaged at each size.
	DecisionsPerSize int
	// IdleVMs and IdleWindow: the idle scenario's inventory and counting window. Every
	// other daemon run also counts its calls over ShortIdleWindow before its job.
	IdleVMs         int
	IdleWindow      time.Duration
	ShortIdleWindow time.Duration
	// Burst: jobs queued at once, clone concurrency (maxConcurrentClones), the simulated
	// clone latency, and maxConcurrentProvisioning.
	BurstJobs         int
	BurstConcurrency  int
	BurstCloneDelay   time.Duration
	BurstProvisioning int
	// MemoryVMs is the inventory of the memory scenario; MemoryJobs are run through the
	// child daemon before its peak RSS is read; MemoryWindow is the idle time counted first.
	MemoryVMs    int
	MemoryJobs   int
	MemoryWindow time.Duration
}

// FullParams are the sizes of the scale issue.
func FullParams() Params {
	return Params{
		DecisionSizes:     []int{100, 1000, 5000},
		DecisionsPerSize:  3,
		IdleVMs:           1000,
		IdleWindow:        time.Minute,
		ShortIdleWindow:   10 * time.Second,
		BurstJobs:         200,
		BurstConcurrency:  20,
		BurstCloneDelay:   time.Second,
		BurstProvisioning: 40,
		MemoryVMs:         5000,
		MemoryJobs:        10,
		MemoryWindow:      30 * time.Second,
	}
}

// QuickParams are tiny sizes for tests of the harness itself.
func QuickParams() Params {
	return Params{
		DecisionSizes:     []int{3, 10, 20},
		DecisionsPerSize:  2,
		IdleVMs:           10,
		IdleWindow:        2 * time.Second,
		ShortIdleWindow:   500 * time.Millisecond,
		BurstJobs:         8,
		BurstConcurrency:  4,
		BurstCloneDelay:   100 * time.Millisecond,
		BurstProvisioning: 8,
		MemoryVMs:         20,
		MemoryJobs:        2,
		MemoryWindow:      time.Second,
	}
}

// ParseScenarios reads a comma-separated list of scenario names ("" means all).
func ParseScenarios(s string) ([]string, error) {
	if strings.TrimSpace(s) == "" {
		return slices.Clone(AllScenarios), nil
	}
	var out []string
	for _, name := range strings.Split(s, ",") {
		name = strings.TrimSpace(name)
		if !slices.Contains(AllScenarios, name) {
			return nil, fmt.Errorf("unknown scenario %q (known: %s)", name, strings.Join(AllScenarios, ", "))
		}
		if !slices.Contains(out, name) {
			out = append(out, name)
		}
	}
	return out, nil
}

// Run runs the scenarios and returns their report. A scenario that fails is reported with
// its error and the others still run; the error returned is only for unusable options.
func Run(ctx context.Context, opts Options) (*Report, error) {
	if opts.Scenarios == nil {
		opts.Scenarios = slices.Clone(AllScenarios)
	}
	for _, s := range opts.Scenarios {
		if !slices.Contains(AllScenarios, s) {
			return nil, fmt.Errorf("unknown scenario %q", s)
		}
	}
	if opts.Progress == nil {
		opts.Progress = io.Discard
	}
	if opts.Logger == nil {
		opts.Logger = log.NewWithFactory(func() log.Wrapper { return discardLog{} })
	}
	params := FullParams()
	if opts.Quick {
		params = QuickParams()
	}
	r := &Report{
		Machine:   ReadMachine(),
		Started:   time.Now(),
		Quick:     opts.Quick,
		Params:    params,
		Scenarios: slices.Clone(opts.Scenarios),
	}
	dir, err := os.MkdirTemp("", "hatchery-bench-")
	if err != nil {
		return nil, fmt.Errorf("temporary directory: %w", err)
	}
	defer os.RemoveAll(dir)

	b := &runner{opts: opts, params: params, report: r, dir: dir}
	b.progress("generating keys")
	if b.apiKey, err = rsa.GenerateKey(rand.Reader, 2048); err != nil {
		return nil, fmt.Errorf("generate a key: %w", err)
	}
	if b.hatcheryKey, err = rsa.GenerateKey(rand.Reader, 2048); err != nil {
		return nil, fmt.Errorf("generate a key: %w", err)
	}

	if b.has(ScenarioDecision) || b.has(ScenarioIdle) || b.has(ScenarioMemory) {
		b.runScale(ctx)
	}
	if b.has(ScenarioBurst) {
		res, err := b.runBurst(ctx)
		if err != nil {
			r.addError(ScenarioBurst, err)
		}
		r.Burst = res
	}
	r.Duration = time.Since(r.Started)
	return r, nil
}

// runner holds what the scenarios of one run share.
type runner struct {
	opts   Options
	params Params
	report *Report
	dir    string

	apiKey, hatcheryKey *rsa.PrivateKey
}

func (b *runner) has(scenario string) bool { return slices.Contains(b.opts.Scenarios, scenario) }

func (b *runner) progress(format string, args ...any) {
	fmt.Fprintf(b.opts.Progress, "bench: "+format+"\n", args...)
}

// discardLog is a log.Wrapper that drops everything; its level keeps the logger from
// formatting what it would drop.
type discardLog struct{}

func (discardLog) GetLevel() log.Level   { return log.LevelError }
func (discardLog) WithField(string, any) {}
func (discardLog) Debugf(string, ...any) {}
func (discardLog) Infof(string, ...any)  {}
func (discardLog) Warnf(string, ...any)  {}
func (discardLog) Fatalf(string, ...any) {}
func (discardLog) Errorf(string, ...any) {}
func (discardLog) Panicf(string, ...any) {}
