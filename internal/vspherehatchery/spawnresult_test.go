package vspherehatchery

import (
	"errors"
	"fmt"
	"testing"

	"github.com/hatchery-vsphere/hatchery-vsphere/internal/lifecycle"
)

func TestSpawnResultNamesTheFailedStage(t *testing.T) {
	cause := errors.New("boom")
	tests := []struct {
		name string
		err  error
		want string
	}{
		{"success", nil, lifecycle.SpawnOK},
		{"clone", spawnFailed(lifecycle.SpawnClone, cause), lifecycle.SpawnClone},
		{"wrapped twice", fmt.Errorf("spawn: %w", fmt.Errorf("vm: %w", spawnFailed(lifecycle.SpawnIPTimeout, cause))), lifecycle.SpawnIPTimeout},
		{"no free IP", fmt.Errorf("reserve: %w", ErrNoFreeIP), lifecycle.SpawnCapacity},
		{"unclassified", cause, lifecycle.Other},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := spawnResult(tt.err); got != tt.want {
				t.Errorf("spawnResult(%v) = %q, want %q", tt.err, got, tt.want)
			}
		})
	}
	if err := spawnFailed(lifecycle.SpawnLaunch, cause); !errors.Is(err, cause) || err.Error() != "boom" {
		t.Errorf("spawnFailed hides its cause: %v", err)
	}
}

func TestDeletionKind(t *testing.T) {
	for reason, want := range map[string]string{
		"marked for deletion":                                                          lifecycle.DeletionMarked,
		"worker done (powered off)":                                                    lifecycle.DeletionFinished,
		"worker started 3h0m0s ago, beyond workerTTL 2h0m0s":                           lifecycle.DeletionExpired,
		"renamed 11m0s ago and never started":                                          lifecycle.DeletionAWOL,
		"worker started 11m0s ago and not registered within workerRegistrationTTL 10m": lifecycle.DeletionAWOL,
	} {
		if got := deletionKind(reason); got != want {
			t.Errorf("deletionKind(%q) = %q, want %q", reason, got, want)
		}
	}
}
