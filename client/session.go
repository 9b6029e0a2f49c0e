package client

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/quicpush/quicpush/stream"
	pb "github.com/quicpush/quicpush/stream/quicpushpb"
)

// Session is one business session ("classroom", "chat"...): one stream on
// the connection, carrying its subscriptions, their pushes, and publishes.
type Session struct {
	c    *Client
	name string

	mu       sync.Mutex
	conn     *connection // the connection its stream is on; nil when none
	params   params      // conn's, with the session's overrides
	send     *stream.Sender
	readDone chan struct{} // closed when the stream's reader has stopped
	channels map[string]*channel
	// channelsGen changes (under mu) with every change to channels: the
	// reader's lookups are cached until it does (channelCache).
	channelsGen atomic.Uint64
	nextReq     uint64
	subReqs     map[uint64]string     // subscribe request id -> channel
	subWait     map[string]chan error // Subscribe calls waiting, by channel
	pubs        map[uint64]*pendingPublish
	acks        map[string]Position
	ackTimer    *time.Timer // reused; runs flushAcks while ackArmed
	ackArmed    bool
	// When the first pending ack and the latest were recorded.
	ackFirst, ackLast time.Time
	confirms          map[uint64]*Confirmation   // by publish request id
	calls             map[uint64]chan callResult // requests awaiting their answer
	watches           map[string]*PresenceWatch  // by channel
}

type pendingPublish struct {
	frame   *pb.Frame
	confirm *ConfirmOptions
	done    chan struct{}
	res     PublishResult
	err     error
}

func newSession(c *Client, name string) *Session {
	return &Session{
		c: c, name: name, channels: map[string]*channel{},
		subReqs: map[uint64]string{}, subWait: map[string]chan error{}, pubs: map[uint64]*pendingPublish{}, acks: map[string]Position{},
		confirms: map[uint64]*Confirmation{}, calls: map[uint64]chan callResult{}, watches: map[string]*PresenceWatch{},
	}
}

// resume opens the session's stream on conn and replays its state: a
// subscribe per channel from its position, and every unacknowledged publish.
func (s *Session) resume(conn *connection) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.conn == conn || !conn.alive() {
		return
	}
	ctx, cancel := context.WithTimeout(s.c.ctx, s.c.cfg.DialTimeout)
	defer cancel()
	st, err := conn.qc.OpenStreamSync(ctx)
	if err != nil {
		conn.close(stream.NoError, "")
		return
	}
	st.SetPriority(3, true)
	s.conn = conn
	s.params = conn.params
	s.send = stream.NewSender(st, nil, func(error) { conn.close(stream.NoError, "") })
	frames := []*pb.Frame{{Body: &pb.Frame_SessionOpen{SessionOpen: &pb.SessionOpen{Name: s.name}}}}
	for _, ch := range s.channels {
		frames = append(frames, s.subscribeFrame(ch))
	}
	frames = append(frames, s.ackFrames()...)
	frames = append(frames, s.watchFrames()...)
	for _, id := range sortedKeys(s.pubs) {
		p := s.pubs[id]
		if p.frame.GetPublish().GetClass() == pb.Class_CLASS_DROPPABLE { // nil for chat sends and receipts
			// Never sent twice: a droppable message may be lost, not doubled.
			delete(s.pubs, id)
			p.err = ErrNotSent
			close(p.done)
			continue
		}
		if err := s.needFeature(stream.FeatureConfirmPresence, "confirmation"); p.confirm != nil && err != nil {
			delete(s.pubs, id)
			p.err = err
			close(p.done)
			continue
		}
		frames = append(frames, p.frame)
	}
	if err := s.send.SendFrames(frames...); err != nil {
		conn.close(stream.NoError, "")
		return
	}
	clear(s.acks)
	r := stream.NewReader(bufio.NewReader(st), 0)
	done := make(chan struct{})
	s.readDone = done
	s.c.goTracked(func() {
		defer close(done)
		s.read(conn, r)
	})
}

