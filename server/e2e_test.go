package server_test

import (
	"context"
	"fmt"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/quicpush/quicpush/client"
	"github.com/quicpush/quicpush/server"
)

// Three subscribers, three channels split over two sessions on each
// connection, three concurrent publishers: every subscriber gets every
// message of every channel once, in order.
func TestFanOutExactlyOnceInOrder(t *testing.T) {
	ts := runServer(t, server.Config{})
	channels := []string{"room/a", "room/b", "room/c"}
	const n = 300
	var recs []*recorder
	for i := 0; i < 3; i++ {
		rec := newRecorder()
		recs = append(recs, rec)
		c := dial(t, ts, client.Config{})
		for j, ch := range channels {
			sess := c.Session([]string{"classroom", "chat"}[j%2])
			_, err := sess.Subscribe(context.Background(), ch, client.SubscribeOptions{Since: seqPtr(0)}, rec.handle)
			require.NoError(t, err)
		}
	}
	pub := dial(t, ts, client.Config{Token: "teacher"})
	var wg sync.WaitGroup
	for _, ch := range channels {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for k := 1; k <= n; k++ {
				res, err := pub.Session("classroom").Publish(context.Background(), ch, []byte(fmt.Sprintf("%s %d", ch, k)), client.PublishOptions{})
				if !(err == nil && res.Seq == uint64(k)) {
					t.Errorf("publish %d to %s: seq %d, %v", k, ch, res.Seq, err)
					return
				}
			}
		}()
	}
	wg.Wait()
	for _, rec := range recs {
		for _, ch := range channels {
			rec.waitCount(t, ch, n, 10*time.Second)
			rec.requireExactly(t, ch, 1, n)
			for i, m := range rec.messages(ch) {
				require.Equal(t, fmt.Sprintf("%s %d", ch, i+1), string(m.Data))
			}
		}
	}
}

