package hatchery

import (
	"compress/gzip"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/pprof"
	"reflect"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"time"

	"go.opencensus.io/stats"
	"go.opencensus.io/stats/view"
	"go.opencensus.io/tag"

	"github.com/hatchery-vsphere/hatchery-vsphere/internal/cds"
	"github.com/hatchery-vsphere/hatchery-vsphere/internal/config"
)

// HTTP server limits (spec §19).
const (
	httpServerTimeout   = 10 * time.Minute
	httpMaxHeaderBytes  = 1 << 20
	httpShutdownTimeout = 10 * time.Second
)

// Response headers of the CDS services (spec §19).
const (
	httpHeaderRequestID       = "Request-ID"
	httpAllowedMethods        = "GET,OPTIONS,PUT,POST,DELETE"
	httpAllowedHeaders        = "Content-Type, Authorization, Session-Token, X-Requested-With, Accept, Origin, Request-ID, If-None-Match, X-CDS-RemoteTime"
	httpExposedHeaders        = "Request-ID, X-Api-Time, X-Api-Nanoseconds-Time, X-Api-Process-Time, Etag, Content-Disposition"
	httpNotFoundMessage       = "resource not found"
	httpInternalErrorMessage  = "internal server error"
	httpPrometheusUserAgent   = "Prometheus"
	httpContentTypeJSON       = "application/json"
	httpPprofPrefix           = "/debug/pprof/"
	httpHeaderProcessTime     = "X-Api-Process-Time"
	httpHeaderAPITime         = "X-Api-Time"
	httpHeaderNanosecondsTime = "X-Api-Nanoseconds-Time"
)

// HTTPOptions configures the hatchery's HTTP server.
type HTTPOptions struct {
	// Addr is the listen address (see HTTPListenAddr).
	Addr string
	// ServiceName is the hatchery name, the service_name label of the HTTP metrics.
	ServiceName string
	// Version is reported on /mon/version; empty means the package Version.
	Version string
	// Status builds the live monitoring status of /mon/status; nil makes the route 404.
	Status func(ctx context.Context) cds.MonitoringStatus
	// Workers returns the worker pool served as a JSON array on /mon/workers; nil makes the
	// route 404.
	Workers func(ctx context.Context) (any, error)
	// Metrics serves the Prometheus exposition on /mon/metrics; nil makes the route 404.
	Metrics http.Handler
	// Views lists the registered OpenCensus views described on /mon/metrics/all (OpenCensus
	// cannot enumerate them itself).
	Views func() []*view.View
	// EnablePprof serves /debug/pprof/*. Off by default: profiles reveal internals and the
	// server has no authentication.
	EnablePprof bool
	// Extra adds handlers at exact paths (e.g. a status page at "/" and "/mon/ui"), for
	// every method. They cannot replace the routes above.
	Extra map[string]http.Handler
	// Now is the clock of the time headers; nil means time.Now.
	Now func() time.Time
}

// HTTPListenAddr is the listen address of the http section: "<addr>:<port>" (an empty addr
// listens on every interface).
func HTTPListenAddr(c config.HTTP) string {
	return net.JoinHostPort(c.Addr, strconv.Itoa(c.Port))
}

// NewHTTPServer returns the HTTP server of spec §19, not started (see RunHTTPServer).
func NewHTTPServer(opts HTTPOptions) *http.Server {
	return &http.Server{
		Addr:           opts.Addr,
		Handler:        NewHTTPHandler(opts),
		ReadTimeout:    httpServerTimeout,
		WriteTimeout:   httpServerTimeout,
		MaxHeaderBytes: httpMaxHeaderBytes,
	}
}

// RunHTTPServer listens and serves until ctx is done, then shuts the server down gracefully.
// It returns nil after a shutdown asked by ctx, the listen or serve error otherwise.
func RunHTTPServer(ctx context.Context, srv *http.Server) error {
	ln, err := net.Listen("tcp", srv.Addr)
	if err != nil {
		return fmt.Errorf("listen on %q: %w", srv.Addr, err)
	}
	serveErr := make(chan error, 1)
	go func() { serveErr <- srv.Serve(ln) }()
	select {
	case err := <-serveErr:
		return fmt.Errorf("serve on %q: %w", srv.Addr, err)
	case <-ctx.Done():
	}
	shutdownCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), httpShutdownTimeout)
	defer cancel()
	err = srv.Shutdown(shutdownCtx)
	<-serveErr // http.ErrServerClosed once Shutdown has begun
	if err != nil {
		return fmt.Errorf("shut down the HTTP server on %q: %w", srv.Addr, err)
	}
	return nil
}

