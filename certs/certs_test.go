package certs

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func readFile(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	require.NoError(t, err)
	return b
}

func copyFile(t *testing.T, dst, src string) {
	t.Helper()
	require.NoError(t, os.WriteFile(dst, readFile(t, src), 0o600))
}

func requireMode(t *testing.T, path string, want fs.FileMode) {
	t.Helper()
	fi, err := os.Stat(path)
	require.NoError(t, err)
	require.Equal(t, want, fi.Mode().Perm(), path)
}

func leafOf(t *testing.T, certFile string) *x509.Certificate {
	t.Helper()
	cs, err := parseCerts(certFile, readFile(t, certFile))
	require.NoError(t, err)
	return cs[0]
}

// serveTLS accepts TLS connections on 127.0.0.1 and writes one byte on each,
// which completes the handshake and delivers the session tickets.
func serveTLS(t *testing.T, conf *tls.Config) string {
	t.Helper()
	ln, err := tls.Listen("tcp", "127.0.0.1:0", conf)
	require.NoError(t, err)
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Write([]byte{1})
			c.Close()
		}
	})
	t.Cleanup(func() { ln.Close(); wg.Wait() })
	return ln.Addr().String()
}

func dialTLS(t *testing.T, addr string, conf *tls.Config) tls.ConnectionState {
	t.Helper()
	c, err := tls.Dial("tcp", addr, conf)
	require.NoError(t, err)
	defer c.Close()
	_, err = c.Read(make([]byte, 1))
	require.NoError(t, err)
	return c.ConnectionState()
}

func TestEnsureDevCreatesFiles(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "certs") // missing: EnsureDev creates it
	files, err := EnsureDev(dir, nil)
	require.NoError(t, err)
	require.Equal(t, &DevFiles{
		CA:   filepath.Join(dir, "ca.pem"),
		Cert: filepath.Join(dir, "server.pem"),
		Key:  filepath.Join(dir, "server-key.pem"),
	}, files)
	requireMode(t, filepath.Join(dir, "ca-key.pem"), 0o600)
	requireMode(t, files.Key, 0o600)
	requireMode(t, files.CA, 0o644)
	requireMode(t, files.Cert, 0o644)

	ca := leafOf(t, files.CA)
	require.True(t, ca.IsCA)
	require.Equal(t, "quicpush dev CA", ca.Subject.CommonName)
	require.WithinDuration(t, time.Now().Add(caValidity), ca.NotAfter, 2*time.Hour)

	leaf := leafOf(t, files.Cert)
	require.NoError(t, leaf.CheckSignatureFrom(ca))
	require.Equal(t, []string{"localhost"}, leaf.DNSNames)
	require.Len(t, leaf.IPAddresses, 2)
	require.True(t, leaf.IPAddresses[0].Equal(net.ParseIP("127.0.0.1")))
	require.True(t, leaf.IPAddresses[1].Equal(net.IPv6loopback))
	require.Equal(t, x509.ECDSA, leaf.PublicKeyAlgorithm)
	require.WithinDuration(t, time.Now().Add(leafValidity), leaf.NotAfter, 2*time.Hour)

	entries, err := os.ReadDir(dir)
	require.NoError(t, err)
	require.Len(t, entries, 4, "no temporary files are left behind")
}

func TestEnsureDevReusesFiles(t *testing.T) {
	dir := t.TempDir()
	hosts := []string{"push.example", "10.0.0.1"}
	files, err := EnsureDev(dir, hosts)
	require.NoError(t, err)
	names := []string{files.CA, filepath.Join(dir, "ca-key.pem"), files.Cert, files.Key}
	before := map[string][]byte{}
	for _, n := range names {
		before[n] = readFile(t, n)
	}

	again, err := EnsureDev(dir, hosts)
	require.NoError(t, err)
	require.Equal(t, files, again)
	for _, n := range names {
		require.Equal(t, before[n], readFile(t, n), n)
	}
}

func TestEnsureDevHandshake(t *testing.T) {
	files, err := EnsureDev(t.TempDir(), nil)
	require.NoError(t, err)
	cert, err := Load(files.Cert, files.Key)
	require.NoError(t, err)
	pool, err := CAPool(files.CA)
	require.NoError(t, err)
	addr := serveTLS(t, &tls.Config{GetCertificate: cert.GetCertificate})

	for _, name := range []string{"localhost", "127.0.0.1"} {
		t.Run(name, func(t *testing.T) {
			state := dialTLS(t, addr, &tls.Config{RootCAs: pool, ServerName: name})
			require.Len(t, state.VerifiedChains, 1)
		})
	}
	t.Run("unknown name", func(t *testing.T) {
		_, err := tls.Dial("tcp", addr, &tls.Config{RootCAs: pool, ServerName: "example.com"})
		require.ErrorContains(t, err, "example.com")
	})
}

