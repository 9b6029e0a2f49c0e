package server

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/quic-go/quic-go"
	"github.com/quic-go/quic-go/http3"

	"github.com/quicpush/quicpush/stream"
)

// ErrServerClosed is returned by Serve after Shutdown or Close.
var ErrServerClosed = errors.New("quicpush: server closed")

// Config configures a Server. Zero values mean the documented defaults.
type Config struct {
	// Store is the channel log. Required.
	Store Store
	// TLSConfig holds the server's certificate (Certificates or
	// GetCertificate). Required. The server uses a clone with NextProtos set.
	TLSConfig *tls.Config
	// Logger; nil means slog.Default().
	Logger *slog.Logger
	// Registerer receives the server's metrics (docs/OPERATIONS.md); nil
	// means prometheus.DefaultRegisterer. Each Server registers its own
	// collector and Close unregisters it, so Servers running side by side
	// need distinct Registerers (or prometheus.WrapRegistererWith labels).
	Registerer prometheus.Registerer
	// Authenticate decides who a Hello (or a token Refresh) is from. Nil
	// means dev mode: every client is accepted, its user being its token
	// ("anonymous" if empty).
	Authenticate func(ctx context.Context, ev HelloEvent) (HelloReply, error)
	// Authorize decides whether a user may subscribe or publish to a
	// channel; an error refuses with FORBIDDEN and its text. Nil: allowed.
	Authorize func(ctx context.Context, ev AuthorizeEvent) error

	// Heartbeat is the Ping interval told to clients. Zero: 15 s, short
	// enough to keep a phone's NAT mapping alive (often 30 s for UDP).
	Heartbeat time.Duration
	// IdleTimeout closes a connection that sent nothing. Zero: 3x Heartbeat,
	// so that a late heartbeat does not end a connection.
	IdleTimeout time.Duration
	// HelloTimeout bounds the wait for the client's Hello. Zero: 10 s.
	HelloTimeout time.Duration
	// HoleWait, MergeWindow, RepairBatch and AckDelay are told to clients in
	// Welcome. Zero: 50 ms, 20 ms, 1000 messages, 200 ms. A client acks
	// once it has been quiet for AckDelay, or 5 AckDelays after the first
	// ack it held (docs/PROTOCOL.md §5).
	HoleWait    time.Duration
	MergeWindow time.Duration
	RepairBatch int
	AckDelay    time.Duration
	// SendQueueBytes bounds the bytes queued for one connection beyond what
	// QUIC flow control takes; a connection over it is closed with
	// SLOW_CONSUMER and resumes after reconnecting. Zero: 4 MiB.
	SendQueueBytes int
	// MaxPublishesInFlight bounds a session's publishes awaiting the store.
	// Zero: 1024.
	MaxPublishesInFlight int
	// PublishRate and PublishBurst bound the publishes of one connection
	// (token bucket, both classes): a reliable publish over it gets
	// RATE_LIMITED with a retry hint, a droppable one is dropped (counted).
	// Zero: 1000/s with a burst of 2000; a negative rate: unlimited.
	PublishRate  float64
	PublishBurst int
	// ChannelLimits set droppable rates and notify mode by channel pattern.
	// Channels that match none get 200 droppable messages/s.
	ChannelLimits []ChannelLimit
	// NotifyAbove puts a channel in notify mode while it has more
	// subscribers than this on this server. Zero: 5000; negative: never.
	NotifyAbove int
	// BehindBytes is how much may wait for one session's stream before the
	// session stops being pushed reliable messages and pulls them instead.
	// Zero: 256 KiB.
	BehindBytes int
	// DroppableQueueBytes bounds the droppable pushes waiting for one
	// session's stream; beyond it the oldest are shed. Zero: 64 KiB.
	DroppableQueueBytes int
	// Sessions override the client parameters per business session name.
	Sessions map[string]SessionParams
	// Critical configures redundant delivery of critical messages.
	Critical CriticalConfig
	// Confirm configures per-recipient confirmation of reliable publishes.
	Confirm ConfirmConfig
	// Presence configures join/leave tracking and its merged updates.
	Presence PresenceConfig
	// InboxPageSize is the offline page size told to clients (Welcome), and
	// InboxMaxPageSize the largest page an InboxPull may ask for (more gets
	// BAD_PAGE_SIZE). Zero: 200 and 1000.
	InboxPageSize    int
	InboxMaxPageSize int
	// WebTransport lets browsers connect on the same UDP port (ALPN h3, at
	// WebTransportPath). Nil: browsers are refused.
	WebTransport *WebTransportConfig
	// CursorFlushInterval coalesces acknowledged cursors before they are
	// written to the store. Zero: 1 s.
	CursorFlushInterval time.Duration

	// StatelessResetKey and TokenGeneratorKey should be persisted, so a
	// restarted server resets old connections at once and accepts 0-RTT.
	StatelessResetKey *quic.StatelessResetKey
	TokenGeneratorKey *quic.TokenGeneratorKey
}

