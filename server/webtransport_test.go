package server_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net/http"
	"testing"
	"time"

	"github.com/quic-go/webtransport-go"
	"github.com/stretchr/testify/require"

	"github.com/quicpush/quicpush/certs"
	"github.com/quicpush/quicpush/client"
	"github.com/quicpush/quicpush/server"
	"github.com/quicpush/quicpush/stream"
	pb "github.com/quicpush/quicpush/stream/quicpushpb"
)

const pageOrigin = "http://127.0.0.1:8080"

// runWebServer starts a server that takes browsers too, with a short-lived
// certificate for them, and returns the trust for that certificate.
func runWebServer(t *testing.T) (*testServer, *tls.Config) {
	wc, err := certs.NewWebTransportCerts([]string{"127.0.0.1"})
	require.NoError(t, err)
	ts := runServer(t, server.Config{WebTransport: &server.WebTransportConfig{
		Origins: []string{pageOrigin}, GetCertificate: wc.GetCertificate,
	}})
	leaf, err := wc.GetCertificate(nil)
	require.NoError(t, err)
	pool := x509.NewCertPool()
	pool.AddCert(leaf.Leaf)
	return ts, &tls.Config{RootCAs: pool}
}

func dialWeb(t *testing.T, ts *testServer, trust *tls.Config, origin string) (*http.Response, *webtransport.Session, error) {
	d := &webtransport.Transport{TLSClientConfig: trust}
	t.Cleanup(func() { d.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	return d.Dial(ctx, fmt.Sprintf("https://%s%s", ts.Addr, server.WebTransportPath), http.Header{"Origin": {origin}})
}

// writeFrames opens a stream on sess and writes frames on it.
func writeFrames(t *testing.T, sess *webtransport.Session, frames ...*pb.Frame) *webtransport.Stream {
	st, err := sess.OpenStream()
	require.NoError(t, err)
	var b []byte
	for _, f := range frames {
		b, err = stream.AppendFrame(b, f)
		require.NoError(t, err)
	}
	_, err = st.Write(b)
	require.NoError(t, err)
	return st
}

// A browser session speaks the same protocol as a native connection on the
// same UDP port: hello, a session, a subscription, pushes with the same seqs
// a native subscriber gets, acks, and the server's GOAWAY when it shuts down.
func TestWebTransportSpeaksTheProtocol(t *testing.T) {
	ts, trust := runWebServer(t)
	ctx := context.Background()

	native := newRecorder()
	nc := dial(t, ts, client.Config{Token: "bob"})
	_, err := nc.Session("classroom").Subscribe(ctx, "room/1", client.SubscribeOptions{}, native.handle)
	require.NoError(t, err)

	rsp, sess, err := dialWeb(t, ts, trust, pageOrigin)
	require.NoError(t, err)
	require.Equal(t, http.StatusOK, rsp.StatusCode)
	control := writeFrames(t, sess, &pb.Frame{Body: &pb.Frame_Hello{Hello: &pb.Hello{Version: stream.Version, Token: "alice", Features: stream.FeatureDatagrams}}})
	controlFrames := stream.NewReader(control, 0)
	f, err := controlFrames.ReadFrame()
	require.NoError(t, err)
	require.Equal(t, "alice", f.GetWelcome().GetUser())
	require.NotZero(t, f.GetWelcome().GetFeatures()&stream.FeatureDatagrams, "WebTransport sessions always take datagrams")

	st := writeFrames(t, sess,
		&pb.Frame{Body: &pb.Frame_SessionOpen{SessionOpen: &pb.SessionOpen{Name: "classroom"}}},
		&pb.Frame{Body: &pb.Frame_Subscribe{Subscribe: &pb.Subscribe{RequestId: 1, Channel: "room/1"}}})
	r := stream.NewReader(st, 0)
	f, err = r.ReadFrame()
	require.NoError(t, err)
	require.Equal(t, "room/1", f.GetSubscribed().GetChannel())

	const n = 50
	reqs := make([]server.PublishRequest, n)
	for i := range reqs {
		reqs[i] = server.PublishRequest{Channel: "room/1", Data: fmt.Appendf(nil, "quiz %d", i+1)}
	}
	_, err = ts.Publish(ctx, "teacher", reqs)
	require.NoError(t, err)
	var seqs []uint64
	for len(seqs) < n {
		f, err := r.ReadFrame()
		require.NoError(t, err)
		p := f.GetPush()
		require.NotNil(t, p, "got %s", stream.Name(f))
		require.Equal(t, fmt.Sprintf("quiz %d", p.Seq), string(p.Data))
		seqs = append(seqs, p.Seq)
	}
	ack, err := stream.AppendFrame(nil, &pb.Frame{Body: &pb.Frame_Ack{Ack: &pb.Ack{Channel: "room/1", Epoch: 0, Seq: n}}})
	require.NoError(t, err)
	_, err = st.Write(ack)
	require.NoError(t, err)

	native.waitCount(t, "room/1", n, 10*time.Second)
	require.Equal(t, native.get("room/1"), seqs, "the browser and the native client see the same sequence")
	native.requireExactly(t, "room/1", 1, n)

	go ts.Shutdown(ctx)
	for {
		f, err := controlFrames.ReadFrame()
		require.NoError(t, err, "the browser must get a GOAWAY first")
		if g := f.GetGoAway(); g != nil {
			require.Equal(t, pb.ErrorCode(stream.ShuttingDown), g.Code)
			break
		}
	}
}

func TestWebTransportRefusesForeignOrigin(t *testing.T) {
	ts, trust := runWebServer(t)
	rsp, _, err := dialWeb(t, ts, trust, "https://evil.example")
	require.Error(t, err)
	require.Equal(t, http.StatusForbidden, rsp.StatusCode)
}

// A browser's bad first frame gets the same typed close as a native one,
// told first as an Error frame on the control stream (browsers lose the
// session's close code).
func TestWebTransportBadHelloIsClosedWithItsCode(t *testing.T) {
	ts, trust := runWebServer(t)
	_, sess, err := dialWeb(t, ts, trust, pageOrigin)
	require.NoError(t, err)
	control := writeFrames(t, sess, &pb.Frame{Body: &pb.Frame_Hello{Hello: &pb.Hello{Version: 99}}})
	f, err := stream.NewReader(control, 0).ReadFrame()
	require.NoError(t, err)
	require.Equal(t, pb.ErrorCode(stream.VersionUnsupported), f.GetError().GetCode())
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_, err = sess.AcceptStream(ctx)
	var se *webtransport.SessionError
	require.ErrorAs(t, err, &se)
	require.Equal(t, webtransport.SessionErrorCode(stream.VersionUnsupported), se.ErrorCode)
}
