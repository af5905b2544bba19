package cdssim

import (
	"bytes"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"net/http"
	"strings"

	"github.com/golang-jwt/jwt/v5"
)

// Consumer types (the sign-in path segment of each engine, spec §22.4).
const (
	consumerBuiltin  = "builtin"
	consumerHatchery = "hatchery"
)

type consumer struct {
	id   string
	kind string
	// name is the hatchery name a hatchery consumer is declared for (v2 only).
	name string
}

type session struct {
	id         string
	consumerID string
	kind       string
	// name is the v1 service name or the v2 hatchery name behind the session.
	name string
}

type consumerClaims struct {
	ConsumerID   string `json:"consumer_id"`
	ConsumerType string `json:"consumer_type"`
	HatcheryName string `json:"hatchery_name,omitempty"`
	jwt.RegisteredClaims
}

type sessionClaims struct {
	ID      string `json:"ID"`
	TokenID string `json:"TokenID"`
	jwt.RegisteredClaims
}

func (s *Server) sign(claims jwt.Claims) string {
	tok, err := jwt.NewWithClaims(jwt.SigningMethodRS512, claims).SignedString(s.key)
	if err != nil {
		// Signing with a freshly generated in-memory RSA key cannot fail short of a bug.
		panic(fmt.Sprintf("cdssim: sign JWT: %v", err))
	}
	return tok
}

func (s *Server) newConsumerToken(kind, name string) string {
	c := &consumer{id: newUUID(), kind: kind, name: name}
	s.mu.Lock()
	s.consumers[c.id] = c
	s.mu.Unlock()
	return s.sign(consumerClaims{
		ConsumerID:   c.id,
		ConsumerType: kind,
		HatcheryName: name,
		RegisteredClaims: jwt.RegisteredClaims{
			Issuer:   "cdssim",
			ID:       newUUID(),
			IssuedAt: jwt.NewNumericDate(s.now()),
		},
	})
}

// NewBuiltinConsumerToken creates a v1 builtin consumer and returns its sign-in token
// (the value of api.token).
func (s *Server) NewBuiltinConsumerToken() string {
	return s.newConsumerToken(consumerBuiltin, "")
}

// NewHatcheryConsumerToken creates a v2 hatchery consumer declared for hatchery name and
// returns its sign-in token (the value of api.tokenV2).
func (s *Server) NewHatcheryConsumerToken(name string) string {
	return s.newConsumerToken(consumerHatchery, name)
}

// RevokeConsumers invalidates every consumer token and session, as deleting the consumers in
// CDS would: later calls get 401 and re-sign-ins fail.
func (s *Server) RevokeConsumers() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.consumers = map[string]*consumer{}
	s.sessions = map[string]*session{}
	s.notifyLocked()
}

// consumerFromToken validates a consumer sign-in token of the given kind.
func (s *Server) consumerFromToken(token, kind string) (*consumer, error) {
	var claims consumerClaims
	_, err := jwt.ParseWithClaims(token, &claims, func(*jwt.Token) (any, error) { return &s.key.PublicKey, nil },
		jwt.WithValidMethods([]string{"RS512"}), jwt.WithTimeFunc(s.now))
	if err != nil {
		return nil, fmt.Errorf("parse consumer token: %w", err)
	}
	s.mu.Lock()
	c, ok := s.consumers[claims.ConsumerID]
	s.mu.Unlock()
	if !ok {
		return nil, errors.New("unknown consumer")
	}
	if c.kind != kind {
		return nil, fmt.Errorf("consumer is of type %q, not %q", c.kind, kind)
	}
	return c, nil
}

func (s *Server) newSession(c *consumer, name string) string {
	sess := &session{id: newUUID(), consumerID: c.id, kind: c.kind, name: name}
	now := s.now()
	tok := s.sign(sessionClaims{
		ID:      sess.id,
		TokenID: newUUID(),
		RegisteredClaims: jwt.RegisteredClaims{
			Issuer:    "cdssim",
			Subject:   c.id,
			ID:        sess.id,
			IssuedAt:  jwt.NewNumericDate(now),
			ExpiresAt: jwt.NewNumericDate(now.Add(s.opts.SessionLifetime)),
		},
	})
	s.mu.Lock()
	s.sessions[sess.id] = sess
	s.mu.Unlock()
	return tok
}

