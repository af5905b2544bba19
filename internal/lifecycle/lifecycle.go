// Package lifecycle holds the worker lifecycle metrics the original hatchery lacks: spawn
// outcomes, clone, job-to-launch and provisioned-VM claim durations, deletions, loop pass
// durations with a last-success timestamp (for stall alerts) and jobs skipped by gate.
//
// The measures are OpenCensus ones, exported at /mon/metrics by the same Prometheus exporter
// as the framework's views; every duration is in seconds and every timestamp in Unix seconds.
// Labels are of low cardinality only: the Record helpers map any value outside their
// documented set to "other", so that a caller's mistake cannot create a series per job or VM.
// The service_name and service_type labels are read from the context's tags: tag the root
// context once with WithService.
//
// Prometheus names (view name with "/" turned into "_", no suffix added by the exporter):
//
//	cds_hatchery_vsphere_spawns_total                          counter   result
//	cds_hatchery_vsphere_clone_duration_seconds                histogram
//	cds_hatchery_vsphere_job_to_launch_seconds                 histogram
//	cds_hatchery_vsphere_claim_latency_seconds                 histogram
//	cds_hatchery_vsphere_deletions_total                       counter   reason
//	cds_hatchery_vsphere_loop_pass_duration_seconds            histogram loop, result
//	cds_hatchery_vsphere_loop_last_success_timestamp_seconds   gauge     loop
//	cds_hatchery_vsphere_jobs_skipped_total                    counter   gate
//
// All of them also carry service_name and service_type.
package lifecycle

import (
	"context"
	"fmt"
	"time"

	"go.opencensus.io/stats"
	"go.opencensus.io/stats/view"
	"go.opencensus.io/tag"
)

// Spawn results (RecordSpawn): ok, or the step that failed.
const (
	SpawnOK        = "ok"
	SpawnClone     = "clone"      // clone or claim of the VM failed
	SpawnPowerOn   = "power-on"   // the VM did not power on
	SpawnIPTimeout = "ip-timeout" // no IP (or no free IP in iprange) in time
	SpawnGuestOps  = "guest-ops"  // guest operations never became ready
	SpawnLaunch    = "launch"     // the launch script could not be started
	SpawnCapacity  = "capacity"   // refused late for lack of capacity
	SpawnAPI       = "api"        // a CDS API call of the spawn failed (book, take, JWT)
)

// Deletion reasons (RecordDeletion).
const (
	DeletionAWOL     = "awol"     // the API no longer knows the worker
	DeletionFinished = "finished" // the worker ran its job and powered the VM off
	DeletionDisabled = "disabled" // the worker was disabled
	DeletionMarked   = "marked"   // the VM was marked for deletion (toDelete)
	DeletionExpired  = "expired"  // the VM outlived its time to live
)

// Scheduling gates (RecordJobSkipped).
const (
	GateCanSpawn  = "can-spawn" // CanSpawn refused the job
	GateResources = "resources" // CanAllocateResources refused the job
	GateCapacity  = "capacity"  // maxWorker, maxConcurrentProvisioning or starters full
	GateRegion    = "region"    // the job belongs to another region
)

// Pass results (RecordPass), the result label of the loop pass duration.
const (
	PassOK    = "ok"
	PassError = "error"
)

// Other is recorded in place of a label value outside a helper's documented set.
const Other = "other"

var (
	spawnResults    = set(SpawnOK, SpawnClone, SpawnPowerOn, SpawnIPTimeout, SpawnGuestOps, SpawnLaunch, SpawnCapacity, SpawnAPI)
	deletionReasons = set(DeletionAWOL, DeletionFinished, DeletionDisabled, DeletionMarked, DeletionExpired)
	gates           = set(GateCanSpawn, GateResources, GateCapacity, GateRegion)
)

func set(values ...string) map[string]bool {
	m := make(map[string]bool, len(values))
	for _, v := range values {
		m[v] = true
	}
	return m
}

// Tag keys. service_name and service_type are the keys of the framework's views, so the
// series join in Prometheus.
var (
	TagServiceName = tag.MustNewKey("service_name")
	TagServiceType = tag.MustNewKey("service_type")
	tagResult      = tag.MustNewKey("result")
	tagReason      = tag.MustNewKey("reason")
	tagLoop        = tag.MustNewKey("loop")
	tagGate        = tag.MustNewKey("gate")
)

