package lifecycle_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"slices"
	"sort"
	"sync/atomic"
	"testing"
	"time"

	ocprom "contrib.go.opencensus.io/exporter/prometheus"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"github.com/vmware/govmomi/object"
	"go.uber.org/mock/gomock"

	"github.com/hatchery-vsphere/hatchery-vsphere/internal/cds"
	"github.com/hatchery-vsphere/hatchery-vsphere/internal/lifecycle"
	"github.com/hatchery-vsphere/hatchery-vsphere/internal/vsphere"
	"github.com/hatchery-vsphere/hatchery-vsphere/mock_vsphere"
)

// scrape serves the registered views through the contrib Prometheus exporter, as the daemon
// does at /mon/metrics, and parses the text exposition.
func scrape(t *testing.T) map[string]*dto.MetricFamily {
	t.Helper()
	exporter, err := ocprom.NewExporter(ocprom.Options{Registry: prometheus.NewRegistry()})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(exporter)
	defer srv.Close()
	resp, err := http.Get(srv.URL + "/mon/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("scrape: HTTP %d", resp.StatusCode)
	}
	// Legacy validation: the names must also suit Prometheus servers without UTF-8 names.
	parser := expfmt.NewTextParser(model.LegacyValidation)
	families, err := parser.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatalf("parse scrape: %v", err)
	}
	return families
}

// recordSamples records one sample of every metric of the three packages.
func recordSamples(t *testing.T, ctx context.Context, passEnd time.Time) {
	t.Helper()
	lifecycle.RecordSpawn(ctx, lifecycle.SpawnOK)
	lifecycle.RecordSpawn(ctx, lifecycle.SpawnIPTimeout)
	lifecycle.RecordSpawn(ctx, "vm-worker-1234") // not a result: must not become a label value
	lifecycle.RecordCloneDuration(ctx, 42*time.Second)
	lifecycle.RecordJobToLaunch(ctx, 95*time.Second)
	lifecycle.RecordClaimLatency(ctx, 1500*time.Millisecond)
	lifecycle.RecordDeletion(ctx, lifecycle.DeletionFinished)
	lifecycle.RecordDeletion(ctx, lifecycle.DeletionAWOL)
	lifecycle.RecordJobSkipped(ctx, lifecycle.GateCapacity)
	lifecycle.RecordPassAt(ctx, "cleanup", passEnd, 300*time.Millisecond, true)
	lifecycle.RecordPassAt(ctx, "cleanup", passEnd.Add(time.Minute), 2*time.Second, false)

	// vCenter calls through the decorator.
	ctrl := gomock.NewController(t)
	m := mock_vsphere.NewMockVSphereClient(ctrl)
	m.EXPECT().StartVirtualMachine(gomock.Any(), gomock.Any()).Return(nil)
	m.EXPECT().DestroyVirtualMachine(gomock.Any(), gomock.Any()).Return(vsphere.ErrNotFound)
	vc := vsphere.Instrument(m)
	if err := vc.StartVirtualMachine(ctx, &object.VirtualMachine{}); err != nil {
		t.Fatal(err)
	}
	if err := vc.DestroyVirtualMachine(ctx, &object.VirtualMachine{}); !errors.Is(err, vsphere.ErrNotFound) {
		t.Fatalf("destroy error = %v", err)
	}

	// CDS API calls through the client's metrics transport.
	api := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/v2/hatchery/heartbeat" {
			return
		}
		w.WriteHeader(http.StatusForbidden)
	}))
	defer api.Close()
	c, err := cds.NewV2(cds.Config{URL: api.URL, Metrics: true}, cds.V2SigninRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Heartbeat(ctx, cds.MonitoringStatus{}); err != nil {
		t.Fatalf("heartbeat: %v", err)
	}
	if _, err := c.V2QueueJobInfo(ctx, "eu", "7d1c"); err == nil {
		t.Fatal("job info: want the 403 error")
	}
}

