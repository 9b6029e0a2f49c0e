package server

import (
	"context"
	"errors"
	"strings"
	"sync"
	"time"

	"github.com/quicpush/quicpush/store"
	"github.com/quicpush/quicpush/stream"
	pb "github.com/quicpush/quicpush/stream/quicpushpb"
)

// session is one business-session stream: its subscriptions, the pushes to
// them, and the publishes and acks that come back on it.
type session struct {
	c    *conn
	name string
	send *stream.Sender

	mu   sync.Mutex
	subs map[string]struct{}

	outMu sync.Mutex // guards out; taken under a hub channel's lock
	out   outbox

	chat         chatQueue      // ChatSends awaiting the store
	receiptSlots chan struct{}  // read receipts being stored
	work         sync.WaitGroup // the chat loop and read receipts, answered before end's FIN

	pubMu      sync.Mutex
	pubCond    sync.Cond // signalled when publishing ends; L is pubMu
	pubQueue   []*pb.Publish
	inFlight   int // queued plus being appended
	publishing bool
	pubWake    chan struct{} // a publish was queued while publishing
}

func newSession(c *conn, st bidiStream, name string) *session {
	s := &session{c: c, name: name, subs: map[string]struct{}{}, receiptSlots: make(chan struct{}, 8), pubWake: make(chan struct{}, 1)}
	s.pubCond.L = &s.pubMu
	s.send = stream.NewSender(st, c.budget, func(err error) {
		if isStreamError(err) {
			// The client reset or stopped this stream: end the session
			// alone, by ending its reader too.
			st.CancelRead(stream.NoError)
			return
		}
		c.fail(err)
	})
	s.send.OnIdle(s.onIdle)
	return s
}

// end finishes a session the client closed (FIN): no more pushes, the
// publishes, chat sends and read receipts already taken are stored and
// answered, then our FIN.
func (s *session) end() {
	// A goodbye, unless we asked the client to go (GOAWAY): then it comes
	// back at once, within the presence grace period.
	s.release(!s.c.goingAway.Load())
	s.pubMu.Lock()
	for s.publishing {
		s.pubCond.Wait()
	}
	s.pubMu.Unlock()
	s.work.Wait()
	s.send.Close()
}

func (s *session) reply(f *pb.Frame) error { return s.send.SendFrames(f) }

func (s *session) replyError(e *stream.Error, requestID uint64, channel string) error {
	f := e.Frame()
	f.GetError().RequestId = requestID
	f.GetError().Channel = channel
	return s.reply(f)
}

// handle handles a frame of the session stream after session_open.
func (s *session) handle(f *pb.Frame) error {
	var err error
	switch b := f.Body.(type) {
	case *pb.Frame_Subscribe:
		err = s.subscribe(b.Subscribe)
	case *pb.Frame_Unsubscribe:
		s.unsubscribe(b.Unsubscribe.Channel)
	case *pb.Frame_Ack:
		err = s.ack(b.Ack)
	case *pb.Frame_Publish:
		err = s.publish(b.Publish)
	case *pb.Frame_ChatSend:
		err = s.chatSend(b.ChatSend)
	case *pb.Frame_ReceiptRead:
		// Off the reader (it reads and writes the store), but at most
		// a few at a time: a client that floods receipts waits here.
		s.receiptSlots <- struct{}{}
		s.c.wg.Add(1)
		s.work.Add(1)
		go func() {
			defer s.c.wg.Done()
			defer s.work.Done()
			defer func() { <-s.receiptSlots }()
			s.receiptRead(b.ReceiptRead)
		}()
	case *pb.Frame_PresenceWatch:
		err = s.watchPresence(b.PresenceWatch)
	case *pb.Frame_PresenceUnwatch:
		s.c.s.presence.unwatch(s, b.PresenceUnwatch.Channel)
	case *pb.Frame_PresenceList:
		err = s.listPresence(b.PresenceList)
	default:
		err = stream.Unexpected(f, "on a session stream")
	}
	return err
}

