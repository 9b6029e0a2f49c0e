package server

import (
	"context"
	"crypto/tls"
	"net/http"
	"slices"
	"sync"

	"github.com/quic-go/quic-go"
	"github.com/quic-go/quic-go/http3"
	"github.com/quic-go/webtransport-go"

	"github.com/quicpush/quicpush/stream"
)

// WebTransportPath is where browsers open their WebTransport session:
// https://HOST:PORT/wt/v1 on the server's UDP port.
const WebTransportPath = "/wt/v1"

// WebTransportConfig lets browsers connect over WebTransport (HTTP/3) on the
// same UDP port as native clients, speaking the same protocol.
type WebTransportConfig struct {
	// Origins are the pages allowed to connect, as the browser sends them in
	// the Origin header (e.g. "https://class.example.com"); "*" allows any.
	// A page whose origin is not listed gets 403.
	Origins []string
	// GetCertificate, when set, picks the certificate for browsers (ALPN h3
	// only): in dev mode a short-lived one pinned by the page through
	// serverCertificateHashes. Nil: the TLSConfig's certificate.
	GetCertificate func(*tls.ClientHelloInfo) (*tls.Certificate, error)
}

// webServer runs HTTP/3 on the QUIC connections that negotiated h3 and
// turns each WebTransport session at WebTransportPath into a conn.
type webServer struct {
	s  *Server
	wt *webtransport.Server

	mu    sync.Mutex
	conns map[*quic.Conn]struct{} // HTTP/3 connections: nobody else closes them
}

type quicConnKey struct{}

func newWebServer(s *Server) *webServer {
	w := &webServer{s: s, conns: map[*quic.Conn]struct{}{}}
	mux := http.NewServeMux()
	mux.HandleFunc(WebTransportPath, w.serveSession)
	w.wt = &webtransport.Server{
		H3: &http3.Server{
			Handler: mux,
			ConnContext: func(ctx context.Context, qc *quic.Conn) context.Context {
				return context.WithValue(ctx, quicConnKey{}, qc)
			},
		},
		CheckOrigin: w.originAllowed,
	}
	return w
}

func (w *webServer) originAllowed(r *http.Request) bool {
	origin := r.Header.Get("Origin")
	origins := w.s.cfg.WebTransport.Origins
	return origin == "" || slices.Contains(origins, "*") || slices.Contains(origins, origin)
}

// serveSession runs one browser's session for as long as it lasts.
func (w *webServer) serveSession(rw http.ResponseWriter, r *http.Request) {
	if !w.originAllowed(r) {
		w.s.log.Info("WebTransport origin refused", "origin", r.Header.Get("Origin"))
		http.Error(rw, "origin not allowed: add it to the server's WebTransport origins", http.StatusForbidden)
		return
	}
	qc, _ := r.Context().Value(quicConnKey{}).(*quic.Conn)
	sess, err := w.wt.Upgrade(rw, r)
	if err != nil || qc == nil {
		w.s.log.Info("WebTransport upgrade failed", "remote", r.RemoteAddr, "err", err)
		http.Error(rw, "a WebTransport CONNECT request is expected here", http.StatusBadRequest)
		return
	}
	c := newConn(w.s, webTransport{sess: sess, qc: qc})
	if !w.s.track(c) {
		sess.CloseWithError(webtransport.SessionErrorCode(stream.ShuttingDown), "server shutting down")
		return
	}
	defer w.s.wg.Done()
	defer w.s.untrack(c)
	c.serve()
}

// serveHTTP3 serves a connection that negotiated h3 until it closes.
func (s *Server) serveHTTP3(qc *quic.Conn) {
	w := s.web
	if w == nil { // not offered in ALPN then; a defence only
		qc.CloseWithError(quic.ApplicationErrorCode(http3.ErrCodeNoError), "")
		return
	}
	s.mu.Lock()
	closing := s.shuttingDown || s.closed
	if !closing {
		s.wg.Add(1)
	}
	s.mu.Unlock()
	if closing {
		qc.CloseWithError(quic.ApplicationErrorCode(http3.ErrCodeNoError), "server shutting down")
		return
	}
	w.mu.Lock()
	w.conns[qc] = struct{}{}
	w.mu.Unlock()
	go func() {
		defer s.wg.Done()
		if err := w.wt.ServeQUICConn(qc); err != nil {
			s.log.Debug("HTTP/3 connection ended", "remote", qc.RemoteAddr().String(), "err", err)
		}
		// ServeQUICConn leaves the connection to its caller.
		qc.CloseWithError(quic.ApplicationErrorCode(http3.ErrCodeNoError), "")
		w.mu.Lock()
		delete(w.conns, qc)
		w.mu.Unlock()
	}()
}

// closeHTTP3 closes every HTTP/3 connection: neither http3 nor webtransport
// closes the ones handed to ServeQUICConn.
func (s *Server) closeHTTP3() {
	if s.web == nil {
		return
	}
	s.web.wt.Close()
	s.web.mu.Lock()
	defer s.web.mu.Unlock()
	for qc := range s.web.conns {
		qc.CloseWithError(quic.ApplicationErrorCode(http3.ErrCodeNoError), "server closed")
	}
}

// configureWebTLS offers h3 beside quicpush/1 and, when configured, gives
// browsers their own certificate.
func (s *Server) configureWebTLS(t *tls.Config) {
	t.NextProtos = append(t.NextProtos, http3.NextProtoH3)
	web := s.cfg.WebTransport.GetCertificate
	if web == nil {
		return
	}
	native := t.GetCertificate
	t.GetCertificate = func(hello *tls.ClientHelloInfo) (*tls.Certificate, error) {
		if slices.Contains(hello.SupportedProtos, http3.NextProtoH3) && !slices.Contains(hello.SupportedProtos, stream.ALPN) {
			return web(hello)
		}
		if native != nil {
			return native(hello)
		}
		return nil, nil // tls falls back to Certificates
	}
}

// maxIncomingUniStreams: the native protocol uses none; HTTP/3 needs its
// control and QPACK streams (quic.Config is per listener, so both share it).
func (s *Server) maxIncomingUniStreams() int64 {
	if s.cfg.WebTransport == nil {
		return -1
	}
	return 16
}
