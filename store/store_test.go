package store_test

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/quicpush/quicpush/server"
	"github.com/quicpush/quicpush/store"
	"github.com/quicpush/quicpush/store/storetest"
)

var _ server.Store = (*store.DB)(nil)

// quiet keeps Badger's open and close logs out of the test output.
var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

// open opens a store in dir that runs retention only when asked, and
// closes it at the end of the test.
func open(t testing.TB, dir string, opts store.Options) *store.DB {
	t.Helper()
	opts.RetentionInterval = -1
	opts.Logger = quiet
	db, err := store.Open(dir, opts)
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, db.Close()) })
	return db
}

func contractOptions() store.Options {
	return store.Options{MaxMessageSize: storetest.MaxMessageSize, MaxMessages: storetest.MaxMessages, MaxAge: -1}
}

func TestContract(t *testing.T) {
	storetest.Run(t, func(t *testing.T) storetest.Store {
		return open(t, t.TempDir(), contractOptions())
	})
}

// TestGroupCommit: with batches smaller than the queue, calls wait for a
// later batch, and seqs stay 1..N; a batch never exceeds its cap, and a
// watcher gets at most two at once (a batch that lands while the next is
// built goes out with it).
func TestGroupCommit(t *testing.T) {
	db := open(t, t.TempDir(), store.Options{MaxBatchEntries: 4})
	var mu sync.Mutex
	var batches, largest int
	stop := db.Watch(func(msgs []store.Message) {
		mu.Lock()
		batches++
		largest = max(largest, len(msgs))
		mu.Unlock()
	})
	defer stop()
	const appenders, perAppender = 16, 50
	seen := make([]bool, appenders*perAppender*3/2+1)
	var wg sync.WaitGroup
	for range appenders {
		wg.Go(func() {
			for i := range perAppender {
				reqs := []store.AppendRequest{{Channel: "c", Data: []byte("x")}}
				if i%2 == 0 {
					reqs = append(reqs, reqs[0])
				}
				res, err := db.Append(t.Context(), reqs)
				if !assert.NoError(t, err) {
					return
				}
				mu.Lock()
				for _, r := range res {
					assert.False(t, seen[r.Seq], "seq %d twice", r.Seq)
					seen[r.Seq] = true
				}
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	require.False(t, t.Failed())
	require.Equal(t, uint64(len(seen)-1), bounds(t, db, "c").Last)
	for seq := 1; seq < len(seen); seq++ {
		require.True(t, seen[seq], "hole at %d", seq)
	}
	mu.Lock()
	defer mu.Unlock()
	require.LessOrEqual(t, largest, 2*4)
	t.Logf("%d messages in %d batches", len(seen)-1, batches)
}

func appendData(t *testing.T, db *store.DB, channel string, data ...string) []store.AppendResult {
	t.Helper()
	reqs := make([]store.AppendRequest, len(data))
	for i, d := range data {
		reqs[i] = store.AppendRequest{Channel: channel, Data: []byte(d)}
	}
	res, err := db.Append(t.Context(), reqs)
	require.NoError(t, err)
	return res
}

func bounds(t *testing.T, db *store.DB, channel string) store.Bounds {
	t.Helper()
	b, err := db.Bounds(t.Context(), channel)
	require.NoError(t, err)
	return b
}

func TestReopen(t *testing.T) {
	dir := t.TempDir()
	db, err := store.Open(dir, store.Options{Logger: quiet})
	require.NoError(t, err)
	appendData(t, db, "a", "a1", "a2", "a3")
	appendData(t, db, "b", "b1")
	require.NoError(t, db.SetCursors(t.Context(), []store.Cursor{{User: "alice", Channel: "a", Pos: store.Position{Epoch: 9, Seq: 2}}}))
	ba, bb := bounds(t, db, "a"), bounds(t, db, "b")
	require.NoError(t, db.Close())

	db = open(t, dir, store.Options{})
	require.Equal(t, ba, bounds(t, db, "a"))
	require.Equal(t, bb, bounds(t, db, "b"))
	require.Equal(t, []store.AppendResult{{Epoch: ba.Epoch, Seq: 4}}, appendData(t, db, "a", "a4"))
	msgs, err := db.Range(t.Context(), "a", 1, 10, 10)
	require.NoError(t, err)
	require.Len(t, msgs, 4)
	require.Equal(t, "a4", string(msgs[3].Data))
	pos, err := db.Cursor(t.Context(), "alice", "a")
	require.NoError(t, err)
	require.Equal(t, store.Position{Epoch: 9, Seq: 2}, pos)

	// A channel created after the reopen gets an id of its own, not a
	// reused one: it sees none of the others' messages.
	res := appendData(t, db, "c", "c1")
	require.Equal(t, uint64(1), res[0].Seq)
	msgs, err = db.Range(t.Context(), "c", 1, 10, 10)
	require.NoError(t, err)
	require.Len(t, msgs, 1)
	require.Equal(t, "c1", string(msgs[0].Data))
}

func TestClose(t *testing.T) {
	db, err := store.Open(t.TempDir(), store.Options{Logger: quiet})
	require.NoError(t, err)
	appendData(t, db, "a", "1")
	require.NoError(t, db.Close())
	require.NoError(t, db.Close(), "twice is safe")

	ctx := t.Context()
	_, err = db.Append(ctx, []store.AppendRequest{{Channel: "a"}})
	require.ErrorIs(t, err, store.ErrClosed)
	_, err = db.Range(ctx, "a", 1, 1, 1)
	require.ErrorIs(t, err, store.ErrClosed)
	_, err = db.Bounds(ctx, "a")
	require.ErrorIs(t, err, store.ErrClosed)
	require.ErrorIs(t, db.SetCursors(ctx, []store.Cursor{{User: "u", Channel: "a"}}), store.ErrClosed)
	_, err = db.Cursor(ctx, "u", "a")
	require.ErrorIs(t, err, store.ErrClosed)
	require.ErrorIs(t, db.RunRetention(ctx), store.ErrClosed)
}

// TestCloseWhileAppending: every Append returns, stored or with ErrClosed,
// and what was acknowledged is there after a reopen.
func TestCloseWhileAppending(t *testing.T) {
	dir := t.TempDir()
	db, err := store.Open(dir, store.Options{Logger: quiet, MaxBatchEntries: 2})
	require.NoError(t, err)
	const appenders = 16
	var mu sync.Mutex
	var maxAcked uint64
	var wg sync.WaitGroup
	started := make(chan struct{}, appenders)
	for g := range appenders {
		wg.Go(func() {
			for i := 0; ; i++ {
				res, err := db.Append(t.Context(), []store.AppendRequest{{Channel: "c", Data: fmt.Appendf(nil, "%d-%d", g, i)}})
				if err != nil {
					assert.ErrorIs(t, err, store.ErrClosed)
					return
				}
				mu.Lock()
				maxAcked = max(maxAcked, res[0].Seq)
				mu.Unlock()
				if i == 0 {
					started <- struct{}{}
				}
			}
		})
	}
	for range appenders {
		<-started
	}
	require.NoError(t, db.Close())
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("an Append did not return after Close")
	}

	db = open(t, dir, store.Options{})
	require.GreaterOrEqual(t, bounds(t, db, "c").Last, maxAcked)
}

func TestOptions(t *testing.T) {
	for name, o := range map[string]store.Options{
		"batch over Badger's limit":   {MaxBatchBytes: 12 << 20},
		"entries over Badger's limit": {MaxBatchEntries: 50000},
		"message over batch":          {MaxMessageSize: 1 << 20, MaxBatchBytes: 1 << 20},
		"negative size":               {MaxMessageSize: -1},
	} {
		t.Run(name, func(t *testing.T) {
			o.Logger = quiet
			_, err := store.Open(t.TempDir(), o)
			require.ErrorIs(t, err, store.ErrInvalid)
		})
	}
}

func TestCallOverBatchCaps(t *testing.T) {
	db := open(t, t.TempDir(), store.Options{MaxBatchEntries: 4})
	_, err := db.Append(t.Context(), make([]store.AppendRequest, 5))
	require.ErrorIs(t, err, store.ErrTooLarge)
	res := appendData(t, db, "c", "1", "2", "3", "4")
	require.Len(t, res, 4)
}

func TestWatchPanic(t *testing.T) {
	db := open(t, t.TempDir(), store.Options{})
	stop := db.Watch(func([]store.Message) { panic("boom") })
	defer stop()
	var got []uint64
	stop2 := db.Watch(func(msgs []store.Message) {
		for _, m := range msgs {
			got = append(got, m.Seq)
		}
	})
	defer stop2()
	appendData(t, db, "c", "1")
	appendData(t, db, "c", "2")
	require.Equal(t, []uint64{1, 2}, got, "a panicking watcher harms neither the appends nor the other watchers")
}

func TestRetentionByAge(t *testing.T) {
	const maxAge = time.Hour
	var mu sync.Mutex
	now := time.Now()
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	advance := func(d time.Duration) { mu.Lock(); now = now.Add(d); mu.Unlock() }

	db := open(t, t.TempDir(), store.Options{MaxAge: maxAge, Now: clock})
	appendData(t, db, "c", "o1", "o2", "o3")
	epoch := bounds(t, db, "c").Epoch
	advance(maxAge + time.Second)
	appendData(t, db, "c", "y4", "y5")
	require.NoError(t, db.RunRetention(t.Context()))
	require.Equal(t, store.Bounds{Epoch: epoch, First: 4, Last: 5}, bounds(t, db, "c"))
	msgs, err := db.Range(t.Context(), "c", 1, 10, 10)
	require.NoError(t, err)
	require.Len(t, msgs, 2)
	require.Equal(t, "y4", string(msgs[0].Data))

	advance(maxAge + time.Second)
	require.NoError(t, db.RunRetention(t.Context()))
	require.Equal(t, store.Bounds{Epoch: epoch, First: 6, Last: 5}, bounds(t, db, "c"), "Last kept when nothing is retained")
	msgs, err = db.Range(t.Context(), "c", 1, 10, 10)
	require.NoError(t, err)
	require.Empty(t, msgs)
	require.Equal(t, []store.AppendResult{{Epoch: epoch, Seq: 6}}, appendData(t, db, "c", "n6"))
}

// TestRetentionInChunks: retention deletes more than one batch can hold,
// over several batches.
func TestRetentionInChunks(t *testing.T) {
	db := open(t, t.TempDir(), store.Options{MaxMessages: 10})
	const n = 12000
	data := make([]string, 1000)
	for i := range data {
		data[i] = "x"
	}
	for range n / len(data) {
		appendData(t, db, "c", data...)
	}
	require.NoError(t, db.RunRetention(t.Context()))
	b := bounds(t, db, "c")
	require.Equal(t, store.Bounds{Epoch: b.Epoch, First: n - 9, Last: n}, b)
	msgs, err := db.Range(t.Context(), "c", 1, n, n)
	require.NoError(t, err)
	require.Len(t, msgs, 10)
	require.Equal(t, uint64(n-9), msgs[0].Seq)
}

// TestBackgroundRetention: retention also runs on its own.
func TestBackgroundRetention(t *testing.T) {
	db, err := store.Open(t.TempDir(), store.Options{Logger: quiet, MaxMessages: 2, RetentionInterval: 10 * time.Millisecond})
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, db.Close()) })
	appendData(t, db, "c", "1", "2", "3", "4", "5")
	deadline := time.Now().Add(10 * time.Second)
	for bounds(t, db, "c").First != 4 {
		require.True(t, time.Now().Before(deadline), "retention did not run")
		time.Sleep(5 * time.Millisecond)
	}
}

