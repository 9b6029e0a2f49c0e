package certs

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"time"
)

const (
	caValidity   = 10 * 365 * 24 * time.Hour
	leafValidity = 365 * 24 * time.Hour
	// renewBefore is how long before expiry EnsureDev replaces a certificate,
	// so that a server started now keeps a valid one for at least a week.
	renewBefore = 7 * 24 * time.Hour
	// backdate tolerates peers whose clocks are slightly behind ours.
	backdate = time.Hour
)

// DevFiles are the paths of the files EnsureDev maintains.
type DevFiles struct {
	CA   string // the dev CA certificate, for clients to trust (see CAPool)
	Cert string // the server certificate, signed by the CA
	Key  string // the server certificate's private key
}

// EnsureDev makes sure dir holds a development CA (ca.pem, ca-key.pem, valid
// for 10 years) and a server certificate signed by it (server.pem,
// server-key.pem, valid for 1 year) for hosts: IP addresses become IP SANs,
// anything else DNS SANs. No hosts means "localhost", "127.0.0.1" and "::1".
//
// Existing files are reused. The server certificate is replaced when it is
// missing, unreadable, expires within 7 days, is not signed by the CA, or
// does not cover every host; the CA when ca.pem is missing or expires within
// 7 days. A ca.pem without a usable ca-key.pem is an error: a CA that clients
// may trust is never replaced silently.
func EnsureDev(dir string, hosts []string) (*DevFiles, error) {
	return ensureDev(dir, hosts, time.Now())
}

func ensureDev(dir string, hosts []string, now time.Time) (*DevFiles, error) {
	if len(hosts) == 0 {
		hosts = []string{"localhost", "127.0.0.1", "::1"}
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("certs: %w", err)
	}
	files := &DevFiles{
		CA:   filepath.Join(dir, "ca.pem"),
		Cert: filepath.Join(dir, "server.pem"),
		Key:  filepath.Join(dir, "server-key.pem"),
	}
	ca, caKey, err := loadOrCreateCA(files.CA, filepath.Join(dir, "ca-key.pem"), now)
	if err != nil {
		return nil, err
	}
	leaf, err := loadPair(files.Cert, files.Key)
	if err == nil && leafUsable(leaf.Leaf, ca, hosts, now) {
		return files, nil
	}
	if err := createLeaf(files.Cert, files.Key, ca, caKey, hosts, now); err != nil {
		return nil, err
	}
	return files, nil
}

// loadOrCreateCA returns the CA in certFile and keyFile, creating it when
// certFile is missing or about to expire.
func loadOrCreateCA(certFile, keyFile string, now time.Time) (*x509.Certificate, crypto.Signer, error) {
	if _, err := os.Stat(certFile); errors.Is(err, fs.ErrNotExist) {
		return createCA(certFile, keyFile, now)
	}
	pair, err := loadPair(certFile, keyFile)
	if err != nil {
		return nil, nil, fmt.Errorf("%w (delete %s to create a new dev CA)", err, certFile)
	}
	signer, ok := pair.PrivateKey.(crypto.Signer)
	if !pair.Leaf.IsCA || !ok {
		return nil, nil, fmt.Errorf("certs: %s is not a CA certificate (delete it to create a new dev CA)", certFile)
	}
	if now.Add(renewBefore).After(pair.Leaf.NotAfter) {
		return createCA(certFile, keyFile, now)
	}
	return pair.Leaf, signer, nil
}

func createCA(certFile, keyFile string, now time.Time) (*x509.Certificate, crypto.Signer, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, fmt.Errorf("certs: %w", err)
	}
	tmpl := &x509.Certificate{
		Subject:               pkix.Name{CommonName: "quicpush dev CA"},
		NotBefore:             now.Add(-backdate),
		NotAfter:              now.Add(caValidity),
		IsCA:                  true,
		BasicConstraintsValid: true,
		MaxPathLenZero:        true, // it signs server certificates only
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
	}
	// The key goes first: the presence of certFile marks a complete CA.
	der, err := writeCertAndKey(certFile, keyFile, tmpl, tmpl, key, key)
	if err != nil {
		return nil, nil, err
	}
	ca, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, nil, fmt.Errorf("certs: %w", err)
	}
	return ca, key, nil
}

func createLeaf(certFile, keyFile string, ca *x509.Certificate, caKey crypto.Signer, hosts []string, now time.Time) error {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return fmt.Errorf("certs: %w", err)
	}
	tmpl := &x509.Certificate{
		Subject:     pkix.Name{CommonName: "quicpush dev server"},
		NotBefore:   now.Add(-backdate),
		NotAfter:    now.Add(leafValidity),
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	addHosts(tmpl, hosts)
	_, err = writeCertAndKey(certFile, keyFile, tmpl, ca, key, caKey)
	return err
}

// addHosts puts hosts into tmpl's subject alternative names.
func addHosts(tmpl *x509.Certificate, hosts []string) {
	for _, h := range hosts {
		if ip := net.ParseIP(h); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else {
			tmpl.DNSNames = append(tmpl.DNSNames, h)
		}
	}
}

// writeCertAndKey signs tmpl with parentKey and writes the certificate and
// key as PEM (the key with mode 0600), the key first. It returns the DER.
// A nil tmpl.SerialNumber makes x509 pick a random one.
func writeCertAndKey(certFile, keyFile string, tmpl, parent *x509.Certificate, key *ecdsa.PrivateKey, parentKey crypto.Signer) ([]byte, error) {
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, key.Public(), parentKey)
	if err != nil {
		return nil, fmt.Errorf("certs: create certificate: %w", err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, fmt.Errorf("certs: %w", err)
	}
	if err := writeFileAtomic(keyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}), 0o600); err != nil {
		return nil, err
	}
	if err := writeFileAtomic(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644); err != nil {
		return nil, err
	}
	return der, nil
}

// leafUsable reports whether leaf is valid now and for at least renewBefore
// more, chains to ca, and covers every host.
func leafUsable(leaf, ca *x509.Certificate, hosts []string, now time.Time) bool {
	if now.Before(leaf.NotBefore) {
		return false
	}
	roots := x509.NewCertPool()
	roots.AddCert(ca)
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: roots, CurrentTime: now.Add(renewBefore)}); err != nil {
		return false
	}
	for _, h := range hosts {
		if leaf.VerifyHostname(h) != nil {
			return false
		}
	}
	return true
}
