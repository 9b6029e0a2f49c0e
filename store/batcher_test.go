package store

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/dgraph-io/badger/v4"
	"github.com/stretchr/testify/require"
)

// TestFailedCommit: a batch whose commit fails stores nothing, answers
// every request with the error, notifies no watcher, and hands its seqs
// and channel ids out again: no hole.
func TestFailedCommit(t *testing.T) {
	db, err := Open(t.TempDir(), Options{Logger: slog.New(slog.NewTextHandler(io.Discard, nil)), RetentionInterval: -1})
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, db.Close()) })
	ctx := t.Context()
	res, err := db.Append(ctx, []AppendRequest{{Channel: "c", Data: []byte("1")}})
	require.NoError(t, err)
	epoch := res[0].Epoch
	var watched []Message
	stop := db.Watch(func(msgs []Message) { watched = append(watched, msgs...) })
	defer stop()

	// A key over Badger's limit fails the commit; Append's checks would
	// have refused it, so it is queued directly.
	op := &appendOp{reqs: []AppendRequest{
		{Channel: "c", Data: []byte("lost")},
		{Channel: "new", Data: []byte("lost")},
		{Channel: strings.Repeat("x", 70000), Data: []byte("lost")},
	}, done: make(chan struct{})}
	db.queue <- op
	<-op.done
	require.ErrorIs(t, op.err, ErrUnavailable)
	require.Empty(t, watched)

	b, err := db.Bounds(ctx, "c")
	require.NoError(t, err)
	require.Equal(t, Bounds{Epoch: epoch, First: 1, Last: 1}, b)
	b, err = db.Bounds(ctx, "new")
	require.NoError(t, err)
	require.Equal(t, Bounds{First: 1}, b)

	res, err = db.Append(ctx, []AppendRequest{{Channel: "c", Data: []byte("2")}, {Channel: "new", Data: []byte("n1")}})
	require.NoError(t, err)
	require.Equal(t, uint64(2), res[0].Seq, "no hole")
	require.Equal(t, uint64(1), res[1].Seq)
	msgs, err := db.Range(ctx, "c", 1, 10, 10)
	require.NoError(t, err)
	require.Len(t, msgs, 2)
	require.Equal(t, "2", string(msgs[1].Data))
	msgs, err = db.Range(ctx, "new", 1, 10, 10)
	require.NoError(t, err)
	require.Len(t, msgs, 1, "a reused channel id holds nothing of the failed batch")
	require.Len(t, watched, 2)
}

