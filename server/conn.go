package server

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"io"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/quic-go/quic-go"
	"golang.org/x/time/rate"

	"github.com/quicpush/quicpush/stream"
	pb "github.com/quicpush/quicpush/stream/quicpushpb"
)

// Stream priorities (RFC 9218 urgency, lower first): control frames go
// ahead of live pushes, and repairs never get in the way of either.
const (
	urgencyControl = 0
	urgencySession = 3
	urgencyRepair  = 6
)

// conn is one client connection: its control stream, its session streams
// and its repair streams.
type conn struct {
	s      *Server
	tr     transport
	id     string
	ctx    context.Context
	cancel context.CancelFunc
	budget *stream.Budget

	user    string
	hello   HelloEvent
	control atomic.Pointer[stream.Sender] // set once the hello is done
	// controlOut writes the control stream from its accept on: a refused
	// hello is told there on WebTransport (see closeWith).
	controlOut atomic.Pointer[stream.Sender]
	closing    atomic.Bool // the first close decides the code

	features   uint64        // negotiated in the hello
	redundancy redundancy    // copies of critical messages
	publishes  *rate.Limiter // nil: unlimited
	dgrams     chan dgram    // droppable pushes for the datagram writer
	dgramsOnce sync.Once

	authMu  sync.Mutex
	claims  any
	expires *time.Timer // closes the connection when the token expires

	remote        string // the client's address as last seen
	pathChanges   int    // how often it changed (NAT rebinding, migration)
	pathLimitSent bool

	slowConsumer atomic.Bool // closed with SLOW_CONSUMER

	// pulls bounds the repair and inbox-page streams served at once: each
	// holds a page of messages (up to 256 of 64 KiB) until the client reads
	// it, so a client opening many and reading none waits instead.
	pulls     chan struct{}
	goingAway atomic.Bool // sent GOAWAY: the client's goodbye is not a leave

	wg       sync.WaitGroup // the connection's stream goroutines
	mu       sync.Mutex
	sessions map[*session]struct{}
}

func newConn(s *Server, tr transport) *conn {
	var b [8]byte
	rand.Read(b[:])
	id := hex.EncodeToString(b[:])
	ctx, cancel := context.WithCancel(s.ctx)
	return &conn{
		s: s, tr: tr, id: id, ctx: ctx, cancel: cancel,
		budget:   stream.NewBudget(int64(s.cfg.SendQueueBytes)),
		sessions: map[*session]struct{}{},
		pulls:    make(chan struct{}, maxPulls),
	}
}

// maxPulls is how many repair and inbox-page streams of one connection are
// served at once.
const maxPulls = 8

// pull runs serve while holding one of the connection's pull slots.
func (c *conn) pull(serve func() error) error {
	select {
	case c.pulls <- struct{}{}:
	case <-c.ctx.Done():
		return nil
	}
	defer func() { <-c.pulls }()
	return serve()
}

// serve runs the connection until it ends.
func (c *conn) serve() {
	defer func() {
		c.closeWith(stream.NoError, "")
		c.setAuth(HelloReply{}) // stops the expiry timer
		c.cancel()
		c.wg.Wait()
		c.mu.Lock()
		for sess := range c.sessions {
			sess.unsubscribeAll()
		}
		c.mu.Unlock()
	}()
	// This goroutine then waits on the control stream for the connection's
	// life: the handshake's deep calls leave their stack elsewhere.
	var control bidiStream
	err := c.s.stacks.do(func() (err error) {
		control, err = c.handshake()
		return err
	})
	if err != nil {
		c.fail(err)
		return
	}
	c.s.metrics.controlStreams.Add(1)
	defer c.s.metrics.controlStreams.Add(-1)
	c.wg.Add(1)
	go c.acceptStreams()
	c.fail(readFrames(c.s.stacks, control, c.handleControl))
}

// logger is the server's logger with the connection's attributes, built
// when something is logged (rarely) rather than kept: a logger per
// connection holds about half a KiB.
func (c *conn) logger() *slog.Logger {
	l := c.s.log.With("conn", c.id, "remote", c.tr.RemoteAddr().String())
	if user := c.userName(); user != "" {
		l = l.With("user", user, "client", c.hello.ClientID, "device", c.hello.DeviceID)
	}
	return l
}

// debug logs at debug level: every connection does, at its start and end,
// so the logger is built only when that level is on.
func (c *conn) debug(msg string, args ...any) {
	if c.s.log.Enabled(c.s.ctx, slog.LevelDebug) {
		c.logger().Debug(msg, args...)
	}
}

