package client

import (
	"context"
	crand "crypto/rand"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"sync"
	"time"

	"github.com/quic-go/quic-go"

	"github.com/quicpush/quicpush/stream"
	pb "github.com/quicpush/quicpush/stream/quicpushpb"
)

// ErrClosed is returned by calls on a closed Client.
var ErrClosed = fmt.Errorf("client: closed: %w", net.ErrClosed)

// ErrNotSent is returned by a droppable Publish whose connection broke
// before the server acknowledged it: droppable messages are never sent
// twice, so it may or may not have gone out.
var ErrNotSent = errors.New("client: droppable message not acknowledged before the connection broke")

// Config configures a Client. Zero values mean the documented defaults.
type Config struct {
	// TLSConfig: RootCAs (or InsecureSkipVerify for tests), ServerName.
	// Nil means the system roots. The client sets NextProtos itself.
	TLSConfig *tls.Config
	// Token is sent in the hello; ClientID and DeviceID name this client in
	// the server's logs. Zero DeviceID: a random one per Client.
	Token string
	// TokenSource, if set, gives the token instead of Token: for every
	// hello, and before the current token expires (the server tells when),
	// to refresh it on the open connection without reconnecting.
	TokenSource func(ctx context.Context) (string, error)
	ClientID    string
	DeviceID    string
	// State persists handled positions. Nil: a MemoryStore.
	State PositionStore
	// Logger; nil means slog.Default().
	Logger *slog.Logger
	// DialTimeout bounds one connection attempt. Zero: 5 s.
	DialTimeout time.Duration
	// ReconnectMin and ReconnectMax bound the jittered exponential backoff
	// between reconnection attempts. Zero: 100 ms and 10 s.
	ReconnectMin time.Duration
	ReconnectMax time.Duration
	// BufferLimit bounds the early arrivals kept per channel while a hole
	// before them is repaired; later ones are dropped and repaired too.
	// Zero: 10000.
	BufferLimit int
	// OnState, if set, is called on every connection state change.
	OnState func(State)
	// OnNetworkChange, if set, is called after every Migrate with how the
	// connection moved.
	OnNetworkChange func(NetworkChange)
}

// State is the client's connection state.
type State int

const (
	Connecting State = iota
	Connected
	Closed
)

func (s State) String() string {
	return [...]string{"connecting", "connected", "closed"}[s]
}

// Local limits on what the server may ask for in Welcome.
var (
	heartbeatLimits   = [2]time.Duration{time.Second, 2 * time.Minute}
	holeWaitLimits    = [2]time.Duration{time.Millisecond, 5 * time.Second}
	mergeWindowLimits = [2]time.Duration{0, time.Second}
	ackDelayLimits    = [2]time.Duration{time.Millisecond, 5 * time.Second}
	repairBatchLimits = [2]int{16, 10000}
)

// params are the server-given parameters, clamped to the local limits.
type params struct {
	heartbeat, holeWait, mergeWindow, ackDelay time.Duration
	repairBatch                                int
	inboxPage, inboxMaxPage                    int // offline page size, and the largest the server takes
}

func defaultParams() params {
	return params{heartbeat: 15 * time.Second, holeWait: 50 * time.Millisecond, mergeWindow: 20 * time.Millisecond, ackDelay: 200 * time.Millisecond, repairBatch: 1000,
		inboxPage: 200, inboxMaxPage: 1000}
}

func clampDur(ms uint32, def time.Duration, lim [2]time.Duration) time.Duration {
	if ms == 0 {
		return def
	}
	return min(max(time.Duration(ms)*time.Millisecond, lim[0]), lim[1])
}

// override applies a session's own parameters, clamped the same way.
func (p params) override(o *pb.SessionOpened) params {
	p.holeWait = clampDur(o.HoleWaitMs, p.holeWait, holeWaitLimits)
	p.mergeWindow = clampDur(o.MergeWindowMs, p.mergeWindow, mergeWindowLimits)
	if o.RepairBatch > 0 {
		p.repairBatch = min(max(int(o.RepairBatch), repairBatchLimits[0]), repairBatchLimits[1])
	}
	return p
}

func paramsFrom(w *pb.Welcome) params {
	d := defaultParams()
	p := params{
		heartbeat:   clampDur(w.HeartbeatMs, d.heartbeat, heartbeatLimits),
		holeWait:    clampDur(w.HoleWaitMs, d.holeWait, holeWaitLimits),
		mergeWindow: clampDur(w.MergeWindowMs, d.mergeWindow, mergeWindowLimits),
		ackDelay:    clampDur(w.AckDelayMs, d.ackDelay, ackDelayLimits),
		repairBatch: d.repairBatch,
	}
	p.inboxPage, p.inboxMaxPage = inboxPageSizes(w, d)
	if w.RepairBatch > 0 {
		p.repairBatch = min(max(int(w.RepairBatch), repairBatchLimits[0]), repairBatchLimits[1])
	}
	return p
}

