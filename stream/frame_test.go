package stream

import (
	"bytes"
	"errors"
	"io"
	"math/rand/v2"
	"testing"

	"github.com/quic-go/quic-go/quicvarint"
	"github.com/stretchr/testify/require"
	"google.golang.org/protobuf/proto"

	pb "github.com/quicpush/quicpush/stream/quicpushpb"
)

// sampleFrames holds one frame of every type, to seed tests and fuzzing.
func sampleFrames() []*pb.Frame {
	return []*pb.Frame{
		{Body: &pb.Frame_Hello{Hello: &pb.Hello{Version: 1, Token: "t", ClientId: "c", DeviceId: "d", Features: 3}}},
		{Body: &pb.Frame_Welcome{Welcome: &pb.Welcome{Version: 1, ConnectionId: "x", User: "u", HeartbeatMs: 5000, HoleWaitMs: 50, MergeWindowMs: 20, RepairBatch: 512, MaxFrameSize: MaxFrameSize, AckDelayMs: 100, InboxPageSize: 200, InboxMaxPageSize: 1000}}},
		{Body: &pb.Frame_Ping{Ping: &pb.Ping{Id: 7, Padding: make([]byte, 48)}}},
		{Body: &pb.Frame_Pong{Pong: &pb.Pong{Id: 7}}},
		{Body: &pb.Frame_GoAway{GoAway: &pb.GoAway{Code: pb.ErrorCode_SHUTTING_DOWN, ReconnectAfterMs: 100, Message: "bye"}}},
		{Body: &pb.Frame_Refresh{Refresh: &pb.Refresh{Token: "new"}}},
		{Body: &pb.Frame_Refreshed{Refreshed: &pb.Refreshed{TokenExpiresUnixMs: 1700000000000}}},
		{Body: &pb.Frame_SessionOpen{SessionOpen: &pb.SessionOpen{Name: "classroom"}}},
		{Body: &pb.Frame_Subscribe{Subscribe: &pb.Subscribe{RequestId: 1, Channel: "room/a", Start: pb.Start_START_AFTER, Epoch: 9, After: 4}}},
		{Body: &pb.Frame_Subscribed{Subscribed: &pb.Subscribed{RequestId: 1, Channel: "room/a", Epoch: 9, Head: 10, FirstRetained: 1, StartAfter: 4, Reset_: true}}},
		{Body: &pb.Frame_Unsubscribe{Unsubscribe: &pb.Unsubscribe{Channel: "room/a"}}},
		{Body: &pb.Frame_Push{Push: &pb.Push{Channel: "room/a", Epoch: 9, Seq: 11, Data: []byte("hello"), TimeUnixNs: 1, From: "t", Id: "p-1"}}},
		{Body: &pb.Frame_Ack{Ack: &pb.Ack{Channel: "room/a", Epoch: 9, Seq: 11}}},
		{Body: &pb.Frame_Publish{Publish: &pb.Publish{RequestId: 2, Channel: "room/a", Data: []byte("x"), Class: pb.Class_CLASS_DROPPABLE, Id: "p-2"}}},
		{Body: &pb.Frame_PublishAck{PublishAck: &pb.PublishAck{RequestId: 2, Channel: "room/a", Epoch: 9, Seq: 12, Duplicate: true}}},
		{Body: &pb.Frame_HeadNotice{HeadNotice: &pb.HeadNotice{Channel: "room/a", Epoch: 9, Head: 40, Reason: pb.HeadNotice_REASON_BEHIND}}},
		{Body: &pb.Frame_Shed{Shed: &pb.Shed{Channel: "room/a", Count: 3}}},
		{Body: &pb.Frame_SessionOpened{SessionOpened: &pb.SessionOpened{HoleWaitMs: 10, MergeWindowMs: 5, RepairBatch: 100}}},
		{Body: &pb.Frame_RepairRequest{RepairRequest: &pb.RepairRequest{Channel: "room/a", Epoch: 9, From: 3, To: 8, Limit: 100}}},
		{Body: &pb.Frame_RepairEnd{RepairEnd: &pb.RepairEnd{Next: 9, FirstRetained: 1, Head: 12}}},
		{Body: &pb.Frame_ChatSend{ChatSend: &pb.ChatSend{RequestId: 4, To: "bob", Id: "m-1", Data: []byte("hi")}}},
		{Body: &pb.Frame_ReceiptRead{ReceiptRead: &pb.ReceiptRead{RequestId: 5, Epoch: 9, Seq: 1}}},
		{Body: &pb.Frame_InboxCountRequest{InboxCountRequest: &pb.InboxCountRequest{Channels: []string{"user/bob/inbox"}}}},
		{Body: &pb.Frame_InboxCounts{InboxCounts: &pb.InboxCounts{Counts: []*pb.InboxCount{{Channel: "user/bob/inbox", Epoch: 9, Head: 30, FirstRetained: 1, Acked: 10, Waiting: 20}}}}},
		{Body: &pb.Frame_InboxPull{InboxPull: &pb.InboxPull{Channel: "user/bob/inbox", Epoch: 9, After: 10, Limit: 100, AckEpoch: 9, AckSeq: 10}}},
		{Body: &pb.Frame_InboxPage{InboxPage: &pb.InboxPage{Epoch: 9, From: 11, Next: 31, Head: 30, FirstRetained: 1}}},
		{Body: &pb.Frame_Error{Error: &pb.Error{Code: pb.ErrorCode_WRONG_EPOCH, Message: "m", RequestId: 3, Channel: "room/a"}}},
		{Body: &pb.Frame_Publish{Publish: &pb.Publish{RequestId: 4, Channel: "room/a", Data: []byte("quiz"), Id: "p-4", Confirm: &pb.Confirm{DeadlineMs: 5000}}}},
		{Body: &pb.Frame_ConfirmProgress{ConfirmProgress: &pb.ConfirmProgress{RequestId: 4, Channel: "room/a", Epoch: 9, Seq: 13, Confirmed: 28, Total: 30}}},
		{Body: &pb.Frame_ConfirmReport{ConfirmReport: &pb.ConfirmReport{RequestId: 4, Channel: "room/a", Epoch: 9, Seq: 13, Confirmed: 28, Total: 30, Missing: []string{"ann", "bob"}, MissingMore: 1, Final: true}}},
		{Body: &pb.Frame_PresenceWatch{PresenceWatch: &pb.PresenceWatch{RequestId: 5, Channel: "room/a"}}},
		{Body: &pb.Frame_PresenceUnwatch{PresenceUnwatch: &pb.PresenceUnwatch{Channel: "room/a"}}},
		{Body: &pb.Frame_PresenceUpdate{PresenceUpdate: &pb.PresenceUpdate{Channel: "room/a", Online: 29, Joined: []string{"cy"}, Left: []string{"di"}, JoinedCount: 1, LeftCount: 1}}},
		{Body: &pb.Frame_PresenceList{PresenceList: &pb.PresenceList{RequestId: 6, Channel: "room/a", After: "bob", Limit: 100}}},
		{Body: &pb.Frame_PresenceMembers{PresenceMembers: &pb.PresenceMembers{RequestId: 6, Channel: "room/a", Users: []string{"cy", "di"}, Online: 29, Next: "di"}}},
	}
}

