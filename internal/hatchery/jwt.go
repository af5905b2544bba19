package hatchery

import (
	"crypto/rand"
	"crypto/rsa"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// WorkerTokenLifetime is the validity of a worker JWT (spec §15).
const WorkerTokenLifetime = time.Hour

// workerJWTHeader is the JOSE header of every worker token, byte for byte.
const workerJWTHeader = `{"alg":"RS512","typ":"JWT"}`

// workerClaimsV1 is the claim set of a v1 worker token (v1 jobs, v1 jobs on v2 models and
// registrations). The field order gives the member order of the original's tokens.
type workerClaimsV1 struct {
	ExpiresAt int64         `json:"exp"`
	ID        string        `json:"jti"`
	IssuedAt  int64         `json:"iat"`
	Issuer    string        `json:"iss"`
	Subject   string        `json:"sub"`
	Worker    workerClaimV1 `json:"Worker"`
}

// workerClaimV1 is the "Worker" claim of a v1 token. WorkerModel carries the worker name:
// the key is misleading but fixed by the API (quirk Q19).
type workerClaimV1 struct {
	WorkerModel  string             `json:"worker_model,omitempty"`
	Model        workerClaimV1Model `json:"model"`
	JobID        int64              `json:"job_id,omitempty"`
	RegisterOnly bool               `json:"register_only"`
	HatcheryName string             `json:"hatchery_name,omitempty"`
}

// workerClaimV1Model is always present, as {} for a v1 job on a v2 model (quirk Q18).
type workerClaimV1Model struct {
	ID   int64  `json:"id,omitempty"`
	Name string `json:"name,omitempty"`
}

type workerClaimsV2 struct {
	ExpiresAt int64         `json:"exp"`
	ID        string        `json:"jti"`
	IssuedAt  int64         `json:"iat"`
	Issuer    string        `json:"iss"`
	Subject   string        `json:"sub"`
	Worker    workerClaimV2 `json:"Worker"`
}

type workerClaimV2 struct {
	WorkerModel  string `json:"worker_model,omitempty"`
	ModelName    string `json:"model_name,omitempty"`
	RunJobID     string `json:"run_job_id,omitempty"`
	HatcheryName string `json:"hatchery_name,omitempty"`
}

// newTokenID is the source of jti values; tests replace it to get golden tokens.
var newTokenID = randomUUIDv4

// randomUUIDv4 returns a random (version 4) UUID in its 36-character hyphenated form.
func randomUUIDv4() string {
	var b [16]byte
	// crypto/rand.Read never fails on supported platforms (it panics instead).
	_, _ = rand.Read(b[:])
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	var s [36]byte
	hex.Encode(s[0:8], b[0:4])
	s[8] = '-'
	hex.Encode(s[9:13], b[4:6])
	s[13] = '-'
	hex.Encode(s[14:18], b[6:8])
	s[18] = '-'
	hex.Encode(s[19:23], b[8:10])
	s[23] = '-'
	hex.Encode(s[24:], b[10:])
	return string(s[:])
}

// SignWorkerTokenV1 signs the token of a worker started for a v1 job (jobID > 0) or a v1
// model registration (registerOnly, jobID 0). modelName is the v1 model name without its
// group; for a v1 job running on a v2 model, modelID is 0 and modelName "" so that the
// "model" claim is {} as the API expects.
func SignWorkerTokenV1(key *rsa.PrivateKey, now time.Time, hatcheryName, workerName string, modelID int64, modelName string, jobID int64, registerOnly bool) (string, error) {
	claims := workerClaimsV1{
		ExpiresAt: now.Add(WorkerTokenLifetime).Unix(),
		ID:        newTokenID(),
		IssuedAt:  now.Unix(),
		Issuer:    hatcheryName,
		Subject:   workerName,
		Worker: workerClaimV1{
			WorkerModel:  workerName,
			Model:        workerClaimV1Model{ID: modelID, Name: modelName},
			JobID:        jobID,
			RegisterOnly: registerOnly,
			HatcheryName: hatcheryName,
		},
	}
	token, err := signRS512(key, claims)
	if err != nil {
		return "", fmt.Errorf("sign v1 worker token for %q: %w", workerName, err)
	}
	return token, nil
}

// SignWorkerTokenV2 signs the token of a worker started for a v2 job.
func SignWorkerTokenV2(key *rsa.PrivateKey, now time.Time, hatcheryName, workerName, modelName, runJobID string) (string, error) {
	claims := workerClaimsV2{
		ExpiresAt: now.Add(WorkerTokenLifetime).Unix(),
		ID:        newTokenID(),
		IssuedAt:  now.Unix(),
		Issuer:    hatcheryName,
		Subject:   workerName,
		Worker: workerClaimV2{
			WorkerModel:  workerName,
			ModelName:    modelName,
			RunJobID:     runJobID,
			HatcheryName: hatcheryName,
		},
	}
	token, err := signRS512(key, claims)
	if err != nil {
		return "", fmt.Errorf("sign v2 worker token for %q: %w", workerName, err)
	}
	return token, nil
}

// signRS512 builds the compact JWS itself rather than through jwt.Token so that the header
// and claim member order are exactly the original's.
func signRS512(key *rsa.PrivateKey, claims any) (string, error) {
	if key == nil {
		return "", fmt.Errorf("no RSA private key")
	}
	payload, err := json.Marshal(claims)
	if err != nil {
		return "", fmt.Errorf("encode claims: %w", err)
	}
	enc := base64.RawURLEncoding
	signingString := enc.EncodeToString([]byte(workerJWTHeader)) + "." + enc.EncodeToString(payload)
	sig, err := jwt.SigningMethodRS512.Sign(signingString, key)
	if err != nil {
		return "", fmt.Errorf("RS512: %w", err)
	}
	return signingString + "." + enc.EncodeToString(sig), nil
}
