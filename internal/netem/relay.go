package netem

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"
)

// maxDatagram is the largest UDP payload, so the relay never truncates.
const maxDatagram = 64 << 10

var errClosed = fmt.Errorf("netem: relay closed: %w", net.ErrClosed)

// Relay is a lossy UDP relay between clients and one upstream server. Its
// methods are safe for concurrent use.
type Relay struct {
	cfg      atomic.Pointer[Config]
	updateMu sync.Mutex    // serialises Update
	resched  chan struct{} // a schedule period changed
	log      *slog.Logger
	lc       *net.UDPConn // clients send here
	upstream *net.UDPAddr
	up, down *direction

	blackoutUntil atomic.Int64 // unix nanoseconds
	rebinds       atomic.Uint64

	mu     sync.Mutex
	nat    map[netip.AddrPort]*mapping
	closed bool

	cancel context.CancelFunc
	wg     sync.WaitGroup
}

// mapping is a client's entry in the relay's NAT table.
type mapping struct {
	client   netip.AddrPort
	conn     atomic.Pointer[net.UDPConn] // connected to upstream; replaced on rebind
	lastSent atomic.Int64                // unix nanoseconds of the client's last packet
}

// Stats is a snapshot of a relay's counters.
type Stats struct {
	Uplink, Downlink DirStats
	Rebinds          uint64 // upstream sockets moved to a new port
	Mappings         int    // clients in the NAT table now
}

// Start listens on cfg.Listen and relays to cfg.Upstream until ctx ends or
// Close is called.
func Start(ctx context.Context, cfg Config) (*Relay, error) {
	c, err := cfg.populate()
	if err != nil {
		return nil, err
	}
	upstream, err := net.ResolveUDPAddr("udp", c.Upstream)
	if err != nil {
		return nil, fmt.Errorf("netem: upstream: %w", err)
	}
	listen, err := net.ResolveUDPAddr("udp", c.Listen)
	if err != nil {
		return nil, fmt.Errorf("netem: listen: %w", err)
	}
	lc, err := net.ListenUDP("udp", listen)
	if err != nil {
		return nil, fmt.Errorf("netem: %w", err)
	}
	ctx, cancel := context.WithCancel(ctx)
	r := &Relay{
		resched:  make(chan struct{}, 1),
		log:      c.Logger,
		lc:       lc,
		upstream: upstream,
		nat:      make(map[netip.AddrPort]*mapping),
		cancel:   cancel,
	}
	r.cfg.Store(&c)
	r.up = newDirection(r, true, c.Seed)
	r.down = newDirection(r, false, c.Seed)
	r.wg.Go(func() {
		<-ctx.Done()
		r.shutdown()
	})
	r.wg.Go(r.readClients)
	r.wg.Go(func() { r.up.run(ctx) })
	r.wg.Go(func() { r.down.run(ctx) })
	r.wg.Go(func() { r.runSchedules(ctx) })
	r.log.Info("netem: relay started", "listen", lc.LocalAddr(), "upstream", upstream, "seed", c.Seed)
	return r, nil
}

// Addr is the address clients send to.
func (r *Relay) Addr() net.Addr { return r.lc.LocalAddr() }

// Seed is the seed in use, to replay a run with Config.Seed.
func (r *Relay) Seed() int64 { return r.cfg.Load().Seed }

// Close stops the relay and waits for its goroutines. Held packets are
// discarded. Close is idempotent and always returns nil.
func (r *Relay) Close() error {
	r.cancel()
	r.wg.Wait()
	return nil
}

func (r *Relay) shutdown() {
	r.mu.Lock()
	r.closed = true
	for _, m := range r.nat {
		m.conn.Load().Close()
	}
	r.mu.Unlock()
	r.lc.Close()
}

// Update changes the configuration while the relay runs: fn edits a copy,
// which replaces the current one if valid. Packets already held keep their
// due time. Listen, Upstream, Seed and Logger cannot change.
func (r *Relay) Update(fn func(*Config)) error {
	r.updateMu.Lock()
	defer r.updateMu.Unlock()
	old := r.cfg.Load()
	c := *old
	fn(&c)
	if c.Listen != old.Listen || c.Upstream != old.Upstream || c.Seed != old.Seed || c.Logger != old.Logger {
		return errors.New("netem: Update cannot change Listen, Upstream, Seed or Logger")
	}
	if err := c.validate(); err != nil {
		return err
	}
	r.cfg.Store(&c)
	if c.RebindEvery != old.RebindEvery || c.BlackoutEvery != old.BlackoutEvery || c.MappingTimeout != old.MappingTimeout {
		select {
		case r.resched <- struct{}{}:
		default:
		}
	}
	return nil
}

// Heal makes both directions perfect wires, stops scheduled rebinds and
// blackouts, and ends the current blackout. Packets already held are still
// delivered when due.
func (r *Relay) Heal() {
	// Cannot fail: only impairments change, to valid zero values.
	_ = r.Update(func(c *Config) {
		c.Uplink, c.Downlink = Link{}, Link{}
		c.RebindEvery, c.BlackoutEvery, c.BlackoutFor = 0, 0, 0
	})
	r.Blackout(0)
}