func (s *Session) detach(conn *connection) {
	s.mu.Lock()
	if s.conn != conn {
		s.mu.Unlock()
		return
	}
	s.conn, s.send = nil, nil
	channels := s.channelList()
	lost := s.loseConfirmations()
	s.failCalls()
	s.mu.Unlock()
	markLost(lost)
	for _, ch := range channels {
		ch.onDisconnect()
	}
}

func (s *Session) channelList() []*channel {
	out := make([]*channel, 0, len(s.channels))
	for _, ch := range s.channels {
		out = append(out, ch)
	}
	return out
}

// read handles the frames the server sends on the session stream. Pushes,
// nearly all of them, are decoded into one Push that is reused and aliases
// the reader's buffer: a channel copies what it keeps (messageFrom), so
// nothing holds it past onPush.
func (s *Session) read(conn *connection, r *stream.Reader) {
	fail := func(err error) {
		var pe *stream.Error
		if errors.As(err, &pe) {
			conn.close(pe.Code, pe.Message)
		}
	}
	push := new(pb.Push)
	var channels channelCache
	for {
		body, err := r.ReadBody()
		if err != nil {
			fail(err)
			return
		}
		if p, ok := stream.PushBody(body); ok {
			if err := stream.DecodePush(p, push); err != nil {
				fail(err)
				return
			}
			if ch := channels.get(s, push.Channel); ch != nil {
				ch.onPush(push, false)
			}
			continue
		}
		f, err := stream.DecodeFrame(body)
		if err != nil {
			fail(err)
			return
		}
		switch b := f.Body.(type) {
		case *pb.Frame_Push:
			if ch := s.channel(b.Push.Channel); ch != nil {
				ch.onPush(b.Push, false)
			}
		case *pb.Frame_HeadNotice:
			if ch := s.channel(b.HeadNotice.Channel); ch != nil {
				ch.onHeadNotice(b.HeadNotice)
			}
		case *pb.Frame_Shed:
			if ch := s.channel(b.Shed.Channel); ch != nil {
				ch.onShedNotice(b.Shed.Count)
			}
		case *pb.Frame_SessionOpened:
			s.mu.Lock()
			s.params = conn.params.override(b.SessionOpened)
			s.mu.Unlock()
		case *pb.Frame_Subscribed:
			s.mu.Lock()
			delete(s.subReqs, b.Subscribed.RequestId)
			s.mu.Unlock()
			s.mu.Lock()
			ch, p := s.channels[b.Subscribed.Channel], s.params
			s.mu.Unlock()
			if ch != nil {
				ch.onSubscribed(conn, p, b.Subscribed)
			}
			s.answerSubscribe(b.Subscribed.Channel, nil)
		case *pb.Frame_PublishAck:
			a := b.PublishAck
			s.completePublish(a.RequestId, PublishResult{Channel: a.Channel, Epoch: a.Epoch, Seq: a.Seq, Duplicate: a.Duplicate, Dropped: a.Dropped}, nil)
		case *pb.Frame_ConfirmProgress:
			s.onConfirmProgress(b.ConfirmProgress)
		case *pb.Frame_ConfirmReport:
			s.onConfirmReport(b.ConfirmReport)
		case *pb.Frame_PresenceUpdate:
			s.onPresenceUpdate(b.PresenceUpdate)
		case *pb.Frame_PresenceMembers:
			s.answer(b.PresenceMembers.RequestId, f, nil)
		case *pb.Frame_Error:
			s.onError(conn, stream.FromFrame(b.Error), b.Error.RequestId)
		default:
			conn.close(stream.FrameUnexpected, stream.Name(f)+" frame on a session stream")
			return
		}
	}
}

func (s *Session) channel(name string) *channel {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.channels[name]
}