func TestMetricsScrape(t *testing.T) {
	// Views are process-wide: a name of its own per run keeps -count=N runs apart.
	serviceName := uniqueServiceName(t)
	for _, register := range []func() error{lifecycle.RegisterViews, vsphere.RegisterViews, cds.RegisterViews} {
		if err := register(); err != nil {
			t.Fatal(err)
		}
	}
	ctx, err := lifecycle.WithService(context.Background(), serviceName)
	if err != nil {
		t.Fatal(err)
	}
	passEnd := time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)
	recordSamples(t, ctx, passEnd)

	families := scrape(t)

	base := []string{"service_name", "service_type"}
	want := []struct {
		name   string
		typ    dto.MetricType
		labels []string
	}{
		{"cds_hatchery_vsphere_spawns_total", dto.MetricType_COUNTER, []string{"result"}},
		{"cds_hatchery_vsphere_clone_duration_seconds", dto.MetricType_HISTOGRAM, nil},
		{"cds_hatchery_vsphere_job_to_launch_seconds", dto.MetricType_HISTOGRAM, nil},
		{"cds_hatchery_vsphere_claim_latency_seconds", dto.MetricType_HISTOGRAM, nil},
		{"cds_hatchery_vsphere_deletions_total", dto.MetricType_COUNTER, []string{"reason"}},
		{"cds_hatchery_vsphere_loop_pass_duration_seconds", dto.MetricType_HISTOGRAM, []string{"loop", "result"}},
		{"cds_hatchery_vsphere_loop_last_success_timestamp_seconds", dto.MetricType_GAUGE, []string{"loop"}},
		{"cds_hatchery_vsphere_jobs_skipped_total", dto.MetricType_COUNTER, []string{"gate"}},
		{"cds_hatchery_vsphere_vcenter_calls_total", dto.MetricType_COUNTER, []string{"method", "result"}},
		{"cds_hatchery_vsphere_vcenter_errors_total", dto.MetricType_COUNTER, []string{"method", "fault"}},
		{"cds_hatchery_vsphere_vcenter_call_duration_seconds", dto.MetricType_HISTOGRAM, []string{"method"}},
		{"cds_hatchery_cds_api_calls_total", dto.MetricType_COUNTER, []string{"endpoint", "status"}},
		{"cds_hatchery_cds_api_errors_total", dto.MetricType_COUNTER, []string{"endpoint", "error"}},
		{"cds_hatchery_cds_api_call_duration_seconds", dto.MetricType_HISTOGRAM, []string{"endpoint"}},
	}
	for _, w := range want {
		mf, ok := families[w.name]
		if !ok {
			t.Errorf("%s: missing from the scrape", w.name)
			continue
		}
		if mf.GetType() != w.typ {
			t.Errorf("%s: type %v, want %v", w.name, mf.GetType(), w.typ)
		}
		wantLabels := append(slices.Clone(base), w.labels...)
		sort.Strings(wantLabels)
		for _, metric := range mf.GetMetric() {
			var got []string
			for _, lp := range metric.GetLabel() {
				got = append(got, lp.GetName())
			}
			sort.Strings(got)
			if !slices.Equal(got, wantLabels) {
				t.Errorf("%s: labels %v, want %v", w.name, got, wantLabels)
			}
		}
	}

	// What an operator reads off the samples.
	checks := []struct {
		name   string
		labels map[string]string
		want   float64
	}{
		{"cds_hatchery_vsphere_spawns_total", map[string]string{"result": "ok"}, 1},
		{"cds_hatchery_vsphere_spawns_total", map[string]string{"result": "ip-timeout"}, 1},
		{"cds_hatchery_vsphere_spawns_total", map[string]string{"result": "other"}, 1},
		{"cds_hatchery_vsphere_deletions_total", map[string]string{"reason": "awol"}, 1},
		{"cds_hatchery_vsphere_jobs_skipped_total", map[string]string{"gate": "capacity"}, 1},
		{"cds_hatchery_vsphere_clone_duration_seconds", nil, 42},
		{"cds_hatchery_vsphere_job_to_launch_seconds", nil, 95},
		{"cds_hatchery_vsphere_claim_latency_seconds", nil, 1.5},
		{"cds_hatchery_vsphere_loop_pass_duration_seconds", map[string]string{"loop": "cleanup", "result": "ok"}, 0.3},
		{"cds_hatchery_vsphere_loop_pass_duration_seconds", map[string]string{"loop": "cleanup", "result": "error"}, 2},
		// The failed pass after it does not move the last success.
		{"cds_hatchery_vsphere_loop_last_success_timestamp_seconds", map[string]string{"loop": "cleanup"}, float64(passEnd.Unix())},
		{"cds_hatchery_vsphere_vcenter_calls_total", map[string]string{"method": "StartVirtualMachine", "result": "ok"}, 1},
		{"cds_hatchery_vsphere_vcenter_errors_total", map[string]string{"method": "DestroyVirtualMachine", "fault": "not-found"}, 1},
		{"cds_hatchery_cds_api_calls_total", map[string]string{"endpoint": "POST /v2/hatchery/heartbeat", "status": "2xx"}, 1},
		{"cds_hatchery_cds_api_errors_total", map[string]string{"endpoint": "GET /v2/queue/{region}/job/{runJobID}", "error": "4xx"}, 1},
	}
	for _, ck := range checks {
		labels := map[string]string{"service_name": serviceName, "service_type": "hatchery"}
		for k, v := range ck.labels {
			labels[k] = v
		}
		got, ok := sampleValue(families[ck.name], labels)
		if !ok {
			t.Errorf("%s%v: no such series", ck.name, labels)
			continue
		}
		if got != ck.want {
			t.Errorf("%s%v = %v, want %v", ck.name, labels, got, ck.want)
		}
	}
}

