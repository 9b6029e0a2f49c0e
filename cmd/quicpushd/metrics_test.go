package main

import (
	"context"
	"crypto/tls"
	"io"
	"net/http"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/quicpush/quicpush/certs"
	"github.com/quicpush/quicpush/client"
)

// /metrics on the admin listener serves the server's metrics with Go's and
// the process's.
func TestMetricsEndpoint(t *testing.T) {
	dir := t.TempDir()
	listen, admin := freeUDP(t), freeTCP(t)
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	p := runDaemon(ctx, "--listen", listen, "--admin", admin, "--data", dir)
	waitReady(t, admin, p.exited, p.stderr)

	pool, err := certs.CAPool(filepath.Join(dir, "certs", "ca.pem"))
	require.NoError(t, err)
	dctx, dcancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer dcancel()
	c, err := client.Dial(dctx, listen, client.Config{TLSConfig: &tls.Config{RootCAs: pool}})
	require.NoError(t, err)
	defer c.Close()
	_, err = c.Session("s").Publish(dctx, "room/m", []byte("m"), client.PublishOptions{})
	require.NoError(t, err)

	resp, err := http.Get("http://" + admin + "/metrics")
	require.NoError(t, err)
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	require.NoError(t, err)
	require.Equal(t, http.StatusOK, resp.StatusCode)
	require.Contains(t, resp.Header.Get("Content-Type"), "text/plain")
	for _, want := range []string{
		"\nquicpush_connections 1\n",
		"\nquicpush_connections_accepted_total 1\n",
		"\n" + `quicpush_publishes_total{class="reliable",outcome="stored"} 1` + "\n",
		"\n" + `quicpush_store_append_batch_size_bucket{le="1"} 1` + "\n",
		"# HELP quicpush_push_latency_seconds ",
		"\ngo_goroutines ",
		"\nprocess_resident_memory_bytes ",
	} {
		require.Contains(t, string(body), want)
	}

	require.NoError(t, c.Close())
	cancel()
	require.Equal(t, 0, p.wait(t), p.stderr.String())
}
