package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"slices"
	"strings"
	"time"

	"github.com/hatchery-vsphere/hatchery-vsphere/internal/cdssim"
	"github.com/hatchery-vsphere/hatchery-vsphere/internal/config"
	"github.com/hatchery-vsphere/hatchery-vsphere/internal/daemon"
)

// demoDeadline bounds a whole demo run: the jobs normally all finish in seconds.
const demoDeadline = 3 * time.Minute

// demoV1Model is the v1 worker model of the demo; its template is built by registration.
const demoV1Model = "debian12-v1"

// demoGuestPassword is the guest password of the demo's models and guestCredentials:
// distinctive, so that a test can tell it never reaches the logs.
const demoGuestPassword = "demo-Guest-pw-7Hq"

// keepRunningJobDuration is how long each job runs by default with --keep-running: long
// enough for a person to watch the status page fill and empty.
const keepRunningJobDuration = 5 * time.Second

// demoOptions are the settings of one demo run.
type demoOptions struct {
	jobs int
	keep bool
	// jobDuration is how long each simulated worker runs its job (0: it finishes at once).
	jobDuration time.Duration
	// log configures the hatchery's logs, written to stderr.
	log config.Log
	// configure, when set, adjusts the hatchery configuration before the run (tests).
	configure func(cfg *config.File)
	// inspect, when set, sees the simulators and the configuration after the run, before
	// they are stopped (tests).
	inspect func(h *daemon.Harness, cfg *config.File)
}

// runDemo runs the hatchery against an in-process simulated vCenter and CDS API, queues a
// mix of v1 and v2 jobs, shows progress until every job has finished and every worker VM is
// deleted, and prints a summary. The exit code is 0 only if every job succeeded and no
// worker VM was left behind.
func runDemo(args []string, stdout, stderr io.Writer) int {
	fs := newFlagSet("demo")
	jobs := fs.Int("jobs", 20, "number of jobs to queue (half v1, half v2)")
	keep := fs.Bool("keep-running", false, "keep serving the status page and /mon/* after the jobs until Ctrl-C")
	jobDuration := fs.Duration("job-duration", 0, "how long each job runs (default 0, or 5s with --keep-running)")
	verbose := fs.Bool("verbose", false, "print the hatchery logs on stderr")
	if code := parseFlags(fs, args, stdout, stderr); code >= 0 {
		return code
	}
	if fs.NArg() > 0 {
		return usageError(stderr, fmt.Sprintf("demo: unexpected argument %q", fs.Arg(0)))
	}
	if *jobs < 1 {
		return usageError(stderr, "demo: --jobs must be at least 1")
	}
	if *jobDuration < 0 {
		return usageError(stderr, "demo: --job-duration must not be negative")
	}
	opts := demoOptions{jobs: *jobs, keep: *keep, jobDuration: *jobDuration, log: config.Log{Level: "info", Format: "discard"}}
	if *keep && !flagSet(fs, "job-duration") {
		opts.jobDuration = keepRunningJobDuration
	}
	if *verbose {
		opts.log.Format = "text"
	}

	ctx, stop := signalContext()
	defer stop()
	if err := demo(ctx, opts, stdout, stderr); err != nil {
		fmt.Fprintf(stderr, "hatchery-vsphere: demo: %v\n", err)
		return 1
	}
	return 0
}

// flagSet tells whether the flag name was given on the command line.
func flagSet(fs *flag.FlagSet, name string) bool {
	set := false
	fs.Visit(func(f *flag.Flag) { set = set || f.Name == name })
	return set
}

