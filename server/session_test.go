package server_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/quic-go/quic-go"
	"github.com/stretchr/testify/require"

	"github.com/quicpush/quicpush/client"
	"github.com/quicpush/quicpush/server"
	"github.com/quicpush/quicpush/store"
	"github.com/quicpush/quicpush/stream"
	pb "github.com/quicpush/quicpush/stream/quicpushpb"
)

// A client that ends a session (FIN) right after publishing still gets
// every acknowledgement, then the server's FIN; the connection goes on.
func TestSessionFinAnswersPublishesInFlight(t *testing.T) {
	ts := runServer(t, server.Config{})
	rc := dialRaw(t, ts)
	rc.hello()
	var frames []*pb.Frame
	frames = append(frames, &pb.Frame{Body: &pb.Frame_SessionOpen{SessionOpen: &pb.SessionOpen{Name: "s"}}})
	for i := 1; i <= 50; i++ {
		frames = append(frames, &pb.Frame{Body: &pb.Frame_Publish{Publish: &pb.Publish{RequestId: uint64(i), Channel: "room/fin", Data: []byte("m")}}})
	}
	st := rc.open(frames...)
	require.NoError(t, st.Close())
	st.SetReadDeadline(time.Now().Add(5 * time.Second))
	r := stream.NewReader(st, 0)
	for i := 1; i <= 50; i++ {
		f, err := r.ReadFrame()
		require.NoError(t, err)
		require.Equal(t, uint64(i), f.GetPublishAck().GetSeq())
	}
	_, err := r.ReadFrame()
	require.ErrorIs(t, err, io.EOF, "the server ends its side after the last ack")

	// The connection is still good for another session.
	st = rc.open(&pb.Frame{Body: &pb.Frame_SessionOpen{SessionOpen: &pb.SessionOpen{Name: "t"}}},
		&pb.Frame{Body: &pb.Frame_Publish{Publish: &pb.Publish{RequestId: 1, Channel: "room/fin", Data: []byte("m")}}})
	f, err := stream.NewReader(st, 0).ReadFrame()
	require.NoError(t, err)
	require.Equal(t, uint64(51), f.GetPublishAck().GetSeq())
}

// A client that resets a session stream, even with pushes queued for it,
// loses that session only.
func TestSessionResetEndsOnlyThatSession(t *testing.T) {
	ts := runServer(t, server.Config{})
	rc := dialRaw(t, ts)
	ctl := rc.hello()
	st := rc.open(&pb.Frame{Body: &pb.Frame_SessionOpen{SessionOpen: &pb.SessionOpen{Name: "s"}}},
		&pb.Frame{Body: &pb.Frame_Subscribe{Subscribe: &pb.Subscribe{Channel: "room/reset", Start: pb.Start_START_AFTER}}})
	pub := dial(t, ts, client.Config{})
	big := make([]byte, 8<<10)
	for i := 0; i < 200; i++ { // 1.6 MB: beyond the stream's flow-control window, so queued
		_, err := pub.Session("p").Publish(context.Background(), "room/reset", big, client.PublishOptions{})
		require.NoError(t, err)
	}
	st.CancelRead(quic.StreamErrorCode(stream.NoError))
	st.CancelWrite(quic.StreamErrorCode(stream.NoError))
	publishN(t, pub, "room/reset", 50)

	_, err := ctl.Write(mustFrame(t, &pb.Frame{Body: &pb.Frame_Ping{Ping: &pb.Ping{Id: 9}}}))
	require.NoError(t, err)
	ctl.SetReadDeadline(time.Now().Add(5 * time.Second))
	f, err := stream.NewReader(ctl, 0).ReadFrame()
	require.NoError(t, err, "the connection died with the session")
	require.Equal(t, uint64(9), f.GetPong().GetId())
}

// History is a subscription to the past: a user who may not subscribe to a
// channel may not read it over a repair stream either.
func TestRepairIsAuthorized(t *testing.T) {
	ts := runServer(t, server.Config{Authorize: func(_ context.Context, ev server.AuthorizeEvent) error {
		if ev.User != "teacher" && strings.HasPrefix(ev.Channel, "staff/") {
			return errors.New("staff only")
		}
		return nil
	}})
	teacher := dial(t, ts, client.Config{Token: "teacher"})
	publishN(t, teacher, "staff/notes", 3)
	msgs, _, err := teacher.History(context.Background(), "staff/notes", 1, 0)
	require.NoError(t, err)
	require.Len(t, msgs, 3)

	student := dial(t, ts, client.Config{Token: "student"})
	_, _, err = student.History(context.Background(), "staff/notes", 1, 0)
	require.ErrorIs(t, err, &stream.Error{Code: stream.Forbidden})
	_, err = student.Session("s").Subscribe(context.Background(), "staff/notes", client.SubscribeOptions{}, func(client.Message) error { return nil })
	require.ErrorIs(t, err, &stream.Error{Code: stream.Forbidden})
	_, err = student.Session("s").Publish(context.Background(), "staff/notes", []byte("x"), client.PublishOptions{})
	require.ErrorIs(t, err, &stream.Error{Code: stream.Forbidden})
}

// On the Badger store a session keeps its next batch of publishes queued
// while one commits: many publishes sent at once, on three channels, are
// still stored in the order sent and answered in that order; the FIN that
// follows them is answered after the last; a subscriber gets each once,
// in order.
func TestPipelinedPublishesKeepTheirOrder(t *testing.T) {
	db, err := store.Open(t.TempDir(), store.Options{Logger: quietLog})
	require.NoError(t, err)
	t.Cleanup(func() { db.Close() })
	ts := runServer(t, server.Config{Store: db, PublishRate: -1})
	channels := []string{"room/p0", "room/p1", "room/p2"}
	rec := newRecorder()
	sess := dial(t, ts, client.Config{}).Session("classroom")
	for _, ch := range channels {
		_, err := sess.Subscribe(t.Context(), ch, client.SubscribeOptions{Since: seqPtr(0)}, rec.handle)
		require.NoError(t, err)
	}

	const n = 900
	rc := dialRaw(t, ts)
	rc.hello()
	frames := []*pb.Frame{{Body: &pb.Frame_SessionOpen{SessionOpen: &pb.SessionOpen{Name: "s"}}}}
	for i := 1; i <= n; i++ {
		ch := channels[i%len(channels)]
		frames = append(frames, &pb.Frame{Body: &pb.Frame_Publish{Publish: &pb.Publish{
			RequestId: uint64(i), Channel: ch, Data: fmt.Appendf(nil, "%s %d", ch, (i-1)/len(channels)+1)}}})
	}
	st := rc.open(frames...)
	require.NoError(t, st.Close())
	st.SetReadDeadline(time.Now().Add(20 * time.Second))
	r := stream.NewReader(st, 0)
	for i := 1; i <= n; i++ {
		f, err := r.ReadFrame()
		require.NoError(t, err)
		ack := f.GetPublishAck()
		require.Equal(t, uint64(i), ack.GetRequestId(), "answered in the order sent")
		require.Equal(t, uint64((i-1)/len(channels)+1), ack.GetSeq(), "stored in the order sent")
	}
	_, err = r.ReadFrame()
	require.ErrorIs(t, err, io.EOF, "the server ends its side after the last ack")

	for _, ch := range channels {
		rec.waitCount(t, ch, n/len(channels), 10*time.Second)
		rec.requireExactly(t, ch, 1, uint64(n/len(channels)))
		for i, m := range rec.messages(ch) {
			require.Equal(t, fmt.Sprintf("%s %d", ch, i+1), string(m.Data))
		}
	}
}
