package bench

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/BurntSushi/toml"

	"github.com/hatchery-vsphere/hatchery-vsphere/internal/config"
	"github.com/hatchery-vsphere/hatchery-vsphere/internal/daemon"
)

// memoryLaunchTimeout bounds the wait for the memory scenario's workers.
const memoryLaunchTimeout = 2 * time.Minute

// childStopTimeout bounds the child daemon's graceful stop before it is killed.
const childStopTimeout = 30 * time.Second

// measureMemory runs the daemon binary in a child process, with its production settings,
// against the simulators of h (served on loopback by this process): it counts the idle
// traffic, runs MemoryJobs jobs through it, then reads its peak resident set (VmHWM).
func (b *runner) measureMemory(ctx context.Context, h *daemon.Harness, n int) (*MemoryResult, *IdleWindow, error) {
	if len(b.opts.DaemonCommand) == 0 {
		return nil, nil, errNoDaemonCommand
	}
	proxy, err := newVCenterProxy(h.VCenter, b.dir)
	if err != nil {
		return nil, nil, err
	}
	defer proxy.Close()
	cfg := daemonConfig(h, proxy)
	cfg.Log.Format = "text"
	cfg.Hatchery.VSphere.CommonConfiguration.Provision.MaxWorker = 0
	path := filepath.Join(b.dir, "memory.toml")
	if err := writeConfig(path, cfg); err != nil {
		return nil, nil, err
	}
	logPath := filepath.Join(b.dir, "memory-daemon.log")
	logFile, err := os.Create(logPath)
	if err != nil {
		return nil, nil, fmt.Errorf("daemon log file: %w", err)
	}
	defer logFile.Close()

	args := append(append([]string(nil), b.opts.DaemonCommand[1:]...), "--config", path)
	cmd := exec.Command(b.opts.DaemonCommand[0], args...)
	cmd.Env = withoutConfigOverrides(os.Environ())
	cmd.Stdout, cmd.Stderr = logFile, logFile
	if err := cmd.Start(); err != nil {
		return nil, nil, fmt.Errorf("start %s: %w", b.opts.DaemonCommand[0], err)
	}
	alive, exited := context.WithCancel(context.Background())
	var waitErr error
	go func() {
		defer exited()
		waitErr = cmd.Wait()
	}()
	stopped := false
	stop := func() {
		if stopped {
			return
		}
		stopped = true
		_ = cmd.Process.Signal(syscall.SIGTERM)
		t := time.NewTimer(childStopTimeout)
		defer t.Stop()
		select {
		case <-alive.Done():
		case <-t.C:
			_ = cmd.Process.Kill()
			<-alive.Done()
		}
	}
	defer stop()
	fail := func(err error) (*MemoryResult, *IdleWindow, error) {
		if alive.Err() != nil {
			err = fmt.Errorf("the daemon exited (%v); its log ends with:\n%s", waitErr, tail(logPath, 15))
		}
		return nil, nil, err
	}

	start := time.Now()
	if err := waitReady(ctx, h, proxy, alive, b.quiet()); err != nil {
		return fail(err)
	}
	idle, err := countIdle(ctx, proxy, alive, n, b.params.MemoryWindow)
	if err != nil {
		return fail(err)
	}
	idle.Child = true
	launched := h.WorkersLaunched()
	queueJobs(h, b.params.MemoryJobs)
	// Jobs still waiting when the wait ends do not void the figure: the peak so far is
	// read all the same, and the report says how many workers were launched.
	launchErr := waitLaunched(ctx, h, alive, launched+b.params.MemoryJobs, memoryLaunchTimeout)
	if alive.Err() != nil || ctx.Err() != nil {
		return fail(launchErr)
	}
	peak, rss, err := readRSS(cmd.Process.Pid)
	if err != nil {
		return fail(err)
	}
	res := &MemoryResult{VMs: n, Jobs: b.params.MemoryJobs, Launched: h.WorkersLaunched() - launched, PeakRSS: peak, RSS: rss, Lifetime: time.Since(start)}
	stop()
	return res, &idle, nil
}

// writeConfig writes cfg as the TOML file the daemon reads.
func writeConfig(path string, cfg *config.File) error {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o600)
	if err != nil {
		return fmt.Errorf("write the daemon configuration: %w", err)
	}
	if err := toml.NewEncoder(f).Encode(cfg); err != nil {
		f.Close()
		return fmt.Errorf("encode the daemon configuration: %w", err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("write the daemon configuration: %w", err)
	}
	return nil
}

// withoutConfigOverrides drops the CDS_ variables, which would override the generated
// configuration in the child.
func withoutConfigOverrides(environ []string) []string {
	out := make([]string, 0, len(environ))
	for _, kv := range environ {
		if !strings.HasPrefix(kv, "CDS_") {
			out = append(out, kv)
		}
	}
	return out
}

// readRSS reads the peak (VmHWM) and current (VmRSS) resident set of a process, in bytes.
func readRSS(pid int) (peak, current int64, err error) {
	status := fmt.Sprintf("/proc/%d/status", pid)
	hwm, ok := procField(status, "VmHWM")
	if !ok {
		return 0, 0, fmt.Errorf("no VmHWM in %s", status)
	}
	cur, _ := procField(status, "VmRSS")
	return parseKB(hwm) * 1024, parseKB(cur) * 1024, nil
}

// tail returns the last n lines of a file, for error messages.
func tail(path string, n int) string {
	data, err := os.ReadFile(path)
	if err != nil {
		return err.Error()
	}
	lines := strings.Split(strings.TrimRight(string(data), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
