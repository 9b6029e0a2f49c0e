package client

import (
	"bufio"
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"time"

	"github.com/quic-go/quic-go"

	"github.com/quicpush/quicpush/stream"
	pb "github.com/quicpush/quicpush/stream/quicpushpb"
)

// connection is one QUIC connection and its control stream.
type connection struct {
	c  *Client
	qc *quic.Conn
	// nets are the networks (UDP socket + quic.Transport) this connection
	// has used: closing one of them would destroy the connection, so they
	// are closed when it ends (but for the client's current one).
	nets       []*network
	migrations int // path switches so far; guarded by Client.mu
	params     params
	user       string
	control    *stream.Sender

	done      chan struct{} // closed when the connection has ended
	closeOnce sync.Once
	goAwayMs  atomic.Uint32
	lastPong  atomic.Int64 // unix nanos
	features  uint64       // both sides have these
	refreshes chan int64   // token expiries (unix ms) from Welcome and Refreshed
}

func newConnection(ctx context.Context, c *Client, qc *quic.Conn, nw *network) (*connection, error) {
	// Streams are opened only once the handshake is complete: in quic-go
	// v0.64.1 opening one while a 0-RTT handshake is still running races
	// with the handshake (quic-go issue #4303). The session is still
	// resumed (no certificate round trip), but the hello waits for the
	// handshake instead of riding in the first flight.
	select {
	case <-qc.HandshakeComplete():
	case <-qc.Context().Done():
		return nil, context.Cause(qc.Context())
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	st, err := qc.OpenStreamSync(ctx)
	if err != nil {
		return nil, err
	}
	st.SetPriority(0, false)
	conn := &connection{c: c, qc: qc, nets: []*network{nw}, done: make(chan struct{})}
	conn.control = stream.NewSender(st, nil, func(error) { conn.close(stream.NoError, "") })
	token, err := c.token(ctx)
	if err != nil {
		return nil, err
	}
	err = conn.control.SendFrames(&pb.Frame{Body: &pb.Frame_Hello{Hello: &pb.Hello{
		Version: stream.Version, Minor: stream.MinorVersion, Features: stream.Features,
		Token: token, ClientId: c.cfg.ClientID, DeviceId: c.cfg.DeviceID,
	}}})
	if err != nil {
		return nil, err
	}
	r := stream.NewReader(bufio.NewReader(st), 0)
	type result struct {
		f   *pb.Frame
		err error
	}
	first := make(chan result, 1)
	go func() {
		f, err := r.ReadFrame()
		first <- result{f, err}
	}()
	var res result
	select {
	case res = <-first:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	if res.err != nil {
		if code, ok := stream.CodeOf(res.err); ok {
			var ae *quic.ApplicationError
			msg := ""
			if errors.As(res.err, &ae) {
				msg = ae.ErrorMessage
			}
			return nil, &stream.Error{Remote: true, Code: code, Message: msg}
		}
		return nil, res.err
	}
	w := res.f.GetWelcome()
	if w == nil {
		return nil, stream.Errorf(stream.FrameUnexpected, "%s frame instead of welcome", stream.Name(res.f))
	}
	conn.params = paramsFrom(w)
	conn.user = w.User
	conn.features = w.Features
	conn.refreshes = make(chan int64, 1)
	conn.refreshes <- w.TokenExpiresUnixMs
	conn.lastPong.Store(time.Now().UnixNano())
	c.goTracked(func() { conn.readControl(r) })
	c.goTracked(conn.heartbeat)
	c.goTracked(conn.refreshToken)
	if conn.features&stream.FeatureDatagrams != 0 {
		c.goTracked(conn.readDatagrams)
	}
	if conn.features&stream.FeatureCriticalCopies != 0 {
		c.goTracked(conn.readCopies)
	}
	c.goTracked(func() {
		<-qc.Context().Done()
		conn.closeOnce.Do(func() { close(conn.done) })
	})
	return conn, nil
}

func (conn *connection) readControl(r *stream.Reader) {
	for {
		f, err := r.ReadFrame()
		if err != nil {
			conn.close(stream.NoError, "")
			return
		}
		switch b := f.Body.(type) {
		case *pb.Frame_Pong:
			conn.lastPong.Store(time.Now().UnixNano())
		case *pb.Frame_GoAway:
			conn.c.log.Info("server asked to reconnect", "code", stream.ErrCode(b.GoAway.Code), "after_ms", b.GoAway.ReconnectAfterMs, "msg", b.GoAway.Message)
			conn.goAwayMs.Store(max(1, b.GoAway.ReconnectAfterMs))
			conn.c.goodbye(conn, goAwayGrace)
			conn.close(stream.NoError, "going away")
			return
		case *pb.Frame_Refreshed:
			select {
			case conn.refreshes <- b.Refreshed.TokenExpiresUnixMs:
			default:
			}
		case *pb.Frame_Error:
			conn.c.log.Warn("server error", "err", stream.FromFrame(b.Error))
		default:
			conn.close(stream.FrameUnexpected, stream.Name(f)+" frame on the control stream")
			return
		}
	}
}

// heartbeat sends a Ping every interval; a connection with no Pong for two
// and a half intervals is stalled (a NAT rebinding, a dead path) and is replaced.
// The padding makes the packet large enough for a restarted server to
// answer with a stateless reset.
func (conn *connection) heartbeat() {
	every := conn.params.heartbeat
	t := time.NewTicker(every)
	defer t.Stop()
	padding := make([]byte, 64)
	for id := uint64(1); ; id++ {
		select {
		case <-conn.done:
			return
		case <-t.C:
		}
		if time.Since(time.Unix(0, conn.lastPong.Load())) > 2*every+every/2 {
			conn.c.log.Warn("heartbeat timeout: reconnecting")
			conn.close(stream.HeartbeatTimeout, "no pong")
			return
		}
		conn.c.mu.Lock()
		migrations := conn.migrations
		conn.c.mu.Unlock()
		ping := &pb.Ping{Id: id, Padding: padding, PathChanges: uint32(migrations)}
		if err := conn.control.SendFrames(&pb.Frame{Body: &pb.Frame_Ping{Ping: ping}}); err != nil {
			conn.close(stream.NoError, "")
			return
		}
	}
}

// terminalError returns the server's reason for closing the connection
// when it says reconnecting cannot help.
func (conn *connection) terminalError() error {
	err := context.Cause(conn.qc.Context())
	var ae *quic.ApplicationError
	if errors.As(err, &ae) && ae.Remote && stream.ErrCode(ae.ErrorCode).Terminal() {
		return &stream.Error{Remote: true, Code: stream.ErrCode(ae.ErrorCode), Message: ae.ErrorMessage}
	}
	return nil
}

// refreshToken hands the server a fresh token from Config.TokenSource
// before the current one expires (at four fifths of its remaining life),
// so a long-lived connection is never cut for an expired token. A refused
// or failed refresh is tried again until the expiry.
func (conn *connection) refreshToken() {
	if conn.c.cfg.TokenSource == nil || conn.features&stream.FeatureTokenRefresh == 0 {
		return
	}
	var expires time.Time
	for {
		due := false
		var wake <-chan time.Time
		if !expires.IsZero() {
			timer := time.NewTimer(max(time.Until(expires)*4/5, time.Second))
			wake = timer.C
			select {
			case <-conn.done:
			case ms := <-conn.refreshes:
				expires = expiry(ms)
			case <-wake:
				due = true
			}
			timer.Stop()
		} else {
			select {
			case <-conn.done:
			case ms := <-conn.refreshes:
				expires = expiry(ms)
			}
		}
		if !conn.alive() {
			return
		}
		if !due {
			continue
		}
		ctx, cancel := context.WithTimeout(conn.c.ctx, 10*time.Second)
		token, err := conn.c.cfg.TokenSource(ctx)
		cancel()
		if err != nil {
			conn.c.log.Warn("cannot get a fresh token", "err", err)
			continue
		}
		conn.control.SendFrames(&pb.Frame{Body: &pb.Frame_Refresh{Refresh: &pb.Refresh{Token: token}}})
	}
}

// readDatagrams takes droppable pushes that came as datagrams (one Frame
// each) and hands them to the channel's subscription.
func (conn *connection) readDatagrams() {
	for {
		b, err := conn.qc.ReceiveDatagram(conn.qc.Context())
		if err != nil {
			return
		}
		f, err := stream.DecodeFrame(b)
		if err != nil {
			conn.close(stream.FrameMalformed, "undecodable datagram")
			return
		}
		p := f.GetPush()
		if p == nil || (p.Class != pb.Class_CLASS_DROPPABLE && !p.Critical) {
			conn.close(stream.FrameUnexpected, "a datagram must hold a droppable or critical push")
			return
		}
		conn.deliverDatagram(p)
	}
}

func (conn *connection) deliverDatagram(p *pb.Push) {
	ch := conn.c.subscription(p.Channel)
	switch {
	case ch == nil:
	case p.Critical && p.Class == pb.Class_CLASS_RELIABLE:
		ch.onCopy(p)
	default:
		ch.onPush(p, false)
	}
}

// readCopies takes copies of critical pushes that came on unidirectional
// streams of their own (one Push each).
func (conn *connection) readCopies() {
	for {
		st, err := conn.qc.AcceptUniStream(conn.qc.Context())
		if err != nil {
			return
		}
		st.SetReadDeadline(time.Now().Add(10 * time.Second))
		f, err := stream.NewReader(st, 0).ReadFrame()
		st.CancelRead(0)
		if p := f.GetPush(); err == nil && p != nil && p.Critical {
			conn.deliverDatagram(p)
		}
	}
}

func expiry(unixMs int64) time.Time {
	if unixMs <= 0 {
		return time.Time{}
	}
	return time.UnixMilli(unixMs)
}

func (conn *connection) reconnectHint() time.Duration {
	return time.Duration(conn.goAwayMs.Load()) * time.Millisecond
}

func (conn *connection) close(code stream.ErrCode, msg string) {
	conn.qc.CloseWithError(quic.ApplicationErrorCode(code), msg)
	conn.closeOnce.Do(func() { close(conn.done) })
}

func (conn *connection) alive() bool {
	select {
	case <-conn.done:
		return false
	default:
		return true
	}
}