// handshake reads the Hello on the control stream and answers Welcome; it
// returns the control stream.
func (c *conn) handshake() (bidiStream, error) {
	// Only the server's end cancels c.ctx before the handshake returns, and
	// a child of c.ctx would leave c.ctx a map of children for the rest of
	// the connection.
	ctx, cancel := context.WithTimeout(c.s.ctx, c.s.cfg.HelloTimeout)
	defer cancel()
	st, err := c.tr.AcceptStream(ctx)
	if err != nil {
		if ctx.Err() != nil && c.ctx.Err() == nil {
			return nil, stream.Errorf(stream.HelloTimeout, "no control stream within %v", c.s.cfg.HelloTimeout)
		}
		return nil, err
	}
	st.SetPriority(urgencyControl, false)
	control := stream.NewSender(st, c.budget, c.onSendError)
	c.controlOut.Store(control)
	st.SetReadDeadline(time.Now().Add(c.s.cfg.HelloTimeout))
	r := stream.NewReader(st, 0)
	f, err := r.ReadFrame()
	if err != nil {
		if errors.Is(err, context.DeadlineExceeded) || isTimeout(err) {
			return nil, stream.Errorf(stream.HelloTimeout, "no hello within %v", c.s.cfg.HelloTimeout)
		}
		return nil, err
	}
	st.SetReadDeadline(time.Time{})
	hello := f.GetHello()
	if hello == nil {
		return nil, stream.Errorf(stream.FrameUnexpected, "%s frame before hello: the control stream must start with hello", stream.Name(f))
	}
	if hello.Version != stream.Version {
		return nil, stream.Errorf(stream.VersionUnsupported, "protocol version %d not supported, this server speaks %d", hello.Version, stream.Version)
	}
	c.hello = HelloEvent{Token: hello.Token, ClientID: hello.ClientId, DeviceID: hello.DeviceId, RemoteAddr: c.tr.RemoteAddr()}
	reply, err := c.authenticate(ctx, c.hello)
	if err != nil {
		return nil, err
	}
	c.authMu.Lock()
	c.user = reply.User // under authMu for DisconnectUser and logger; set before any reader starts
	c.authMu.Unlock()
	c.setAuth(reply)
	c.control.Store(control)
	cfg := &c.s.cfg
	c.features = hello.Features & stream.Features
	if !c.tr.DatagramsSupported() {
		c.features &^= stream.FeatureDatagrams
	}
	if cfg.PublishRate > 0 {
		c.publishes = rate.NewLimiter(rate.Limit(cfg.PublishRate), cfg.PublishBurst)
	}
	// The burst is one second's budget: a copy larger than that never goes.
	c.redundancy.budget = rate.NewLimiter(rate.Limit(max(cfg.Critical.BudgetBytes, 0)), max(cfg.Critical.BudgetBytes, 0))
	err = control.SendFrames(&pb.Frame{Body: &pb.Frame_Welcome{Welcome: &pb.Welcome{
		Version: stream.Version, Minor: stream.MinorVersion, Features: c.features,
		ConnectionId: c.id, User: c.user,
		HeartbeatMs: ms(cfg.Heartbeat), HoleWaitMs: ms(cfg.HoleWait), MergeWindowMs: ms(cfg.MergeWindow),
		RepairBatch: uint32(cfg.RepairBatch), MaxFrameSize: stream.MaxFrameSize, AckDelayMs: ms(cfg.AckDelay),
		TokenExpiresUnixMs: unixMs(reply.ExpiresAt),
		InboxPageSize:      uint32(cfg.InboxPageSize), InboxMaxPageSize: uint32(cfg.InboxMaxPageSize),
	}}})
	if err != nil {
		return nil, err
	}
	c.remote = c.tr.RemoteAddr().String()
	c.debug("client connected")
	return st, nil
}

// handleControl handles a frame of the control stream after the hello.
func (c *conn) handleControl(f *pb.Frame) error {
	switch b := f.Body.(type) {
	case *pb.Frame_Refresh:
		return c.refresh(b.Refresh.Token)
	case *pb.Frame_Ping:
		c.checkPath(int(b.Ping.PathChanges))
		return c.control.Load().SendFrames(&pb.Frame{Body: &pb.Frame_Pong{Pong: &pb.Pong{Id: b.Ping.Id}}})
	default:
		return stream.Unexpected(f, "on the control stream")
	}
}