// httpRoute is one route: its handler per method; json tells whether it answers JSON.
type httpRoute struct {
	methods map[string]http.HandlerFunc
	json    bool
}

type httpHandler struct {
	serviceName string
	routes      map[string]httpRoute
	extra       map[string]http.Handler
	pprof       bool
	now         func() time.Time
}

// NewHTTPHandler returns the handler of the HTTP server (see NewHTTPServer).
func NewHTTPHandler(opts HTTPOptions) http.Handler {
	h := &httpHandler{serviceName: opts.ServiceName, extra: opts.Extra, pprof: opts.EnablePprof, now: opts.Now}
	if h.now == nil {
		h.now = time.Now
	}
	version := opts.Version
	if version == "" {
		version = Version
	}
	get := func(f http.HandlerFunc) httpRoute {
		return httpRoute{methods: map[string]http.HandlerFunc{http.MethodGet: f}, json: true}
	}
	h.routes = map[string]httpRoute{
		"/mon/version": get(func(w http.ResponseWriter, r *http.Request) {
			writeHTTPJSON(w, http.StatusOK, monVersion{
				Version: version, Architecture: runtime.GOARCH, OS: runtime.GOOS,
				GitHash: GitHash, BuildTime: BuildTime,
			})
		}),
		"/mon/status": get(func(w http.ResponseWriter, r *http.Request) {
			if opts.Status == nil {
				writeHTTPError(w, http.StatusNotFound, cds.ErrIDNotFound, httpNotFoundMessage)
				return
			}
			status := opts.Status(r.Context())
			code := http.StatusOK
			for _, line := range status.Lines {
				if line.Status == cds.MonitoringStatusAlert {
					code = http.StatusServiceUnavailable
					break
				}
			}
			writeHTTPJSON(w, code, status)
		}),
		"/mon/workers": get(func(w http.ResponseWriter, r *http.Request) {
			if opts.Workers == nil {
				writeHTTPError(w, http.StatusNotFound, cds.ErrIDNotFound, httpNotFoundMessage)
				return
			}
			workers, err := opts.Workers(r.Context())
			if err != nil {
				writeHTTPFailure(w, err)
				return
			}
			if v := reflect.ValueOf(workers); workers == nil || (v.Kind() == reflect.Slice && v.IsNil()) {
				workers = []struct{}{} // an array, never null
			}
			writeHTTPJSON(w, http.StatusOK, workers)
		}),
		"/mon/metrics": {methods: map[string]http.HandlerFunc{http.MethodGet: func(w http.ResponseWriter, r *http.Request) {
			if opts.Metrics == nil {
				writeHTTPError(w, http.StatusNotFound, cds.ErrIDNotFound, httpNotFoundMessage)
				return
			}
			opts.Metrics.ServeHTTP(w, r)
		}}},
		"/mon/metrics/all": get(func(w http.ResponseWriter, r *http.Request) {
			var views []*view.View
			if opts.Views != nil {
				views = opts.Views()
			}
			writeHTTPJSON(w, http.StatusOK, describeViews(views))
		}),
	}
	return h
}

// monVersion is the body of /mon/version.
type monVersion struct {
	Version      string `json:"version"`
	Architecture string `json:"architecture"`
	OS           string `json:"os"`
	GitHash      string `json:"git_hash"`
	BuildTime    string `json:"build_time"`
}

// viewDescription is one entry of /mon/metrics/all. "aggregagtion" is misspelled on
// purpose: it is the original's key (quirk Q21).
type viewDescription struct {
	Name        string   `json:"name"`
	Description string   `json:"description"`
	Tags        []string `json:"tags"`
	Dimension   string   `json:"dimension"`
	Aggregation string   `json:"aggregagtion"`
}

