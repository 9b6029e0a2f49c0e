package client

import (
	"context"
	"errors"
	"fmt"

	"github.com/quicpush/quicpush/stream"
	pb "github.com/quicpush/quicpush/stream/quicpushpb"
)

// ErrConnectionLost is returned by a request whose connection broke before
// the server answered; it can be sent again.
var ErrConnectionLost = errors.New("client: the connection broke before the server answered")

// PresenceUpdate is a change of who is online in a channel: a user is
// online while one of its sessions is subscribed to the channel (and for
// the server's grace period after its connection was lost without a
// goodbye). Updates are merged by the server: at most one per channel per
// interval (1 s by default).
type PresenceUpdate struct {
	Channel string
	Online  int // users online now
	// Joined and Left are the net changes since the previous update, at
	// most 50 names each (sorted); JoinedCount and LeftCount count them all.
	Joined, Left           []string
	JoinedCount, LeftCount int
	// Snapshot: the server's answer to a (re)started watch. Online is
	// current; changes made while the client was not watching (say, while
	// it reconnected) are not listed.
	Snapshot bool
}

// PresencePage is one page of a channel's online users.
type PresencePage struct {
	Channel string
	Users   []string // sorted by name
	Online  int
	// Next is the After of the following page; empty on the last page.
	Next string
}

// PresenceWatch is a running watch of a channel's presence.
type PresenceWatch struct {
	s       *Session
	channel string
	h       func(PresenceUpdate)
}

// callResult is the server's answer to a request with a request id.
type callResult struct {
	f   *pb.Frame
	err error
}

// call sends f, numbered by setID, and waits for its answer.
func (s *Session) call(ctx context.Context, setID func(uint64) *pb.Frame, before func(uint64)) (*pb.Frame, error) {
	s.mu.Lock()
	if err := s.needFeature(stream.FeatureConfirmPresence, "presence"); err != nil {
		s.mu.Unlock()
		return nil, err
	}
	if s.send == nil {
		s.mu.Unlock()
		return nil, ErrConnectionLost // not connected now: try again later
	}
	s.nextReq++
	id := s.nextReq
	answer := make(chan callResult, 1)
	s.calls[id] = answer
	if before != nil {
		before(id)
	}
	s.send.SendFrames(setID(id))
	s.mu.Unlock()
	select {
	case r := <-answer:
		return r.f, r.err
	case <-ctx.Done():
		s.mu.Lock()
		delete(s.calls, id)
		s.mu.Unlock()
		return nil, ctx.Err()
	case <-s.c.ctx.Done():
		return nil, s.c.closedErr()
	}
}

// answer hands f (or err) to the call waiting for requestID, if any.
func (s *Session) answer(requestID uint64, f *pb.Frame, err error) bool {
	s.mu.Lock()
	a := s.calls[requestID]
	delete(s.calls, requestID)
	s.mu.Unlock()
	if a != nil {
		a <- callResult{f, err}
	}
	return a != nil
}

// needFeature refuses a request the connected server does not support;
// s.mu held.
func (s *Session) needFeature(bit uint64, what string) error {
	if s.conn != nil && s.conn.features&bit == 0 {
		return stream.Errorf(stream.Unsupported, "the server does not support %s (feature bit %#x)", what, bit)
	}
	return nil
}

// WatchPresence calls h with the channel's online count, then with merged
// joins and leaves until the watch is closed. It returns once the server
// answered. h runs on the session's reader: it must return quickly. The
// watch is started again after a reconnect (h then gets a Snapshot).
// Watching needs the right to subscribe to the channel; it does not make
// this client online there.
func (s *Session) WatchPresence(ctx context.Context, channel string, h func(PresenceUpdate)) (*PresenceWatch, error) {
	if err := stream.ValidateChannel(channel); err != nil {
		return nil, err
	}
	w := &PresenceWatch{s: s, channel: channel, h: h}
	s.mu.Lock()
	_, dup := s.watches[channel]
	s.mu.Unlock()
	if dup {
		return nil, fmt.Errorf("client: the presence of %s is already watched on session %s", channel, s.name)
	}
	_, err := s.call(ctx, func(id uint64) *pb.Frame {
		return &pb.Frame{Body: &pb.Frame_PresenceWatch{PresenceWatch: &pb.PresenceWatch{RequestId: id, Channel: channel}}}
	}, func(uint64) { s.watches[channel] = w })
	if err != nil {
		s.mu.Lock()
		if s.watches[channel] == w {
			delete(s.watches, channel)
		}
		s.mu.Unlock()
		return nil, err
	}
	return w, nil
}

