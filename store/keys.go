package store

import (
	"encoding/binary"
	"fmt"
	"time"
)

// The key layout, in one place. Every key starts with a one-byte prefix.
// Channel names are mapped to a numeric id so that the message and
// idempotency keys of one channel can never be a prefix of another's.
//
//	lastID:  0x00                                  -> last channel id assigned (8)
//	meta:    0x01 name                             -> id (8), epoch (8), first (8), last (8)
//	message: 0x02 id (8) seq (8)                   -> encoded message (see encodeMessage)
//	idem:    0x03 id (8) len(from) from msgID      -> seq (8), written with a TTL
//	cursor:  0x04 len(user) user channel           -> epoch (8), seq (8)
//
// Integers are big-endian so that keys sort by seq (a range read is one
// iterator scan); len() is a uvarint.
const (
	prefixLastID  byte = 0x00
	prefixMeta    byte = 0x01
	prefixMessage byte = 0x02
	prefixIdem    byte = 0x03
	prefixCursor  byte = 0x04

	msgKeyLen = 1 + 8 + 8
	metaLen   = 4 * 8
)

var lastIDKey = []byte{prefixLastID}

// errCorrupt marks a record this code cannot decode; the store cannot serve it.
var errCorrupt = fmt.Errorf("%w: corrupt record", ErrUnavailable)

func metaKey(channel string) []byte {
	return append([]byte{prefixMeta}, channel...)
}

// msgPrefix is the prefix of all the message keys of channel id.
func msgPrefix(id uint64) []byte {
	return binary.BigEndian.AppendUint64([]byte{prefixMessage}, id)
}

func appendMsgKey(b []byte, id, seq uint64) []byte {
	b = append(b, prefixMessage)
	b = binary.BigEndian.AppendUint64(b, id)
	return binary.BigEndian.AppendUint64(b, seq)
}

func msgKeySeq(k []byte) uint64 {
	return binary.BigEndian.Uint64(k[9:msgKeyLen])
}

// idemKeyLen is the most that appendIdemKey adds.
func idemKeyLen(from, msgID string) int {
	return 1 + 8 + binary.MaxVarintLen64 + len(from) + len(msgID)
}

func appendIdemKey(b []byte, id uint64, from, msgID string) []byte {
	b = append(b, prefixIdem)
	b = binary.BigEndian.AppendUint64(b, id)
	b = binary.AppendUvarint(b, uint64(len(from)))
	b = append(b, from...)
	return append(b, msgID...)
}

func cursorKey(user, channel string) []byte {
	b := make([]byte, 0, 1+binary.MaxVarintLen64+len(user)+len(channel))
	b = append(b, prefixCursor)
	b = binary.AppendUvarint(b, uint64(len(user)))
	b = append(b, user...)
	return append(b, channel...)
}

// meta is a channel's persisted head.
type meta struct {
	id, epoch, first, last uint64
}

func (m meta) encode() []byte { return m.appendTo(make([]byte, 0, metaLen)) }

func (m meta) appendTo(b []byte) []byte {
	b = binary.BigEndian.AppendUint64(b, m.id)
	b = binary.BigEndian.AppendUint64(b, m.epoch)
	b = binary.BigEndian.AppendUint64(b, m.first)
	return binary.BigEndian.AppendUint64(b, m.last)
}

func decodeMeta(v []byte) (meta, error) {
	if len(v) != metaLen {
		return meta{}, fmt.Errorf("%w: meta of %d bytes", errCorrupt, len(v))
	}
	return meta{
		id:    binary.BigEndian.Uint64(v),
		epoch: binary.BigEndian.Uint64(v[8:]),
		first: binary.BigEndian.Uint64(v[16:]),
		last:  binary.BigEndian.Uint64(v[24:]),
	}, nil
}

// A message value is a format byte, the time in Unix nanoseconds (8), then
// From and ID each as uvarint length + bytes, then Data to the end.
const (
	msgFormat     byte = 1
	msgTimeEnd         = 1 + 8
	maxMsgHeadLen      = msgTimeEnd + 2*binary.MaxVarintLen64
)

func encodedLen(r *AppendRequest) int {
	return maxMsgHeadLen + len(r.From) + len(r.ID) + len(r.Data)
}

func appendMessage(b []byte, t time.Time, r *AppendRequest) []byte {
	b = append(b, msgFormat)
	b = binary.BigEndian.AppendUint64(b, uint64(t.UnixNano()))
	b = binary.AppendUvarint(b, uint64(len(r.From)))
	b = append(b, r.From...)
	b = binary.AppendUvarint(b, uint64(len(r.ID)))
	b = append(b, r.ID...)
	return append(b, r.Data...)
}

// decodeMessage fills m's Time, From, ID and Data from v; Data aliases v.
func decodeMessage(v []byte, m *Message) error {
	t, err := messageTime(v)
	if err != nil {
		return err
	}
	rest := v[msgTimeEnd:]
	from, rest, ok := cutString(rest)
	if !ok {
		return fmt.Errorf("%w: message from", errCorrupt)
	}
	id, rest, ok := cutString(rest)
	if !ok {
		return fmt.Errorf("%w: message id", errCorrupt)
	}
	m.Time, m.From, m.ID, m.Data = t, from, id, rest
	return nil
}

// messageTime decodes only the time, which is all retention needs.
func messageTime(v []byte) (time.Time, error) {
	if len(v) < msgTimeEnd || v[0] != msgFormat {
		return time.Time{}, fmt.Errorf("%w: message header", errCorrupt)
	}
	return time.Unix(0, int64(binary.BigEndian.Uint64(v[1:msgTimeEnd]))), nil
}

func cutString(b []byte) (s string, rest []byte, ok bool) {
	n, w := binary.Uvarint(b)
	if w <= 0 || n > uint64(len(b)-w) {
		return "", nil, false
	}
	return string(b[w : w+int(n)]), b[w+int(n):], true
}

func encodePosition(p Position) []byte {
	b := make([]byte, 0, 16)
	b = binary.BigEndian.AppendUint64(b, p.Epoch)
	return binary.BigEndian.AppendUint64(b, p.Seq)
}

func decodePosition(v []byte) (Position, error) {
	if len(v) != 16 {
		return Position{}, fmt.Errorf("%w: cursor of %d bytes", errCorrupt, len(v))
	}
	return Position{Epoch: binary.BigEndian.Uint64(v), Seq: binary.BigEndian.Uint64(v[8:])}, nil
}

func decodeUint64(v []byte) (uint64, error) {
	if len(v) != 8 {
		return 0, fmt.Errorf("%w: integer of %d bytes", errCorrupt, len(v))
	}
	return binary.BigEndian.Uint64(v), nil
}
