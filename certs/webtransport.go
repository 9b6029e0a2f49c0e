package certs

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"fmt"
	"sync"
	"time"
)

// Browsers accept a self-signed certificate for WebTransport when the page
// pins its SHA-256 (serverCertificateHashes), if it is ECDSA and valid for
// at most 14 days. Ours last 10 days and are renewed after 5.
const (
	webValidity = 10 * 24 * time.Hour
	webRenew    = webValidity / 2
)

// WebTransportCerts are the short-lived certificates a dev server shows
// browsers. The newest one is served; Hashes lists every one still valid,
// so a page that fetched them just before a renewal still connects.
type WebTransportCerts struct {
	hosts []string
	now   func() time.Time

	mu    sync.Mutex
	certs []webCert // oldest first
}

type webCert struct {
	cert     *tls.Certificate
	hash     [sha256.Size]byte
	notAfter time.Time
	renewAt  time.Time
}

// NewWebTransportCerts creates the first certificate for hosts (IP
// addresses or DNS names).
func NewWebTransportCerts(hosts []string) (*WebTransportCerts, error) {
	return newWebTransportCerts(hosts, time.Now)
}

func newWebTransportCerts(hosts []string, now func() time.Time) (*WebTransportCerts, error) {
	w := &WebTransportCerts{hosts: hosts, now: now}
	if err := w.renewIfDue(); err != nil {
		return nil, err
	}
	return w, nil
}

// GetCertificate serves the newest certificate (tls.Config.GetCertificate).
func (w *WebTransportCerts) GetCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	if err := w.renewIfDue(); err != nil {
		return nil, err
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.certs[len(w.certs)-1].cert, nil
}

// Hashes returns the SHA-256 of every valid certificate's DER, newest
// first, for the page's serverCertificateHashes.
func (w *WebTransportCerts) Hashes() ([][sha256.Size]byte, error) {
	if err := w.renewIfDue(); err != nil {
		return nil, err
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	hashes := make([][sha256.Size]byte, 0, len(w.certs))
	for i := len(w.certs) - 1; i >= 0; i-- {
		hashes = append(hashes, w.certs[i].hash)
	}
	return hashes, nil
}

// renewIfDue drops expired certificates and adds a new one when the newest
// is due for renewal.
func (w *WebTransportCerts) renewIfDue() error {
	now := w.now()
	w.mu.Lock()
	defer w.mu.Unlock()
	kept := w.certs[:0]
	for _, c := range w.certs {
		if now.Before(c.notAfter) {
			kept = append(kept, c)
		}
	}
	w.certs = kept
	if n := len(w.certs); n > 0 && now.Before(w.certs[n-1].renewAt) {
		return nil
	}
	c, err := newWebCert(w.hosts, now)
	if err != nil {
		return err
	}
	w.certs = append(w.certs, c)
	return nil
}

func newWebCert(hosts []string, now time.Time) (webCert, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return webCert{}, fmt.Errorf("certs: %w", err)
	}
	// The validity counts from NotBefore, so no backdating beyond a minute.
	tmpl := &x509.Certificate{
		Subject:     pkix.Name{CommonName: "quicpush dev WebTransport"},
		NotBefore:   now.Add(-time.Minute),
		NotAfter:    now.Add(webValidity - time.Minute),
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	addHosts(tmpl, hosts)
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return webCert{}, fmt.Errorf("certs: create WebTransport certificate: %w", err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		return webCert{}, fmt.Errorf("certs: %w", err)
	}
	return webCert{
		cert:     &tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf},
		hash:     sha256.Sum256(der),
		notAfter: tmpl.NotAfter,
		renewAt:  now.Add(webRenew),
	}, nil
}
