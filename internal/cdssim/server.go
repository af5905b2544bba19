// Package cdssim is an in-process CDS API (v0.57.0 wire protocol) for tests, benchmarks and
// the demo command. It serves every REST endpoint and both websockets a vSphere hatchery uses,
// records what it receives, rejects what the real API rejects, and runs simulated workers that
// verify the worker JWT and CDS_CONFIG a hatchery hands to a VM.
//
// The JSON shapes are written from the protocol spec independently of internal/cds on purpose.
package cdssim

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"time"
)

// Options configures a Server. Zero values get the defaults documented on each field.
type Options struct {
	// HatcheryName is the service/hatchery name the consumer tokens are bound to. When set, a
	// v1 sign-in must register a service of that name (else 403, as for a consumer created for
	// a given service). v2 tokens are always bound to the name given to NewHatcheryConsumerToken.
	HatcheryName string
	// Region is the region the v2 hatchery is granted; returned by the v2 sign-in. Empty means
	// "no region granted": the v2 sign-in answers 403, as the real API does.
	Region string
	// ModelType is the hatchery type a v2 sign-in must announce. Default "vsphere".
	ModelType string
	// SessionLifetime of the session JWTs issued at sign-in. Default 1h.
	SessionLifetime time.Duration
	// Now is the clock for sessions, bookings, JWT checks and timestamps. Default time.Now.
	Now func() time.Time
	// After drives simulated job durations. Default time.After.
	After func(time.Duration) <-chan time.Time
	// APIVersion is compared with the v2 sign-in version for up_to_date. Default "0.57.0".
	APIVersion string
	// CDN is served by the CDN config endpoints.
	CDN CDNConfig
	// JobDuration is how long a simulated worker "runs" its job (0: finishes at once).
	JobDuration time.Duration
	// HoldJobs makes simulated workers wait for CompleteWorker instead of JobDuration.
	HoldJobs bool
	// RegisteredCapabilities are stored on a v1 model by a register-only worker.
	// Default: binaries bash, curl, git.
	RegisteredCapabilities []Requirement
	// OnWorkerDone is called with the worker (VM) name when a simulated worker has finished,
	// where the real worker would run `sudo shutdown -h now`.
	OnWorkerDone func(vmName string)
	// SigningKey signs consumer tokens and sessions; default a fresh 2048-bit key (generating
	// one costs ~0.1-1 s, so benchmarks and test suites may share one).
	SigningKey *rsa.PrivateKey
	// Addr, if set, is the address to listen on (e.g. "127.0.0.1:8081"); default a random
	// loopback port.
	Addr string
}

// Server is the simulated CDS API. It is safe for concurrent use.
type Server struct {
	opts    Options
	key     *rsa.PrivateKey
	pubPEM  []byte
	handler http.Handler
	srv     *httptest.Server

	// ctx ends websocket handlers and simulated workers on Close; wg waits for them.
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu           sync.Mutex
	closed       bool
	changed      chan struct{}
	requests     []*Request
	consumers    map[string]*consumer
	sessions     map[string]*session
	services     map[string]*Service
	hatcheries   map[string]*Hatchery
	nextService  int64
	heartbeats   []Heartbeat
	nextV1JobID  int64
	v1Jobs       map[int64]*v1JobState
	v1Order      []int64
	v2Jobs       map[string]*v2JobState
	v2Order      []string
	nextModelID  int64
	models       map[int64]*modelState
	modelOrder   []int64
	asCode       map[string]V2WorkerModel
	v1Workers    []*V1Worker
	v2Workers    []*V2Worker
	runs         []*WorkerRun
	held         map[string]chan struct{}
	subs         map[*wsSub]struct{}
	wsDropped    int
	onWorkerDone func(string)
}

