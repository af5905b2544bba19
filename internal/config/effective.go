package config

import (
	"strings"
	"time"
)

// Effective values. The original falls back in code when some keys are zero (protocol spec
// §20.4); Load now fills absent keys with their defaults (fix of Q1), but an explicit 0
// still means what it meant to the original, so the consumers read these methods rather
// than the raw fields.

// MaxConcurrentProvisioningOrDefault is the size of the worker-starter pool and the
// capacity-check limit: values below 1 mean 10, as in the original.
func (p Provision) MaxConcurrentProvisioningOrDefault() int {
	if p.MaxConcurrentProvisioning < 1 {
		return 10
	}
	return p.MaxConcurrentProvisioning
}

// MaxConcurrentRegisteringOrDefault is the number of v1 model registrations allowed at
// once: 0 means 2; -1 (registration disabled) is returned as is, see RegistrationEnabled.
func (p Provision) MaxConcurrentRegisteringOrDefault() int {
	if p.MaxConcurrentRegistering == 0 {
		return 2
	}
	return p.MaxConcurrentRegistering
}

// RegistrationEnabled tells whether v1 worker models are registered at all:
// maxConcurrentRegistering = -1 or registerFrequency = 0 turn it off, as in the original.
func (p Provision) RegistrationEnabled() bool {
	return p.MaxConcurrentRegistering != -1 && p.RegisterFrequency > 0
}

// RegisterInterval is the period of the registration pass (0 when registration is off).
func (p Provision) RegisterInterval() time.Duration {
	if p.RegisterFrequency <= 0 {
		return 0
	}
	return time.Duration(p.RegisterFrequency) * time.Second
}

// MaxAttempts is the number of spawn attempts for one job before it is failed: 0 means 5;
// a negative value (-1) means no limit and is returned as -1.
func (p Provision) MaxAttempts() int {
	switch {
	case p.MaxAttemptsNumberBeforeFailure == 0:
		return 5
	case p.MaxAttemptsNumberBeforeFailure < 0:
		return -1
	}
	return p.MaxAttemptsNumberBeforeFailure
}

// Unlimited tells whether maxWorker = 0, i.e. no count limit on workers.
func (p Provision) Unlimited() bool {
	return p.MaxWorker <= 0
}

// RequestTimeoutDuration is the CDS API request timeout: 0 means 60 s, as in the original.
func (a API) RequestTimeoutDuration() time.Duration {
	if a.RequestTimeout <= 0 {
		return 60 * time.Second
	}
	return time.Duration(a.RequestTimeout) * time.Second
}

// WorkerTTLDuration is the worker time to live: 0 means 120 minutes.
func (v VSphere) WorkerTTLDuration() time.Duration {
	if v.WorkerTTL <= 0 {
		return 120 * time.Minute
	}
	return time.Duration(v.WorkerTTL) * time.Minute
}

// WorkerRegistrationTTLDuration is the time a started VM has to register its worker:
// 0 means 10 minutes.
func (v VSphere) WorkerRegistrationTTLDuration() time.Duration {
	if v.WorkerRegistrationTTL <= 0 {
		return 10 * time.Minute
	}
	return time.Duration(v.WorkerRegistrationTTL) * time.Minute
}

// ProvisioningInterval is the period of the provisioning pass: 0 means 120 s.
func (v VSphere) ProvisioningInterval() time.Duration {
	if v.WorkerProvisioningInterval <= 0 {
		return 120 * time.Second
	}
	return time.Duration(v.WorkerProvisioningInterval) * time.Second
}

// ProvisioningPoolSize is the number of concurrent provisioning operations: 0 means 1.
func (v VSphere) ProvisioningPoolSize() int {
	if v.WorkerProvisioningPoolSize <= 0 {
		return 1
	}
	return v.WorkerProvisioningPoolSize
}

// CardNameOrDefault is the virtual NIC type: empty means e1000.
func (v VSphere) CardNameOrDefault() string {
	if v.CardName == "" {
		return "e1000"
	}
	return v.CardName
}

// TaskTimeoutDuration bounds the wait for one vCenter task: 0 means 600 s.
func (v VSphere) TaskTimeoutDuration() time.Duration {
	if v.TaskTimeout <= 0 {
		return 600 * time.Second
	}
	return time.Duration(v.TaskTimeout) * time.Second
}

// CallTimeoutDuration bounds one vCenter request: 0 means 15 s.
func (v VSphere) CallTimeoutDuration() time.Duration {
	if v.CallTimeout <= 0 {
		return 15 * time.Second
	}
	return time.Duration(v.CallTimeout) * time.Second
}

// FindFlavor looks a flavor up by name, ignoring case as the original does.
func (v VSphere) FindFlavor(name string) (Flavor, bool) {
	for _, f := range v.Flavors {
		if strings.EqualFold(f.Name, name) {
			return f, true
		}
	}
	return Flavor{}, false
}

// ReportingPeriod is the metrics aggregation period: 0 means 10 s.
func (p PrometheusExporter) ReportingPeriod() time.Duration {
	if p.ReporteringPeriod <= 0 {
		return 10 * time.Second
	}
	return time.Duration(p.ReporteringPeriod) * time.Second
}

// FinishedWorkerGrace is how long a powered-off worker the API no longer knows is kept
// before deletion: 0 means 180 s.
func (v VSphere) FinishedWorkerGrace() time.Duration {
	return secondsOr(v.FinishedWorkerGracePeriod, 180)
}

// CleanupInterval is the period of the cleanup pass: 0 means 60 s.
func (v VSphere) CleanupInterval() time.Duration {
	return secondsOr(v.KillAwolServersInterval, 60)
}

// CloneLimit, PowerOpLimit and DeletionLimit bound the vCenter tasks of each kind run at
// once: 0 means 10, 20 and 5.
func (v VSphere) CloneLimit() int    { return positiveOr(v.MaxConcurrentClones, 10) }
func (v VSphere) PowerOpLimit() int  { return positiveOr(v.MaxConcurrentPowerOps, 20) }
func (v VSphere) DeletionLimit() int { return positiveOr(v.MaxConcurrentDeletions, 5) }

// BreakerProbeInterval is the period of the vCenter probe while the circuit is open: 0
// means 30 s.
func (v VSphere) BreakerProbeInterval() time.Duration {
	return secondsOr(v.CircuitBreakerProbe, 30)
}

// ShutdownGrace bounds the wait for in-flight spawns on shutdown: 0 means 60 s.
func (p Provision) ShutdownGrace() time.Duration {
	return secondsOr(p.ShutdownTimeout, 60)
}

func secondsOr(v, def int) time.Duration {
	if v <= 0 {
		v = def
	}
	return time.Duration(v) * time.Second
}

func positiveOr(v, def int) int {
	if v <= 0 {
		return def
	}
	return v
}
