package client

import (
	"sync"
	"time"

	pb "github.com/quicpush/quicpush/stream/quicpushpb"
)

// channel is the reliability state machine of one subscription: the epoch,
// the highest seq queued for the handler, the highest seq known to exist,
// a bounded buffer of early arrivals, and the hole timer that turns a
// missing seq into a repair request.
//
// Every field below mu is guarded by it; the handler runs on the channel's
// own goroutine, never under mu. Lock order: Session.mu before channel.mu.
type channel struct {
	s       *Session
	name    string
	h       Handler
	onGap   func(Gap) error
	onShed  func(Shed)
	onError func(error)
	// Paged subscriptions (inbox.go): fetch replaces repair streams, and
	// onWaiting is told the backlog after each Subscribed.
	fetch     func(ch *channel, conn *connection, epoch, from, to uint64)
	onWaiting func(Waiting)
	progress  chan struct{} // signalled when the handler finished a position
	observe   bool          // never acknowledge (SubscribeOptions.Observe)

	mu         sync.Mutex
	saves      uint64   // items with a position enqueued for the handler
	savesDone  uint64   // of those, how many the handler has finished
	handled    Position // the last position saved (and acknowledged)
	epoch      uint64
	queued     uint64 // highest seq queued for the handler, or skipped by a gap
	head       uint64 // highest seq known to exist
	havePos    bool   // queued is a real position (saved, or given by Since)
	buf        map[uint64]Message
	live       *connection // the connection Subscribed arrived on; nil when none
	params     params      // the session's parameters on live
	repairing  bool
	repairFrom uint64 // the first seq the repair in flight asked for
	holeTimer  *time.Timer
	ready      []item
	closed     bool

	wake chan struct{}
	stop chan struct{}
	done chan struct{}
}

// item is a message or a gap to hand to the application, and the position
// to save once it has been.
type item struct {
	msg     Message
	gap     *Gap
	shed    *Shed
	save    Position // with hasSave: to save once handled (not for a droppable, a shed notice, a count)
	hasSave bool
	waiting *Waiting
}

func newChannel(s *Session, name string, h Handler, opts SubscribeOptions) *channel {
	ch := &channel{
		s: s, name: name, h: h, onGap: opts.OnGap, onShed: opts.OnShed, onError: opts.OnError, buf: map[uint64]Message{},
		wake: make(chan struct{}, 1), stop: make(chan struct{}), done: make(chan struct{}),
		onWaiting: opts.OnWaiting, progress: make(chan struct{}, 1), observe: opts.Observe,
	}
	if opts.Paged {
		ch.fetch = (*channel).pullPages
	}
	go ch.deliver()
	return ch
}

// subscribeFrame says where this channel should start on a (new) connection.
func (ch *channel) subscribeFrame(requestID uint64) *pb.Frame {
	ch.mu.Lock()
	defer ch.mu.Unlock()
	sub := &pb.Subscribe{RequestId: requestID, Channel: ch.name}
	if ch.havePos || ch.epoch != 0 {
		sub.Start, sub.Epoch, sub.After = pb.Start_START_AFTER, ch.epoch, ch.queued
	}
	return &pb.Frame{Body: &pb.Frame_Subscribe{Subscribe: sub}}
}

func (ch *channel) onSubscribed(conn *connection, p params, sub *pb.Subscribed) {
	ch.mu.Lock()
	defer ch.mu.Unlock()
	if sub.Reset_ {
		gap := Gap{Channel: ch.name, Epoch: ch.epoch, From: ch.queued + 1, Reason: GapReset}
		if ch.head > ch.queued {
			gap.To = ch.head
		}
		ch.epoch, ch.queued, ch.head, ch.buf = sub.Epoch, sub.StartAfter, sub.Head, map[uint64]Message{}
		ch.enqueue(item{gap: &gap, save: Position{Epoch: sub.Epoch, Seq: sub.StartAfter}, hasSave: true})
	} else {
		if ch.epoch == 0 {
			ch.epoch = sub.Epoch
		}
		if !ch.havePos {
			ch.queued = sub.StartAfter
			ch.pruneBuf()
		}
		ch.head = max(ch.head, sub.Head)
	}
	ch.havePos = true
	ch.live, ch.params = conn, p
	if ch.onWaiting != nil {
		ch.enqueue(item{waiting: &Waiting{Channel: ch.name, Epoch: ch.epoch, Head: sub.Head, FirstRetained: sub.FirstRetained,
			After: ch.queued, Count: sub.Head - min(sub.Head, max(ch.queued, sub.FirstRetained-1)), PageSize: p.inboxPage}})
	}
	ch.s.c.stats.droppableBase(ch.name, sub.DroppableSeq)
	ch.skipExpired(sub.FirstRetained)
	ch.evaluate(true)
}

