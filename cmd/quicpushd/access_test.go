package main

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/quicpush/quicpush/auth"
	"github.com/quicpush/quicpush/certs"
	"github.com/quicpush/quicpush/client"
	"github.com/quicpush/quicpush/stream"
)

// --print-config shows what the flags, the environment and the --config
// file resolve to, touches nothing, and its output works as a --config file.
func TestPrintConfig(t *testing.T) {
	dir := t.TempDir()
	secret := filepath.Join(dir, "jwt.secret")
	require.NoError(t, os.WriteFile(secret, []byte("do-not-print-this-secret-0123456789\n"), 0o600))
	data := filepath.Join(dir, "data")
	config := filepath.Join(dir, "quicpushd.yaml")
	require.NoError(t, os.WriteFile(config, []byte("listen: 127.0.0.1:5000\nheartbeat: 5s\nroom-publisher-roles: [teacher, tutor]\n"+
		"admin: 127.0.0.1:1\ndata: "+data+"\njwt-secret-file: "+secret+"\n"), 0o600))
	t.Setenv("QUICPUSH_ADMIN", "127.0.0.1:9000")

	printed := func(args ...string) string {
		t.Helper()
		var stdout, stderr syncBuffer
		require.Equal(t, 0, run(t.Context(), append(args, "--print-config"), &stdout, &stderr), stderr.String())
		require.Empty(t, stderr.String())
		return stdout.String()
	}
	out := printed("--config", config, "--log-level", "debug")
	require.Equal(t, 1, strings.Count(out, "\n"), "one JSON line")
	var got map[string]any
	require.NoError(t, json.Unmarshal([]byte(out), &got))
	require.Equal(t, map[string]any{
		"listen": "127.0.0.1:5000", "admin": "127.0.0.1:9000", "data": data, "cert": "", "key": "",
		"log-level": "debug", "log-format": "text", "heartbeat": "5s",
		"jwt-secret-file": secret, "jwt-public-key": "", "room-publisher-roles": []any{"teacher", "tutor"}, "api-key-file": "", "web-origin": []any{},
	}, got)
	require.NotContains(t, out, "do-not-print-this-secret")
	require.NoDirExists(t, data, "--print-config starts nothing")

	again := filepath.Join(dir, "printed.json")
	require.NoError(t, os.WriteFile(again, []byte(out), 0o600))
	require.Equal(t, out, printed("--config", again))
}

