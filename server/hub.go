package server

import (
	"bytes"
	"context"
	"log/slog"
	"sync"
	"time"

	"github.com/quic-go/quic-go/quicvarint"
	"golang.org/x/time/rate"
	"google.golang.org/protobuf/proto"

	"github.com/quicpush/quicpush/store"
	"github.com/quicpush/quicpush/stream"
	pb "github.com/quicpush/quicpush/stream/quicpushpb"
)

// hub maps channels to their subscribers and fans committed messages out.
// Each message is encoded once; the same bytes go to every subscriber.
//
// Lock order: a hubChannel's mu before the hub's mu, never the reverse.
type hub struct {
	store       Store
	log         *slog.Logger
	limits      channelLimits
	critical    CriticalConfig
	notifyAbove int           // subscribers beyond which a channel notifies; <0: never
	mergeWindow time.Duration // between two notices of a channel
	metrics     *metrics
	presence    *presence // told of every subscriber added and removed

	mu       sync.Mutex // guards channels
	channels map[string]*hubChannel
}

type hubChannel struct {
	name string

	// mu is the seam between subscribing and fan-out: it is held while a
	// subscriber reads the bounds and registers, and while messages are
	// fanned out, so each message is either in the bounds or pushed.
	mu             sync.Mutex
	subs           map[*session]struct{}
	droppableSeq   uint64
	droppableLimit *rate.Limiter // nil: unlimited

	// Notify mode (huge rooms): instead of every message, subscribers get
	// the head, at most once per merge window, and pull.
	notifyAlways bool           // configured for the channel
	notify       *pb.HeadNotice // the head to announce; nil when announced
	notifyTimer  *time.Timer
	dead         bool // removed from the hub: look it up again
}

func newHub(st Store, log *slog.Logger, limits channelLimits, notifyAbove int, mergeWindow time.Duration, m *metrics) *hub {
	return &hub{store: st, log: log, limits: limits, notifyAbove: notifyAbove, mergeWindow: mergeWindow, metrics: m, channels: map[string]*hubChannel{}}
}

func (h *hub) lookup(name string, create bool) *hubChannel {
	h.mu.Lock()
	defer h.mu.Unlock()
	ch := h.channels[name]
	if ch == nil && create {
		ch = &hubChannel{name: name, subs: map[*session]struct{}{}}
		limit := h.limits.forChannel(name)
		if r := limit.DroppableRate; r > 0 {
			ch.droppableLimit = rate.NewLimiter(rate.Limit(r), max(1, int(r)))
		}
		ch.notifyAlways = limit.Notify
		h.channels[name] = ch
	}
	return ch
}

// removeIfEmpty drops ch from the hub once it has no subscriber; ch.mu held.
func (h *hub) removeIfEmpty(ch *hubChannel) {
	if len(ch.subs) > 0 {
		return
	}
	ch.dead = true
	h.mu.Lock()
	if h.channels[ch.name] == ch {
		delete(h.channels, ch.name)
	}
	h.mu.Unlock()
}

// subscribe reads channel's bounds and, if accept agrees, adds sess to its
// subscribers, atomically with respect to fan-out: every message committed
// after those bounds is pushed to sess, and every one up to them is in the
// store for the client to pull. The store makes a commit visible to Bounds
// before it calls fanOut, so no message falls between the two; messages of
// a batch committed meanwhile may arrive both ways, and the client drops the
// second copy by its seq. accept runs before any push can reach sess.
func (h *hub) subscribe(ctx context.Context, sess *session, channel string, accept func(b store.Bounds, droppableSeq uint64) bool) error {
	for {
		ch := h.lookup(channel, true)
		ch.mu.Lock()
		if ch.dead {
			ch.mu.Unlock()
			continue
		}
		b, err := h.store.Bounds(ctx, channel)
		if err == nil && accept(b, ch.droppableSeq) {
			ch.subs[sess] = struct{}{}
			h.presence.join(channel, sess.c.user)
		}
		h.removeIfEmpty(ch)
		ch.mu.Unlock()
		return err
	}
}

// unsubscribe removes sess from channel's subscribers; goodbye says the
// client ended the subscription itself (presence: a leave at once, not
// after the grace period).
func (h *hub) unsubscribe(sess *session, channel string, goodbye bool) {
	ch := h.lookup(channel, false)
	if ch == nil {
		return
	}
	ch.mu.Lock()
	defer ch.mu.Unlock()
	if _, ok := ch.subs[sess]; ok {
		delete(ch.subs, sess)
		h.presence.leave(channel, sess.c.user, goodbye)
	}
	h.removeIfEmpty(ch)
}

// subscribers counts the sessions subscribed to channel.
func (h *hub) subscribers(channel string) int {
	ch := h.lookup(channel, false)
	if ch == nil {
		return 0
	}
	ch.mu.Lock()
	defer ch.mu.Unlock()
	return len(ch.subs)
}

