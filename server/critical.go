package server

import (
	"path"
	"sync"
	"time"

	"golang.org/x/time/rate"

	"github.com/quicpush/quicpush/stream"
)

// Redundant delivery of critical messages ("stop exercise", "quiz starts
// now"). A critical reliable message goes on the session stream as usual,
// and a copy goes on an independent path: a datagram when the client takes
// them and it fits, else a unidirectional stream of its own. A lost packet
// then delays neither copy behind the other, and the client keeps whichever
// arrives first (by seq, in order). Copies cost bytes, so a connection
// sends them only while it sees loss (or always, if configured), and
// within a byte budget per second.

// CriticalConfig configures redundant delivery.
type CriticalConfig struct {
	// Channels whose every message is critical (path.Match patterns), in
	// addition to publishes marked critical.
	Channels []string
	// Always sends copies whatever the loss; otherwise a connection sends
	// them from when its packet loss reaches LossOn until it falls below
	// LossOff (measured over about a second). Zero: 2% and 1%.
	Always          bool
	LossOn, LossOff float64
	// BudgetBytes bounds the copy bytes per second per connection (beyond
	// it no copies, counted). Zero: 32 KiB/s; negative: no copies at all.
	BudgetBytes int
}

func (c CriticalConfig) withDefaults() CriticalConfig {
	if c.LossOn <= 0 {
		c.LossOn = 0.02
	}
	if c.LossOff <= 0 || c.LossOff > c.LossOn {
		c.LossOff = c.LossOn / 2
	}
	if c.BudgetBytes == 0 {
		c.BudgetBytes = 32 << 10
	}
	return c
}

func (c CriticalConfig) channel(name string) bool {
	for _, p := range c.Channels {
		if ok, _ := path.Match(p, name); ok {
			return true
		}
	}
	return false
}

// redundancy is a connection's copy state.
type redundancy struct {
	mu         sync.Mutex
	on         bool
	sampledAt  time.Time
	sent, lost uint64
	budget     *rate.Limiter
}

// lossSample is how often the loss is measured.
const lossSample = time.Second

// wantsCopies decides, from the connection's loss with hysteresis, whether
// critical messages get a copy now.
func (c *conn) wantsCopies() bool {
	cfg := &c.s.cfg.Critical
	if cfg.BudgetBytes < 0 || c.features&stream.FeatureCriticalCopies == 0 {
		return false
	}
	if cfg.Always {
		return true
	}
	r := &c.redundancy
	r.mu.Lock()
	defer r.mu.Unlock()
	if now := time.Now(); now.Sub(r.sampledAt) >= lossSample {
		st := c.tr.ConnectionStats()
		if sent := st.PacketsSent - r.sent; sent > 0 {
			loss := float64(st.PacketsLost-r.lost) / float64(sent)
			switch {
			case !r.on && loss >= cfg.LossOn:
				r.on = true
			case r.on && loss < cfg.LossOff:
				r.on = false
			}
		}
		r.sampledAt, r.sent, r.lost = now, st.PacketsSent, st.PacketsLost
	}
	return r.on
}

// copyCritical sends a copy of a critical push (body: the Frame; frame:
// the same with its length prefix) if the connection wants copies and the
// budget allows. Called under the hub channel's lock: never blocks.
func (c *conn) copyCritical(sess *session, channel string, body, frame []byte) {
	if !c.wantsCopies() {
		return
	}
	if !c.redundancy.budget.AllowN(time.Now(), len(body)) {
		c.s.counters.copiesOverBudget.Add(1)
		return
	}
	c.s.counters.copyBytes.Add(uint64(len(body)))
	if c.features&stream.FeatureDatagrams != 0 && len(body) <= maxDatagramGuess {
		sess.outMu.Lock()
		c.sendDatagram(sess, channel, body, frame, true)
		sess.outMu.Unlock()
		return
	}
	c.copyOnStream(frame)
}

// maxDatagramGuess is below the smallest datagram a QUIC path carries; a
// larger copy goes on a stream at once rather than failing as a datagram.
const maxDatagramGuess = 1100

// copyOnStream sends a copy on a unidirectional stream of its own, ahead of
// everything else.
func (c *conn) copyOnStream(frame []byte) {
	st, err := c.tr.OpenCopyStream()
	if err != nil {
		c.s.counters.copiesFailed.Add(1)
		return
	}
	st.SetPriority(urgencyControl, false)
	if err := st.TryWriteAll(frame); err != nil {
		st.CancelWrite(stream.NoError)
		c.s.counters.copiesFailed.Add(1)
		return
	}
	st.Close()
	c.s.counters.copiesStream.Add(1)
}