// Client is a quicpush client: one QUIC connection, re-established with
// backoff whenever it breaks, carrying the control stream, one stream per
// Session and short-lived repair streams. It is safe for concurrent use.
type Client struct {
	cfg  Config
	addr net.Addr
	log  *slog.Logger
	tls  *tls.Config

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	stats counters

	mu       sync.Mutex
	err      error       // why the client stopped, when the server refused it
	net      *network    // where new connections are dialed from
	cur      *connection // nil while disconnected
	ready    chan struct{}
	sessions map[string]*Session
	owners   map[string]string // subscribed channel -> its session
	closed   bool
}

// Dial connects to the server at addr ("host:port") and returns once the
// first connection is established, or with the error that prevented it.
// After that the Client reconnects by itself until Close.
func Dial(ctx context.Context, addr string, cfg Config) (*Client, error) {
	cfg = cfg.withDefaults()
	raddr, err := net.ResolveUDPAddr("udp", addr)
	if err != nil {
		return nil, fmt.Errorf("client: resolve %s: %w", addr, err)
	}
	nw, err := openNetwork("")
	if err != nil {
		return nil, err
	}
	host, _, _ := net.SplitHostPort(addr)
	t := cfg.TLSConfig.Clone()
	t.NextProtos = []string{stream.ALPN}
	if t.ServerName == "" {
		t.ServerName = host
	}
	if t.ClientSessionCache == nil {
		t.ClientSessionCache = tls.NewLRUClientSessionCache(4)
	}
	cctx, cancel := context.WithCancel(context.Background())
	c := &Client{
		cfg: cfg, addr: raddr, log: cfg.Logger, net: nw, tls: t,
		ctx: cctx, cancel: cancel, ready: make(chan struct{}), sessions: map[string]*Session{}, owners: map[string]string{},
	}
	conn, err := c.connect(ctx, cfg.DialTimeout)
	if err != nil {
		cancel()
		nw.close()
		return nil, err
	}
	c.attach(conn)
	c.wg.Add(1)
	go func() {
		defer c.wg.Done()
		c.run(conn)
	}()
	return c, nil
}

