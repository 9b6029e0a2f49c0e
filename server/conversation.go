package server

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/protobuf/proto"

	"github.com/quicpush/quicpush/store"
	"github.com/quicpush/quicpush/stream"
	pb "github.com/quicpush/quicpush/stream/quicpushpb"
)

// Conversations (docs/PROTOCOL.md §15). A user's inbox "user/<name>/inbox"
// is an ordinary channel that only the server writes: messages from others,
// copies of the user's own sent messages (for the user's other devices), and
// the delivered and read receipts of the user's sent messages. Every record
// is an InboxRecord; its idempotency key makes each one exist once.

// Record ids the server writes. They start with a control character, which
// ValidateChatID refuses in client ids, so the two never collide.
func sentCopyID(to, id string) string { return "\x00s " + to + " " + id }
func receiptID(kind pb.InboxRecord_Kind, epoch, seq uint64) string {
	k := "d"
	if kind == pb.InboxRecord_KIND_READ {
		k = "r"
	}
	return fmt.Sprintf("\x00%s %d %d", k, epoch, seq)
}

// receiptCursor names where the receipts of user's inbox have been issued
// up to, in the store's cursors. A space makes it an invalid channel name,
// so no client Ack can move it.
func receiptCursor(inbox string) string { return inbox + " delivered" }

func record(r *pb.InboxRecord) []byte {
	b, _ := proto.Marshal(r) // a plain message: cannot fail
	return b
}

// chatQueue holds a session's ChatSends awaiting the store, in arrival order.
type chatQueue struct {
	mu      sync.Mutex
	queue   []*pb.ChatSend
	running bool
}

// chatSend validates a ChatSend and queues it; the session's chat loop
// stores queued sends in order, many per store call.
func (s *session) chatSend(m *pb.ChatSend) error {
	to := stream.InboxChannel(m.To)
	refuse := func(e *stream.Error) error {
		s.c.s.metrics.refused.Add(1)
		return s.replyError(e, m.RequestId, to)
	}
	if err := stream.ValidateChatUser(m.To); err != nil {
		return refuse(err.(*stream.Error))
	}
	if err := stream.ValidateChatUser(s.c.user); err != nil {
		return refuse(stream.Errorf(stream.BadRequest, "you (%q) cannot send chat messages: %v", s.c.user, err.(*stream.Error).Message))
	}
	if m.To == s.c.user {
		return refuse(stream.Errorf(stream.BadRequest, "a chat message to yourself: send it to someone else"))
	}
	if err := stream.ValidateChatID(m.Id); err != nil {
		return refuse(err.(*stream.Error))
	}
	if len(m.Data) > stream.MaxChatSize {
		return refuse(stream.Errorf(stream.MessageTooLarge, "chat message of %d bytes exceeds %d", len(m.Data), stream.MaxChatSize))
	}
	if e := s.c.authorize(ActionChat, to, false); e != nil {
		return refuse(e)
	}
	if s.c.publishes != nil && !s.c.publishes.Allow() {
		s.c.s.counters.reliableRateLimited.Add(1)
		e := stream.Errorf(stream.RateLimited, "more than %v publishes/s on this connection", s.c.s.cfg.PublishRate)
		e.RetryAfterMs = uint32(max(10, 1000/s.c.s.cfg.PublishRate))
		return s.replyError(e, m.RequestId, to)
	}
	q := &s.chat
	q.mu.Lock()
	defer q.mu.Unlock()
	if len(q.queue) >= s.c.s.cfg.MaxPublishesInFlight {
		s.c.s.counters.reliableRateLimited.Add(1)
		e := stream.Errorf(stream.RateLimited, "more than %d chat messages awaiting the store", s.c.s.cfg.MaxPublishesInFlight)
		e.RetryAfterMs = 100
		return s.replyError(e, m.RequestId, to)
	}
	q.queue = append(q.queue, m)
	if !q.running {
		q.running = true
		s.c.wg.Add(1)
		s.work.Add(1)
		go func() {
			defer s.c.wg.Done()
			defer s.work.Done()
			s.c.fail(s.chatLoop())
		}()
	}
	return nil
}

