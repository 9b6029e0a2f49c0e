package stream

import (
	"errors"
	"fmt"

	"github.com/quic-go/quic-go"

	"github.com/quicpush/quicpush/stream/quicpushpb"
)

// ErrCode is a protocol error code. The same numbers travel in Error frames,
// as QUIC application error codes when a connection is closed, and when a
// stream is reset. They mirror quicpushpb.ErrorCode.
type ErrCode uint64

// Reconnect range (0x1-0xff): the client may reconnect and resume.
const (
	NoError          ErrCode = 0x0
	Internal         ErrCode = 0x1
	ShuttingDown     ErrCode = 0x2
	SlowConsumer     ErrCode = 0x3
	HeartbeatTimeout ErrCode = 0x4
	HelloTimeout     ErrCode = 0x5
	StoreUnavailable ErrCode = 0x6
	Replaced         ErrCode = 0x7
	// PathLimit: the connection has used up its path changes (quic-go
	// v0.64.1 allows two); reconnect, which resumes with nothing lost.
	PathLimit ErrCode = 0x8
)

// Terminal range (0x100-0x1ff): reconnecting will fail the same way until
// the cause (a bug, a token, a version) is fixed.
const (
	ProtocolViolation  ErrCode = 0x100
	FrameTooLarge      ErrCode = 0x101
	FrameUnknown       ErrCode = 0x102
	FrameUnexpected    ErrCode = 0x103
	FrameMalformed     ErrCode = 0x104
	VersionUnsupported ErrCode = 0x105
	Unauthorized       ErrCode = 0x106
)

// Request range (0x200-0x2ff): one request failed; the connection goes on.
const (
	BadRequest      ErrCode = 0x200
	Forbidden       ErrCode = 0x201
	WrongEpoch      ErrCode = 0x202
	InvalidRange    ErrCode = 0x203
	MessageTooLarge ErrCode = 0x204
	NotSubscribed   ErrCode = 0x205
	RateLimited     ErrCode = 0x206
	Unsupported     ErrCode = 0x207
	// NotDelivered: a read receipt for a seq of the user's inbox that the
	// user's clients never acknowledged.
	NotDelivered ErrCode = 0x210
	// BadPageSize: an offline page of 0 messages or more than the server's
	// maximum (Welcome.inbox_max_page_size).
	BadPageSize ErrCode = 0x211
)

// String returns the code's name as in the protocol docs, e.g. "SLOW_CONSUMER".
func (c ErrCode) String() string {
	if name, ok := quicpushpb.ErrorCode_name[int32(c)]; ok && uint64(int32(c)) == uint64(c) {
		return name
	}
	return fmt.Sprintf("ERROR_0x%x", uint64(c))
}

// Reconnect reports whether a client should reconnect and resume after a
// connection was closed with this code.
func (c ErrCode) Reconnect() bool { return c < 0x100 }

// Terminal reports whether the code says reconnecting cannot help.
func (c ErrCode) Terminal() bool { return c >= 0x100 && c < 0x200 }

// Error is a protocol error, sent or received.
type Error struct {
	Remote  bool // the peer reported it
	Code    ErrCode
	Message string
	// RetryAfterMs is the peer's hint for when to try again (0: none).
	RetryAfterMs uint32
}

func (e *Error) Error() string {
	side := "local"
	if e.Remote {
		side = "remote"
	}
	if e.Message == "" {
		return fmt.Sprintf("quicpush: %s error %s", side, e.Code)
	}
	return fmt.Sprintf("quicpush: %s error %s: %s", side, e.Code, e.Message)
}

// Is matches another *Error with the same code, so that
// errors.Is(err, &stream.Error{Code: stream.WrongEpoch}) works.
func (e *Error) Is(target error) bool {
	t, ok := target.(*Error)
	return ok && t.Code == e.Code
}

// Errorf returns a local *Error with the code and a formatted message.
func Errorf(code ErrCode, format string, args ...any) *Error {
	return &Error{Code: code, Message: fmt.Sprintf(format, args...)}
}

// Frame returns the error as an Error frame.
func (e *Error) Frame() *quicpushpb.Frame {
	return &quicpushpb.Frame{Body: &quicpushpb.Frame_Error{Error: &quicpushpb.Error{
		Code: quicpushpb.ErrorCode(e.Code), Message: e.Message, RetryAfterMs: e.RetryAfterMs,
	}}}
}

// FromFrame converts a received Error frame.
func FromFrame(f *quicpushpb.Error) *Error {
	return &Error{Remote: true, Code: ErrCode(f.GetCode()), Message: f.GetMessage(), RetryAfterMs: f.GetRetryAfterMs()}
}

// CodeOf extracts the protocol code from err: an *Error, or a QUIC
// application or stream error carrying one. ok is false for other errors
// (network failures, timeouts).
func CodeOf(err error) (code ErrCode, ok bool) {
	var pe *Error
	if errors.As(err, &pe) {
		return pe.Code, true
	}
	var ae *quic.ApplicationError
	if errors.As(err, &ae) {
		return ErrCode(ae.ErrorCode), true
	}
	var se *quic.StreamError
	if errors.As(err, &se) {
		return ErrCode(se.ErrorCode), true
	}
	return 0, false
}
