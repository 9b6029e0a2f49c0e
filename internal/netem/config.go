package netem

import (
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"time"
)

// Link describes what one direction does to the packets that cross it. The
// zero Link is a perfect wire. Probabilities are in [0, 1]; each one is drawn
// independently for every packet.
type Link struct {
	// Loss is the probability that a packet is dropped.
	Loss float64
	// Delay holds every packet this long. Jitter spreads the hold uniformly
	// over [Delay-Jitter, Delay+Jitter] (never below zero), so packets
	// overtake one another when Jitter exceeds their spacing.
	Delay, Jitter time.Duration
	// Reorder is the probability that a packet is held ReorderDelay longer
	// than the others (zero: 10 ms), so that the ones behind it overtake it.
	Reorder      float64
	ReorderDelay time.Duration
	// Duplicate is the probability that a packet is sent twice.
	Duplicate float64
	// Bandwidth caps the direction at this many bytes per second (zero:
	// unlimited). Packets wait in a FIFO shared by every client, as at a
	// router; a packet that would fill it beyond QueueBytes (zero: what the
	// link sends in 100 ms, at least 16 KiB) is dropped.
	Bandwidth  int
	QueueBytes int
}

func (l *Link) reorderDelay() time.Duration {
	if l.ReorderDelay == 0 {
		return 10 * time.Millisecond
	}
	return l.ReorderDelay
}

func (l *Link) queueBytes() int {
	if l.QueueBytes == 0 {
		return max(l.Bandwidth/10, 16<<10)
	}
	return l.QueueBytes
}

func (l *Link) validate(name string) error {
	for _, p := range []float64{l.Loss, l.Reorder, l.Duplicate} {
		if !(p >= 0 && p <= 1) { // also rejects NaN
			return fmt.Errorf("netem: %s: probability %v not in [0, 1]", name, p)
		}
	}
	if l.Delay < 0 || l.Jitter < 0 || l.ReorderDelay < 0 || l.Bandwidth < 0 || l.QueueBytes < 0 {
		return fmt.Errorf("netem: %s: negative delay, bandwidth or queue", name)
	}
	return nil
}

// Config configures a Relay. Uplink is client to server, Downlink server to
// client; for a symmetric network give both the same Link.
type Config struct {
	// Listen is the UDP address clients send to (zero: "127.0.0.1:0").
	Listen string
	// Upstream is the server's UDP address. Required.
	Upstream string

	Uplink, Downlink Link

	// Seed makes the random decisions replayable (zero: a random seed,
	// logged and returned by Relay.Seed). The uplink and the downlink each
	// draw from their own PCG stream.
	Seed int64

	// RebindEvery moves every client's upstream socket to a new port this
	// often, as when a NAT mapping times out (zero: never).
	RebindEvery time.Duration
	// BlackoutEvery starts a blackout of BlackoutFor in both directions this
	// often (zero: never); BlackoutFor must then be in (0, BlackoutEvery).
	BlackoutEvery, BlackoutFor time.Duration
	// MappingTimeout forgets a client that has sent nothing for this long
	// and closes its upstream socket (zero: 2 minutes, the least RFC 4787
	// allows; negative: never). Idle mappings are swept every half timeout.
	MappingTimeout time.Duration
	// MaxDelayed caps the packets held for delay or reordering in each
	// direction; beyond it packets are dropped (zero: 10000).
	MaxDelayed int

	// Logger receives the seed at start and debug events (zero: slog.Default()).
	Logger *slog.Logger
}

func (c *Config) mappingTimeout() time.Duration {
	if c.MappingTimeout == 0 {
		return 2 * time.Minute
	}
	return c.MappingTimeout
}

func (c *Config) maxDelayed() int {
	if c.MaxDelayed == 0 {
		return 10000
	}
	return c.MaxDelayed
}

// populate returns a copy of c with the fixed-at-start defaults filled in.
// Defaults that depend on fields Update may change are applied where used.
func (c Config) populate() (Config, error) {
	if c.Listen == "" {
		c.Listen = "127.0.0.1:0"
	}
	if c.Seed == 0 {
		c.Seed = rand.Int64()
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	return c, c.validate()
}

func (c *Config) validate() error {
	if c.Upstream == "" {
		return errors.New("netem: no Upstream address")
	}
	if err := c.Uplink.validate("Uplink"); err != nil {
		return err
	}
	if err := c.Downlink.validate("Downlink"); err != nil {
		return err
	}
	if c.RebindEvery < 0 || c.BlackoutEvery < 0 || c.BlackoutFor < 0 || c.MaxDelayed < 0 {
		return errors.New("netem: negative RebindEvery, BlackoutEvery, BlackoutFor or MaxDelayed")
	}
	if c.BlackoutEvery > 0 && (c.BlackoutFor == 0 || c.BlackoutFor >= c.BlackoutEvery) {
		return errors.New("netem: BlackoutFor must be in (0, BlackoutEvery)")
	}
	return nil
}
