package main

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"errors"
	"net/http"
	"slices"
	"testing"
	"time"

	"github.com/quic-go/webtransport-go"
	"github.com/stretchr/testify/require"

	"github.com/quicpush/quicpush/client/web"
	"github.com/quicpush/quicpush/server"
	"github.com/quicpush/quicpush/stream"
	pb "github.com/quicpush/quicpush/stream/quicpushpb"
)

// With no flag, the admin server serves the demo classroom and its
// config, and a page's WebTransport session pins the certificate by the
// hash it was given, as a browser does, and speaks the protocol.
func TestDemoPageReachesTheServer(t *testing.T) {
	listen, admin := freeUDP(t), freeTCP(t)
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	p := runDaemon(ctx, "--listen", listen, "--admin", admin, "--data", t.TempDir())
	waitReady(t, admin, p.exited, p.stderr)

	for _, page := range []string{"/demo/teacher.html", "/demo/student.html", "/sdk/quicpush.js"} {
		resp, err := http.Get("http://" + admin + page)
		require.NoError(t, err)
		resp.Body.Close()
		require.Equal(t, http.StatusOK, resp.StatusCode, page)
	}
	resp, err := http.Get("http://" + admin + "/demo/config.json")
	require.NoError(t, err)
	var cfg web.PageConfig
	require.NoError(t, json.NewDecoder(resp.Body).Decode(&cfg))
	resp.Body.Close()
	require.Equal(t, "https://"+listen+server.WebTransportPath, cfg.URL)
	require.NotEmpty(t, cfg.CertHashes)

	pinned := &tls.Config{
		InsecureSkipVerify: true, // replaced by the hash check, as serverCertificateHashes does
		VerifyPeerCertificate: func(raw [][]byte, _ [][]*x509.Certificate) error {
			sum := sha256.Sum256(raw[0])
			if !slices.Contains(cfg.CertHashes, base64.StdEncoding.EncodeToString(sum[:])) {
				return errors.New("certificate not pinned by the page")
			}
			return nil
		},
	}
	d := &webtransport.Transport{TLSClientConfig: pinned}
	defer d.Close()
	dctx, dcancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer dcancel()
	origin := "http://" + admin
	_, sess, err := d.Dial(dctx, cfg.URL, http.Header{"Origin": {origin}})
	require.NoError(t, err)
	st, err := sess.OpenStream()
	require.NoError(t, err)
	hello, err := stream.AppendFrame(nil, &pb.Frame{Body: &pb.Frame_Hello{Hello: &pb.Hello{Version: stream.Version, Token: "student"}}})
	require.NoError(t, err)
	_, err = st.Write(hello)
	require.NoError(t, err)
	f, err := stream.NewReader(st, 0).ReadFrame()
	require.NoError(t, err)
	require.Equal(t, "student", f.GetWelcome().GetUser())

	rsp, _, err := d.Dial(dctx, cfg.URL, http.Header{"Origin": {"http://elsewhere.example"}})
	require.Error(t, err, "an origin other than the admin server's")
	require.Equal(t, http.StatusForbidden, rsp.StatusCode)

	sess.CloseWithError(0, "")
	cancel()
	require.Equal(t, 0, p.wait(t), p.stderr.String())
}