// channelCache is the reader's last lookup, valid while the session's
// channels stay as they were: pushes come channel after channel, and
// looking each one up would take the session's lock, which the handlers'
// acks take too. It compares with the channel's own name: a decoded
// push's Channel aliases the read buffer, which the next frame overwrites.
type channelCache struct {
	ch  *channel
	gen uint64
}

func (c *channelCache) get(s *Session, name string) *channel {
	// gen is read first: a change made during the lookup makes the next
	// get look again.
	gen := s.channelsGen.Load()
	if c.ch == nil || c.gen != gen || c.ch.name != name {
		c.ch, c.gen = s.channel(name), gen
	}
	return c.ch
}

func (s *Session) onError(conn *connection, e *stream.Error, requestID uint64) {
	if s.answer(requestID, nil, e) {
		return // a presence request
	}
	s.mu.Lock()
	channel, isSub := s.subReqs[requestID]
	delete(s.subReqs, requestID)
	p := s.pubs[requestID]
	s.mu.Unlock()
	retryable := e.Code == stream.RateLimited || e.Code == stream.StoreUnavailable
	wait := max(time.Duration(e.RetryAfterMs)*time.Millisecond, 50*time.Millisecond)
	switch {
	case isSub && retryable:
		time.AfterFunc(wait, func() { s.resubscribe(conn, channel) })
	case isSub:
		s.refused(channel, e)
	case p != nil && retryable:
		// Not stored: send it again after the server's hint.
		time.AfterFunc(wait, func() { s.resend(conn, requestID) })
	case p != nil:
		s.completePublish(requestID, PublishResult{}, e)
	default:
		s.c.log.Warn("server error", "session", s.name, "err", e)
	}
}

// refused ends a subscription the server will not serve (a bad position, a
// forbidden channel): a waiting Subscribe gets the error, a subscription
// being resumed is told through OnError.
func (s *Session) refused(channel string, e *stream.Error) {
	s.mu.Lock()
	ch := s.channels[channel]
	if ch != nil {
		s.forget(channel)
	}
	wait := s.subWait[channel]
	delete(s.subWait, channel)
	s.mu.Unlock()
	if wait != nil {
		wait <- e
		return // Subscribe closes the channel
	}
	if ch == nil {
		return
	}
	s.c.log.Warn("subscription refused", "channel", channel, "err", e)
	go func() {
		ch.close()
		if ch.onError != nil {
			ch.onError(e)
		}
	}()
}

// stop ends a subscription whose handler returned err; called on the
// channel's own goroutine.
func (s *Session) stop(ch *channel, err error) {
	s.unsubscribe(ch)
	ch.shutdown()
	if ch.onError != nil {
		ch.onError(err)
	}
}

// resubscribe sends a subscription again after a retryable refusal.
func (s *Session) resubscribe(conn *connection, channel string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if ch := s.channels[channel]; ch != nil && s.conn == conn && s.send != nil {
		s.send.SendFrames(s.subscribeFrame(ch))
	}
}

// subscribeFrame numbers a subscribe request for ch; s.mu held.
func (s *Session) subscribeFrame(ch *channel) *pb.Frame {
	s.nextReq++
	s.subReqs[s.nextReq] = ch.name
	return ch.subscribeFrame(s.nextReq)
}

