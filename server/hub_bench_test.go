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
	pb "github.com/quicpush/quicpush/stream/quicpushpb"
)

// BenchmarkHubFanOut: the hub fans one committed 100-byte message out to N
// in-memory sessions: one encoding, then one Sender.Send per subscriber.
// What QUIC does with the bytes is not included.
func BenchmarkHubFanOut(b *testing.B) {
	for _, n := range []int{1, 100, 1000} {
		b.Run("subscribers="+strconv.Itoa(n), func(b *testing.B) {
			srv := &Server{cfg: Config{BehindBytes: 1 << 20}}
			srv.metrics = newMetrics(&srv.counters, func() int { return 0 })
			h := newHub(memstore.New(memstore.Options{}), slog.New(slog.NewTextHandler(io.Discard, nil)), nil, -1, time.Second, srv.metrics)
			h.presence = newPresence(PresenceConfig{}, &srv.metrics.presence)
			c := &conn{s: srv, budget: stream.NewBudget(1 << 30)}
			for range n {
				sess := &session{c: c, out: outbox{behind: map[string]*pb.HeadNotice{}, shed: map[string]uint64{}}}
				sess.send = stream.NewSender(discardStream{}, c.budget, nil)
				if err := h.subscribe(context.Background(), sess, "room/bench", func(store.Bounds, uint64) bool { return true }); err != nil {
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