// fanOut is the store's Watch callback: it must not block. Consecutive
// messages of one channel are encoded into one buffer and queued for each
// subscriber with one call, so a burst becomes few stream writes.
func (h *hub) fanOut(msgs []store.Message) {
	var buf []byte
	for i := 0; i < len(msgs); {
		j := i
		for j < len(msgs) && msgs[j].Channel == msgs[i].Channel {
			j++
		}
		if ch := h.lookup(msgs[i].Channel, false); ch != nil {
			ch.mu.Lock()
			if h.notifying(ch) {
				last := msgs[j-1]
				h.announce(ch, last.Epoch, last.Seq)
			} else if len(ch.subs) > 0 {
				buf = buf[:0]
				var copies [][2][]byte // critical pushes: body, frame
				allCritical := h.critical.channel(ch.name)
				for _, m := range msgs[i:j] {
					f := pushFrame(m)
					if m.Critical || allCritical {
						f.GetPush().Critical = true
						at := len(buf)
						buf = h.appendPush(buf, f)
						frame := bytes.Clone(buf[at:]) // buf is reused; copies outlive it
						copies = append(copies, [2][]byte{frame[len(frame)-proto.Size(f):], frame})
						continue
					}
					buf = h.appendPush(buf, f)
				}
				last := msgs[j-1]
				pushed := 0
				for sess := range ch.subs {
					if sess.pushReliable(last.Channel, last.Epoch, last.Seq, buf) {
						pushed++
					}
					for _, c := range copies {
						sess.c.copyCritical(sess, ch.name, c[0], c[1])
					}
				}
				h.metrics.fannedOut(j-i, pushed, msgs[i].Time)
			}
			ch.mu.Unlock()
		}
		i = j
	}
}

// notifying reports whether ch runs in notify mode; ch.mu held.
func (h *hub) notifying(ch *hubChannel) bool {
	return ch.notifyAlways || (h.notifyAbove >= 0 && len(ch.subs) > h.notifyAbove)
}

// announce schedules a notice of ch's new head: the first message after a
// quiet spell is announced at once, later ones at most once per merge
// window, encoded once for every subscriber. ch.mu held.
func (h *hub) announce(ch *hubChannel, epoch, head uint64) {
	pending := ch.notify != nil
	ch.notify = &pb.HeadNotice{Channel: ch.name, Epoch: epoch, Head: head, Reason: pb.HeadNotice_REASON_NOTIFY}
	if pending || ch.notifyTimer != nil {
		return
	}
	h.sendNotice(ch)
	ch.notifyTimer = time.AfterFunc(h.mergeWindow, func() { h.notifyTick(ch) })
}

func (h *hub) notifyTick(ch *hubChannel) {
	ch.mu.Lock()
	defer ch.mu.Unlock()
	ch.notifyTimer = nil
	if ch.notify != nil && !ch.dead {
		h.sendNotice(ch)
		ch.notifyTimer = time.AfterFunc(h.mergeWindow, func() { h.notifyTick(ch) })
	}
}

// sendNotice sends ch's pending notice to every subscriber; ch.mu held.
func (h *hub) sendNotice(ch *hubChannel) {
	b := mustFrame(&pb.Frame{Body: &pb.Frame_HeadNotice{HeadNotice: ch.notify}})
	ch.notify = nil
	for sess := range ch.subs {
		sess.sendOrFail(b)
	}
	h.metrics.notifyNotices.Add(uint64(len(ch.subs)))
}

// fanOutDroppable pushes a message that is not stored to the channel's
// current subscribers, numbered by the channel's droppable counter. It
// reports false when the channel's droppable rate limit dropped it.
func (h *hub) fanOutDroppable(m store.Message) bool {
	ch := h.lookup(m.Channel, false)
	if ch == nil {
		return true // nobody to tell
	}
	ch.mu.Lock()
	defer ch.mu.Unlock()
	if len(ch.subs) == 0 {
		return true
	}
	if ch.droppableLimit != nil && !ch.droppableLimit.Allow() {
		return false
	}
	ch.droppableSeq++
	f := pushFrame(m)
	f.GetPush().Class = pb.Class_CLASS_DROPPABLE
	f.GetPush().DroppableSeq = ch.droppableSeq
	body, err := proto.Marshal(f)
	if err != nil || len(body) > stream.MaxFrameSize {
		h.log.Error("cannot encode droppable push", "channel", m.Channel, "err", err)
		return true
	}
	frame := quicvarint.Append(make([]byte, 0, len(body)+4), uint64(len(body)))
	frame = append(frame, body...)
	for sess := range ch.subs {
		sess.pushDroppable(m.Channel, body, frame)
	}
	return true
}

// appendPush encodes a push. Publishes are validated against the frame
// limit before they are stored, so a failure here is a bug worth a log line.
func (h *hub) appendPush(buf []byte, f *pb.Frame) []byte {
	out, err := stream.AppendFrame(buf, f)
	if err != nil {
		h.log.Error("cannot encode push", "channel", f.GetPush().GetChannel(), "seq", f.GetPush().GetSeq(), "err", err)
		return buf
	}
	return out
}

func pushFrame(m store.Message) *pb.Frame {
	return &pb.Frame{Body: &pb.Frame_Push{Push: &pb.Push{
		Channel: m.Channel, Epoch: m.Epoch, Seq: m.Seq, Data: m.Data,
		TimeUnixNs: m.Time.UnixNano(), From: m.From, Id: m.ID,
	}}}
}
