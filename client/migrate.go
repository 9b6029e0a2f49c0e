package client

import (
	"context"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/quic-go/quic-go"

	"github.com/quicpush/quicpush/stream"
)

// maxMigrations is how many path switches one connection may make: quic-go
// v0.64.1 never retires a connection ID used on a switched path, and each
// side has only 3 to spare, so a third switch would block or stall. The
// client reconnects instead (and resumes with nothing lost).
const maxMigrations = 2

// network is a local UDP socket and the quic.Transport on it.
type network struct {
	udp *net.UDPConn
	tr  *quic.Transport
}

func openNetwork(localAddr string) (*network, error) {
	var laddr *net.UDPAddr
	if localAddr != "" {
		var err error
		if laddr, err = net.ResolveUDPAddr("udp", localAddr); err != nil {
			return nil, fmt.Errorf("client: local address %s: %w", localAddr, err)
		}
	}
	udp, err := net.ListenUDP("udp", laddr)
	if err != nil {
		return nil, fmt.Errorf("client: open UDP socket: %w", err)
	}
	return &network{udp: udp, tr: &quic.Transport{Conn: udp}}, nil
}

func (n *network) close() { n.tr.Close() }

// NetworkChange tells how the client followed a network change.
type NetworkChange struct {
	// Migrated is true when the connection moved to the new path (QUIC
	// connection migration); false when the client reconnected from the
	// new address instead (the migration failed or the connection had
	// used up its path changes) and resumed.
	Migrated bool
	From, To string // local addresses
	Err      error  // why the migration failed, when it did
}

// Stats are counters of the client's life, for apps and tests.
type Stats struct {
	Connects uint64 // connections established, the first included
	Used0RTT uint64 // of those, how many resumed a TLS session with 0-RTT
	// Migrations counts network changes (Migrate) that moved the connection;
	// MigrationFallbacks those that needed a new connection instead.
	Migrations         uint64
	MigrationFallbacks uint64
	LocalAddr          string // the current local address
	// Droppable messages: handed to handlers, shed by the server (told by
	// Shed), and missing (holes in droppable_seq: shed, or lost in the
	// network as datagrams).
	DroppableDelivered uint64
	DroppableShed      uint64
	DroppableMissing   uint64
	// Copies of critical messages: kept because they arrived first, or
	// dropped because the stream copy (or another) was first.
	CopiesFirst, CopiesWasted uint64
	// Pages counts offline pages pulled (InboxPull requests, each one round
	// trip) by paged subscriptions.
	Pages uint64
}

type counters struct {
	connects, used0RTT, migrations, fallbacks atomic.Uint64
	droppableDelivered, droppableShed         atomic.Uint64
	copiesFirst, copiesWasted                 atomic.Uint64
	pages                                     atomic.Uint64

	mu          sync.Mutex
	dropSeqs    map[string]*dropSeen // per channel, since its last subscribe
	missingDone uint64               // missing in earlier subscriptions
}

// dropSeen tracks a channel's droppable_seq: the first and highest seen and
// how many arrived, so that holes count once even when datagrams come out
// of order.
type dropSeen struct{ first, max, got uint64 }

func (d *dropSeen) missing() uint64 {
	if span := d.max + 1 - d.first; span > d.got {
		return span - d.got
	}
	return 0
}

// droppableBase starts counting channel's droppables after seq (from the
// server's Subscribed), unless counting has started already.
func (c *counters) droppableBase(channel string, seq uint64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.dropSeqs == nil {
		c.dropSeqs = map[string]*dropSeen{}
	}
	// Each subscribe starts a new count: the server's counter may have
	// started over meanwhile (a channel nobody else was subscribed to).
	if d := c.dropSeqs[channel]; d != nil {
		c.missingDone += d.missing()
	}
	c.dropSeqs[channel] = &dropSeen{first: seq + 1, max: seq}
}

