package store

import (
	"io"
	"log/slog"
	"strings"
	"testing"

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
