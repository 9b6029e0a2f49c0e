package server_test

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/quicpush/quicpush/client"
	"github.com/quicpush/quicpush/server"
)

// A subscriber hops networks three times while messages flow: the first two
// hops migrate the connection, the third cannot (quic-go v0.64.1 allows two
// path changes) and reconnects instead. Nothing is lost or doubled.
func TestMigrationThenReconnectLosesNothing(t *testing.T) {
	ts := runServer(t, server.Config{}) // heartbeats (15 s) stay out of this test
	var mu sync.Mutex
	var changes []client.NetworkChange
	rec := newRecorder()
	sub := dial(t, ts, client.Config{OnNetworkChange: func(c client.NetworkChange) {
		mu.Lock()
		changes = append(changes, c)
		mu.Unlock()
	}})
	ctx := context.Background()
	_, err := sub.Session("s").Subscribe(ctx, "room/m", client.SubscribeOptions{Since: seqPtr(0)}, rec.handle)
	require.NoError(t, err)

	pub := dial(t, ts, client.Config{})
	const total = 300
	published := make(chan struct{})
	go func() {
		defer close(published)
		for k := 0; k < total; k++ {
			if _, err := pub.Session("p").Publish(ctx, "room/m", []byte("m"), client.PublishOptions{}); err != nil {
				t.Error(err)
				return
			}
			if k%50 == 0 {
				time.Sleep(5 * time.Millisecond) // spread the messages over the hops
			}
		}
	}()
	for i, addr := range []string{"127.0.0.2:0", "127.0.0.3:0", "127.0.0.4:0"} {
		rec.waitCount(t, "room/m", 1+i*50, 10*time.Second)
		require.NoError(t, sub.Migrate(ctx, addr))
	}
	<-published
	rec.waitCount(t, "room/m", total, 10*time.Second)
	rec.requireExactly(t, "room/m", 1, total)

	mu.Lock()
	defer mu.Unlock()
	require.Len(t, changes, 3)
	require.True(t, changes[0].Migrated, "first hop: %v", changes[0].Err)
	require.True(t, changes[1].Migrated, "second hop: %v", changes[1].Err)
	require.False(t, changes[2].Migrated, "third hop must reconnect")
	st := sub.Stats()
	require.Equal(t, uint64(2), st.Migrations)
	require.Equal(t, uint64(1), st.MigrationFallbacks)
	require.Contains(t, st.LocalAddr, "127.0.0.4:")
}

// The server counts the client's path changes (seen on its heartbeats) and,
// after the second, asks it to reconnect while the connection still works.
func TestServerAsksToReconnectAfterTwoPathChanges(t *testing.T) {
	ts := runServer(t, server.Config{Heartbeat: time.Second})
	rec := newRecorder()
	sub := dial(t, ts, client.Config{})
	ctx := context.Background()
	_, err := sub.Session("s").Subscribe(ctx, "room/p", client.SubscribeOptions{Since: seqPtr(0)}, rec.handle)
	require.NoError(t, err)
	require.NoError(t, sub.Migrate(ctx, "127.0.0.2:0"))
	require.NoError(t, sub.Migrate(ctx, "127.0.0.3:0"))
	require.Equal(t, uint64(2), sub.Stats().Migrations)
	require.Eventually(t, func() bool { return sub.Stats().Connects == 2 }, 10*time.Second, 10*time.Millisecond,
		"the client did not reconnect after its second path change")
	require.Equal(t, uint64(1), sub.Stats().Used0RTT, "the reconnect did not resume with 0-RTT")
	require.Equal(t, 1.0, metricValue(t, ts.Metrics, "quicpush_goaways_total", "code", "path_limit"))
	require.GreaterOrEqual(t, metricValue(t, ts.Metrics, "quicpush_path_changes_total"), 2.0)

	pub := dial(t, ts, client.Config{})
	for k := 0; k < 10; k++ {
		_, err := pub.Session("p").Publish(ctx, "room/p", []byte("m"), client.PublishOptions{})
		require.NoError(t, err)
	}
	rec.waitCount(t, "room/p", 10, 5*time.Second)
	rec.requireExactly(t, "room/p", 1, 10)
}