func (c Config) withDefaults() (Config, error) {
	if c.Store == nil {
		return c, errors.New("server: Config.Store is required")
	}
	if c.TLSConfig == nil {
		return c, errors.New("server: Config.TLSConfig is required")
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	if c.Registerer == nil {
		c.Registerer = prometheus.DefaultRegisterer
	}
	if c.Authenticate == nil {
		c.Authenticate = devAuthenticate
	}
	def := func(d *time.Duration, v time.Duration) {
		if *d <= 0 {
			*d = v
		}
	}
	def(&c.Heartbeat, 15*time.Second)
	def(&c.IdleTimeout, 3*c.Heartbeat)
	def(&c.HelloTimeout, 10*time.Second)
	def(&c.HoleWait, 50*time.Millisecond)
	def(&c.MergeWindow, 20*time.Millisecond)
	def(&c.AckDelay, 200*time.Millisecond)
	def(&c.CursorFlushInterval, time.Second)
	if c.RepairBatch <= 0 {
		c.RepairBatch = 1000
	}
	if c.SendQueueBytes <= 0 {
		c.SendQueueBytes = 4 << 20
	}
	if c.MaxPublishesInFlight <= 0 {
		c.MaxPublishesInFlight = 1024
	}
	if c.PublishRate == 0 {
		c.PublishRate = 1000
	}
	if c.PublishBurst <= 0 {
		c.PublishBurst = max(1, 2*int(c.PublishRate))
	}
	if c.InboxPageSize <= 0 {
		c.InboxPageSize = 200
	}
	if c.InboxMaxPageSize <= 0 {
		c.InboxMaxPageSize = max(1000, c.InboxPageSize)
	}
	if c.InboxPageSize > c.InboxMaxPageSize {
		return c, fmt.Errorf("server: InboxPageSize %d exceeds InboxMaxPageSize %d", c.InboxPageSize, c.InboxMaxPageSize)
	}
	if c.NotifyAbove == 0 {
		c.NotifyAbove = 5000
	}
	if c.BehindBytes <= 0 {
		c.BehindBytes = 256 << 10
	}
	if c.DroppableQueueBytes <= 0 {
		c.DroppableQueueBytes = 64 << 10
	}
	c.Critical = c.Critical.withDefaults()
	c.Confirm = c.Confirm.withDefaults()
	c.Presence = c.Presence.withDefaults()
	if err := channelLimits(c.ChannelLimits).validate(); err != nil {
		return c, err
	}
	if c.Heartbeat < time.Second || c.Heartbeat > 2*time.Minute {
		return c, fmt.Errorf("server: Heartbeat %v must be between 1s and 2m (what clients accept)", c.Heartbeat)
	}
	if c.IdleTimeout < 2*c.Heartbeat {
		return c, fmt.Errorf("server: IdleTimeout %v must be at least 2x Heartbeat %v", c.IdleTimeout, c.Heartbeat)
	}
	return c, nil
}

// Server serves quicpush over QUIC.
type Server struct {
	cfg      Config
	log      *slog.Logger
	hub      *hub
	cursors  *cursorWriter
	presence *presence
	confirms *confirms
	receipts *receipts
	counters counters
	metrics  *metrics
	stacks   *stackPool // runs the handshakes and the stream readers' frames (frames.go)

	ctx    context.Context // ends on Close
	cancel context.CancelFunc

	mu           sync.Mutex
	listeners    map[*quic.EarlyListener]struct{}
	transports   []*quic.Transport
	conns        map[*conn]struct{}
	web          *webServer // nil without Config.WebTransport
	shuttingDown bool
	closed       bool
	wg           sync.WaitGroup // every goroutine the server started
	stopWatch    func()
}

// New returns a Server; Serve starts serving.
func New(cfg Config) (*Server, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	s := &Server{
		cfg:       cfg,
		log:       cfg.Logger,
		ctx:       ctx,
		cancel:    cancel,
		listeners: map[*quic.EarlyListener]struct{}{},
		conns:     map[*conn]struct{}{},
	}
	s.stacks = newStackPool(ctx, &s.wg)
	if cfg.WebTransport != nil {
		s.web = newWebServer(s)
	}
	s.metrics = newMetrics(&s.counters, s.ConnCount)
	if err := cfg.Registerer.Register(s.metrics); err != nil {
		cancel()
		return nil, fmt.Errorf("server: registering metrics (each Server needs its own Config.Registerer): %w", err)
	}
	s.hub = newHub(cfg.Store, cfg.Logger, cfg.ChannelLimits, cfg.NotifyAbove, cfg.MergeWindow, s.metrics)
	s.hub.critical = cfg.Critical
	s.presence = newPresence(cfg.Presence, &s.metrics.presence)
	s.hub.presence = s.presence
	s.stopWatch = cfg.Store.Watch(s.hub.fanOut)
	s.cursors = newCursorWriter(cfg.Store, cfg.CursorFlushInterval, s.log)
	s.confirms = newConfirms(cfg.Confirm, &s.metrics.confirm, s.cursors)
	s.receipts = newReceipts(s)
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		s.cursors.run(ctx)
	}()
	return s, nil
}

