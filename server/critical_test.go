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
	"github.com/quicpush/quicpush/stream"
	pb "github.com/quicpush/quicpush/stream/quicpushpb"
)

// Critical messages get a copy on an independent path (a datagram, or a
// stream of its own when too large); the subscriber gets each once, in
// order, and counts the copies.
func TestCriticalCopies(t *testing.T) {
	ts := runServer(t, server.Config{Critical: server.CriticalConfig{Always: true, BudgetBytes: 1 << 20}})
	rec := newRecorder()
	sub := dial(t, ts, client.Config{})
	_, err := sub.Session("s").Subscribe(context.Background(), "room/crit", client.SubscribeOptions{Since: seqPtr(0)}, rec.handle)
	require.NoError(t, err)
	pub := dial(t, ts, client.Config{}).Session("teacher")
	for i := 0; i < 20; i++ {
		data := []byte("stop exercise")
		if i%5 == 4 {
			data = make([]byte, 3000) // too big for a datagram
		}
		_, err := pub.Publish(context.Background(), "room/crit", data, client.PublishOptions{Critical: true})
		require.NoError(t, err)
	}
	rec.waitCount(t, "room/crit", 20, 5*time.Second)
	rec.requireExactly(t, "room/crit", 1, 20)
	for _, m := range rec.messages("room/crit") {
		require.True(t, m.Critical || m.Repaired, "a pushed critical message says so (a repaired one cannot)")
	}
	st := ts.Stats()
	require.Equal(t, uint64(16), st.CopiesDatagram)
	require.Equal(t, uint64(4), st.CopiesStream, "large copies on streams of their own")
	require.Eventually(t, func() bool {
		cs := sub.Stats()
		return cs.CopiesFirst+cs.CopiesWasted == 20
	}, 5*time.Second, 10*time.Millisecond)
}

// Copies stay within the byte budget, and are not sent at all while the
// connection sees no loss (unless configured to always).
func TestCriticalCopiesBudgetAndAdaptive(t *testing.T) {
	budget := runServer(t, server.Config{Critical: server.CriticalConfig{Always: true, BudgetBytes: 200}})
	sub := dial(t, budget, client.Config{})
	_, err := sub.Session("s").Subscribe(context.Background(), "room/b", client.SubscribeOptions{}, func(client.Message) error { return nil })
	require.NoError(t, err)
	pub := dial(t, budget, client.Config{}).Session("p")
	for i := 0; i < 50; i++ {
		_, err := pub.Publish(context.Background(), "room/b", []byte("quiz starts now"), client.PublishOptions{Critical: true})
		require.NoError(t, err)
	}
	st := budget.Stats()
	require.Positive(t, st.CopiesOverBudget)
	require.LessOrEqual(t, st.CopyBytes, uint64(200+200*5), "within the budget (a second's worth, plus what accrued during the test)")

	adaptive := runServer(t, server.Config{}) // copies only from 2% loss
	sub = dial(t, adaptive, client.Config{})
	_, err = sub.Session("s").Subscribe(context.Background(), "room/a", client.SubscribeOptions{}, func(client.Message) error { return nil })
	require.NoError(t, err)
	pub = dial(t, adaptive, client.Config{}).Session("p")
	for i := 0; i < 20; i++ {
		_, err := pub.Publish(context.Background(), "room/a", []byte("x"), client.PublishOptions{Critical: true})
		require.NoError(t, err)
	}
	require.Zero(t, adaptive.Stats().CopiesDatagram+adaptive.Stats().CopiesStream, "no loss on loopback: no copies")
}

// A critical mark on a droppable message is refused; a client without
// datagrams gets its copies on streams.
func TestCriticalBadInputAndNoDatagrams(t *testing.T) {
	ts := runServer(t, server.Config{Critical: server.CriticalConfig{Always: true}})
	pub := dial(t, ts, client.Config{}).Session("p")
	_, err := pub.Publish(context.Background(), "room/c", []byte("x"), client.PublishOptions{Critical: true, Droppable: true})
	require.ErrorIs(t, err, &stream.Error{Code: stream.BadRequest})

	rc := dialRaw(t, ts)
	st := rc.open(&pb.Frame{Body: &pb.Frame_Hello{Hello: &pb.Hello{Version: stream.Version, Features: stream.FeatureCriticalCopies}}})
	f, err := stream.NewReader(st, 0).ReadFrame()
	require.NoError(t, err)
	require.Equal(t, stream.FeatureCriticalCopies, f.GetWelcome().GetFeatures())
	rc.open(&pb.Frame{Body: &pb.Frame_SessionOpen{SessionOpen: &pb.SessionOpen{Name: "s"}}},
		&pb.Frame{Body: &pb.Frame_Subscribe{Subscribe: &pb.Subscribe{Channel: "room/c", Start: pb.Start_START_AFTER}}})
	require.Eventually(t, func() bool {
		info, err := ts.ChannelInfo(context.Background(), "room/c")
		return err == nil && info.Subscribers == 1
	}, 5*time.Second, 5*time.Millisecond)
	_, err = pub.Publish(context.Background(), "room/c", []byte("stop"), client.PublishOptions{Critical: true})
	require.NoError(t, err)
	uni, err := rc.qc.AcceptUniStream(context.Background())
	require.NoError(t, err)
	copyFrame, err := stream.NewReader(uni, 0).ReadFrame()
	require.NoError(t, err)
	require.True(t, copyFrame.GetPush().GetCritical())
	require.Equal(t, uint64(1), copyFrame.GetPush().GetSeq())
}

// Copies follow the connection's loss: on while it loses packets, off
// again once the loss falls below the threshold.
func TestCriticalCopiesFollowLoss(t *testing.T) {
	ts := runServer(t, server.Config{Critical: server.CriticalConfig{BudgetBytes: 1 << 20}})
	relay, err := netem.Start(context.Background(), netem.Config{Upstream: ts.Addr, Uplink: netem.Link{Loss: 0.15}, Downlink: netem.Link{Loss: 0.15},
		Seed: 3, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	require.NoError(t, err)
	defer relay.Close()
	rec := newRecorder()
	sub := dial(t, &testServer{Server: ts.Server, Addr: relay.Addr().String(), CA: ts.CA}, client.Config{})
	_, err = sub.Session("s").Subscribe(context.Background(), "room/f", client.SubscribeOptions{Since: seqPtr(0)}, rec.handle)
	require.NoError(t, err)
	pub := dial(t, ts, client.Config{}).Session("p")
	copies := func() uint64 { st := ts.Stats(); return st.CopiesDatagram + st.CopiesStream }
	publish := func(n int) {
		for i := 0; i < n; i++ {
			_, err := pub.Publish(context.Background(), "room/f", []byte("now"), client.PublishOptions{Critical: true})
			require.NoError(t, err)
			time.Sleep(20 * time.Millisecond) // spread over the loss sampling
		}
	}
	publish(100)
	require.Positive(t, copies(), "15% loss: copies on")

	relay.Heal()
	publish(100) // the loss of the last second falls to 0: copies off
	before := copies()
	publish(50)
	require.Equal(t, before, copies(), "no loss: copies off again")
	rec.waitCount(t, "room/f", 250, 20*time.Second)
	rec.requireExactly(t, "room/f", 1, 250)
}