// skipExpired moves past the seqs before firstRetained: the ones still
// buffered are handed over, each run of missing ones is reported as an
// expired gap.
func (ch *channel) skipExpired(firstRetained uint64) {
	to := min(firstRetained-1, ch.head)
	for ch.queued < to {
		if _, ok := ch.buf[ch.queued+1]; ok {
			before := ch.queued
			ch.drain()
			if ch.queued == before {
				return // the handler queue is full: the next repair goes on
			}
			continue
		}
		end := ch.queued + 1
		for end < to {
			if _, ok := ch.buf[end+1]; ok {
				break
			}
			end++
		}
		gap := Gap{Channel: ch.name, Epoch: ch.epoch, From: ch.queued + 1, To: end, Reason: GapExpired}
		ch.queued = end
		ch.enqueue(item{gap: &gap, save: Position{Epoch: ch.epoch, Seq: end}, hasSave: true})
	}
	ch.drain()
}

// onPush takes a message from the live push or a repair.
// It reports whether the push was new (not a duplicate, not dropped).
func (ch *channel) onPush(p *pb.Push, repaired bool) (fresh bool) {
	ch.mu.Lock()
	defer ch.mu.Unlock()
	if ch.closed {
		return false
	}
	if p.Class == pb.Class_CLASS_DROPPABLE {
		// Never repaired and never waited for: a hole in droppable_seq is
		// only counted (shed by the server, told by Shed, or lost).
		ch.s.c.stats.droppable(ch.name, p.DroppableSeq)
		if len(ch.ready) >= ch.s.c.cfg.BufferLimit {
			return false // the handler is behind: thinned here too (counted as missing)
		}
		ch.enqueue(item{msg: copyMessage(ch.name, p, repaired)})
		return true
	}
	if ch.epoch == 0 && ch.queued == 0 {
		ch.epoch = p.Epoch // the channel got its first message after we subscribed
	}
	if p.Epoch != ch.epoch || p.Seq <= ch.queued {
		return false // another epoch's, or a duplicate
	}
	ch.head = max(ch.head, p.Seq)
	if len(ch.ready) >= ch.s.c.cfg.BufferLimit {
		// The handler is behind: drop, and fetch again from the store once
		// it has caught up, rather than hold an unbounded queue.
	} else if p.Seq == ch.queued+1 {
		ch.queued++
		ch.enqueue(item{msg: copyMessage(ch.name, p, repaired), save: Position{Epoch: ch.epoch, Seq: p.Seq}, hasSave: true})
		ch.drain()
		fresh = true
	} else if _, ok := ch.buf[p.Seq]; !ok && len(ch.buf) < ch.s.c.cfg.BufferLimit {
		ch.buf[p.Seq] = copyMessage(ch.name, p, repaired)
		fresh = true
	}
	if !repaired {
		ch.evaluate(false)
	}
	return fresh
}

// onCopy takes the redundant copy of a critical push (a datagram, or a
// stream of its own). It goes through the same order rule as every push:
// handed over only after everything before it; kept only if it is the
// first copy of its seq to arrive.
func (ch *channel) onCopy(p *pb.Push) {
	if ch.onPush(p, false) {
		ch.s.c.stats.copiesFirst.Add(1)
	} else {
		ch.s.c.stats.copiesWasted.Add(1)
	}
}

// onHeadNotice learns the head from the server, which stopped pushing (the
// client fell behind, or the channel is in notify mode): pull up to it now.
func (ch *channel) onHeadNotice(n *pb.HeadNotice) {
	ch.mu.Lock()
	defer ch.mu.Unlock()
	if ch.closed || (ch.epoch != 0 && n.Epoch != ch.epoch) {
		return // another history: the next subscribe sorts it out
	}
	if ch.epoch == 0 && ch.queued == 0 {
		ch.epoch = n.Epoch
	}
	ch.head = max(ch.head, n.Head)
	ch.evaluate(true)
}

// onShedNotice tells the application that count droppable messages were shed.
func (ch *channel) onShedNotice(count uint64) {
	ch.s.c.stats.droppableShed.Add(count)
	ch.mu.Lock()
	defer ch.mu.Unlock()
	if ch.closed {
		return
	}
	if n := len(ch.ready); n > 0 && ch.ready[n-1].shed != nil {
		ch.ready[n-1].shed.Count += count // one notice, however many came
		return
	}
	ch.enqueue(item{shed: &Shed{Channel: ch.name, Count: count}})
}

// drain queues buffered messages that are now next in order.
func (ch *channel) drain() {
	for len(ch.ready) < ch.s.c.cfg.BufferLimit {
		m, ok := ch.buf[ch.queued+1]
		if !ok {
			break
		}
		delete(ch.buf, ch.queued+1)
		ch.queued++
		ch.enqueue(item{msg: m, save: Position{Epoch: ch.epoch, Seq: m.Seq}, hasSave: true})
	}
}

// pruneBuf drops buffered messages at or before queued, after queued jumped
// ahead of them (the first Subscribed). Everywhere else queued moves one by
// one through the buffer, so pruning on every drain would only cost a walk
// of the whole map per message.
func (ch *channel) pruneBuf() {
	for seq := range ch.buf {
		if seq <= ch.queued {
			delete(ch.buf, seq)
		}
	}
}

