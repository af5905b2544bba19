package cds

import (
	"context"
	"errors"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"go.opencensus.io/stats"
	"go.opencensus.io/stats/view"
	"go.opencensus.io/tag"

	"github.com/hatchery-vsphere/hatchery-vsphere/internal/lifecycle"
)

// CDS API call metrics, recorded per HTTP attempt (a retried call counts once per attempt,
// which is what the API sees) when Config.Metrics is set. Prometheus names (view name with
// "/" turned into "_"):
//
//	cds_hatchery_cds_api_calls_total            counter   endpoint, status (1xx..5xx | error)
//	cds_hatchery_cds_api_errors_total           counter   endpoint, error (timeout | canceled | transport | 4xx | 5xx)
//	cds_hatchery_cds_api_call_duration_seconds  histogram endpoint
//
// plus service_name and service_type, read from the request context's tags. endpoint is the
// method and path template of the protocol spec's section 6 catalogue (e.g.
// "POST /queue/workflows/{id}/book"), never the concrete path, or "other".
const (
	ViewAPICalls        = "cds/hatchery/cds_api_calls_total"
	ViewAPIErrors       = "cds/hatchery/cds_api_errors_total"
	ViewAPICallDuration = "cds/hatchery/cds_api_call_duration_seconds"
)

// EndpointOther is the endpoint label of a request outside the catalogue.
const EndpointOther = "other"

var (
	tagServiceName = tag.MustNewKey("service_name")
	tagServiceType = tag.MustNewKey("service_type")
	tagEndpoint    = tag.MustNewKey("endpoint")
	tagStatus      = tag.MustNewKey("status")
	tagError       = tag.MustNewKey("error")
)

var (
	mAPICallDuration = stats.Float64("cds/hatchery/cds_api_call_duration", "duration of a CDS API HTTP request, until its response headers", "s")
	mAPIErrors       = stats.Int64("cds/hatchery/cds_api_errors", "failed CDS API HTTP requests", stats.UnitDimensionless)
)

// apiBuckets span a cached GET (milliseconds) to the 60 s request timeout.
var apiBuckets = []float64{0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60}

var metricViews = []*view.View{
	{
		Name:        ViewAPICalls,
		Description: "CDS API HTTP requests by endpoint and status class",
		Measure:     mAPICallDuration,
		Aggregation: view.Count(),
		TagKeys:     []tag.Key{tagServiceName, tagServiceType, tagEndpoint, tagStatus},
	},
	{
		Name:        ViewAPIErrors,
		Description: "failed CDS API HTTP requests by endpoint and error kind",
		Measure:     mAPIErrors,
		Aggregation: view.Count(),
		TagKeys:     []tag.Key{tagServiceName, tagServiceType, tagEndpoint, tagError},
	},
	{
		Name:        ViewAPICallDuration,
		Description: mAPICallDuration.Description(),
		Measure:     mAPICallDuration,
		Aggregation: view.Distribution(apiBuckets...),
		TagKeys:     []tag.Key{tagServiceName, tagServiceType, tagEndpoint},
	},
}

// MetricViews returns the CDS API call views (for /mon/metrics/all).
func MetricViews() []*view.View { return append([]*view.View(nil), metricViews...) }

// RegisterViews registers the CDS API call views with OpenCensus. Later calls return the
// first result.
func RegisterViews() error { return viewSet.Register() }

var viewSet = lifecycle.NewViewSet("CDS API call views", metricViews...)