func describeViews(views []*view.View) []viewDescription {
	out := make([]viewDescription, 0, len(views))
	for _, v := range views {
		if v == nil {
			continue
		}
		d := viewDescription{Name: v.Name, Description: v.Description, Tags: make([]string, 0, len(v.TagKeys))}
		if d.Description == "" && v.Measure != nil {
			d.Description = v.Measure.Description()
		}
		for _, k := range v.TagKeys {
			d.Tags = append(d.Tags, k.Name())
		}
		if v.Measure != nil {
			d.Dimension = v.Measure.Unit()
		}
		if v.Aggregation != nil {
			d.Aggregation = v.Aggregation.Type.String()
		}
		out = append(out, d)
	}
	return out
}

func (h *httpHandler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	start := h.now()
	if h.pprof && strings.HasPrefix(r.URL.Path, httpPprofPrefix) {
		servePprof(w, r)
		return
	}

	hdr := w.Header()
	requestID := r.Header.Get(httpHeaderRequestID)
	if !cds.IsUUID(requestID) {
		requestID = randomUUIDv4()
	}
	hdr.Set(httpHeaderRequestID, requestID)
	hdr.Set("Access-Control-Allow-Origin", "*")
	hdr.Set("Access-Control-Allow-Methods", httpAllowedMethods)
	hdr.Set("Access-Control-Allow-Headers", httpAllowedHeaders)
	hdr.Set("Access-Control-Expose-Headers", httpExposedHeaders)
	hdr.Set(httpHeaderAPITime, start.Format(time.RFC3339))
	hdr.Set(httpHeaderNanosecondsTime, strconv.FormatInt(start.UnixNano(), 10))
	hdr.Set("Etag", strconv.FormatInt(start.Unix(), 10))
	pw := &processTimeWriter{ResponseWriter: w, start: start, now: h.now}
	w = pw

	route, known := h.routes[r.URL.Path]
	extra := h.extra[r.URL.Path]
	metricHandler := "unknown"
	if known || extra != nil {
		metricHandler = r.URL.Path
	}
	defer func() { h.recordHTTPRequest(r, metricHandler, known || extra != nil, pw) }()

	var handler http.Handler
	switch {
	case known && r.Method == http.MethodOptions:
		w.WriteHeader(http.StatusOK)
		return
	case known && route.methods[r.Method] != nil:
		if route.json {
			hdr.Set("Content-Type", httpContentTypeJSON)
		}
		handler = route.methods[r.Method]
	case known:
		writeHTTPError(w, http.StatusNotFound, cds.ErrIDNotFound, httpNotFoundMessage)
		return
	case extra != nil:
		handler = extra
	default:
		writeHTTPError(w, http.StatusNotFound, cds.ErrIDNotFound, httpNotFoundMessage)
		return
	}

	if !acceptsGzip(r) {
		handler.ServeHTTP(w, r)
		return
	}
	gw := &gzipResponseWriter{ResponseWriter: w, gz: gzip.NewWriter(w)}
	defer gw.finish()
	// The inner handler must not compress again (the Prometheus handler would).
	inner := r.Clone(r.Context())
	inner.Header.Del("Accept-Encoding")
	handler.ServeHTTP(gw, inner)
}

func acceptsGzip(r *http.Request) bool {
	if r.Method == http.MethodHead || strings.Contains(r.UserAgent(), httpPrometheusUserAgent) {
		return false
	}
	for _, enc := range strings.Split(r.Header.Get("Accept-Encoding"), ",") {
		name, _, _ := strings.Cut(enc, ";")
		if strings.EqualFold(strings.TrimSpace(name), "gzip") {
			return true
		}
	}
	return false
}

func servePprof(w http.ResponseWriter, r *http.Request) {
	switch strings.TrimPrefix(r.URL.Path, httpPprofPrefix) {
	case "cmdline":
		pprof.Cmdline(w, r)
	case "profile":
		pprof.Profile(w, r)
	case "symbol":
		pprof.Symbol(w, r)
	case "trace":
		pprof.Trace(w, r)
	default:
		pprof.Index(w, r) // the index and every named profile
	}
}

// writeHTTPJSON writes v as the JSON body of a response with the given status.
func writeHTTPJSON(w http.ResponseWriter, code int, v any) {
	body, err := json.Marshal(v)
	if err != nil {
		code = http.StatusInternalServerError
		body, _ = json.Marshal(cds.APIError{ID: cds.ErrIDUnknown, Message: httpInternalErrorMessage})
	}
	w.Header().Set("Content-Type", httpContentTypeJSON)
	w.WriteHeader(code)
	_, _ = w.Write(body) // the client went away: nothing left to do
}

