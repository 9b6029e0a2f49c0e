package auth_test

import (
	"context"
	"crypto/tls"
	"io"
	"log/slog"
	"net"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/quicpush/quicpush/auth"
	"github.com/quicpush/quicpush/certs"
	"github.com/quicpush/quicpush/client"
	"github.com/quicpush/quicpush/server"
	"github.com/quicpush/quicpush/store/memstore"
	"github.com/quicpush/quicpush/stream"
)

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

// testServer is a quicpush server on 127.0.0.1 whose hooks are v's.
type testServer struct {
	*server.Server
	addr string
	tls  *tls.Config // for clients
}

func runServer(t *testing.T, v *auth.Verifier) *testServer {
	t.Helper()
	dev, err := certs.EnsureDev(t.TempDir(), nil)
	require.NoError(t, err)
	cert, err := certs.Load(dev.Cert, dev.Key)
	require.NoError(t, err)
	srv, err := server.New(server.Config{
		Store:        memstore.New(memstore.Options{}),
		TLSConfig:    &tls.Config{GetCertificate: cert.GetCertificate},
		Logger:       quiet,
		Authenticate: v.Authenticate,
		Authorize:    v.Authorize,
	})
	require.NoError(t, err)
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	require.NoError(t, err)
	addr, err := srv.Listen(pc)
	require.NoError(t, err)
	t.Cleanup(func() {
		srv.Close()
		pc.Close()
	})
	pool, err := certs.CAPool(dev.CA)
	require.NoError(t, err)
	return &testServer{Server: srv, addr: addr.String(), tls: &tls.Config{RootCAs: pool}}
}

func (ts *testServer) dial(t *testing.T, cfg client.Config) (*client.Client, error) {
	t.Helper()
	cfg.TLSConfig, cfg.Logger = ts.tls, quiet
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	c, err := client.Dial(ctx, ts.addr, cfg)
	if err == nil {
		t.Cleanup(func() { c.Close() })
	}
	return c, err
}

func requireCode(t *testing.T, err error, code stream.ErrCode, msg string) {
	t.Helper()
	require.ErrorIs(t, err, &stream.Error{Code: code})
	require.ErrorContains(t, err, msg)
}

// Over real QUIC: no token, no connection; a token's patterns and role
// decide what it may do, and a refused publish stores nothing.
func TestServerWithVerifier(t *testing.T) {
	v := newVerifier(t, auth.Config{Secret: secret})
	ts := runServer(t, v)

	_, err := ts.dial(t, client.Config{})
	requireCode(t, err, stream.Unauthorized, "no token: this server accepts only clients with a signed token")
	_, err = ts.dial(t, client.Config{Token: mint(t, alice(), []byte("someone else's secret, long enough"))})
	requireCode(t, err, stream.Unauthorized, "signature invalid")

	student, err := ts.dial(t, client.Config{Token: mint(t, alice(), secret)})
	require.NoError(t, err)
	teacherClaims := alice()
	teacherClaims.Subject, teacherClaims.Role = "bob", "teacher"
	teacher, err := ts.dial(t, client.Config{Token: mint(t, teacherClaims, secret)})
	require.NoError(t, err)
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()

	_, err = student.Session("s").Subscribe(ctx, "news/today", client.SubscribeOptions{}, func(client.Message) error { return nil })
	requireCode(t, err, stream.Forbidden, "channel news/today is not in the token's subscribe patterns")
	got := make(chan client.Message, 10)
	_, err = student.Session("s").Subscribe(ctx, "room/math", client.SubscribeOptions{}, func(m client.Message) error {
		got <- m
		return nil
	})
	require.NoError(t, err)

	requireNothingStored := func(channel string) {
		t.Helper()
		msgs, b, err := ts.History(ctx, channel, 1, 1<<62, 10)
		require.NoError(t, err)
		require.Empty(t, msgs)
		require.Zero(t, b.Last, "nothing was ever stored in %s", channel)
	}
	_, err = student.Session("s").Publish(ctx, "room/math", []byte("I am the teacher now"), client.PublishOptions{})
	requireCode(t, err, stream.Forbidden, `role "student" may not publish reliable messages to room/math`)
	requireNothingStored("room/math")
	_, err = student.Session("s").Publish(ctx, "news/today", []byte("fake news"), client.PublishOptions{})
	requireCode(t, err, stream.Forbidden, "channel news/today is not in the token's publish patterns")
	requireNothingStored("news/today")
	_, err = student.Session("s").Publish(ctx, "user/bob", []byte("not my inbox"), client.PublishOptions{})
	requireCode(t, err, stream.Forbidden, "channel user/bob is not in the token's publish patterns")
	requireNothingStored("user/bob")

	_, err = student.Session("s").Publish(ctx, "room/math", []byte("like"), client.PublishOptions{Droppable: true})
	require.NoError(t, err, "a student may send droppable messages to a room")
	res, err := teacher.Session("s").Publish(ctx, "room/math", []byte("quiz starts now"), client.PublishOptions{})
	require.NoError(t, err)
	require.Equal(t, uint64(1), res.Seq)
	for {
		select {
		case m := <-got:
			if m.Droppable {
				continue
			}
			require.Equal(t, "quiz starts now", string(m.Data))
			return
		case <-ctx.Done():
			t.Fatal("the teacher's message never arrived")
		}
	}
}

// A client whose TokenSource mints tokens that expire 2 s later refreshes
// them on its open connection: it outlives several expiries without
// reconnecting.
func TestShortLivedTokensRefreshWithoutReconnecting(t *testing.T) {
	v := newVerifier(t, auth.Config{Secret: secret})
	ts := runServer(t, v)
	var minted atomic.Int32
	source := func(context.Context) (string, error) {
		minted.Add(1)
		c := alice()
		// exp is in whole seconds: round up so that every token lives 2 to 3 s.
		c.ExpiresAt = time.Now().Add(2 * time.Second).Truncate(time.Second).Add(time.Second)
		return auth.Mint(c, secret)
	}
	c, err := ts.dial(t, client.Config{TokenSource: source})
	require.NoError(t, err)
	start := time.Now()

	// The hello's token and three refreshes: more than three expiries.
	require.Eventually(t, func() bool { return minted.Load() >= 4 }, 20*time.Second, 20*time.Millisecond)
	require.Greater(t, time.Since(start), 4*time.Second, "refreshes come near each expiry, not at once")
	require.NoError(t, c.Err())
	require.Equal(t, uint64(1), c.Stats().Connects, "refreshing must not reconnect")
	require.Equal(t, 1, ts.ConnCount())
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	_, err = c.Session("s").Publish(ctx, "user/alice", []byte("still here"), client.PublishOptions{})
	require.NoError(t, err)
}