func (s *session) chatLoop() error {
	q := &s.chat
	// Like publishes: nothing from replayable 0-RTT data is stored.
	select {
	case <-s.c.tr.HandshakeComplete():
	case <-s.c.ctx.Done():
		q.mu.Lock()
		q.queue, q.running = nil, false
		q.mu.Unlock()
		return nil
	}
	for {
		q.mu.Lock()
		// Two records a send (the inbox's and the sender's copy): half the
		// publish batch bounds, by count and by bytes.
		n, size := 0, 0
		for n < len(q.queue) && n < publishBatchEntries/2 {
			size += 2 * len(q.queue[n].Data)
			if n > 0 && size > publishBatchBytes {
				break
			}
			n++
		}
		batch := q.queue[:n:n]
		q.queue = q.queue[n:]
		if n == 0 {
			q.running = false
			q.mu.Unlock()
			return nil
		}
		q.mu.Unlock()
		var out []byte
		for _, f := range s.storeChats(batch) {
			out, _ = stream.AppendFrame(out, f)
		}
		if err := s.send.Send(out); err != nil {
			if errors.Is(err, stream.ErrQueueFull) {
				return err
			}
			return nil // the session's stream is gone; the client sends again
		}
	}
}

// storeChats appends each send to the recipient's inbox and its copy to the
// sender's, in one store call, and returns the answers. The message's
// record goes first, so a send is acknowledged only once both are durable;
// a retransmitted send finds both keys and stores nothing.
func (s *session) storeChats(batch []*pb.ChatSend) []*pb.Frame {
	user := s.c.user
	reqs := make([]store.AppendRequest, 0, 2*len(batch))
	for _, m := range batch {
		reqs = append(reqs,
			store.AppendRequest{Channel: stream.InboxChannel(m.To), From: user, ID: m.Id,
				Data: record(&pb.InboxRecord{Kind: pb.InboxRecord_KIND_MESSAGE, Peer: user, Id: m.Id, Data: m.Data})},
			store.AppendRequest{Channel: stream.InboxChannel(user), From: user, ID: sentCopyID(m.To, m.Id),
				Data: record(&pb.InboxRecord{Kind: pb.InboxRecord_KIND_SENT, Peer: m.To, Id: m.Id, Data: m.Data})})
	}
	ctx := context.WithoutCancel(s.c.ctx) // a send taken is finished
	results := make([]publishResult, len(batch))
	res, err := s.c.s.appendToStore(ctx, reqs)
	for i := range batch {
		switch {
		case err == nil:
			results[i].AppendResult = res[2*i]
		case len(batch) > 1 && isRequestError(err):
			one, err := s.c.s.appendToStore(ctx, reqs[2*i:2*i+2]) // only the culprit fails
			if results[i].err = err; err == nil {
				results[i].AppendResult = one[0]
			}
		default:
			results[i].err = err
		}
	}
	frames := make([]*pb.Frame, len(batch))
	for i, m := range batch {
		s.c.s.metrics.published(results[i].AppendResult, results[i].err)
		if results[i].err == nil {
			if results[i].Duplicate {
				s.c.s.metrics.chat.duplicates.Add(1)
			} else {
				s.c.s.metrics.chat.stored.Add(1)
			}
		}
		frames[i] = publishReply(&pb.Publish{RequestId: m.RequestId, Channel: stream.InboxChannel(m.To)}, results[i])
	}
	return frames
}