// writeHTTPError writes the CDS API error object.
func writeHTTPError(w http.ResponseWriter, code, id int, message string) {
	writeHTTPJSON(w, code, cds.APIError{ID: id, Message: message, RequestID: w.Header().Get(httpHeaderRequestID)})
}

// writeHTTPFailure answers a failed callback: an API error keeps its id and status, any
// other error is an unknown error (id 1, 500) whose text is not disclosed.
func writeHTTPFailure(w http.ResponseWriter, err error) {
	var apiErr *cds.APIError
	if errors.As(err, &apiErr) && apiErr.ID != 0 {
		code := apiErr.StatusCode
		if code < 400 {
			code = http.StatusInternalServerError
		}
		writeHTTPError(w, code, apiErr.ID, apiErr.Message)
		return
	}
	writeHTTPError(w, http.StatusInternalServerError, cds.ErrIDUnknown, httpInternalErrorMessage)
}

// processTimeWriter sets X-Api-Process-Time when the response header is written.
// It also counts what the metrics need.
type processTimeWriter struct {
	http.ResponseWriter
	start       time.Time
	now         func() time.Time
	wroteHeader bool
	status      int
	bytes       int64
}

func (w *processTimeWriter) WriteHeader(code int) {
	if !w.wroteHeader {
		w.wroteHeader = true
		w.status = code
		w.Header().Set(httpHeaderProcessTime, w.now().Sub(w.start).String())
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *processTimeWriter) Write(b []byte) (int, error) {
	if !w.wroteHeader {
		w.WriteHeader(http.StatusOK)
	}
	n, err := w.ResponseWriter.Write(b)
	w.bytes += int64(n)
	return n, err
}

func (w *processTimeWriter) Flush() {
	if f, ok := w.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

// gzipResponseWriter compresses the body it is given.
type gzipResponseWriter struct {
	http.ResponseWriter
	gz          *gzip.Writer
	wroteHeader bool
}

func (w *gzipResponseWriter) WriteHeader(code int) {
	if !w.wroteHeader {
		w.wroteHeader = true
		h := w.Header()
		h.Del("Content-Length")
		h.Set("Content-Encoding", "gzip")
		h.Add("Vary", "Accept-Encoding")
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *gzipResponseWriter) Write(b []byte) (int, error) {
	if !w.wroteHeader {
		w.WriteHeader(http.StatusOK)
	}
	return w.gz.Write(b)
}

func (w *gzipResponseWriter) Flush() {
	_ = w.gz.Flush() // a write error shows again on the next write
	if f, ok := w.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

func (w *gzipResponseWriter) finish() {
	if !w.wroteHeader {
		w.WriteHeader(http.StatusOK)
	}
	_ = w.gz.Close() // the client went away: nothing left to do
}

// HTTP server metrics (spec §23, "HTTP server views"). The handler tag is the route path
// (or "unknown"), so its cardinality is bounded by the routes.
var (
	httpTagServiceName = tag.MustNewKey("service_name")
	httpTagServiceType = tag.MustNewKey("service_type")
	httpTagHandler     = tag.MustNewKey("handler")
	httpTagMethod      = tag.MustNewKey("method")
	httpTagStatusCode  = tag.MustNewKey("status_code")

	httpMRequests      = stats.Int64("cds/http/server/request_count", "number of HTTP requests served", stats.UnitDimensionless)
	httpMRequestBytes  = stats.Int64("cds/http/server/request_bytes", "size of the HTTP request bodies", stats.UnitBytes)
	httpMResponseBytes = stats.Int64("cds/http/server/response_bytes", "size of the HTTP response bodies", stats.UnitBytes)
	httpMLatency       = stats.Float64("cds/http/server/latency", "HTTP request latency", stats.UnitMilliseconds)
	httpMRouterErrors  = stats.Int64("cds/http/router/router_errors", "number of requests answered with a server error", stats.UnitDimensionless)
	httpMRouterHits    = stats.Int64("cds/http/router/router_hits", "number of requests to a known route", stats.UnitDimensionless)
	// The hatchery serves no websocket; these views exist for parity with the original.
	httpMWebsocketClients   = stats.Int64("cds/http/router/websocket_clients", "number of websocket clients", stats.UnitDimensionless)
	httpMWebsocketV2Clients = stats.Int64("cds/http/router/websocket_v2_clients", "number of v2 websocket clients", stats.UnitDimensionless)
	httpMWebsocketEvents    = stats.Int64("cds/http/router/websocket_events", "number of websocket events", stats.UnitDimensionless)
	httpMWebsocketV2Events  = stats.Int64("cds/http/router/websocket_v2_events", "number of v2 websocket events", stats.UnitDimensionless)
)

// HTTPServerViews are the OpenCensus views of the HTTP server; the daemon registers them
// with the framework's (view.Register) and lists them for /mon/metrics/all.
func HTTPServerViews() []*view.View {
	base := []tag.Key{httpTagServiceName, httpTagServiceType}
	byHandler := append(slices.Clip(base), httpTagHandler)
	sizes := view.Distribution(0, 1024, 2048, 4096, 16384, 65536, 262144, 1048576, 4194304, 16777216)
	latencies := view.Distribution(0, 1, 2, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 60000)
	v := func(name, desc string, m stats.Measure, agg *view.Aggregation, tags ...tag.Key) *view.View {
		return &view.View{Name: name, Description: desc, Measure: m, Aggregation: agg, TagKeys: tags}
	}
	return []*view.View{
		v("cds/http/server/request_count_by_handler", "requests by handler", httpMRequests, view.Count(), byHandler...),
		v("cds/http/server/request_bytes_by_handler", "request body sizes by handler", httpMRequestBytes, sizes, byHandler...),
		v("cds/http/server/response_bytes_by_handler", "response body sizes by handler", httpMResponseBytes, sizes, byHandler...),
		v("cds/http/server/latency_by_handler", "latency by handler", httpMLatency, latencies, byHandler...),
		v("cds/http/server/request_count_by_method_and_handler", "requests by method and handler", httpMRequests, view.Count(), append(slices.Clip(byHandler), httpTagMethod)...),
		v("cds/http/server/response_count_by_status_code_and_handler", "responses by status code and handler", httpMRequests, view.Count(), append(slices.Clip(byHandler), httpTagStatusCode)...),
		v("cds/http/router/router_errors", "server errors", httpMRouterErrors, view.Count(), byHandler...),
		v("cds/http/router/router_hits", "requests to a known route", httpMRouterHits, view.Count(), byHandler...),
		v("cds/http/router/websocket_clients", "websocket clients", httpMWebsocketClients, view.LastValue(), base...),
		v("cds/http/router/websocket_v2_clients", "v2 websocket clients", httpMWebsocketV2Clients, view.LastValue(), base...),
		v("cds/http/router/websocket_events", "websocket events", httpMWebsocketEvents, view.Count(), base...),
		v("cds/http/router/websocket_v2_events", "v2 websocket events", httpMWebsocketV2Events, view.Count(), base...),
	}
}

// recordHTTPRequest records one served request; a no-op for views nobody registered.
func (h *httpHandler) recordHTTPRequest(r *http.Request, handler string, known bool, w *processTimeWriter) {
	status := w.status
	if status == 0 {
		status = http.StatusOK
	}
	ctx, err := tag.New(r.Context(),
		tag.Upsert(httpTagServiceName, h.serviceName),
		tag.Upsert(httpTagServiceType, cds.ServiceTypeHatchery),
		tag.Upsert(httpTagHandler, handler),
		tag.Upsert(httpTagMethod, r.Method),
		tag.Upsert(httpTagStatusCode, strconv.Itoa(status)),
	)
	if err != nil {
		return // invalid tag value: metrics only, never worth failing a request
	}
	ms := []stats.Measurement{
		httpMRequests.M(1),
		httpMResponseBytes.M(w.bytes),
		httpMLatency.M(float64(h.now().Sub(w.start)) / float64(time.Millisecond)),
	}
	if r.ContentLength > 0 {
		ms = append(ms, httpMRequestBytes.M(r.ContentLength))
	}
	if known {
		ms = append(ms, httpMRouterHits.M(1))
	}
	if status >= 500 {
		ms = append(ms, httpMRouterErrors.M(1))
	}
	stats.Record(ctx, ms...)
}
