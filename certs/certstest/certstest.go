// Package certstest gives tests the TLS configurations of a fresh dev CA.
package certstest

import (
	"crypto/tls"
	"testing"

	"github.com/quicpush/quicpush/certs"
)

// Configs returns a server configuration with a dev certificate for
// 127.0.0.1 and a client configuration trusting its CA, both offering
// proto (ALPN).
func Configs(t testing.TB, proto string) (server, client *tls.Config) {
	t.Helper()
	dev, err := certs.EnsureDev(t.TempDir(), []string{"127.0.0.1"})
	if err != nil {
		t.Fatal(err)
	}
	cert, err := tls.LoadX509KeyPair(dev.Cert, dev.Key)
	if err != nil {
		t.Fatal(err)
	}
	pool, err := certs.CAPool(dev.CA)
	if err != nil {
		t.Fatal(err)
	}
	return &tls.Config{Certificates: []tls.Certificate{cert}, NextProtos: []string{proto}},
		&tls.Config{RootCAs: pool, ServerName: "127.0.0.1", NextProtos: []string{proto}}
}
