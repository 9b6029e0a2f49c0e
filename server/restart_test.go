package server_test

import (
	"context"
	"crypto/tls"
	"net"
	"testing"
	"time"

	"github.com/quic-go/quic-go"
	"github.com/stretchr/testify/require"

	"github.com/quicpush/quicpush/certs"
	"github.com/quicpush/quicpush/client"
	"github.com/quicpush/quicpush/server"
	"github.com/quicpush/quicpush/store"
)

// A server restarted on the same Badger directory and UDP port: the
// subscriber reconnects by itself and resumes with nothing lost and nothing
// doubled, and seqs go on with no hole and no reuse.
func TestServerRestartResumes(t *testing.T) {
	dir := t.TempDir()
	dev, err := certs.EnsureDev(dir+"/certs", nil)
	require.NoError(t, err)
	rl, err := certs.Load(dev.Cert, dev.Key)
	require.NoError(t, err)
	keys, err := certs.LoadOrCreateKeys(dir)
	require.NoError(t, err)

	start := func(addr string) (*server.Server, *store.DB, string) {
		db, err := store.Open(dir+"/store", store.Options{Logger: quietLog})
		require.NoError(t, err)
		srv, err := server.New(server.Config{
			Store: db, Logger: quietLog, TLSConfig: &tls.Config{GetCertificate: rl.GetCertificate},
			StatelessResetKey: (*quic.StatelessResetKey)(&keys.StatelessResetKey),
		})
		require.NoError(t, err)
		var pc net.PacketConn
		require.Eventually(t, func() bool { // the old socket's port may take a moment to free
			pc, err = net.ListenPacket("udp", addr)
			return err == nil
		}, 5*time.Second, 10*time.Millisecond)
		a, err := srv.Listen(pc)
		require.NoError(t, err)
		return srv, db, a.String()
	}
	srv, db, addr := start("127.0.0.1:0")
	ts := &testServer{Server: srv, Addr: addr, CA: dev.CA}

	rec := newRecorder()
	sub := dial(t, ts, client.Config{ReconnectMin: 20 * time.Millisecond, ReconnectMax: 200 * time.Millisecond})
	_, err = sub.Session("s").Subscribe(context.Background(), "room/r", client.SubscribeOptions{Since: seqPtr(0)}, rec.handle)
	require.NoError(t, err)
	pub := dial(t, ts, client.Config{ReconnectMin: 20 * time.Millisecond, ReconnectMax: 200 * time.Millisecond})
	publish := func(from, to uint64) {
		for want := from; want <= to; want++ {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			res, err := pub.Session("p").Publish(ctx, "room/r", []byte("m"), client.PublishOptions{})
			cancel()
			require.NoError(t, err)
			require.Equal(t, want, res.Seq)
		}
	}
	publish(1, 50)
	rec.waitCount(t, "room/r", 50, 5*time.Second)

	srv.Close()
	require.NoError(t, db.Close())
	srv, db, _ = start(addr)
	defer func() {
		srv.Close()
		db.Close()
	}()

	publish(51, 100) // the publisher reconnects too, and retries until acked
	rec.waitCount(t, "room/r", 100, 10*time.Second)
	rec.requireExactly(t, "room/r", 1, 100)
}
