package stream_test

import (
	"context"
	"encoding/binary"
	"io"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	"github.com/quic-go/quic-go"
	"github.com/stretchr/testify/require"

	"github.com/quicpush/quicpush/certs/certstest"
	"github.com/quicpush/quicpush/stream"
)

// senderPair returns a Sender on a real QUIC stream over loopback and the
// reading end, with small flow-control windows so that writes block often.
func senderPair(t *testing.T) (*stream.Sender, *quic.Stream) {
	t.Helper()
	serverTLS, clientTLS := certstest.Configs(t, "sender-test")
	small := &quic.Config{InitialStreamReceiveWindow: 16 << 10, MaxStreamReceiveWindow: 16 << 10,
		InitialConnectionReceiveWindow: 32 << 10, MaxConnectionReceiveWindow: 32 << 10}
	ln, err := quic.ListenAddr("127.0.0.1:0", serverTLS, nil)
	require.NoError(t, err)
	t.Cleanup(func() { ln.Close() })
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	client, err := quic.DialAddr(ctx, ln.Addr().String(), clientTLS, small)
	require.NoError(t, err)
	t.Cleanup(func() { client.CloseWithError(0, "") })
	server, err := ln.Accept(ctx)
	require.NoError(t, err)
	t.Cleanup(func() { server.CloseWithError(0, "") })
	st, err := server.OpenStreamSync(ctx)
	require.NoError(t, err)
	snd := stream.NewSender(st, nil, nil)
	require.NoError(t, snd.Send([]byte{0})) // a stream is seen by the peer once it carries data
	rd, err := client.AcceptStream(ctx)
	require.NoError(t, err)
	_, err = io.ReadFull(rd, make([]byte, 1))
	require.NoError(t, err)
	return snd, rd
}

// Concurrent Sends of every size, into a stream whose reader stalls now and
// then, arrive whole and in each sender's order: the Sender moves between
// writing straight into quic-go and queueing for its flusher without losing
// or reordering a byte, and never stays stuck with bytes queued.
func TestSenderKeepsEveryByteInOrder(t *testing.T) {
	snd, rd := senderPair(t)
	const writers, perWriter = 4, 2000
	var wg sync.WaitGroup
	for w := range writers {
		wg.Go(func() {
			rng := rand.New(rand.NewPCG(uint64(w), 1))
			for i := range perWriter {
				// A record: writer, index, length, then filler.
				n := 12 + rng.IntN(3000)
				b := make([]byte, n)
				binary.BigEndian.PutUint32(b, uint32(w))
				binary.BigEndian.PutUint32(b[4:], uint32(i))
				binary.BigEndian.PutUint32(b[8:], uint32(n))
				if err := snd.Send(b); err != nil {
					t.Errorf("writer %d, record %d: %v", w, i, err)
					return
				}
			}
		})
	}

	// The flusher's path must have been taken (the window was full).
	sawQueued := make(chan struct{})
	go func() {
		for end := time.Now().Add(30 * time.Second); time.Now().Before(end); time.Sleep(100 * time.Microsecond) {
			if snd.Queued() > 0 {
				close(sawQueued)
				return
			}
		}
	}()

	next := make([]int, writers)
	deadline := time.Now().Add(30 * time.Second)
	rng := rand.New(rand.NewPCG(9, 9))
	for got := 0; got < writers*perWriter; got++ {
		require.NoError(t, rd.SetReadDeadline(deadline), "stuck after %d records", got)
		head := make([]byte, 12)
		_, err := io.ReadFull(rd, head)
		require.NoError(t, err, "after %d records (next per writer %v, queued %d)", got, next, snd.Queued())
		w, i, n := binary.BigEndian.Uint32(head), int(binary.BigEndian.Uint32(head[4:])), int(binary.BigEndian.Uint32(head[8:]))
		require.Less(t, int(w), writers)
		require.Equal(t, next[w], i, "writer %d's records in order", w)
		next[w]++
		_, err = io.ReadFull(rd, make([]byte, n-12))
		require.NoError(t, err)
		if rng.IntN(500) == 0 {
			time.Sleep(20 * time.Millisecond) // a slow reader: the window fills
		}
	}
	wg.Wait()
	select {
	case <-sawQueued:
	default:
		t.Fatal("no Send ever queued: flow control never blocked a write")
	}
	require.Eventually(t, snd.Idle, 5*time.Second, time.Millisecond, "the flusher ends once all is written")
}
