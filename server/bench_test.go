package server_test

import (
	"context"
	"encoding/binary"
	"slices"
	"sync"
	"sync/atomic"
	"syscall"
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

// BenchmarkFanOutModes compares push and notify mode (huge rooms) at 1000
// subscribers, with 16 publishers keeping messages coming (notify mode
// pays off when a notice covers several messages). cpu-µs/delivery is this process's CPU (server and clients
// together) per delivery: only its ratio between the modes means much.
func BenchmarkFanOutModes(b *testing.B) {
	for _, mode := range []string{"push", "notify"} {
		b.Run("mode="+mode+"/subscribers=1000", func(b *testing.B) {
			cfg := server.Config{Store: memstore.New(memstore.Options{}), PublishRate: -1}
			if mode == "notify" {
				cfg.ChannelLimits = []server.ChannelLimit{{Pattern: "room/*", Notify: true}}
			}
			benchFanOut(b, cfg, 1000, 8)
		})
	}
}

func benchPublishDeliver(b *testing.B, st server.Store) {
	benchFanOut(b, server.Config{Store: st}, 100, 1)
}

// benchFanOut publishes to one channel with subscribers subscribed, from
// publishers goroutines each waiting for its acks (1: one message at a
// time), and reports deliveries/s and publish -> deliver latency.
func benchFanOut(b *testing.B, cfg server.Config, subscribers, publishers int) {
	ts := runServer(b, cfg)
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
	cpu0 := cpuTime()
	start := time.Now()
	n := 0
	publish := func() {
		data := make([]byte, len(payload))
		binary.BigEndian.PutUint64(data, uint64(time.Now().UnixNano()))
		if _, err := sess.Publish(ctx, "room/bench", data, client.PublishOptions{}); err != nil {
			b.Error(err)
		}
	}
	if publishers <= 1 {
		for b.Loop() {
			publish()
			n++
		}
	} else {
		b.SetParallelism(publishers)
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				publish()
			}
		})
		n = b.N
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
	b.ReportMetric(float64((cpuTime()-cpu0).Microseconds())/float64(want), "cpu-µs/delivery")
	b.ReportMetric(p(0.5), "p50-µs")
	b.ReportMetric(p(0.99), "p99-µs")
	mu.Unlock()
}

// cpuTime is the CPU this process has used, user and system.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
