package server_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/quicpush/quicpush/client"
	"github.com/quicpush/quicpush/internal/netem"
	"github.com/quicpush/quicpush/server"
	"github.com/quicpush/quicpush/stream"
	pb "github.com/quicpush/quicpush/stream/quicpushpb"
)

// Droppable messages are not stored, are numbered apart from the reliable
// seq, travel as datagrams when they fit, and never block reliable ones.
func TestDroppableClass(t *testing.T) {
	ts := runServer(t, server.Config{ChannelLimits: []server.ChannelLimit{{Pattern: "room/*", DroppableRate: -1}}})
	rec := newRecorder()
	sub := dial(t, ts, client.Config{})
	_, err := sub.Session("s").Subscribe(context.Background(), "room/mix", client.SubscribeOptions{Since: seqPtr(0)}, rec.handle)
	require.NoError(t, err)
	pub := dial(t, ts, client.Config{}).Session("p")
	ctx := context.Background()
	for i := 1; i <= 20; i++ {
		res, err := pub.Publish(ctx, "room/mix", []byte(fmt.Sprintf("reliable %d", i)), client.PublishOptions{})
		require.NoError(t, err)
		require.Equal(t, uint64(i), res.Seq)
		d, err := pub.Publish(ctx, "room/mix", []byte(fmt.Sprintf("barrage %d", i)), client.PublishOptions{Droppable: true})
		require.NoError(t, err)
		require.Zero(t, d.Seq, "droppable messages take no seq")
		require.False(t, d.Dropped)
	}
	big, err := pub.Publish(ctx, "room/mix", make([]byte, 4000), client.PublishOptions{Droppable: true}) // too big for a datagram
	require.NoError(t, err)
	require.False(t, big.Dropped)
	rec.waitCount(t, "room/mix", 41, 5*time.Second)

	var reliable, droppable []uint64
	for _, m := range rec.messages("room/mix") {
		if m.Droppable {
			droppable = append(droppable, m.DroppableSeq)
		} else {
			reliable = append(reliable, m.Seq)
		}
	}
	require.Len(t, reliable, 20)
	for i, seq := range reliable {
		require.Equal(t, uint64(i+1), seq, "reliable seqs 1..20 in order, not disturbed by droppables")
	}
	require.ElementsMatch(t, seqRange(1, 21), droppable, "droppables numbered 1..21 apart")
	st := ts.Stats()
	require.Equal(t, uint64(21), st.DroppablePublished)
	require.Equal(t, uint64(21), st.DroppablePushed)
	require.Equal(t, uint64(20), st.DatagramsSent, "the small ones as datagrams, the big one on the stream")
	msgs, _, err := sub.History(ctx, "room/mix", 1, 0)
	require.NoError(t, err)
	require.Len(t, msgs, 20, "droppables are not stored")
	require.Equal(t, uint64(21), sub.Stats().DroppableDelivered)
}

func seqRange(from, to uint64) []uint64 {
	var out []uint64
	for s := from; s <= to; s++ {
		out = append(out, s)
	}
	return out
}

