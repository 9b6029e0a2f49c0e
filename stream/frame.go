package stream

import (
	"errors"
	"io"
	"unicode"
	"unicode/utf8"

	"github.com/quic-go/quic-go/quicvarint"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	"github.com/quicpush/quicpush/stream/quicpushpb"
)

// Size limits. MaxMessageSize is the one limit on a message's data, enforced
// the same at every layer; MaxFrameSize adds room for a frame's other fields.
const (
	MaxMessageSize = 64 << 10
	MaxChannelLen  = 255
	MaxIDLen       = 128
	MaxFrameSize   = MaxMessageSize + 1024
)

// ALPN is the TLS application protocol of native quicpush connections.
const ALPN = "quicpush/1"

// Version is the protocol's major and minor version.
const (
	Version      = 1
	MinorVersion = 0
)

// Feature bits, exchanged in Hello and Welcome: a peer uses a feature only
// when both sides announced it, so either side can be older.
const (
	// FeatureTokenRefresh: the client may send Refresh on the control
	// stream, and the server answers Refreshed.
	FeatureTokenRefresh uint64 = 1 << 0
	// FeatureDatagrams: the client takes droppable pushes as QUIC
	// datagrams, each holding one Frame (no length prefix).
	FeatureDatagrams uint64 = 1 << 1
	// FeatureCriticalCopies: the client takes copies of critical reliable
	// pushes as datagrams (with FeatureDatagrams) and on unidirectional
	// streams the server opens, one Push each.
	FeatureCriticalCopies uint64 = 1 << 2
	// FeatureInbox: 1:1 chat (ChatSend, ReceiptRead) and offline pages
	// (InboxCountRequest, InboxPull); Welcome carries the page sizes.
	FeatureInbox uint64 = 1 << 3
	// FeatureConfirmPresence: the server takes Publish.confirm and the
	// presence frames (docs/PROTOCOL.md §16). A client must not send them
	// to a server without it: an older server would ignore confirm and
	// close the connection on a presence frame.
	FeatureConfirmPresence uint64 = 1 << 4

	// Features is every feature this implementation has.
	Features = FeatureTokenRefresh | FeatureDatagrams | FeatureCriticalCopies | FeatureInbox | FeatureConfirmPresence
)

// AppendFrame appends f to b, prefixed by its length as a QUIC varint.
func AppendFrame(b []byte, f *quicpushpb.Frame) ([]byte, error) {
	n := proto.Size(f)
	if n > MaxFrameSize {
		return b, Errorf(FrameTooLarge, "frame of %d bytes exceeds %d", n, MaxFrameSize)
	}
	b = quicvarint.Append(b, uint64(n))
	return proto.MarshalOptions{UseCachedSize: true}.MarshalAppend(b, f)
}

// Reader reads length-prefixed frames from a stream. It reads exactly one
// frame's bytes at a time, so an idle stream holds no read-ahead buffer.
// Wrap r in a bufio.Reader where throughput matters more than memory.
type Reader struct {
	r       io.Reader
	byteR   io.ByteReader
	maxSize int
	buf     []byte
}

// NewReader returns a Reader that rejects frames larger than maxSize
// (zero: MaxFrameSize) before allocating for them.
func NewReader(r io.Reader, maxSize int) *Reader {
	if maxSize <= 0 {
		maxSize = MaxFrameSize
	}
	fr := &Reader{r: r, maxSize: maxSize}
	if br, ok := r.(io.ByteReader); ok {
		fr.byteR = br
	} else {
		fr.byteR = &oneByteReader{r: r}
	}
	return fr
}

// ReadFrame reads the next frame. At a clean end of stream between frames it
// returns io.EOF; a stream that ends inside a frame gives
// io.ErrUnexpectedEOF. Bad frames give an *Error with FrameTooLarge,
// FrameMalformed or FrameUnknown.
func (r *Reader) ReadFrame() (*quicpushpb.Frame, error) {
	body, err := r.ReadBody()
	if err != nil {
		return nil, err
	}
	return DecodeFrame(body)
}

// keptBuffer is the largest body buffer a Reader keeps between frames: an
// idle stream holds no large message's buffer.
const keptBuffer = 4096

