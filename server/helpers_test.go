package server_test

import (
	"context"
	"crypto/tls"
	"io"
	"log/slog"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/require"

	"github.com/quicpush/quicpush/certs"
	"github.com/quicpush/quicpush/client"
	"github.com/quicpush/quicpush/server"
	"github.com/quicpush/quicpush/store/memstore"
)

var quietLog = slog.New(slog.NewTextHandler(io.Discard, nil))

type testServer struct {
	*server.Server
	Addr    string
	Store   server.Store
	CA      string
	Metrics *prometheus.Registry // the server's own; nil if cfg had a Registerer
}

// runServer starts a server on 127.0.0.1 and returns once it listens.
func runServer(t testing.TB, cfg server.Config) *testServer {
	t.Helper()
	dir := t.TempDir()
	dev, err := certs.EnsureDev(dir, nil)
	require.NoError(t, err)
	rl, err := certs.Load(dev.Cert, dev.Key)
	require.NoError(t, err)
	if cfg.Store == nil {
		cfg.Store = memstore.New(memstore.Options{})
	}
	cfg.TLSConfig = &tls.Config{GetCertificate: rl.GetCertificate}
	if cfg.Logger == nil {
		cfg.Logger = quietLog
	}
	var reg *prometheus.Registry
	if cfg.Registerer == nil {
		reg = prometheus.NewRegistry()
		cfg.Registerer = reg
	}
	srv, err := server.New(cfg)
	require.NoError(t, err)
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	require.NoError(t, err)
	addr, err := srv.Listen(pc)
	require.NoError(t, err)
	t.Cleanup(func() {
		srv.Close()
		pc.Close()
	})
	return &testServer{Server: srv, Addr: addr.String(), Store: cfg.Store, CA: dev.CA, Metrics: reg}
}

func (ts *testServer) clientTLS(t testing.TB) *tls.Config {
	pool, err := certs.CAPool(ts.CA)
	require.NoError(t, err)
	return &tls.Config{RootCAs: pool}
}

func dial(t testing.TB, ts *testServer, cfg client.Config) *client.Client {
	t.Helper()
	cfg.TLSConfig = ts.clientTLS(t)
	if cfg.Logger == nil {
		cfg.Logger = quietLog
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := client.Dial(ctx, ts.Addr, cfg)
	require.NoError(t, err)
	t.Cleanup(func() { c.Close() })
	return c
}

// recorder collects what a handler is handed, per channel.
type recorder struct {
	mu   sync.Mutex
	seqs map[string][]uint64
	msgs map[string][]client.Message
	gaps []client.Gap
}

func newRecorder() *recorder {
	return &recorder{seqs: map[string][]uint64{}, msgs: map[string][]client.Message{}}
}

func (r *recorder) handle(m client.Message) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.seqs[m.Channel] = append(r.seqs[m.Channel], m.Seq)
	r.msgs[m.Channel] = append(r.msgs[m.Channel], m)
	return nil
}

func (r *recorder) gap(g client.Gap) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.gaps = append(r.gaps, g)
	return nil
}

func (r *recorder) count(channel string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.seqs[channel])
}

func (r *recorder) get(channel string) []uint64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]uint64(nil), r.seqs[channel]...)
}

func (r *recorder) messages(channel string) []client.Message {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]client.Message(nil), r.msgs[channel]...)
}

// waitCount polls until channel has n messages or the deadline passes.
func (r *recorder) waitCount(t *testing.T, channel string, n int, within time.Duration) {
	t.Helper()
	require.Eventually(t, func() bool { return r.count(channel) >= n }, within, 5*time.Millisecond,
		"channel %s: %d of %d messages", channel, r.count(channel), n)
}

// requireExactly asserts that channel got exactly from..to, once each, in order.
func (r *recorder) requireExactly(t *testing.T, channel string, from, to uint64) {
	t.Helper()
	got := r.get(channel)
	want := make([]uint64, 0, to-from+1)
	for s := from; s <= to; s++ {
		want = append(want, s)
	}
	require.Equal(t, want, got, "channel %s", channel)
}

func seqPtr(v uint64) *uint64 { return &v }