// Uplink limits: a channel's droppable rate thins barrage (counted, the
// publisher told "dropped"); a reliable publish over the connection's rate
// gets RATE_LIMITED with a retry hint, and the SDK retries it.
func TestUplinkLimits(t *testing.T) {
	ts := runServer(t, server.Config{PublishRate: 50, PublishBurst: 10,
		ChannelLimits: []server.ChannelLimit{{Pattern: "room/*", DroppableRate: 20}}})
	rec := newRecorder()
	sub := dial(t, ts, client.Config{})
	_, err := sub.Session("s").Subscribe(context.Background(), "room/lim", client.SubscribeOptions{}, rec.handle)
	require.NoError(t, err)

	rc := dialRaw(t, ts)
	rc.hello()
	var frames []*pb.Frame
	frames = append(frames, &pb.Frame{Body: &pb.Frame_SessionOpen{SessionOpen: &pb.SessionOpen{Name: "s"}}})
	for i := 1; i <= 40; i++ {
		frames = append(frames, &pb.Frame{Body: &pb.Frame_Publish{Publish: &pb.Publish{RequestId: uint64(i), Channel: "room/lim", Data: []byte("x")}}})
	}
	st := rc.open(frames...)
	st.SetReadDeadline(time.Now().Add(5 * time.Second))
	r := stream.NewReader(st, 0)
	acked, limited := 0, 0
	for i := 0; i < 40; i++ {
		f, err := r.ReadFrame()
		require.NoError(t, err)
		switch {
		case f.GetPublishAck() != nil:
			acked++
		case f.GetError().GetCode() == pb.ErrorCode_RATE_LIMITED:
			limited++
			require.NotZero(t, f.GetError().GetRetryAfterMs())
		default:
			t.Fatalf("unexpected %v", f)
		}
	}
	require.Positive(t, limited, "a burst of 40 over a burst of 10 is limited")
	require.Equal(t, 40, acked+limited)
	require.Equal(t, uint64(limited), ts.Stats().ReliableRateLimited)

	// The SDK retries rate-limited reliable publishes: all stored, in order.
	pub := dial(t, ts, client.Config{}).Session("p")
	for i := 0; i < 30; i++ {
		_, err := pub.Publish(context.Background(), "room/other", []byte("r"), client.PublishOptions{})
		require.NoError(t, err)
	}
	msgs, _, err := sub.History(context.Background(), "room/other", 1, 0)
	require.NoError(t, err)
	require.Len(t, msgs, 30)

	// Barrage over the channel's 20/s: thinned, and counted.
	dropped := 0
	burst := dial(t, ts, client.Config{}).Session("b")
	for i := 0; i < 60; i++ {
		res, err := burst.Publish(context.Background(), "room/lim", []byte("clap"), client.PublishOptions{Droppable: true})
		require.NoError(t, err)
		if res.Dropped {
			dropped++
		}
	}
	require.Positive(t, dropped)
	require.Equal(t, uint64(dropped), ts.Stats().DroppableRateLimited-uint64(0))
	want := acked + 60 - dropped // the raw publishes acknowledged above were reliable ones on the same channel
	require.Eventually(t, func() bool { return rec.count("room/lim") == want }, 5*time.Second, 10*time.Millisecond,
		"%d of %d", rec.count("room/lim"), want)
}