func (s *session) subscribe(req *pb.Subscribe) error {
	if err := stream.ValidateChannel(req.Channel); err != nil {
		return s.replyError(err.(*stream.Error), req.RequestId, req.Channel)
	}
	s.mu.Lock()
	_, dup := s.subs[req.Channel]
	s.subs[req.Channel] = struct{}{}
	s.mu.Unlock()
	if dup {
		return s.replyError(stream.Errorf(stream.BadRequest, "already subscribed to %s on this session", req.Channel), req.RequestId, req.Channel)
	}
	if e := s.c.authorize(ActionSubscribe, req.Channel, false); e != nil {
		s.forget(req.Channel)
		return s.replyError(e, req.RequestId, req.Channel)
	}
	ctx := s.c.ctx
	storeErr := func(err error) error {
		s.forget(req.Channel)
		s.c.logger().Warn("subscribe failed", "channel", req.Channel, "err", err)
		e := stream.Errorf(stream.StoreUnavailable, "cannot read %s: %v", req.Channel, err)
		e.RetryAfterMs = 1000
		return s.replyError(e, req.RequestId, req.Channel)
	}
	// A client with no position on its own channel starts at its cursor.
	var cursor *store.Position
	if req.Start == pb.Start_START_DEFAULT && ownChannel(s.c.user, req.Channel) {
		cur, err := s.c.s.cursors.cursor(ctx, s.c.user, req.Channel)
		if err != nil {
			return storeErr(err)
		}
		cursor = &cur
	}
	var refusal *stream.Error
	var replyErr error
	err := s.c.s.hub.subscribe(ctx, s, req.Channel, func(b store.Bounds, droppableSeq uint64) bool {
		ans := &pb.Subscribed{RequestId: req.RequestId, Channel: req.Channel, Epoch: b.Epoch, Head: b.Last, FirstRetained: b.First,
			DroppableSeq: droppableSeq}
		switch {
		case req.Start == pb.Start_START_AFTER && req.Epoch != 0 && req.Epoch != b.Epoch:
			ans.Reset_ = true
		case req.Start == pb.Start_START_AFTER:
			if req.After > b.Last {
				refusal = stream.Errorf(stream.InvalidRange, "position %d is beyond the head %d of %s", req.After, b.Last, req.Channel)
				return false
			}
			ans.StartAfter = req.After
		case cursor != nil && cursor.Epoch == b.Epoch:
			ans.StartAfter = min(cursor.Seq, b.Last)
		case cursor != nil:
			ans.StartAfter = 0 // the cursor is of a lost history: all of the new one
		default:
			ans.StartAfter = b.Last
		}
		// Sent before the subscription can receive a push.
		replyErr = s.reply(&pb.Frame{Body: &pb.Frame_Subscribed{Subscribed: ans}})
		return true
	})
	switch {
	case err != nil:
		return storeErr(err)
	case refusal != nil:
		s.forget(req.Channel)
		return s.replyError(refusal, req.RequestId, req.Channel)
	}
	return replyErr
}

// forget drops a subscription that the hub never registered.
func (s *session) forget(channel string) {
	s.mu.Lock()
	delete(s.subs, channel)
	s.mu.Unlock()
}

// ownChannel reports whether channel belongs to user: "user/<user>" or
// below it. A client with no position starts there at its cursor.
func ownChannel(user, channel string) bool {
	own := "user/" + user
	return channel == own || strings.HasPrefix(channel, own+"/")
}

func (s *session) unsubscribe(channel string) {
	s.mu.Lock()
	delete(s.subs, channel)
	s.mu.Unlock()
	s.c.s.hub.unsubscribe(s, channel, true)
}

// unsubscribeAll releases what the session holds when it ended without a
// goodbye (its stream or connection was lost).
func (s *session) unsubscribeAll() { s.release(false) }

