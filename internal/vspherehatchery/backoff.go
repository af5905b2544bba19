package vspherehatchery

import (
	"math"
	"math/rand/v2"
	"time"
)

// Backoff spaces the passes of a loop out after failed ones, so that a struggling vCenter is
// not hit at full rate by every hatchery of the fleet at the same instant.
type Backoff struct {
	// Base is the wait after the first failure; it doubles with each further one.
	Base time.Duration
	// Max caps the wait.
	Max time.Duration
	// Rand draws in [0, 1); nil means math/rand/v2. Tests inject a fixed source.
	Rand func() float64
}

// Delay is the wait after the n-th consecutive failure (n ≥ 1): Base·2^(n-1) capped at Max,
// jittered uniformly in [d/2, d) ("equal jitter": never less than half the nominal wait,
// never two hatcheries in lockstep). n < 1 means no wait.
func (b Backoff) Delay(n int) time.Duration {
	if n < 1 || b.Base <= 0 {
		return 0
	}
	d := b.Base
	for i := 1; i < n && (b.Max <= 0 || d < b.Max) && d < math.MaxInt64/2; i++ {
		d *= 2
	}
	if b.Max > 0 && d > b.Max {
		d = b.Max
	}
	r := b.Rand
	if r == nil {
		r = rand.Float64
	}
	half := d / 2
	return half + time.Duration(r()*float64(d-half))
}
