package server_test

import (
	"context"
	"io"
	"testing"
	"time"

	"github.com/quic-go/quic-go"
	"github.com/quic-go/quic-go/quicvarint"
	"github.com/stretchr/testify/require"

	"github.com/quicpush/quicpush/client"
	"github.com/quicpush/quicpush/server"
	"github.com/quicpush/quicpush/stream"
	pb "github.com/quicpush/quicpush/stream/quicpushpb"
)

// rawConn is a hand-driven quicpush connection for sending bad input.
type rawConn struct {
	t  *testing.T
	qc *quic.Conn
}

func dialRaw(t *testing.T, ts *testServer) *rawConn {
	t.Helper()
	tlsConf := ts.clientTLS(t)
	tlsConf.NextProtos = []string{stream.ALPN}
	tlsConf.ServerName = "localhost"
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	qc, err := quic.DialAddr(ctx, ts.Addr, tlsConf, &quic.Config{})
	require.NoError(t, err)
	t.Cleanup(func() { qc.CloseWithError(0, "") })
	return &rawConn{t: t, qc: qc}
}

func (rc *rawConn) open(frames ...*pb.Frame) *quic.Stream {
	st, err := rc.qc.OpenStreamSync(context.Background())
	require.NoError(rc.t, err)
	var b []byte
	for _, f := range frames {
		b, err = stream.AppendFrame(b, f)
		require.NoError(rc.t, err)
	}
	_, err = st.Write(b)
	require.NoError(rc.t, err)
	return st
}

// hello opens the control stream and reads the welcome.
func (rc *rawConn) hello() *quic.Stream {
	st := rc.open(&pb.Frame{Body: &pb.Frame_Hello{Hello: &pb.Hello{Version: stream.Version}}})
	f, err := stream.NewReader(st, 0).ReadFrame()
	require.NoError(rc.t, err)
	require.NotNil(rc.t, f.GetWelcome())
	return st
}

// requireClosedWith reads st until the connection ends and checks its code.
func (rc *rawConn) requireClosedWith(st *quic.Stream, code stream.ErrCode) {
	rc.t.Helper()
	st.SetReadDeadline(time.Now().Add(5 * time.Second))
	_, err := io.ReadAll(st)
	require.Error(rc.t, err)
	got, ok := stream.CodeOf(err)
	require.True(rc.t, ok, "not a protocol error: %v", err)
	require.Equal(rc.t, code, got, "closed with %v", err)
}

// readError reads st to its end and returns the Error frame on it.
func readError(t *testing.T, st *quic.Stream) *pb.Error {
	t.Helper()
	st.SetReadDeadline(time.Now().Add(5 * time.Second))
	r := stream.NewReader(st, 0)
	for {
		f, err := r.ReadFrame()
		require.NoError(t, err, "stream ended without an error frame")
		if e := f.GetError(); e != nil {
			return e
		}
	}
}

