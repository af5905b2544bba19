package main

import (
	"bytes"
	"strings"
	"testing"
)

func TestDemoRunsEveryJobAndLeaksNoVM(t *testing.T) {
	var stdout, stderr bytes.Buffer
	code := run([]string{"demo", "--jobs", "6"}, &stdout, &stderr, nil)
	if code != 0 {
		t.Fatalf("demo exit code %d\nstdout:\n%s\nstderr:\n%s", code, stdout.String(), stderr.String())
	}
	out := stdout.String()
	for _, want := range []string{"jobs done:        6/6 (0 failed)", "leaked VMs:       0"} {
		if !strings.Contains(out, want) {
			t.Errorf("summary has no %q:\n%s", want, out)
		}
	}
}

func TestDemoRejectsBadFlags(t *testing.T) {
	var stdout, stderr bytes.Buffer
	if code := run([]string{"demo", "--jobs", "0"}, &stdout, &stderr, nil); code != 2 {
		t.Errorf("--jobs 0: exit code %d, want 2", code)
	}
}