// A subscriber catching up on a large backlog over repair streams still
// gets live pushes of another channel on the same connection at once.
func TestRepairDoesNotDelayLivePush(t *testing.T) {
	ts := runServer(t, server.Config{PublishRate: -1}) // a bulk load, not a client
	pub := dial(t, ts, client.Config{})
	const backlog = 20000
	payload := make([]byte, 1000)
	ctx := context.Background()
	var wg sync.WaitGroup
	for w := 0; w < 8; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for k := 0; k < backlog/8; k++ {
				_, err := pub.Session("bulk").Publish(ctx, "room/backlog", payload, client.PublishOptions{})
				if err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()

	rec := newRecorder()
	sub := dial(t, ts, client.Config{})
	sess := sub.Session("classroom")
	_, err := sess.Subscribe(ctx, "room/live", client.SubscribeOptions{}, rec.handle)
	require.NoError(t, err)
	_, err = sess.Subscribe(ctx, "room/backlog", client.SubscribeOptions{Since: seqPtr(0)}, rec.handle)
	require.NoError(t, err)
	rec.waitCount(t, "room/backlog", 1, 5*time.Second) // the repair is under way
	_, err = pub.Session("classroom").Publish(ctx, "room/live", []byte("stop exercise"), client.PublishOptions{})
	require.NoError(t, err)
	rec.waitCount(t, "room/live", 1, 5*time.Second)
	require.Less(t, rec.count("room/backlog"), backlog, "the live push waited for the whole repair")
	rec.waitCount(t, "room/backlog", backlog, 60*time.Second)
	rec.requireExactly(t, "room/backlog", 1, backlog)
	for _, m := range rec.messages("room/backlog") {
		require.True(t, m.Repaired)
	}
}

// Subscribing with since=N while a publisher keeps publishing: N+1... from
// the store, then live, with no hole and no duplicate at the seam.
func TestSubscribeSinceWhilePublishing(t *testing.T) {
	for round := 0; round < 5; round++ {
		ts := runServer(t, server.Config{})
		pub := dial(t, ts, client.Config{})
		const total, since = 600, 100
		published := make(chan uint64, total)
		go func() {
			for k := 0; k < total; k++ {
				res, err := pub.Session("p").Publish(context.Background(), "room/seam", []byte("x"), client.PublishOptions{})
				if err != nil {
					t.Error(err)
					return
				}
				published <- res.Seq
			}
		}()
		for seq := range published {
			if seq >= since+uint64(round*80) { // subscribe at a different point of the stream each round
				break
			}
		}
		rec := newRecorder()
		c := dial(t, ts, client.Config{})
		_, err := c.Session("s").Subscribe(context.Background(), "room/seam", client.SubscribeOptions{Since: seqPtr(since)}, rec.handle)
		require.NoError(t, err)
		rec.waitCount(t, "room/seam", total-since, 10*time.Second)
		rec.requireExactly(t, "room/seam", since+1, total)
	}
}

// A subscriber restarted with its persisted state resumes exactly after the
// last seq it handled.
func TestResumeFromPersistedState(t *testing.T) {
	ts := runServer(t, server.Config{})
	pub := dial(t, ts, client.Config{})
	ctx := context.Background()
	publish := func(k int) {
		for i := 0; i < k; i++ {
			_, err := pub.Session("p").Publish(ctx, "room/state", []byte("m"), client.PublishOptions{})
			require.NoError(t, err)
		}
	}
	statePath := filepath.Join(t.TempDir(), "state.json")

	st, err := client.OpenFileStore(statePath)
	require.NoError(t, err)
	rec := newRecorder()
	c := dial(t, ts, client.Config{State: st})
	_, err = c.Session("s").Subscribe(ctx, "room/state", client.SubscribeOptions{Since: seqPtr(0)}, rec.handle)
	require.NoError(t, err)
	publish(5)
	rec.waitCount(t, "room/state", 5, 5*time.Second)
	require.NoError(t, c.Close())
	rec.requireExactly(t, "room/state", 1, 5)

	publish(5)
	st, err = client.OpenFileStore(statePath)
	require.NoError(t, err)
	rec = newRecorder()
	c = dial(t, ts, client.Config{State: st})
	_, err = c.Session("s").Subscribe(ctx, "room/state", client.SubscribeOptions{Since: seqPtr(0)}, rec.handle)
	require.NoError(t, err)
	publish(2)
	rec.waitCount(t, "room/state", 7, 5*time.Second)
	rec.requireExactly(t, "room/state", 6, 12)
}

// The same client message id published twice (a lost ack, a rerun) gives
// one message and one seq.
func TestIdempotentPublish(t *testing.T) {
	ts := runServer(t, server.Config{})
	c := dial(t, ts, client.Config{Token: "alice"})
	ctx := context.Background()
	sess := c.Session("chat")
	first, err := sess.Publish(ctx, "user/bob", []byte("hi"), client.PublishOptions{ID: "msg-1"})
	require.NoError(t, err)
	again, err := sess.Publish(ctx, "user/bob", []byte("hi"), client.PublishOptions{ID: "msg-1"})
	require.NoError(t, err)
	require.Equal(t, first.Seq, again.Seq)
	require.False(t, first.Duplicate)
	require.True(t, again.Duplicate)
	other, err := sess.Publish(ctx, "user/bob", []byte("hi"), client.PublishOptions{ID: "msg-2"})
	require.NoError(t, err)
	require.Equal(t, first.Seq+1, other.Seq)
	msgs, _, err := c.History(ctx, "user/bob", 1, 0)
	require.NoError(t, err)
	require.Len(t, msgs, 2)
}

// A user's own channel starts at the user's acknowledged cursor: a second
// device (no local state) picks up after what the first one handled, even
// right after the first one closed (its last acks are not lost on Close).
func TestOwnChannelStartsAtAckedCursor(t *testing.T) {
	ts := runServer(t, server.Config{})
	ctx := context.Background()
	pub := dial(t, ts, client.Config{Token: "teacher"})
	publishN(t, pub, "user/alice", 3)

	rec := newRecorder()
	phone := dial(t, ts, client.Config{Token: "alice"})
	_, err := phone.Session("inbox").Subscribe(ctx, "user/alice", client.SubscribeOptions{}, rec.handle)
	require.NoError(t, err)
	rec.waitCount(t, "user/alice", 3, 5*time.Second)
	require.NoError(t, phone.Close())
	rec.requireExactly(t, "user/alice", 1, 3)

	rec = newRecorder()
	laptop := dial(t, ts, client.Config{Token: "alice"})
	_, err = laptop.Session("inbox").Subscribe(ctx, "user/alice", client.SubscribeOptions{}, rec.handle)
	require.NoError(t, err)
	publishN(t, pub, "user/alice", 1)
	rec.waitCount(t, "user/alice", 1, 5*time.Second)
	rec.requireExactly(t, "user/alice", 4, 4)
}
