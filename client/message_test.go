package client

import (
	"bytes"
	"fmt"
	"testing"

	"github.com/stretchr/testify/require"
	"google.golang.org/protobuf/proto"

	"github.com/quicpush/quicpush/stream"
	pb "github.com/quicpush/quicpush/stream/quicpushpb"
)

// Messages made from pushes that alias one reused read buffer stay intact
// when the buffer is overwritten, whatever the application does to another
// message's Data: write over it or append to it.
func TestMessagesOwnTheirBytes(t *testing.T) {
	buf := make([]byte, 0, 8<<10)
	push := new(pb.Push)
	var msgs []Message
	want := func(i int) (data, from, id string) {
		size := i * 37 % 700 // some empty
		return string(bytes.Repeat([]byte{byte('a' + i%26)}, size)), fmt.Sprintf("user-%d", i%3), fmt.Sprintf("m-%d", i)
	}
	for i := range 200 {
		data, from, id := want(i)
		b, err := proto.Marshal(&pb.Push{Channel: "room/a", Seq: uint64(i + 1), Data: []byte(data), From: from, Id: id})
		require.NoError(t, err)
		buf = append(buf[:0], b...)
		require.NoError(t, stream.DecodePush(buf, push))
		msgs = append(msgs, copyMessage("room/a", push, false))
		for j := range buf {
			buf[j] = 0xff // the reader's next frame
		}
	}
	for i := range msgs {
		if i%2 == 1 {
			for j := range msgs[i].Data {
				msgs[i].Data[j] = '!'
			}
			msgs[i].Data = append(msgs[i].Data, "more"...)
		}
	}
	for i, m := range msgs {
		data, from, id := want(i)
		require.Equal(t, from, m.From, "message %d", i)
		require.Equal(t, id, m.ID, "message %d", i)
		require.Equal(t, uint64(i+1), m.Seq)
		if i%2 == 0 {
			require.Equal(t, data, string(m.Data), "message %d", i)
		} else {
			require.Equal(t, string(bytes.Repeat([]byte("!"), len(data)))+"more", string(m.Data), "message %d", i)
		}
	}
}
