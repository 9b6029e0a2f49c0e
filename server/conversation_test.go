package server_test

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"google.golang.org/protobuf/proto"

	"github.com/quicpush/quicpush/client"
	"github.com/quicpush/quicpush/internal/netem"
	"github.com/quicpush/quicpush/server"
	"github.com/quicpush/quicpush/stream"
	pb "github.com/quicpush/quicpush/stream/quicpushpb"
)

// inboxRec records what an Inbox hands over, in order.
type inboxRec struct {
	mu       sync.Mutex
	order    []string // "waiting", "message", "receipt", "sent": the order of callbacks
	waiting  []client.Waiting
	msgs     []client.ChatMessage
	receipts []client.Receipt
	sent     []client.ChatMessage
	// block, if set, is called before message n (1-based) is handled.
	block func(n int)
}

func (r *inboxRec) options() client.InboxOptions {
	return client.InboxOptions{
		OnWaiting: func(w client.Waiting) {
			r.mu.Lock()
			defer r.mu.Unlock()
			r.order = append(r.order, "waiting")
			r.waiting = append(r.waiting, w)
		},
		OnMessage: func(m client.ChatMessage) error {
			r.mu.Lock()
			n := len(r.msgs) + 1
			block := r.block
			r.mu.Unlock()
			if block != nil {
				block(n)
			}
			r.mu.Lock()
			defer r.mu.Unlock()
			r.order = append(r.order, "message")
			r.msgs = append(r.msgs, m)
			return nil
		},
		OnSent: func(m client.ChatMessage) error {
			r.mu.Lock()
			defer r.mu.Unlock()
			r.sent = append(r.sent, m)
			return nil
		},
		OnReceipt: func(rc client.Receipt) error {
			r.mu.Lock()
			defer r.mu.Unlock()
			r.receipts = append(r.receipts, rc)
			return nil
		},
	}
}

func (r *inboxRec) messages() []client.ChatMessage {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]client.ChatMessage(nil), r.msgs...)
}

func (r *inboxRec) receiptsOf(kind client.ReceiptKind) []client.Receipt {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []client.Receipt
	for _, rc := range r.receipts {
		if rc.Kind == kind {
			out = append(out, rc)
		}
	}
	return out
}

// requireMessages asserts that the inbox got exactly the messages
// from -> n sent with ids prefix-1..prefix-n, once each, in order.
func (r *inboxRec) requireMessages(t *testing.T, from, prefix string, n int) {
	t.Helper()
	msgs := r.messages()
	require.Len(t, msgs, n)
	for i, m := range msgs {
		require.Equal(t, fmt.Sprintf("%s-%d", prefix, i+1), m.ID, "message %d", i+1)
		require.Equal(t, from, m.From)
		require.Equal(t, fmt.Sprintf("hello %d", i+1), string(m.Data))
		if i > 0 {
			require.Greater(t, m.Seq, msgs[i-1].Seq, "order")
		}
	}
}

// requireOneReceiptEach asserts one receipt of kind per id prefix-1..prefix-n.
func requireOneReceiptEach(t *testing.T, receipts []client.Receipt, peer, prefix string, n int) {
	t.Helper()
	seen := map[string]int{}
	for _, rc := range receipts {
		require.Equal(t, peer, rc.Peer)
		seen[rc.ID]++
	}
	require.Len(t, seen, n, "receipts for %d distinct messages", len(seen))
	for i := 1; i <= n; i++ {
		require.Equal(t, 1, seen[fmt.Sprintf("%s-%d", prefix, i)], "receipts of %s-%d", prefix, i)
	}
}

// storedRecords counts the records of kind in user's inbox, read from the
// store itself.
func storedRecords(t *testing.T, ts *testServer, user string, kind pb.InboxRecord_Kind) int {
	t.Helper()
	ctx := context.Background()
	inbox := stream.InboxChannel(user)
	b, err := ts.Store.Bounds(ctx, inbox)
	require.NoError(t, err)
	if b.Last == 0 {
		return 0
	}
	msgs, err := ts.Store.Range(ctx, inbox, 1, b.Last, int(b.Last))
	require.NoError(t, err)
	n := 0
	for _, m := range msgs {
		var rec pb.InboxRecord
		require.NoError(t, proto.Unmarshal(m.Data, &rec))
		if rec.Kind == kind {
			n++
		}
	}
	return n
}