// release ends the session's subscriptions, presence watches and
// confirmations; goodbye says the client ended the session itself.
func (s *session) release(goodbye bool) {
	s.mu.Lock()
	subs := s.subs
	s.subs = map[string]struct{}{}
	s.mu.Unlock()
	for ch := range subs {
		s.c.s.hub.unsubscribe(s, ch, goodbye)
	}
	s.c.s.presence.unwatchAll(s)
	s.c.s.confirms.dropSession(s)
}

func (s *session) ack(a *pb.Ack) error {
	if err := stream.ValidateChannel(a.Channel); err != nil {
		return stream.Errorf(stream.FrameMalformed, "ack: %v", err)
	}
	s.c.s.metrics.acks.Add(1)
	pos := store.Position{Epoch: a.Epoch, Seq: a.Seq}
	s.c.s.acked(s.c.user, a.Channel, pos)
	s.c.s.confirms.acked(s.c.user, a.Channel, pos)
	return nil
}

// publish validates a publish and queues it for the session's publisher,
// which appends queued publishes to the store in arrival order, many per
// call, so a pipelining client gets group commit and keeps its order.
func (s *session) publish(p *pb.Publish) error {
	if err := stream.ValidateChannel(p.Channel); err != nil {
		return s.refusePublish(p, err.(*stream.Error))
	}
	if err := stream.ValidateID(p.Id); err != nil {
		return s.refusePublish(p, err.(*stream.Error))
	}
	if len(p.Data) > stream.MaxMessageSize {
		return s.refusePublish(p, stream.Errorf(stream.MessageTooLarge, "message of %d bytes exceeds %d", len(p.Data), stream.MaxMessageSize))
	}
	if p.Class != pb.Class_CLASS_RELIABLE && p.Class != pb.Class_CLASS_DROPPABLE {
		return s.refusePublish(p, stream.Errorf(stream.BadRequest, "unknown message class %d", p.Class))
	}
	if p.Critical && p.Class == pb.Class_CLASS_DROPPABLE {
		return s.replyError(stream.Errorf(stream.BadRequest, "only reliable messages can be critical"), p.RequestId, p.Channel)
	}
	if _, inbox := stream.InboxOwner(p.Channel); inbox {
		return s.refusePublish(p, stream.Errorf(stream.Forbidden, "%s is an inbox: only the server writes it (send a chat message instead)", p.Channel))
	}
	if e := s.checkConfirm(p); e != nil {
		return s.refusePublish(p, e)
	}
	if e := s.c.authorize(ActionPublish, p.Channel, p.Class == pb.Class_CLASS_DROPPABLE); e != nil {
		return s.refusePublish(p, e)
	}
	allowed := s.c.publishes == nil || s.c.publishes.Allow()
	if p.Class == pb.Class_CLASS_DROPPABLE {
		// Like reliable ones, never fanned out from replayable 0-RTT data.
		select {
		case <-s.c.tr.HandshakeComplete():
		case <-s.c.ctx.Done():
			return nil
		}
		s.c.s.counters.droppableIn.Add(1)
		if allowed {
			allowed = s.c.s.hub.fanOutDroppable(store.Message{Channel: p.Channel, Time: time.Now(), From: s.c.user, ID: p.Id, Data: p.Data})
		}
		if allowed {
			s.c.s.metrics.droppableAccepted.Add(1)
		} else {
			s.c.s.counters.droppableRateLimited.Add(1)
		}
		return s.reply(&pb.Frame{Body: &pb.Frame_PublishAck{PublishAck: &pb.PublishAck{RequestId: p.RequestId, Channel: p.Channel, Dropped: !allowed}}})
	}
	if !allowed {
		s.c.s.counters.reliableRateLimited.Add(1)
		e := stream.Errorf(stream.RateLimited, "more than %v publishes/s on this connection", s.c.s.cfg.PublishRate)
		e.RetryAfterMs = uint32(max(10, 1000/s.c.s.cfg.PublishRate))
		return s.replyError(e, p.RequestId, p.Channel)
	}
	s.pubMu.Lock()
	defer s.pubMu.Unlock()
	if s.inFlight >= s.c.s.cfg.MaxPublishesInFlight {
		s.c.s.counters.reliableRateLimited.Add(1)
		e := stream.Errorf(stream.RateLimited, "more than %d publishes awaiting the store", s.c.s.cfg.MaxPublishesInFlight)
		e.RetryAfterMs = 100
		return s.replyError(e, p.RequestId, p.Channel)
	}
	if p.Confirm != nil {
		if e := s.c.s.confirms.begin(s, p, s.c.s.hub.recipients(p.Channel)); e != nil {
			return s.refusePublish(p, e)
		}
	}
	s.pubQueue = append(s.pubQueue, p)
	s.inFlight++
	if s.publishing {
		select {
		case s.pubWake <- struct{}{}:
		default:
		}
	} else {
		s.publishing = true
		s.c.wg.Add(1)
		go func() {
			defer s.c.wg.Done()
			s.c.fail(s.publishLoop())
		}()
	}
	return nil
}