// authenticate runs Config.Authenticate and checks its answer.
func (c *conn) authenticate(ctx context.Context, ev HelloEvent) (HelloReply, error) {
	reply, err := c.s.cfg.Authenticate(ctx, ev)
	if err != nil {
		return reply, stream.Errorf(stream.Unauthorized, "%v", err)
	}
	if reply.User == "" || len(reply.User) > stream.MaxIDLen {
		return reply, stream.Errorf(stream.Unauthorized, "user name must be 1 to %d bytes (in dev mode the token is the user name)", stream.MaxIDLen)
	}
	if !reply.ExpiresAt.IsZero() && !time.Now().Before(reply.ExpiresAt) {
		return reply, stream.Errorf(stream.Unauthorized, "token expired at %s", reply.ExpiresAt.UTC().Format(time.RFC3339))
	}
	return reply, nil
}

// setAuth keeps the claims and arms the expiry of the token.
func (c *conn) setAuth(reply HelloReply) {
	c.authMu.Lock()
	defer c.authMu.Unlock()
	c.claims = reply.Claims
	if c.expires != nil {
		c.expires.Stop()
		c.expires = nil
	}
	if !reply.ExpiresAt.IsZero() {
		c.expires = time.AfterFunc(time.Until(reply.ExpiresAt), func() {
			c.logger().Info("token expired: closing")
			c.closeWith(stream.Unauthorized, "token expired: connect again with a new token")
		})
	}
}

// refresh replaces the connection's token. A refused token is answered
// with an Error and changes nothing: the old one holds until it expires.
func (c *conn) refresh(token string) error {
	ev := c.hello
	ev.Token, ev.Refresh = token, true
	reply, err := c.authenticate(c.ctx, ev)
	if err == nil && reply.User != c.user {
		err = stream.Errorf(stream.Unauthorized, "the new token is for user %q, this connection is %q's", reply.User, c.user)
	}
	control := c.control.Load()
	if err != nil {
		c.s.metrics.refreshesRefused.Add(1)
		return control.SendFrames(err.(*stream.Error).Frame())
	}
	c.s.metrics.refreshesOK.Add(1)
	c.setAuth(reply)
	return control.SendFrames(&pb.Frame{Body: &pb.Frame_Refreshed{Refreshed: &pb.Refreshed{TokenExpiresUnixMs: unixMs(reply.ExpiresAt)}}})
}

// userName is the connection's user ("" before the hello), for callers
// outside the connection's goroutines.
func (c *conn) userName() string {
	c.authMu.Lock()
	defer c.authMu.Unlock()
	return c.user
}

// authorize asks Config.Authorize; nil when allowed.
func (c *conn) authorize(action Action, channel string, droppable bool) *stream.Error {
	if c.s.cfg.Authorize == nil {
		return nil
	}
	c.authMu.Lock()
	claims := c.claims
	c.authMu.Unlock()
	err := c.s.cfg.Authorize(c.ctx, AuthorizeEvent{User: c.user, Claims: claims, Action: action, Channel: channel, Droppable: droppable})
	if err != nil {
		return stream.Errorf(stream.Forbidden, "%s %s: %v", action, channel, err)
	}
	return nil
}

// dgram is a droppable push for the datagram writer.
type dgram struct {
	sess     *session
	channel  string
	body     []byte // the Frame, for the datagram
	frame    []byte // with its length prefix, for the stream if it does not fit
	critical bool   // a copy of a critical reliable push
}

// sendDatagram hands a droppable push to the connection's datagram writer
// if the client takes datagrams; false means "use the stream". A full
// writer queue sheds the push (quic-go's own queue blocks at 32, so the
// writer must never fall far behind). Called with sess.outMu held.
func (c *conn) sendDatagram(sess *session, channel string, body, frame []byte, critical bool) bool {
	if c.features&stream.FeatureDatagrams == 0 {
		return false
	}
	c.dgramsOnce.Do(func() {
		c.dgrams = make(chan dgram, 32)
		c.wg.Add(1)
		go func() {
			defer c.wg.Done()
			c.writeDatagrams()
		}()
	})
	if c.ctx.Err() != nil {
		c.dropDatagram(dgram{critical: critical}) // the writer is gone
		return true
	}
	select {
	case c.dgrams <- dgram{sess, channel, body, frame, critical}:
	default:
		if critical {
			c.s.counters.copiesFailed.Add(1) // the stream copy still goes
			return true
		}
		sess.out.shedOne(channel)
		c.s.counters.droppableShed.Add(1)
	}
	return true
}

