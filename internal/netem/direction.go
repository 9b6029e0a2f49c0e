package netem

import (
	"bytes"
	"container/heap"
	"context"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"
)

// DirStats counts the packets of one direction.
type DirStats struct {
	In              uint64 // received from the sender
	Out             uint64 // sent to the receiver, duplicates included
	DroppedLoss     uint64 // dropped by Link.Loss
	DroppedBlackout uint64 // dropped during a blackout, on arrival or when due
	DroppedQueue    uint64 // dropped by a full bandwidth queue or MaxDelayed
	Duplicated      uint64 // extra copies sent
	Reordered       uint64 // held back by Link.Reorder
	SendErrors      uint64 // failed sends: the server's port unreachable, a held packet's mapping expired
}

type dirCounters struct {
	in, out, loss, blackout, queue, duplicated, reordered, sendErrors atomic.Uint64
}

func (c *dirCounters) snapshot() DirStats {
	return DirStats{
		In: c.in.Load(), Out: c.out.Load(),
		DroppedLoss: c.loss.Load(), DroppedBlackout: c.blackout.Load(), DroppedQueue: c.queue.Load(),
		Duplicated: c.duplicated.Load(), Reordered: c.reordered.Load(), SendErrors: c.sendErrors.Load(),
	}
}

// direction impairs the packets flowing one way and delivers them, at once
// or from its scheduler goroutine (run) when they must be held.
type direction struct {
	r      *Relay
	uplink bool
	wake   chan struct{} // a packet became the earliest one held
	stats  dirCounters

	mu      sync.Mutex
	rng     *rand.Rand
	busy    time.Time // when the bandwidth-limited link has sent all it queued
	held    delayHeap
	nextSeq uint64
}

func newDirection(r *Relay, uplink bool, seed int64) *direction {
	stream := uint64(1)
	if uplink {
		stream = 0
	}
	return &direction{
		r:      r,
		uplink: uplink,
		wake:   make(chan struct{}, 1),
		rng:    rand.New(rand.NewPCG(uint64(seed), stream)),
	}
}

// handle impairs one packet from or to client m. b is only borrowed.
func (d *direction) handle(m *mapping, b []byte) {
	d.stats.in.Add(1)
	cfg := d.r.cfg.Load()
	l := &cfg.Downlink
	if d.uplink {
		l = &cfg.Uplink
	}
	now := time.Now()
	hold, dup, ok := d.admit(now, l, len(b))
	if !ok {
		return
	}
	if hold == 0 {
		d.send(m, b, dup)
		return
	}
	d.enqueue(now.Add(hold), m, bytes.Clone(b), dup, cfg.maxDelayed())
}

// admit decides a packet's fate: dropped (!ok), or held for hold and sent
// once or twice (dup).
func (d *direction) admit(now time.Time, l *Link, size int) (hold time.Duration, dup, ok bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	// Every packet draws the same four numbers whatever its fate, so the nth
	// packet's draws do not depend on what happened to the ones before it.
	loss, reorder, dupe, jitter := d.rng.Float64(), d.rng.Float64(), d.rng.Float64(), d.rng.Float64()
	switch {
	case d.r.blackedOut(now):
		d.stats.blackout.Add(1)
		return 0, false, false
	case loss < l.Loss:
		d.stats.loss.Add(1)
		return 0, false, false
	}
	hold = max(l.Delay+time.Duration((2*jitter-1)*float64(l.Jitter)), 0)
	if l.Bandwidth > 0 {
		if d.busy.Before(now) {
			d.busy = now
		}
		queued := int(int64(d.busy.Sub(now)) * int64(l.Bandwidth) / int64(time.Second))
		if queued+size > l.queueBytes() {
			d.stats.queue.Add(1)
			return 0, false, false
		}
		// The packet leaves once it and everything queued before it are on the wire.
		d.busy = d.busy.Add(time.Duration(int64(size) * int64(time.Second) / int64(l.Bandwidth)))
		hold += d.busy.Sub(now)
	}
	if reorder < l.Reorder {
		hold += l.reorderDelay()
		d.stats.reordered.Add(1)
	}
	return hold, dupe < l.Duplicate, true
}

// enqueue holds a packet until due, unless MaxDelayed are already held.
func (d *direction) enqueue(due time.Time, m *mapping, b []byte, dup bool, limit int) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.held.Len() >= limit {
		d.stats.queue.Add(1)
		return
	}
	d.nextSeq++
	p := &delayed{due: due, seq: d.nextSeq, m: m, b: b, dup: dup}
	heap.Push(&d.held, p)
	if d.held[0] == p {
		select {
		case d.wake <- struct{}{}:
		default:
		}
	}
}

// run sends held packets when they are due, until ctx ends.
func (d *direction) run(ctx context.Context) {
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	var due []*delayed
	for {
		now := time.Now()
		d.mu.Lock()
		for d.held.Len() > 0 && !d.held[0].due.After(now) {
			due = append(due, heap.Pop(&d.held).(*delayed))
		}
		if d.held.Len() > 0 {
			timer.Reset(d.held[0].due.Sub(now))
		}
		d.mu.Unlock()

		// A packet still in the network when a blackout starts is lost too.
		blackout := d.r.blackedOut(now)
		for i, p := range due {
			if blackout {
				d.stats.blackout.Add(1)
			} else {
				d.send(p.m, p.b, p.dup)
			}
			due[i] = nil
		}
		due = due[:0]

		select {
		case <-ctx.Done():
			return
		case <-d.wake:
		case <-timer.C:
		}
	}
}

func (d *direction) send(m *mapping, b []byte, dup bool) {
	d.write(m, b)
	if dup {
		d.stats.duplicated.Add(1)
		d.write(m, b)
	}
}

func (d *direction) write(m *mapping, b []byte) {
	var err error
	if d.uplink {
		// The mapping's current socket: a packet held across a rebind
		// leaves from the new port, as behind a NAT.
		_, err = m.conn.Load().Write(b)
	} else {
		_, err = d.r.lc.WriteToUDPAddrPort(b, m.client)
	}
	if err != nil {
		d.stats.sendErrors.Add(1)
		return
	}
	d.stats.out.Add(1)
}

// delayed is a held packet; seq keeps packets due at the same time in order.
type delayed struct {
	due time.Time
	seq uint64
	m   *mapping
	b   []byte
	dup bool
}

type delayHeap []*delayed

func (h delayHeap) Len() int { return len(h) }
func (h delayHeap) Less(i, j int) bool {
	if h[i].due.Equal(h[j].due) {
		return h[i].seq < h[j].seq
	}
	return h[i].due.Before(h[j].due)
}
func (h delayHeap) Swap(i, j int) { h[i], h[j] = h[j], h[i] }
func (h *delayHeap) Push(x any)   { *h = append(*h, x.(*delayed)) }
func (h *delayHeap) Pop() any {
	old := *h
	p := old[len(old)-1]
	old[len(old)-1] = nil
	*h = old[:len(old)-1]
	return p
}