// parseRSAPublicKeyPEM applies the API's strict check (spec §3.2): PEM of type RSA PUBLIC KEY
// holding a PKCS#1 key.
func parseRSAPublicKeyPEM(b []byte) (*rsa.PublicKey, error) {
	block, _ := pem.Decode(b)
	if block == nil {
		return nil, errors.New("public key is not PEM")
	}
	if block.Type != "RSA PUBLIC KEY" {
		return nil, fmt.Errorf("public key PEM type is %q, want %q", block.Type, "RSA PUBLIC KEY")
	}
	k, err := x509.ParsePKCS1PublicKey(block.Bytes)
	if err != nil {
		return nil, fmt.Errorf("parse PKCS#1 public key: %w", err)
	}
	return k, nil
}

func isJSONObject(raw json.RawMessage) bool {
	t := bytes.TrimSpace(raw)
	return len(t) > 0 && t[0] == '{'
}

func (s *Server) setSigningKeyHeader(w http.ResponseWriter) {
	w.Header().Set("X-Api-Pub-Signing-Key", base64.StdEncoding.EncodeToString(s.pubPEM))
}

func (s *Server) handleV1Signin(w http.ResponseWriter, r *http.Request) {
	var req wireV1SigninRequest
	if !decodeBody(w, r, &req) {
		return
	}
	c, err := s.consumerFromToken(req.Token, consumerBuiltin)
	if err != nil {
		writeErr(w, errUnauthorized, err.Error())
		return
	}
	svc := req.Service
	switch {
	case svc == nil:
		// The simulated builtin consumer is bound to a hatchery service, so a bare
		// {"token": ...} sign-in (quirk Q6) is refused like the real API does.
		writeErr(w, errForbidden, "consumer is bound to a service: service registration required")
		return
	case svc.Type != "hatchery":
		writeErr(w, errForbidden, fmt.Sprintf("service type %q requires an admin consumer", svc.Type))
		return
	case svc.Name == "":
		writeErr(w, errWrongRequest, "service name is empty")
		return
	case s.opts.HatcheryName != "" && svc.Name != s.opts.HatcheryName:
		writeErr(w, errForbidden, fmt.Sprintf("service name %q does not match the consumer's service %q", svc.Name, s.opts.HatcheryName))
		return
	case !isJSONObject(svc.Config):
		writeErr(w, errWrongRequest, "service config must be a JSON object")
		return
	}
	if _, err := parseRSAPublicKeyPEM(svc.PublicKey); err != nil {
		writeErr(w, errWrongRequest, err.Error())
		return
	}
	s.mu.Lock()
	stored, ok := s.services[svc.Name]
	if !ok {
		s.nextService++
		stored = &Service{ID: s.nextService, Name: svc.Name}
		s.services[svc.Name] = stored
	}
	stored.Type = svc.Type
	stored.HTTPURL = svc.HTTPURL
	stored.Config = bytes.Clone(svc.Config)
	stored.PublicKeyPEM = bytes.Clone(svc.PublicKey)
	stored.Region = svc.Region
	stored.IgnoreJobWithNoRegion = svc.IgnoreJobWithNoRegion
	stored.SigninCount++
	resp := wireV1SigninResponse{
		APIURL:  s.srv.URL,
		User:    wireUser{ID: c.id, Username: "cdssim-" + svc.Name, Fullname: "cdssim consumer", Ring: "USER"},
		Service: *svc,
	}
	resp.Service.ID = stored.ID
	s.notifyLocked()
	s.mu.Unlock()
	resp.Token = s.newSession(c, svc.Name)
	s.setSigningKeyHeader(w)
	writeJSON(w, http.StatusOK, resp)
}

