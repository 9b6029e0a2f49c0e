// Package storetest is the contract suite that every channel store passes:
// the Badger store.DB and memstore.Store run the same tests.
package storetest

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/quicpush/quicpush/server"
	"github.com/quicpush/quicpush/store"
)

// Store is what the suite tests: the server's view of a store, plus
// retention on demand.
type Store interface {
	server.Store
	RunRetention(ctx context.Context) error
}

// What the suite expects of the stores that open returns.
const (
	MaxMessageSize = 4 << 10
	MaxMessages    = 100
)

// waitFor bounds every poll of the suite.
const waitFor = 10 * time.Second

// Run runs the contract suite. open must return a new, empty store that
// accepts Data of at most MaxMessageSize bytes, retains MaxMessages
// messages per channel, has no age limit, applies retention only in
// RunRetention, and is closed by a t.Cleanup.
func Run(t *testing.T, open func(t *testing.T) Store) {
	t.Run("EmptyChannel", func(t *testing.T) { testEmptyChannel(t, open(t)) })
	t.Run("ConcurrentAppends", func(t *testing.T) { testConcurrentAppends(t, open(t)) })
	t.Run("RequestOrder", func(t *testing.T) { testRequestOrder(t, open(t)) })
	t.Run("Epoch", func(t *testing.T) { testEpoch(t, open(t)) })
	t.Run("Range", func(t *testing.T) { testRange(t, open(t)) })
	t.Run("Idempotency", func(t *testing.T) { testIdempotency(t, open(t)) })
	t.Run("TooLarge", func(t *testing.T) { testTooLarge(t, open(t)) })
	t.Run("Invalid", func(t *testing.T) { testInvalid(t, open(t)) })
	t.Run("CancelledContext", func(t *testing.T) { testCancelledContext(t, open(t)) })
	t.Run("Watch", func(t *testing.T) { testWatch(t, open(t)) })
	t.Run("Cursors", func(t *testing.T) { testCursors(t, open(t)) })
	t.Run("RetentionByCount", func(t *testing.T) { testRetentionByCount(t, open(t)) })
}

func appendOne(t *testing.T, s Store, channel, from, id, data string) store.AppendResult {
	t.Helper()
	res, err := s.Append(t.Context(), []store.AppendRequest{{Channel: channel, From: from, ID: id, Data: []byte(data)}})
	require.NoError(t, err)
	require.Len(t, res, 1)
	return res[0]
}

// appendN appends n messages "m1".."mn" to channel in one call.
func appendN(t *testing.T, s Store, channel string, n int) []store.AppendResult {
	t.Helper()
	reqs := make([]store.AppendRequest, n)
	for i := range reqs {
		reqs[i] = store.AppendRequest{Channel: channel, Data: fmt.Appendf(nil, "m%d", i+1)}
	}
	res, err := s.Append(t.Context(), reqs)
	require.NoError(t, err)
	require.Len(t, res, n)
	return res
}

func bounds(t *testing.T, s Store, channel string) store.Bounds {
	t.Helper()
	b, err := s.Bounds(t.Context(), channel)
	require.NoError(t, err)
	return b
}

func seqs(msgs []store.Message) []uint64 {
	out := make([]uint64, len(msgs))
	for i, m := range msgs {
		out[i] = m.Seq
	}
	return out
}

func seqRange(from, to uint64) []uint64 {
	var out []uint64
	for s := from; s <= to; s++ {
		out = append(out, s)
	}
	return out
}

func testEmptyChannel(t *testing.T, s Store) {
	ctx := t.Context()
	require.Equal(t, store.Bounds{Epoch: 0, First: 1, Last: 0}, bounds(t, s, "room/none"))
	msgs, err := s.Range(ctx, "room/none", 1, 100, 10)
	require.NoError(t, err)
	require.Empty(t, msgs)
	pos, err := s.Cursor(ctx, "alice", "room/none")
	require.NoError(t, err)
	require.Zero(t, pos)
	// Reading created nothing: the first append still starts the channel.
	require.Equal(t, store.Bounds{First: 1}, bounds(t, s, "room/none"))
	res := appendOne(t, s, "room/none", "", "", "x")
	require.Equal(t, uint64(1), res.Seq)
	require.False(t, res.Duplicate)
}