// With a JWT flag quicpushd refuses clients without a valid token and
// applies the token's claims; with --api-key-file it serves the HTTP API.
// No secret, key or token reaches the log.
func TestJWTAndHTTPAPI(t *testing.T) {
	edPub, edPriv, err := ed25519.GenerateKey(rand.Reader)
	require.NoError(t, err)
	pubDER, err := x509.MarshalPKIXPublicKey(edPub)
	require.NoError(t, err)
	for _, mode := range []struct {
		name    string
		flag    string
		file    []byte
		signKey any
	}{
		{"HS256", "--jwt-secret-file", []byte("this-secret-never-shows-0123456789\n"), []byte("this-secret-never-shows-0123456789")},
		{"EdDSA", "--jwt-public-key", pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pubDER}), edPriv},
	} {
		t.Run(mode.name, func(t *testing.T) {
			dir := t.TempDir()
			keyFile, apiKeyFile := filepath.Join(dir, "jwt"), filepath.Join(dir, "api.key")
			const apiKey = "this-api-key-never-shows"
			require.NoError(t, os.WriteFile(keyFile, mode.file, 0o600))
			require.NoError(t, os.WriteFile(apiKeyFile, []byte(apiKey+"\n"), 0o600))
			listen, admin := freeUDP(t), freeTCP(t)
			ctx, cancel := context.WithCancel(t.Context())
			defer cancel()
			p := runDaemon(ctx, "--listen", listen, "--admin", admin, "--data", dir, mode.flag, keyFile, "--api-key-file", apiKeyFile)
			waitReady(t, admin, p.exited, p.stderr)
			require.Contains(t, p.stderr.String(), "msg=\"clients need a signed token\" auth.algorithm="+mode.name)
			require.Contains(t, p.stderr.String(), `msg="HTTP API enabled" url=http://`+admin+"/v1/")
			require.NotContains(t, p.stderr.String(), "DEV MODE")

			pool, err := certs.CAPool(filepath.Join(dir, "certs", "ca.pem"))
			require.NoError(t, err)
			dial := func(token string) (*client.Client, error) {
				dctx, dcancel := context.WithTimeout(t.Context(), 10*time.Second)
				defer dcancel()
				return client.Dial(dctx, listen, client.Config{TLSConfig: &tls.Config{RootCAs: pool}, Token: token})
			}
			_, err = dial("")
			require.ErrorIs(t, err, &stream.Error{Code: stream.Unauthorized})
			require.ErrorContains(t, err, "no token")

			token, err := auth.Mint(auth.Claims{Subject: "alice", ExpiresAt: time.Now().Add(time.Hour), Subscribe: []string{"room/*"}}, mode.signKey)
			require.NoError(t, err)
			c, err := dial(token)
			require.NoError(t, err)
			defer c.Close()
			got := make(chan string, 1)
			sctx, scancel := context.WithTimeout(t.Context(), 10*time.Second)
			defer scancel()
			_, err = c.Session("s").Subscribe(sctx, "room/a", client.SubscribeOptions{}, func(m client.Message) error {
				got <- string(m.Data)
				return nil
			})
			require.NoError(t, err)
			_, err = c.Session("s").Subscribe(sctx, "news/b", client.SubscribeOptions{}, func(client.Message) error { return nil })
			require.ErrorIs(t, err, &stream.Error{Code: stream.Forbidden})

			post := func(key string) (int, string) {
				req, err := http.NewRequestWithContext(t.Context(), "POST", "http://"+admin+"/v1/publish", strings.NewReader(`{"channel":"room/a","data":"from the backend"}`))
				require.NoError(t, err)
				req.Header.Set("Authorization", "Bearer "+key)
				resp, err := http.DefaultClient.Do(req)
				require.NoError(t, err)
				defer resp.Body.Close()
				b, err := io.ReadAll(resp.Body)
				require.NoError(t, err)
				return resp.StatusCode, string(b)
			}
			status, body := post("wrong-key-0123456789")
			require.Equal(t, http.StatusUnauthorized, status, body)
			status, body = post(apiKey)
			require.Equal(t, http.StatusOK, status, body)
			require.Contains(t, body, `"seq":1`)
			select {
			case data := <-got:
				require.Equal(t, "from the backend", data)
			case <-sctx.Done():
				t.Fatal("the backend's message never arrived")
			}
			require.NoError(t, c.Close())

			cancel()
			require.Equal(t, 0, p.wait(t), p.stderr.String())
			logs := p.stderr.String()
			require.NotContains(t, logs, "this-secret-never-shows")
			require.NotContains(t, logs, apiKey)
			require.NotContains(t, logs, token)
		})
	}
}

// Until the server runs, /v1/ says to come back later; with the API off it
// says how to turn it on.
func TestAPISlot(t *testing.T) {
	for _, tc := range []struct {
		slot   *apiSlot
		status int
		want   string
	}{
		{&apiSlot{on: true}, http.StatusServiceUnavailable, `{"error":{"code":"unavailable","message":"quicpushd is starting: try again shortly"}}`},
		{&apiSlot{}, http.StatusNotFound, `{"error":{"code":"not_found","message":"the HTTP API is off: start quicpushd with --api-key-file FILE"}}`},
	} {
		hs := httptest.NewServer(tc.slot)
		resp, err := http.Get(hs.URL + "/v1/channels/room/a")
		require.NoError(t, err)
		body, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		hs.Close()
		require.NoError(t, err)
		require.Equal(t, tc.status, resp.StatusCode)
		require.JSONEq(t, tc.want, string(body))
	}
}
