package server

import (
	"errors"
	"sync/atomic"

	"github.com/quicpush/quicpush/stream"
	pb "github.com/quicpush/quicpush/stream/quicpushpb"
)

// Downlink flow control of one session. Reliable pushes go into the
// session's Sender, which writes them at once while QUIC's flow control
// allows and queues them otherwise. When that queue passes BehindBytes the
// session falls "behind" on the channel being pushed: its reliable pushes
// stop, the client is told the head (HeadNotice BEHIND) and pulls from the
// store over repair streams; once the queue has drained, the push resumes
// with another HeadNotice (RESUMED) giving the head reached meanwhile.
// Reliable messages are never dropped, and a slow client never holds up the
// others: its pushes cost the fan-out one queue append, or nothing.
//
// Droppable pushes go out only while the reliable queue is empty: as QUIC
// datagrams when the client takes them, else on the session stream. While
// the stream is busy they wait in a queue of DroppableQueueBytes, the
// oldest shed first; the client is told how many were shed per channel
// (Shed) before the next droppable of that channel.

// outbox is the session's state for the above, guarded by session.outMu.
// Its maps exist only while they hold something: most sessions are never
// behind and never shed.
type outbox struct {
	behind    map[string]*pb.HeadNotice // channel -> the head skipped up to
	dropQ     []queuedDroppable
	dropBytes int
	shed      map[string]uint64 // shed, not yet told
}

// shedOne counts a droppable push of channel that was shed.
func (o *outbox) shedOne(channel string) {
	if o.shed == nil {
		o.shed = map[string]uint64{}
	}
	o.shed[channel]++
}

type queuedDroppable struct {
	channel string
	frame   []byte // length-prefixed
}

// counters are the server's own figures for operators and tests.
type counters struct {
	droppableIn, droppableRateLimited, droppableOut, droppableShed, datagramsOut atomic.Uint64
	reliableRateLimited, behind, resumed, slowConsumers                          atomic.Uint64
	copiesDatagram, copiesStream, copiesOverBudget, copiesFailed, copyBytes      atomic.Uint64
}

// Stats are the server's counters since it started.
type Stats struct {
	DroppablePublished   uint64 // droppable publishes taken
	DroppableRateLimited uint64 // dropped by a channel or connection rate limit
	DroppablePushed      uint64 // droppable pushes handed to QUIC (stream or datagram)
	DroppableShed        uint64 // droppable pushes shed for a slow client
	DatagramsSent        uint64 // of the pushed ones, as datagrams
	ReliableRateLimited  uint64 // reliable publishes refused with RATE_LIMITED
	BehindEvents         uint64 // a session stopped being pushed a channel
	Resumes              uint64 // ... and started again
	SlowConsumers        uint64 // connections closed with SLOW_CONSUMER
	// Copies of critical messages: sent as datagrams, sent on streams of
	// their own, not sent for the byte budget, failed to send; copy bytes.
	CopiesDatagram, CopiesStream, CopiesOverBudget, CopiesFailed, CopyBytes uint64
}

// Stats returns the server's counters.
func (s *Server) Stats() Stats {
	c := &s.counters
	return Stats{
		DroppablePublished: c.droppableIn.Load(), DroppableRateLimited: c.droppableRateLimited.Load(),
		DroppablePushed: c.droppableOut.Load(), DroppableShed: c.droppableShed.Load(), DatagramsSent: c.datagramsOut.Load(),
		ReliableRateLimited: c.reliableRateLimited.Load(), BehindEvents: c.behind.Load(), Resumes: c.resumed.Load(),
		SlowConsumers:  c.slowConsumers.Load(),
		CopiesDatagram: c.copiesDatagram.Load(), CopiesStream: c.copiesStream.Load(),
		CopiesOverBudget: c.copiesOverBudget.Load(), CopiesFailed: c.copiesFailed.Load(), CopyBytes: c.copyBytes.Load(),
	}
}

