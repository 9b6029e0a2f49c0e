package certs

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/sha256"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// What Chromium requires of a certificate pinned by serverCertificateHashes.
func TestWebTransportCertIsWhatBrowsersAccept(t *testing.T) {
	w, err := NewWebTransportCerts([]string{"127.0.0.1", "localhost"})
	require.NoError(t, err)
	c, err := w.GetCertificate(nil)
	require.NoError(t, err)
	leaf := c.Leaf
	require.LessOrEqual(t, leaf.NotAfter.Sub(leaf.NotBefore), 14*24*time.Hour)
	key, ok := leaf.PublicKey.(*ecdsa.PublicKey)
	require.True(t, ok, "ECDSA")
	require.Equal(t, elliptic.P256(), key.Curve)
	require.Equal(t, "127.0.0.1", leaf.IPAddresses[0].String())
	require.Equal(t, []string{"localhost"}, leaf.DNSNames)
	hashes, err := w.Hashes()
	require.NoError(t, err)
	require.Equal(t, [][32]byte{sha256.Sum256(c.Certificate[0])}, hashes)
}

func TestWebTransportCertsRotate(t *testing.T) {
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	w, err := newWebTransportCerts([]string{"127.0.0.1"}, func() time.Time { return now })
	require.NoError(t, err)
	first, _ := w.GetCertificate(nil)

	now = now.Add(webRenew - time.Hour) // not yet due
	c, _ := w.GetCertificate(nil)
	require.Same(t, first, c)

	now = now.Add(2 * time.Hour) // due: a new one is served, both are pinned
	second, _ := w.GetCertificate(nil)
	require.NotSame(t, first, second)
	hashes, err := w.Hashes()
	require.NoError(t, err)
	require.Equal(t, [][32]byte{sha256.Sum256(second.Certificate[0]), sha256.Sum256(first.Certificate[0])}, hashes)

	now = first.Leaf.NotAfter.Add(time.Second) // the first expired: dropped
	hashes, err = w.Hashes()
	require.NoError(t, err)
	require.Equal(t, [][32]byte{sha256.Sum256(second.Certificate[0])}, hashes)
}