// ReadBody reads the next frame's body, undecoded, with the errors of
// ReadFrame but the decoding ones. The body is valid until the next read.
func (r *Reader) ReadBody() ([]byte, error) {
	n, err := quicvarint.Read(r.byteR)
	if err != nil {
		if errors.Is(err, io.EOF) {
			return nil, io.EOF
		}
		return nil, err
	}
	if n > uint64(r.maxSize) {
		return nil, Errorf(FrameTooLarge, "frame of %d bytes exceeds %d", n, r.maxSize)
	}
	var body []byte
	if n > keptBuffer {
		body = make([]byte, n)
	} else {
		if cap(r.buf) < int(n) {
			r.buf = make([]byte, n) // as large as needed: small on a quiet stream
		}
		body = r.buf[:n]
	}
	if _, err := io.ReadFull(r.r, body); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, io.ErrUnexpectedEOF
		}
		return nil, err
	}
	return body, nil
}

// PushBody returns the Push inside a frame body that is a Push frame and
// nothing else, for a reader that decodes pushes into a Push it reuses
// (proto.Unmarshal resets it in place); ok is false for any other body,
// which DecodeFrame then decodes (or refuses) as usual.
func PushBody(body []byte) (push []byte, ok bool) {
	num, typ, n := protowire.ConsumeTag(body)
	if n < 0 || num != pushField || typ != protowire.BytesType {
		return nil, false
	}
	push, m := protowire.ConsumeBytes(body[n:])
	if m < 0 || n+m != len(body) {
		return nil, false
	}
	return push, true
}

// DecodePush decodes a Push that PushBody found into p, which it resets
// and reuses, for the client's hot path (a third of its own CPU per
// delivery was spent in proto.Unmarshal): with vtprotobuf's generated code,
// without reflection, and without copying: p's strings and Data alias b,
// so whoever keeps them past b's next use must copy them. Unlike
// DecodeFrame it does not check that strings are valid UTF-8: a push comes
// from the server, which validated them.
func DecodePush(b []byte, p *quicpushpb.Push) error {
	p.Reset()
	if err := p.UnmarshalVTUnsafe(b); err != nil {
		return Errorf(FrameMalformed, "cannot decode push: %v", err)
	}
	return nil
}

// pushField is Frame.push's field number.
var pushField = (&quicpushpb.Frame{}).ProtoReflect().Descriptor().Fields().ByName("push").Number()

// DecodeFrame decodes one frame body (without its length prefix).
func DecodeFrame(body []byte) (*quicpushpb.Frame, error) {
	f := new(quicpushpb.Frame)
	if err := proto.Unmarshal(body, f); err != nil {
		return nil, Errorf(FrameMalformed, "cannot decode frame: %v", err)
	}
	if f.Body == nil {
		return nil, Errorf(FrameUnknown, "frame of unknown type")
	}
	return f, nil
}

type oneByteReader struct {
	r   io.Reader
	one [1]byte
}

func (o *oneByteReader) ReadByte() (byte, error) {
	if _, err := io.ReadFull(o.r, o.one[:]); err != nil {
		return 0, err
	}
	return o.one[0], nil
}

// ValidateChannel checks a channel name: 1 to MaxChannelLen bytes of UTF-8
// without control characters or spaces of any kind.
func ValidateChannel(name string) error {
	if name == "" || len(name) > MaxChannelLen {
		return Errorf(BadRequest, "channel name must be 1 to %d bytes", MaxChannelLen)
	}
	if !utf8.ValidString(name) {
		return Errorf(BadRequest, "channel name is not UTF-8")
	}
	for _, c := range name {
		if unicode.IsControl(c) || unicode.IsSpace(c) {
			return Errorf(BadRequest, "channel name %q has a space or control character", name)
		}
	}
	return nil
}

// ValidateID checks a client message id: at most MaxIDLen bytes.
func ValidateID(id string) error {
	if len(id) > MaxIDLen {
		return Errorf(BadRequest, "message id longer than %d bytes", MaxIDLen)
	}
	return nil
}

// Name returns the frame's type name for logs and errors, e.g. "subscribe".
func Name(f *quicpushpb.Frame) string {
	if f == nil || f.Body == nil {
		return "unknown"
	}
	return string(f.ProtoReflect().WhichOneof(f.ProtoReflect().Descriptor().Oneofs().ByName("body")).Name())
}

// Unexpected returns the error for a frame that is not allowed where it came.
func Unexpected(f *quicpushpb.Frame, where string) *Error {
	return Errorf(FrameUnexpected, "%s frame not allowed %s", Name(f), where)
}
