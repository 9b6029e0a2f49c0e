package server_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/quicpush/quicpush/client"
	"github.com/quicpush/quicpush/server"
	"github.com/quicpush/quicpush/store/memstore"
	"github.com/quicpush/quicpush/stream"
)

func publishN(t *testing.T, c *client.Client, channel string, n int) {
	t.Helper()
	for i := 0; i < n; i++ {
		_, err := c.Session("p").Publish(context.Background(), channel, []byte("m"), client.PublishOptions{})
		require.NoError(t, err)
	}
}

// Seqs deleted by retention before the client could fetch them are
// reported as one exact "expired" gap, then delivery goes on.
func TestExpiredGapIsReportedExactly(t *testing.T) {
	st := memstore.New(memstore.Options{MaxMessages: 10})
	ts := runServer(t, server.Config{Store: st})
	pub := dial(t, ts, client.Config{})
	publishN(t, pub, "room/g", 50)
	require.NoError(t, st.RunRetention(context.Background()))

	rec := newRecorder()
	c := dial(t, ts, client.Config{})
	_, err := c.Session("s").Subscribe(context.Background(), "room/g", client.SubscribeOptions{Since: seqPtr(0), OnGap: rec.gap}, rec.handle)
	require.NoError(t, err)
	rec.waitCount(t, "room/g", 10, 5*time.Second)
	rec.requireExactly(t, "room/g", 41, 50)
	rec.mu.Lock()
	defer rec.mu.Unlock()
	require.Len(t, rec.gaps, 1)
	require.Equal(t, client.Gap{Channel: "room/g", Epoch: rec.msgs["room/g"][0].Epoch, From: 1, To: 40, Reason: client.GapExpired}, rec.gaps[0])
}

// A client whose position belongs to a lost history (the store was wiped:
// new epoch) is told of a "reset" gap and then gets the new history from 1.
func TestResetGapAfterHistoryLoss(t *testing.T) {
	ts := runServer(t, server.Config{})
	pub := dial(t, ts, client.Config{})
	publishN(t, pub, "room/r", 5)
	res, err := pub.Session("p").Publish(context.Background(), "room/r", []byte("m"), client.PublishOptions{})
	require.NoError(t, err)
	oldEpoch := res.Epoch

	wiped := runServer(t, server.Config{}) // same channel name, empty store
	pub2 := dial(t, wiped, client.Config{})
	publishN(t, pub2, "room/r", 3)

	state := client.NewMemoryStore()
	require.NoError(t, state.Save("room/r", client.Position{Epoch: oldEpoch, Seq: 4}))
	rec := newRecorder()
	c := dial(t, wiped, client.Config{State: state})
	_, err = c.Session("s").Subscribe(context.Background(), "room/r", client.SubscribeOptions{OnGap: rec.gap}, rec.handle)
	require.NoError(t, err)
	rec.waitCount(t, "room/r", 3, 5*time.Second)
	rec.requireExactly(t, "room/r", 1, 3)
	rec.mu.Lock()
	defer rec.mu.Unlock()
	require.Equal(t, []client.Gap{{Channel: "room/r", Epoch: oldEpoch, From: 5, To: 0, Reason: client.GapReset}}, rec.gaps)
	require.NotEqual(t, oldEpoch, rec.msgs["room/r"][0].Epoch)
}

// A handler slower than the push: the client's queues stay bounded (it
// drops what it cannot hold and fetches it again later) and still hands
// over every message once, in order.
func TestSlowHandlerBoundedAndComplete(t *testing.T) {
	ts := runServer(t, server.Config{})
	rec := newRecorder()
	c := dial(t, ts, client.Config{BufferLimit: 16})
	_, err := c.Session("s").Subscribe(context.Background(), "room/slow", client.SubscribeOptions{Since: seqPtr(0)}, func(m client.Message) error {
		time.Sleep(200 * time.Microsecond)
		return rec.handle(m)
	})
	require.NoError(t, err)
	pub := dial(t, ts, client.Config{})
	publishN(t, pub, "room/slow", 500)
	rec.waitCount(t, "room/slow", 500, 20*time.Second)
	rec.requireExactly(t, "room/slow", 1, 500)
}

// A server that refuses the client's hello ends Dial with the typed error
// and its message.
func TestTerminalRefusalStopsTheClient(t *testing.T) {
	ts := runServer(t, server.Config{Authenticate: func(_ context.Context, ev server.HelloEvent) (server.HelloReply, error) {
		if ev.Token != "good" {
			return server.HelloReply{}, errors.New("invalid token")
		}
		return server.HelloReply{User: "u"}, nil
	}})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_, err := client.Dial(ctx, ts.Addr, client.Config{TLSConfig: ts.clientTLS(t), Token: "bad", Logger: quietLog})
	require.ErrorIs(t, err, &stream.Error{Code: stream.Unauthorized})
	require.ErrorContains(t, err, "invalid token")
}