// New builds a Server; call Start before use and Close when done.
func New(opts Options) *Server {
	if opts.ModelType == "" {
		opts.ModelType = "vsphere"
	}
	if opts.SessionLifetime == 0 {
		opts.SessionLifetime = time.Hour
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.After == nil {
		opts.After = time.After
	}
	if opts.APIVersion == "" {
		opts.APIVersion = "0.57.0"
	}
	if opts.RegisteredCapabilities == nil {
		for _, b := range []string{"bash", "curl", "git"} {
			opts.RegisteredCapabilities = append(opts.RegisteredCapabilities,
				Requirement{Name: b, Type: "binary", Value: b})
		}
	}
	key := opts.SigningKey
	if key == nil {
		var err error
		if key, err = rsa.GenerateKey(rand.Reader, 2048); err != nil {
			// Only a broken system random source gets here; httptest panics likewise on listen errors.
			panic(fmt.Sprintf("cdssim: generate RSA key: %v", err))
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	s := &Server{
		opts:         opts,
		key:          key,
		pubPEM:       pem.EncodeToMemory(&pem.Block{Type: "RSA PUBLIC KEY", Bytes: x509.MarshalPKCS1PublicKey(&key.PublicKey)}),
		ctx:          ctx,
		cancel:       cancel,
		changed:      make(chan struct{}),
		consumers:    map[string]*consumer{},
		sessions:     map[string]*session{},
		services:     map[string]*Service{},
		hatcheries:   map[string]*Hatchery{},
		v1Jobs:       map[int64]*v1JobState{},
		v2Jobs:       map[string]*v2JobState{},
		models:       map[int64]*modelState{},
		asCode:       map[string]V2WorkerModel{},
		held:         map[string]chan struct{}{},
		subs:         map[*wsSub]struct{}{},
		onWorkerDone: opts.OnWorkerDone,
	}
	s.handler = s.record(s.routes())
	return s
}

// Start starts serving. It returns an error only when Options.Addr cannot be listened on.
func (s *Server) Start() error {
	s.srv = httptest.NewUnstartedServer(s.handler)
	if s.opts.Addr != "" {
		l, err := net.Listen("tcp", s.opts.Addr)
		if err != nil {
			return fmt.Errorf("listen on %q: %w", s.opts.Addr, err)
		}
		_ = s.srv.Listener.Close()
		s.srv.Listener = l
	}
	s.srv.Start()
	return nil
}

// URL is the API base URL (no trailing slash), valid after Start.
func (s *Server) URL() string { return s.srv.URL }

// Handler exposes the API handler, e.g. to mount it on another server.
func (s *Server) Handler() http.Handler { return s.handler }

// PublicKeyPEM is the simulator's signing key, as announced in X-Api-Pub-Signing-Key.
func (s *Server) PublicKeyPEM() []byte { return bytes.Clone(s.pubPEM) }

// Close stops the server, ends websockets and simulated workers, and waits for them.
func (s *Server) Close() {
	s.mu.Lock()
	already := s.closed
	s.closed = true
	s.mu.Unlock()
	if already {
		return
	}
	s.cancel()
	if s.srv != nil {
		s.srv.Close()
	}
	s.wg.Wait()
}

// goOwned runs f in a goroutine owned by the server (Close waits for it). It reports false
// when the server is closed.
func (s *Server) goOwned(f func()) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return false
	}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		f()
	}()
	return true
}

// track registers the caller as an owned task; call the returned func when done.
func (s *Server) track() (func(), bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil, false
	}
	s.wg.Add(1)
	return s.wg.Done, true
}

func (s *Server) now() time.Time { return s.opts.Now() }

// notifyLocked wakes every WaitUntil; s.mu must be held.
func (s *Server) notifyLocked() {
	close(s.changed)
	s.changed = make(chan struct{})
}

// WaitUntil blocks until cond returns true (re-evaluated after each state change of the
// simulator) or ctx ends. cond may call the Server's accessors.
func (s *Server) WaitUntil(ctx context.Context, cond func() bool) error {
	for {
		s.mu.Lock()
		ch := s.changed
		s.mu.Unlock()
		if cond() {
			return nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return fmt.Errorf("wait for simulator condition: %w", ctx.Err())
		}
	}
}

// ---- errors and JSON ----

type apiErr struct {
	status int
	id     int
	msg    string
}

