package server

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/quicpush/quicpush/store"
	"github.com/quicpush/quicpush/store/memstore"
)

// countingStore counts SetCursors calls and fails the next one when told.
type countingStore struct {
	Store
	calls int
	fail  bool
}

func (s *countingStore) SetCursors(ctx context.Context, cursors []store.Cursor) error {
	s.calls++
	if s.fail {
		s.fail = false
		return errors.New("disk full")
	}
	return s.Store.SetCursors(ctx, cursors)
}

// One flush writes an interval's acks of many users with one call (one
// commit, not one per user), and a failed flush keeps them for the next
// without overwriting a newer ack.
func TestCursorFlushIsOneWrite(t *testing.T) {
	ctx := t.Context()
	st := &countingStore{Store: memstore.New(memstore.Options{})}
	w := newCursorWriter(st, 0, slog.New(slog.DiscardHandler))
	cursor := func(user string) store.Position {
		t.Helper()
		pos, err := st.Cursor(ctx, user, "room/1")
		require.NoError(t, err)
		return pos
	}

	for i := range 3000 {
		w.set(fmt.Sprint("user", i), "room/1", store.Position{Epoch: 1, Seq: uint64(i + 1)})
	}
	w.flush(ctx)
	require.Equal(t, 1, st.calls)
	require.Equal(t, store.Position{Epoch: 1, Seq: 3000}, cursor("user2999"))

	w.set("alice", "room/1", store.Position{Epoch: 1, Seq: 5})
	w.set("bob", "room/1", store.Position{Epoch: 1, Seq: 7})
	st.fail = true
	w.flush(ctx)
	require.Zero(t, cursor("alice"), "the failed flush wrote nothing")
	pos, err := w.cursor(ctx, "alice", "room/1")
	require.NoError(t, err)
	require.Equal(t, store.Position{Epoch: 1, Seq: 5}, pos, "still counted while pending")

	w.set("bob", "room/1", store.Position{Epoch: 1, Seq: 9}) // newer than the failed one
	w.flush(ctx)
	require.Equal(t, 3, st.calls)
	require.Equal(t, store.Position{Epoch: 1, Seq: 5}, cursor("alice"))
	require.Equal(t, store.Position{Epoch: 1, Seq: 9}, cursor("bob"))

	w.flush(ctx)
	require.Equal(t, 3, st.calls, "nothing dirty: no write")
}