func demo(ctx context.Context, opts demoOptions, stdout, stderr io.Writer) error {
	begin := time.Now()
	jobs := opts.jobs
	fmt.Fprintln(stdout, "starting a simulated vCenter and a simulated CDS API...")
	h, err := daemon.NewHarness(ctx, daemon.HarnessOptions{Name: "hatchery-demo", JobDuration: opts.jobDuration})
	if err != nil {
		return err
	}
	defer h.Close()
	initial := h.VCenter.VMNames()

	cfg := demoConfig(h)
	if opts.configure != nil {
		opts.configure(cfg)
	}
	if err := cfg.Validate(); err != nil {
		return fmt.Errorf("demo configuration: %w", err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return fmt.Errorf("listen: %w", err)
	}
	logger := newLogger(opts.log, stderr)

	runCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	done := make(chan error, 1)
	go func() {
		done <- daemon.Run(runCtx, cfg, logger, append(h.Options(), daemon.WithListener(ln))...)
	}()
	fmt.Fprintf(stdout, "hatchery %q running: status page on http://%s/ (data at /mon/vms, health at /mon/status)\n", h.Name, ln.Addr())

	v1IDs, v2IDs := queueDemoJobs(h, jobs)
	fmt.Fprintf(stdout, "queued %d v1 and %d v2 jobs", len(v1IDs), len(v2IDs))
	if opts.jobDuration > 0 {
		fmt.Fprintf(stdout, ", each running %s", opts.jobDuration)
	}
	fmt.Fprintln(stdout)

	finished := func() bool {
		return jobsDone(h, v1IDs, v2IDs) == jobs && len(workerVMs(h, initial)) == 0
	}
	waitCtx, waitCancel := context.WithTimeout(ctx, demoDeadline)
	defer waitCancel()
	waitErr := make(chan error, 1)
	go func() { waitErr <- h.API.WaitUntil(waitCtx, finished) }()

	ticker := time.NewTicker(time.Second)
	defer ticker.Stop()
	var runErr error
	daemonStopped := false
wait:
	for {
		select {
		case err := <-waitErr:
			if err != nil && ctx.Err() == nil {
				err = fmt.Errorf("jobs not finished after %s", demoDeadline)
			}
			runErr = err
			break wait
		case err := <-done:
			daemonStopped = true
			runErr = fmt.Errorf("the hatchery stopped: %v", err)
			waitCancel()
			<-waitErr
			break wait
		case <-ticker.C:
			fmt.Fprintf(stdout, "\r%s", progressLine(h, v1IDs, v2IDs, initial))
		}
	}
	fmt.Fprintf(stdout, "\r%s\n", progressLine(h, v1IDs, v2IDs, initial))

	if opts.keep && runErr == nil && !daemonStopped {
		fmt.Fprintf(stdout, "all jobs done; still serving the status page on http://%s/ - press Ctrl-C to stop\n", ln.Addr())
		<-ctx.Done()
	}
	cancel()
	if !daemonStopped {
		if err := <-done; err != nil && runErr == nil {
			runErr = fmt.Errorf("the hatchery stopped: %v", err)
		}
	}
	if opts.inspect != nil {
		opts.inspect(h, cfg)
	}
	return summary(stdout, h, v1IDs, v2IDs, initial, time.Since(begin), runErr)
}

// demoConfig is the harness configuration with provisioning, two flavors and an IP range.
func demoConfig(h *daemon.Harness) *config.File {
	cfg := h.Config()
	vs := &cfg.Hatchery.VSphere
	vs.IPRange = "10.20.0.32/27"
	vs.Gateway = "10.20.0.1"
	vs.DNS = "10.20.0.2"
	vs.SubnetMask = "255.255.255.0"
	vs.Flavors = []config.Flavor{{Name: "small", CPUs: 1, MemoryMB: 2048}, {Name: "large", CPUs: 4, MemoryMB: 8192}}
	vs.WorkerProvisioning = []config.WorkerProvisioning{{ModelVMWare: "debian12", Number: 2}}
	vs.WorkerProvisioningInterval = 1
	vs.GuestCredentials = []config.GuestCredential{{ModelVMWare: "debian12", Username: "cds", Password: demoGuestPassword}}
	vs.CommonConfiguration.Provision.MaxWorker = 10
	vs.CommonConfiguration.Provision.MaxConcurrentProvisioning = 5
	vs.CommonConfiguration.Provision.RegisterFrequency = 1
	return cfg
}

// queueDemoJobs queues jobs, alternating v2 jobs (on the debian12 image, half of them with
// a flavor) and v1 jobs (on a v1 model whose template registration builds).
func queueDemoJobs(h *daemon.Harness, n int) ([]int64, []string) {
	h.API.AddV1Model(cdssim.V1Model{
		Name: demoV1Model, Type: "vsphere", NeedRegistration: true,
		ModelVirtualMachine: cdssim.VirtualMachineModel{
			Image: "debian12", User: "cds", Password: demoGuestPassword,
			Cmd: "./worker", PostCmd: "sudo shutdown -h now",
		},
	})
	model := cdssim.V2WorkerModel{
		Name: "debian12", Type: "vsphere", OSArch: "linux/amd64",
		Spec: cdssim.V2ModelSpec{Image: "debian12", Username: "cds", Password: demoGuestPassword},
	}
	flavors := []string{"", "small", "", "large"}
	var v1IDs []int64
	var v2IDs []string
	for i := range n {
		if i%2 == 0 {
			job := cdssim.V2RunJob{ProjectKey: "DEMO", WorkflowName: "demo-v2", RunNumber: int64(i + 1)}
			if f := flavors[(i/2)%len(flavors)]; f != "" {
				job.Job.RunsOn = cdssim.V2RunsOn{Model: model.Name, Flavor: f}
			}
			v2IDs = append(v2IDs, h.API.AddV2Job(job, model))
			continue
		}
		v1IDs = append(v1IDs, h.API.AddV1Job(cdssim.V1Job{
			ProjectKey: "DEMO", WorkflowName: "demo-v1", JobName: fmt.Sprintf("job-%d", i+1),
			Requirements: []cdssim.Requirement{{Name: "model", Type: "model", Value: "shared.infra/" + demoV1Model}},
		}))
	}
	return v1IDs, v2IDs
}

// jobStates counts the demo jobs per state: queued, spawning (booked or taken, no worker
// yet), running, done (success or failure).
type jobStates struct{ queued, spawning, running, done, failed int }

func countJobs(h *daemon.Harness, v1IDs []int64, v2IDs []string) jobStates {
	var s jobStates
	add := func(status string) {
		switch status {
		case cdssim.StatusWaiting:
			s.queued++
		case cdssim.StatusScheduling:
			s.spawning++
		case cdssim.StatusBuilding:
			s.running++
		case cdssim.StatusSuccess:
			s.done++
		default: // Fail, Disabled, ...
			s.done++
			s.failed++
		}
	}
	for _, id := range v1IDs {
		st, _ := h.API.V1Job(id)
		if st.Status == cdssim.StatusWaiting && st.BookedBy != "" {
			st.Status = cdssim.StatusScheduling
		}
		add(st.Status)
	}
	for _, id := range v2IDs {
		add(h.API.V2JobStatus(id))
	}
	return s
}

func jobsDone(h *daemon.Harness, v1IDs []int64, v2IDs []string) int {
	return countJobs(h, v1IDs, v2IDs).done
}

// workerVMs are the VMs made during the demo that hold (or held) a worker: everything new
// but the provisioned pool and the v1 model's template.
func workerVMs(h *daemon.Harness, initial []string) []string {
	var out []string
	for _, name := range h.VCenter.VMNames() {
		if slices.Contains(initial, name) || strings.HasPrefix(name, "provision-") || name == demoV1Model {
			continue
		}
		out = append(out, name)
	}
	return out
}

func progressLine(h *daemon.Harness, v1IDs []int64, v2IDs []string, initial []string) string {
	s := countJobs(h, v1IDs, v2IDs)
	return fmt.Sprintf("queued %3d | spawning %3d | running %3d | done %3d | worker VMs alive %3d   ",
		s.queued, s.spawning, s.running, s.done, len(workerVMs(h, initial)))
}

func summary(w io.Writer, h *daemon.Harness, v1IDs []int64, v2IDs []string, initial []string, elapsed time.Duration, runErr error) error {
	s := countJobs(h, v1IDs, v2IDs)
	leaked := workerVMs(h, initial)
	var provisioned int
	for _, name := range h.VCenter.VMNames() {
		if strings.HasPrefix(name, "provision-") {
			provisioned++
		}
	}
	fmt.Fprintln(w, "summary:")
	fmt.Fprintf(w, "  jobs done:        %d/%d (%d failed)\n", s.done, len(v1IDs)+len(v2IDs), s.failed)
	fmt.Fprintf(w, "  workers launched: %d\n", h.WorkersLaunched())
	fmt.Fprintf(w, "  VMs created:      %d (clones)\n", h.VCenter.CallCount("CloneVM_Task"))
	fmt.Fprintf(w, "  VMs deleted:      %d\n", h.VCenter.CallCount("Destroy_Task"))
	fmt.Fprintf(w, "  provisioned VMs:  %d (kept powered off for the next jobs)\n", provisioned)
	fmt.Fprintf(w, "  leaked VMs:       %d %v\n", len(leaked), leaked)
	fmt.Fprintf(w, "  elapsed:          %s\n", elapsed.Round(10*time.Millisecond))
	errs := []error{runErr}
	for _, p := range h.Problems() {
		errs = append(errs, p)
	}
	if s.failed > 0 || s.done < len(v1IDs)+len(v2IDs) {
		errs = append(errs, fmt.Errorf("%d of %d jobs did not succeed", len(v1IDs)+len(v2IDs)-s.done+s.failed, len(v1IDs)+len(v2IDs)))
	}
	if len(leaked) > 0 {
		errs = append(errs, fmt.Errorf("%d worker VMs leaked", len(leaked)))
	}
	return errors.Join(errs...)
}
