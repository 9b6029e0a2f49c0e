package client

import (
	"context"
	"errors"
	"fmt"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/quicpush/quicpush/stream"
	pb "github.com/quicpush/quicpush/stream/quicpushpb"
)

// Conversations (docs/PROTOCOL.md §15): a 1:1 message goes to the
// recipient's inbox channel "user/<name>/inbox", which the server writes
// and each user subscribes to with Inbox; receipts of the messages a user
// sent come back through the sender's own inbox.

// DefaultChatSession is the business session chat requests and the inbox
// subscription use unless told otherwise.
const DefaultChatSession = "chat"

// SendOptions qualify a Send.
type SendOptions struct {
	// ID is the client message id: sending the same ID to the same user
	// again stores nothing new and returns the original seq. Empty: a
	// random one, kept across the Client's own retransmissions.
	ID string
	// Session is the business session to send on. Empty: "chat".
	Session string
}

// Send sends data to user to and waits for the server's acknowledgement:
// the message is stored once, durably, in to's inbox (Seq is its seq
// there). The request is retransmitted across reconnects until
// acknowledged or ctx ends; after ctx ends, send again with the same ID.
// The delivered and read receipts arrive later in this user's Inbox.
func (c *Client) Send(ctx context.Context, to string, data []byte, opts SendOptions) (PublishResult, error) {
	if err := stream.ValidateChatUser(to); err != nil {
		return PublishResult{}, err
	}
	if len(data) > stream.MaxChatSize {
		return PublishResult{}, stream.Errorf(stream.MessageTooLarge, "chat message of %d bytes exceeds %d", len(data), stream.MaxChatSize)
	}
	id := opts.ID
	if id == "" {
		id = newMessageID()
	}
	if err := stream.ValidateChatID(id); err != nil {
		return PublishResult{}, err
	}
	res, err := c.chatSession(opts.Session).request(ctx, false, func(reqID uint64) *pb.Frame {
		return &pb.Frame{Body: &pb.Frame_ChatSend{ChatSend: &pb.ChatSend{RequestId: reqID, To: to, Id: id, Data: data}}}
	})
	res.ID = id
	return res, err
}

// MarkRead tells the sender of m, a message from this user's Inbox, that
// it was read: the server appends one READ receipt to the sender's inbox
// (marking it again stores nothing new). Only a message the Inbox has
// handled (delivered) can be marked; others get NOT_DELIVERED. It goes on
// the session of the Inbox that handed m over, behind the acknowledgement
// that the Inbox holds back (AckDelay), so a message marked as soon as its
// handler returned is known as delivered. Another goroutine that learned of
// m inside its handler calls Inbox.WaitHandled first.
func (c *Client) MarkRead(ctx context.Context, m ChatMessage) error {
	if m.Seq == 0 {
		return stream.Errorf(stream.BadRequest, "not a message of the inbox (seq 0)")
	}
	_, err := c.chatSession(m.session).request(ctx, true, func(reqID uint64) *pb.Frame {
		return &pb.Frame{Body: &pb.Frame_ReceiptRead{ReceiptRead: &pb.ReceiptRead{RequestId: reqID, Epoch: m.Epoch, Seq: m.Seq}}}
	})
	return err
}

// User returns the user the server took this client to be (from its
// token), waiting for a connection up to ctx.
func (c *Client) User(ctx context.Context) (string, error) {
	conn, err := c.current(ctx)
	if err != nil {
		return "", err
	}
	return conn.user, nil
}

func (c *Client) chatSession(name string) *Session {
	if name == "" {
		name = DefaultChatSession
	}
	return c.Session(name)
}