// evaluate starts a repair when seqs between queued and head are missing:
// at once after a subscribe or a repair page, after the hole wait for a
// hole seen in the live push (holes found within the merge window of each
// other end up in the same request, as it covers up to the head).
func (ch *channel) evaluate(now bool) {
	if ch.head <= ch.queued || ch.repairing || ch.live == nil || ch.closed {
		return
	}
	if now {
		if ch.holeTimer != nil {
			ch.holeTimer.Stop()
			ch.holeTimer = nil
		}
		ch.startRepair()
		return
	}
	if ch.holeTimer == nil {
		wait := ch.params.holeWait + ch.params.mergeWindow
		ch.holeTimer = time.AfterFunc(wait, func() {
			ch.mu.Lock()
			defer ch.mu.Unlock()
			ch.holeTimer = nil
			ch.evaluate(true)
		})
	}
}

func (ch *channel) startRepair() {
	conn := ch.live
	from := ch.queued + 1
	batch := ch.params.repairBatch
	if ch.fetch != nil {
		batch = ch.params.inboxPage
	}
	to := min(ch.head, ch.queued+uint64(batch))
	ch.repairing = true
	ch.repairFrom = from
	epoch := ch.epoch
	if ch.fetch != nil {
		ch.s.c.goTracked(func() { ch.fetch(ch, conn, epoch, from, to) })
		return
	}
	ch.s.c.goTracked(func() { ch.s.repair(conn, ch, epoch, from, to) })
}

// onRepairEnd is called when a repair stream ended, well or not.
func (ch *channel) onRepairEnd(end *pb.RepairEnd) {
	ch.mu.Lock()
	defer ch.mu.Unlock()
	ch.repairing = false
	progressed := ch.queued >= ch.repairFrom
	if end != nil {
		ch.head = max(ch.head, end.Head)
		ch.skipExpired(end.FirstRetained)
	}
	// Page on at once while pages bring messages; otherwise wait a hole wait
	// so a failing repair does not spin.
	ch.evaluate(end != nil && progressed)
}

func (ch *channel) onDisconnect() {
	ch.mu.Lock()
	defer ch.mu.Unlock()
	ch.live = nil
	if ch.holeTimer != nil {
		ch.holeTimer.Stop()
		ch.holeTimer = nil
	}
}

func (ch *channel) enqueue(it item) {
	if it.hasSave {
		ch.saves++
	}
	ch.ready = append(ch.ready, it)
	select {
	case ch.wake <- struct{}{}:
	default:
	}
}

// maxSpareItems bounds the queue a channel keeps between bursts.
const maxSpareItems = 256

// deliver runs the handler, one item at a time, then saves the position
// and schedules the acknowledgement.
func (ch *channel) deliver() {
	defer close(ch.done)
	// Two queues swap between enqueue and this loop, so that a steady
	// stream of pushes allocates none.
	var spare []item
	for {
		select {
		case <-ch.stop:
			return
		case <-ch.wake:
		}
		for {
			ch.mu.Lock()
			items := ch.ready
			ch.ready = spare
			ch.mu.Unlock()
			if len(items) == 0 {
				spare = items
				break
			}
			for _, it := range items {
				select {
				case <-ch.stop:
					return
				default:
				}
				var err error
				switch {
				case it.waiting != nil:
					ch.onWaiting(*it.waiting)
				case it.shed != nil:
					if ch.onShed != nil {
						ch.onShed(*it.shed)
					}
				case it.gap != nil:
					if ch.onGap != nil {
						err = ch.onGap(*it.gap)
					}
				default:
					if it.msg.Droppable {
						ch.s.c.stats.droppableDelivered.Add(1)
					}
					err = ch.h(it.msg)
				}
				if err != nil {
					// Not handled: the position stays before it, and the
					// subscription ends.
					ch.s.stop(ch, err)
					return
				}
				if it.hasSave {
					err := ch.s.c.cfg.State.Save(ch.name, it.save)
					if err != nil {
						// Not acknowledged either: the server's cursor must
						// not run ahead of what a restart would resume from.
						ch.s.c.log.Error("cannot save position", "channel", ch.name, "err", err)
					} else if !ch.observe {
						ch.s.ack(ch.name, it.save)
					}
					ch.finished(it.save, err == nil)
				}
			}
			// Keep the queue but not its messages, nor a burst's capacity.
			clear(items)
			if spare = items[:0]; cap(spare) > maxSpareItems {
				spare = nil
			}
		}
	}
}

// close stops the channel and waits for its handler to return.
func (ch *channel) close() {
	ch.shutdown()
	<-ch.done
}

// shutdown stops the channel without waiting (its own goroutine calls it).
func (ch *channel) shutdown() {
	ch.mu.Lock()
	defer ch.mu.Unlock()
	if ch.closed {
		return
	}
	ch.closed = true
	if ch.holeTimer != nil {
		ch.holeTimer.Stop()
	}
	close(ch.stop)
}