// SubscribeOptions say where a subscription starts and how gaps are told.
type SubscribeOptions struct {
	// Since, if set and the PositionStore has no position for the channel,
	// starts after this seq (the next message handed over is Since+1).
	// Without either, the server decides: live from the head, or for the
	// user's own channels ("user/<user>...") after the acknowledged cursor.
	Since *uint64
	// OnGap is told of seqs that will never be handed over; it runs on the
	// channel's goroutine, in order with the handler, and like the handler
	// ends the subscription by returning an error.
	OnGap func(Gap) error
	// OnShed is told, in order with the handler, how many droppable
	// messages the server shed for this client (it was not keeping up).
	OnShed func(Shed)
	// OnError is told why the subscription ended on its own: the handler or
	// OnGap returned an error, or the server refused to resume it after a
	// reconnect (say, the channel became forbidden). Refusals of the first
	// subscribe are returned by Subscribe instead.
	OnError func(error)
	// OnWaiting, if set, is told after every (re)subscribe, in order before
	// the messages, how many wait after this client's position.
	OnWaiting func(Waiting)
	// Paged catches up in offline pages (InboxPull: the server's page size,
	// each request carrying the acknowledgement of the page before, the
	// next page asked for only once the handler has finished the last)
	// instead of repair batches. Meant for a user's own channels, whose
	// backlog is read once (docs/PROTOCOL.md §15.4).
	Paged bool
	// Observe hands messages over and saves positions without ever
	// acknowledging them: the user's cursor on the server does not move
	// (so no delivered receipt is issued). For watchers such as the CLI's
	// send, which follows receipts in an inbox that another app reads.
	Observe bool
}

// Subscription is an active subscription.
type Subscription struct {
	s  *Session
	ch *channel
}

// Subscribe subscribes to channel, calling h for each message. It returns
// once the server has accepted the subscription, on this connection or,
// while disconnected, on the next one; or when ctx ends.
func (s *Session) Subscribe(ctx context.Context, channel string, opts SubscribeOptions, h Handler) (*Subscription, error) {
	if err := stream.ValidateChannel(channel); err != nil {
		return nil, err
	}
	pos, saved, err := s.c.cfg.State.Load(channel)
	if err != nil {
		return nil, fmt.Errorf("client: load position of %s: %w", channel, err)
	}
	ch := newChannel(s, channel, h, opts)
	switch {
	case saved:
		ch.epoch, ch.queued, ch.havePos = pos.Epoch, pos.Seq, true
	case opts.Since != nil:
		ch.queued, ch.havePos = *opts.Since, true
	}
	if err := s.c.claim(channel, s.name); err != nil {
		ch.close()
		return nil, err
	}
	s.mu.Lock()
	s.channels[channel] = ch
	s.channelsGen.Add(1)
	// Wait for the server's answer, on this connection or, if it breaks
	// meanwhile, on the next one (the resume subscribes again).
	wait := make(chan error, 1)
	s.subWait[channel] = wait
	if s.send != nil {
		s.send.SendFrames(s.subscribeFrame(ch))
	}
	s.mu.Unlock()
	sub := &Subscription{s: s, ch: ch}
	select {
	case err := <-wait:
		if err != nil {
			sub.Close()
			return nil, err
		}
		return sub, nil
	case <-ctx.Done():
		sub.Close()
		return nil, ctx.Err()
	case <-s.c.ctx.Done():
		return nil, s.c.closedErr()
	}
}

func (s *Session) answerSubscribe(channel string, err error) {
	s.mu.Lock()
	wait := s.subWait[channel]
	delete(s.subWait, channel)
	s.mu.Unlock()
	if wait != nil {
		wait <- err
	}
}

// Close ends the subscription; messages not yet handled are not handed over.
func (sub *Subscription) Close() {
	sub.s.unsubscribe(sub.ch)
	sub.ch.close()
}

// unsubscribe takes ch out of the session, if it is still its channel,
// and tells the server.
func (s *Session) unsubscribe(ch *channel) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.channels[ch.name] != ch {
		return
	}
	s.forget(ch.name)
	if s.send != nil {
		s.send.SendFrames(&pb.Frame{Body: &pb.Frame_Unsubscribe{Unsubscribe: &pb.Unsubscribe{Channel: ch.name}}})
	}
}

// forget removes channel from the session and frees its name in the
// client; s.mu held.
func (s *Session) forget(channel string) {
	delete(s.channels, channel)
	s.channelsGen.Add(1)
	s.c.release(channel)
}

// maxAckHold is how many ack delays a pending ack may wait while the
// session keeps handling messages.
const maxAckHold = 5

