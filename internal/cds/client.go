package cds

import (
	"bytes"
	"context"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"regexp"
	"strings"
	"sync"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/rockbears/log"
	"golang.org/x/sync/singleflight"
)

// Protocol numbers of sections 2.4, 2.6 and 22.5.
const (
	DefaultRequestTimeout = 60 * time.Second
	maxAttempts           = 3
	retryPause            = 250 * time.Millisecond
	// clockSkew tolerates an API clock slightly ahead of ours when checking the session's
	// iat/nbf: without it every call would re-sign-in (and re-register) until the clocks meet.
	clockSkew = time.Minute
)

// Config tells a Client where the API is and how to reach it.
type Config struct {
	// URL is the API base URL (api.http.url), without a trailing slash.
	URL string
	// Insecure disables TLS certificate verification (api.http.insecure).
	Insecure bool
	// CAFile optionally names a PEM bundle trusted in addition to the system roots.
	CAFile string
	// RequestTimeout bounds each HTTP attempt (api.requestTimeout); 0 means 60 s.
	RequestTimeout time.Duration
	// Transport replaces the transport built from Insecure/CAFile (tests, tracing).
	Transport http.RoundTripper
	// Metrics records the CDS API call metrics of every request (see NewMetricsTransport);
	// their views are registered by RegisterViews.
	Metrics bool
	// Now is the clock for request headers and session validity; nil means time.Now.
	Now func() time.Time
	// Pause waits between HTTP retries (250 ms) and WebSocket reconnections (1 s); nil
	// means a real timer. It returns early with ctx's error when ctx ends.
	Pause func(ctx context.Context, d time.Duration) error
	// Logger receives the WebSocket reconnection warnings; nil means rockbears/log's
	// package-level logger.
	Logger *log.Logger
}

// Client is a CDS API client holding one session: either a v1 builtin-consumer session
// (NewV1: legacy endpoints, /ws) or a v2 hatchery-consumer session (NewV2: /v2 endpoints,
// /v2/hatchery/ws). The hatchery owns one of each kind when both tokens are configured.
// Calling an endpoint of the other generation returns ErrWrongClient.
//
// Before every call the session JWT is checked (without verifying its signature); when it
// is missing or expired the client signs in again with the full original sign-in request,
// once for all concurrent callers. A 401 response clears the session. A Client is safe for
// concurrent use.
type Client struct {
	v2         bool
	baseURL    string
	httpClient *http.Client
	timeout    time.Duration
	now        func() time.Time
	pause      func(ctx context.Context, d time.Duration) error
	logger     *log.Logger

	v1Signin V1SigninRequest
	v2Signin V2SigninRequest

	signinFlight singleflight.Group

	mu       sync.Mutex
	session  string
	apiKey   *rsa.PublicKey
	service  *Service
	hatchery *Hatchery
	region   string
	upToDate bool
}

// NewV1 returns a v1 client that signs in on /auth/consumer/builtin/signin with signin
// (which also registers the service). It does not contact the API: call Signin.
func NewV1(cfg Config, signin V1SigninRequest) (*Client, error) {
	c, err := newClient(cfg)
	if err != nil {
		return nil, err
	}
	c.v1Signin = signin
	return c, nil
}

// NewV2 returns a v2 client that signs in on /v2/auth/consumer/hatchery/signin with
// signin. It does not contact the API: call Signin.
func NewV2(cfg Config, signin V2SigninRequest) (*Client, error) {
	c, err := newClient(cfg)
	if err != nil {
		return nil, err
	}
	c.v2 = true
	c.v2Signin = signin
	return c, nil
}

func newClient(cfg Config) (*Client, error) {
	if cfg.URL == "" {
		return nil, errors.New("cds client: empty API URL")
	}
	c := &Client{
		baseURL: strings.TrimSuffix(cfg.URL, "/"),
		timeout: cfg.RequestTimeout,
		now:     cfg.Now,
		pause:   cfg.Pause,
		logger:  cfg.Logger,
	}
	if c.timeout <= 0 {
		c.timeout = DefaultRequestTimeout
	}
	if c.now == nil {
		c.now = time.Now
	}
	if c.pause == nil {
		c.pause = sleepCtx
	}
	rt := cfg.Transport
	if rt == nil {
		t, err := newTransport(cfg, c.timeout)
		if err != nil {
			return nil, err
		}
		rt = t
	}
	if cfg.Metrics {
		rt = NewMetricsTransport(rt, c.baseURL)
	}
	c.httpClient = &http.Client{Transport: rt, Timeout: c.timeout}
	return c, nil
}

