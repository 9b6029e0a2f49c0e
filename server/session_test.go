package server_test

import (
	"context"
	"errors"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/quic-go/quic-go"
	"github.com/stretchr/testify/require"

	"github.com/quicpush/quicpush/client"
	"github.com/quicpush/quicpush/server"
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
