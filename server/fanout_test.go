package server

import (
	"log/slog"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/quicpush/quicpush/store"
	"github.com/quicpush/quicpush/stream"
	pb "github.com/quicpush/quicpush/stream/quicpushpb"
)

// discardStream takes every write at once, like a stream with credit.
type discardStream struct{}

func (discardStream) Write(p []byte) (int, error) { return len(p), nil }
func (discardStream) TryWriteAll(p []byte) error  { return nil }
func (discardStream) Close() error                { return nil }

// The fan-out, metrics included, allocates per batch, never per subscriber.
func TestFanOutAllocatesNothingPerSubscriber(t *testing.T) {
	allocs := func(subscribers int) float64 {
		s := &Server{cfg: Config{BehindBytes: 1 << 20}}
		s.metrics = newMetrics(&s.counters, func() int { return 0 })
		h := newHub(nil, slog.New(slog.DiscardHandler), nil, -1, time.Second, s.metrics)
		c := &conn{s: s, budget: stream.NewBudget(1 << 30)}
		ch := h.lookup("room/a", true)
		for range subscribers {
			sess := &session{c: c, out: outbox{behind: map[string]*pb.HeadNotice{}, shed: map[string]uint64{}}}
			sess.send = stream.NewSender(discardStream{}, c.budget, func(error) {})
			ch.subs[sess] = struct{}{}
		}
		batch := []store.Message{
			{Channel: "room/a", Epoch: 1, Seq: 1, Time: time.Now(), Data: make([]byte, 100)},
			{Channel: "room/a", Epoch: 1, Seq: 2, Time: time.Now(), Data: make([]byte, 100)},
		}
		n := testing.AllocsPerRun(100, func() { h.fanOut(batch) })
		require.Equal(t, uint64(101*2*subscribers), s.metrics.reliablePushed.Load())
		return n
	}
	one, hundred := allocs(1), allocs(100)
	t.Logf("allocations per fan-out batch: %v with 1 subscriber, %v with 100", one, hundred)
	require.Equal(t, one, hundred)
}