// newTransport builds the transport of section 2.1, except that connections are kept
// alive and reused (fix of quirk Q29).
func newTransport(cfg Config, timeout time.Duration) (*http.Transport, error) {
	tlsConfig := &tls.Config{InsecureSkipVerify: cfg.Insecure} //nolint:gosec // operator's choice (api.http.insecure)
	if cfg.CAFile != "" {
		pemData, err := os.ReadFile(cfg.CAFile)
		if err != nil {
			return nil, fmt.Errorf("read CA file %q: %w", cfg.CAFile, err)
		}
		pool, err := x509.SystemCertPool()
		if err != nil || pool == nil {
			pool = x509.NewCertPool()
		}
		if !pool.AppendCertsFromPEM(pemData) {
			return nil, fmt.Errorf("CA file %q: no PEM certificate found", cfg.CAFile)
		}
		tlsConfig.RootCAs = pool
	}
	dialer := &net.Dialer{Timeout: 30 * time.Second, KeepAlive: 30 * time.Second}
	return &http.Transport{
		Proxy:                 http.ProxyFromEnvironment,
		DialContext:           dialer.DialContext,
		TLSClientConfig:       tlsConfig,
		TLSHandshakeTimeout:   10 * time.Second,
		IdleConnTimeout:       30 * time.Second,
		ResponseHeaderTimeout: timeout,
		MaxIdleConnsPerHost:   8,
	}, nil
}

func sleepCtx(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// IsV2 tells whether this is the v2 (hatchery consumer) client.
func (c *Client) IsV2() bool { return c.v2 }

// APIPublicKey is the API's public signing key received at the last sign-in, nil before.
func (c *Client) APIPublicKey() *rsa.PublicKey {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.apiKey
}

// SignedIn tells whether a sign-in has succeeded at least once (v1: the service is
// registered; v2: the hatchery is known). It stays true when the session later expires.
func (c *Client) SignedIn() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.v2 {
		return c.hatchery != nil
	}
	return c.service != nil
}

// Service is the v1 service as registered by the API at the last sign-in (nil before, and
// always nil on a v2 client). The caller must not modify it.
func (c *Client) Service() *Service {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.service
}

// ServiceID is the id of the registered v1 service, 0 when not registered.
func (c *Client) ServiceID() int64 {
	if s := c.Service(); s != nil {
		return s.ID
	}
	return 0
}

// Hatchery is the v2 hatchery returned by the last v2 sign-in (nil before, and always nil
// on a v1 client). The caller must not modify it.
func (c *Client) Hatchery() *Hatchery {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.hatchery
}

// HatcheryID is the UUID of the v2 hatchery, "" when not signed in.
func (c *Client) HatcheryID() string {
	if h := c.Hatchery(); h != nil {
		return h.ID
	}
	return ""
}

// Region is the region granted by the last v2 sign-in ("" on a v1 client).
func (c *Client) Region() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.region
}

// UpToDate is the up_to_date flag of the last v2 sign-in.
func (c *Client) UpToDate() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.upToDate
}

// SessionValid tells whether the stored session JWT is currently usable.
func (c *Client) SessionValid() bool {
	return c.tokenValid(c.sessionToken())
}

func (c *Client) sessionToken() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.session
}

func (c *Client) clearSession() {
	c.mu.Lock()
	c.session = ""
	c.mu.Unlock()
}

// clearSessionIf clears the session only if it is still the one a rejected request used,
// so that a 401 racing with a concurrent re-sign-in does not discard the fresh session.
func (c *Client) clearSessionIf(used string) {
	c.mu.Lock()
	if c.session == used {
		c.session = ""
	}
	c.mu.Unlock()
}

func (c *Client) consumerToken() string {
	if c.v2 {
		return c.v2Signin.Token
	}
	return c.v1Signin.Token
}