// endpointTemplates are the paths of the section 6 catalogue; "{...}" matches one segment.
var endpointTemplates = []struct {
	method string
	path   string
}{
	{http.MethodPost, "/auth/consumer/builtin/signin"},                                        // 1
	{http.MethodPost, "/v2/auth/consumer/hatchery/signin"},                                    // 2
	{http.MethodPost, "/auth/consumer/signout"},                                               // 3
	{http.MethodPost, "/services/heartbeat"},                                                  // 4
	{http.MethodPost, "/v2/hatchery/heartbeat"},                                               // 5
	{http.MethodGet, "/config/cdn"},                                                           // 6
	{http.MethodGet, "/v2/config/cdn"},                                                        // 7
	{http.MethodGet, "/worker/model/enabled"},                                                 // 8
	{http.MethodGet, "/worker/model/{group}/{name}"},                                          // 9
	{http.MethodGet, "/worker/model/{group}/{name}/secret"},                                   // 10
	{http.MethodPut, "/worker/model/{group}/{name}/book"},                                     // 11
	{http.MethodPut, "/worker/model/{group}/{name}/error"},                                    // 12
	{http.MethodGet, "/worker"},                                                               // 13
	{http.MethodPost, "/worker/{id}/disable"},                                                 // 14
	{http.MethodGet, "/v2/worker"},                                                            // 15
	{http.MethodGet, "/queue/workflows"},                                                      // 16
	{http.MethodGet, "/queue/workflows/{id}/infos"},                                           // 17
	{http.MethodPost, "/queue/workflows/{id}/book"},                                           // 18
	{http.MethodDelete, "/queue/workflows/{id}/book"},                                         // 19
	{http.MethodPost, "/queue/workflows/{id}/spawn/infos"},                                    // 20
	{http.MethodPost, "/queue/workflows/{id}/result"},                                         // 21
	{http.MethodGet, "/ws"},                                                                   // 22
	{http.MethodGet, "/v2/queue/{region}"},                                                    // 23
	{http.MethodGet, "/v2/queue/{region}/job/{runJobID}"},                                     // 24
	{http.MethodPost, "/v2/queue/{region}/job/{runJobID}/hatchery/take"},                      // 25
	{http.MethodDelete, "/v2/queue/{region}/job/{runJobID}/hatchery/take"},                    // 26
	{http.MethodPost, "/v2/queue/{region}/job/{runJobID}/info"},                               // 27
	{http.MethodGet, "/v2/hatchery/ws"},                                                       // 28
	{http.MethodGet, "/v2/project/{projKey}/vcs/{vcs}/repository/{repo}/workermodel/{model}"}, // 29
}

// endpointTemplate maps a request method and path (relative to the API base URL, escaped,
// without query) to its catalogue label "METHOD /template", or EndpointOther. A literal
// segment beats a parameter, so "/worker/model/enabled" is #8, not #9.
func endpointTemplate(method, path string) string {
	segs := strings.Split(strings.Trim(path, "/"), "/")
	best, bestLiterals := EndpointOther, -1
	for _, t := range endpointTemplates {
		if t.method != method {
			continue
		}
		tsegs := strings.Split(strings.Trim(t.path, "/"), "/")
		if len(tsegs) != len(segs) {
			continue
		}
		literals, ok := 0, true
		for i, ts := range tsegs {
			if strings.HasPrefix(ts, "{") {
				if segs[i] == "" {
					ok = false
					break
				}
				continue
			}
			if ts != segs[i] {
				ok = false
				break
			}
			literals++
		}
		if ok && literals > bestLiterals {
			best, bestLiterals = t.method+" "+t.path, literals
		}
	}
	return best
}

// NewMetricsTransport returns next recording the CDS API call metrics of every request.
// apiURL is the API base URL: its path, if any, is stripped before matching the catalogue.
// Responses and errors of next are returned unchanged (WebSocket upgrades included).
func NewMetricsTransport(next http.RoundTripper, apiURL string) http.RoundTripper {
	prefix := ""
	if u, err := url.Parse(apiURL); err == nil {
		prefix = strings.TrimSuffix(u.EscapedPath(), "/")
	}
	return &metricsTransport{next: next, prefix: prefix, now: time.Now}
}

type metricsTransport struct {
	next   http.RoundTripper
	prefix string
	now    func() time.Time
}

func (t *metricsTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	start := t.now()
	resp, err := t.next.RoundTrip(req)
	seconds := t.now().Sub(start).Seconds()

	path := strings.TrimPrefix(req.URL.EscapedPath(), t.prefix)
	endpoint := endpointTemplate(req.Method, path)
	status, errKind := "error", ""
	switch {
	case err != nil:
		errKind = transportErrorKind(err)
	default:
		status = strconv.Itoa(resp.StatusCode/100) + "xx"
		if resp.StatusCode >= 400 {
			errKind = status
		}
	}
	ctx := req.Context()
	// Metrics never fail a request: an error could only come from an invalid tag value.
	_ = stats.RecordWithTags(ctx, []tag.Mutator{tag.Upsert(tagEndpoint, endpoint), tag.Upsert(tagStatus, status)},
		mAPICallDuration.M(seconds))
	if errKind != "" {
		_ = stats.RecordWithTags(ctx, []tag.Mutator{tag.Upsert(tagEndpoint, endpoint), tag.Upsert(tagError, errKind)},
			mAPIErrors.M(1))
	}
	return resp, err
}

// transportErrorKind classifies a request that got no response.
func transportErrorKind(err error) string {
	var netErr net.Error
	switch {
	case errors.Is(err, context.DeadlineExceeded), errors.As(err, &netErr) && netErr.Timeout():
		return "timeout"
	case errors.Is(err, context.Canceled):
		return "canceled"
	default:
		return "transport"
	}
}
