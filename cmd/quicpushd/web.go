package main

import (
	"fmt"
	"net"

	"github.com/quicpush/quicpush/certs"
	"github.com/quicpush/quicpush/server"
)

// webAccess is how browsers reach the server over WebTransport: the pages
// that may connect and, with the dev certificate, the short-lived one that
// pages pin through serverCertificateHashes (browsers do not trust the dev
// CA, and should not be asked to).
type webAccess struct {
	origins []string
	certs   *certs.WebTransportCerts // nil with --cert: browsers check it themselves
}

func newWebAccess(f flags, admin net.Addr) (*webAccess, error) {
	w := &webAccess{origins: f.WebOrigins}
	if len(w.origins) == 0 {
		w.origins = adminOrigins(admin)
	}
	if f.Cert == "" {
		c, err := certs.NewWebTransportCerts([]string{"127.0.0.1", "::1", "localhost"})
		if err != nil {
			return nil, fmt.Errorf("cannot create the browsers' dev certificate: %w", err)
		}
		w.certs = c
	}
	return w, nil
}

func (w *webAccess) serverConfig() *server.WebTransportConfig {
	cfg := &server.WebTransportConfig{Origins: w.origins}
	if w.certs != nil {
		cfg.GetCertificate = w.certs.GetCertificate
	}
	return cfg
}

// adminOrigins are the origins of pages served by the admin server.
func adminOrigins(admin net.Addr) []string {
	host, port, _ := net.SplitHostPort(admin.String())
	origins := []string{"http://127.0.0.1:" + port, "http://localhost:" + port}
	if ip := net.ParseIP(host); ip != nil && !ip.IsUnspecified() && !ip.Equal(net.IPv4(127, 0, 0, 1)) {
		origins = append(origins, "http://"+net.JoinHostPort(host, port))
	}
	return origins
}
