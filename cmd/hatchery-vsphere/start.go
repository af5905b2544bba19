package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	"github.com/rockbears/log"

	"github.com/hatchery-vsphere/hatchery-vsphere/internal/config"
	"github.com/hatchery-vsphere/hatchery-vsphere/internal/daemon"
	"github.com/hatchery-vsphere/hatchery-vsphere/internal/hatchery"
)

// startDaemon runs the hatchery until ctx is cancelled (SIGINT/SIGTERM) and returns nil
// on a clean stop. This is the seam where the daemon is plugged in; until then it only
// waits for the signal.
var startDaemon = func(ctx context.Context, cfg *config.File, logger *log.Logger) error {
	return daemon.Run(ctx, cfg, logger)
}

// signalContext is replaced by tests, which cannot send signals to themselves safely.
var signalContext = func() (context.Context, context.CancelFunc) {
	return signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
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
	ctx, stop := signalContext()
	defer stop()

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
