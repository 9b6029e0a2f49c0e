package server

import (
	"context"
	"errors"
	"io"
	"net"
	"time"

	"github.com/quic-go/quic-go"
	"github.com/quic-go/webtransport-go"

	"github.com/quicpush/quicpush/stream"
)

// transport is what a connection needs from the layer under it: a native
// QUIC connection (ALPN quicpush/1) or a browser's WebTransport session over
// HTTP/3. Both run the same protocol code.
type transport interface {
	AcceptStream(ctx context.Context) (bidiStream, error)
	// OpenCopyStream opens a unidirectional stream for a critical copy.
	OpenCopyStream() (copyStream, error)
	SendDatagram(b []byte) error
	DatagramsSupported() bool
	RemoteAddr() net.Addr
	CloseWithError(code stream.ErrCode, msg string)
	// HandshakeComplete is closed once the client is confirmed: data that
	// arrived before it may be a 0-RTT replay.
	HandshakeComplete() <-chan struct{}
	// Done is closed once the connection or session has ended.
	Done() <-chan struct{}
	ConnectionStats() quic.ConnectionStats
}

// bidiStream is a client-opened stream: control, session or repair.
type bidiStream interface {
	io.ReadWriteCloser
	CancelRead(code stream.ErrCode)
	CancelWrite(code stream.ErrCode)
	SetReadDeadline(t time.Time) error
	// SetPriority sets the RFC 9218 urgency (lower first) where the
	// transport has priorities; WebTransport streams have none.
	SetPriority(urgency int8, incremental bool)
}

// copyStream carries one critical copy; TryWriteAll never blocks.
type copyStream interface {
	TryWriteAll(p []byte) error
	Close() error
	CancelWrite(code stream.ErrCode)
	SetPriority(urgency int8, incremental bool)
}

// quicTransport is a native quicpush/1 connection.
type quicTransport struct{ qc *quic.Conn }

func (t quicTransport) AcceptStream(ctx context.Context) (bidiStream, error) {
	st, err := t.qc.AcceptStream(ctx)
	if err != nil {
		return nil, err
	}
	return quicStream{st}, nil
}

func (t quicTransport) OpenCopyStream() (copyStream, error) {
	st, err := t.qc.OpenUniStream()
	if err != nil {
		return nil, err
	}
	return quicSendStream{st}, nil
}

func (t quicTransport) SendDatagram(b []byte) error { return t.qc.SendDatagram(b) }
func (t quicTransport) RemoteAddr() net.Addr        { return t.qc.RemoteAddr() }
func (t quicTransport) HandshakeComplete() <-chan struct{} {
	return t.qc.HandshakeComplete()
}
func (t quicTransport) ConnectionStats() quic.ConnectionStats { return t.qc.ConnectionStats() }
func (t quicTransport) Done() <-chan struct{}                 { return t.qc.Context().Done() }

func (t quicTransport) DatagramsSupported() bool {
	dg := t.qc.ConnectionState().SupportsDatagrams
	return dg.Local && dg.Remote
}

func (t quicTransport) CloseWithError(code stream.ErrCode, msg string) {
	t.qc.CloseWithError(quic.ApplicationErrorCode(code), msg)
}

// quicStream embeds *quic.Stream so that stream.Sender finds TryWriteAll.
type quicStream struct{ *quic.Stream }

func (s quicStream) CancelRead(code stream.ErrCode) { s.Stream.CancelRead(quic.StreamErrorCode(code)) }
func (s quicStream) CancelWrite(code stream.ErrCode) {
	s.Stream.CancelWrite(quic.StreamErrorCode(code))
}

type quicSendStream struct{ *quic.SendStream }

func (s quicSendStream) CancelWrite(code stream.ErrCode) {
	s.SendStream.CancelWrite(quic.StreamErrorCode(code))
}

// webTransport is a browser's WebTransport session. Its QUIC connection
// gives the loss statistics and the handshake state; one browser tab opens
// one session per connection.
type webTransport struct {
	sess *webtransport.Session
	qc   *quic.Conn
}

// errNoCopyStreams: WebTransport streams have no non-blocking write, so a
// critical copy that does not fit a datagram is not sent (and counted).
var errNoCopyStreams = errors.New("no copy streams over WebTransport")

func (t webTransport) AcceptStream(ctx context.Context) (bidiStream, error) {
	st, err := t.sess.AcceptStream(ctx)
	if err != nil {
		return nil, err
	}
	return webStream{st}, nil
}

func (t webTransport) OpenCopyStream() (copyStream, error) { return nil, errNoCopyStreams }
func (t webTransport) SendDatagram(b []byte) error         { return t.sess.SendDatagram(b) }
func (t webTransport) DatagramsSupported() bool            { return true } // WebTransport requires them
func (t webTransport) RemoteAddr() net.Addr                { return t.sess.RemoteAddr() }
func (t webTransport) HandshakeComplete() <-chan struct{}  { return t.qc.HandshakeComplete() }
func (t webTransport) Done() <-chan struct{}               { return t.sess.Context().Done() }
func (t webTransport) ConnectionStats() quic.ConnectionStats {
	return t.qc.ConnectionStats()
}

func (t webTransport) CloseWithError(code stream.ErrCode, msg string) {
	t.sess.CloseWithError(webtransport.SessionErrorCode(code), msg)
}

type webStream struct{ *webtransport.Stream }

func (s webStream) CancelRead(code stream.ErrCode) {
	s.Stream.CancelRead(webtransport.StreamErrorCode(code))
}
func (s webStream) CancelWrite(code stream.ErrCode) {
	s.Stream.CancelWrite(webtransport.StreamErrorCode(code))
}
func (webStream) SetPriority(int8, bool) {}

// isStreamError reports a stream reset or stopped by the peer, on either
// transport.
func isStreamError(err error) bool {
	var qe *quic.StreamError
	var we *webtransport.StreamError
	return errors.As(err, &qe) || errors.As(err, &we)
}
