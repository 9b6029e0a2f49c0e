package server_test

import (
	"context"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/quicpush/quicpush/client"
	"github.com/quicpush/quicpush/internal/netem"
	"github.com/quicpush/quicpush/server"
)

// A blackout longer than the heartbeat deadline: the subscriber gives up
// on the dead path, reconnects as soon as the network heals, resumes its
// TLS session with 0-RTT, and gets what was published meanwhile.
func TestBlackoutReconnectResumesWith0RTT(t *testing.T) {
	ts := runServer(t, server.Config{Heartbeat: time.Second})
	relay, err := netem.Start(context.Background(), netem.Config{Upstream: ts.Addr, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	require.NoError(t, err)
	defer relay.Close()

	rec := newRecorder()
	behind := &testServer{Server: ts.Server, Addr: relay.Addr().String(), CA: ts.CA}
	sub := dial(t, behind, client.Config{ReconnectMin: 50 * time.Millisecond, ReconnectMax: 500 * time.Millisecond})
	_, err = sub.Session("s").Subscribe(context.Background(), "room/b", client.SubscribeOptions{Since: seqPtr(0)}, rec.handle)
	require.NoError(t, err)
	pub := dial(t, ts, client.Config{})
	publishN(t, pub, "room/b", 10)
	rec.waitCount(t, "room/b", 10, 5*time.Second)

	relay.Blackout(4 * time.Second) // > 2.5 heartbeats: the connection is given up
	publishN(t, pub, "room/b", 10)
	require.Eventually(t, func() bool { return sub.Stats().Connects >= 2 }, 15*time.Second, 10*time.Millisecond)
	rec.waitCount(t, "room/b", 20, 10*time.Second)
	rec.requireExactly(t, "room/b", 1, 20)
	require.GreaterOrEqual(t, sub.Stats().Used0RTT, uint64(1), "the reconnect did not resume with 0-RTT")
}
