package cds

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"

	"go.opencensus.io/stats/view"
	"go.opencensus.io/tag"
)

func TestEndpointTemplate(t *testing.T) {
	tests := []struct {
		method, path, want string
	}{
		{"POST", "/auth/consumer/builtin/signin", "POST /auth/consumer/builtin/signin"},
		{"GET", "/worker/model/enabled", "GET /worker/model/enabled"},
		{"GET", "/worker/model/shared.infra/debian12", "GET /worker/model/{group}/{name}"},
		{"PUT", "/worker/model/grp/m1/book", "PUT /worker/model/{group}/{name}/book"},
		{"GET", "/worker", "GET /worker"},
		{"POST", "/worker/7a3f/disable", "POST /worker/{id}/disable"},
		{"GET", "/v2/worker", "GET /v2/worker"},
		{"GET", "/queue/workflows", "GET /queue/workflows"},
		{"POST", "/queue/workflows/42/book", "POST /queue/workflows/{id}/book"},
		{"DELETE", "/queue/workflows/42/book", "DELETE /queue/workflows/{id}/book"},
		{"POST", "/queue/workflows/42/spawn/infos", "POST /queue/workflows/{id}/spawn/infos"},
		{"GET", "/ws", "GET /ws"},
		{"GET", "/v2/queue/eu-west", "GET /v2/queue/{region}"},
		{"GET", "/v2/queue/eu-west/job/0b6e", "GET /v2/queue/{region}/job/{runJobID}"},
		{"POST", "/v2/queue/eu-west/job/0b6e/hatchery/take", "POST /v2/queue/{region}/job/{runJobID}/hatchery/take"},
		{"GET", "/v2/hatchery/ws", "GET /v2/hatchery/ws"},
		{"GET", "/v2/project/PRJ/vcs/github/repository/ovh%2Fcds/workermodel/docker", "GET /v2/project/{projKey}/vcs/{vcs}/repository/{repo}/workermodel/{model}"},
		// Outside the catalogue: never the raw path.
		{"PATCH", "/queue/workflows/42/book", EndpointOther},
		{"GET", "/queue/workflows/42/unknown", EndpointOther},
		{"GET", "/worker//disable", EndpointOther},
	}
	for _, tt := range tests {
		if got := endpointTemplate(tt.method, tt.path); got != tt.want {
			t.Errorf("endpointTemplate(%s %s) = %q, want %q", tt.method, tt.path, got, tt.want)
		}
	}
}

// viewCount sums the count (or histogram sample count) of the rows of a view whose tags
// include every pair of want.
func viewCount(t *testing.T, name string, want map[string]string) int64 {
	t.Helper()
	rows, err := view.RetrieveData(name)
	if err != nil {
		t.Fatalf("retrieve %s: %v", name, err)
	}
	var n int64
rows:
	for _, r := range rows {
		got := map[string]string{}
		for _, tg := range r.Tags {
			got[tg.Key.Name()] = tg.Value
		}
		for k, v := range want {
			if got[k] != v {
				continue rows
			}
		}
		switch d := r.Data.(type) {
		case *view.CountData:
			n += d.Value
		case *view.DistributionData:
			n += d.Count
		}
	}
	return n
}