func sendN(t *testing.T, c *client.Client, to, prefix string, n int) []client.PublishResult {
	t.Helper()
	out := make([]client.PublishResult, n)
	for i := range n {
		res, err := c.Send(context.Background(), to, fmt.Appendf(nil, "hello %d", i+1), client.SendOptions{ID: fmt.Sprintf("%s-%d", prefix, i+1)})
		require.NoError(t, err)
		require.Equal(t, stream.InboxChannel(to), res.Channel)
		out[i] = res
	}
	return out
}

// A -> B while B is offline; A goes offline too. B connects: the count
// comes first, then the backlog in pages, every message once, in order.
// A comes back on a new connection and gets exactly one "delivered" per
// message, then one "read" for the message B marked read.
func TestChatOfflineCountsThenPagesDeliveredOnce(t *testing.T) {
	ts := runServer(t, server.Config{InboxPageSize: 100})
	ctx := context.Background()
	const n = 250
	aliceState := client.NewMemoryStore()
	alice := dial(t, ts, client.Config{Token: "alice", State: aliceState})
	aliceRec := &inboxRec{}
	_, err := alice.Inbox(ctx, aliceRec.options())
	require.NoError(t, err)
	sent := sendN(t, alice, "bob", "m", n)
	for i, res := range sent {
		require.Equal(t, uint64(i+1), res.Seq)
		require.False(t, res.Duplicate)
	}
	// Alice's own inbox holds the copies of what she sent (other devices).
	require.Eventually(t, func() bool { aliceRec.mu.Lock(); defer aliceRec.mu.Unlock(); return len(aliceRec.sent) == n }, 10*time.Second, 5*time.Millisecond)
	pages := alice.Stats().Pages
	require.NoError(t, alice.Close())

	bobRec := &inboxRec{}
	bob := dial(t, ts, client.Config{Token: "bob"})
	_, err = bob.Inbox(ctx, bobRec.options())
	require.NoError(t, err)
	require.Eventually(t, func() bool { return len(bobRec.messages()) == n }, 20*time.Second, 5*time.Millisecond)
	bobRec.requireMessages(t, "alice", "m", n)
	bobRec.mu.Lock()
	require.Equal(t, "waiting", bobRec.order[0], "the count comes before the messages")
	require.Equal(t, uint64(n), bobRec.waiting[0].Count)
	require.Equal(t, 100, bobRec.waiting[0].PageSize)
	bobRec.mu.Unlock()
	require.Equal(t, uint64(3), bob.Stats().Pages, "250 messages in pages of 100")

	// Alice comes back on a new connection: her position says she has
	// handled her sent copies, so only the receipts come.
	aliceRec = &inboxRec{}
	alice = dial(t, ts, client.Config{Token: "alice", State: aliceState})
	_, err = alice.Inbox(ctx, aliceRec.options())
	require.NoError(t, err)
	require.Eventually(t, func() bool { return len(aliceRec.receiptsOf(client.Delivered)) >= n }, 20*time.Second, 5*time.Millisecond)
	requireOneReceiptEach(t, aliceRec.receiptsOf(client.Delivered), "bob", "m", n)
	for _, rc := range aliceRec.receiptsOf(client.Delivered) {
		require.Equal(t, sent[0].Epoch, rc.PeerEpoch)
	}

	// Read receipts: marking a message twice stores one receipt.
	first := bobRec.messages()[0]
	require.NoError(t, bob.MarkRead(ctx, first))
	require.NoError(t, bob.MarkRead(ctx, first))
	require.Eventually(t, func() bool { return len(aliceRec.receiptsOf(client.Read)) == 1 }, 10*time.Second, 5*time.Millisecond)
	read := aliceRec.receiptsOf(client.Read)[0]
	require.Equal(t, "m-1", read.ID)
	require.Equal(t, first.Seq, read.PeerSeq)

	// The store holds one record of each, whatever the clients did.
	require.Equal(t, n, storedRecords(t, ts, "bob", pb.InboxRecord_KIND_MESSAGE))
	require.Equal(t, n, storedRecords(t, ts, "alice", pb.InboxRecord_KIND_SENT))
	require.Equal(t, n, storedRecords(t, ts, "alice", pb.InboxRecord_KIND_DELIVERED))
	require.Equal(t, 1, storedRecords(t, ts, "alice", pb.InboxRecord_KIND_READ))
	require.Len(t, aliceRec.receiptsOf(client.Delivered), n)
	aliceRec.mu.Lock()
	require.Empty(t, aliceRec.sent, "her copies were handled before she reconnected")
	aliceRec.mu.Unlock()

	// The metrics say the same.
	require.Equal(t, float64(n), metricValue(t, ts.Metrics, "quicpush_chat_messages_total", "outcome", "stored"))
	require.Equal(t, float64(n), metricValue(t, ts.Metrics, "quicpush_receipts_total", "kind", "delivered"))
	require.Equal(t, 1.0, metricValue(t, ts.Metrics, "quicpush_receipts_total", "kind", "read"))
	pages += bob.Stats().Pages + alice.Stats().Pages
	require.Equal(t, float64(pages), metricValue(t, ts.Metrics, "quicpush_inbox_pages_total"), "as many as the clients pulled")
	require.GreaterOrEqual(t, metricValue(t, ts.Metrics, "quicpush_inbox_page_messages_total"), float64(n), "bob was offline: all his came in pages")

}

