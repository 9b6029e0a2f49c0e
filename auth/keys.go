package auth

import (
	"bytes"
	"crypto"
	"crypto/ed25519"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"os"
)

// Key sizes below which a key is refused: RFC 7518 asks for an HMAC key at
// least as long as the hash (section 3.2) and RSA keys of 2048 bits or more
// (section 3.3).
const (
	minSecretLen = 32
	minRSABits   = 2048
)

// LoadSecret reads an HS256 secret from path: the file's bytes, without
// trailing white space (so "openssl rand -base64 32 > FILE" makes one). Errors
// name the file, never its content.
func LoadSecret(path string) ([]byte, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	b = bytes.TrimRight(b, " \t\r\n")
	if err := checkSecret(b); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return b, nil
}

func checkSecret(b []byte) error {
	if len(b) < minSecretLen {
		return fmt.Errorf("an HS256 secret of %d bytes is too short: use at least %d (e.g. openssl rand -base64 32 > FILE)", len(b), minSecretLen)
	}
	return nil
}

// LoadPublicKey reads a PEM public key from path, to verify tokens: Ed25519
// (EdDSA) or RSA (RS256), in a "PUBLIC KEY" (PKIX) block; "openssl pkey -in
// key.pem -pubout" writes one.
func LoadPublicKey(path string) (crypto.PublicKey, error) {
	der, err := readPEM(path)
	if err != nil {
		return nil, err
	}
	key, err := x509.ParsePKIXPublicKey(der)
	if err != nil {
		return nil, fmt.Errorf("%s: not a PKIX public key: %w", path, err)
	}
	if err := checkKey(key); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return key, nil
}

// LoadPrivateKey reads a PEM private key from path, to mint tokens: Ed25519
// or RSA, in a "PRIVATE KEY" (PKCS #8) block; "openssl genpkey -algorithm
// ed25519" writes one.
func LoadPrivateKey(path string) (crypto.Signer, error) {
	der, err := readPEM(path)
	if err != nil {
		return nil, err
	}
	key, err := x509.ParsePKCS8PrivateKey(der)
	if err != nil {
		return nil, fmt.Errorf("%s: not a PKCS #8 private key: %w", path, err)
	}
	signer, ok := key.(crypto.Signer)
	if !ok {
		return nil, fmt.Errorf("%s: a %T cannot sign", path, key)
	}
	if err := checkKey(signer.Public()); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return signer, nil
}

func readPEM(path string) ([]byte, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	block, _ := pem.Decode(b)
	if block == nil {
		return nil, fmt.Errorf("%s: no PEM block", path)
	}
	return block.Bytes, nil
}

// checkKey accepts the public keys a Verifier can use.
func checkKey(key crypto.PublicKey) error {
	switch k := key.(type) {
	case ed25519.PublicKey:
		return nil
	case *rsa.PublicKey:
		if k.N.BitLen() < minRSABits {
			return fmt.Errorf("an RSA key of %d bits is too short: use at least %d", k.N.BitLen(), minRSABits)
		}
		return nil
	default:
		return fmt.Errorf("a %T key is not supported: use Ed25519 (EdDSA) or RSA (RS256)", key)
	}
}
