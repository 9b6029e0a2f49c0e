package server

import (
	"context"
	"io"
	"log/slog"
	"strconv"
	"testing"
	"time"

	"github.com/quicpush/quicpush/store"
	"github.com/quicpush/quicpush/store/memstore"
	"github.com/quicpush/quicpush/stream"
)

// sinkStream takes every write at once, as a quic-go stream with flow
// control credit does.
type sinkStream struct{}

func (sinkStream) Write(p []byte) (int, error) { return len(p), nil }
func (sinkStream) TryWriteAll([]byte) error    { return nil }
func (sinkStream) Close() error                { return nil }

// BenchmarkHubFanOut: the hub fans one committed 100-byte message out to N
// in-memory sessions: one encoding, then one Sender.Send per subscriber.
// What QUIC does with the bytes is not included.
func BenchmarkHubFanOut(b *testing.B) {
	for _, n := range []int{1, 100, 1000} {
		b.Run("subscribers="+strconv.Itoa(n), func(b *testing.B) {
			h := newHub(memstore.New(memstore.Options{}), slog.New(slog.NewTextHandler(io.Discard, nil)))
			for range n {
				sess := &session{send: stream.NewSender(sinkStream{}, stream.NewBudget(4<<20), nil)}
				if err := h.subscribe(context.Background(), sess, "room/bench", func(store.Bounds) bool { return true }); err != nil {
					b.Fatal(err)
				}
			}
			msgs := []store.Message{{
				Channel: "room/bench", Epoch: 1, Time: time.Now(), From: "publisher", ID: "m-1", Data: make([]byte, 100),
			}}
			b.ReportAllocs()
			for b.Loop() {
				msgs[0].Seq++
				h.fanOut(msgs)
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*n), "ns/delivery")
		})
	}
}