// receiptRead answers a ReceiptRead: a READ receipt in the sender's inbox
// for a message of the user's inbox that the user's clients acknowledged.
// It runs on a goroutine of its own: it reads the store.
func (s *session) receiptRead(r *pb.ReceiptRead) {
	inbox := stream.InboxChannel(s.c.user)
	fail := func(e *stream.Error) {
		s.c.s.metrics.refused.Add(1)
		s.replyError(e, r.RequestId, inbox)
	}
	select {
	case <-s.c.tr.HandshakeComplete():
	case <-s.c.ctx.Done():
		return
	}
	if err := stream.ValidateChatUser(s.c.user); err != nil {
		fail(err.(*stream.Error))
		return
	}
	ctx := s.c.ctx
	st := s.c.s.cfg.Store
	storeErr := func(err error) {
		e := stream.Errorf(stream.StoreUnavailable, "cannot read %s: %v", inbox, err)
		e.RetryAfterMs = 500
		fail(e)
	}
	b, err := st.Bounds(ctx, inbox)
	if err != nil {
		storeErr(err)
		return
	}
	if r.Epoch != b.Epoch {
		fail(stream.Errorf(stream.WrongEpoch, "epoch %d is not the current epoch %d of %s", r.Epoch, b.Epoch, inbox))
		return
	}
	acked, err := s.c.s.cursors.cursor(ctx, s.c.user, inbox)
	if err != nil {
		storeErr(err)
		return
	}
	if r.Seq == 0 || acked.Epoch != b.Epoch || r.Seq > acked.Seq {
		fail(stream.Errorf(stream.NotDelivered, "seq %d of %s was never acknowledged by your clients (acknowledged up to %d): a message is read only after it was delivered",
			r.Seq, inbox, ackedSeq(acked, b.Epoch)))
		return
	}
	msgs, err := st.Range(ctx, inbox, r.Seq, r.Seq, 1)
	if err != nil {
		storeErr(err)
		return
	}
	if len(msgs) == 0 {
		fail(stream.Errorf(stream.InvalidRange, "seq %d of %s has expired (first retained %d)", r.Seq, inbox, b.First))
		return
	}
	m := msgs[0]
	var rec pb.InboxRecord
	if err := proto.Unmarshal(m.Data, &rec); err != nil || rec.Kind != pb.InboxRecord_KIND_MESSAGE || stream.ValidateChatUser(m.From) != nil {
		fail(stream.Errorf(stream.BadRequest, "seq %d of %s is not a message from another user", r.Seq, inbox))
		return
	}
	// Delivered comes before read: issue the delivered receipts up to this
	// message that the receipt worker may not have issued yet (the ack
	// came just before, on the same stream). Issuing twice stores nothing.
	if err := s.c.s.receipts.issue(ctx, s.c.user, store.Position{Epoch: b.Epoch, Seq: r.Seq}); err != nil {
		storeErr(err)
		return
	}
	req := receiptRequest(pb.InboxRecord_KIND_READ, s.c.user, m)
	res, err := s.c.s.appendToStore(context.WithoutCancel(ctx), []store.AppendRequest{req})
	var pr publishResult
	if pr.err = err; err == nil {
		pr.AppendResult = res[0]
		countNew(&s.c.s.metrics.chat.read, res)
	}
	s.reply(publishReply(&pb.Publish{RequestId: r.RequestId, Channel: req.Channel}, pr))
}

func ackedSeq(p store.Position, epoch uint64) uint64 {
	if p.Epoch != epoch {
		return 0
	}
	return p.Seq
}

// receiptRequest is the receipt of kind for message m of user's inbox, to
// be appended to m's sender's inbox.
func receiptRequest(kind pb.InboxRecord_Kind, user string, m store.Message) store.AppendRequest {
	return store.AppendRequest{
		Channel: stream.InboxChannel(m.From), From: user, ID: receiptID(kind, m.Epoch, m.Seq),
		Data: record(&pb.InboxRecord{Kind: kind, Peer: user, Id: m.ID, PeerEpoch: m.Epoch, PeerSeq: m.Seq}),
	}
}

// acked records that user has handled channel up to pos (an Ack frame, or
// one riding on an InboxPull); on the user's own inbox it also has the
// delivered receipts issued.
func (s *Server) acked(user, channel string, pos store.Position) {
	s.cursors.set(user, channel, pos)
	if owner, ok := stream.InboxOwner(channel); ok && owner == user {
		s.receipts.acked(user, pos)
	}
}

// receipts issues delivered receipts: when a user's cursor on their inbox
// passes messages from others, each sender gets one DELIVERED record in
// their own inbox. One goroutine per user at a time walks the inbox from
// where the last receipts were issued (a cursor in the store) to the new
// position; the receipts' idempotency keys make a walk that is repeated
// (after a crash, by two devices) issue nothing twice.
type receipts struct {
	s       *Server
	mu      sync.Mutex
	pending map[string]store.Position // user -> position to issue up to
	running map[string]bool
}

func newReceipts(s *Server) *receipts {
	return &receipts{s: s, pending: map[string]store.Position{}, running: map[string]bool{}}
}

func (r *receipts) acked(user string, pos store.Position) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if p, ok := r.pending[user]; ok && p.Covers(pos) {
		return
	}
	r.pending[user] = pos
	if r.running[user] || r.s.ctx.Err() != nil {
		return
	}
	r.running[user] = true
	r.s.wg.Add(1)
	go func() {
		defer r.s.wg.Done()
		r.run(user)
	}()
}

// receiptRetry is the wait before issuing receipts again after a store error.
const receiptRetry = time.Second

