package client

import (
	"bytes"
	"strings"
	"time"

	pb "github.com/quicpush/quicpush/stream/quicpushpb"
)

// Message is one message handed to a Handler.
type Message struct {
	Channel string
	Epoch   uint64
	// Seq is the channel seq of a reliable message (1, 2, 3... in order,
	// each once); 0 for a droppable one.
	Seq uint64
	// Droppable messages are not stored and may be shed; DroppableSeq is the
	// channel's separate counter for them.
	Droppable    bool
	DroppableSeq uint64
	Data         []byte
	Time         time.Time // when the server stored (or took) it
	From         string    // the publishing user
	ID           string    // the publisher's client message id
	Repaired     bool      // it came over a repair stream, not the live push
	// Critical: published as critical (redundant delivery). Not stored:
	// a message that came by repair says false.
	Critical bool
}

// Gap reports seqs of a channel that will never be handed over.
type Gap struct {
	Channel string
	Epoch   uint64 // the epoch the lost seqs belong to
	From    uint64
	// To is the last lost seq; 0 when unknown (the channel was reset and
	// the old history's end was never seen).
	To     uint64
	Reason string // GapExpired or GapReset
}

// Shed reports droppable messages of a channel that the server shed for
// this client; they will never arrive.
type Shed struct {
	Channel string
	Count   uint64
}

// Gap reasons.
const (
	// GapExpired: the messages were deleted by retention before this client
	// could fetch them.
	GapExpired = "expired"
	// GapReset: the channel's history was lost (its epoch changed); the
	// client goes on with the new epoch from its start.
	GapReset = "reset"
)

// Handler handles one message. Messages of a channel are handed over one at
// a time, reliable ones in seq order and each once. Returning nil marks the
// message handled: its position is saved, then acknowledged. Returning an
// error ends the subscription with the message not handled, so the next
// subscription from the saved position (after a restart, say) gets it
// again; the error goes to SubscribeOptions.OnError.
type Handler func(Message) error

// messageFrom makes the Message of a push on channel. It copies what it
// keeps, as a live push aliases the reader's buffer (stream.DecodePush):
// the data, and From and ID in one allocation.
func messageFrom(channel string, p *pb.Push, repaired bool) Message {
	var ids strings.Builder
	ids.Grow(len(p.From) + len(p.Id))
	ids.WriteString(p.From)
	ids.WriteString(p.Id)
	fromID := ids.String()
	return Message{
		Channel: channel, Epoch: p.Epoch, Seq: p.Seq,
		Droppable: p.Class == pb.Class_CLASS_DROPPABLE, DroppableSeq: p.DroppableSeq,
		Data: bytes.Clone(p.Data), Time: time.Unix(0, p.TimeUnixNs), From: fromID[:len(p.From)], ID: fromID[len(p.From):],
		Repaired: repaired, Critical: p.Critical,
	}
}