func TestBadInputGetsItsErrorCode(t *testing.T) {
	ts := runServer(t, server.Config{HelloTimeout: 2 * time.Second})
	pub := dial(t, ts, client.Config{})
	res, err := pub.Session("p").Publish(context.Background(), "room/x", []byte("one"), client.PublishOptions{})
	require.NoError(t, err)
	epoch := res.Epoch

	subscribe := &pb.Frame{Body: &pb.Frame_Subscribe{Subscribe: &pb.Subscribe{Channel: "room/x"}}}
	sessionOpen := &pb.Frame{Body: &pb.Frame_SessionOpen{SessionOpen: &pb.SessionOpen{Name: "s"}}}

	t.Run("subscribe before hello", func(t *testing.T) {
		rc := dialRaw(t, ts)
		rc.requireClosedWith(rc.open(subscribe), stream.FrameUnexpected)
	})
	t.Run("unsupported version", func(t *testing.T) {
		rc := dialRaw(t, ts)
		rc.requireClosedWith(rc.open(&pb.Frame{Body: &pb.Frame_Hello{Hello: &pb.Hello{Version: 99}}}), stream.VersionUnsupported)
	})
	t.Run("no hello at all", func(t *testing.T) {
		rc := dialRaw(t, ts)
		st, err := rc.qc.OpenStreamSync(context.Background())
		require.NoError(t, err)
		rc.requireClosedWith(st, stream.HelloTimeout)
	})
	t.Run("oversize frame", func(t *testing.T) {
		rc := dialRaw(t, ts)
		rc.hello()
		st := rc.open(sessionOpen)
		_, err := st.Write(quicvarint.Append(nil, 10<<20))
		require.NoError(t, err)
		rc.requireClosedWith(st, stream.FrameTooLarge)
	})
	t.Run("unknown frame type", func(t *testing.T) {
		rc := dialRaw(t, ts)
		ctl := rc.hello()
		_, err := ctl.Write([]byte{3, 0xf8, 0x06, 0x01}) // field 111: no such frame
		require.NoError(t, err)
		rc.requireClosedWith(ctl, stream.FrameUnknown)
	})
	t.Run("malformed protobuf", func(t *testing.T) {
		rc := dialRaw(t, ts)
		ctl := rc.hello()
		_, err := ctl.Write([]byte{2, 0x1a, 0x05}) // a ping claiming 5 bytes, holding none
		require.NoError(t, err)
		rc.requireClosedWith(ctl, stream.FrameMalformed)
	})
	t.Run("frame on the wrong stream", func(t *testing.T) {
		rc := dialRaw(t, ts)
		ctl := rc.hello()
		_, err := ctl.Write(mustFrame(t, subscribe))
		require.NoError(t, err)
		rc.requireClosedWith(ctl, stream.FrameUnexpected)

		rc = dialRaw(t, ts)
		rc.hello()
		rc.requireClosedWith(rc.open(sessionOpen, &pb.Frame{Body: &pb.Frame_Ping{Ping: &pb.Ping{Id: 1}}}), stream.FrameUnexpected)

		rc = dialRaw(t, ts)
		rc.hello()
		rc.requireClosedWith(rc.open(subscribe), stream.FrameUnexpected) // a stream must start with session_open
	})
	t.Run("repair for a wrong epoch", func(t *testing.T) {
		rc := dialRaw(t, ts)
		rc.hello()
		st := rc.open(&pb.Frame{Body: &pb.Frame_RepairRequest{RepairRequest: &pb.RepairRequest{Channel: "room/x", Epoch: epoch + 1, From: 1, To: 1}}})
		require.Equal(t, pb.ErrorCode_WRONG_EPOCH, readError(t, st).Code)
		// The connection goes on: a valid repair on it still works.
		st = rc.open(&pb.Frame{Body: &pb.Frame_RepairRequest{RepairRequest: &pb.RepairRequest{Channel: "room/x", Epoch: epoch, From: 1, To: 1}}})
		f, err := stream.NewReader(st, 0).ReadFrame()
		require.NoError(t, err)
		require.Equal(t, uint64(1), f.GetPush().GetSeq())
	})
	t.Run("repair for an absurd range", func(t *testing.T) {
		rc := dialRaw(t, ts)
		rc.hello()
		for _, r := range [][2]uint64{{0, 5}, {5, 2}, {1 << 40, 1<<40 + 5}} {
			st := rc.open(&pb.Frame{Body: &pb.Frame_RepairRequest{RepairRequest: &pb.RepairRequest{Channel: "room/x", Epoch: epoch, From: r[0], To: r[1]}}})
			require.Equal(t, pb.ErrorCode_INVALID_RANGE, readError(t, st).Code, "range %v", r)
		}
	})
	t.Run("subscribe to an invalid channel or beyond the head", func(t *testing.T) {
		c := dial(t, ts, client.Config{})
		_, err := c.Session("s").Subscribe(context.Background(), "room/x", client.SubscribeOptions{Since: seqPtr(1000)}, func(client.Message) error { return nil })
		require.ErrorIs(t, err, &stream.Error{Code: stream.InvalidRange})
		rc := dialRaw(t, ts)
		rc.hello()
		st := rc.open(sessionOpen, &pb.Frame{Body: &pb.Frame_Subscribe{Subscribe: &pb.Subscribe{Channel: "bad channel"}}})
		require.Equal(t, pb.ErrorCode_BAD_REQUEST, readError(t, st).Code)
	})

	// After all that, the server still serves.
	res, err = pub.Session("p").Publish(context.Background(), "room/x", []byte("two"), client.PublishOptions{})
	require.NoError(t, err)
	require.Equal(t, uint64(2), res.Seq)
}

func mustFrame(t *testing.T, f *pb.Frame) []byte {
	b, err := stream.AppendFrame(nil, f)
	require.NoError(t, err)
	return b
}