// tokenValid parses tok as a JWT without checking its signature and checks its time claims.
func (c *Client) tokenValid(tok string) bool {
	if tok == "" {
		return false
	}
	var claims jwt.RegisteredClaims
	if _, _, err := jwt.NewParser().ParseUnverified(tok, &claims); err != nil {
		return false
	}
	now := c.now()
	if claims.ExpiresAt != nil && !now.Before(claims.ExpiresAt.Time) {
		return false
	}
	if claims.IssuedAt != nil && claims.IssuedAt.After(now.Add(clockSkew)) {
		return false
	}
	if claims.NotBefore != nil && claims.NotBefore.After(now.Add(clockSkew)) {
		return false
	}
	return true
}

func parsesAsJWT(tok string) bool {
	if tok == "" {
		return false
	}
	_, _, err := jwt.NewParser().ParseUnverified(tok, jwt.MapClaims{})
	return err == nil
}

// Signin signs in with the original sign-in request and stores the session, the API
// public key and the registered service (v1) or hatchery and region (v2). A missing or
// unparsable X-Api-Pub-Signing-Key makes it fail with an error wrapping ErrSigningKey.
// Retrying every 10 s for 5 min (section 3.5) is the caller's business.
func (c *Client) Signin(ctx context.Context) error {
	if c.v2 {
		var resp V2SigninResponse
		hdr, err := c.do(ctx, request{method: http.MethodPost, path: pathV2Signin, body: c.v2Signin, out: &resp})
		if err != nil {
			return fmt.Errorf("v2 sign-in: %w", err)
		}
		key, err := ParseSigningKeyHeader(hdr.Get(HeaderAPIPubSigningKey))
		if err != nil {
			return fmt.Errorf("v2 sign-in: %w", err)
		}
		if resp.Token == "" {
			return errors.New("v2 sign-in: no session token in response")
		}
		hatchery := resp.Hatchery
		if hatchery == nil {
			hatchery = &Hatchery{Name: c.v2Signin.Name}
		}
		c.mu.Lock()
		c.session, c.apiKey, c.hatchery = resp.Token, key, hatchery
		c.region, c.upToDate = resp.Region, resp.UpToDate
		c.mu.Unlock()
		return nil
	}
	var resp V1SigninResponse
	hdr, err := c.do(ctx, request{method: http.MethodPost, path: pathV1Signin, body: c.v1Signin, out: &resp})
	if err != nil {
		return fmt.Errorf("v1 sign-in: %w", err)
	}
	key, err := ParseSigningKeyHeader(hdr.Get(HeaderAPIPubSigningKey))
	if err != nil {
		return fmt.Errorf("v1 sign-in: %w", err)
	}
	if resp.Token == "" {
		return errors.New("v1 sign-in: no session token in response")
	}
	service := resp.Service
	if service == nil {
		// The API always returns it; keep a registered marker anyway.
		s := c.v1Signin.Service
		service = &s
	}
	c.mu.Lock()
	c.session, c.apiKey, c.service = resp.Token, key, service
	c.mu.Unlock()
	return nil
}

