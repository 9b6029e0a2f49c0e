package store

import (
	"errors"
	"time"
)

// Message is one stored message of a channel's log.
type Message struct {
	Channel string
	Epoch   uint64    // the channel's epoch when the message was stored
	Seq     uint64    // 1, 2, 3... with no holes within an epoch
	Time    time.Time // when it was stored
	From    string    // the publishing user, "" when unknown
	ID      string    // the publisher's client message id, "" when none
	Data    []byte
	// Critical is passed from AppendRequest to Watch for fan-out only; it
	// is not stored.
	Critical bool
}

// AppendRequest asks to append one message to a channel.
type AppendRequest struct {
	Channel string
	From    string
	// ID is the publisher's client message id. When non-empty, (Channel, From, ID)
	// is an idempotency key: appending it again within the idempotency TTL stores
	// nothing and returns the original seq with Duplicate set.
	ID   string
	Data []byte
	// Critical asks the server for redundant delivery; see Message.Critical.
	Critical bool
}

// AppendResult is the outcome of one AppendRequest, once durable.
type AppendResult struct {
	Epoch     uint64
	Seq       uint64
	Duplicate bool // the idempotency key was seen before: nothing was stored
}

// Bounds describes what a channel holds.
type Bounds struct {
	// Epoch identifies the channel's history; 0 means the channel has never
	// stored a message (its epoch is created with its first message).
	Epoch uint64
	// First is the first retained seq; Last+1 when nothing is retained.
	First uint64
	// Last is the last durably committed seq; 0 when none. It is kept when
	// retention deletes every message.
	Last uint64
}

// Position is a point in a channel's log: everything up to Seq in Epoch.
type Position struct {
	Epoch uint64
	Seq   uint64
}

// Covers reports whether p is at or past q in q's epoch: a cursor at p
// never moves back to q (a different epoch replaces it).
func (p Position) Covers(q Position) bool { return p.Epoch == q.Epoch && p.Seq >= q.Seq }

// Cursor is user's position on channel: what they have handled.
type Cursor struct {
	User, Channel string
	Pos           Position
}

// Errors returned by stores. Implementations translate their engine's errors
// into these (wrapping them with %w) at their boundary.
var (
	ErrClosed      = errors.New("store: closed")
	ErrTooLarge    = errors.New("store: message too large")
	ErrInvalid     = errors.New("store: invalid request")
	ErrUnavailable = errors.New("store: unavailable")
)