func (s *session) publishLoop() error {
	// 0-RTT data can be replayed by an attacker: store nothing before the
	// handshake has confirmed the client.
	select {
	case <-s.c.tr.HandshakeComplete():
	case <-s.c.ctx.Done():
		s.stopPublishing()
		return nil
	}
	// At most two batches in flight: one committing, the next queued behind
	// it in the store (queuingStore), which answers both together.
	var inFlight []*storing
	for {
		var batch []*pb.Publish
		s.pubMu.Lock()
		if len(inFlight) < 2 {
			batch = s.nextPublishBatch()
		}
		if len(batch) == 0 && len(inFlight) == 0 {
			// Under the same lock as publish's check: a publish queued
			// after this starts a new loop.
			s.publishing = false
			s.pubCond.Broadcast()
			s.pubMu.Unlock()
			return nil
		}
		s.pubMu.Unlock()
		if len(batch) > 0 {
			inFlight = append(inFlight, s.beginStore(batch))
		}
		wake := s.pubWake
		if len(inFlight) == 2 {
			wake = nil
		}
		select {
		case <-inFlight[0].done:
		case <-wake:
			continue
		}
		st := inFlight[0]
		inFlight = inFlight[1:]
		if err := s.answerPublishes(st); err != nil {
			s.stopPublishing()
			if errors.Is(err, stream.ErrQueueFull) {
				return err
			}
			return nil // the session's stream is gone
		}
	}
}

// storing is a batch of publishes on its way into the store.
type storing struct {
	batch   []*pb.Publish
	reqs    []store.AppendRequest
	done    <-chan struct{} // closed once results (or pending) can be read
	pending *store.Pending  // a queued append; nil: results is set
	start   time.Time       // when it was queued
	results []publishResult
}

// alreadyDone is a closed channel: what was stored at once is done.
var alreadyDone = func() chan struct{} { c := make(chan struct{}); close(c); return c }()

// beginStore queues batch in the store if it can queue (queuingStore),
// else stores it now.
func (s *session) beginStore(batch []*pb.Publish) *storing {
	st := &storing{batch: batch, done: alreadyDone}
	q, ok := s.c.s.cfg.Store.(queuingStore)
	if !ok {
		st.results = s.store(batch)
		return st
	}
	st.reqs, st.start = s.appendRequests(batch), time.Now()
	p, err := q.Queue(context.WithoutCancel(s.c.ctx), st.reqs)
	if err != nil {
		// Refused or not taken: nothing is queued, so order holds.
		st.results = s.results(st.reqs, nil, err)
		return st
	}
	st.pending, st.done = &p, p.Done()
	return st
}

// answerPublishes sends the PublishAcks (or Errors) of a stored batch.
func (s *session) answerPublishes(st *storing) error {
	batch, results := st.batch, st.results
	if st.pending != nil {
		res, err := st.pending.Result()
		s.c.s.metrics.appended(st.start, len(batch))
		results = s.results(st.reqs, res, err)
	}
	var out []byte
	for i, res := range results {
		s.c.s.metrics.published(res.AppendResult, res.err)
		out, _ = stream.AppendFrame(out, publishReply(batch[i], res))
	}
	s.pubMu.Lock()
	s.inFlight -= len(batch)
	s.pubMu.Unlock()
	err := s.send.Send(out)
	for i, p := range batch {
		if p.Confirm != nil { // after the PublishAck: progress never overtakes it
			s.c.s.confirms.stored(s, p.RequestId, results[i])
		}
	}
	return err
}

