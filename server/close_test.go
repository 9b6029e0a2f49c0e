package server_test

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/quicpush/quicpush/client"
	"github.com/quicpush/quicpush/server"
	"github.com/quicpush/quicpush/stream"
)

// Close while the client reconnects: Close waits for a running handler,
// and meanwhile the connection drops and the client reconnects. The new
// connection must be closed too, or Close waits for its goroutines forever.
func TestCloseWhileReconnecting(t *testing.T) {
	var hellos, connects atomic.Int32
	ts := runServer(t, server.Config{Authenticate: func(_ context.Context, ev server.HelloEvent) (server.HelloReply, error) {
		if !ev.Refresh {
			hellos.Add(1)
		}
		return server.HelloReply{User: ev.Token}, nil
	}})
	c := dial(t, ts, client.Config{Token: "alice", ReconnectMin: time.Millisecond, OnState: func(s client.State) {
		if s == client.Connected {
			connects.Add(1)
		}
	}})
	inHandler, release := make(chan struct{}), make(chan struct{})
	var calls atomic.Int32
	_, err := c.Session("s").Subscribe(context.Background(), "room/r", client.SubscribeOptions{}, func(client.Message) error {
		if calls.Add(1) == 1 {
			close(inHandler)
			<-release
		}
		return nil
	})
	require.NoError(t, err)
	_, err = ts.Publish(context.Background(), "teacher", []server.PublishRequest{{Channel: "room/r", Data: []byte("x")}})
	require.NoError(t, err)
	select {
	case <-inHandler:
	case <-time.After(10 * time.Second):
		t.Fatal("no message handed over")
	}

	closed := make(chan struct{})
	go func() {
		c.Close() // waits for the handler
		close(closed)
	}()
	require.Equal(t, 1, ts.DisconnectUser("alice", stream.ShuttingDown, "restart"))
	// The reconnect has finished: it is the current connection, or it was
	// closed at once as the Client is closing.
	require.Eventually(t, func() bool {
		return hellos.Load() >= 2 && (connects.Load() >= 2 || ts.ConnCount() == 0)
	}, 10*time.Second, time.Millisecond, "the client reconnects")
	close(release)
	select {
	case <-closed:
	case <-time.After(10 * time.Second):
		t.Fatal("Close did not return")
	}
	require.Eventually(t, func() bool { return ts.ConnCount() == 0 }, 10*time.Second, time.Millisecond,
		"the connection the reconnect made is closed")
}