// request sends a request frame that the server answers with a PublishAck
// or an Error, retransmitting it on every new connection (and after a
// retryable error) until answered, like a reliable Publish. With afterAcks
// the session's held-back acknowledgements go first, on the same stream.
func (s *Session) request(ctx context.Context, afterAcks bool, frame func(reqID uint64) *pb.Frame) (PublishResult, error) {
	if conn, err := s.c.current(ctx); err != nil {
		return PublishResult{}, err
	} else if err := conn.requireInbox(); err != nil {
		return PublishResult{}, err
	}
	p := &pendingPublish{done: make(chan struct{})}
	s.mu.Lock()
	s.nextReq++
	reqID := s.nextReq
	p.frame = frame(reqID)
	s.pubs[reqID] = p
	if s.send != nil {
		// On failure the connection ends and resume resends it (behind the acks).
		if afterAcks {
			s.sendAcks(p.frame)
		} else {
			s.send.SendFrames(p.frame)
		}
	}
	s.mu.Unlock()
	select {
	case <-p.done:
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

// ChatMessage is a 1:1 message in an inbox.
type ChatMessage struct {
	From, To string
	ID       string // the sender's client message id
	Data     []byte
	// Epoch and Seq place the record in the inbox it was read from (the
	// recipient's for OnMessage, the sender's own for OnSent).
	Epoch, Seq uint64
	Time       time.Time // when the server stored it

	session string // of the Inbox that handed it over, for MarkRead
}

// ReceiptKind says what a receipt reports.
type ReceiptKind int

const (
	Delivered ReceiptKind = iota // the recipient's client handled the message
	Read                         // the recipient marked it read (MarkRead)
)

func (k ReceiptKind) String() string { return [...]string{"delivered", "read"}[k] }

// Receipt reports what happened to a message this user sent.
type Receipt struct {
	Kind ReceiptKind
	Peer string // the recipient
	ID   string // the message's client message id
	// PeerEpoch and PeerSeq place the message in the recipient's inbox (the
	// Seq Send returned).
	PeerEpoch, PeerSeq uint64
	Epoch, Seq         uint64 // the receipt's own place in this user's inbox
	Time               time.Time
}

// InboxOptions say what to do with the records of the user's inbox. Every
// callback runs on the inbox's one goroutine, in the inbox's order, each
// record once; returning an error ends the inbox (OnError is told) with
// that record not handled.
type InboxOptions struct {
	// OnMessage gets the messages other users sent. Required.
	OnMessage func(ChatMessage) error
	// OnSent gets a copy of each message this user sent, from any of its
	// devices (multi-device sync). Nil: ignored.
	OnSent func(ChatMessage) error
	// OnReceipt gets the delivered and read receipts of this user's sent
	// messages, one of each kind per message at most. Nil: ignored.
	OnReceipt func(Receipt) error
	// OnWaiting is told, on every (re)connect before the first page, how
	// many records wait.
	OnWaiting func(Waiting)
	// OnGap is told of records lost to retention or a reset history.
	OnGap   func(Gap) error
	OnError func(error)
	// Session is the business session. Empty: "chat".
	Session string
	// Since and Observe are as in SubscribeOptions: start after a seq when
	// the PositionStore has no position; never acknowledge (a watcher that
	// must not mark messages delivered).
	Since   *uint64
	Observe bool
}

// Inbox is the user's subscription to their own inbox.
type Inbox struct {
	sub  *Subscription
	user string
}

// Inbox subscribes to this user's inbox ("user/<user>/inbox", the user the
// server took the client to be): from the position in the PositionStore,
// else after the user's acknowledged cursor, so another device of the user
// does not get again what one has handled. The backlog is pulled in
// offline pages, counts first (OnWaiting); then live.
func (c *Client) Inbox(ctx context.Context, opts InboxOptions) (*Inbox, error) {
	if opts.OnMessage == nil {
		return nil, errors.New("client: InboxOptions.OnMessage is required")
	}
	conn, err := c.current(ctx)
	if err != nil {
		return nil, err
	}
	if err := conn.requireInbox(); err != nil {
		return nil, err
	}
	if err := stream.ValidateChatUser(conn.user); err != nil {
		return nil, err
	}
	ib := &Inbox{user: conn.user}
	sub, err := c.chatSession(opts.Session).Subscribe(ctx, stream.InboxChannel(conn.user), SubscribeOptions{
		OnGap: opts.OnGap, OnError: opts.OnError, OnWaiting: opts.OnWaiting, Paged: true, Since: opts.Since, Observe: opts.Observe,
	}, func(m Message) error { return ib.handle(c, opts, m) })
	if err != nil {
		return nil, err
	}
	ib.sub = sub
	return ib, nil
}

// User is the inbox's owner.
func (ib *Inbox) User() string { return ib.user }

// Close ends the subscription; records not yet handled are not handed over.
func (ib *Inbox) Close() { ib.sub.Close() }

// WaitHandled waits until the Inbox has finished handling m: its handler
// returned and its position is saved and acknowledged (held back, then
// sent ahead of a MarkRead). A program that learns from inside a handler
// that it is done (the last message printed, say) calls it before
// MarkRead; never from m's own handler, which it would wait for. An
// Observe inbox acknowledges nothing: it returns at once.
func (ib *Inbox) WaitHandled(ctx context.Context, m ChatMessage) error {
	ch := ib.sub.ch
	if ch.observe {
		return nil
	}
	// Polled: the channel's progress signal wakes one waiter, its page
	// puller's.
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for {
		ch.mu.Lock()
		h, closed := ch.handled, ch.closed
		ch.mu.Unlock()
		switch {
		case h.Epoch == m.Epoch && h.Seq >= m.Seq:
			return nil
		case closed:
			return errors.New("client: the inbox subscription ended before the message was handled")
		}
		select {
		case <-tick.C:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

func (ib *Inbox) handle(c *Client, opts InboxOptions, m Message) error {
	e, err := DecodeInbox(ib.user, m)
	switch {
	case err != nil:
		// Only the server writes inboxes: this is not a record of ours.
		c.log.Warn("skipping an inbox message that is not a record", "channel", m.Channel, "seq", m.Seq, "err", err)
	case e.Message != nil:
		msg := *e.Message
		msg.session = opts.Session
		return opts.OnMessage(msg)
	case e.Sent != nil && opts.OnSent != nil:
		return opts.OnSent(*e.Sent)
	case e.Receipt != nil && opts.OnReceipt != nil:
		return opts.OnReceipt(*e.Receipt)
	}
	return nil
}

// InboxEntry is one decoded record of an inbox: exactly one field is set.
type InboxEntry struct {
	Message *ChatMessage // from another user
	Sent    *ChatMessage // a copy of one the owner sent
	Receipt *Receipt     // of one the owner sent
}

// DecodeInbox decodes message m of user's inbox (from a Page, say).
func DecodeInbox(user string, m Message) (InboxEntry, error) {
	var rec pb.InboxRecord
	if err := proto.Unmarshal(m.Data, &rec); err != nil {
		return InboxEntry{}, fmt.Errorf("client: inbox record %d: %w", m.Seq, err)
	}
	switch rec.Kind {
	case pb.InboxRecord_KIND_MESSAGE:
		return InboxEntry{Message: &ChatMessage{From: rec.Peer, To: user, ID: rec.Id, Data: rec.Data, Epoch: m.Epoch, Seq: m.Seq, Time: m.Time}}, nil
	case pb.InboxRecord_KIND_SENT:
		return InboxEntry{Sent: &ChatMessage{From: user, To: rec.Peer, ID: rec.Id, Data: rec.Data, Epoch: m.Epoch, Seq: m.Seq, Time: m.Time}}, nil
	case pb.InboxRecord_KIND_DELIVERED, pb.InboxRecord_KIND_READ:
		kind := Delivered
		if rec.Kind == pb.InboxRecord_KIND_READ {
			kind = Read
		}
		return InboxEntry{Receipt: &Receipt{Kind: kind, Peer: rec.Peer, ID: rec.Id, PeerEpoch: rec.PeerEpoch, PeerSeq: rec.PeerSeq, Epoch: m.Epoch, Seq: m.Seq, Time: m.Time}}, nil
	}
	return InboxEntry{}, fmt.Errorf("client: inbox record %d of unknown kind %d", m.Seq, rec.Kind)
}