// stopPublishing ends the publish loop early: the session is going away.
func (s *session) stopPublishing() {
	s.pubMu.Lock()
	defer s.pubMu.Unlock()
	s.pubQueue, s.publishing = nil, false
	s.pubCond.Broadcast()
}

// publishResult is the store's answer to one publish.
type publishResult struct {
	store.AppendResult
	err error
}

// store appends a batch in one call. When the store refuses the call as a
// whole for what one request holds (too large, invalid), each publish is
// appended alone, so that only the culprit fails.
func (s *session) store(batch []*pb.Publish) []publishResult {
	reqs := s.appendRequests(batch)
	res, err := s.c.s.appendToStore(context.WithoutCancel(s.c.ctx), reqs) // a publish taken is finished
	return s.results(reqs, res, err)
}

// results turns the store's answer to reqs into one result per publish.
// A call refused whole for what one request holds is stored again one
// request at a time, so that only the culprit fails.
func (s *session) results(reqs []store.AppendRequest, res []store.AppendResult, err error) []publishResult {
	out := make([]publishResult, len(reqs))
	switch {
	case err == nil:
		for i := range out {
			out[i].AppendResult = res[i]
		}
	case len(reqs) > 1 && isRequestError(err):
		ctx := context.WithoutCancel(s.c.ctx)
		for i := range reqs {
			one, err := s.c.s.appendToStore(ctx, reqs[i:i+1])
			if out[i].err = err; err == nil {
				out[i].AppendResult = one[0]
			}
		}
	default:
		for i := range out {
			out[i].err = err
		}
	}
	return out
}

// appendRequests are the store's requests for batch.
func (s *session) appendRequests(batch []*pb.Publish) []store.AppendRequest {
	reqs := make([]store.AppendRequest, len(batch))
	for i, p := range batch {
		reqs[i] = store.AppendRequest{Channel: p.Channel, From: s.c.user, ID: p.Id, Data: p.Data, Critical: p.Critical}
	}
	return reqs
}

// publishReply is the PublishAck, or the Error, answering p.
func publishReply(p *pb.Publish, res publishResult) *pb.Frame {
	if res.err == nil {
		return &pb.Frame{Body: &pb.Frame_PublishAck{PublishAck: &pb.PublishAck{
			RequestId: p.RequestId, Channel: p.Channel, Epoch: res.Epoch, Seq: res.Seq, Duplicate: res.Duplicate,
		}}}
	}
	e := stream.Errorf(stream.StoreUnavailable, "publish to %s not stored: %v", p.Channel, res.err)
	e.RetryAfterMs = 500
	switch {
	case errors.Is(res.err, store.ErrTooLarge):
		e.Code, e.RetryAfterMs = stream.MessageTooLarge, 0
	case errors.Is(res.err, store.ErrInvalid):
		e.Code, e.RetryAfterMs = stream.BadRequest, 0
	}
	f := e.Frame()
	f.GetError().RequestId, f.GetError().Channel = p.RequestId, p.Channel
	return f
}

// Bounds of one Append call, well inside what any store accepts in one.
const (
	publishBatchEntries = 256
	publishBatchBytes   = 2 << 20
)

// nextPublishBatch takes the longest prefix of the queue within the batch
// bounds (at least one publish); s.pubMu held.
func (s *session) nextPublishBatch() []*pb.Publish {
	n, size := 0, 0
	for n < len(s.pubQueue) && n < publishBatchEntries {
		size += len(s.pubQueue[n].Data)
		if n > 0 && size > publishBatchBytes {
			break
		}
		n++
	}
	batch := s.pubQueue[:n:n]
	s.pubQueue = s.pubQueue[n:]
	return batch
}