// Measures. OpenCensus measures are process-wide, hence package-level.
var (
	mSpawns          = stats.Int64("cds/hatchery/vsphere/spawns", "worker spawns by result", stats.UnitDimensionless)
	mCloneDuration   = stats.Float64("cds/hatchery/vsphere/clone_duration", "duration of a VM clone", unitSeconds)
	mJobToLaunch     = stats.Float64("cds/hatchery/vsphere/job_to_launch", "time from a job seen to its worker launched", unitSeconds)
	mClaimLatency    = stats.Float64("cds/hatchery/vsphere/claim_latency", "time to claim and wake a provisioned VM", unitSeconds)
	mDeletions       = stats.Int64("cds/hatchery/vsphere/deletions", "VM deletions by reason", stats.UnitDimensionless)
	mPassDuration    = stats.Float64("cds/hatchery/vsphere/loop_pass_duration", "duration of a loop pass", unitSeconds)
	mLastPassSuccess = stats.Float64("cds/hatchery/vsphere/loop_last_success", "Unix time of the last successful loop pass", unitSeconds)
	mJobsSkipped     = stats.Int64("cds/hatchery/vsphere/jobs_skipped", "jobs skipped by scheduling gate", stats.UnitDimensionless)
)

// unitSeconds is the UCUM unit of every duration and timestamp here.
const unitSeconds = "s"

// Bucket bounds, in seconds.
var (
	// A clone takes seconds on linked clones, minutes on full ones; launches add the boot.
	cloneBuckets  = []float64{1, 2, 5, 10, 20, 30, 60, 120, 300, 600, 1200}
	launchBuckets = []float64{1, 2, 5, 10, 20, 30, 60, 120, 300, 600, 1200, 1800, 3600}
	// A claim is a rename, reconfigure and power-on: sub-second to a minute.
	claimBuckets = []float64{0.1, 0.25, 0.5, 1, 2, 5, 10, 20, 30, 60, 120}
	passBuckets  = []float64{0.01, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 120, 300}
)

// View names, the Prometheus names with "/" for "_".
const (
	ViewSpawns          = "cds/hatchery/vsphere/spawns_total"
	ViewCloneDuration   = "cds/hatchery/vsphere/clone_duration_seconds"
	ViewJobToLaunch     = "cds/hatchery/vsphere/job_to_launch_seconds"
	ViewClaimLatency    = "cds/hatchery/vsphere/claim_latency_seconds"
	ViewDeletions       = "cds/hatchery/vsphere/deletions_total"
	ViewPassDuration    = "cds/hatchery/vsphere/loop_pass_duration_seconds"
	ViewLastPassSuccess = "cds/hatchery/vsphere/loop_last_success_timestamp_seconds"
	ViewJobsSkipped     = "cds/hatchery/vsphere/jobs_skipped_total"
)

func serviceKeys(keys ...tag.Key) []tag.Key {
	return append([]tag.Key{TagServiceName, TagServiceType}, keys...)
}

// views are built once: registering the same *view.View again is a no-op.
var views = []*view.View{
	{Name: ViewSpawns, Description: mSpawns.Description(), Measure: mSpawns, Aggregation: view.Count(), TagKeys: serviceKeys(tagResult)},
	{Name: ViewCloneDuration, Description: mCloneDuration.Description(), Measure: mCloneDuration, Aggregation: view.Distribution(cloneBuckets...), TagKeys: serviceKeys()},
	{Name: ViewJobToLaunch, Description: mJobToLaunch.Description(), Measure: mJobToLaunch, Aggregation: view.Distribution(launchBuckets...), TagKeys: serviceKeys()},
	{Name: ViewClaimLatency, Description: mClaimLatency.Description(), Measure: mClaimLatency, Aggregation: view.Distribution(claimBuckets...), TagKeys: serviceKeys()},
	{Name: ViewDeletions, Description: mDeletions.Description(), Measure: mDeletions, Aggregation: view.Count(), TagKeys: serviceKeys(tagReason)},
	{Name: ViewPassDuration, Description: mPassDuration.Description(), Measure: mPassDuration, Aggregation: view.Distribution(passBuckets...), TagKeys: serviceKeys(tagLoop, tagResult)},
	{Name: ViewLastPassSuccess, Description: mLastPassSuccess.Description(), Measure: mLastPassSuccess, Aggregation: view.LastValue(), TagKeys: serviceKeys(tagLoop)},
	{Name: ViewJobsSkipped, Description: mJobsSkipped.Description(), Measure: mJobsSkipped, Aggregation: view.Count(), TagKeys: serviceKeys(tagGate)},
}

