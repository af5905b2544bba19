package hatchery

import (
	"crypto/rand"
	"crypto/rsa"
	"encoding/base64"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/hatchery-vsphere/hatchery-vsphere/internal/cds"
)

var (
	wkKeyOnce sync.Once
	wkKey     *rsa.PrivateKey
	wkKeyErr  error
)

// workerTestKey returns one RSA key shared by the tests of this file set (generating a key
// costs tens of milliseconds).
func workerTestKey(t *testing.T) *rsa.PrivateKey {
	t.Helper()
	wkKeyOnce.Do(func() { wkKey, wkKeyErr = rsa.GenerateKey(rand.Reader, 2048) })
	if wkKeyErr != nil {
		t.Fatal(wkKeyErr)
	}
	return wkKey
}

// fixedTokenIDs makes the jti of the tokens signed during the test predictable.
func fixedTokenIDs(t *testing.T, id string) {
	t.Helper()
	prev := newTokenID
	newTokenID = func() string { return id }
	t.Cleanup(func() { newTokenID = prev })
}

// decodeWorkerToken verifies the token with the public key and returns the JSON of its
// header and claims as they travel.
func decodeWorkerToken(t *testing.T, key *rsa.PrivateKey, token string) (header, claims string) {
	t.Helper()
	parsed, err := jwt.Parse(token, func(*jwt.Token) (any, error) { return &key.PublicKey, nil },
		jwt.WithValidMethods([]string{"RS512"}), jwt.WithoutClaimsValidation())
	if err != nil || !parsed.Valid {
		t.Fatalf("token does not verify with the public key: %v", err)
	}
	parts := strings.Split(token, ".")
	if len(parts) != 3 {
		t.Fatalf("token has %d parts", len(parts))
	}
	h, err := base64.RawURLEncoding.DecodeString(parts[0])
	if err != nil {
		t.Fatal(err)
	}
	c, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		t.Fatal(err)
	}
	return string(h), string(c)
}

func TestWorkerTokenGolden(t *testing.T) {
	key := workerTestKey(t)
	fixedTokenIDs(t, "5b0b1e8e-2c1f-4a43-a4f4-2d3c1a0e9b77")
	now := time.Date(2025, 1, 10, 8, 0, 0, 0, time.UTC) // 1736496000

	tests := []struct {
		name string
		sign func() (string, error)
		want string
	}{
		{
			name: "v1 job",
			sign: func() (string, error) {
				return SignWorkerTokenV1(key, now, "vsphere-a", "calm-turing", 42, "debian12", 98765, false)
			},
			want: `{"exp":1736499600,"jti":"5b0b1e8e-2c1f-4a43-a4f4-2d3c1a0e9b77","iat":1736496000,"iss":"vsphere-a","sub":"calm-turing",` +
				`"Worker":{"worker_model":"calm-turing","model":{"id":42,"name":"debian12"},"job_id":98765,"register_only":false,"hatchery_name":"vsphere-a"}}`,
		},
		{
			name: "v1 registration",
			sign: func() (string, error) {
				return SignWorkerTokenV1(key, now, "vsphere-a", "register-kind-noether", 42, "debian12", 0, true)
			},
			want: `{"exp":1736499600,"jti":"5b0b1e8e-2c1f-4a43-a4f4-2d3c1a0e9b77","iat":1736496000,"iss":"vsphere-a","sub":"register-kind-noether",` +
				`"Worker":{"worker_model":"register-kind-noether","model":{"id":42,"name":"debian12"},"register_only":true,"hatchery_name":"vsphere-a"}}`,
		},
		{
			name: "v2 job",
			sign: func() (string, error) {
				return SignWorkerTokenV2(key, now, "vsphere-a", "brave-hopper", "debian12-vsphere", "0b9a1f4e-3a3c-4c8e-9a50-4d5b3b3c2a11")
			},
			want: `{"exp":1736499600,"jti":"5b0b1e8e-2c1f-4a43-a4f4-2d3c1a0e9b77","iat":1736496000,"iss":"vsphere-a","sub":"brave-hopper",` +
				`"Worker":{"worker_model":"brave-hopper","model_name":"debian12-vsphere","run_job_id":"0b9a1f4e-3a3c-4c8e-9a50-4d5b3b3c2a11","hatchery_name":"vsphere-a"}}`,
		},
		{
			name: "v1 job on a v2 model",
			sign: func() (string, error) {
				return SignWorkerTokenV1(key, now, "vsphere-a", "stoic-kirch", 0, "", 98766, false)
			},
			want: `{"exp":1736499600,"jti":"5b0b1e8e-2c1f-4a43-a4f4-2d3c1a0e9b77","iat":1736496000,"iss":"vsphere-a","sub":"stoic-kirch",` +
				`"Worker":{"worker_model":"stoic-kirch","model":{},"job_id":98766,"register_only":false,"hatchery_name":"vsphere-a"}}`,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			token, err := tt.sign()
			if err != nil {
				t.Fatal(err)
			}
			header, claims := decodeWorkerToken(t, key, token)
			if header != `{"alg":"RS512","typ":"JWT"}` {
				t.Errorf("header = %s", header)
			}
			if claims != tt.want {
				t.Errorf("claims\n got %s\nwant %s", claims, tt.want)
			}
		})
	}
}

func TestWorkerTokenFreshJTI(t *testing.T) {
	key := workerTestKey(t)
	now := time.Now()
	a, err := SignWorkerTokenV2(key, now, "h", "w", "m", "0b9a1f4e-3a3c-4c8e-9a50-4d5b3b3c2a11")
	if err != nil {
		t.Fatal(err)
	}
	b, err := SignWorkerTokenV2(key, now, "h", "w", "m", "0b9a1f4e-3a3c-4c8e-9a50-4d5b3b3c2a11")
	if err != nil {
		t.Fatal(err)
	}
	var ca, cb jwt.MapClaims
	if _, err := jwt.ParseWithClaims(a, &ca, func(*jwt.Token) (any, error) { return &key.PublicKey, nil }); err != nil {
		t.Fatal(err)
	}
	if _, err := jwt.ParseWithClaims(b, &cb, func(*jwt.Token) (any, error) { return &key.PublicKey, nil }); err != nil {
		t.Fatal(err)
	}
	ja, _ := ca["jti"].(string)
	jb, _ := cb["jti"].(string)
	if ja == jb || !cds.IsUUID(ja) || ja[14] != '4' {
		t.Errorf("jti should be fresh v4 UUIDs, got %q and %q", ja, jb)
	}
}

func TestWorkerTokenNoKey(t *testing.T) {
	if _, err := SignWorkerTokenV1(nil, time.Now(), "h", "w", 1, "m", 1, false); err == nil {
		t.Error("signing without a key should fail")
	}
}
