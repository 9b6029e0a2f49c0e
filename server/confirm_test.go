package server_test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/quicpush/quicpush/client"
	"github.com/quicpush/quicpush/internal/netem"
	"github.com/quicpush/quicpush/server"
	"github.com/quicpush/quicpush/stream"
	pb "github.com/quicpush/quicpush/stream/quicpushpb"
)

// 30 subscribers, 2 of them behind a relay that blacks out: at the
// deadline the publisher sees 28/30 and the 2 missing by name; once the
// network heals the 2 catch up, and the publisher sees 30/30. Every
// subscriber hands the message over exactly once.
func TestConfirmBlackout(t *testing.T) {
	const interval = 100 * time.Millisecond
	ts := runServer(t, server.Config{Heartbeat: time.Second, AckDelay: 10 * time.Millisecond,
		Confirm: server.ConfirmConfig{Interval: interval, Linger: time.Minute}})
	relay, err := netem.Start(context.Background(), netem.Config{Upstream: ts.Addr, Logger: quietLog})
	require.NoError(t, err)
	defer relay.Close()
	behind := &testServer{Server: ts.Server, Addr: relay.Addr().String(), CA: ts.CA}

	ctx := context.Background()
	recs := make([]*recorder, 30)
	for i := range recs {
		user := fmt.Sprintf("student%02d", i+1)
		at := ts
		if i >= 28 {
			at = behind // student29 and student30
		}
		recs[i] = newRecorder()
		sub := dial(t, at, client.Config{Token: user, ReconnectMin: 50 * time.Millisecond, ReconnectMax: 300 * time.Millisecond})
		_, err := sub.Session("class").Subscribe(ctx, "room/quiz", client.SubscribeOptions{}, recs[i].handle)
		require.NoError(t, err)
	}
	teacher := dial(t, ts, client.Config{Token: "teacher"})

	relay.Blackout(time.Hour) // until Heal
	var mu sync.Mutex
	var updates []client.ConfirmStatus
	start := time.Now()
	res, err := teacher.Session("class").Publish(ctx, "room/quiz", []byte("quiz starts now"), client.PublishOptions{
		Confirm: &client.ConfirmOptions{Deadline: time.Second, OnUpdate: func(st client.ConfirmStatus) {
			mu.Lock()
			updates = append(updates, st)
			mu.Unlock()
		}},
	})
	require.NoError(t, err)
	require.NotNil(t, res.Confirmation)

	rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	report, err := res.Confirmation.Report(rctx)
	require.NoError(t, err)
	require.True(t, report.Report)
	require.False(t, report.Final)
	require.Equal(t, 28, report.Confirmed)
	require.Equal(t, 30, report.Total)
	require.Equal(t, []string{"student29", "student30"}, report.Missing)
	require.Zero(t, report.MissingMore)
	require.Equal(t, res.Seq, report.Seq)

	relay.Heal()
	wctx, cancel2 := context.WithTimeout(ctx, 30*time.Second)
	defer cancel2()
	final, err := res.Confirmation.Wait(wctx)
	require.NoError(t, err)
	require.True(t, final.Final)
	require.True(t, final.Complete(), "%+v", final)
	require.Equal(t, 30, final.Confirmed)
	elapsed := time.Since(start)

	for i, rec := range recs {
		rec.waitCount(t, "room/quiz", 1, 5*time.Second)
		require.Equal(t, []uint64{res.Seq}, rec.get("room/quiz"), "student%02d", i+1)
	}
	// Merged: at most one progress per interval (plus the first change and
	// the report), however many acks came in.
	mu.Lock()
	defer mu.Unlock()
	require.LessOrEqual(t, len(updates), int(elapsed/interval)+3, "updates: %d in %v", len(updates), elapsed)
	last := updates[len(updates)-1]
	require.Equal(t, 30, last.Confirmed)
	require.True(t, last.Final)
}