// ack records a handled position. Acks are cumulative; they go once the
// session has handled nothing for the ack delay, or maxAckHold ack delays
// after the first pending one: as soon as before when messages are
// sparse, and a fifth as many packets from a busy subscriber.
func (s *Session) ack(channel string, pos Position) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.acks[channel] = pos
	s.ackLast = time.Now()
	if !s.ackArmed && s.conn != nil {
		s.ackFirst = s.ackLast
		s.armAckTimer(s.conn.params.ackDelay)
	}
}

// armAckTimer schedules flushAcks after d; s.mu held. The session keeps
// one timer: a busy subscriber re-arms it several times per ack it sends.
func (s *Session) armAckTimer(d time.Duration) {
	s.ackArmed = true
	if s.ackTimer == nil {
		s.ackTimer = time.AfterFunc(d, s.flushAcks)
		return
	}
	s.ackTimer.Reset(d)
}

// stopAckTimer cancels a scheduled flushAcks; s.mu held.
func (s *Session) stopAckTimer() {
	if s.ackTimer != nil {
		s.ackTimer.Stop()
	}
	s.ackArmed = false
}

func (s *Session) flushAcks() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.ackArmed {
		return // stopped after this run had started
	}
	s.ackArmed = false
	if s.send == nil || len(s.acks) == 0 {
		return // sent on resume
	}
	delay := s.conn.params.ackDelay
	quiet, deadline := time.Since(s.ackLast), s.ackFirst.Add(maxAckHold*delay)
	if wait := min(delay-quiet, time.Until(deadline)); wait > 0 {
		s.armAckTimer(wait) // still busy
		return
	}
	s.sendAcks()
}

// ackFrames returns the pending acks as frames; s.mu held. They stay
// pending until a write that carries them is taken (sendAcks).
func (s *Session) ackFrames() []*pb.Frame {
	frames := make([]*pb.Frame, 0, len(s.acks))
	for ch, pos := range s.acks {
		frames = append(frames, &pb.Frame{Body: &pb.Frame_Ack{Ack: &pb.Ack{Channel: ch, Epoch: pos.Epoch, Seq: pos.Seq}}})
	}
	return frames
}

// sendAcks sends the pending acks, then more, in one write; s.mu held and
// s.send set. A stream that takes nothing (ended by finish while handlers
// run on, or broken) leaves them pending: resume sends them on the next
// connection.
func (s *Session) sendAcks(more ...*pb.Frame) error {
	err := s.send.SendFrames(append(s.ackFrames(), more...)...)
	if err == nil {
		clear(s.acks)
	}
	return err
}

// PublishOptions qualify a publish.
type PublishOptions struct {
	// ID is the client message id. Publishing the same ID again to the same
	// channel (a retry after a lost ack, a restarted app) stores nothing new
	// and returns the original seq. Empty: a random one, so the Client's own
	// retries across reconnects are safe.
	ID string
	// Droppable messages are not stored or numbered and may be shed.
	Droppable bool
	// Critical (reliable messages only) asks for redundant delivery: the
	// server also sends a copy on an independent path while a subscriber's
	// connection sees loss, so a lost packet does not delay it.
	Critical bool
	// Confirm (reliable messages only) asks the server to track which of
	// the channel's subscribers handle the message: see
	// PublishResult.Confirmation.
	Confirm *ConfirmOptions
}

// PublishResult is the server's acknowledgement.
type PublishResult struct {
	Channel   string
	Epoch     uint64
	Seq       uint64 // 0 for a droppable message
	ID        string
	Duplicate bool // the ID was published before: Seq is the original's
	// Dropped: a droppable message over a rate limit, dropped by the
	// server (not an error: droppable messages may be thinned).
	Dropped bool
	// Confirmation follows the recipients' confirmations when
	// PublishOptions.Confirm was set; nil otherwise.
	Confirmation *Confirmation
}