// A's acknowledgement is lost (the relay drops everything to A once the
// message is stored): A's connection stalls, A reconnects and sends the
// same request again; the server stores nothing new and answers with the
// original seq. B sees the message once; A gets one "delivered".
func TestChatAckLostSenderRetransmits(t *testing.T) {
	ts := runServer(t, server.Config{Heartbeat: time.Second})
	relay, err := netem.Start(context.Background(), netem.Config{Upstream: ts.Addr, Logger: quietLog})
	require.NoError(t, err)
	defer relay.Close()
	ctx := context.Background()

	behind := &testServer{Server: ts.Server, Addr: relay.Addr().String(), CA: ts.CA}
	var lost atomic.Bool // the client gave up its connection
	alice := dial(t, behind, client.Config{Token: "alice", ReconnectMin: 50 * time.Millisecond, ReconnectMax: 200 * time.Millisecond,
		OnState: func(s client.State) {
			if s == client.Connecting {
				lost.Store(true)
			}
		}})
	aliceRec := &inboxRec{}
	_, err = alice.Inbox(ctx, aliceRec.options())
	require.NoError(t, err)
	sendN(t, alice, "bob", "m", 1) // m-1 goes through normally

	// The downlink dies: m-2 reaches the server, its acknowledgement does not.
	require.NoError(t, relay.Update(func(c *netem.Config) { c.Downlink.Loss = 1 }))
	type result struct {
		res client.PublishResult
		err error
	}
	done := make(chan result, 1)
	go func() {
		res, err := alice.Send(ctx, "bob", []byte("hello 2"), client.SendOptions{ID: "m-2"})
		done <- result{res, err}
	}()
	require.Eventually(t, func() bool {
		b, err := ts.Store.Bounds(ctx, stream.InboxChannel("bob"))
		return err == nil && b.Last == 2
	}, 10*time.Second, 5*time.Millisecond, "m-2 never reached the store")
	// The stalled connection is given up (no pong for 2.5 heartbeats) ...
	require.Eventually(t, lost.Load, 15*time.Second, 10*time.Millisecond)
	// ... and once the network heals, A reconnects and retransmits.
	relay.Heal()
	var r result
	select {
	case r = <-done:
	case <-time.After(15 * time.Second):
		t.Fatal("the send was never acknowledged")
	}
	require.NoError(t, r.err)
	require.True(t, r.res.Duplicate, "the acknowledgement came from a retransmission")
	require.Equal(t, uint64(2), r.res.Seq)
	require.GreaterOrEqual(t, alice.Stats().Connects, uint64(2))

	bobRec := &inboxRec{}
	bob := dial(t, ts, client.Config{Token: "bob"})
	_, err = bob.Inbox(ctx, bobRec.options())
	require.NoError(t, err)
	require.Eventually(t, func() bool { return len(bobRec.messages()) == 2 }, 10*time.Second, 5*time.Millisecond)
	require.Eventually(t, func() bool { return len(aliceRec.receiptsOf(client.Delivered)) == 2 }, 10*time.Second, 5*time.Millisecond)
	bobRec.requireMessages(t, "alice", "m", 2)
	requireOneReceiptEach(t, aliceRec.receiptsOf(client.Delivered), "bob", "m", 2)
	require.Equal(t, 2, storedRecords(t, ts, "bob", pb.InboxRecord_KIND_MESSAGE))
	require.Equal(t, 2, storedRecords(t, ts, "alice", pb.InboxRecord_KIND_SENT))
	require.Equal(t, 2, storedRecords(t, ts, "alice", pb.InboxRecord_KIND_DELIVERED))
}