var (
	errUnknown        = apiErr{http.StatusInternalServerError, 1, "internal server error"}
	errUnauthorized   = apiErr{http.StatusUnauthorized, 10, "not authenticated"}
	errForbidden      = apiErr{http.StatusForbidden, 11, "forbidden"}
	errNotFound       = apiErr{http.StatusNotFound, 38, "resource not found"}
	errWrongRequest   = apiErr{http.StatusBadRequest, 74, "wrong request"}
	errJobBooked      = apiErr{http.StatusForbidden, 89, "job already booked"}
	errJobNotFound    = apiErr{http.StatusNotFound, 112, "workflow node job run not found"}
	errModelBooked    = apiErr{http.StatusForbidden, 115, "worker model already booked"}
	errModelNotFound  = apiErr{http.StatusNotFound, 38, "worker model not found"}
	errV2JobNotFound  = apiErr{http.StatusNotFound, 38, "job run not found"}
	errRegionNotGrant = apiErr{http.StatusForbidden, 11, "hatchery not granted on this region"}
)

func writeErr(w http.ResponseWriter, e apiErr, detail string) {
	msg := e.msg
	if detail != "" {
		msg += ": " + detail
	}
	writeJSON(w, e.status, APIError{ID: e.id, Message: msg})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		writeErr(w, errUnknown, err.Error())
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_, _ = w.Write(b)
}

func writeNoContent(w http.ResponseWriter) { w.WriteHeader(http.StatusNoContent) }

// decodeBody decodes a JSON request body; it answers 400 (id 74) and returns false on error.
func decodeBody(w http.ResponseWriter, r *http.Request, v any) bool {
	body, _ := io.ReadAll(r.Body)
	return decodeBytes(w, body, v)
}

// decodeBytes is decodeBody for an already read body.
func decodeBytes(w http.ResponseWriter, body []byte, v any) bool {
	if len(bytes.TrimSpace(body)) == 0 {
		writeErr(w, errWrongRequest, "empty body")
		return false
	}
	if err := json.Unmarshal(body, v); err != nil {
		writeErr(w, errWrongRequest, "invalid JSON: "+err.Error())
		return false
	}
	return true
}

func newUUID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	h := hex.EncodeToString(b[:])
	return h[0:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:32]
}

// ---- request recording ----

// recorder captures the status and still lets websockets hijack the connection.
type recorder struct {
	http.ResponseWriter
	status int
}

func (r *recorder) WriteHeader(code int) {
	if r.status == 0 {
		r.status = code
	}
	r.ResponseWriter.WriteHeader(code)
}

func (r *recorder) Write(b []byte) (int, error) {
	if r.status == 0 {
		r.status = http.StatusOK
	}
	return r.ResponseWriter.Write(b)
}

func (r *recorder) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	h, ok := r.ResponseWriter.(http.Hijacker)
	if !ok {
		return nil, nil, errors.New("response writer cannot hijack")
	}
	// A successful websocket upgrade answers 101 on the hijacked connection.
	r.status = http.StatusSwitchingProtocols
	return h.Hijack()
}

func (r *recorder) Flush() {
	if f, ok := r.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

func (s *Server) record(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(io.LimitReader(r.Body, 32<<20))
		_ = r.Body.Close()
		r.Body = io.NopCloser(bytes.NewReader(body))
		rec := &Request{
			Method:      r.Method,
			Path:        r.URL.Path,
			EscapedPath: r.URL.EscapedPath(),
			RawQuery:    r.URL.RawQuery,
			Query:       r.URL.Query(),
			Header:      r.Header.Clone(),
			Body:        body,
			Time:        s.now(),
		}
		s.mu.Lock()
		s.requests = append(s.requests, rec)
		s.notifyLocked()
		s.mu.Unlock()
		rw := &recorder{ResponseWriter: w}
		next.ServeHTTP(rw, r)
		s.mu.Lock()
		rec.Status = rw.status
		if rec.Status == 0 {
			rec.Status = http.StatusOK
		}
		s.notifyLocked()
		s.mu.Unlock()
	})
}

func copyRequest(r *Request) Request {
	c := *r
	c.Header = r.Header.Clone()
	c.Body = bytes.Clone(r.Body)
	c.Query = make(map[string][]string, len(r.Query))
	for k, v := range r.Query {
		c.Query[k] = append([]string(nil), v...)
	}
	return c
}