// TestFailedCommitInFlight: while a batch commits, the next is built on top
// of it; when the commit fails, the calls of the failed batch get the error,
// and those of the next one are rebuilt from the committed heads: stored
// once, with no hole, their idempotency keys free again.
func TestFailedCommitInFlight(t *testing.T) {
	db, err := Open(t.TempDir(), Options{Logger: slog.New(slog.NewTextHandler(io.Discard, nil)), RetentionInterval: -1})
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, db.Close()) })
	ctx := t.Context()
	res, err := db.Append(ctx, []AppendRequest{{Channel: "c", Data: []byte("1")}, {Channel: "d", Data: []byte("d1")}})
	require.NoError(t, err)
	epoch := res[0].Epoch
	var watched []Message
	stop := db.Watch(func(msgs []Message) { watched = append(watched, msgs...) })
	defer stop()

	// The next commit is held until released, then fails; later ones pass.
	held := make(chan func(error), 1)
	commit := db.commit
	var once sync.Once
	db.commit = func(txn *badger.Txn, done func(error)) {
		failed := false
		once.Do(func() {
			failed = true
			txn.Discard()
			held <- done
		})
		if !failed {
			commit(txn, done)
		}
	}
	first := &appendOp{reqs: []AppendRequest{
		{Channel: "c", ID: "a", Data: []byte("lost")},
		{Channel: "new", Data: []byte("lost")},
	}, done: make(chan struct{})}
	db.queue <- first
	release := <-held // first is committing

	second := &appendOp{reqs: []AppendRequest{
		{Channel: "c", ID: "a", Data: []byte("2")},
		{Channel: "new", Data: []byte("n1")},
		{Channel: "other", Data: []byte("o1")},
		{Channel: "d", Data: []byte("d2")},
	}, done: make(chan struct{})}
	db.queue <- second
	// The writer takes a call from the queue only once it built those it
	// took before: once third is taken, second is built on first.
	third := &appendOp{reqs: []AppendRequest{{Channel: "c", Data: []byte("3")}}, done: make(chan struct{})}
	db.queue <- third
	require.Eventually(t, func() bool { return len(db.queue) == 0 }, 10*time.Second, time.Millisecond)
	release(errors.New("injected"))

	<-first.done
	require.ErrorIs(t, first.err, ErrUnavailable)
	<-second.done
	require.NoError(t, second.err)
	require.Equal(t, uint64(2), second.res[0].Seq, "no hole")
	require.False(t, second.res[0].Duplicate, "the failed batch's key was not stored")
	require.Equal(t, epoch, second.res[0].Epoch)
	require.Equal(t, uint64(1), second.res[1].Seq)
	require.Equal(t, uint64(1), second.res[2].Seq)
	require.Equal(t, uint64(2), second.res[3].Seq, "no hole")
	<-third.done
	require.NoError(t, third.err)
	require.Equal(t, uint64(3), third.res[0].Seq)
	require.Equal(t, Bounds{Epoch: epoch, First: 1, Last: 3}, mustBounds(t, db, "c"))
	msgs, err := db.Range(ctx, "c", 1, 10, 10)
	require.NoError(t, err)
	require.Len(t, msgs, 3)
	require.Equal(t, "2", string(msgs[1].Data))
	require.Equal(t, "3", string(msgs[2].Data))
	require.Equal(t, uint64(2), mustBounds(t, db, "d").Last)
	for _, ch := range []string{"new", "other"} {
		msgs, err := db.Range(ctx, ch, 1, 10, 10)
		require.NoError(t, err)
		require.Len(t, msgs, 1, ch)
		require.Equal(t, uint64(1), msgs[0].Seq)
	}
	require.Len(t, watched, 5)
	for i, m := range watched[1:] {
		if m.Channel == watched[i].Channel {
			require.Equal(t, watched[i].Seq+1, m.Seq, "watched in seq order")
		}
	}

	res, err = db.Append(ctx, []AppendRequest{{Channel: "c", ID: "a", Data: []byte("again")}})
	require.NoError(t, err)
	require.Equal(t, AppendResult{Epoch: epoch, Seq: 2, Duplicate: true}, res[0])
}

func mustBounds(t *testing.T, db *DB, channel string) Bounds {
	t.Helper()
	b, err := db.Bounds(t.Context(), channel)
	require.NoError(t, err)
	return b
}