// testConcurrentAppends: 8 appenders x 200 appends over 3 channels give
// each channel exactly 1..N, each message once with its data.
func testConcurrentAppends(t *testing.T, s Store) {
	const appenders, perAppender = 8, 200
	channels := []string{"room/a", "room/b", "room/c"}
	type acked struct {
		res  store.AppendResult
		data string
	}
	results := make([][]acked, len(channels))
	var mu sync.Mutex
	var wg sync.WaitGroup
	for g := range appenders {
		wg.Go(func() {
			for i := range perAppender {
				c := (g + i) % len(channels)
				data := fmt.Sprintf("g%d-i%d", g, i)
				res, err := s.Append(t.Context(), []store.AppendRequest{{Channel: channels[c], From: "u", Data: []byte(data)}})
				if !assert.NoError(t, err) || !assert.Len(t, res, 1) {
					return
				}
				mu.Lock()
				results[c] = append(results[c], acked{res[0], data})
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	require.False(t, t.Failed())

	total := 0
	for c, ch := range channels {
		acks := results[c]
		total += len(acks)
		slices.SortFunc(acks, func(a, b acked) int { return int(a.res.Seq) - int(b.res.Seq) })
		n := uint64(len(acks))
		got := make([]uint64, len(acks))
		for i, a := range acks {
			got[i] = a.res.Seq
			require.Equal(t, acks[0].res.Epoch, a.res.Epoch, "one epoch per channel")
		}
		require.Equal(t, seqRange(1, n), got, "%s: seqs 1..N, no hole, no duplicate", ch)
		require.Equal(t, store.Bounds{Epoch: acks[0].res.Epoch, First: 1, Last: n}, bounds(t, s, ch))

		msgs, err := s.Range(t.Context(), ch, 1, n, int(n)+10)
		require.NoError(t, err)
		require.Equal(t, seqRange(1, n), seqs(msgs))
		for i, m := range msgs {
			require.Equal(t, acks[i].data, string(m.Data), "%s seq %d", ch, m.Seq)
			require.Equal(t, ch, m.Channel)
			require.Equal(t, acks[i].res.Epoch, m.Epoch)
			require.Equal(t, "u", m.From)
			require.False(t, m.Time.IsZero())
		}
	}
	require.Equal(t, appenders*perAppender, total)
}

// testRequestOrder: one call's requests get their channels' seqs in request
// order.
func testRequestOrder(t *testing.T, s Store) {
	reqs := []store.AppendRequest{
		{Channel: "a", Data: []byte("a1")},
		{Channel: "b", Data: []byte("b1")},
		{Channel: "a", Data: []byte("a2")},
		{Channel: "a", Data: []byte("a3")},
		{Channel: "b", Data: []byte("b2")},
	}
	res, err := s.Append(t.Context(), reqs)
	require.NoError(t, err)
	require.Equal(t, []uint64{1, 1, 2, 3, 2}, []uint64{res[0].Seq, res[1].Seq, res[2].Seq, res[3].Seq, res[4].Seq})
	msgs, err := s.Range(t.Context(), "a", 1, 10, 10)
	require.NoError(t, err)
	require.Len(t, msgs, 3)
	for i, m := range msgs {
		require.Equal(t, fmt.Sprintf("a%d", i+1), string(m.Data))
	}
}

func testEpoch(t *testing.T, s Store) {
	a1 := appendOne(t, s, "room/a", "", "", "1")
	require.NotZero(t, a1.Epoch)
	a2 := appendN(t, s, "room/a", 3)
	for _, r := range a2 {
		require.Equal(t, a1.Epoch, r.Epoch)
	}
	require.Equal(t, a1.Epoch, bounds(t, s, "room/a").Epoch)
	msgs, err := s.Range(t.Context(), "room/a", 1, 10, 10)
	require.NoError(t, err)
	require.Len(t, msgs, 4)
	for _, m := range msgs {
		require.Equal(t, a1.Epoch, m.Epoch)
	}
	b := appendOne(t, s, "room/b", "", "", "1")
	require.NotZero(t, b.Epoch)
	require.NotEqual(t, a1.Epoch, b.Epoch, "each channel has its own random epoch")
	// A channel whose name extends another's is a channel of its own.
	ab := appendOne(t, s, "room/ab", "", "", "1")
	require.Equal(t, uint64(1), ab.Seq)
	require.NotEqual(t, a1.Epoch, ab.Epoch)
}

func testRange(t *testing.T, s Store) {
	ctx := t.Context()
	appendN(t, s, "r", 10)
	appendN(t, s, "r2", 3) // a channel whose name extends r's
	for _, tc := range []struct {
		name     string
		from, to uint64
		limit    int
		want     []uint64
	}{
		{"all", 1, 10, 100, seqRange(1, 10)},
		{"middle", 3, 7, 100, seqRange(3, 7)},
		{"limit", 3, 7, 2, []uint64{3, 4}},
		{"one", 5, 5, 1, []uint64{5}},
		{"from zero", 0, 2, 100, []uint64{1, 2}},
		{"past last", 8, 1000, 100, []uint64{8, 9, 10}},
		{"beyond last", 11, 20, 100, nil},
		{"from above to", 7, 3, 100, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			msgs, err := s.Range(ctx, "r", tc.from, tc.to, tc.limit)
			require.NoError(t, err)
			require.Equal(t, tc.want, nilIfEmpty(seqs(msgs)))
			for _, m := range msgs {
				require.Equal(t, fmt.Sprintf("m%d", m.Seq), string(m.Data))
			}
		})
	}
	_, err := s.Range(ctx, "r", 1, 10, 0)
	require.ErrorIs(t, err, store.ErrInvalid)
	_, err = s.Range(ctx, "r", 1, 10, -1)
	require.ErrorIs(t, err, store.ErrInvalid)
}

func nilIfEmpty(s []uint64) []uint64 {
	if len(s) == 0 {
		return nil
	}
	return s
}

func testIdempotency(t *testing.T, s Store) {
	ctx := t.Context()
	first := appendOne(t, s, "chat/1", "alice", "m-1", "hello")
	require.False(t, first.Duplicate)
	again := appendOne(t, s, "chat/1", "alice", "m-1", "hello, resent")
	require.Equal(t, store.AppendResult{Epoch: first.Epoch, Seq: first.Seq, Duplicate: true}, again)

	// Twice in one call: stored once, the second answered with the first's seq.
	res, err := s.Append(ctx, []store.AppendRequest{
		{Channel: "chat/1", From: "alice", ID: "m-2", Data: []byte("two")},
		{Channel: "chat/1", From: "alice", ID: "m-2", Data: []byte("two, again")},
		{Channel: "chat/1", From: "alice", ID: "m-1", Data: []byte("hello, once more")},
	})
	require.NoError(t, err)
	require.Equal(t, []store.AppendResult{
		{Epoch: first.Epoch, Seq: 2},
		{Epoch: first.Epoch, Seq: 2, Duplicate: true},
		{Epoch: first.Epoch, Seq: 1, Duplicate: true},
	}, res)

	// The same ID from another user, on another channel, or no ID at all:
	// distinct messages.
	require.False(t, appendOne(t, s, "chat/1", "bob", "m-1", "bob's").Duplicate)
	require.False(t, appendOne(t, s, "chat/1", "", "m-1", "anonymous").Duplicate)
	require.False(t, appendOne(t, s, "chat/2", "alice", "m-1", "elsewhere").Duplicate)
	require.False(t, appendOne(t, s, "chat/1", "alice", "", "no id").Duplicate)
	require.False(t, appendOne(t, s, "chat/1", "alice", "", "no id").Duplicate)
	// From and ID are length-delimited: ("al", "ice") is not ("alice", "").
	require.False(t, appendOne(t, s, "chat/1", "al", "icem-1", "split").Duplicate)

	msgs, err := s.Range(ctx, "chat/1", 1, 100, 100)
	require.NoError(t, err)
	var data []string
	for _, m := range msgs {
		data = append(data, string(m.Data))
	}
	require.Equal(t, []string{"hello", "two", "bob's", "anonymous", "no id", "no id", "split"}, data)
	require.Equal(t, "alice", msgs[0].From)
	require.Equal(t, "m-1", msgs[0].ID)
	require.Equal(t, uint64(7), bounds(t, s, "chat/1").Last)
	require.Equal(t, uint64(1), bounds(t, s, "chat/2").Last)
}

func testTooLarge(t *testing.T, s Store) {
	ctx := t.Context()
	big := make([]byte, MaxMessageSize+1)
	_, err := s.Append(ctx, []store.AppendRequest{{Channel: "big", Data: big}})
	require.ErrorIs(t, err, store.ErrTooLarge)
	// One too large request fails the whole call.
	_, err = s.Append(ctx, []store.AppendRequest{{Channel: "big", Data: []byte("ok")}, {Channel: "big", Data: big}})
	require.ErrorIs(t, err, store.ErrTooLarge)
	require.Equal(t, store.Bounds{First: 1}, bounds(t, s, "big"), "nothing stored")

	res := appendOne(t, s, "big", "", "", string(big[:MaxMessageSize]))
	require.Equal(t, uint64(1), res.Seq)
	msgs, err := s.Range(ctx, "big", 1, 1, 1)
	require.NoError(t, err)
	require.Len(t, msgs, 1)
	require.Len(t, msgs[0].Data, MaxMessageSize)
}

func testInvalid(t *testing.T, s Store) {
	ctx := t.Context()
	long := strings.Repeat("x", store.MaxNameLen+1)
	for _, r := range []store.AppendRequest{
		{Channel: ""},
		{Channel: long},
		{Channel: "c", From: long},
		{Channel: "c", ID: long},
	} {
		_, err := s.Append(ctx, []store.AppendRequest{{Channel: "c", Data: []byte("ok")}, r})
		require.ErrorIs(t, err, store.ErrInvalid)
	}
	require.Equal(t, store.Bounds{First: 1}, bounds(t, s, "c"), "nothing stored")
	for _, c := range []store.Cursor{{Channel: "c"}, {User: "u", Channel: long}} {
		ok := store.Cursor{User: "u", Channel: "ok", Pos: store.Position{Epoch: 1, Seq: 1}}
		require.ErrorIs(t, s.SetCursors(ctx, []store.Cursor{ok, c}), store.ErrInvalid)
		pos, err := s.Cursor(ctx, "u", "ok")
		require.NoError(t, err)
		require.Zero(t, pos, "a batch with an invalid cursor sets none")
	}
	res, err := s.Append(ctx, nil)
	require.NoError(t, err)
	require.Empty(t, res)
}

func testCancelledContext(t *testing.T, s Store) {
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	_, err := s.Append(ctx, []store.AppendRequest{{Channel: "c", Data: []byte("x")}})
	require.ErrorIs(t, err, context.Canceled)
	require.Equal(t, store.Bounds{First: 1}, bounds(t, s, "c"), "nothing stored")
}

// testWatch: a watcher sees every committed message once, in seq order per
// channel, never a duplicate, each already visible to Bounds; stop stops it.
func testWatch(t *testing.T, s Store) {
	var (
		mu        sync.Mutex
		seen      = map[string][]uint64{}
		data      = map[string][]string{}
		invisible []string
	)
	stop := s.Watch(func(msgs []store.Message) {
		for _, m := range msgs {
			b, err := s.Bounds(context.Background(), m.Channel)
			mu.Lock()
			if err != nil || b.Last < m.Seq || b.Epoch != m.Epoch {
				invisible = append(invisible, fmt.Sprintf("%s/%d: %v %v", m.Channel, m.Seq, b, err))
			}
			seen[m.Channel] = append(seen[m.Channel], m.Seq)
			data[m.Channel] = append(data[m.Channel], string(m.Data))
			mu.Unlock()
		}
	})
	const appenders, perAppender = 4, 50
	var wg sync.WaitGroup
	for g := range appenders {
		wg.Go(func() {
			for i := range perAppender {
				ch := fmt.Sprintf("w%d", i%2)
				id := fmt.Sprintf("g%d-%d", g, i)
				reqs := []store.AppendRequest{{Channel: ch, From: "u", ID: id, Data: []byte(id)}}
				if i%5 == 0 { // a retry, in the same call and in another
					reqs = append(reqs, reqs[0])
				}
				_, err := s.Append(t.Context(), reqs)
				assert.NoError(t, err)
				if i%7 == 0 {
					_, err := s.Append(t.Context(), reqs[:1])
					assert.NoError(t, err)
				}
			}
		})
	}
	wg.Wait()
	require.False(t, t.Failed())
	const perChannel = appenders * perAppender / 2
	deadline := time.Now().Add(waitFor)
	for {
		mu.Lock()
		n := len(seen["w0"]) + len(seen["w1"])
		mu.Unlock()
		if n >= 2*perChannel {
			break
		}
		require.True(t, time.Now().Before(deadline), "watcher saw %d of %d messages", n, 2*perChannel)
		time.Sleep(time.Millisecond)
	}
	mu.Lock()
	for _, ch := range []string{"w0", "w1"} {
		require.Equal(t, seqRange(1, perChannel), seen[ch], "%s: each message once, in seq order", ch)
		msgs, err := s.Range(t.Context(), ch, 1, perChannel, perChannel)
		require.NoError(t, err)
		for i, m := range msgs {
			require.Equal(t, string(m.Data), data[ch][i])
		}
	}
	require.Empty(t, invisible, "watched before visible")
	mu.Unlock()

	// After stop returns, the watcher sees nothing more; a new one does.
	stop()
	stop() // stopping twice is harmless
	var later sync.WaitGroup
	later.Add(1)
	var once sync.Once
	stop2 := s.Watch(func([]store.Message) { once.Do(later.Done) })
	defer stop2()
	appendOne(t, s, "w0", "", "", "after stop")
	waitGroup(t, &later)
	mu.Lock()
	defer mu.Unlock()
	require.Len(t, seen["w0"], perChannel)
}

// waitGroup waits for wg, at most waitFor.
func waitGroup(t *testing.T, wg *sync.WaitGroup) {
	t.Helper()
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(waitFor):
		t.Fatal("timed out")
	}
}

func testCursors(t *testing.T, s Store) {
	ctx := t.Context()
	cursor := func(user, channel string) store.Position {
		t.Helper()
		p, err := s.Cursor(ctx, user, channel)
		require.NoError(t, err)
		return p
	}
	set := func(user, channel string, epoch, seq uint64) {
		t.Helper()
		require.NoError(t, s.SetCursors(ctx, []store.Cursor{{User: user, Channel: channel, Pos: store.Position{Epoch: epoch, Seq: seq}}}))
	}
	require.Zero(t, cursor("alice", "user/alice"))
	set("alice", "user/alice", 7, 5)
	require.Equal(t, store.Position{Epoch: 7, Seq: 5}, cursor("alice", "user/alice"))
	set("alice", "user/alice", 7, 3)
	require.Equal(t, store.Position{Epoch: 7, Seq: 5}, cursor("alice", "user/alice"), "never backwards within an epoch")
	set("alice", "user/alice", 7, 9)
	require.Equal(t, store.Position{Epoch: 7, Seq: 9}, cursor("alice", "user/alice"))
	set("alice", "user/alice", 8, 2)
	require.Equal(t, store.Position{Epoch: 8, Seq: 2}, cursor("alice", "user/alice"), "a new epoch replaces it")

	require.Zero(t, cursor("bob", "user/alice"), "per user")
	require.Zero(t, cursor("alice", "room/1"), "per channel")
	// User and channel are delimited: ("al", "iceuser/alice") is another cursor.
	require.Zero(t, cursor("al", "iceuser/alice"))
	set("bob", "user/alice", 8, 1)
	require.Equal(t, store.Position{Epoch: 8, Seq: 2}, cursor("alice", "user/alice"))
	require.Equal(t, store.Position{Epoch: 8, Seq: 1}, cursor("bob", "user/alice"))

	// Concurrent updates of one cursor end at the highest.
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Go(func() {
			assert.NoError(t, s.SetCursors(ctx, []store.Cursor{{User: "carol", Channel: "c", Pos: store.Position{Epoch: 1, Seq: uint64(10 + i)}}}))
		})
	}
	wg.Wait()
	require.Equal(t, store.Position{Epoch: 1, Seq: 17}, cursor("carol", "c"))

	// Many cursors in one call (more than one transaction's worth), each
	// with the same rules: one behind its stored position stays put.
	var batch []store.Cursor
	for i := range 2500 {
		batch = append(batch, store.Cursor{User: fmt.Sprint("u", i), Channel: "room/big", Pos: store.Position{Epoch: 3, Seq: uint64(i + 1)}})
	}
	batch = append(batch, store.Cursor{User: "alice", Channel: "user/alice", Pos: store.Position{Epoch: 8, Seq: 1}})
	require.NoError(t, s.SetCursors(ctx, batch))
	for _, i := range []int{0, 999, 1000, 2499} {
		require.Equal(t, store.Position{Epoch: 3, Seq: uint64(i + 1)}, cursor(fmt.Sprint("u", i), "room/big"))
	}
	require.Equal(t, store.Position{Epoch: 8, Seq: 2}, cursor("alice", "user/alice"), "never backwards within an epoch")
}

// testRetentionByCount: retention keeps the newest MaxMessages, moves First
// and keeps Last.
func testRetentionByCount(t *testing.T, s Store) {
	ctx := t.Context()
	const n = 2*MaxMessages + 50
	for range n / 50 {
		appendN(t, s, "r", 50)
	}
	appendN(t, s, "small", 30)
	before := bounds(t, s, "r")
	require.Equal(t, store.Bounds{Epoch: before.Epoch, First: 1, Last: n}, before, "retention waits for RunRetention")

	require.NoError(t, s.RunRetention(ctx))
	const first = n - MaxMessages + 1
	require.Equal(t, store.Bounds{Epoch: before.Epoch, First: first, Last: n}, bounds(t, s, "r"))
	require.Equal(t, uint64(1), bounds(t, s, "small").First)

	msgs, err := s.Range(ctx, "r", 1, n, 2*n)
	require.NoError(t, err)
	require.Equal(t, seqRange(first, n), seqs(msgs), "only the retained ones")
	msgs, err = s.Range(ctx, "r", 1, first-1, n)
	require.NoError(t, err)
	require.Empty(t, msgs)

	res := appendOne(t, s, "r", "", "", "next")
	require.Equal(t, store.AppendResult{Epoch: before.Epoch, Seq: n + 1}, res)
	require.NoError(t, s.RunRetention(ctx))
	require.Equal(t, store.Bounds{Epoch: before.Epoch, First: first + 1, Last: n + 1}, bounds(t, s, "r"))
	require.NoError(t, s.RunRetention(ctx))
	require.Equal(t, store.Bounds{Epoch: before.Epoch, First: first + 1, Last: n + 1}, bounds(t, s, "r"))
}
