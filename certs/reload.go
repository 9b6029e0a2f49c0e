package certs

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"os"
	"sync/atomic"
)

// Reloader serves a certificate that can be replaced while the server runs,
// e.g. after a renewal, without a restart. It is safe for concurrent use.
type Reloader struct {
	certFile, keyFile string
	cert              atomic.Pointer[tls.Certificate]
}

// Load reads a PEM certificate chain and its PEM private key. Errors name the
// file at fault: missing, unparsable, or a key that does not match.
func Load(certFile, keyFile string) (*Reloader, error) {
	r := &Reloader{certFile: certFile, keyFile: keyFile}
	if err := r.Reload(); err != nil {
		return nil, err
	}
	return r, nil
}

// GetCertificate returns the current certificate; it is meant for
// tls.Config.GetCertificate.
func (r *Reloader) GetCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	return r.cert.Load(), nil
}

// Reload re-reads the files given to Load. New handshakes use the new
// certificate only if the files hold a valid, matching pair; on error the
// current certificate stays in use.
func (r *Reloader) Reload() error {
	c, err := loadPair(r.certFile, r.keyFile)
	if err != nil {
		if r.cert.Load() != nil {
			return fmt.Errorf("%w (still serving the previous certificate)", err)
		}
		return err
	}
	r.cert.Store(c)
	return nil
}

// CAPool returns a pool with the PEM certificates in caFile, for clients that
// trust the dev CA (tls.Config.RootCAs).
func CAPool(caFile string) (*x509.CertPool, error) {
	data, err := os.ReadFile(caFile)
	if err != nil {
		return nil, fmt.Errorf("certs: read CA: %w", err)
	}
	cas, err := parseCerts(caFile, data)
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	for _, ca := range cas {
		pool.AddCert(ca)
	}
	return pool, nil
}

// loadPair reads a certificate chain and its key; errors name the file at fault.
func loadPair(certFile, keyFile string) (*tls.Certificate, error) {
	certPEM, err := os.ReadFile(certFile)
	if err != nil {
		return nil, fmt.Errorf("certs: read certificate: %w", err)
	}
	if _, err := parseCerts(certFile, certPEM); err != nil {
		return nil, err
	}
	keyPEM, err := os.ReadFile(keyFile)
	if err != nil {
		return nil, fmt.Errorf("certs: read key: %w", err)
	}
	// The certificates parse, so whatever fails now is the key's fault.
	pair, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return nil, fmt.Errorf("certs: key %s for certificate %s: %w", keyFile, certFile, err)
	}
	return &pair, nil
}

// parseCerts parses every CERTIFICATE block of data, which was read from file.
// Unlike x509.CertPool.AppendCertsFromPEM it reports what is wrong, and where.
func parseCerts(file string, data []byte) ([]*x509.Certificate, error) {
	var certs []*x509.Certificate
	for block, rest := pem.Decode(data); block != nil; block, rest = pem.Decode(rest) {
		if block.Type != "CERTIFICATE" {
			continue
		}
		c, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("certs: %s: %w", file, err)
		}
		certs = append(certs, c)
	}
	if len(certs) == 0 {
		return nil, fmt.Errorf("certs: %s: no PEM CERTIFICATE block", file)
	}
	return certs, nil
}