func (s *Server) handleV2Signin(w http.ResponseWriter, r *http.Request) {
	var req wireV2SigninRequest
	if !decodeBody(w, r, &req) {
		return
	}
	c, err := s.consumerFromToken(req.Token, consumerHatchery)
	if err != nil {
		writeErr(w, errUnauthorized, err.Error())
		return
	}
	switch {
	case req.Name != c.name:
		writeErr(w, errForbidden, fmt.Sprintf("hatchery name %q does not match the declared hatchery %q", req.Name, c.name))
		return
	case req.Type != s.opts.ModelType:
		writeErr(w, errWrongRequest, fmt.Sprintf("hatchery type %q, want %q", req.Type, s.opts.ModelType))
		return
	case !isJSONObject(req.Config):
		writeErr(w, errWrongRequest, "config must be a JSON object")
		return
	case s.opts.Region == "":
		writeErr(w, errForbidden, "hatchery is not granted on any region")
		return
	}
	if _, err := parseRSAPublicKeyPEM(req.PublicKey); err != nil {
		writeErr(w, errWrongRequest, err.Error())
		return
	}
	s.mu.Lock()
	h, ok := s.hatcheries[req.Name]
	if !ok {
		h = &Hatchery{ID: newUUID(), Name: req.Name}
		s.hatcheries[req.Name] = h
	}
	h.Type = req.Type
	h.HTTPURL = req.HTTPURL
	h.Config = bytes.Clone(req.Config)
	h.PublicKeyPEM = bytes.Clone(req.PublicKey)
	h.Version = req.Version
	h.SigninCount++
	resp := wireV2SigninResponse{
		UpToDate: req.Version == s.opts.APIVersion,
		APIURL:   s.srv.URL,
		Hatchery: wireHatchery{
			ID: h.ID, Name: h.Name, ModelType: h.Type, Config: h.Config,
			PublicKey: h.PublicKeyPEM, HTTPURL: h.HTTPURL,
		},
		Region: s.opts.Region,
	}
	s.notifyLocked()
	s.mu.Unlock()
	resp.Token = s.newSession(c, req.Name)
	s.setSigningKeyHeader(w)
	writeJSON(w, http.StatusOK, resp)
}

type authKind int

const (
	authAny authKind = iota
	authV1
	authV2
)

type sessionHandler func(w http.ResponseWriter, r *http.Request, sess *session)

// auth requires a valid, unexpired, not signed-out session of the right consumer type.
func (s *Server) auth(kind authKind, h sessionHandler) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		authz := r.Header.Get("Authorization")
		tok, ok := strings.CutPrefix(authz, "Bearer ")
		if !ok || tok == "" {
			writeErr(w, errUnauthorized, "missing bearer session token")
			return
		}
		var claims sessionClaims
		_, err := jwt.ParseWithClaims(tok, &claims, func(*jwt.Token) (any, error) { return &s.key.PublicKey, nil },
			jwt.WithValidMethods([]string{"RS512"}), jwt.WithTimeFunc(s.now), jwt.WithExpirationRequired())
		if err != nil {
			writeErr(w, errUnauthorized, "invalid session: "+err.Error())
			return
		}
		s.mu.Lock()
		sess, ok := s.sessions[claims.ID]
		var cons *consumer
		if ok {
			cons = s.consumers[sess.consumerID]
		}
		s.mu.Unlock()
		if !ok || cons == nil {
			writeErr(w, errUnauthorized, "session does not exist")
			return
		}
		if (kind == authV1 && sess.kind != consumerBuiltin) || (kind == authV2 && sess.kind != consumerHatchery) {
			writeErr(w, errForbidden, fmt.Sprintf("route not allowed for a %s consumer session", sess.kind))
			return
		}
		h(w, r, sess)
	}
}

func (s *Server) handleSignout(w http.ResponseWriter, _ *http.Request, sess *session) {
	s.mu.Lock()
	delete(s.sessions, sess.id)
	s.notifyLocked()
	s.mu.Unlock()
	writeNoContent(w)
}

// Services returns the v1 services registered through the builtin sign-in.
func (s *Server) Services() []Service {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []Service
	for _, v := range s.services {
		c := *v
		c.Config = bytes.Clone(v.Config)
		c.PublicKeyPEM = bytes.Clone(v.PublicKeyPEM)
		out = append(out, c)
	}
	return out
}

// Hatcheries returns the v2 hatcheries registered through the hatchery sign-in.
func (s *Server) Hatcheries() []Hatchery {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []Hatchery
	for _, v := range s.hatcheries {
		c := *v
		c.Config = bytes.Clone(v.Config)
		c.PublicKeyPEM = bytes.Clone(v.PublicKeyPEM)
		out = append(out, c)
	}
	return out
}

// SessionCount is the number of live (not signed out) sessions, expired ones included.
func (s *Server) SessionCount() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.sessions)
}
