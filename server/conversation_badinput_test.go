package server_test

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/quicpush/quicpush/auth"
	"github.com/quicpush/quicpush/client"
	"github.com/quicpush/quicpush/server"
	"github.com/quicpush/quicpush/stream"
	pb "github.com/quicpush/quicpush/stream/quicpushpb"
)

// Bad chat and page requests get their documented error, and a refused
// request stores nothing (checked in the store, and for the ack riding on
// a refused page, in the user's cursor).
func TestChatBadInput(t *testing.T) {
	secret := []byte("0123456789abcdef0123456789abcdef")
	v, err := auth.New(auth.Config{Secret: secret})
	require.NoError(t, err)
	token := func(user string, publish ...string) string {
		tok, err := auth.Mint(auth.Claims{Subject: user, ExpiresAt: time.Now().Add(time.Hour),
			Subscribe: []string{"user/{sub}/**"}, Publish: publish}, secret)
		require.NoError(t, err)
		return tok
	}
	ts := runServer(t, server.Config{Authenticate: v.Authenticate, Authorize: v.Authorize})
	ctx := context.Background()
	bounds := func(user string) uint64 {
		b, err := ts.Store.Bounds(ctx, stream.InboxChannel(user))
		require.NoError(t, err)
		return b.Last
	}
	requireCode := func(err error, code stream.ErrCode) {
		t.Helper()
		got, ok := stream.CodeOf(err)
		require.True(t, ok, "not a protocol error: %v", err)
		require.Equal(t, code, got, "%v", err)
	}
	// Alice may write to bob only; bob to nobody.
	alice := dial(t, ts, client.Config{Token: token("alice", "user/bob/inbox")})
	bob := dial(t, ts, client.Config{Token: token("bob")})

	t.Run("send to a user the token does not allow", func(t *testing.T) {
		_, err := alice.Send(ctx, "carol", []byte("hi"), client.SendOptions{ID: "x-1"})
		requireCode(err, stream.Forbidden)
		_, err = bob.Send(ctx, "alice", []byte("hi"), client.SendOptions{ID: "x-2"})
		requireCode(err, stream.Forbidden)
		require.Zero(t, bounds("carol"))
		require.Zero(t, bounds("alice"), "no copy of a refused send")
		require.Zero(t, bounds("bob"))
	})
	t.Run("a plain publish into an inbox", func(t *testing.T) {
		_, err := alice.Session("p").Publish(ctx, "user/bob/inbox", []byte("fake record"), client.PublishOptions{})
		requireCode(err, stream.Forbidden)
		_, err = ts.Server.Publish(ctx, "backend", []server.PublishRequest{{Channel: "user/bob/inbox", Data: []byte("x")}})
		require.ErrorIs(t, err, server.ErrInvalid)
		require.Zero(t, bounds("bob"))
	})
	t.Run("a message to oneself", func(t *testing.T) {
		alone := dial(t, ts, client.Config{Token: token("dave", "user/*/inbox")})
		_, err := alone.Send(ctx, "dave", []byte("note"), client.SendOptions{ID: "n-1"})
		requireCode(err, stream.BadRequest)
		require.Zero(t, bounds("dave"))
	})

	res, err := alice.Send(ctx, "bob", []byte("hello"), client.SendOptions{ID: "m-1"})
	require.NoError(t, err)
	require.Equal(t, uint64(1), res.Seq)
	require.Equal(t, uint64(1), bounds("alice"), "her copy")

	t.Run("a read receipt for a seq never delivered", func(t *testing.T) {
		// Bob's clients never acknowledged m-1 (no inbox subscription).
		for _, seq := range []uint64{1, 99} {
			err := bob.MarkRead(ctx, client.ChatMessage{Epoch: res.Epoch, Seq: seq})
			requireCode(err, stream.NotDelivered)
		}
		require.Equal(t, uint64(1), bounds("alice"), "no receipt stored")
	})
	t.Run("a page size of 0 or 10^9", func(t *testing.T) {
		rc := dialRaw(t, ts)
		ctl := rc.open(&pb.Frame{Body: &pb.Frame_Hello{Hello: &pb.Hello{Version: stream.Version, Token: token("bob")}}})
		f, err := stream.NewReader(ctl, 0).ReadFrame()
		require.NoError(t, err)
		require.Equal(t, uint32(1000), f.GetWelcome().GetInboxMaxPageSize())
		for _, limit := range []uint32{0, 1_000_000_000} {
			// The ack riding on a refused pull must not count either.
			st := rc.open(&pb.Frame{Body: &pb.Frame_InboxPull{InboxPull: &pb.InboxPull{
				Channel: "user/bob/inbox", Limit: limit, AckEpoch: res.Epoch, AckSeq: 1}}})
			e := readError(t, st)
			require.Equal(t, pb.ErrorCode_BAD_PAGE_SIZE, e.Code, "limit %d: %s", limit, e.Message)
		}
		w, err := bob.Waiting(ctx, "user/bob/inbox")
		require.NoError(t, err)
		require.Len(t, w, 1)
		require.NoError(t, w[0].Err)
		require.Equal(t, uint64(0), w[0].After, "bob's cursor moved")
		require.Equal(t, uint64(1), w[0].Count)
		_, err = bob.Page(ctx, "user/bob/inbox", client.PageOptions{Limit: 1_000_000_000})
		requireCode(err, stream.BadPageSize)
	})
	t.Run("counts of a channel the token does not allow", func(t *testing.T) {
		w, err := bob.Waiting(ctx, "user/alice/inbox", "user/bob/inbox")
		require.NoError(t, err)
		require.Len(t, w, 2)
		requireCode(w[0].Err, stream.Forbidden)
		require.NoError(t, w[1].Err)
	})
	require.Equal(t, uint64(1), bounds("bob"))
	require.Equal(t, uint64(1), bounds("alice"))
}
