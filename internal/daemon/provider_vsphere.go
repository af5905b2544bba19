package daemon

import (
	"context"
	"fmt"

	"github.com/hatchery-vsphere/hatchery-vsphere/internal/hatchery"
	"github.com/hatchery-vsphere/hatchery-vsphere/internal/vspherehatchery"
)

// VSphereProviderOptions tune the vSphere provider; the zero value is the production
// setting.
type VSphereProviderOptions struct {
	// Timings are the vSphere-side waits and the cleanup period (zero: the original's).
	Timings vspherehatchery.Timings
	// NewName draws provisioned VM names (nil: the framework's generator).
	NewName func(prefix string) string
}

// NewVSphereProvider is the factory of the real vSphere provider.
func NewVSphereProvider(opts VSphereProviderOptions) ProviderFactory {
	return func(ctx context.Context, in ProviderInput) (hatchery.Provider, error) {
		p, err := vspherehatchery.New(in.Config, in.Client, in.Logger, in.Now)
		if err != nil {
			return nil, fmt.Errorf("vsphere provider: %w", err)
		}
		return vspherehatchery.NewOrchestrator(p, vspherehatchery.OrchestratorOptions{
			Timings: opts.Timings,
			Tick:    in.Tick,
			NewName: opts.NewName,
		}), nil
	}
}