// sampleValue is the value of the series of mf with exactly labels: the counter or gauge
// value, or the histogram's sum.
func sampleValue(mf *dto.MetricFamily, labels map[string]string) (float64, bool) {
	if mf == nil {
		return 0, false
	}
metrics:
	for _, m := range mf.GetMetric() {
		if len(m.GetLabel()) != len(labels) {
			continue
		}
		for _, lp := range m.GetLabel() {
			if v, ok := labels[lp.GetName()]; !ok || v != lp.GetValue() {
				continue metrics
			}
		}
		switch mf.GetType() {
		case dto.MetricType_COUNTER:
			return m.GetCounter().GetValue(), true
		case dto.MetricType_GAUGE:
			return m.GetGauge().GetValue(), true
		case dto.MetricType_HISTOGRAM:
			return m.GetHistogram().GetSampleSum(), true
		}
	}
	return 0, false
}

func TestRecordHelpersKeepLabelsLowCardinality(t *testing.T) {
	// Views are process-wide: a name of its own per run keeps -count=N runs apart.
	svcName := uniqueServiceName(t)
	if err := lifecycle.RegisterViews(); err != nil {
		t.Fatal(err)
	}
	ctx, err := lifecycle.WithService(context.Background(), svcName)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 50; i++ {
		name := "job-" + string(rune('a'+i%26)) + string(rune('a'+i/26))
		lifecycle.RecordDeletion(ctx, name)
		lifecycle.RecordJobSkipped(ctx, name)
		lifecycle.RecordSpawn(ctx, name)
	}
	families := scrape(t)
	for _, name := range []string{"cds_hatchery_vsphere_deletions_total", "cds_hatchery_vsphere_jobs_skipped_total", "cds_hatchery_vsphere_spawns_total"} {
		series := 0
		for _, m := range families[name].GetMetric() {
			for _, lp := range m.GetLabel() {
				if lp.GetName() == "service_name" && lp.GetValue() == svcName {
					series++
				}
			}
		}
		if series != 1 {
			t.Errorf("%s: %d series for 50 unknown values, want 1 (\"other\")", name, series)
		}
	}
}

var serviceRuns atomic.Int64

func uniqueServiceName(t *testing.T) string {
	return fmt.Sprintf("%s-%d", t.Name(), serviceRuns.Add(1))
}
