package main

import (
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/hatchery-vsphere/hatchery-vsphere/internal/bench"
)

// runBench runs the load harness (internal/bench) and writes its Markdown report. The exit
// code is 0 when every scenario ran, whether or not its target is met (the report says),
// 1 when a scenario failed or the report could not be written, 2 on a usage error.
func runBench(args []string, stdout, stderr io.Writer) int {
	fs := newFlagSet("bench")
	out := fs.String("out", "docs/benchmarks.md", "report file ('-' for standard output)")
	quick := fs.Bool("quick", false, "tiny sizes: tests the harness in seconds, judges nothing")
	scenarios := fs.String("scenarios", "", "comma-separated scenarios among decision,burst,idle,memory (default: all)")
	goBench := fs.String("gobench", "", "file holding `go test -bench` output to embed in the report")
	daemonBinary := fs.String("daemon-binary", "", "daemon binary run by the memory scenario (default: this executable)")
	if code := parseFlags(fs, args, stdout, stderr); code >= 0 {
		return code
	}
	if fs.NArg() > 0 {
		return usageError(stderr, fmt.Sprintf("bench: unexpected argument %q", fs.Arg(0)))
	}
	list, err := bench.ParseScenarios(*scenarios)
	if err != nil {
		return usageError(stderr, "bench: "+err.Error())
	}
	opts := bench.Options{Quick: *quick, Scenarios: list, Progress: stderr}
	if bin := *daemonBinary; bin != "" {
		opts.DaemonCommand = []string{bin, "start"}
	} else if exe, err := os.Executable(); err == nil {
		// `go run` and `make bench` run the built binary: it is the daemon.
		opts.DaemonCommand = []string{exe, "start"}
	}

	var goBenchOut []byte
	if *goBench != "" {
		if goBenchOut, err = os.ReadFile(*goBench); err != nil {
			fmt.Fprintf(stderr, "hatchery-vsphere: bench: %v\n", err)
			return 1
		}
	}

	ctx, stop := signalContext()
	defer stop()
	report, err := bench.Run(ctx, opts)
	if err != nil {
		fmt.Fprintf(stderr, "hatchery-vsphere: bench: %v\n", err)
		return 1
	}
	report.GoBench = string(goBenchOut)
	md := report.Markdown()
	if *out == "-" {
		if _, err := io.WriteString(stdout, md); err != nil {
			fmt.Fprintf(stderr, "hatchery-vsphere: bench: write: %v\n", err)
			return 1
		}
	} else {
		if err := os.MkdirAll(filepath.Dir(*out), 0o755); err != nil {
			fmt.Fprintf(stderr, "hatchery-vsphere: bench: %v\n", err)
			return 1
		}
		if err := os.WriteFile(*out, []byte(md), 0o644); err != nil {
			fmt.Fprintf(stderr, "hatchery-vsphere: bench: %v\n", err)
			return 1
		}
		fmt.Fprintf(stdout, "report written to %s\n", *out)
	}
	for _, t := range report.Targets() {
		fmt.Fprintf(stdout, "%-26s %-14s %s\n", t.Name, t.Status, t.Figure)
	}
	if len(report.Errors) > 0 {
		for _, e := range report.Errors {
			fmt.Fprintf(stderr, "hatchery-vsphere: bench: %s: %s\n", e.Scenario, e.Err)
		}
		return 1
	}
	return 0
}