// Requests returns every request received so far, in arrival order.
func (s *Server) Requests() []Request {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]Request, 0, len(s.requests))
	for _, r := range s.requests {
		out = append(out, copyRequest(r))
	}
	return out
}

// RequestsTo returns the requests with that method ("" = any) whose path starts with pathPrefix.
func (s *Server) RequestsTo(method, pathPrefix string) []Request {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []Request
	for _, r := range s.requests {
		if (method == "" || r.Method == method) && strings.HasPrefix(r.Path, pathPrefix) {
			out = append(out, copyRequest(r))
		}
	}
	return out
}

// ---- routing ----

func (s *Server) routes() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("POST /auth/consumer/builtin/signin", s.handleV1Signin)
	mux.HandleFunc("POST /v2/auth/consumer/hatchery/signin", s.handleV2Signin)
	mux.HandleFunc("POST /auth/consumer/signout", s.auth(authAny, s.handleSignout))

	mux.HandleFunc("POST /services/heartbeat", s.auth(authV1, s.handleHeartbeat))
	mux.HandleFunc("POST /v2/hatchery/heartbeat", s.auth(authV2, s.handleHeartbeat))
	mux.HandleFunc("GET /config/cdn", s.auth(authV1, s.handleCDN))
	mux.HandleFunc("GET /v2/config/cdn", s.auth(authV2, s.handleCDN))

	mux.HandleFunc("GET /worker/model/enabled", s.auth(authV1, s.handleModelsEnabled))
	mux.HandleFunc("GET /worker/model/{group}/{name}", s.auth(authV1, s.handleModelGet))
	mux.HandleFunc("GET /worker/model/{group}/{name}/secret", s.auth(authV1, s.handleModelSecrets))
	mux.HandleFunc("PUT /worker/model/{group}/{name}/book", s.auth(authV1, s.handleModelBook))
	mux.HandleFunc("PUT /worker/model/{group}/{name}/error", s.auth(authV1, s.handleModelError))
	mux.HandleFunc("GET /v2/project/{proj}/vcs/{vcs}/repository/{repo}/workermodel/{model}", s.auth(authV2, s.handleAsCodeModel))

	mux.HandleFunc("GET /worker", s.auth(authV1, s.handleV1Workers))
	mux.HandleFunc("POST /worker/{id}/disable", s.auth(authV1, s.handleV1WorkerDisable))
	mux.HandleFunc("GET /v2/worker", s.auth(authV2, s.handleV2Workers))

	mux.HandleFunc("GET /queue/workflows", s.auth(authV1, s.handleV1Queue))
	mux.HandleFunc("GET /queue/workflows/{id}/infos", s.auth(authV1, s.handleV1JobInfos))
	mux.HandleFunc("POST /queue/workflows/{id}/book", s.auth(authV1, s.handleV1Book))
	mux.HandleFunc("DELETE /queue/workflows/{id}/book", s.auth(authV1, s.handleV1Release))
	mux.HandleFunc("POST /queue/workflows/{id}/spawn/infos", s.auth(authV1, s.handleV1SpawnInfos))
	mux.HandleFunc("POST /queue/workflows/{id}/result", s.auth(authV1, s.handleV1Result))
	mux.HandleFunc("GET /ws", s.auth(authV1, s.handleV1WS))

	mux.HandleFunc("GET /v2/queue/{region}", s.auth(authV2, s.handleV2Queue))
	mux.HandleFunc("GET /v2/queue/{region}/job/{id}", s.auth(authV2, s.handleV2JobInfo))
	mux.HandleFunc("POST /v2/queue/{region}/job/{id}/hatchery/take", s.auth(authV2, s.handleV2Take))
	mux.HandleFunc("DELETE /v2/queue/{region}/job/{id}/hatchery/take", s.auth(authV2, s.handleV2Release))
	mux.HandleFunc("POST /v2/queue/{region}/job/{id}/info", s.auth(authV2, s.handleV2Info))
	mux.HandleFunc("GET /v2/hatchery/ws", s.auth(authV2, s.handleV2WS))

	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeErr(w, errNotFound, r.Method+" "+r.URL.Path)
	})
	return mux
}
