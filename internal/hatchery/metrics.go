package hatchery

import (
	"context"

	"go.opencensus.io/stats"
	"go.opencensus.io/stats/view"
	"go.opencensus.io/tag"

	"github.com/hatchery-vsphere/hatchery-vsphere/internal/lifecycle"
)

// Framework metric tags (protocol spec §23).
var (
	tagServiceName = tag.MustNewKey("service_name")
	tagServiceType = tag.MustNewKey("service_type")
)

// Framework measures. They are package-level because OpenCensus measures are process-wide;
// RegisterMetrics registers their views once.
var (
	mJobs                = stats.Int64("cds/hatchery/jobs_count", "number of jobs handled", stats.UnitDimensionless)
	mJobsWebsocket       = stats.Int64("cds/hatchery/jobs_websocket_count", "number of jobs received on websocket", stats.UnitDimensionless)
	mJobsProcessed       = stats.Int64("cds/hatchery/jobs_processed_count", "number of jobs pushed to the worker starters", stats.UnitDimensionless)
	mSpawnedWorkers      = stats.Int64("cds/hatchery/spawned_worker_count", "number of workers spawned", stats.UnitDimensionless)
	mSpawningWorkers     = stats.Int64("cds/hatchery/spawning_worker_count", "number of worker spawns started", stats.UnitDimensionless)
	mSpawningErrors      = stats.Int64("cds/hatchery/spawning_worker_errors_count", "number of failed worker spawns", stats.UnitDimensionless)
	mChanV1JobAdd        = stats.Int64("cds/hatchery/chan_v1_job_add_count", "number of v1 job IDs pushed to the discovery channel", stats.UnitDimensionless)
	mChanV2JobAdd        = stats.Int64("cds/hatchery/chan_v2_job_add_count", "number of v2 job IDs pushed to the discovery channel", stats.UnitDimensionless)
	mChanStarterPop      = stats.Int64("cds/hatchery/chan_worker_starter_job_pop", "number of spawn requests taken by a worker starter", stats.UnitDimensionless)
	mWSv1Received        = stats.Int64("cds/hatchery/job_received_in_queue_polling_ws_v1_count", "number of v1 job events received on websocket", stats.UnitDimensionless)
	mWSv2Received        = stats.Int64("cds/hatchery/job_received_in_queue_polling_ws_v2_count", "number of v2 job events received on websocket", stats.UnitDimensionless)
	mPendingWorkers      = stats.Int64("cds/hatchery/pending_workers", "workers in status Pending", stats.UnitDimensionless)
	mRegisteringWorkers  = stats.Int64("cds/hatchery/registering_workers", "workers in status Registering", stats.UnitDimensionless)
	mWaitingWorkers      = stats.Int64("cds/hatchery/waiting_workers", "workers in status Waiting", stats.UnitDimensionless)
	mCheckingWorkers     = stats.Int64("cds/hatchery/checking_workers", "workers in status Checking", stats.UnitDimensionless)
	mBuildingWorkers     = stats.Int64("cds/hatchery/building_workers", "workers in status Building", stats.UnitDimensionless)
	mDisabledWorkers     = stats.Int64("cds/hatchery/disabled_workers", "workers in status Disabled", stats.UnitDimensionless)
	statusGaugeByWorkers = map[string]*stats.Int64Measure{
		"Pending":     mPendingWorkers,
		"Registering": mRegisteringWorkers,
		"Waiting":     mWaitingWorkers,
		"Checking":    mCheckingWorkers,
		"Building":    mBuildingWorkers,
		"Disabled":    mDisabledWorkers,
	}
)

// metricViews are the framework views of §23: counts for events, last values for the
// per-status worker gauges.
func metricViews() []*view.View {
	tags := []tag.Key{tagServiceName, tagServiceType}
	count := func(m *stats.Int64Measure) *view.View {
		return &view.View{Name: m.Name(), Description: m.Description(), Measure: m, Aggregation: view.Count(), TagKeys: tags}
	}
	last := func(m *stats.Int64Measure) *view.View {
		return &view.View{Name: m.Name(), Description: m.Description(), Measure: m, Aggregation: view.LastValue(), TagKeys: tags}
	}
	return []*view.View{
		count(mJobs), count(mJobsWebsocket), count(mJobsProcessed), count(mSpawnedWorkers),
		count(mSpawningWorkers), count(mSpawningErrors), count(mChanV1JobAdd), count(mChanV2JobAdd),
		count(mChanStarterPop), count(mWSv1Received), count(mWSv2Received),
		last(mPendingWorkers), last(mRegisteringWorkers), last(mWaitingWorkers),
		last(mCheckingWorkers), last(mBuildingWorkers), last(mDisabledWorkers),
	}
}

// RegisterMetrics registers the framework views of protocol spec §23 with OpenCensus. The
// daemon calls it once at start; later calls are no-ops returning the first result.
func RegisterMetrics() error { return viewSet.Register() }

var viewSet = lifecycle.NewViewSet("hatchery metric views", metricViews()...)

// metricsRecorder records framework measures tagged with this hatchery's name.
type metricsRecorder struct {
	mutators []tag.Mutator
}

func newMetricsRecorder(serviceName string) metricsRecorder {
	return metricsRecorder{mutators: []tag.Mutator{
		tag.Upsert(tagServiceName, serviceName),
		tag.Upsert(tagServiceType, "hatchery"),
	}}
}

func (r metricsRecorder) record(ctx context.Context, ms ...stats.Measurement) {
	// An error here can only come from invalid tag values; metrics never fail a job.
	_ = stats.RecordWithTags(ctx, r.mutators, ms...)
}

func (r metricsRecorder) inc(ctx context.Context, m *stats.Int64Measure) {
	r.record(ctx, m.M(1))
}

// poolGauges records the number of pool entries per status.
func (r metricsRecorder) poolGauges(ctx context.Context, pool []PoolWorker) {
	counts := make(map[string]int64, len(statusGaugeByWorkers))
	for _, w := range pool {
		counts[w.Status]++
	}
	ms := make([]stats.Measurement, 0, len(statusGaugeByWorkers))
	for status, m := range statusGaugeByWorkers {
		ms = append(ms, m.M(counts[status]))
	}
	r.record(ctx, ms...)
}