func TestFramesRoundTrip(t *testing.T) {
	var buf []byte
	frames := sampleFrames()
	for _, f := range frames {
		var err error
		buf, err = AppendFrame(buf, f)
		require.NoError(t, err)
	}
	r := NewReader(bytes.NewReader(buf), 0)
	for _, want := range frames {
		got, err := r.ReadFrame()
		require.NoError(t, err)
		require.True(t, proto.Equal(want, got), "want %v, got %v", want, got)
	}
	_, err := r.ReadFrame()
	require.ErrorIs(t, err, io.EOF)
}

func TestEveryFrameTypeIsSampled(t *testing.T) {
	oneof := (&pb.Frame{}).ProtoReflect().Descriptor().Oneofs().ByName("body")
	seen := map[string]bool{}
	for _, f := range sampleFrames() {
		seen[Name(f)] = true
	}
	for i := 0; i < oneof.Fields().Len(); i++ {
		name := string(oneof.Fields().Get(i).Name())
		require.True(t, seen[name], "no sample frame of type %s", name)
	}
}

func TestOversizeFrameRejectedBeforeReading(t *testing.T) {
	b := quicvarint.Append(nil, 1<<40) // claims a terabyte, sends nothing more
	_, err := NewReader(bytes.NewReader(b), 0).ReadFrame()
	require.ErrorIs(t, err, &Error{Code: FrameTooLarge})

	big := &pb.Frame{Body: &pb.Frame_Push{Push: &pb.Push{Data: make([]byte, MaxFrameSize)}}}
	_, err = AppendFrame(nil, big)
	require.ErrorIs(t, err, &Error{Code: FrameTooLarge})
}