const crashEnv = "QUICPUSH_STORE_CRASH_DIR"

// TestCrashHelper is the process TestCrash kills: it appends until killed,
// printing "ack SEQ DATA" for every acknowledged message.
func TestCrashHelper(t *testing.T) {
	dir := os.Getenv(crashEnv)
	if dir == "" {
		t.Skip("the helper process of TestCrash")
	}
	db, err := store.Open(dir, store.Options{Logger: quiet, RetentionInterval: -1, GCInterval: -1})
	require.NoError(t, err)
	var mu sync.Mutex
	for g := range 8 {
		go func() {
			for i := 0; ; i++ {
				data := fmt.Sprintf("g%d-%d", g, i)
				res, err := db.Append(context.Background(), []store.AppendRequest{{Channel: "crash", From: "u", ID: data, Data: []byte(data)}})
				if err != nil {
					fmt.Fprintln(os.Stderr, err)
					os.Exit(3)
				}
				mu.Lock()
				fmt.Printf("ack %d %s\n", res[0].Seq, data) // one write: a line is whole or absent
				mu.Unlock()
			}
		}()
	}
	time.Sleep(time.Minute) // until killed
	t.Fatal("not killed")
}

// TestCrash kills a process that appends (SIGKILL) and checks that every
// acknowledged message survived, and that seqs go on with no hole and no
// reuse.
func TestCrash(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a process")
	}
	dir := t.TempDir()
	cmd := exec.Command(os.Args[0], "-test.run=^TestCrashHelper$", "-test.timeout=2m")
	cmd.Env = append(os.Environ(), crashEnv+"="+dir)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.StdoutPipe()
	require.NoError(t, err)
	require.NoError(t, cmd.Start())
	t.Cleanup(func() { _ = cmd.Process.Kill() })

	type ack struct {
		seq  uint64
		data string
	}
	acks := make(chan ack, 1024)
	go func() {
		defer close(acks)
		r := bufio.NewReader(out)
		for {
			line, err := r.ReadString('\n')
			if err != nil {
				return // a line without its newline was never acknowledged
			}
			f := strings.Fields(line)
			if len(f) != 3 || f[0] != "ack" {
				continue
			}
			seq, err := strconv.ParseUint(f[1], 10, 64)
			if err == nil {
				acks <- ack{seq, f[2]}
			}
		}
	}()
	acked := map[uint64]string{}
	record := func(a ack) {
		prev, dup := acked[a.seq]
		require.False(t, dup, "seq %d acknowledged twice: %s and %s", a.seq, prev, a.data)
		acked[a.seq] = a.data
	}
	deadline := time.After(60 * time.Second)
	for len(acked) < 300 {
		select {
		case a, ok := <-acks:
			require.True(t, ok, "helper exited after %d acks: %s", len(acked), stderr.String())
			record(a)
		case <-deadline:
			_ = cmd.Process.Kill()
			t.Fatalf("only %d acks in time", len(acked))
		}
	}
	require.NoError(t, cmd.Process.Kill()) // SIGKILL
	for a := range acks {                  // what was printed before the kill
		record(a)
	}
	require.Error(t, cmd.Wait())

	db := open(t, dir, store.Options{})
	b := bounds(t, db, "crash")
	var maxAcked uint64
	for seq := range acked {
		maxAcked = max(maxAcked, seq)
	}
	require.GreaterOrEqual(t, b.Last, maxAcked)
	msgs, err := db.Range(t.Context(), "crash", 1, b.Last, int(b.Last)+1)
	require.NoError(t, err)
	require.Len(t, msgs, int(b.Last), "no hole")
	for i, m := range msgs {
		require.Equal(t, uint64(i+1), m.Seq)
		require.Equal(t, b.Epoch, m.Epoch)
	}
	for seq, data := range acked {
		require.Equal(t, data, string(msgs[seq-1].Data), "acknowledged seq %d", seq)
	}
	res := appendData(t, db, "crash", "after")
	require.Equal(t, store.AppendResult{Epoch: b.Epoch, Seq: b.Last + 1}, res[0])
	t.Logf("%d acknowledged, %d stored", len(acked), b.Last)
}

// TestNoLeak: Close stops every goroutine, Badger's included.
func TestNoLeak(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	db, err := store.Open(t.TempDir(), store.Options{Logger: quiet, RetentionInterval: time.Millisecond, GCInterval: time.Millisecond})
	require.NoError(t, err)
	appendData(t, db, "c", "1", "2")
	require.NoError(t, db.RunRetention(t.Context()))
	require.NoError(t, db.Close())
}