// Views returns the lifecycle views (for /mon/metrics/all).
func Views() []*view.View { return append([]*view.View(nil), views...) }

// RegisterViews registers the lifecycle views with OpenCensus. Later calls return the first
// result.
func RegisterViews() error { return viewSet.Register() }

var viewSet = NewViewSet("lifecycle metric views", views...)

// WithService returns ctx tagged with the service_name and service_type ("hatchery") labels
// that every view of this package, of vsphere.Instrument and of the CDS API transport
// carries. The daemon tags its root context once.
func WithService(ctx context.Context, serviceName string) (context.Context, error) {
	tctx, err := tag.New(ctx, tag.Upsert(TagServiceName, serviceName), tag.Upsert(TagServiceType, "hatchery"))
	if err != nil {
		return ctx, fmt.Errorf("tag service %q: %w", serviceName, err)
	}
	return tctx, nil
}

func known(values map[string]bool, v string) string {
	if values[v] {
		return v
	}
	return Other
}

// record never fails the caller: an error could only come from an invalid tag value, and
// every value recorded here is one of the package's constants or a caller's loop name.
func record(ctx context.Context, mutators []tag.Mutator, ms ...stats.Measurement) {
	_ = stats.RecordWithTags(ctx, mutators, ms...)
}

// RecordSpawn counts one worker spawn by result: SpawnOK or the Spawn* constant naming the
// step that failed.
func RecordSpawn(ctx context.Context, result string) {
	record(ctx, []tag.Mutator{tag.Upsert(tagResult, known(spawnResults, result))}, mSpawns.M(1))
}

// RecordCloneDuration records the duration of one VM clone (template to new VM).
func RecordCloneDuration(ctx context.Context, d time.Duration) {
	record(ctx, nil, mCloneDuration.M(d.Seconds()))
}

// RecordJobToLaunch records the time from a job first seen in the queue to its worker
// launched in the guest.
func RecordJobToLaunch(ctx context.Context, d time.Duration) {
	record(ctx, nil, mJobToLaunch.M(d.Seconds()))
}

// RecordClaimLatency records the time to claim and wake a provisioned VM for a job.
func RecordClaimLatency(ctx context.Context, d time.Duration) {
	record(ctx, nil, mClaimLatency.M(d.Seconds()))
}

// RecordDeletion counts one VM deletion by reason (a Deletion* constant).
func RecordDeletion(ctx context.Context, reason string) {
	record(ctx, []tag.Mutator{tag.Upsert(tagReason, known(deletionReasons, reason))}, mDeletions.M(1))
}

// RecordJobSkipped counts one job skipped by a scheduling gate (a Gate* constant).
func RecordJobSkipped(ctx context.Context, gate string) {
	record(ctx, []tag.Mutator{tag.Upsert(tagGate, known(gates, gate))}, mJobsSkipped.M(1))
}

// RecordPass records one pass of the loop named loop that took d, now; see RecordPassAt.
func RecordPass(ctx context.Context, loop string, d time.Duration, ok bool) {
	RecordPassAt(ctx, loop, time.Now(), d, ok)
}

// RecordPassAt records one pass of the loop named loop that ended at end and took d: its
// duration by result and, when ok, end as the loop's last-success timestamp, so that an
// alert on time() - last_success catches a stalled or failing loop. loop must be a constant
// name (e.g. "cleanup", "provisioning"), never built from a VM or job name.
func RecordPassAt(ctx context.Context, loop string, end time.Time, d time.Duration, ok bool) {
	result := PassOK
	if !ok {
		result = PassError
	}
	record(ctx, []tag.Mutator{tag.Upsert(tagLoop, loop), tag.Upsert(tagResult, result)}, mPassDuration.M(d.Seconds()))
	if ok {
		// Nanosecond precision kept: a float64 of Unix seconds still resolves microseconds.
		ts := float64(end.UnixNano()) / 1e9
		record(ctx, []tag.Mutator{tag.Upsert(tagLoop, loop)}, mLastPassSuccess.M(ts))
	}
}
