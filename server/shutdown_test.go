package server_test

import (
	"context"
	"net"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/require"

	"github.com/quicpush/quicpush/client"
	"github.com/quicpush/quicpush/server"
)

// Shutdown tells clients to go (GOAWAY, counted), waits for them to leave,
// and makes Serve return ErrServerClosed; calling it again is harmless.
func TestShutdownSendsGoAwayAndDrains(t *testing.T) {
	ts := runServer(t, server.Config{})
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	require.NoError(t, err)
	defer pc.Close()
	served := make(chan error, 1)
	go func() { served <- ts.Serve(pc) }()

	states := make(chan client.State, 16)
	c := dial(t, ts, client.Config{OnState: func(s client.State) { states <- s }})
	_, err = c.Session("s").Publish(context.Background(), "room/x", []byte("m"), client.PublishOptions{})
	require.NoError(t, err)
	require.Equal(t, 1, ts.ConnCount())

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	start := time.Now()
	require.NoError(t, ts.Shutdown(ctx))
	require.Less(t, time.Since(start), 4*time.Second, "the client did not leave on GOAWAY")
	require.Equal(t, 0, ts.ConnCount())
	closed := gatherer(ts.MetricsCollector()) // Close unregistered it
	require.Equal(t, 1.0, metricValue(t, closed, "quicpush_goaways_total", "code", "shutting_down"))
	require.Zero(t, metricValue(t, closed, "quicpush_connections"))
	n, err := testutil.GatherAndCount(ts.Metrics)
	require.NoError(t, err)
	require.Zero(t, n)
	require.ErrorIs(t, <-served, server.ErrServerClosed)
	require.NoError(t, ts.Shutdown(ctx))
	require.Eventually(t, func() bool {
		for {
			select {
			case s := <-states:
				if s == client.Connecting {
					return true
				}
			default:
				return false
			}
		}
	}, 2*time.Second, 5*time.Millisecond)
}

// A client told to go away hands over its last acknowledgements first, so
// the user's cursor is where its handler got to.
func TestGoAwayKeepsTheLastAcks(t *testing.T) {
	ts := runServer(t, server.Config{AckDelay: time.Hour}) // acks only go out at goodbye
	rec := newRecorder()
	c := dial(t, ts, client.Config{Token: "alice"})
	_, err := c.Session("inbox").Subscribe(context.Background(), "user/alice", client.SubscribeOptions{Since: seqPtr(0)}, rec.handle)
	require.NoError(t, err)
	publishN(t, dial(t, ts, client.Config{}), "user/alice", 5)
	rec.waitCount(t, "user/alice", 5, 5*time.Second)

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	require.NoError(t, ts.Shutdown(ctx))
	cur, err := ts.Store.Cursor(context.Background(), "alice", "user/alice")
	require.NoError(t, err)
	require.Equal(t, uint64(5), cur.Seq)
}
