package main

import (
	"crypto/ed25519"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/quicpush/quicpush/auth"
	"github.com/quicpush/quicpush/store/memstore"
)

var testSecret = []byte("a-secret-for-the-token-command-0123456789")

func writeFile(t *testing.T, name string, b []byte) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), name)
	require.NoError(t, os.WriteFile(path, b, 0o600))
	return path
}

// tokenCmdRun runs quicpush token, which talks to no server.
func tokenCmdRun(t *testing.T, args ...string) result {
	t.Helper()
	var stdout, stderr syncBuffer
	code := run(t.Context(), append([]string{"token"}, args...), &stdout, &stderr)
	return result{code, stdout.String(), stderr.String()}
}

// token runs quicpush token and returns its one line.
func token(t *testing.T, args ...string) tokenLine {
	t.Helper()
	r := tokenCmdRun(t, args...)
	requireOK(t, r)
	l := lines[tokenLine](t, r.stdout)
	require.Len(t, l, 1)
	return l[0]
}

func TestTokenHS256(t *testing.T) {
	secretFile := writeFile(t, "secret", append(testSecret, '\n'))
	before := time.Now()
	l := token(t, "--sub", "alice", "--secret-file", secretFile, "--ttl", "90m", "--subscribe", "room/*", "--subscribe", "user/{sub}/**", "--publish", "room/a,b", "--role", "teacher")

	v, err := auth.New(auth.Config{Secret: testSecret})
	require.NoError(t, err)
	c, err := v.Verify(l.Token, time.Now())
	require.NoError(t, err)
	require.Equal(t, "alice", c.Subject)
	require.Equal(t, []string{"room/*", "user/{sub}/**"}, c.Subscribe)
	require.Equal(t, []string{"room/a,b"}, c.Publish, "one pattern per flag: commas are not separators")
	require.Equal(t, "teacher", c.Role)
	require.WithinRange(t, c.ExpiresAt, before.Add(90*time.Minute).Add(-time.Second), time.Now().Add(90*time.Minute))
	require.Equal(t, c.ExpiresAt.UTC().Format(time.RFC3339), l.Expires)
}

func TestTokenEdDSA(t *testing.T) {
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	require.NoError(t, err)
	der, err := x509.MarshalPKCS8PrivateKey(priv)
	require.NoError(t, err)
	keyFile := writeFile(t, "key.pem", pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}))
	l := token(t, "--sub", "bob", "--key-file", keyFile)

	v, err := auth.New(auth.Config{PublicKey: pub})
	require.NoError(t, err)
	c, err := v.Verify(l.Token, time.Now())
	require.NoError(t, err)
	require.Equal(t, "bob", c.Subject)
	require.Empty(t, c.Subscribe)
	require.WithinDuration(t, time.Now().Add(time.Hour), c.ExpiresAt, time.Minute, "--ttl defaults to 1h")
}

func TestTokenUsage(t *testing.T) {
	secretFile := writeFile(t, "secret", testSecret)
	short := writeFile(t, "short", []byte("hunter2"))
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--secret-file", secretFile}, "missing flags: --sub=USER"},
		{[]string{"--sub", "a"}, "missing flags: --secret-file=FILE or --key-file=FILE"},
		{[]string{"--sub", "a", "--secret-file", secretFile, "--key-file", secretFile}, "--secret-file and --key-file can't be used together"},
		{[]string{"--sub", "a", "--secret-file", secretFile, "--ttl", "0s"}, "--ttl must be positive"},
		{[]string{"--sub", "a", "--secret-file", secretFile, "--subscribe", "room/**/x"}, `--subscribe: pattern "room/**/x": ** may only be the last segment`},
		{[]string{"--sub", "a", "--secret-file", secretFile, "--publish", "room/["}, "--publish: pattern"},
		{[]string{"--sub", "a", "--secret-file", short}, "--secret-file: " + short + ": an HS256 secret of 7 bytes is too short"},
		{[]string{"--sub", "a", "--secret-file", filepath.Join(t.TempDir(), "none")}, "--secret-file: open "},
		{[]string{"--sub", "a", "--key-file", secretFile}, "--key-file: " + secretFile + ": no PEM block"},
	} {
		r := tokenCmdRun(t, tc.args...)
		require.Equal(t, exitUsage, r.code, "%v: %s", tc.args, r.stderr)
		require.Contains(t, r.stderr, tc.want)
		require.Contains(t, r.stderr, "see quicpush token --help")
		require.NotContains(t, r.stderr, "hunter2")
		require.Empty(t, r.stdout)
	}
}

// A minted token opens a server that checks tokens; no token does not.
func TestTokenAgainstAServer(t *testing.T) {
	v, err := auth.New(auth.Config{Secret: testSecret})
	require.NoError(t, err)
	ts := startServer(t, memstore.New(memstore.Options{}), v.Authenticate)
	r := ts.quicpush(t, "pub", "room/a", "--timeout", "10s")
	require.Equal(t, exitFailure, r.code, r.stderr)
	require.Contains(t, r.stderr, "UNAUTHORIZED: no token")

	l := token(t, "--sub", "alice", "--secret-file", writeFile(t, "secret", testSecret))
	requireOK(t, ts.quicpush(t, "pub", "room/a", "--timeout", "10s", "--token", l.Token))
}
