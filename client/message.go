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
// allocation of their own. That is cheaper than carving them from a chunk
// kept per channel: consecutive messages, of whichever channel, land side
// by side in memory the allocator has just handed out, where the chunks
// of many channels are written to in turns, each gone cold meanwhile
// (`quicpush bench fanout --subscribers 1000`, 1000 clients in one
// process: 0.23-0.29 µs per message against 0.45). And a message the
// application keeps holds only its own bytes, not a chunk.
func copyMessage(channel string, p *pb.Push, repaired bool) Message {
	buf := make([]byte, len(p.Data)+len(p.From)+len(p.Id))
	d := copy(buf, p.Data)
	f := d + copy(buf[d:], p.From)
	copy(buf[f:], p.Id)
	m := messageFrom(channel, p, repaired)
	m.Data, m.From, m.ID = buf[:d:d], frozenString(buf[d:f]), frozenString(buf[f:])
	return m
}

// frozenString is b as a string without a copy. Only for bytes nothing
// will write again: messageFrom's, past the end of the Data it hands out.
func frozenString(b []byte) string {
	if len(b) == 0 {
		return ""
	}
	return unsafe.String(&b[0], len(b))
}