// Close ends the watch.
func (w *PresenceWatch) Close() {
	s := w.s
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.watches[w.channel] != w {
		return
	}
	delete(s.watches, w.channel)
	if s.send != nil {
		s.send.SendFrames(&pb.Frame{Body: &pb.Frame_PresenceUnwatch{PresenceUnwatch: &pb.PresenceUnwatch{Channel: w.channel}}})
	}
}

// PresenceMembers returns one page of the channel's online users, sorted,
// those after `after` (empty: from the start); limit 0 means the server's
// default (100), at most 1000. Page on with the returned Next until it is
// empty.
func (s *Session) PresenceMembers(ctx context.Context, channel, after string, limit int) (PresencePage, error) {
	if err := stream.ValidateChannel(channel); err != nil {
		return PresencePage{}, err
	}
	if limit < 0 || limit > 1<<31 {
		return PresencePage{}, stream.Errorf(stream.InvalidRange, "page size %d", limit)
	}
	f, err := s.call(ctx, func(id uint64) *pb.Frame {
		return &pb.Frame{Body: &pb.Frame_PresenceList{PresenceList: &pb.PresenceList{RequestId: id, Channel: channel, After: after, Limit: uint32(limit)}}}
	}, nil)
	if err != nil {
		return PresencePage{}, err
	}
	m := f.GetPresenceMembers()
	if m == nil {
		return PresencePage{}, stream.Errorf(stream.FrameUnexpected, "%s frame answering a presence list", stream.Name(f))
	}
	return PresencePage{Channel: m.Channel, Users: m.Users, Online: int(m.Online), Next: m.Next}, nil
}

// onPresenceUpdate hands an update to its watch, on the reader, so that a
// watch's snapshot always comes before the merged updates that follow it
// and h never runs twice at once.
func (s *Session) onPresenceUpdate(u *pb.PresenceUpdate) {
	s.mu.Lock()
	w := s.watches[u.Channel]
	s.mu.Unlock()
	if w != nil {
		w.h(presenceFrom(u))
	}
	if u.RequestId != 0 {
		s.answer(u.RequestId, &pb.Frame{Body: &pb.Frame_PresenceUpdate{PresenceUpdate: u}}, nil)
	}
}

func presenceFrom(u *pb.PresenceUpdate) PresenceUpdate {
	return PresenceUpdate{Channel: u.Channel, Online: int(u.Online), Joined: u.Joined, Left: u.Left,
		JoinedCount: int(u.JoinedCount), LeftCount: int(u.LeftCount), Snapshot: u.RequestId != 0}
}

// watchFrames asks again for every watch, on a new connection; s.mu held.
func (s *Session) watchFrames() []*pb.Frame {
	var frames []*pb.Frame
	if s.conn == nil || s.conn.features&stream.FeatureConfirmPresence == 0 {
		return nil
	}
	for channel := range s.watches {
		s.nextReq++
		frames = append(frames, &pb.Frame{Body: &pb.Frame_PresenceWatch{PresenceWatch: &pb.PresenceWatch{RequestId: s.nextReq, Channel: channel}}})
	}
	return frames
}

// failCalls ends the calls waiting on a connection that broke; s.mu held.
func (s *Session) failCalls() {
	for id, a := range s.calls {
		a <- callResult{err: ErrConnectionLost}
		delete(s.calls, id)
	}
}
