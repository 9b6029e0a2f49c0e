package server

import (
	"context"

	"github.com/quicpush/quicpush/store"
)

// Store is what the server needs from a channel log. It is engine-neutral so
// that a distributed backend can replace the embedded Badger store.
//
// Implementations: store.DB (Badger) and memstore.Store; both pass the
// contract suite in store/storetest.
type Store interface {
	// Append durably appends messages, assigning each channel's next seqs in
	// request order, and returns once they are durable. Requests from
	// concurrent callers may be committed together (group commit).
	Append(ctx context.Context, reqs []store.AppendRequest) ([]store.AppendResult, error)
	// Range returns the channel's retained messages with from <= seq <= to,
	// in seq order, at most limit of them.
	Range(ctx context.Context, channel string, from, to uint64, limit int) ([]store.Message, error)
	// Bounds returns the channel's epoch, first retained and last committed seq.
	Bounds(ctx context.Context, channel string) (store.Bounds, error)
	// SetCursors records each user's position on a channel. It never moves
	// a cursor backwards within an epoch. Many cursors in one call cost
	// few durable commits.
	SetCursors(ctx context.Context, cursors []store.Cursor) error
	// Cursor returns user's acknowledged position on channel (zero if none).
	Cursor(ctx context.Context, user, channel string) (store.Position, error)
	// Watch calls fn with every batch of committed messages, in commit order
	// (so in seq order per channel), after they are visible to Bounds and
	// Range. fn must not block. The returned func stops the calls.
	Watch(fn func([]store.Message)) (stop func())
}

// queuingStore is a Store that can queue an append behind the one
// committing (store.DB): a session's publisher then keeps its next batch
// queued while one commits, and the store answers and fans out both
// together. Other stores are called with Append, one batch at a time.
type queuingStore interface {
	Queue(ctx context.Context, reqs []store.AppendRequest) (store.Pending, error)
}
