package hatchery

import (
	"compress/gzip"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strings"
	"testing"
	"time"

	"go.opencensus.io/stats"
	"go.opencensus.io/stats/view"
	"go.opencensus.io/tag"

	"github.com/hatchery-vsphere/hatchery-vsphere/internal/cds"
	"github.com/hatchery-vsphere/hatchery-vsphere/internal/config"
)

var httpTestNow = time.Date(2025, 1, 10, 8, 0, 0, 123, time.UTC)

func httpTestOptions() HTTPOptions {
	lines := StatusLines{Service: "vsphere-a", Hostname: "h1"}
	return HTTPOptions{
		Version: "0.57.0",
		Now:     func() time.Time { return httpTestNow },
		Status: func(context.Context) cds.MonitoringStatus {
			return cds.MonitoringStatus{Now: httpTestNow, Lines: []cds.MonitoringStatusLine{lines.Line("OK", "Version", "0.57.0")}}
		},
		Workers: func(context.Context) (any, error) {
			return []PoolWorker{{Name: "calm-turing", Status: cds.StatusPending}}, nil
		},
	}
}

// serveTest sends one request to the handler and returns the response with its body
// (gunzipped when compressed).
func serveTest(t *testing.T, h http.Handler, method, path string, header map[string]string) (*http.Response, string) {
	t.Helper()
	req := httptest.NewRequest(method, path, nil)
	for k, v := range header {
		req.Header.Set(k, v)
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	resp := rec.Result()
	var body io.Reader = resp.Body
	if resp.Header.Get("Content-Encoding") == "gzip" {
		gz, err := gzip.NewReader(resp.Body)
		if err != nil {
			t.Fatalf("%s %s: bad gzip body: %v", method, path, err)
		}
		body = gz
	}
	b, err := io.ReadAll(body)
	if err != nil {
		t.Fatal(err)
	}
	return resp, string(b)
}

func TestHTTPVersion(t *testing.T) {
	resp, body := serveTest(t, NewHTTPHandler(httpTestOptions()), "GET", "/mon/version", nil)
	if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "application/json" {
		t.Fatalf("status %d, content type %q", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	want := `{"version":"0.57.0","architecture":"` + runtime.GOARCH + `","os":"` + runtime.GOOS + `","git_hash":"` + GitHash + `","build_time":"` + BuildTime + `"}`
	if body != want {
		t.Errorf("body %s, want %s", body, want)
	}
}

func TestHTTPStatus(t *testing.T) {
	opts := httpTestOptions()
	resp, body := serveTest(t, NewHTTPHandler(opts), "GET", "/mon/status", nil)
	want := `{"now":"2025-01-10T08:00:00.000000123Z","lines":[{"status":"OK","component":"Version","value":"0.57.0","type":"hatchery","service":"vsphere-a","hostname":"h1"}]}`
	if resp.StatusCode != 200 || body != want {
		t.Errorf("status %d body %s", resp.StatusCode, body)
	}

	opts.Status = func(context.Context) cds.MonitoringStatus {
		return cds.MonitoringStatus{Lines: []cds.MonitoringStatusLine{
			{Status: "OK", Component: "Version"}, {Status: "WARN", Component: "x"}, {Status: "AL", Component: "VirtualMachines", Value: "Error listing"},
		}}
	}
	if resp, body := serveTest(t, NewHTTPHandler(opts), "GET", "/mon/status", nil); resp.StatusCode != 503 || !strings.Contains(body, "Error listing") {
		t.Errorf("an AL line should give 503 with the status body, got %d %s", resp.StatusCode, body)
	}
}

func TestHTTPWorkers(t *testing.T) {
	opts := httpTestOptions()
	if resp, body := serveTest(t, NewHTTPHandler(opts), "GET", "/mon/workers", nil); resp.StatusCode != 200 || body != `[{"name":"calm-turing","status":"Pending"}]` {
		t.Errorf("status %d body %s", resp.StatusCode, body)
	}
	opts.Workers = func(context.Context) (any, error) { return []PoolWorker(nil), nil }
	if _, body := serveTest(t, NewHTTPHandler(opts), "GET", "/mon/workers", nil); body != `[]` {
		t.Errorf("an empty pool should be [], got %s", body)
	}
	opts.Workers = func(context.Context) (any, error) { return nil, errors.New("vcenter password is hunter2") }
	resp, body := serveTest(t, NewHTTPHandler(opts), "GET", "/mon/workers", nil)
	if resp.StatusCode != 500 || !strings.Contains(body, `"id":1,`) || strings.Contains(body, "hunter2") {
		t.Errorf("a failed pool should be a 500 unknown error without details, got %d %s", resp.StatusCode, body)
	}
	opts.Workers = func(context.Context) (any, error) {
		return nil, &cds.APIError{ID: cds.ErrIDForbidden, Message: "forbidden", StatusCode: 403}
	}
	if resp, body := serveTest(t, NewHTTPHandler(opts), "GET", "/mon/workers", nil); resp.StatusCode != 403 || !strings.Contains(body, `"id":11,`) {
		t.Errorf("an API error should keep its status and id, got %d %s", resp.StatusCode, body)
	}
}

func TestHTTPMetrics(t *testing.T) {
	opts := httpTestOptions()
	resp, body := serveTest(t, NewHTTPHandler(opts), "GET", "/mon/metrics", nil)
	if resp.StatusCode != 404 || !strings.Contains(body, `"id":38`) {
		t.Errorf("no exporter should give the 404 error, got %d %s", resp.StatusCode, body)
	}

	var innerEncoding string
	opts.Metrics = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		innerEncoding = r.Header.Get("Accept-Encoding")
		w.Header().Set("Content-Type", "text/plain; version=0.0.4")
		_, _ = io.WriteString(w, "cds_hatchery_jobs_count 3\n")
	})
	h := NewHTTPHandler(opts)
	resp, body = serveTest(t, h, "GET", "/mon/metrics", map[string]string{"Accept-Encoding": "gzip"})
	if resp.StatusCode != 200 || body != "cds_hatchery_jobs_count 3\n" || resp.Header.Get("Content-Type") != "text/plain; version=0.0.4" {
		t.Errorf("status %d type %q body %q", resp.StatusCode, resp.Header.Get("Content-Type"), body)
	}
	if resp.Header.Get("Content-Encoding") != "gzip" || innerEncoding != "" {
		t.Errorf("the response should be compressed once (encoding %q, inner handler saw Accept-Encoding %q)", resp.Header.Get("Content-Encoding"), innerEncoding)
	}
	resp, _ = serveTest(t, h, "GET", "/mon/metrics", map[string]string{"Accept-Encoding": "gzip", "User-Agent": "Prometheus/2.51.0"})
	if resp.Header.Get("Content-Encoding") != "" {
		t.Error("a Prometheus scraper should get an uncompressed response")
	}
}

func TestHTTPMetricsAll(t *testing.T) {
	measure := stats.Int64("cds/hatchery/test_jobs", "jobs seen", stats.UnitDimensionless)
	key := tag.MustNewKey("service_name")
	views := []*view.View{{Name: "cds/hatchery/test_jobs_count", Description: "jobs counted", Measure: measure, TagKeys: []tag.Key{key}, Aggregation: view.Count()}}
	opts := httpTestOptions()
	if _, body := serveTest(t, NewHTTPHandler(opts), "GET", "/mon/metrics/all", nil); body != `[]` {
		t.Errorf("no views should be [], got %s", body)
	}
	opts.Views = func() []*view.View { return views }
	_, body := serveTest(t, NewHTTPHandler(opts), "GET", "/mon/metrics/all", nil)
	want := `[{"name":"cds/hatchery/test_jobs_count","description":"jobs counted","tags":["service_name"],"dimension":"1","aggregagtion":"Count"}]`
	if body != want {
		t.Errorf("body %s, want %s", body, want)
	}
}

func TestHTTPNotFoundAndOptions(t *testing.T) {
	h := NewHTTPHandler(httpTestOptions())
	for _, c := range []struct{ method, path string }{{"GET", "/nope"}, {"POST", "/mon/version"}, {"DELETE", "/mon/status"}, {"GET", "/"}} {
		resp, body := serveTest(t, h, c.method, c.path, nil)
		var apiErr struct {
			ID        int    `json:"id"`
			Message   string `json:"message"`
			RequestID string `json:"request_id"`
		}
		if err := json.Unmarshal([]byte(body), &apiErr); err != nil || resp.StatusCode != 404 || apiErr.ID != 38 ||
			apiErr.Message == "" || apiErr.RequestID != resp.Header.Get("Request-ID") || resp.Header.Get("Content-Type") != "application/json" {
			t.Errorf("%s %s: %d %s (%v)", c.method, c.path, resp.StatusCode, body, err)
		}
	}
	resp, body := serveTest(t, h, "OPTIONS", "/mon/status", nil)
	if resp.StatusCode != 200 || body != "" || resp.Header.Get("Access-Control-Allow-Origin") != "*" {
		t.Errorf("OPTIONS: %d %q", resp.StatusCode, body)
	}
	if resp, _ := serveTest(t, h, "OPTIONS", "/nope", nil); resp.StatusCode != 404 {
		t.Errorf("OPTIONS on an unknown path: %d", resp.StatusCode)
	}
}

func TestHTTPHeaders(t *testing.T) {
	h := NewHTTPHandler(httpTestOptions())
	const id = "0b9a1f4e-3a3c-4c8e-9a50-4d5b3b3c2a11"
	resp, _ := serveTest(t, h, "GET", "/mon/version", map[string]string{"Request-ID": id})
	for k, want := range map[string]string{
		"Request-ID":                   id,
		"Access-Control-Allow-Origin":  "*",
		"Access-Control-Allow-Methods": "GET,OPTIONS,PUT,POST,DELETE",
		"X-Api-Time":                   "2025-01-10T08:00:00Z",
		"X-Api-Nanoseconds-Time":       "1736496000000000123",
		"Etag":                         "1736496000",
		"X-Api-Process-Time":           "0s",
	} {
		if got := resp.Header.Get(k); got != want {
			t.Errorf("%s = %q, want %q", k, got, want)
		}
	}
	if resp.Header.Get("Access-Control-Allow-Headers") == "" || resp.Header.Get("Access-Control-Expose-Headers") == "" {
		t.Error("CORS header lists missing")
	}
	resp, _ = serveTest(t, h, "GET", "/mon/version", map[string]string{"Request-ID": "not-a-uuid"})
	if got := resp.Header.Get("Request-ID"); got == "not-a-uuid" || !cds.IsUUID(got) {
		t.Errorf("an invalid Request-ID should be replaced by a new UUID, got %q", got)
	}
}

func TestHTTPGzip(t *testing.T) {
	h := NewHTTPHandler(httpTestOptions())
	resp, body := serveTest(t, h, "GET", "/mon/workers", map[string]string{"Accept-Encoding": "deflate, gzip;q=0.8"})
	if resp.Header.Get("Content-Encoding") != "gzip" || body != `[{"name":"calm-turing","status":"Pending"}]` {
		t.Errorf("encoding %q body %s", resp.Header.Get("Content-Encoding"), body)
	}
	if resp, _ := serveTest(t, h, "GET", "/mon/workers", nil); resp.Header.Get("Content-Encoding") != "" {
		t.Error("no Accept-Encoding should give an uncompressed response")
	}
}

func TestHTTPPprof(t *testing.T) {
	opts := httpTestOptions()
	if resp, _ := serveTest(t, NewHTTPHandler(opts), "GET", "/debug/pprof/", nil); resp.StatusCode != 404 {
		t.Errorf("pprof should be off by default, got %d", resp.StatusCode)
	}
	opts.EnablePprof = true
	h := NewHTTPHandler(opts)
	if resp, body := serveTest(t, h, "GET", "/debug/pprof/", nil); resp.StatusCode != 200 || !strings.Contains(body, "goroutine") {
		t.Errorf("pprof index: %d", resp.StatusCode)
	}
	if resp, _ := serveTest(t, h, "GET", "/debug/pprof/cmdline", nil); resp.StatusCode != 200 {
		t.Errorf("pprof cmdline: %d", resp.StatusCode)
	}
	if resp, body := serveTest(t, h, "GET", "/debug/pprof/goroutine?debug=1", nil); resp.StatusCode != 200 || !strings.Contains(body, "goroutine profile") {
		t.Errorf("pprof goroutine: %d", resp.StatusCode)
	}
}

func TestHTTPExtra(t *testing.T) {
	opts := httpTestOptions()
	opts.Extra = map[string]http.Handler{
		"/": http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "text/html; charset=utf-8")
			_, _ = io.WriteString(w, "<h1>hatchery</h1>")
		}),
		"/mon/version": http.NotFoundHandler(), // cannot replace a built-in route
	}
	h := NewHTTPHandler(opts)
	resp, body := serveTest(t, h, "GET", "/", nil)
	if resp.StatusCode != 200 || body != "<h1>hatchery</h1>" || resp.Header.Get("Content-Type") != "text/html; charset=utf-8" || resp.Header.Get("Request-ID") == "" {
		t.Errorf("extra page: %d %q %q", resp.StatusCode, body, resp.Header.Get("Content-Type"))
	}
	if resp, _ := serveTest(t, h, "GET", "/mon/version", nil); resp.StatusCode != 200 {
		t.Errorf("built-in route replaced: %d", resp.StatusCode)
	}
	if resp, _ := serveTest(t, h, "GET", "/mon/ui", nil); resp.StatusCode != 404 {
		t.Errorf("unregistered extra path: %d", resp.StatusCode)
	}
}