// pushReliable queues encoded pushes of channel (up to head) for the
// client, or skips them while the session is behind on that channel; it
// reports whether it queued them. It never blocks: hub.fanOut calls it
// under the channel's lock.
func (s *session) pushReliable(channel string, epoch, head uint64, frames []byte) bool {
	s.outMu.Lock()
	defer s.outMu.Unlock()
	if b := s.out.behind[channel]; b != nil {
		b.Epoch, b.Head = epoch, head
		return false
	}
	if s.send.Queued() > s.c.s.cfg.BehindBytes {
		notice := &pb.HeadNotice{Channel: channel, Epoch: epoch, Head: head, Reason: pb.HeadNotice_REASON_BEHIND}
		if s.out.behind == nil {
			s.out.behind = map[string]*pb.HeadNotice{}
		}
		s.out.behind[channel] = &pb.HeadNotice{Channel: channel, Epoch: epoch, Head: head}
		s.c.s.counters.behind.Add(1)
		s.sendOrFail(mustFrame(&pb.Frame{Body: &pb.Frame_HeadNotice{HeadNotice: notice}}))
		return false
	}
	s.sendOrFail(frames)
	return true
}

// pushDroppable offers a droppable push: body is the encoded Frame (for a
// datagram), frame the same with its length prefix (for the stream).
func (s *session) pushDroppable(channel string, body, frame []byte) {
	s.outMu.Lock()
	defer s.outMu.Unlock()
	if s.send.Idle() {
		// Tell what was shed and send what waited (a full datagram queue
		// sheds with the stream idle, and nothing else would flush it).
		s.flushOutbox()
	}
	if s.send.Idle() && len(s.out.dropQ) == 0 && s.out.shed[channel] == 0 {
		if s.c.sendDatagram(s, channel, body, frame, false) {
			return
		}
		s.sendDroppable(frame)
		return
	}
	s.queueDroppable(channel, frame)
}

// queueDroppable queues a droppable push for when the stream is idle,
// shedding the oldest beyond the queue's bound; s.outMu held.
func (s *session) queueDroppable(channel string, frame []byte) {
	s.out.dropQ = append(s.out.dropQ, queuedDroppable{channel, frame})
	s.out.dropBytes += len(frame)
	for s.out.dropBytes > s.c.s.cfg.DroppableQueueBytes && len(s.out.dropQ) > 0 {
		oldest := s.out.dropQ[0]
		s.out.dropQ = s.out.dropQ[1:]
		s.out.dropBytes -= len(oldest.frame)
		s.out.shedOne(oldest.channel)
		s.c.s.counters.droppableShed.Add(1)
	}
}

// onIdle runs when the session's queue has drained: behind channels resume
// and waiting droppables go out.
func (s *session) onIdle() {
	s.outMu.Lock()
	defer s.outMu.Unlock()
	s.flushOutbox()
}

// flushOutbox sends the resumptions, the shed counts and the waiting
// droppables; s.outMu held.
func (s *session) flushOutbox() {
	var out []byte
	for _, b := range s.out.behind {
		b.Reason = pb.HeadNotice_REASON_RESUMED
		out, _ = stream.AppendFrame(out, &pb.Frame{Body: &pb.Frame_HeadNotice{HeadNotice: b}})
		s.c.s.counters.resumed.Add(1)
	}
	for channel, n := range s.out.shed {
		out, _ = stream.AppendFrame(out, &pb.Frame{Body: &pb.Frame_Shed{Shed: &pb.Shed{Channel: channel, Count: n}}})
	}
	s.out.behind, s.out.shed = nil, nil
	if len(out) > 0 {
		s.sendOrFail(out)
	}
	queued := s.out.dropQ
	s.out.dropQ, s.out.dropBytes = nil, 0
	for _, d := range queued {
		s.sendDroppable(d.frame)
	}
}

func (s *session) sendDroppable(frame []byte) {
	s.c.s.counters.droppableOut.Add(1)
	s.c.s.metrics.droppableStreamPushed.Add(1)
	s.sendOrFail(frame)
}

// sendOrFail queues b; a connection over its budget is a slow consumer.
func (s *session) sendOrFail(b []byte) {
	if err := s.send.Send(b); errors.Is(err, stream.ErrQueueFull) {
		go s.c.fail(err)
	}
	// Other errors: the session's stream is gone, and so is the session.
}

func mustFrame(f *pb.Frame) []byte {
	b, err := stream.AppendFrame(nil, f)
	if err != nil {
		panic(err) // only used for small control frames
	}
	return b
}
