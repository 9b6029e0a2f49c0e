package server

import (
	"context"
	"sync"

	"github.com/quicpush/quicpush/store"
	"github.com/quicpush/quicpush/stream"
	pb "github.com/quicpush/quicpush/stream/quicpushpb"
)

// hub maps channels to their subscribers and fans committed messages out.
// Each message is encoded once; the same bytes go to every subscriber.
type hub struct {
	store Store

	mu       sync.RWMutex
	channels map[string]*hubChannel
}

type hubChannel struct {
	subs         map[*session]struct{}
	droppableSeq uint64
}

func newHub(st Store) *hub {
	return &hub{store: st, channels: map[string]*hubChannel{}}
}

// subscribe adds sess to channel's subscribers and calls then with the
// channel's bounds at that instant, before any push can reach sess. Every message committed after those bounds is
// pushed to sess; the ones before are the client's to pull. The store makes
// a commit visible to Bounds before it calls fanOut, and fanOut takes the
// same lock, so no message falls between the two: at worst one is both
// pulled and pushed, and the client drops the second copy by its seq.
func (h *hub) subscribe(ctx context.Context, sess *session, channel string, then func(store.Bounds)) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	b, err := h.store.Bounds(ctx, channel)
	if err != nil {
		return err
	}
	ch := h.channels[channel]
	if ch == nil {
		ch = &hubChannel{subs: map[*session]struct{}{}}
		h.channels[channel] = ch
	}
	ch.subs[sess] = struct{}{}
	then(b)
	return nil
}

func (h *hub) unsubscribe(sess *session, channel string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	ch := h.channels[channel]
	if ch == nil {
		return
	}
	delete(ch.subs, sess)
	if len(ch.subs) == 0 {
		delete(h.channels, channel)
	}
}

// fanOut is the store's Watch callback: it must not block. Consecutive
// messages of one channel are encoded into one buffer and queued for each
// subscriber with one call, so a burst becomes few stream writes.
func (h *hub) fanOut(msgs []store.Message) {
	h.mu.RLock()
	defer h.mu.RUnlock()
	var buf []byte
	for i := 0; i < len(msgs); {
		j := i
		for j < len(msgs) && msgs[j].Channel == msgs[i].Channel {
			j++
		}
		ch := h.channels[msgs[i].Channel]
		if ch != nil && len(ch.subs) > 0 {
			buf = buf[:0]
			for _, m := range msgs[i:j] {
				buf, _ = stream.AppendFrame(buf, pushFrame(m))
			}
			for sess := range ch.subs {
				sess.push(buf)
			}
		}
		i = j
	}
}

// fanOutDroppable pushes a message that is not stored to the channel's
// current subscribers, numbered by the channel's droppable counter.
func (h *hub) fanOutDroppable(m store.Message) {
	h.mu.Lock()
	defer h.mu.Unlock()
	ch := h.channels[m.Channel]
	if ch == nil || len(ch.subs) == 0 {
		return
	}
	ch.droppableSeq++
	f := pushFrame(m)
	f.GetPush().Class = pb.Class_CLASS_DROPPABLE
	f.GetPush().DroppableSeq = ch.droppableSeq
	buf, _ := stream.AppendFrame(nil, f)
	for sess := range ch.subs {
		sess.push(buf)
	}
}

func (h *hub) subscriberCount(channel string) int {
	h.mu.RLock()
	defer h.mu.RUnlock()
	if ch := h.channels[channel]; ch != nil {
		return len(ch.subs)
	}
	return 0
}

func pushFrame(m store.Message) *pb.Frame {
	return &pb.Frame{Body: &pb.Frame_Push{Push: &pb.Push{
		Channel: m.Channel, Epoch: m.Epoch, Seq: m.Seq, Data: m.Data,
		TimeUnixNs: m.Time.UnixNano(), From: m.From, Id: m.ID,
	}}}
}
