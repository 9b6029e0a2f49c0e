package server_test

import (
	"context"
	"encoding/binary"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/quicpush/quicpush/client"
	"github.com/quicpush/quicpush/server"
	"github.com/quicpush/quicpush/store"
	"github.com/quicpush/quicpush/store/memstore"
)

// BenchmarkPublishDeliver: 1 channel x 100 subscribers over real QUIC on
// loopback, a publisher that waits for each ack. Reports deliveries/s and
// publish -> deliver latency percentiles, with the in-memory store and with
// Badger (fsync per group commit).
func BenchmarkPublishDeliver(b *testing.B) {
	b.Run("store=memory", func(b *testing.B) { benchPublishDeliver(b, memstore.New(memstore.Options{})) })
	b.Run("store=badger", func(b *testing.B) {
		db, err := store.Open(b.TempDir(), store.Options{Logger: quietLog})
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { db.Close() }) // after the server's own cleanup
		benchPublishDeliver(b, db)
	})
}

func benchPublishDeliver(b *testing.B, st server.Store) {
	const subscribers = 100
	ts := runServer(b, server.Config{Store: st})
	var (
		mu        sync.Mutex
		latencies []time.Duration
		delivered atomic.Int64
	)
	handle := func(m client.Message) error {
		if len(m.Data) < 8 {
			return nil
		}
		sent := time.Unix(0, int64(binary.BigEndian.Uint64(m.Data)))
		d := time.Since(sent)
		mu.Lock()
		latencies = append(latencies, d)
		mu.Unlock()
		delivered.Add(1)
		return nil
	}
	ctx := context.Background()
	for i := 0; i < subscribers; i++ {
		c := dial(b, ts, client.Config{})
		if _, err := c.Session("s").Subscribe(ctx, "room/bench", client.SubscribeOptions{}, handle); err != nil {
			b.Fatal(err)
		}
	}
	pub := dial(b, ts, client.Config{})
	sess := pub.Session("p")
	payload := make([]byte, 100)
	b.ReportAllocs()
	start := time.Now()
	n := 0
	for b.Loop() {
		binary.BigEndian.PutUint64(payload, uint64(time.Now().UnixNano()))
		if _, err := sess.Publish(ctx, "room/bench", payload, client.PublishOptions{}); err != nil {
			b.Fatal(err)
		}
		n++
	}
	want := int64(n * subscribers)
	deadline := time.Now().Add(30 * time.Second)
	for delivered.Load() < want && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	elapsed := time.Since(start)
	if got := delivered.Load(); got < want {
		b.Fatalf("%d of %d deliveries", got, want)
	}
	mu.Lock()
	slices.Sort(latencies)
	p := func(q float64) float64 { return float64(latencies[int(q*float64(len(latencies)-1))].Microseconds()) }
	b.ReportMetric(float64(want)/elapsed.Seconds(), "deliveries/s")
	b.ReportMetric(p(0.5), "p50-µs")
	b.ReportMetric(p(0.99), "p99-µs")
	mu.Unlock()
}