func TestBadFrames(t *testing.T) {
	unknown := quicvarint.Append(nil, 3)
	unknown = append(unknown, 0xf8, 0x06, 0x01) // field 111, varint 1: not in the oneof
	_, err := NewReader(bytes.NewReader(unknown), 0).ReadFrame()
	require.ErrorIs(t, err, &Error{Code: FrameUnknown})

	malformed := quicvarint.Append(nil, 2)
	malformed = append(malformed, 0x0a, 0x05) // hello of 5 bytes, truncated
	_, err = NewReader(bytes.NewReader(malformed), 0).ReadFrame()
	require.ErrorIs(t, err, &Error{Code: FrameMalformed})

	truncated, err := AppendFrame(nil, sampleFrames()[0])
	require.NoError(t, err)
	_, err = NewReader(bytes.NewReader(truncated[:len(truncated)-1]), 0).ReadFrame()
	require.ErrorIs(t, err, io.ErrUnexpectedEOF)
}

func TestErrCodesMirrorProto(t *testing.T) {
	codes := []ErrCode{NoError, Internal, ShuttingDown, SlowConsumer, HeartbeatTimeout, HelloTimeout, StoreUnavailable, Replaced, PathLimit,
		ProtocolViolation, FrameTooLarge, FrameUnknown, FrameUnexpected, FrameMalformed, VersionUnsupported, Unauthorized,
		BadRequest, Forbidden, WrongEpoch, InvalidRange, MessageTooLarge, NotSubscribed, RateLimited, Unsupported,
		NotDelivered, BadPageSize,
		ConfirmLimit, ConfirmTooManyRecipients, PresenceLimit}
	require.Len(t, codes, len(pb.ErrorCode_name))
	for _, c := range codes {
		name, ok := pb.ErrorCode_name[int32(c)]
		require.True(t, ok, "code 0x%x not in the proto enum", uint64(c))
		require.Equal(t, name, c.String())
	}
	require.Equal(t, "ERROR_0x999", ErrCode(0x999).String())
	require.True(t, SlowConsumer.Reconnect())
	require.True(t, Unauthorized.Terminal())
	require.False(t, WrongEpoch.Reconnect() || WrongEpoch.Terminal())
	err := error(Errorf(WrongEpoch, "epoch %d", 3))
	require.True(t, errors.Is(err, &Error{Code: WrongEpoch}))
	code, ok := CodeOf(err)
	require.True(t, ok)
	require.Equal(t, WrongEpoch, code)
}

func TestValidateChannel(t *testing.T) {
	require.NoError(t, ValidateChannel("room/math-101"))
	require.NoError(t, ValidateChannel("user/éloïse"))
	for _, bad := range []string{"", "a b", "a\nb", "a\u0085b", "a\u00a0b", "a\u3000b", string(make([]byte, MaxChannelLen+1)), "\xff"} {
		require.ErrorIs(t, ValidateChannel(bad), &Error{Code: BadRequest}, "%q", bad)
	}
}

// FuzzFrameReader feeds arbitrary bytes, delivered in random pieces, to the
// Reader: it must never panic, never return a frame that does not
// re-encode to an equal frame, and never allocate beyond the cap.
func FuzzFrameReader(f *testing.F) {
	for _, fr := range sampleFrames() {
		b, err := AppendFrame(nil, fr)
		require.NoError(f, err)
		f.Add(b, uint64(1))
	}
	all := []byte{}
	for _, fr := range sampleFrames() {
		all, _ = AppendFrame(all, fr)
	}
	f.Add(all, uint64(42))
	f.Fuzz(func(t *testing.T, data []byte, seed uint64) {
		r := NewReader(&choppyReader{data: data, rng: rand.New(rand.NewPCG(seed, seed))}, 0)
		for i := 0; i < 1000; i++ {
			fr, err := r.ReadFrame()
			if err != nil {
				return
			}
			b, err := AppendFrame(nil, fr)
			if err != nil {
				t.Fatalf("decoded frame does not re-encode: %v", err)
			}
			again, err := NewReader(bytes.NewReader(b), 0).ReadFrame()
			if err != nil || !proto.Equal(fr, again) {
				t.Fatalf("round trip changed the frame: %v vs %v (%v)", fr, again, err)
			}
		}
	})
}