// writeDatagrams sends queued droppable pushes as datagrams, one at a time;
// one too large for the path (the limit shrinks after a path change) goes
// on its session's stream instead.
func (c *conn) writeDatagrams() {
	defer func() {
		// The connection is gone: what waits here is shed with it.
		for {
			select {
			case d := <-c.dgrams:
				c.dropDatagram(d)
			default:
				return
			}
		}
	}()
	for {
		select {
		case <-c.ctx.Done():
			return
		case d := <-c.dgrams:
			err := c.tr.SendDatagram(d.body)
			var tooLarge *quic.DatagramTooLargeError
			switch {
			case err == nil && d.critical:
				c.s.counters.copiesDatagram.Add(1)
			case err == nil:
				c.s.counters.datagramsOut.Add(1)
				c.s.counters.droppableOut.Add(1)
			case errors.As(err, &tooLarge) && d.critical:
				c.copyOnStream(d.frame)
			case errors.As(err, &tooLarge):
				d.sess.outMu.Lock()
				d.sess.queueDroppable(d.channel, d.frame) // behind what waits already
				if d.sess.send.Idle() {
					d.sess.flushOutbox()
				}
				d.sess.outMu.Unlock()
			default:
				c.dropDatagram(d)
				return // the connection is closing
			}
		}
	}
}

// dropDatagram counts a datagram that will never be sent.
func (c *conn) dropDatagram(d dgram) {
	if d.critical {
		c.s.counters.copiesFailed.Add(1)
	} else {
		c.s.counters.droppableShed.Add(1)
	}
}

func unixMs(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixMilli()
}

// maxPathChanges is how many times a connection may change its path:
// quic-go v0.64.1 never retires a connection ID used on a switched path, so
// a third change would exhaust the IDs and stall the connection.
const maxPathChanges = 2

// checkPath counts changes of the client's address, sampled whenever the
// client sends its heartbeat, and takes the client's own count of its
// migrations when that is higher (two quick hops look like one to a
// sampler). After the last change the connection can afford, the client is
// asked to reconnect soon, while it still can.
func (c *conn) checkPath(clientCount int) {
	before := c.pathChanges
	if addr := c.tr.RemoteAddr().String(); addr != c.remote {
		c.pathChanges++
		c.logger().Info("client address changed", "from", c.remote, "to", addr, "changes", c.pathChanges)
		c.remote = addr
	}
	if clientCount > c.pathChanges {
		c.pathChanges = clientCount
	}
	c.s.metrics.pathChanges.Add(uint64(c.pathChanges - before))
	if c.pathChanges >= maxPathChanges && !c.pathLimitSent {
		c.pathLimitSent = true
		c.goAway(stream.PathLimit, 0, "path changes used up: reconnect")
	}
}

func (c *conn) acceptStreams() {
	defer c.wg.Done()
	for {
		st, err := c.tr.AcceptStream(c.ctx)
		if err != nil {
			return
		}
		c.wg.Add(1)
		go c.serveStream(st)
	}
}

// serveStream serves a client-opened stream until it ends. Its first frame
// says what it is: a session, which reads frames for as long as the client
// keeps it, or a request, served at once.
func (c *conn) serveStream(st bidiStream) {
	defer c.wg.Done()
	var sess *session
	err := readFrames(c.s.stacks, st, func(f *pb.Frame) error {
		if sess != nil {
			return sess.handle(f)
		}
		var err error
		sess, err = c.openStream(st, f)
		return err
	})
	if req, ok := err.(request); ok {
		err = c.serveRequest(st, req.f)
	}
	switch {
	case sess != nil && err == io.EOF:
		sess.end() // the client ended the session: so do we
		err = nil
	case err == io.EOF:
		err = nil
	}
	if sess != nil {
		c.closeSession(sess)
	}
	if isStreamError(err) {
		// The client reset this stream: it ends alone.
		st.CancelWrite(stream.NoError)
	} else {
		c.fail(err)
	}
}

// request ends readFrames on a request stream's first frame: the stream's
// own goroutine serves it, as it ends with the stream (a pool worker would
// be held while the stream's goroutine waits for it).
type request struct{ f *pb.Frame }

func (request) Error() string { return "request stream" }

// openStream dispatches a stream on its first frame: it opens a session,
// or returns the request to serve.
func (c *conn) openStream(st bidiStream, f *pb.Frame) (*session, error) {
	switch b := f.Body.(type) {
	case *pb.Frame_SessionOpen:
		return c.openSession(st, b.SessionOpen.Name), nil
	case *pb.Frame_RepairRequest, *pb.Frame_InboxPull, *pb.Frame_InboxCountRequest:
		return nil, request{f}
	default:
		return nil, stream.Unexpected(f, "as the first frame of a stream (want session_open, repair_request, inbox_pull or inbox_count_request)")
	}
}

