package main

import (
	"encoding/base64"
	"fmt"
	"net"
	"net/http"
	"sync/atomic"

	"github.com/quicpush/quicpush/certs"
	"github.com/quicpush/quicpush/client/web"
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

// pageConfig tells the demo page where the server is and which
// certificates to pin. The page is served by the admin server, so its
// WebTransport URL names the UDP port on the loopback address browsers use
// for WebTransport (Chromium tries ::1 for "localhost" and does not fall
// back), or the --listen host when it is a specific one.
func (w *webAccess) pageConfig(udp net.Addr, log func(msg string, args ...any)) web.PageConfig {
	host, port, _ := net.SplitHostPort(udp.String())
	if ip := net.ParseIP(host); ip == nil || ip.IsUnspecified() {
		host = "127.0.0.1"
	}
	cfg := web.PageConfig{URL: "https://" + net.JoinHostPort(host, port) + server.WebTransportPath}
	if w.certs == nil {
		return cfg
	}
	hashes, err := w.certs.Hashes()
	if err != nil {
		log("cannot renew the browsers' dev certificate", "err", err)
	}
	for _, h := range hashes {
		cfg.CertHashes = append(cfg.CertHashes, base64.StdEncoding.EncodeToString(h[:]))
	}
	return cfg
}

// webSlot serves the SDK and the demo pages once the server listens (the
// page needs its address), 503 until then.
type webSlot struct{ h atomic.Value }

func (s *webSlot) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	h, _ := s.h.Load().(http.Handler)
	if h == nil {
		http.Error(w, "quicpushd is starting: try again shortly", http.StatusServiceUnavailable)
		return
	}
	h.ServeHTTP(w, r)
}