func (r *receipts) run(user string) {
	ctx := r.s.ctx
	for {
		r.mu.Lock()
		pos, ok := r.pending[user]
		delete(r.pending, user)
		if !ok || ctx.Err() != nil {
			delete(r.running, user)
			r.mu.Unlock()
			return
		}
		r.mu.Unlock()
		err := r.issue(ctx, user, pos)
		if err == nil {
			continue
		}
		if ctx.Err() == nil {
			r.s.log.Warn("cannot issue delivered receipts, will retry", "user", user, "err", err)
		}
		r.mu.Lock()
		if _, newer := r.pending[user]; !newer {
			r.pending[user] = pos
		}
		r.mu.Unlock()
		select {
		case <-ctx.Done():
		case <-time.After(receiptRetry):
		}
	}
}

// issue appends the delivered receipts of user's inbox up to pos.
func (r *receipts) issue(ctx context.Context, user string, pos store.Position) error {
	st := r.s.cfg.Store
	inbox := stream.InboxChannel(user)
	b, err := st.Bounds(ctx, inbox)
	if err != nil || b.Epoch == 0 || pos.Epoch != b.Epoch {
		return err // an ack of a lost history delivers nothing of this one
	}
	done, err := st.Cursor(ctx, user, receiptCursor(inbox))
	if err != nil {
		return err
	}
	from := max(b.First, 1)
	if done.Epoch == b.Epoch {
		from = max(from, done.Seq+1)
	}
	to := min(pos.Seq, b.Last) // an ack beyond the head delivers nothing more
	for from <= to {
		msgs, err := st.Range(ctx, inbox, from, to, repairPage)
		if err != nil || len(msgs) == 0 {
			return err
		}
		var reqs []store.AppendRequest
		for _, m := range msgs {
			var rec pb.InboxRecord
			if proto.Unmarshal(m.Data, &rec) != nil || rec.Kind != pb.InboxRecord_KIND_MESSAGE || m.From == user || stream.ValidateChatUser(m.From) != nil {
				continue
			}
			reqs = append(reqs, receiptRequest(pb.InboxRecord_KIND_DELIVERED, user, m))
		}
		if len(reqs) > 0 {
			res, err := r.s.appendToStore(ctx, reqs)
			if err != nil {
				return err
			}
			countNew(&r.s.metrics.chat.delivered, res)
		}
		last := msgs[len(msgs)-1].Seq
		if err := st.SetCursors(ctx, []store.Cursor{{User: user, Channel: receiptCursor(inbox), Pos: store.Position{Epoch: b.Epoch, Seq: last}}}); err != nil {
			return err
		}
		from = last + 1
	}
	return nil
}

// chatMetrics count conversations (docs/OPERATIONS.md).
type chatMetrics struct {
	stored, duplicates  atomic.Uint64 // chat messages
	delivered, read     atomic.Uint64 // receipts stored (repeats not counted)
	pages, pageMessages atomic.Uint64 // offline pages served
}

var (
	descChatMessages = desc("chat_messages_total",
		"Chat messages (ChatSend) by outcome: stored (in the recipient's inbox, with the sender's copy) or duplicate (a retransmission of one stored). Refused and failed ones count in quicpush_publishes_total.", "outcome")
	descReceipts = desc("receipts_total",
		"Receipts stored in senders' inboxes, by kind: delivered (the recipient's client acknowledged the message) or read (MarkRead). Repeats store nothing and are not counted.", "kind")
	descInboxPages = desc("inbox_pages_total",
		"Offline pages served (InboxPull answered with an InboxPage).")
	descInboxPageMessages = desc("inbox_page_messages_total",
		"Messages sent in offline pages.")
)

func (m *chatMetrics) collect(counter func(*prometheus.Desc, *atomic.Uint64, ...string)) {
	counter(descChatMessages, &m.stored, "stored")
	counter(descChatMessages, &m.duplicates, "duplicate")
	counter(descReceipts, &m.delivered, "delivered")
	counter(descReceipts, &m.read, "read")
	counter(descInboxPages, &m.pages)
	counter(descInboxPageMessages, &m.pageMessages)
}

// countNew adds the results that stored something new to c.
func countNew(c *atomic.Uint64, res []store.AppendResult) {
	for _, r := range res {
		if !r.Duplicate {
			c.Add(1)
		}
	}
}
