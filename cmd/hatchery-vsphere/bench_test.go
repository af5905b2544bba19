package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// The memory scenario is left out: it runs this executable as the daemon, and a test
// binary is not one.
func TestBenchQuickWritesTheReport(t *testing.T) {
	dir := t.TempDir()
	out := filepath.Join(dir, "docs", "benchmarks.md")
	gobench := filepath.Join(dir, "hot.txt")
	if err := os.WriteFile(gobench, []byte("BenchmarkParseAnnotation-2   100   9651 ns/op\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	r := runCLI(t, nil, "bench", "--quick", "--scenarios", "decision,burst,idle", "--out", out, "--gobench", gobench)
	if r.code != 0 {
		t.Fatalf("bench exit code %d\nstdout:\n%s\nstderr:\n%s", r.code, r.stdout, r.stderr)
	}
	data, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	md := string(data)
	for _, want := range []string{
		"# Benchmarks", "Quick run", "## Targets", "## Compared with the original",
		"| 3 | ", "| 20 | ", // a row per decision size
		"measured: first job queued → last worker launched",
		"idle scenario",
		"BenchmarkParseAnnotation-2",
		"| Memory | peak RSS under 200 MB at the largest inventory | — | not measured | scenario not run (--scenarios). |",
	} {
		if !strings.Contains(md, want) {
			t.Errorf("report lacks %q:\n%s", want, md)
		}
	}
	if strings.Contains(md, "## Failures") {
		t.Errorf("a scenario failed:\n%s", md)
	}
	if !strings.Contains(r.stdout, "report written to "+out) || !strings.Contains(r.stdout, "Burst") {
		t.Errorf("stdout does not summarise the targets:\n%s", r.stdout)
	}
}

func TestBenchRejectsBadArguments(t *testing.T) {
	for _, args := range [][]string{
		{"bench", "--scenarios", "decision,speed"},
		{"bench", "extra"},
		{"bench", "--nope"},
	} {
		if r := runCLI(t, nil, args...); r.code != 2 {
			t.Errorf("%v: exit code %d, want 2", args, r.code)
		}
	}
}