// Publish publishes data to channel and waits until the server has stored
// it durably (reliable) or taken it (droppable). It is retried across
// reconnects until acknowledged or ctx ends; if ctx ends first the message
// may or may not have been stored: publish it again with the same ID.
func (s *Session) Publish(ctx context.Context, channel string, data []byte, opts PublishOptions) (PublishResult, error) {
	if err := stream.ValidateChannel(channel); err != nil {
		return PublishResult{}, err
	}
	if len(data) > stream.MaxMessageSize {
		return PublishResult{}, stream.Errorf(stream.MessageTooLarge, "message of %d bytes exceeds %d", len(data), stream.MaxMessageSize)
	}
	id := opts.ID
	if id == "" {
		id = newMessageID()
	}
	if err := stream.ValidateID(id); err != nil {
		return PublishResult{}, err
	}
	if err := checkConfirm(opts); err != nil {
		return PublishResult{}, err
	}
	class := pb.Class_CLASS_RELIABLE
	if opts.Droppable {
		class = pb.Class_CLASS_DROPPABLE
	}
	p := &pendingPublish{done: make(chan struct{}), confirm: opts.Confirm}
	s.mu.Lock()
	if err := s.needFeature(stream.FeatureConfirmPresence, "confirmation"); opts.Confirm != nil && err != nil {
		s.mu.Unlock()
		return PublishResult{}, err
	}
	s.nextReq++
	reqID := s.nextReq
	p.frame = &pb.Frame{Body: &pb.Frame_Publish{Publish: &pb.Publish{RequestId: reqID, Channel: channel, Data: data, Class: class, Id: id, Critical: opts.Critical}}}
	if opts.Confirm != nil {
		p.frame.GetPublish().Confirm = &pb.Confirm{DeadlineMs: uint32(opts.Confirm.Deadline / time.Millisecond)}
	}
	s.pubs[reqID] = p
	if s.send != nil {
		s.send.SendFrames(p.frame) // on failure the connection ends and resume resends it
	}
	s.mu.Unlock()
	select {
	case <-p.done:
		p.res.ID = id
		return p.res, p.err
	case <-ctx.Done():
		s.mu.Lock()
		delete(s.pubs, reqID)
		s.mu.Unlock()
		return PublishResult{}, ctx.Err()
	case <-s.c.ctx.Done():
		return PublishResult{}, s.c.closedErr()
	}
}

func (s *Session) resend(conn *connection, requestID uint64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if p := s.pubs[requestID]; p != nil && s.conn == conn && s.send != nil {
		s.send.SendFrames(p.frame)
	}
}

func (s *Session) completePublish(requestID uint64, res PublishResult, err error) {
	s.mu.Lock()
	p := s.pubs[requestID]
	delete(s.pubs, requestID)
	if p != nil && err == nil && p.confirm != nil {
		// Before the reader takes the next frame: progress follows the ack.
		res.Confirmation = newConfirmation(*p.confirm, res)
		s.confirms[requestID] = res.Confirmation
	}
	s.mu.Unlock()
	if p != nil {
		p.res, p.err = res, err
		close(p.done)
	}
}

// finish sends the last acks and ends the session stream; the returned
// channel closes when the server has ended its side too.
func (s *Session) finish(conn *connection) <-chan struct{} {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.send == nil || s.conn != conn {
		done := make(chan struct{})
		close(done)
		return done
	}
	s.stopAckTimer()
	s.sendAcks()
	s.send.Close()
	return s.readDone
}

func (s *Session) close() {
	s.mu.Lock()
	channels := s.channelList()
	s.stopAckTimer()
	s.mu.Unlock()
	for _, ch := range channels {
		ch.close()
	}
}

func sortedKeys[V any](m map[uint64]V) []uint64 {
	keys := make([]uint64, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

// newMessageID is a client message id for a publish or send that has none:
// it still makes the retries across reconnects idempotent.
func newMessageID() string {
	var b [12]byte
	rand.Read(b[:])
	return hex.EncodeToString(b[:])
}