func (cfg Config) withDefaults() Config {
	if cfg.TLSConfig == nil {
		cfg.TLSConfig = &tls.Config{}
	}
	if cfg.DeviceID == "" {
		var b [8]byte
		crand.Read(b[:])
		cfg.DeviceID = hex.EncodeToString(b[:])
	}
	if cfg.State == nil {
		cfg.State = NewMemoryStore()
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.DialTimeout <= 0 {
		cfg.DialTimeout = 5 * time.Second
	}
	if cfg.ReconnectMin <= 0 {
		cfg.ReconnectMin = 100 * time.Millisecond
	}
	if cfg.ReconnectMax <= 0 {
		cfg.ReconnectMax = 10 * time.Second
	}
	if cfg.BufferLimit <= 0 {
		cfg.BufferLimit = 10000
	}
	return cfg
}

// closeGrace bounds how long Close waits for the server to take the last
// acknowledgements; goAwayGrace the same when the server asked us to go.
const (
	closeGrace  = time.Second
	goAwayGrace = 500 * time.Millisecond
)

// goodbye ends every session stream on conn (last acks, then FIN) and
// waits, at most grace, for the server to end its side: closing the
// connection at once would drop acks still in flight.
func (c *Client) goodbye(conn *connection, grace time.Duration) {
	c.mu.Lock()
	sessions := make([]*Session, 0, len(c.sessions))
	for _, s := range c.sessions {
		sessions = append(sessions, s)
	}
	c.mu.Unlock()
	deadline := time.After(grace)
	var finished []<-chan struct{}
	for _, s := range sessions {
		finished = append(finished, s.finish(conn))
	}
	for _, f := range finished {
		select {
		case <-f:
		case <-deadline:
		}
	}
}

// attemptCache is the session cache as one connection attempt sees it.
// crypto/tls drops the ticket whenever a resumed handshake fails, to get rid
// of a bad ticket; an attempt that ran out of time (a blackout, a server
// restarting) says nothing about the ticket, so it does not drop it, and
// the next attempt still resumes with 0-RTT. Its deadline is checked, not
// only its context: quic-go's handshake timer (as long, started a little
// later) can fire before the context's own timer has run.
type attemptCache struct {
	tls.ClientSessionCache
	ctx context.Context
}

func (a attemptCache) Put(key string, cs *tls.ClientSessionState) {
	if cs == nil && (a.ctx.Err() != nil || a.pastDeadline()) {
		return
	}
	a.ClientSessionCache.Put(key, cs)
}

func (a attemptCache) pastDeadline() bool {
	deadline, ok := a.ctx.Deadline()
	return ok && !time.Now().Before(deadline)
}

// firstAttempt bounds the first reconnection attempt; each next one may
// take twice as long, up to DialTimeout.
const firstAttempt = 500 * time.Millisecond

// stableAfter is how long a connection must last for the backoff to start
// again from ReconnectMin: a server that accepts and at once drops clients
// must not get them back in a tight loop.
const stableAfter = 10 * time.Second

// run keeps the client connected: it waits for the connection to end, then
// reconnects with jittered exponential backoff (or after the server's
// GOAWAY hint) and resumes every session. It stops for good when the server
// refuses the client with a terminal code (an invalid token, a protocol
// version it does not speak).
func (c *Client) run(conn *connection) {
	backoff := c.cfg.ReconnectMin
	for {
		began := time.Now()
		<-conn.done
		c.detach(conn)
		if err := conn.terminalError(); err != nil && !c.renewable(err) {
			c.stop(err)
			return
		}
		wait := backoff
		if hint := conn.reconnectHint(); hint > 0 {
			// The server asked us to move (GOAWAY): not a failure.
			wait, backoff = hint, c.cfg.ReconnectMin
		} else if time.Since(began) >= stableAfter {
			backoff = c.cfg.ReconnectMin
		}
		// Short attempts first: an attempt whose first packets fell into a
		// blackout waits for QUIC's doubling handshake timer, while a fresh
		// attempt sends at once. Longer ones follow, for slow, lossy paths.
		attempt := min(firstAttempt, c.cfg.DialTimeout)
		for {
			// Jitter between half and all of the wait: thousands of clients
			// coming back at once spread out, and none comes back too early.
			select {
			case <-c.ctx.Done():
				return
			case <-time.After(wait/2 + rand.N(wait/2+1)):
			}
			var err error
			conn, err = c.connect(c.ctx, attempt)
			attempt = min(2*attempt, c.cfg.DialTimeout)
			backoff = min(2*backoff, c.cfg.ReconnectMax)
			if err == nil {
				if !c.attach(conn) {
					return // closed meanwhile
				}
				break
			}
			if code, ok := stream.CodeOf(err); ok && code.Terminal() && !c.renewable(err) {
				c.stop(err)
				return
			}
			if c.ctx.Err() != nil {
				return // closed meanwhile
			}
			c.log.Warn("reconnect failed", "err", err, "retry_in", backoff)
			wait = backoff
		}
	}
}

// renewable reports whether a refusal may pass with a new token: the
// TokenSource is asked again on every hello.
func (c *Client) renewable(err error) bool {
	code, _ := stream.CodeOf(err)
	return code == stream.Unauthorized && c.cfg.TokenSource != nil
}

// stop ends the client after a terminal refusal: every waiting call
// returns err (see Err).
func (c *Client) stop(err error) {
	c.log.Error("the server refused this client: not reconnecting", "err", err)
	c.mu.Lock()
	c.err = err
	c.mu.Unlock()
	c.cancel()
	c.notify(Closed)
}

// Err returns why the client stopped on its own (a terminal refusal by the
// server), or nil.
func (c *Client) Err() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.err
}

func (c *Client) closedErr() error {
	if err := c.Err(); err != nil {
		return err
	}
	return ErrClosed
}

// attach makes conn current and resumes every session on it.
// attach makes conn the current connection and resumes the sessions on
// it. Once the Client is closed it closes conn instead and returns false: a
// reconnect that succeeded while Close ran, after Close looked for the
// current connection, would otherwise stay open with nobody to close it,
// and Close would wait for its goroutines forever.
func (c *Client) attach(conn *connection) bool {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		conn.close(stream.NoError, "client closed")
		return false
	}
	c.stats.connects.Add(1)
	if conn.qc.ConnectionState().Used0RTT {
		c.stats.used0RTT.Add(1)
	}
	c.cur = conn
	sessions := make([]*Session, 0, len(c.sessions))
	for _, s := range c.sessions {
		sessions = append(sessions, s)
	}
	close(c.ready)
	c.mu.Unlock()
	for _, s := range sessions {
		s.resume(conn)
	}
	c.notify(Connected)
	return true
}

func (c *Client) detach(conn *connection) {
	c.mu.Lock()
	if c.cur == conn {
		c.cur = nil
		c.ready = make(chan struct{})
	}
	for _, nw := range conn.nets {
		if nw != c.net {
			nw.close()
		}
	}
	sessions := make([]*Session, 0, len(c.sessions))
	for _, s := range c.sessions {
		sessions = append(sessions, s)
	}
	closed := c.closed
	c.mu.Unlock()
	for _, s := range sessions {
		s.detach(conn)
	}
	if !closed {
		c.notify(Connecting)
	}
}