// DecodePush (vtprotobuf) takes every Push that proto.Unmarshal takes and
// gives the same message, whatever the Push it reuses held before.
func FuzzDecodePush(f *testing.F) {
	for _, fr := range sampleFrames() {
		if p := fr.GetPush(); p != nil {
			b, err := proto.Marshal(p)
			require.NoError(f, err)
			f.Add(b)
		}
	}
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, b []byte) {
		reused := &pb.Push{Channel: "room/old", Seq: 9, Data: []byte("old"), Critical: true, Id: "old"}
		want := new(pb.Push)
		if proto.Unmarshal(b, want) != nil || len(want.ProtoReflect().GetUnknown()) > 0 {
			// Must not panic. They differ on what no server sends: it may
			// take strings that are not UTF-8, and refuse a known field of
			// the wrong wire type, which proto keeps as an unknown one.
			DecodePush(b, reused)
			return
		}
		if err := DecodePush(b, reused); err != nil {
			t.Fatalf("DecodePush refused a push proto.Unmarshal took: %v", err)
		}
		if !proto.Equal(want, reused) {
			t.Fatalf("DecodePush gave %v, proto.Unmarshal %v", reused, want)
		}
	})
}

// choppyReader returns data in random-sized pieces, as a stream would.
type choppyReader struct {
	data []byte
	rng  *rand.Rand
}

func (c *choppyReader) Read(p []byte) (int, error) {
	if len(c.data) == 0 {
		return 0, io.EOF
	}
	n := 1 + c.rng.IntN(len(c.data))
	n = min(n, len(p))
	copy(p, c.data[:n])
	c.data = c.data[n:]
	return n, nil
}

func BenchmarkAppendFrame(b *testing.B) {
	f := &pb.Frame{Body: &pb.Frame_Push{Push: &pb.Push{Channel: "room/math-101", Epoch: 1 << 60, Seq: 123456, Data: make([]byte, 100), TimeUnixNs: 1 << 62}}}
	buf := make([]byte, 0, 256)
	b.ReportAllocs()
	for b.Loop() {
		buf, _ = AppendFrame(buf[:0], f)
	}
}

func BenchmarkReadFrame(b *testing.B) {
	f := &pb.Frame{Body: &pb.Frame_Push{Push: &pb.Push{Channel: "room/math-101", Epoch: 1 << 60, Seq: 123456, Data: make([]byte, 100), TimeUnixNs: 1 << 62}}}
	one, _ := AppendFrame(nil, f)
	rd := bytes.NewReader(one)
	r := NewReader(rd, 0)
	b.ReportAllocs()
	for b.Loop() {
		rd.Reset(one)
		if _, err := r.ReadFrame(); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkDecodePush compares the client's push decoding (vtprotobuf,
// aliasing the body: the client then copies the data and the two ids, two
// allocations) with proto.Unmarshal into the same reused Push (which
// copies, four allocations).
func BenchmarkDecodePush(b *testing.B) {
	body, _ := proto.Marshal(&pb.Push{Channel: "room/math-101", Epoch: 1 << 60, Seq: 123456, Data: make([]byte, 100),
		TimeUnixNs: 1 << 62, From: "teacher", Id: "m-123456"})
	p := new(pb.Push)
	b.Run("DecodePush-aliasing", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if err := DecodePush(body, p); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("proto.Unmarshal-copying", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if err := proto.Unmarshal(body, p); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// PushBody finds the Push of a frame that is a Push and nothing else, and
// nothing in any other frame.
func TestPushBody(t *testing.T) {
	push := &pb.Push{Channel: "room/a", Epoch: 7, Seq: 3, Data: []byte("quiz")}
	body, err := proto.Marshal(&pb.Frame{Body: &pb.Frame_Push{Push: push}})
	require.NoError(t, err)
	inner, ok := PushBody(body)
	require.True(t, ok)
	var got pb.Push
	require.NoError(t, proto.Unmarshal(inner, &got))
	require.True(t, proto.Equal(push, &got))

	_, ok = PushBody(append(body[:len(body):len(body)], body...))
	require.False(t, ok, "two pushes in one frame: left to DecodeFrame")
	for _, f := range sampleFrames() {
		b, err := proto.Marshal(f)
		require.NoError(t, err)
		_, ok := PushBody(b)
		require.Equal(t, f.GetPush() != nil, ok, "%s", Name(f))
	}
	_, ok = PushBody(body[:len(body)-1])
	require.False(t, ok, "truncated")
}