func TestHTTPServerSettingsAndRun(t *testing.T) {
	srv := NewHTTPServer(HTTPOptions{Addr: HTTPListenAddr(config.HTTP{Addr: "127.0.0.1", Port: 0})})
	if srv.Addr != "127.0.0.1:0" || srv.ReadTimeout != 10*time.Minute || srv.WriteTimeout != 10*time.Minute || srv.MaxHeaderBytes != 1<<20 {
		t.Errorf("server settings: %+v", srv)
	}
	if got := HTTPListenAddr(config.HTTP{Port: 8086}); got != ":8086" {
		t.Errorf("listen address %q", got)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := RunHTTPServer(ctx, srv); err != nil {
		t.Errorf("a shutdown asked by the context should return nil, got %v", err)
	}
	if err := RunHTTPServer(context.Background(), NewHTTPServer(HTTPOptions{Addr: "256.0.0.1:1"})); err == nil {
		t.Error("a listen error should be returned")
	}
}

func TestHTTPServerMetrics(t *testing.T) {
	views := HTTPServerViews()
	if err := view.Register(views...); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { view.Unregister(views...) })

	opts := httpTestOptions()
	opts.ServiceName = "vsphere-metrics-test"
	h := NewHTTPHandler(opts)
	serveTest(t, h, "GET", "/mon/version", nil)
	serveTest(t, h, "GET", "/mon/version", nil)
	serveTest(t, h, "GET", "/nope", nil)

	counts := func(viewName string) map[string]int64 {
		rows, err := view.RetrieveData(viewName)
		if err != nil {
			t.Fatal(err)
		}
		out := make(map[string]int64)
		for _, row := range rows {
			var service, handler, code string
			for _, tg := range row.Tags {
				switch tg.Key.Name() {
				case "service_name":
					service = tg.Value
				case "handler":
					handler = tg.Value
				case "status_code":
					code = tg.Value
				}
			}
			if service != opts.ServiceName {
				continue
			}
			if cd, ok := row.Data.(*view.CountData); ok {
				out[handler+" "+code] += cd.Value
			}
		}
		return out
	}
	if got := counts("cds/http/server/request_count_by_handler"); got["/mon/version "] != 2 || got["unknown "] != 1 {
		t.Errorf("request counts %v", got)
	}
	if got := counts("cds/http/server/response_count_by_status_code_and_handler"); got["/mon/version 200"] != 2 || got["unknown 404"] != 1 {
		t.Errorf("response counts %v", got)
	}
	if got := counts("cds/http/router/router_hits"); got["/mon/version "] != 2 || got["unknown "] != 0 {
		t.Errorf("router hits %v", got)
	}
	if _, body := serveTest(t, NewHTTPHandler(HTTPOptions{Views: HTTPServerViews}), "GET", "/mon/metrics/all", nil); !strings.Contains(body, `"name":"cds/http/server/latency_by_handler","description":"latency by handler","tags":["service_name","service_type","handler"],"dimension":"ms","aggregagtion":"Distribution"`) {
		t.Errorf("metrics/all: %s", body)
	}
}
