// Command hatchery-vsphere is a drop-in replacement for the CDS vSphere hatchery
// (`engine start hatchery:vsphere` of ovh/cds v0.57.0): same TOML configuration, same
// CDS API protocol.
package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"runtime"
	"strings"

	"github.com/hatchery-vsphere/hatchery-vsphere/internal/config"
	"github.com/hatchery-vsphere/hatchery-vsphere/internal/hatchery"
)

const usageText = `Usage: hatchery-vsphere <command> [flags]

Commands:
  start --config FILE           run the hatchery (also: start hatchery:vsphere --config FILE)
  config new                    print a complete, commented configuration file
  config check --config FILE    validate a configuration file
  version                       print the version
  demo [--jobs N] [--keep-running] [--job-duration D] [--verbose]
                                run against an in-process simulated vCenter and CDS API
  bench [--out FILE] [--quick] [--scenarios a,b]
                                measure decision cost, burst, idle cost and memory on the
                                simulators and write a Markdown report
  help                          print this help

Every configuration key can be overridden by an environment variable: CDS_ and its TOML
path in capitals joined with _, e.g. CDS_HATCHERY_VSPHERE_PASSWORD.
`

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr, os.Environ()))
}

// run is the whole program but the process: it returns the exit code (0 done, 1 failure,
// 2 usage error).
func run(args []string, stdout, stderr io.Writer, environ []string) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usageText)
		return 2
	}
	switch args[0] {
	case "start":
		return runStart(args[1:], stdout, stderr, environ)
	case "config":
		return runConfig(args[1:], stdout, stderr, environ)
	case "version", "--version", "-version":
		if len(args) > 1 {
			return usageError(stderr, "version takes no argument")
		}
		fmt.Fprintf(stdout, "hatchery-vsphere %s (commit %s) %s/%s %s\n", hatchery.Version, orUnknown(hatchery.GitHash), runtime.GOOS, runtime.GOARCH, runtime.Version())
		return 0
	case "help", "-h", "-help", "--help":
		fmt.Fprint(stdout, usageText)
		return 0
	case "demo":
		return runDemo(args[1:], stdout, stderr)
	case "bench":
		return runBench(args[1:], stdout, stderr)
	default:
		return usageError(stderr, fmt.Sprintf("unknown command %q", args[0]))
	}
}

func usageError(stderr io.Writer, msg string) int {
	fmt.Fprintf(stderr, "hatchery-vsphere: %s\n\n%s", msg, usageText)
	return 2
}

// newFlagSet returns a flag set that reports its errors through usageError.
func newFlagSet(name string) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	return fs
}

// parseFlags parses args; help gives exit code 0, a bad flag 2, success -1.
func parseFlags(fs *flag.FlagSet, args []string, stdout, stderr io.Writer) int {
	err := fs.Parse(args)
	switch {
	case errors.Is(err, flag.ErrHelp):
		fmt.Fprint(stdout, usageText)
		return 0
	case err != nil:
		return usageError(stderr, fmt.Sprintf("%s: %v", fs.Name(), err))
	}
	return -1
}

func runConfig(args []string, stdout, stderr io.Writer, environ []string) int {
	if len(args) == 0 {
		return usageError(stderr, "config needs a subcommand: new or check")
	}
	switch args[0] {
	case "new":
		fs := newFlagSet("config new")
		name := fs.String("name", "", "hatchery name (default: cds-hatchery-vsphere-<random>)")
		if code := parseFlags(fs, args[1:], stdout, stderr); code >= 0 {
			return code
		}
		if fs.NArg() > 0 {
			return usageError(stderr, fmt.Sprintf("config new: unexpected argument %q", fs.Arg(0)))
		}
		out, err := config.NewExample(*name, nil)
		if err != nil {
			fmt.Fprintf(stderr, "hatchery-vsphere: %v\n", err)
			return 1
		}
		if _, err := stdout.Write(out); err != nil {
			fmt.Fprintf(stderr, "hatchery-vsphere: write: %v\n", err)
			return 1
		}
		return 0
	case "check":
		fs := newFlagSet("config check")
		path := fs.String("config", "", "configuration file")
		if code := parseFlags(fs, args[1:], stdout, stderr); code >= 0 {
			return code
		}
		if *path == "" || fs.NArg() > 0 {
			return usageError(stderr, "config check needs --config FILE and nothing else")
		}
		if _, code := loadConfig(*path, stderr, environ); code != 0 {
			return code
		}
		fmt.Fprintln(stdout, "configuration OK")
		return 0
	default:
		return usageError(stderr, fmt.Sprintf("unknown config subcommand %q", args[0]))
	}
}

// loadConfig loads and validates the file, printing every problem and a warning per
// unknown key on stderr. The code is 0 on success, 1 otherwise.
func loadConfig(path string, stderr io.Writer, environ []string) (*config.File, int) {
	cfg, err := config.Load(path, environ)
	if err != nil {
		fmt.Fprintf(stderr, "hatchery-vsphere: invalid configuration:\n%s\n", indent(err))
		return nil, 1
	}
	for _, k := range cfg.UnknownKeys() {
		fmt.Fprintf(stderr, "hatchery-vsphere: warning: unknown key %s is ignored\n", k)
	}
	if err := cfg.Validate(); err != nil {
		fmt.Fprintf(stderr, "hatchery-vsphere: invalid configuration %s:\n%s\n", path, indent(err))
		return nil, 1
	}
	return cfg, 0
}

// indent lists the lines of a joined error, one problem a line.
func indent(err error) string {
	lines := strings.Split(err.Error(), "\n")
	for i, l := range lines {
		lines[i] = "  - " + l
	}
	return strings.Join(lines, "\n")
}

func orUnknown(s string) string {
	if s == "" {
		return "unknown"
	}
	return s
}