// ensureSession re-signs in when the session is not valid. Concurrent callers share one
// sign-in; each waits for it at most until its own ctx ends.
func (c *Client) ensureSession(ctx context.Context) error {
	if c.SessionValid() || c.consumerToken() == "" {
		return nil
	}
	ch := c.signinFlight.DoChan("signin", func() (any, error) {
		// Another flight may have just stored a fresh session.
		if c.SessionValid() {
			return nil, nil
		}
		// Detached from the first caller so that its cancellation does not fail the others.
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), maxAttempts*c.timeout+time.Second)
		defer cancel()
		return nil, c.Signin(sctx)
	})
	select {
	case r := <-ch:
		return r.Err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// request is one logical API call.
type request struct {
	method string
	path   string // may carry a raw query
	body   any    // nil: no body
	out    any    // nil: response body ignored
	// deadline is an extra deadline for the whole call (retries included); 0 means none.
	deadline time.Duration
}

var signinPaths = []string{
	"/auth/consumer/builtin/signin",
	"/auth/consumer/local/signin",
	"/auth/consumer/local/signup",
	"/auth/consumer/local/verify",
	"/auth/consumer/worker/signin",
	pathV2Signin,
}

func isSigninPath(p string) bool {
	for _, s := range signinPaths {
		if strings.Contains(p, s) {
			return true
		}
	}
	return false
}

// noBearer is the header rule of section 2.2: no Authorization on sign-in paths.
var noBearer = regexp.MustCompile(`/auth/consumer/.*/signin`)

func bearerAllowed(p string) bool { return !noBearer.MatchString(p) }

// do runs one logical call: session check, up to 3 attempts (retry on transport error,
// 409 and >= 500 after a 250 ms pause), error decoding. It returns the response headers of
// the successful attempt.
func (c *Client) do(ctx context.Context, r request) (http.Header, error) {
	if r.deadline > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, r.deadline)
		defer cancel()
	}
	if !isSigninPath(r.path) {
		if err := c.ensureSession(ctx); err != nil {
			return nil, fmt.Errorf("%s %s: re-sign-in: %w", r.method, r.path, err)
		}
	}
	var payload []byte
	if r.body != nil {
		b, err := json.Marshal(r.body)
		if err != nil {
			return nil, fmt.Errorf("%s %s: encode body: %w", r.method, r.path, err)
		}
		payload = b
	}
	var lastErr error
	for attempt := 0; attempt < maxAttempts; attempt++ {
		if attempt > 0 {
			if err := c.pause(ctx, retryPause); err != nil {
				return nil, fmt.Errorf("%s %s: %w (last error: %v)", r.method, r.path, err, lastErr)
			}
		}
		status, hdr, data, used, err := c.send(ctx, r, payload)
		if err != nil {
			if ctx.Err() != nil {
				return nil, fmt.Errorf("%s %s: %w", r.method, r.path, err)
			}
			lastErr = err
			continue
		}
		if status == http.StatusUnauthorized {
			c.clearSessionIf(used)
		}
		if status == http.StatusConflict || status >= 500 {
			lastErr = decodeAPIError(status, data)
			if status == http.StatusConflict && attempt == maxAttempts-1 {
				return nil, fmt.Errorf("%s %s: %w", r.method, r.path, lastErr)
			}
			continue
		}
		if status >= 300 {
			return nil, fmt.Errorf("%s %s: %w", r.method, r.path, decodeAPIError(status, data))
		}
		if r.out != nil && status != http.StatusNoContent && len(bytes.TrimSpace(data)) > 0 {
			if err := json.Unmarshal(data, r.out); err != nil {
				return nil, fmt.Errorf("%s %s: decode response: %w", r.method, r.path, err)
			}
		}
		return hdr, nil
	}
	return nil, fmt.Errorf("%s %s: request failed after %d retries: %w", r.method, r.path, maxAttempts-1, lastErr)
}

// send runs one attempt. It also returns the session token it presented ("" if none).
func (c *Client) send(ctx context.Context, r request, payload []byte) (int, http.Header, []byte, string, error) {
	var body io.Reader
	if payload != nil {
		body = bytes.NewReader(payload)
	}
	req, err := http.NewRequestWithContext(ctx, r.method, c.baseURL+r.path, body)
	if err != nil {
		return 0, nil, nil, "", fmt.Errorf("build request: %w", err)
	}
	used := c.setHeaders(req.Header, r.path)
	resp, err := c.httpClient.Do(req)
	if err != nil {
		return 0, nil, nil, used, err
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		return 0, nil, nil, used, fmt.Errorf("read response: %w", err)
	}
	return resp.StatusCode, resp.Header, data, used, nil
}

// setHeaders sets the headers of section 2.2 and returns the session token presented.
func (c *Client) setHeaders(h http.Header, path string) string {
	date := c.now().Format(DateLayout)
	h.Set("Date", date)
	h.Set(HeaderRemoteTime, date)
	h.Set("Content-Type", "application/json")
	if !bearerAllowed(path) {
		return ""
	}
	tok := c.sessionToken()
	if !parsesAsJWT(tok) {
		return ""
	}
	h.Set("Authorization", "Bearer "+tok)
	return tok
}

func decodeAPIError(status int, data []byte) *APIError {
	var e APIError
	if err := json.Unmarshal(data, &e); err != nil || e.ID == 0 {
		return &APIError{StatusCode: status, Message: fmt.Sprintf("HTTP %d", status)}
	}
	e.StatusCode = status
	return &e
}

func (c *Client) warn(ctx context.Context, format string, args ...any) {
	if c.logger != nil {
		c.logger.Warn(ctx, format, args...)
		return
	}
	log.Warn(ctx, format, args...)
}
