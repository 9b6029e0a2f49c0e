package server_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/quicpush/quicpush/client"
	"github.com/quicpush/quicpush/server"
	"github.com/quicpush/quicpush/stream"
)

// shortTokens accepts "alice-N" tokens valid for lifetime, counting refreshes.
func shortTokens(lifetime time.Duration, refreshes *atomic.Int32) func(context.Context, server.HelloEvent) (server.HelloReply, error) {
	return func(_ context.Context, ev server.HelloEvent) (server.HelloReply, error) {
		if !strings.HasPrefix(ev.Token, "alice-") {
			return server.HelloReply{}, errors.New("unknown token")
		}
		if ev.Refresh {
			refreshes.Add(1)
		}
		return server.HelloReply{User: "alice", ExpiresAt: time.Now().Add(lifetime)}, nil
	}
}

// A client with a TokenSource refreshes its token before it expires and
// keeps its connection; one without is cut off at expiry and stops.
func TestTokenRefreshKeepsTheConnection(t *testing.T) {
	var refreshes atomic.Int32
	ts := runServer(t, server.Config{Authenticate: shortTokens(1500*time.Millisecond, &refreshes)})
	var n atomic.Int32
	source := func(context.Context) (string, error) { return fmt.Sprintf("alice-%d", n.Add(1)), nil }
	c := dial(t, ts, client.Config{TokenSource: source})
	require.Eventually(t, func() bool { return refreshes.Load() >= 3 }, 10*time.Second, 20*time.Millisecond)
	require.Equal(t, uint64(1), c.Stats().Connects, "refreshing must not reconnect")
	require.Eventually(t, func() bool {
		return metricValue(t, ts.Metrics, "quicpush_token_refreshes_total", "outcome", "ok") >= 3
	}, 5*time.Second, 10*time.Millisecond)
	_, err := c.Session("s").Publish(context.Background(), "user/alice", []byte("still here"), client.PublishOptions{})
	require.NoError(t, err)

	fixed := dial(t, ts, client.Config{Token: "alice-fixed"})
	require.Eventually(t, func() bool { return fixed.Err() != nil }, 10*time.Second, 20*time.Millisecond)
	require.ErrorIs(t, fixed.Err(), &stream.Error{Code: stream.Unauthorized})
	require.ErrorContains(t, fixed.Err(), "token expired")
}