func TestEnsureDevRenewsLeaf(t *testing.T) {
	for _, tc := range []struct {
		name  string
		later time.Duration
	}{
		{"expires within 7 days", leafValidity - 6*24*time.Hour},
		{"expired", leafValidity + time.Hour},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			files, err := EnsureDev(dir, nil)
			require.NoError(t, err)
			ca, old := readFile(t, files.CA), leafOf(t, files.Cert)

			now := time.Now().Add(tc.later)
			_, err = ensureDev(dir, nil, now)
			require.NoError(t, err)
			require.Equal(t, ca, readFile(t, files.CA), "the CA is kept")
			leaf := leafOf(t, files.Cert)
			require.NotEqual(t, old.SerialNumber, leaf.SerialNumber)
			require.True(t, leaf.NotAfter.After(now.Add(renewBefore)))
			_, err = loadPair(files.Cert, files.Key)
			require.NoError(t, err, "the new key matches the new certificate")
		})
	}
}

func TestEnsureDevRenewsLeafForNewCA(t *testing.T) {
	dir, other := t.TempDir(), t.TempDir()
	files, err := EnsureDev(dir, nil)
	require.NoError(t, err)
	_, err = EnsureDev(other, nil)
	require.NoError(t, err)
	for _, name := range []string{"ca.pem", "ca-key.pem"} {
		copyFile(t, filepath.Join(dir, name), filepath.Join(other, name))
	}

	_, err = EnsureDev(dir, nil)
	require.NoError(t, err)
	require.NoError(t, leafOf(t, files.Cert).CheckSignatureFrom(leafOf(t, files.CA)))
}

func TestEnsureDevRenewsLeafForNewHosts(t *testing.T) {
	dir := t.TempDir()
	files, err := EnsureDev(dir, nil)
	require.NoError(t, err)
	_, err = EnsureDev(dir, []string{"push.example"})
	require.NoError(t, err)
	require.Equal(t, []string{"push.example"}, leafOf(t, files.Cert).DNSNames)
}

func TestEnsureDevRefusesCAWithoutKey(t *testing.T) {
	dir := t.TempDir()
	files, err := EnsureDev(dir, nil)
	require.NoError(t, err)
	ca := readFile(t, files.CA)
	require.NoError(t, os.Remove(filepath.Join(dir, "ca-key.pem")))

	_, err = EnsureDev(dir, nil)
	require.ErrorContains(t, err, filepath.Join(dir, "ca-key.pem"))
	require.ErrorIs(t, err, fs.ErrNotExist)
	require.Equal(t, ca, readFile(t, files.CA), "a CA clients may trust is not replaced")
}

func TestReloader(t *testing.T) {
	a, err := EnsureDev(t.TempDir(), nil)
	require.NoError(t, err)
	b, err := EnsureDev(t.TempDir(), nil)
	require.NoError(t, err)
	dir := t.TempDir()
	certFile, keyFile := filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	copyFile(t, certFile, a.Cert)
	copyFile(t, keyFile, a.Key)

	r, err := Load(certFile, keyFile)
	require.NoError(t, err)
	serial := func() string {
		c, err := r.GetCertificate(nil)
		require.NoError(t, err)
		return c.Leaf.SerialNumber.String()
	}
	require.Equal(t, leafOf(t, a.Cert).SerialNumber.String(), serial())

	copyFile(t, certFile, b.Cert)
	copyFile(t, keyFile, b.Key)
	require.NoError(t, r.Reload())
	wantB := leafOf(t, b.Cert).SerialNumber.String()
	require.Equal(t, wantB, serial())

	t.Run("garbage certificate", func(t *testing.T) {
		require.NoError(t, os.WriteFile(certFile, []byte("garbage"), 0o600))
		err := r.Reload()
		require.ErrorContains(t, err, certFile)
		require.ErrorContains(t, err, "previous certificate")
		require.Equal(t, wantB, serial())
	})
	t.Run("mismatched key", func(t *testing.T) {
		copyFile(t, certFile, a.Cert) // keyFile still holds b's key
		err := r.Reload()
		require.ErrorContains(t, err, keyFile)
		require.ErrorContains(t, err, "does not match")
		require.Equal(t, wantB, serial())
	})
	t.Run("missing key", func(t *testing.T) {
		require.NoError(t, os.Remove(keyFile))
		err := r.Reload()
		require.ErrorIs(t, err, fs.ErrNotExist)
		require.ErrorContains(t, err, keyFile)
		require.Equal(t, wantB, serial())
	})
}

func TestLoadErrors(t *testing.T) {
	files, err := EnsureDev(t.TempDir(), nil)
	require.NoError(t, err)
	dir := t.TempDir()
	missing := filepath.Join(dir, "missing.pem")
	garbage := filepath.Join(dir, "garbage.pem")
	require.NoError(t, os.WriteFile(garbage, []byte("not PEM"), 0o600))

	for _, tc := range []struct {
		name, cert, key, inErr string
	}{
		{"missing certificate", missing, files.Key, missing},
		{"missing key", files.Cert, missing, missing},
		{"garbage certificate", garbage, files.Key, garbage},
		{"garbage key", files.Cert, garbage, garbage},
		{"key for another certificate", files.CA, files.Key, files.Key},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Load(tc.cert, tc.key)
			require.ErrorContains(t, err, tc.inErr)
		})
	}
}