// Blackout drops every packet in both directions from now for d, replacing
// any blackout in progress; d <= 0 ends it.
func (r *Relay) Blackout(d time.Duration) {
	r.blackoutUntil.Store(time.Now().Add(d).UnixNano())
	r.log.Debug("netem: blackout", "for", d)
}

func (r *Relay) blackedOut(now time.Time) bool {
	return now.UnixNano() < r.blackoutUntil.Load()
}

// Rebind moves every client's upstream socket to a new local port and closes
// the old one, so the server sees each client's address change and its
// packets to the old port are lost, as when a NAT mapping expires.
func (r *Relay) Rebind() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return errClosed
	}
	for _, m := range r.nat {
		if err := r.bindLocked(m); err != nil {
			return err
		}
		r.rebinds.Add(1)
	}
	return nil
}

// Stats returns the counters so far.
func (r *Relay) Stats() Stats {
	r.mu.Lock()
	n := len(r.nat)
	r.mu.Unlock()
	return Stats{
		Uplink:   r.up.stats.snapshot(),
		Downlink: r.down.stats.snapshot(),
		Rebinds:  r.rebinds.Load(),
		Mappings: n,
	}
}

// bindLocked gives m a fresh upstream socket and closes its previous one.
// The new socket is opened first, so its port differs from the old one.
func (r *Relay) bindLocked(m *mapping) error {
	c, err := net.DialUDP("udp", nil, r.upstream)
	if err != nil {
		return fmt.Errorf("netem: upstream socket: %w", err)
	}
	if old := m.conn.Swap(c); old != nil {
		old.Close()
	}
	r.log.Debug("netem: mapping", "client", m.client, "local", c.LocalAddr())
	r.wg.Go(func() { r.readUpstream(m, c) })
	return nil
}

// lookup returns the client's mapping, creating it on its first packet.
func (r *Relay) lookup(client netip.AddrPort) (*mapping, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return nil, errClosed
	}
	if m := r.nat[client]; m != nil {
		return m, nil
	}
	m := &mapping{client: client}
	if err := r.bindLocked(m); err != nil {
		return nil, err
	}
	r.nat[client] = m
	return m, nil
}

func (r *Relay) readClients() {
	buf := make([]byte, maxDatagram)
	for {
		n, from, err := r.lc.ReadFromUDPAddrPort(buf)
		if errors.Is(err, net.ErrClosed) {
			return
		}
		if err != nil {
			continue
		}
		m, err := r.lookup(from)
		if err != nil {
			r.log.Warn("netem: dropping a client's packet", "client", from, "err", err)
			continue
		}
		m.lastSent.Store(time.Now().UnixNano())
		r.up.handle(m, buf[:n])
	}
}

// readUpstream relays what the server sends to c until c is closed (on
// rebind, expiry or shutdown). A connected socket receives only from
// upstream, like a NAT that filters by endpoint.
func (r *Relay) readUpstream(m *mapping, c *net.UDPConn) {
	buf := make([]byte, maxDatagram)
	for {
		n, err := c.Read(buf)
		if errors.Is(err, net.ErrClosed) {
			return
		}
		if err != nil {
			continue // e.g. ECONNREFUSED while the server is down
		}
		r.down.handle(m, buf[:n])
	}
}

// runSchedules runs scheduled rebinds, blackouts and mapping expiry until
// ctx ends, restarting the periods whenever Update changes one.
func (r *Relay) runSchedules(ctx context.Context) {
	for {
		c := r.cfg.Load()
		rebind, stopRebind := tick(c.RebindEvery)
		blackout, stopBlackout := tick(c.BlackoutEvery)
		sweep, stopSweep := tick(c.mappingTimeout() / 2)
		done := r.followSchedules(ctx, rebind, blackout, sweep)
		stopRebind()
		stopBlackout()
		stopSweep()
		if done {
			return
		}
	}
}

// followSchedules serves the tickers until ctx ends (true) or a period
// changes (false).
func (r *Relay) followSchedules(ctx context.Context, rebind, blackout, sweep <-chan time.Time) bool {
	for {
		select {
		case <-ctx.Done():
			return true
		case <-r.resched:
			return false
		case <-rebind:
			if err := r.Rebind(); err != nil && !errors.Is(err, net.ErrClosed) {
				r.log.Warn("netem: scheduled rebind", "err", err)
			}
		case <-blackout:
			r.Blackout(r.cfg.Load().BlackoutFor)
		case now := <-sweep:
			r.expire(now.Add(-r.cfg.Load().mappingTimeout()))
		}
	}
}

// expire forgets the clients that have sent nothing since before.
func (r *Relay) expire(before time.Time) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for client, m := range r.nat {
		if m.lastSent.Load() < before.UnixNano() {
			delete(r.nat, client)
			m.conn.Load().Close()
			r.log.Debug("netem: mapping expired", "client", client)
		}
	}
}

// tick returns a ticker's channel and its stop function; for d <= 0 a nil
// channel, which never fires.
func tick(d time.Duration) (<-chan time.Time, func()) {
	if d <= 0 {
		return nil, func() {}
	}
	t := time.NewTicker(d)
	return t.C, t.Stop
}