// A confirmation request on a droppable message, with a bad deadline, or
// over the server's limits is refused with its code, and nothing is
// stored.
func TestConfirmBadInput(t *testing.T) {
	ts := runServer(t, server.Config{Confirm: server.ConfirmConfig{MaxPerConn: 1, MaxRecipients: 2, MaxDeadline: time.Minute}})
	ctx := context.Background()
	for _, u := range []string{"a", "b"} {
		sub := dial(t, ts, client.Config{Token: u})
		_, err := sub.Session("s").Subscribe(ctx, "room/c", client.SubscribeOptions{}, newRecorder().handle)
		require.NoError(t, err)
	}

	rc := dialRaw(t, ts)
	rc.hello()
	st := rc.open(&pb.Frame{Body: &pb.Frame_SessionOpen{SessionOpen: &pb.SessionOpen{Name: "s"}}})
	r := stream.NewReader(st, 0)
	send := func(f *pb.Frame) {
		b, err := stream.AppendFrame(nil, f)
		require.NoError(t, err)
		_, err = st.Write(b)
		require.NoError(t, err)
	}
	next := func() *pb.Frame {
		st.SetReadDeadline(time.Now().Add(5 * time.Second))
		f, err := r.ReadFrame()
		require.NoError(t, err)
		return f
	}
	publish := func(id uint64, class pb.Class, deadlineMs uint32) {
		send(&pb.Frame{Body: &pb.Frame_Publish{Publish: &pb.Publish{RequestId: id, Channel: "room/c", Data: []byte("x"),
			Class: class, Id: fmt.Sprint("m", id), Confirm: &pb.Confirm{DeadlineMs: deadlineMs}}}})
	}
	requireError := func(id uint64, code stream.ErrCode) {
		t.Helper()
		e := next().GetError()
		require.NotNil(t, e)
		require.Equal(t, id, e.RequestId)
		require.Equal(t, code, stream.ErrCode(e.Code), e.Message)
	}

	publish(1, pb.Class_CLASS_DROPPABLE, 1000)
	requireError(1, stream.BadRequest)
	publish(2, pb.Class_CLASS_RELIABLE, 0)
	requireError(2, stream.InvalidRange)
	publish(3, pb.Class_CLASS_RELIABLE, 61_000) // over MaxDeadline
	requireError(3, stream.InvalidRange)

	// One tracked confirmation per connection: the first is taken...
	publish(4, pb.Class_CLASS_RELIABLE, 60_000)
	ack := next().GetPublishAck()
	require.NotNil(t, ack)
	require.Equal(t, uint64(1), ack.Seq)
	// ...the second is refused with a retry hint.
	publish(5, pb.Class_CLASS_RELIABLE, 60_000)
	e := next()
	for e.GetConfirmProgress() != nil {
		e = next() // progress of message 1 may come first
	}
	require.Equal(t, stream.ConfirmLimit, stream.ErrCode(e.GetError().GetCode()), "%v", e)
	require.NotZero(t, e.GetError().RetryAfterMs)

	// Three subscribers, two allowed: refused before anything is stored.
	c3 := dial(t, ts, client.Config{Token: "c"})
	_, err := c3.Session("s").Subscribe(ctx, "room/c", client.SubscribeOptions{}, newRecorder().handle)
	require.NoError(t, err)
	pub := dial(t, ts, client.Config{Token: "teacher"})
	_, err = pub.Session("p").Publish(ctx, "room/c", []byte("y"), client.PublishOptions{Confirm: &client.ConfirmOptions{Deadline: time.Second}})
	require.ErrorIs(t, err, &stream.Error{Code: stream.ConfirmTooManyRecipients})

	// The SDK refuses a droppable one before sending it.
	_, err = pub.Session("p").Publish(ctx, "room/c", []byte("z"), client.PublishOptions{Droppable: true, Confirm: &client.ConfirmOptions{Deadline: time.Second}})
	require.ErrorIs(t, err, &stream.Error{Code: stream.BadRequest})

	b, err := ts.Store.Bounds(ctx, "room/c")
	require.NoError(t, err)
	require.Equal(t, uint64(1), b.Last, "a refused request stored something")
}