func TestCAPoolErrors(t *testing.T) {
	dir := t.TempDir()
	missing := filepath.Join(dir, "missing.pem")
	_, err := CAPool(missing)
	require.ErrorIs(t, err, fs.ErrNotExist)
	require.ErrorContains(t, err, missing)

	garbage := filepath.Join(dir, "garbage.pem")
	require.NoError(t, os.WriteFile(garbage, []byte("not PEM"), 0o600))
	_, err = CAPool(garbage)
	require.ErrorContains(t, err, garbage)
}

func TestKeysPersist(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "data")
	k1, err := LoadOrCreateKeys(dir)
	require.NoError(t, err)
	requireMode(t, filepath.Join(dir, "keys.json"), 0o600)
	require.NotEqual(t, [32]byte{}, k1.StatelessResetKey)
	require.NotEqual(t, k1.StatelessResetKey, k1.TokenGeneratorKey)
	require.Len(t, k1.TicketKeys(), 1)

	k2, err := LoadOrCreateKeys(dir)
	require.NoError(t, err)
	require.Equal(t, k1.StatelessResetKey, k2.StatelessResetKey)
	require.Equal(t, k1.TokenGeneratorKey, k2.TokenGeneratorKey)
	require.Equal(t, k1.TicketKeys(), k2.TicketKeys())
	require.Equal(t, "certs.Keys{redacted}", fmt.Sprint(k1), "printing leaks no secret")
}

func TestKeysRotate(t *testing.T) {
	dir := t.TempDir()
	k, err := LoadOrCreateKeys(dir)
	require.NoError(t, err)
	first := k.TicketKeys()[0]
	const every = 24 * time.Hour
	now := time.Now()

	rotated, err := k.RotateTicketKeys(now.Add(every/2), every)
	require.NoError(t, err)
	require.False(t, rotated, "the current key is not old enough")

	now = now.Add(every + time.Minute)
	rotated, err = k.RotateTicketKeys(now, every)
	require.NoError(t, err)
	require.True(t, rotated)
	keys := k.TicketKeys()
	require.Len(t, keys, 2)
	require.Equal(t, first, keys[1], "the previous key comes second")
	second := keys[0]

	now = now.Add(every + time.Minute)
	rotated, err = k.RotateTicketKeys(now, every)
	require.NoError(t, err)
	require.True(t, rotated)
	keys = k.TicketKeys()
	require.Len(t, keys, 2, "older keys are dropped")
	require.Equal(t, second, keys[1])
	require.NotContains(t, keys, first)

	reloaded, err := LoadOrCreateKeys(dir)
	require.NoError(t, err)
	require.Equal(t, keys, reloaded.TicketKeys(), "rotation is persisted")

	_, err = k.RotateTicketKeys(now, 0)
	require.Error(t, err)
}

// A restarted server that loads the persisted keys resumes sessions from
// tickets its previous run issued, even after a rotation.
func TestKeysResumeAcrossRestart(t *testing.T) {
	files, err := EnsureDev(t.TempDir(), nil)
	require.NoError(t, err)
	cert, err := Load(files.Cert, files.Key)
	require.NoError(t, err)
	pool, err := CAPool(files.CA)
	require.NoError(t, err)
	dataDir := t.TempDir()
	server := func(keys *Keys) string {
		conf := &tls.Config{GetCertificate: cert.GetCertificate}
		conf.SetSessionTicketKeys(keys.TicketKeys())
		return serveTLS(t, conf)
	}
	client := &tls.Config{RootCAs: pool, ServerName: "localhost", ClientSessionCache: tls.NewLRUClientSessionCache(4)}

	keys, err := LoadOrCreateKeys(dataDir)
	require.NoError(t, err)
	require.False(t, dialTLS(t, server(keys), client).DidResume)

	keys, err = LoadOrCreateKeys(dataDir) // the restart
	require.NoError(t, err)
	rotated, err := keys.RotateTicketKeys(time.Now().Add(48*time.Hour), 24*time.Hour)
	require.NoError(t, err)
	require.True(t, rotated)
	require.True(t, dialTLS(t, server(keys), client).DidResume)
}

func TestKeysErrors(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "keys.json")
	for _, data := range []string{
		"garbage",
		`{"stateless_reset_key":"AAAA","token_generator_key":"","ticket_keys":[]}`,
	} {
		require.NoError(t, os.WriteFile(path, []byte(data), 0o600))
		_, err := LoadOrCreateKeys(dir)
		require.ErrorContains(t, err, path)
		require.Equal(t, data, string(readFile(t, path)), "an unusable file is not replaced")
	}
}
