package client

import (
	"time"
	"unsafe"

	pb "github.com/quicpush/quicpush/stream/quicpushpb"
)

// Message is one message handed to a Handler. It is the application's to
// keep: nothing in the SDK changes it later. Its Data may share memory with
// other small messages of the channel (never overlapping; appending to it
// copies), so keeping one small message keeps up to 4 KiB alive.
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

// messageFrom makes the Message of a push on channel that owns its bytes
// (decoded by proto.Unmarshal: repairs, pages, history).
func messageFrom(channel string, p *pb.Push, repaired bool) Message {
	return Message{
		Channel: channel, Epoch: p.Epoch, Seq: p.Seq,
		Droppable: p.Class == pb.Class_CLASS_DROPPABLE, DroppableSeq: p.DroppableSeq,
		Data: p.Data, Time: time.Unix(0, p.TimeUnixNs), From: p.From, ID: p.Id, Repaired: repaired, Critical: p.Critical,
	}
}

// copyMessage is messageFrom for a push that may alias a read buffer (a
// live one: stream.DecodePush): the data, From and ID are copied into one
// piece of memory from c.
func copyMessage(channel string, p *pb.Push, repaired bool, c *copier) Message {
	buf := c.take(len(p.Data) + len(p.From) + len(p.Id))
	d := copy(buf, p.Data)
	f := d + copy(buf[d:], p.From)
	copy(buf[f:], p.Id)
	m := messageFrom(channel, p, repaired)
	m.Data, m.From, m.ID = buf[:d:d], frozenString(buf[d:f]), frozenString(buf[f:])
	return m
}

// copier hands out memory for the messages of one channel. Small ones are
// carved from shared chunks, so a steady stream of pushes costs one
// allocation per chunk instead of two per message (an eighth of the SDK's
// CPU per delivery went to those). Pieces never overlap, and a Data slice
// ends at its own capacity; a message the application keeps keeps its
// chunk (copyChunk bytes) alive. Not safe for concurrent use: a channel's
// is guarded by the channel's lock.
type copier struct{ free []byte }

const (
	copyChunk = 4 << 10
	copyMax   = copyChunk / 16 // larger messages get memory of their own
)

func (c *copier) take(n int) []byte {
	if n > copyMax {
		return make([]byte, n)
	}
	if len(c.free) < n {
		c.free = make([]byte, copyChunk)
	}
	b := c.free[:n:n]
	c.free = c.free[n:]
	return b
}

// frozenString is b as a string without a copy. Only for bytes nothing
// will write again: messageFrom's, past the end of the Data it hands out.
func frozenString(b []byte) string {
	if len(b) == 0 {
		return ""
	}
	return unsafe.String(&b[0], len(b))
}