// TestIdempotencyUnderHashCollisions: with every idempotency key hashing
// alike (the filter says "maybe" to all, the batch's index holds one), a
// key is still a duplicate exactly when it was stored: in the same call,
// in a batch committing meanwhile, or before a restart.
func TestIdempotencyUnderHashCollisions(t *testing.T) {
	dir := t.TempDir()
	opts := Options{Logger: slog.New(slog.NewTextHandler(io.Discard, nil)), RetentionInterval: -1,
		idemHash: func([]byte) uint64 { return 42 }}
	db, err := Open(dir, opts)
	require.NoError(t, err)
	ctx := t.Context()
	seqs := func(res []AppendResult) (out []string) {
		for _, r := range res {
			out = append(out, fmt.Sprint(r.Seq, r.Duplicate))
		}
		return out
	}
	res, err := db.Append(ctx, []AppendRequest{
		{Channel: "c", From: "u", ID: "a"}, {Channel: "c", From: "u", ID: "b"},
		{Channel: "c", From: "u", ID: "a"}, {Channel: "c", From: "u", ID: "b"}, {Channel: "d", From: "u", ID: "a"},
	})
	require.NoError(t, err)
	require.Equal(t, []string{"1 false", "2 false", "1 true", "2 true", "1 false"}, seqs(res))
	res, err = db.Append(ctx, []AppendRequest{
		{Channel: "c", From: "u", ID: "b"}, {Channel: "c", From: "u", ID: "e"},
		{Channel: "d", From: "u", ID: "a"}, {Channel: "c", From: "v", ID: "a"}, {Channel: "c", ID: "a"},
	})
	require.NoError(t, err)
	require.Equal(t, []string{"2 true", "3 false", "1 true", "4 false", "5 false"}, seqs(res))

	// Concurrent callers retrying the same keys: batches built while others
	// commit see the keys of both.
	const ids, callers = 50, 8
	got := make([][]AppendResult, callers)
	var wg sync.WaitGroup
	for g := range callers {
		wg.Go(func() {
			for i := range ids {
				res, err := db.Append(ctx, []AppendRequest{{Channel: "p", From: "u", ID: fmt.Sprint((i + g) % ids)}})
				if err != nil {
					t.Error(err)
					return
				}
				got[g] = append(got[g], res[0])
			}
		})
	}
	wg.Wait()
	first := map[string]uint64{}
	stored := map[uint64]bool{}
	for g := range got {
		require.Len(t, got[g], ids)
		for i, r := range got[g] {
			id := fmt.Sprint((i + g) % ids)
			if s, ok := first[id]; ok {
				require.Equal(t, s, r.Seq, "id %s", id)
			} else {
				first[id] = r.Seq
			}
			if !r.Duplicate {
				require.False(t, stored[r.Seq], "seq %d stored twice", r.Seq)
				stored[r.Seq] = true
			}
		}
	}
	require.Len(t, stored, ids)
	for s := range uint64(ids) {
		require.True(t, stored[s+1], "hole at %d", s+1)
	}

	// After a restart the keys are read from Badger.
	require.NoError(t, db.Close())
	db, err = Open(dir, opts)
	require.NoError(t, err)
	defer db.Close()
	res, err = db.Append(ctx, []AppendRequest{{Channel: "c", From: "u", ID: "a"}, {Channel: "c", From: "u", ID: "f"}})
	require.NoError(t, err)
	require.Equal(t, []string{"1 true", "6 false"}, seqs(res))
}

// openQuiet opens a store in a temporary directory with opts, logging
// nothing and running no retention; it is closed when the test ends.
func openQuiet(t *testing.T, opts Options) *DB {
	opts.Logger, opts.RetentionInterval = slog.New(slog.NewTextHandler(io.Discard, nil)), -1
	db, err := Open(t.TempDir(), opts)
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, db.Close()) })
	return db
}

// gateFirstCommit makes db's next commit land only once release is called
// (with the commit's error, nil for the real outcome); started is closed
// when that commit begins. Later commits are Badger's as usual, or fail
// with fail's error if it is set.
func gateFirstCommit(db *DB, fail error) (started <-chan struct{}, release func(error)) {
	gate := make(chan error, 1)
	begun := make(chan struct{})
	commit := db.commit
	var once sync.Once
	db.commit = func(txn *badger.Txn, done func(error)) {
		first := false
		once.Do(func() { first = true })
		switch {
		case first:
			close(begun)
			commit(txn, func(err error) {
				if injected := <-gate; injected != nil {
					err = injected
				}
				done(err)
			})
		case fail != nil:
			txn.Discard()
			done(fail)
		default:
			commit(txn, done)
		}
	}
	return begun, func(err error) { gate <- err }
}

// watchCalls records each Watch call's messages as "channel:seq" lists.
func watchCalls(t *testing.T, db *DB) func() [][]string {
	var mu sync.Mutex
	var calls [][]string
	stop := db.Watch(func(msgs []Message) {
		var call []string
		for _, m := range msgs {
			call = append(call, fmt.Sprintf("%s:%d", m.Channel, m.Seq))
		}
		mu.Lock()
		calls = append(calls, call)
		mu.Unlock()
	})
	t.Cleanup(stop)
	return func() [][]string {
		mu.Lock()
		defer mu.Unlock()
		return slices.Clone(calls)
	}
}