// One frozen subscriber among 50 live ones at a high publish rate: the live
// ones get every reliable message while it happens; the server stops
// pushing to the frozen one instead of queueing without end; once thawed
// it catches up from the store with nothing missing; the droppable counts
// add up for everyone.
func TestFrozenSubscriberAmongLiveOnes(t *testing.T) {
	// Long heartbeats: the frozen connection must outlive the freeze even
	// on a slow, loaded machine (a reconnect would be a different test).
	ts := runServer(t, server.Config{BehindBytes: 32 << 10, DroppableQueueBytes: 8 << 10, PublishRate: -1,
		Heartbeat: 2 * time.Minute, IdleTimeout: 5 * time.Minute,
		ChannelLimits: []server.ChannelLimit{{Pattern: "room/*", DroppableRate: -1}}})
	ctx := context.Background()
	const live, reliable, droppable = 50, 600, 600
	recs := make([]*recorder, live)
	clients := make([]*client.Client, live)
	for i := range recs {
		recs[i] = newRecorder()
		clients[i] = dial(t, ts, client.Config{})
		_, err := clients[i].Session("s").Subscribe(ctx, "room/big", client.SubscribeOptions{Since: seqPtr(0)}, recs[i].handle)
		require.NoError(t, err)
	}
	relay, err := netem.Start(ctx, netem.Config{Upstream: ts.Addr, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	require.NoError(t, err)
	defer relay.Close()
	frozenRec := newRecorder()
	var shed atomic.Uint64
	frozen := dial(t, &testServer{Server: ts.Server, Addr: relay.Addr().String(), CA: ts.CA}, client.Config{})
	_, err = frozen.Session("s").Subscribe(ctx, "room/big", client.SubscribeOptions{Since: seqPtr(0),
		OnShed: func(s client.Shed) { shed.Add(s.Count) }}, frozenRec.handle)
	require.NoError(t, err)

	relay.Blackout(time.Hour) // frozen: nothing reaches it, nothing comes back
	frozenAt := time.Now()
	pub := dial(t, ts, client.Config{}).Session("p")
	payload := make([]byte, 1000)
	var wg sync.WaitGroup
	for _, class := range []bool{false, true} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < reliable; i++ {
				if _, err := pub.Publish(ctx, "room/big", payload, client.PublishOptions{Droppable: class}); err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	for i, rec := range recs {
		require.Eventually(t, func() bool { return len(reliableSeqs(rec.messages("room/big"))) >= reliable }, 20*time.Second, 10*time.Millisecond,
			"live subscriber %d", i)
		require.Equal(t, seqRange(1, reliable), reliableSeqs(rec.messages("room/big")), "live subscriber %d", i)
	}
	require.Positive(t, ts.Stats().BehindEvents, "the frozen subscriber's pushes were stopped, not queued")
	require.Zero(t, ts.Stats().SlowConsumers, "and it was not cut off")

	relay.Blackout(0) // thaw
	// QUIC's probe timeout doubles all through a blackout (quic-go caps it
	// at 60 s): the server's first retransmission after the thaw may come
	// as long after it as the blackout lasted, which a loaded machine
	// stretches.
	catchUp := 30*time.Second + min(time.Since(frozenAt), time.Minute)
	require.Eventually(t, func() bool { return len(reliableSeqs(frozenRec.messages("room/big"))) >= reliable }, catchUp, 20*time.Millisecond)
	require.Equal(t, seqRange(1, reliable), reliableSeqs(frozenRec.messages("room/big")), "the frozen one caught up from the store")

	// Droppable counts add up. The server pushed or shed each droppable for
	// each subscriber, and told every subscriber how many it shed; each
	// subscriber counts what it got and the holes it saw (shed, or lost as
	// datagrams while frozen).
	require.Equal(t, uint64(droppable), ts.Stats().DroppablePublished)
	require.Eventually(t, func() bool { // the datagram writers may still hold a few
		sv := ts.Stats()
		return sv.DroppablePushed+sv.DroppableShed == uint64((live+1)*droppable)
	}, 10*time.Second, 10*time.Millisecond, "every droppable push was sent or shed: %+v", ts.Stats())
	sv := ts.Stats()
	require.Eventually(t, func() bool {
		var told uint64
		for _, c := range append(clients, frozen) {
			told += c.Stats().DroppableShed
		}
		return told == sv.DroppableShed
	}, 5*time.Second, 10*time.Millisecond, "every shed droppable was told")
	for i, c := range append(clients, frozen) {
		st := c.Stats()
		require.LessOrEqual(t, st.DroppableDelivered+st.DroppableMissing, uint64(droppable), "subscriber %d: %+v", i, st)
		require.LessOrEqual(t, st.DroppableDelivered+st.DroppableShed, uint64(droppable), "subscriber %d: %+v", i, st)
	}
	require.Positive(t, shed.Load(), "the frozen one's OnShed was called")
}

func reliableSeqs(msgs []client.Message) []uint64 {
	var out []uint64
	for _, m := range msgs {
		if !m.Droppable {
			out = append(out, m.Seq)
		}
	}
	return out
}

// Notify mode (huge rooms): subscribers are told the head, at most once per
// merge window, and pull; every message still arrives once, in order.
func TestNotifyMode(t *testing.T) {
	ts := runServer(t, server.Config{MergeWindow: 50 * time.Millisecond,
		ChannelLimits: []server.ChannelLimit{{Pattern: "huge/*", Notify: true}}})
	ctx := context.Background()
	var recs []*recorder
	for i := 0; i < 5; i++ {
		rec := newRecorder()
		recs = append(recs, rec)
		c := dial(t, ts, client.Config{})
		_, err := c.Session("s").Subscribe(ctx, "huge/lecture", client.SubscribeOptions{}, rec.handle)
		require.NoError(t, err)
	}
	pub := dial(t, ts, client.Config{})
	publishN(t, pub, "huge/lecture", 200)
	for _, rec := range recs {
		rec.waitCount(t, "huge/lecture", 200, 10*time.Second)
		rec.requireExactly(t, "huge/lecture", 1, 200)
		for _, m := range rec.messages("huge/lecture") {
			require.True(t, m.Repaired, "notify mode: pulled, not pushed")
		}
	}
}

// A business session's own parameters reach the client before its pushes.
func TestSessionParams(t *testing.T) {
	ts := runServer(t, server.Config{Sessions: map[string]server.SessionParams{"chat": {HoleWait: 7 * time.Millisecond, RepairBatch: 64}}})
	rc := dialRaw(t, ts)
	rc.hello()
	st := rc.open(&pb.Frame{Body: &pb.Frame_SessionOpen{SessionOpen: &pb.SessionOpen{Name: "chat"}}})
	f, err := stream.NewReader(st, 0).ReadFrame()
	require.NoError(t, err)
	require.Equal(t, &pb.SessionOpened{HoleWaitMs: 7, RepairBatch: 64}, f.GetSessionOpened())
}

// A publish of a class the server does not know is refused, and stores
// nothing.
func TestUnknownClassRefused(t *testing.T) {
	ts := runServer(t, server.Config{})
	rc := dialRaw(t, ts)
	rc.hello()
	st := rc.open(&pb.Frame{Body: &pb.Frame_SessionOpen{SessionOpen: &pb.SessionOpen{Name: "s"}}},
		&pb.Frame{Body: &pb.Frame_Publish{Publish: &pb.Publish{RequestId: 1, Channel: "room/c", Class: 7, Data: []byte("?")}}})
	require.Equal(t, pb.ErrorCode_BAD_REQUEST, readError(t, st).Code)
	b, err := ts.Store.Bounds(context.Background(), "room/c")
	require.NoError(t, err)
	require.Zero(t, b.Last)
}

// A client that subscribes and then never reads its stream: the server
// stops pushing to it (counted), never queues without end, and everyone
// else is served as usual.
func TestClientThatNeverReads(t *testing.T) {
	ts := runServer(t, server.Config{BehindBytes: 16 << 10, PublishRate: -1})
	rc := dialRaw(t, ts)
	rc.hello()
	rc.open(&pb.Frame{Body: &pb.Frame_SessionOpen{SessionOpen: &pb.SessionOpen{Name: "s"}}},
		&pb.Frame{Body: &pb.Frame_Subscribe{Subscribe: &pb.Subscribe{Channel: "room/n", Start: pb.Start_START_AFTER}}})
	rec := newRecorder()
	good := dial(t, ts, client.Config{})
	_, err := good.Session("s").Subscribe(context.Background(), "room/n", client.SubscribeOptions{Since: seqPtr(0)}, rec.handle)
	require.NoError(t, err)
	pub := dial(t, ts, client.Config{}).Session("p")
	payload := make([]byte, 2000)
	for i := 0; i < 1000; i++ { // 2 MB: far beyond the stream's flow-control window
		_, err := pub.Publish(context.Background(), "room/n", payload, client.PublishOptions{})
		require.NoError(t, err)
	}
	rec.waitCount(t, "room/n", 1000, 10*time.Second)
	rec.requireExactly(t, "room/n", 1, 1000)
	require.Equal(t, uint64(1), ts.Stats().BehindEvents)
	require.Zero(t, ts.Stats().SlowConsumers)
	require.Equal(t, 3, ts.ConnCount(), "the one that never reads is still connected, and so is everyone else")
}