func TestMetricsTransportCountsByEndpointTemplate(t *testing.T) {
	// Views are process-wide: a name of its own per run keeps -count=N runs apart.
	svcName := uniqueServiceName(t)
	if err := RegisterViews(); err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/cdsapi/queue/workflows/42/book":
			w.Header().Set("Content-Type", "application/json")
			_, _ = w.Write([]byte(`{}`))
		case "/cdsapi/queue/workflows/43/book":
			w.WriteHeader(http.StatusNotFound)
		default:
			w.WriteHeader(http.StatusServiceUnavailable)
		}
	}))
	defer srv.Close()

	var p pauses
	// No consumer token: the client calls without signing in.
	c, err := NewV1(Config{URL: srv.URL + "/cdsapi", Metrics: true, Pause: p.Pause}, V1SigninRequest{})
	if err != nil {
		t.Fatal(err)
	}
	// A service name of its own isolates this test's series from any other recording.
	ctx, err := tag.New(context.Background(), tag.Upsert(tagServiceName, svcName), tag.Upsert(tagServiceType, "hatchery"))
	if err != nil {
		t.Fatal(err)
	}

	if _, err := c.QueueJobBook(ctx, 42); err != nil {
		t.Fatalf("book 42: %v", err)
	}
	if _, err := c.QueueJobBook(ctx, 43); err == nil {
		t.Fatal("book 43: want the 404 error")
	}
	if err := c.QueueJobRelease(ctx, 44); err == nil {
		t.Fatal("release 44: want the 503 error")
	}

	svc := map[string]string{"service_name": svcName}
	with := func(kv ...string) map[string]string {
		m := map[string]string{"service_name": svcName, "service_type": "hatchery"}
		for i := 0; i < len(kv); i += 2 {
			m[kv[i]] = kv[i+1]
		}
		return m
	}
	checks := []struct {
		view string
		tags map[string]string
		want int64
	}{
		{ViewAPICalls, with("endpoint", "POST /queue/workflows/{id}/book", "status", "2xx"), 1},
		{ViewAPICalls, with("endpoint", "POST /queue/workflows/{id}/book", "status", "4xx"), 1},
		// Counted per attempt: the 503 is retried twice.
		{ViewAPICalls, with("endpoint", "DELETE /queue/workflows/{id}/book", "status", "5xx"), 3},
		{ViewAPICalls, svc, 5},
		{ViewAPIErrors, with("endpoint", "POST /queue/workflows/{id}/book", "error", "4xx"), 1},
		{ViewAPIErrors, with("endpoint", "DELETE /queue/workflows/{id}/book", "error", "5xx"), 3},
		{ViewAPIErrors, svc, 4},
		{ViewAPICallDuration, with("endpoint", "POST /queue/workflows/{id}/book"), 2},
		{ViewAPICallDuration, with("endpoint", "DELETE /queue/workflows/{id}/book"), 3},
	}
	for _, ck := range checks {
		if got := viewCount(t, ck.view, ck.tags); got != ck.want {
			t.Errorf("%s%v = %d, want %d", ck.view, ck.tags, got, ck.want)
		}
	}
}

func TestMetricsTransportTransportError(t *testing.T) {
	// Views are process-wide: a name of its own per run keeps -count=N runs apart.
	svcName := uniqueServiceName(t)
	if err := RegisterViews(); err != nil {
		t.Fatal(err)
	}
	failing := roundTripFunc(func(*http.Request) (*http.Response, error) {
		return nil, errors.New("connection refused")
	})
	rt := NewMetricsTransport(failing, "http://cds.invalid")
	ctx, err := tag.New(context.Background(), tag.Upsert(tagServiceName, svcName))
	if err != nil {
		t.Fatal(err)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://cds.invalid/v2/queue/eu/job/9", nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := rt.RoundTrip(req); err == nil || err.Error() != "connection refused" {
		t.Fatalf("RoundTrip error = %v, want the transport's error unchanged", err)
	}
	endpoint := "GET /v2/queue/{region}/job/{runJobID}"
	if got := viewCount(t, ViewAPICalls, map[string]string{"service_name": svcName, "endpoint": endpoint, "status": "error"}); got != 1 {
		t.Errorf("calls with status error = %d, want 1", got)
	}
	if got := viewCount(t, ViewAPIErrors, map[string]string{"service_name": svcName, "endpoint": endpoint, "error": "transport"}); got != 1 {
		t.Errorf("transport errors = %d, want 1", got)
	}
}

func TestMetricsOffByDefault(t *testing.T) {
	c, err := NewV1(Config{URL: "http://cds.invalid"}, V1SigninRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := c.httpClient.Transport.(*metricsTransport); ok {
		t.Fatal("metrics transport installed without Config.Metrics")
	}
}

type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

var serviceRuns atomic.Int64

func uniqueServiceName(t *testing.T) string {
	return fmt.Sprintf("%s-%d", t.Name(), serviceRuns.Add(1))
}