func (s *Server) quicConfig() *quic.Config {
	return &quic.Config{
		HandshakeIdleTimeout:             s.cfg.HelloTimeout,
		MaxIdleTimeout:                   s.cfg.IdleTimeout,
		Allow0RTT:                        true,
		MaxIncomingStreams:               1000,
		MaxIncomingUniStreams:            s.maxIncomingUniStreams(),
		EnableDatagrams:                  true,
		EnableStreamResetPartialDelivery: true,
	}
}

func (s *Server) tlsConfig() *tls.Config {
	t := s.cfg.TLSConfig.Clone()
	t.NextProtos = []string{stream.ALPN}
	if s.cfg.WebTransport != nil {
		s.configureWebTLS(t)
	}
	if t.MinVersion < tls.VersionTLS13 {
		t.MinVersion = tls.VersionTLS13
	}
	return t
}

// ListenAndServe listens on the UDP address addr and serves; the socket is
// closed when Serve returns.
func (s *Server) ListenAndServe(addr string) error {
	pc, err := net.ListenPacket("udp", addr)
	if err != nil {
		return fmt.Errorf("server: listen on %s: %w", addr, err)
	}
	defer pc.Close()
	return s.Serve(pc)
}

// Listen starts listening on pc and returns the address; the accept loop
// runs until Shutdown or Close. Serve is Listen followed by a wait. The
// caller owns pc and closes it after Close.
func (s *Server) Listen(pc net.PacketConn) (net.Addr, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.shuttingDown || s.closed {
		return nil, ErrServerClosed
	}
	tr := &quic.Transport{Conn: pc, StatelessResetKey: s.cfg.StatelessResetKey, TokenGeneratorKey: s.cfg.TokenGeneratorKey}
	ln, err := tr.ListenEarly(s.tlsConfig(), s.quicConfig())
	if err != nil {
		return nil, fmt.Errorf("server: listen: %w", err)
	}
	s.transports = append(s.transports, tr)
	s.listeners[ln] = struct{}{}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		s.acceptLoop(ln)
	}()
	return ln.Addr(), nil
}

// Serve serves on pc until Shutdown or Close, then returns ErrServerClosed.
func (s *Server) Serve(pc net.PacketConn) error {
	if _, err := s.Listen(pc); err != nil {
		return err
	}
	<-s.ctx.Done()
	return ErrServerClosed
}

func (s *Server) acceptLoop(ln *quic.EarlyListener) {
	for {
		qc, err := ln.Accept(s.ctx)
		if err != nil {
			return
		}
		// Never block here: quic-go queues only 32 finished handshakes.
		s.metrics.connectionsAccepted.Add(1)
		if qc.ConnectionState().TLS.NegotiatedProtocol == http3.NextProtoH3 {
			s.serveHTTP3(qc)
			continue
		}
		c := newConn(s, quicTransport{qc})
		if !s.track(c) {
			qc.CloseWithError(quic.ApplicationErrorCode(stream.ShuttingDown), "server shutting down")
			continue
		}
		go func() {
			defer s.wg.Done()
			defer s.untrack(c)
			c.serve()
		}()
	}
}

func (s *Server) track(c *conn) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.shuttingDown || s.closed {
		return false
	}
	s.conns[c] = struct{}{}
	s.wg.Add(1)
	return true
}

func (s *Server) untrack(c *conn) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.conns, c)
}

// ConnCount returns the number of open connections.
func (s *Server) ConnCount() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.conns)
}

// Shutdown stops accepting connections, sends GOAWAY to every client, waits
// until they have gone or ctx ends, then closes what is left. The store is
// not closed: its owner closes it after Shutdown returns.
func (s *Server) Shutdown(ctx context.Context) error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.shuttingDown = true
	for ln := range s.listeners {
		ln.Close()
	}
	conns := make([]*conn, 0, len(s.conns))
	for c := range s.conns {
		conns = append(conns, c)
	}
	s.mu.Unlock()

	for _, c := range conns {
		c.goAway(stream.ShuttingDown, 500*time.Millisecond, "server shutting down")
	}
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for s.ConnCount() > 0 {
		select {
		case <-ctx.Done():
			s.Close()
			return ctx.Err()
		case <-tick.C:
		}
	}
	return s.Close()
}

// Close closes every connection at once and stops the server. It is safe to
// call more than once.
func (s *Server) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	for ln := range s.listeners {
		ln.Close()
	}
	for c := range s.conns {
		c.close(stream.ShuttingDown, "server closed")
	}
	s.mu.Unlock()
	s.stopWatch()
	s.cancel()
	s.closeHTTP3()
	s.wg.Wait()
	s.presence.close()
	s.confirms.close()
	s.cursors.flush(context.Background())
	for _, tr := range s.transports {
		tr.Close()
	}
	s.cfg.Registerer.Unregister(s.metrics)
	return nil
}