// B catches up on 600 waiting messages in pages of 50 through a lossy
// relay; the network blacks out after the first pages, long enough for B
// to give the connection up. B reconnects and resumes from the last message
// it handled: every message once, in order, one "delivered" each to A.
func TestInboxPagesResumeAfterBreak(t *testing.T) {
	ts := runServer(t, server.Config{Heartbeat: time.Second, InboxPageSize: 50})
	ctx := context.Background()
	const n = 600
	alice := dial(t, ts, client.Config{Token: "alice"})
	aliceRec := &inboxRec{}
	_, err := alice.Inbox(ctx, aliceRec.options())
	require.NoError(t, err)
	sendN(t, alice, "bob", "m", n)

	lossy := netem.Link{Loss: 0.02, Delay: 5 * time.Millisecond}
	relay, err := netem.Start(ctx, netem.Config{Upstream: ts.Addr, Uplink: lossy, Downlink: lossy, Seed: 9, Logger: quietLog})
	require.NoError(t, err)
	defer relay.Close()
	behind := &testServer{Server: ts.Server, Addr: relay.Addr().String(), CA: ts.CA}

	// The handler stops at message 130 (page 3) until the blackout is on.
	reached, resume := make(chan struct{}), make(chan struct{})
	bobRec := &inboxRec{block: func(k int) {
		if k == 130 {
			close(reached)
			<-resume
		}
	}}
	bob := dial(t, behind, client.Config{Token: "bob", ReconnectMin: 50 * time.Millisecond, ReconnectMax: 500 * time.Millisecond})
	_, err = bob.Inbox(ctx, bobRec.options())
	require.NoError(t, err)
	select {
	case <-reached:
	case <-time.After(20 * time.Second):
		t.Fatal("the first pages never arrived")
	}
	relay.Blackout(4 * time.Second) // > 2.5 heartbeats: the connection is given up
	close(resume)
	require.Eventually(t, func() bool { return bob.Stats().Connects >= 2 }, 20*time.Second, 10*time.Millisecond, "bob never reconnected")
	require.Eventually(t, func() bool { return len(bobRec.messages()) == n }, 30*time.Second, 10*time.Millisecond,
		"got %d of %d", len(bobRec.messages()), n)
	bobRec.requireMessages(t, "alice", "m", n)
	bobRec.mu.Lock()
	require.GreaterOrEqual(t, len(bobRec.waiting), 2, "a count on each connection")
	require.Equal(t, uint64(n), bobRec.waiting[0].Count)
	last := bobRec.waiting[len(bobRec.waiting)-1]
	require.Equal(t, uint64(n)-last.After, last.Count, "the second count starts where bob stopped")
	bobRec.mu.Unlock()
	require.GreaterOrEqual(t, bob.Stats().Pages, uint64(n/50))

	require.Eventually(t, func() bool { return len(aliceRec.receiptsOf(client.Delivered)) == n }, 20*time.Second, 10*time.Millisecond,
		"%d delivered receipts", len(aliceRec.receiptsOf(client.Delivered)))
	requireOneReceiptEach(t, aliceRec.receiptsOf(client.Delivered), "bob", "m", n)
	require.Equal(t, n, storedRecords(t, ts, "alice", pb.InboxRecord_KIND_DELIVERED))
}

// A message marked read as soon as its handler returned is known as
// delivered: MarkRead goes behind the acknowledgement the Inbox holds back
// (AckDelay, here a long 2 s), on the same stream, so it is never refused
// with NOT_DELIVERED.
func TestMarkReadRightAfterTheHandler(t *testing.T) {
	ts := runServer(t, server.Config{AckDelay: 2 * time.Second})
	ctx := context.Background()
	alice := dial(t, ts, client.Config{Token: "alice"})
	aliceRec := &inboxRec{}
	_, err := alice.Inbox(ctx, aliceRec.options())
	require.NoError(t, err)
	bob := dial(t, ts, client.Config{Token: "bob"})
	handled := make(chan client.ChatMessage, 3)
	_, err = bob.Inbox(ctx, client.InboxOptions{OnMessage: func(m client.ChatMessage) error {
		handled <- m
		return nil
	}})
	require.NoError(t, err)
	sendN(t, alice, "bob", "q", 3)
	for range 3 {
		var m client.ChatMessage
		select {
		case m = <-handled:
		case <-time.After(10 * time.Second):
			t.Fatal("bob was not handed the message")
		}
		// The handler has returned once the next one comes or soon after:
		// MarkRead retries nothing, so NOT_DELIVERED would fail here.
		require.Eventually(t, func() bool { return bob.MarkRead(ctx, m) == nil }, 500*time.Millisecond, 50*time.Millisecond,
			"message %d was refused as not delivered", m.Seq)
	}
	require.Eventually(t, func() bool { return len(aliceRec.receiptsOf(client.Read)) == 3 }, 10*time.Second, 5*time.Millisecond)
	requireOneReceiptEach(t, aliceRec.receiptsOf(client.Read), "bob", "q", 3)
}
