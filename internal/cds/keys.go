package cds

import (
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"fmt"
)

// PublicKeyPEM encodes pub as the PEM text the API expects at registration: PKCS#1 in a
// block of type "RSA PUBLIC KEY". Put it in Service.PublicKey / V2SigninRequest.PublicKey as
// is; JSON encoding turns it into standard base64 (section 3.2).
func PublicKeyPEM(pub *rsa.PublicKey) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "RSA PUBLIC KEY", Bytes: x509.MarshalPKCS1PublicKey(pub)})
}

// ParseSigningKeyHeader decodes the X-Api-Pub-Signing-Key header value: standard base64 of a
// PEM "RSA PUBLIC KEY" block.
func ParseSigningKeyHeader(v string) (*rsa.PublicKey, error) {
	if v == "" {
		return nil, fmt.Errorf("%w: header %s missing", ErrSigningKey, HeaderAPIPubSigningKey)
	}
	raw, err := base64.StdEncoding.DecodeString(v)
	if err != nil {
		return nil, fmt.Errorf("%w: base64: %v", ErrSigningKey, err)
	}
	return parsePublicKeyPEM(raw)
}

func parsePublicKeyPEM(raw []byte) (*rsa.PublicKey, error) {
	block, _ := pem.Decode(raw)
	if block == nil {
		return nil, fmt.Errorf("%w: no PEM block", ErrSigningKey)
	}
	switch block.Type {
	case "RSA PUBLIC KEY":
		pub, err := x509.ParsePKCS1PublicKey(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("%w: %v", ErrSigningKey, err)
		}
		return pub, nil
	case "PUBLIC KEY":
		// Lenient: a PKIX-wrapped RSA key is the same key.
		k, err := x509.ParsePKIXPublicKey(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("%w: %v", ErrSigningKey, err)
		}
		pub, ok := k.(*rsa.PublicKey)
		if !ok {
			return nil, fmt.Errorf("%w: not an RSA key", ErrSigningKey)
		}
		return pub, nil
	}
	return nil, fmt.Errorf("%w: %v", ErrSigningKey, errors.New("unexpected PEM block type "+block.Type))
}