func (c *counters) droppable(channel string, seq uint64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.dropSeqs == nil {
		c.dropSeqs = map[string]*dropSeen{}
	}
	d := c.dropSeqs[channel]
	if d == nil {
		// Numbering starts when the server first fans out to anyone, not to
		// us: count holes from the first one seen.
		d = &dropSeen{first: seq, max: seq}
		c.dropSeqs[channel] = d
	}
	d.first, d.max = min(d.first, seq), max(d.max, seq)
	d.got++
}

func (c *counters) missing() uint64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := c.missingDone
	for _, d := range c.dropSeqs {
		n += d.missing()
	}
	return n
}

// Stats returns the client's counters.
func (c *Client) Stats() Stats {
	c.mu.Lock()
	local := c.net.udp.LocalAddr().String()
	c.mu.Unlock()
	return Stats{
		Connects: c.stats.connects.Load(), Used0RTT: c.stats.used0RTT.Load(),
		Migrations: c.stats.migrations.Load(), MigrationFallbacks: c.stats.fallbacks.Load(),
		DroppableDelivered: c.stats.droppableDelivered.Load(), DroppableShed: c.stats.droppableShed.Load(),
		DroppableMissing: c.stats.missing(),
		CopiesFirst:      c.stats.copiesFirst.Load(), CopiesWasted: c.stats.copiesWasted.Load(),
		LocalAddr: local, Pages: c.stats.pages.Load(),
	}
}

// Migrate moves the client to a new local address ("127.0.0.2:0", a new
// interface's IP...), as on a switch from Wi-Fi to 4G. It tries QUIC
// connection migration (probe the new path, then switch to it); if that
// fails, or the connection has used up its path changes, it reconnects
// from the new address instead. Either way nothing is lost: a reconnect
// resumes every channel from its position.
func (c *Client) Migrate(ctx context.Context, localAddr string) error {
	nw, err := openNetwork(localAddr)
	if err != nil {
		return err
	}
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		nw.close()
		return ErrClosed
	}
	old, conn := c.net, c.cur
	c.net = nw // new connections dial from here
	c.mu.Unlock()
	change := NetworkChange{From: old.udp.LocalAddr().String(), To: nw.udp.LocalAddr().String()}

	if conn != nil {
		change.Err = c.switchPath(ctx, conn, nw)
		change.Migrated = change.Err == nil
	}
	if change.Migrated {
		c.stats.migrations.Add(1)
	} else {
		c.stats.fallbacks.Add(1)
		if conn != nil {
			conn.goAwayMs.Store(1) // reconnect at once, not after a backoff
			conn.close(stream.NoError, "network change")
		}
	}
	c.retire(old)
	if c.cfg.OnNetworkChange != nil {
		c.cfg.OnNetworkChange(change)
	}
	return nil
}

// switchPath migrates conn to nw, within its path-change budget.
func (c *Client) switchPath(ctx context.Context, conn *connection, nw *network) error {
	c.mu.Lock()
	if conn.migrations >= maxMigrations {
		c.mu.Unlock()
		return fmt.Errorf("client: connection used its %d path changes", maxMigrations)
	}
	conn.migrations++ // a failed attempt has consumed IDs too
	conn.nets = append(conn.nets, nw)
	c.mu.Unlock()
	path, err := conn.qc.AddPath(nw.tr)
	if err != nil {
		return fmt.Errorf("client: add path: %w", err)
	}
	ctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	if err := path.Probe(ctx); err != nil {
		path.Close()
		return fmt.Errorf("client: probe new path: %w", err)
	}
	if err := path.Switch(); err != nil {
		path.Close()
		return fmt.Errorf("client: switch path: %w", err)
	}
	return nil
}

// retire closes a network no connection needs any more.
func (c *Client) retire(nw *network) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if nw == c.net {
		return
	}
	if c.cur != nil {
		for _, used := range c.cur.nets {
			if used == nw {
				return // closed when that connection ends
			}
		}
	}
	nw.close()
}