func (c *Client) notify(s State) {
	if c.cfg.OnState != nil {
		c.cfg.OnState(s)
	}
}

// claim reserves channel for one subscription of this client: positions
// are kept per channel, so a channel is subscribed once per client.
func (c *Client) claim(channel, session string) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if owner, ok := c.owners[channel]; ok {
		return fmt.Errorf("client: %s is already subscribed (in session %s); a channel is subscribed once per client", channel, owner)
	}
	c.owners[channel] = session
	return nil
}

// subscription returns the channel's subscription, whichever session has
// it (a channel is subscribed once per client), or nil.
func (c *Client) subscription(channel string) *channel {
	c.mu.Lock()
	s := c.sessions[c.owners[channel]]
	c.mu.Unlock()
	if s == nil {
		return nil
	}
	return s.channel(channel)
}

func (c *Client) release(channel string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	delete(c.owners, channel)
}

// token returns the token for a hello.
func (c *Client) token(ctx context.Context) (string, error) {
	if c.cfg.TokenSource == nil {
		return c.cfg.Token, nil
	}
	token, err := c.cfg.TokenSource(ctx)
	if err != nil {
		return "", fmt.Errorf("client: token source: %w", err)
	}
	return token, nil
}

// goTracked runs f on a goroutine that Close waits for.
func (c *Client) goTracked(f func()) {
	c.wg.Add(1)
	go func() {
		defer c.wg.Done()
		f()
	}()
}

// current returns the connection, waiting for one up to ctx.
func (c *Client) current(ctx context.Context) (*connection, error) {
	for {
		c.mu.Lock()
		conn, ready, closed := c.cur, c.ready, c.closed
		c.mu.Unlock()
		if closed {
			return nil, ErrClosed
		}
		if conn != nil {
			return conn, nil
		}
		select {
		case <-ready:
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-c.ctx.Done():
			return nil, c.closedErr()
		}
	}
}

// Session returns the business session called name ("classroom", "chat"...),
// opening its stream on first use. Every session has its own stream, so one
// busy session never holds up another.
func (c *Client) Session(name string) *Session {
	c.mu.Lock()
	s := c.sessions[name]
	if s == nil {
		s = newSession(c, name)
		c.sessions[name] = s
	}
	conn := c.cur
	c.mu.Unlock()
	if conn != nil {
		s.resume(conn)
	}
	return s
}

// Close closes the connection and stops reconnecting. Positions already
// handled stay saved in the PositionStore; handlers are not interrupted.
func (c *Client) Close() error {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return nil
	}
	c.closed = true
	conn := c.cur
	sessions := make([]*Session, 0, len(c.sessions))
	for _, s := range c.sessions {
		sessions = append(sessions, s)
	}
	c.mu.Unlock()
	for _, s := range sessions {
		s.close() // lets running handlers finish; stops hole timers, so no repair starts after Wait
	}
	if conn != nil {
		c.goodbye(conn, closeGrace)
		conn.close(stream.NoError, "client closed")
	}
	c.cancel()
	c.wg.Wait()
	c.notify(Closed)
	c.mu.Lock()
	defer c.mu.Unlock()
	c.net.close()
	return nil
}

// connect dials, sends the hello and waits for the welcome.
func (c *Client) connect(ctx context.Context, timeout time.Duration) (*connection, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	c.mu.Lock()
	nw := c.net
	c.mu.Unlock()
	tlsConf := c.tls.Clone()
	tlsConf.ClientSessionCache = attemptCache{c.tls.ClientSessionCache, ctx}
	qc, err := nw.tr.DialEarly(ctx, c.addr, tlsConf, &quic.Config{
		HandshakeIdleTimeout:  timeout,
		MaxIdleTimeout:        2 * heartbeatLimits[1],
		MaxIncomingStreams:    -1,   // the server opens no streams
		EnableDatagrams:       true, // droppable pushes and critical copies
		MaxIncomingUniStreams: 100,  // critical copies that do not fit a datagram
	})
	if err != nil {
		return nil, fmt.Errorf("client: connect to %s: %w", c.addr, err)
	}
	conn, err := newConnection(ctx, c, qc, nw)
	if errors.Is(err, quic.Err0RTTRejected) {
		// The server forgot our ticket (new keys): go on in 1-RTT and say
		// hello there.
		if qc, err = qc.NextConnection(ctx); err == nil {
			conn, err = newConnection(ctx, c, qc, nw)
		}
	}
	if err != nil {
		qc.CloseWithError(0, "")
		var pe *stream.Error
		if errors.As(err, &pe) {
			return nil, fmt.Errorf("client: server %s refused the connection: %w", c.addr, err)
		}
		return nil, fmt.Errorf("client: hello to %s: %w", c.addr, err)
	}
	return conn, nil
}