// TestBatchGoesOutWithTheNext: a batch that lands while the next is built
// is visible at once, but its watchers and callers hear of it together
// with the next batch: one Watch call for both, before either answer.
func TestBatchGoesOutWithTheNext(t *testing.T) {
	db := openQuiet(t, Options{})
	ctx := t.Context()
	calls := watchCalls(t, db)
	started, release := gateFirstCommit(db, nil)

	first, err := db.Queue(ctx, []AppendRequest{{Channel: "c", Data: []byte("1")}})
	require.NoError(t, err)
	<-started
	second, err := db.Queue(ctx, []AppendRequest{{Channel: "c", Data: []byte("2")}, {Channel: "d", Data: []byte("1")}})
	require.NoError(t, err)
	// The writer builds what it took before it takes a landing.
	require.Eventually(t, func() bool { return len(db.queue) == 0 }, 10*time.Second, time.Millisecond)
	release(nil)

	<-first.Done()
	require.Equal(t, [][]string{{"c:1", "c:2", "d:1"}}, calls(), "one call for both, before the first's answer")
	res, err := first.Result()
	require.NoError(t, err)
	require.Equal(t, uint64(1), res[0].Seq)
	<-second.Done()
	res, err = second.Result()
	require.NoError(t, err)
	require.Equal(t, []uint64{2, 1}, []uint64{res[0].Seq, res[1].Seq})

	// Alone, a batch goes out as soon as it lands.
	_, err = db.Append(ctx, []AppendRequest{{Channel: "c", Data: []byte("3")}})
	require.NoError(t, err)
	require.Equal(t, [][]string{{"c:1", "c:2", "d:1"}, {"c:3"}}, calls())
}

// TestBatchHeldForAFailedNext: when the batch a landed one waits for fails
// to commit, the landed one is still notified and answered as stored; the
// failed one's calls get the error, and its seqs are handed out again.
func TestBatchHeldForAFailedNext(t *testing.T) {
	db := openQuiet(t, Options{})
	ctx := t.Context()
	calls := watchCalls(t, db)
	started, release := gateFirstCommit(db, errors.New("injected"))

	first, err := db.Queue(ctx, []AppendRequest{{Channel: "c", Data: []byte("1")}})
	require.NoError(t, err)
	<-started
	second, err := db.Queue(ctx, []AppendRequest{{Channel: "c", Data: []byte("lost")}})
	require.NoError(t, err)
	require.Eventually(t, func() bool { return len(db.queue) == 0 }, 10*time.Second, time.Millisecond)
	release(nil)

	<-first.Done()
	res, err := first.Result()
	require.NoError(t, err)
	require.Equal(t, uint64(1), res[0].Seq)
	<-second.Done()
	_, err = second.Result()
	require.ErrorIs(t, err, ErrUnavailable)
	require.Equal(t, [][]string{{"c:1"}}, calls())
	require.Equal(t, uint64(1), mustBounds(t, db, "c").Last)
}

// TestQueueKeepsCallOrder: calls queued one after another without waiting
// are committed in that order.
func TestQueueKeepsCallOrder(t *testing.T) {
	db := openQuiet(t, Options{MaxBatchEntries: 8})
	ctx := t.Context()
	var pending []Pending
	for i := range 300 {
		p, err := db.Queue(ctx, []AppendRequest{{Channel: "c", Data: fmt.Append(nil, i)}, {Channel: "d", Data: fmt.Append(nil, i)}})
		require.NoError(t, err)
		pending = append(pending, p)
	}
	for i, p := range pending {
		<-p.Done()
		res, err := p.Result()
		require.NoError(t, err)
		require.Equal(t, []uint64{uint64(i + 1), uint64(i + 1)}, []uint64{res[0].Seq, res[1].Seq})
	}
	msgs, err := db.Range(ctx, "c", 1, 300, 300)
	require.NoError(t, err)
	for i, m := range msgs {
		require.Equal(t, fmt.Sprint(i), string(m.Data))
	}
}