// serveRequest answers a request stream's first frame and closes the stream.
func (c *conn) serveRequest(st bidiStream, f *pb.Frame) error {
	switch b := f.Body.(type) {
	case *pb.Frame_RepairRequest:
		return c.pull(func() error { return c.serveRepair(st, b.RepairRequest) })
	case *pb.Frame_InboxPull:
		return c.pull(func() error { return c.serveInboxPull(st, b.InboxPull) })
	default:
		return c.serveInboxCount(st, f.GetInboxCountRequest())
	}
}

func (c *conn) openSession(st bidiStream, name string) *session {
	st.SetPriority(urgencySession, true)
	sess := newSession(c, st, name)
	if p, ok := c.s.cfg.Sessions[name]; ok {
		// Before any other frame of the session: its channels use these.
		sess.sendOrFail(mustFrame(&pb.Frame{Body: &pb.Frame_SessionOpened{SessionOpened: &pb.SessionOpened{
			HoleWaitMs: ms(p.HoleWait), MergeWindowMs: ms(p.MergeWindow), RepairBatch: uint32(max(p.RepairBatch, 0)),
		}}}))
	}
	c.mu.Lock()
	c.sessions[sess] = struct{}{}
	c.mu.Unlock()
	c.s.metrics.sessions.Add(1)
	return sess
}

func (c *conn) closeSession(sess *session) {
	sess.unsubscribeAll()
	c.mu.Lock()
	delete(c.sessions, sess)
	c.mu.Unlock()
	c.s.metrics.sessions.Add(-1)
}

// fail ends the connection for err: a protocol error is reported to the
// client with its code; a closed stream or connection needs no report.
func (c *conn) fail(err error) {
	if err == nil || err == io.EOF {
		return
	}
	var pe *stream.Error
	if errors.As(err, &pe) && !pe.Remote {
		c.logger().Info("closing connection", "code", pe.Code, "reason", pe.Message)
		c.closeWith(pe.Code, pe.Message)
		return
	}
	if errors.Is(err, stream.ErrQueueFull) {
		// Every send over the budget lands here until the close is done:
		// count and log the connection once.
		if c.slowConsumer.CompareAndSwap(false, true) {
			c.s.counters.slowConsumers.Add(1)
			c.logger().Warn("closing slow consumer", "queued", c.budget.Used())
		}
		c.closeWith(stream.SlowConsumer, "send queue full")
		return
	}
	c.debug("connection ended", "err", err)
	c.closeWith(stream.NoError, "")
}

func (c *conn) onSendError(err error) { c.fail(err) }

// closeWith closes the connection; the first close's code is the one the
// client gets. Browsers lose a WebTransport session's close code
// (webtransport-go v0.13.0 resets the streams ahead of the close capsule,
// quic-go/webtransport-go#242), so there the code is first told as an Error
// frame at the end of the control stream, and the session closed once the
// client has closed it or after a second.
func (c *conn) closeWith(code stream.ErrCode, msg string) {
	if !c.closing.CompareAndSwap(false, true) {
		return
	}
	control := c.controlOut.Load()
	if _, web := c.tr.(webTransport); !web || code == stream.NoError || control == nil {
		c.tr.CloseWithError(code, msg)
		return
	}
	control.SendFrames(stream.Errorf(code, "%s", msg).Frame())
	control.Close()
	c.s.wg.Add(1)
	go func() {
		defer c.s.wg.Done()
		select {
		case <-c.tr.Done():
		case <-time.After(time.Second):
		}
		c.tr.CloseWithError(code, msg)
	}()
}

func (c *conn) close(code stream.ErrCode, msg string) { c.closeWith(code, msg) }

// goAway asks the client to reconnect elsewhere or later.
func (c *conn) goAway(code stream.ErrCode, after time.Duration, msg string) {
	control := c.control.Load()
	if control == nil {
		c.closeWith(code, msg)
		return
	}
	c.s.metrics.goAway(code)
	c.goingAway.Store(true)
	control.SendFrames(&pb.Frame{Body: &pb.Frame_GoAway{GoAway: &pb.GoAway{
		Code: pb.ErrorCode(code), ReconnectAfterMs: ms(after), Message: msg,
	}}})
}

func ms(d time.Duration) uint32 { return uint32(d / time.Millisecond) }

func isTimeout(err error) bool {
	var t interface{ Timeout() bool }
	return errors.As(err, &t) && t.Timeout()
}
