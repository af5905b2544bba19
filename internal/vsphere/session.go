package vsphere

import (
	"fmt"
	"time"
)

// SessionHealth tells whether the vCenter session is usable: false after a failed re-login
// until one succeeds, with a detail fit for a status line (since when, how many attempts,
// the last error, when the next attempt is allowed). It never contains the credentials.
func (c *Client) SessionHealth() (ok bool, detail string) {
	return c.relog.health()
}

func (r *reloginTripper) health() (bool, string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.lastErr == nil {
		return true, ""
	}
	return false, fmt.Sprintf("re-login failing since %s (%d attempts, next at %s): %v",
		r.failedSince.UTC().Format(time.RFC3339), r.failures, r.retryAt.UTC().Format(time.RFC3339), r.lastErr)
}
