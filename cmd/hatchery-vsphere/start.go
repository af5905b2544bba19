package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/signal"
	"sync"
	"syscall"

	"github.com/rockbears/log"

	"github.com/hatchery-vsphere/hatchery-vsphere/internal/config"
	"github.com/hatchery-vsphere/hatchery-vsphere/internal/daemon"
	"github.com/hatchery-vsphere/hatchery-vsphere/internal/hatchery"
)

// startDaemon runs the hatchery until ctx is cancelled (first SIGINT/SIGTERM), drains it
// and returns nil on a clean stop. Tests replace it.
var startDaemon = func(ctx context.Context, cfg *config.File, logger *log.Logger) error {
	return daemon.Run(ctx, cfg, logger)
}

// signalContext is a context cancelled by SIGINT or SIGTERM, for the commands that need no
// drain (demo, bench); tests replace it.
var signalContext = func() (context.Context, context.CancelFunc) {
	return signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
}

// notifySignals delivers SIGINT and SIGTERM to ch until stop is called. Tests replace it,
// since they cannot send signals to themselves safely.
var notifySignals = func(ch chan<- os.Signal) (stop func()) {
	signal.Notify(ch, os.Interrupt, syscall.SIGTERM)
	return func() { signal.Stop(ch) }
}

// exitNow ends the process without waiting for anything; tests replace it.
var exitNow = os.Exit

// exitCodeSecondSignal is the exit code of a stop forced by a second signal (128+SIGINT,
// what shells report for an interrupted program).
const exitCodeSecondSignal = 130

// watchSignals turns the first signal into a graceful stop (cancel: the daemon drains) and
// a second one into an immediate exit. It returns when quit is closed.
func watchSignals(logger *log.Logger, sigs <-chan os.Signal, cancel context.CancelFunc, quit <-chan struct{}) {
	ctx := context.Background()
	select {
	case <-quit:
		return
	case sig := <-sigs:
		logger.Info(ctx, "received %s: stopping (in-flight spawns may take up to shutdownTimeout); send it again to exit at once", sig)
		cancel()
	}
	select {
	case <-quit:
	case sig := <-sigs:
		logger.Warn(ctx, "received %s again: exiting at once", sig)
		exitNow(exitCodeSecondSignal)
	}
}

func runStart(args []string, stdout, stderr io.Writer, environ []string) int {
	fs := newFlagSet("start")
	path := fs.String("config", "", "configuration file")
	if code := parseFlags(fs, args, stdout, stderr); code >= 0 {
		return code
	}
	// The original is started as `engine start hatchery:vsphere --config FILE`: accept the
	// service name so that existing unit files only need the binary renamed.
	if fs.NArg() > 0 && fs.Arg(0) == "hatchery:vsphere" {
		if code := parseFlags(fs, fs.Args()[1:], stdout, stderr); code >= 0 {
			return code
		}
	}
	if fs.NArg() > 0 {
		return usageError(stderr, fmt.Sprintf("start: unexpected argument %q", fs.Arg(0)))
	}
	if *path == "" {
		return usageError(stderr, "start needs --config FILE")
	}
	cfg, code := loadConfig(*path, stderr, environ)
	if code != 0 {
		return code
	}

	logger := newLogger(cfg.Log, stdout)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	sigs := make(chan os.Signal, 2)
	stopNotify := notifySignals(sigs)
	defer stopNotify()
	quit := make(chan struct{})
	var watcher sync.WaitGroup
	watcher.Go(func() { watchSignals(logger, sigs, cancel, quit) })
	defer func() {
		close(quit)
		watcher.Wait()
	}()

	if dump, err := cfg.RedactedJSON(); err == nil {
		logger.Debug(ctx, "configuration: %s", dump)
	} else {
		logger.Warn(ctx, "cannot print the configuration: %v", err)
	}
	logger.Info(ctx, "hatchery-vsphere %s starting as %q", hatchery.Version, cfg.Hatchery.VSphere.CommonConfiguration.Name)
	if err := startDaemon(ctx, cfg, logger); err != nil {
		logger.Error(ctx, "hatchery stopped: %v", err)
		return 1
	}
	logger.Info(ctx, "hatchery-vsphere stopped")
	return 0
}
